/// Curvature estimators you can trust (issue 7): block-local Hutchinson, HVP budgets, adaptive
/// probing, exact diagonals (closed-form classifier, unit vectors), the true Fisher, and the
/// stability helpers, checked against exact oracles on tiny float64 networks.
module Pai.Tests.CurvatureTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open Pai
open Pai.Torch
open Pai.Host.Models
open Pai.Tests.TinyNet

let private diag (h: float[,]) =
    Array.init (Array2D.length1 h) (fun i -> h.[i, i])

let private rms (xs: float[]) =
    sqrt (Array.averageBy (fun x -> x * x) xs)

// Three layers: 24 + 30 + 15 weights.
let private net () = new TinyMlp([ 4; 6; 5; 3 ], 3UL)

let private data () =
    singles (batch 11UL 6 4 3 DType.Float64)

let private estimate (model: IModelView) budget blocks seed batches =
    Hutchinson.estimate model 1.0 budget blocks seed batches

// Offsets of each layer in the flattened prunable vector.
let private slices (model: IModelView) =
    let sizes = [ for kv in model.Prunable -> int kv.Value.NumEl ]
    let starts = List.scan (+) 0 sizes |> List.take sizes.Length
    List.zip starts sizes

// ---- pure helpers on constructed inputs ---------------------------------------------------------

[<Fact>]
let ``Jaccard counts shared kept weights over all kept weights`` () =
    Assert.Equal(1.0 / 3.0, Stability.jaccard [| true; true; false; false |] [| true; false; true; false |], 12)
    Assert.Equal(1.0, Stability.jaccard [| false; false |] [| false; false |])
    Assert.Equal(0.0, Stability.jaccard [| true; false |] [| false; true |])
    Assert.Equal(1.0, Stability.jaccard [| true; false; true |] [| true; false; true |])

    Assert.Throws<ArgumentException>(fun () -> Stability.jaccard [| true |] [| true; false |] |> ignore)
    |> ignore

[<Fact>]
let ``median relative SE leaves out exactly-known zeros and counts zero estimates with error as infinite`` () =
    // Ratios 0.5, 0.25, (0/0 left out), +inf, 1 → median of [0.25; 0.5; 1; inf] = 0.75.
    let m =
        Stability.medianRelativeSe [| 1.0; -2.0; 0.0; 0.0; 4.0 |] [| 0.5; 0.5; 0.0; 0.1; 4.0 |]

    Assert.Equal(0.75, m, 12)
    Assert.Equal(0.0, Stability.medianRelativeSe [| 0.0; 0.0 |] [| 0.0; 0.0 |])
    Assert.Equal(0.2, Stability.medianRelativeSe [| -5.0; 10.0; 1.0 |] [| 1.0; 1.0; 1.0 |], 12)

[<Fact>]
let ``Spearman ranks with average ties; relative error is a norm ratio`` () =
    Assert.Equal(1.0, Stability.spearman [| 1.0; 5.0; 2.0; 9.0 |] [| 10.0; 50.0; 20.0; 1000.0 |], 12)
    Assert.Equal(-1.0, Stability.spearman [| 1.0; 2.0; 3.0 |] [| 3.0; 2.0; 1.0 |], 12)
    // x ranks [1; 2.5; 2.5; 4] against [1; 2; 3; 4]: 4.5 / sqrt(4.5 · 5).
    Assert.Equal(4.5 / sqrt 22.5, Stability.spearman [| 1.0; 2.0; 2.0; 3.0 |] [| 1.0; 2.0; 3.0; 4.0 |], 12)
    Assert.True(Double.IsNaN(Stability.spearman [| 1.0; 1.0 |] [| 1.0; 2.0 |]))
    Assert.Equal(1.0 / sqrt 2.0, Stability.relativeError [| 1.0; 2.0 |] [| 1.0; 1.0 |], 12)
    Assert.Equal(0.0, Stability.relativeError [| 0.0 |] [| 0.0 |])

[<Fact>]
let ``probe scopes parse, print and must partition the layers`` () =
    Assert.Equal(Ok ProbeScope.Full, ProbeScope.parse "full")
    Assert.Equal(Ok ProbeScope.PerLayer, ProbeScope.parse " Layer ")
    let grouped = ProbeScope.parse "0+1,2"
    Assert.Equal(Ok(ProbeScope.Grouped [ [ 0; 1 ]; [ 2 ] ]), grouped)
    Assert.Equal("0+1,2", ProbeScope.format (ProbeScope.Grouped [ [ 0; 1 ]; [ 2 ] ]))
    Assert.True((ProbeScope.parse "0+x").IsError)
    Assert.Equal<int list list>([ [ 0; 1; 2 ] ], ProbeScope.blocks 3 ProbeScope.Full)

    let e =
        Assert.Throws<ArgumentException>(fun () -> ProbeScope.blocks 3 (ProbeScope.Grouped [ [ 0 ]; [ 2 ] ]) |> ignore)

    Assert.Contains("exactly once", e.Message)

// ---- block-local Hutchinson -----------------------------------------------------------------------

[<Fact>]
let ``block-local Hutchinson is unbiased for grouped and per-layer blocks`` () =
    use model = net ()
    let batches = data ()
    let exact = diag (exactHessian model 1.0 batches)

    for blocks in [ [ [ 0; 1 ]; [ 2 ] ]; [ [ 0 ]; [ 1 ]; [ 2 ] ] ] do
        let runs =
            [
                for seed in 1UL .. 30UL -> estimate model (ProbeBudget.Probes 8) blocks seed batches
            ]

        let means = runs |> List.map (fun r -> flatOf r.Mean)
        let ses = runs |> List.map (fun r -> flatOf r.StdErr)

        for i in 0 .. exact.Length - 1 do
            let average = means |> List.averageBy (fun m -> m.[i])
            let se = (ses |> List.averageBy (fun s -> s.[i])) / sqrt 30.0
            let tol = 5.0 * se + 1e-12

            Assert.True(
                abs (average - exact.[i]) <= tol,
                $"blocks %A{blocks}, weight %d{i}: average %g{average} vs exact %g{exact.[i]} (tol %g{tol})"
            )

        Assert.All(runs, fun r -> Assert.Equal(8 * 6 * List.length blocks, r.HvpCount))

[<Fact>]
let ``block-local Hutchinson's standard error and error fall like 1/sqrt(probes)`` () =
    use model = net ()
    let batches = data ()
    let exact = diag (exactHessian model 1.0 batches)
    let blocks = [ [ 0; 1 ]; [ 2 ] ]

    let at probes =
        let runs =
            [
                for seed in 1UL .. 4UL -> estimate model (ProbeBudget.Probes probes) blocks seed batches
            ]

        let se = runs |> List.averageBy (fun r -> rms (flatOf r.StdErr))

        let err =
            runs |> List.averageBy (fun r -> rms (Array.map2 (-) (flatOf r.Mean) exact))

        se, err

    let se16, err16 = at 16
    let se256, err256 = at 256
    // 16x the probes: SE and error shrink about 4x.
    Assert.InRange(se16 / se256, 3.0, 5.3)
    Assert.InRange(err16 / err256, 2.0, 8.0)

[<Fact>]
let ``block-local probing is less noisy than full probing at an equal HVP budget`` () =
    use model = net ()
    let batches = data ()
    let exact = diag (exactHessian model 1.0 batches)

    let run scope seed =
        let options =
            { CurvatureOptions.Default with
                ProbeScope = scope
                HvpBudget = 6 * 3 * 32
            }

        let d, info = Hutchinson.curvature model 1.0 options seed batches
        rms (Array.map2 (-) (flatOf d) exact), info

    let full = [ for s in 1UL .. 5UL -> run ProbeScope.Full s ]
    let layer = [ for s in 1UL .. 5UL -> run ProbeScope.PerLayer s ]
    // The budget buys 96 probes of the whole network or 32 of each layer; both use it all.
    Assert.All(full, fun (_, i) -> Assert.Equal(6 * 3 * 32, i.Hvps))
    Assert.All(layer, fun (_, i) -> Assert.Equal(6 * 3 * 32, i.Hvps))
    Assert.All(full, fun (_, i) -> Assert.All(i.Layers, fun l -> Assert.Equal(96, l.Probes)))
    Assert.All(layer, fun (_, i) -> Assert.All(i.Layers, fun l -> Assert.Equal(32, l.Probes)))
    let errFull = full |> List.averageBy fst
    let errLayer = layer |> List.averageBy fst
    Assert.True(errLayer < errFull, $"per-layer %g{errLayer} should beat full %g{errFull} at equal cost")

    let e =
        Assert.Throws<ArgumentException>(fun () ->
            Hutchinson.curvature
                model
                Temperatures.Default.Hutchinson
                { CurvatureOptions.Default with
                    ProbeScope = ProbeScope.PerLayer
                    HvpBudget = 20
                }
                1UL
                batches
            |> ignore)

    Assert.Contains("HvpBudget", e.Message)

[<Fact>]
let ``the same seed gives a bit-identical estimate`` () =
    use model = net ()
    let batches = data ()

    let run () =
        flatOf (estimate model (ProbeBudget.Probes 20) [ [ 0 ]; [ 1; 2 ] ] 9UL batches).Mean

    Assert.Equal<float[]>(run (), run ())

// ---- adaptive mode ------------------------------------------------------------------------------

let private relSes (model: IModelView) (e: HutchinsonEstimate) =
    List.map2
        (fun (m: Tensor) (s: Tensor) -> Stability.medianRelativeSe (Tensors.toFloats m) (Tensors.toFloats s))
        e.Mean
        e.StdErr

[<Fact>]
let ``adaptive Hutchinson stops once every layer reaches the target`` () =
    use model = net ()
    let batches = data ()
    let blocks = [ [ 0 ]; [ 1 ]; [ 2 ] ]
    let target = 0.25
    let cap = 20_000
    let e = estimate model (ProbeBudget.Adaptive(target, cap)) blocks 5UL batches
    let achieved = relSes model e
    Assert.All(achieved, fun r -> Assert.True(r <= target, $"median relative SE %g{r} above target %g{target}"))
    Assert.True(e.HvpCount < cap)
    Assert.All(e.Probes, fun p -> Assert.Equal(0, p % Hutchinson.AdaptiveChunk))
    // It stopped on time: one chunk fewer would not have met the target for the last block.
    let longest = List.max e.Probes
    Assert.True(longest > Hutchinson.AdaptiveChunk)

    let shorter =
        estimate model (ProbeBudget.Probes(longest - Hutchinson.AdaptiveChunk)) blocks 5UL batches

    let i = List.findIndex ((=) longest) e.Probes
    Assert.True((relSes model shorter).[i] > target, "the adaptive mode kept probing past its target")

[<Fact>]
let ``adaptive Hutchinson stops when the HVP budget runs out`` () =
    use model = net ()
    let batches = data ()
    let blocks = [ [ 0; 1 ]; [ 2 ] ]
    let cap = 6 * 2 * 4 * 3 + 7
    let e = estimate model (ProbeBudget.Adaptive(1e-6, cap)) blocks 5UL batches
    Assert.True(e.HvpCount <= cap, $"used %d{e.HvpCount} HVPs of a budget of %d{cap}")
    // Less than one more probe for every block was left.
    Assert.True(cap - e.HvpCount < 6 * 2, $"stopped early: %d{e.HvpCount} of %d{cap}")
    Assert.True(relSes model e |> List.exists (fun r -> r > 1e-6))

    Assert.Throws<ArgumentException>(fun () ->
        estimate model (ProbeBudget.Adaptive(0.1, 10)) blocks 5UL batches |> ignore)
    |> ignore

// ---- exact diagonals ------------------------------------------------------------------------------

[<Fact>]
let ``closed-form classifier diagonal equals autograd's exact diagonal, bias included`` () =
    let check (seed: int) =
        use model = new TinyMlp([ 4; 5; 3 ], uint64 seed)
        let view = model :> IModelView
        let batches = singles (batch (uint64 seed + 1UL) 5 4 3 DType.Float64)
        let t = 1.0 + float (seed % 4)
        let exact = diag (exactHessian model t batches)
        let start, size = (slices model).[1]
        let w, b = Estimators.classifierDiagonal model t batches
        let closed = Tensors.toFloats w

        let okW =
            Array.forall2 (fun c e -> abs (c - e) <= 1e-12 + 1e-9 * abs e) closed exact.[start .. start + size - 1]
        // Bias: unit-vector HVPs on the bias parameter.
        let bias =
            view.Parameters
            |> Seq.find (fun kv -> kv.Key = "fc2.bias")
            |> fun kv -> kv.Value

        let total = float batches.Length

        let biasExact =
            [|
                for k in 0L .. bias.NumEl - 1L ->
                    batches
                    |> List.sumBy (fun bt ->
                        use _s = new DisposeScope()
                        let loss = Estimators.batchLoss view t total bt
                        let g = (Autograd.Grad(loss, [| bias |], createGraph = true)).[0]
                        let row = Autograd.Grad([| g.Select(0L, k) |], [| bias |], allowUnused = true)
                        (nonNull row.[0]).Select(0L, k).Item())
            |]

        let okB =
            Array.forall2 (fun c e -> abs (c - e) <= 1e-12 + 1e-9 * abs e) (Tensors.toFloats b) biasExact

        w.Dispose()
        b.Dispose()
        okW && okB

    Check.One(Config.QuickThrowOnFailure.WithMaxTest(8), Prop.forAll (Arb.fromGen (Gen.choose (1, 10000))) check)

[<Fact>]
let ``closed-form classifier diagonal matches unit-vector HVPs on lenet5`` () =
    use model =
        ModelZoo.Create(
            "lenet5",
            ModelOptions(InputShape = InputShape(1, 28, 28), Classes = 10, Seed = 4UL, DType = DType.Float64)
        )

    let view = model :> IModelView
    use gen = new Generator(8UL)

    let batches =
        [
            for _ in 1..2 ->
                {
                    Inputs = Libtorch.Randn([| 2L; 1L; 28L; 28L |], gen, DType.Float64).DetachFromScope()
                    Targets = Libtorch.RandInt(0L, 10L, [| 2L |], gen).DetachFromScope()
                }
        ]

    let t = 2.0
    let w, b = Estimators.classifierDiagonal view t batches
    let closed = Tensors.toFloats w
    let ps = [ for kv in view.Prunable -> kv.Value ]
    let last = ps.Length - 1
    Assert.Equal(model.ClassifierWeightName, (Seq.last view.Prunable).Key)

    for k in [ 0; 7; 2501; 4999 ] do
        use _s = new DisposeScope()

        let vs =
            ps
            |> List.mapi (fun i p ->
                let v = Libtorch.Zeros(p.Shape, p.DType)

                if i = last then
                    use flat = v.View(-1L)
                    flat.Narrow(0L, int64 k, 1L).Fill_(1.0) |> ignore

                v)

        let hv = Estimators.hessianVectorProduct view t batches vs
        let entry = (Tensors.toFloats (List.last hv)).[k]

        Assert.True(
            abs (entry - closed.[k]) <= 1e-10 * max 1e-12 (abs entry),
            $"entry %d{k}: HVP %g{entry} vs closed form %g{closed.[k]}"
        )

    w.Dispose()
    b.Dispose()

[<Fact>]
let ``exact options: closed-form classifier, unit-vector small layers, Hutchinson elsewhere`` () =
    use model = net ()
    let batches = data ()
    let exact = diag (exactHessian model 1.0 batches)

    let options =
        { CurvatureOptions.Default with
            ProbeScope = ProbeScope.PerLayer
            Probes = 4
            ExactClassifier = true
            ExactLayerSize = 24
        }

    let d, info = Hutchinson.curvature model 1.0 options 2UL batches
    let got = flatOf d
    let sl = slices model

    for layer in [ 0; 2 ] do
        let start, size = sl.[layer]

        for i in start .. start + size - 1 do
            Assert.Equal(exact.[i], got.[i], 10)

    Assert.Equal<CurvatureMethod list>(
        [
            CurvatureMethod.UnitHvp
            CurvatureMethod.Hutchinson
            CurvatureMethod.ClosedForm
        ],
        info.Layers |> List.map (fun l -> l.Method)
    )

    // Unit vectors: 24 weights × 6 batches; Hutchinson: 4 probes × 6 batches on the middle layer.
    Assert.Equal(24 * 6 + 4 * 6, info.Hvps)
    Assert.Equal(0.0, info.Layers.[2].MedianRelativeSe)
    Assert.True(info.Layers.[1].MedianRelativeSe > 0.0)

[<Fact>]
let ``true Fisher on the classifier averages to its Hessian diagonal`` () =
    // E over ŷ ~ softmax of (p_a − 1[ŷ = a])² h_i² is p_a(1 − p_a) h_i²: the classifier's exact diagonal at T = 1.
    use model = new TinyMlp([ 4; 5; 3 ], 12UL)
    let batches = singles (batch 13UL 4 4 3 DType.Float64)
    let w, b = Estimators.classifierDiagonal model 1.0 batches
    let exact = Tensors.toFloats w
    w.Dispose()
    b.Dispose()
    let runs = 300

    let average =
        [
            for seed in 1..runs ->
                Tensors.toFloats (List.last (Estimators.trueFisherDiagonal model (uint64 seed) batches))
        ]
        |> List.reduce (Array.map2 (+))
        |> Array.map (fun v -> v / float runs)

    Assert.InRange(Stability.relativeError average exact, 0.0, 0.1)
    // And it differs from the empirical Fisher, which uses the labels.
    let empirical =
        Tensors.toFloats (List.last (Estimators.fisherDiagonal model batches))

    Assert.True(Stability.relativeError empirical exact > 0.1)

// ---- diagnostics reach the report ------------------------------------------------------------------

[<Fact>]
let ``pruning reports the curvature estimator's achieved error through compositions`` () =
    use model = net ()
    let batches = data ()

    let spec =
        {
            Criterion = "hts"
            Sparsity = 0.5
            Scope = Scope.Global
            Rounds = 1
            Schedule = Schedule.Exponential
            WarmupBatches = 0
            SamplesPerClass = 1
            ScoringBatchSize = 1
            Curvature =
                { CurvatureOptions.Default with
                    ProbeScope = ProbeScope.PerLayer
                    HvpBudget = 6 * 3 * 4
                }
            KeepOnePerLayer = false
            Seed = 1UL
        }

    let result =
        Pruning.prune spec (Registry.find "hts") model [ 4L ] batches Seq.empty [] ignore

    disposeResult result
    let d = Assert.Single(result.Report.Curvature)
    Assert.Equal(6 * 3 * 4, d.Hvps)
    Assert.Equal(3, d.Layers.Length)
    Assert.All(d.Layers, fun l -> Assert.True(l.Probes = 4 && l.MedianRelativeSe > 0.0))

    let plain =
        Pruning.prune { spec with Criterion = "snip" } (Registry.find "snip") model [ 4L ] batches Seq.empty [] ignore

    disposeResult plain
    Assert.Empty(plain.Report.Curvature)
