/// Curvature estimators you can trust (issue 7): block-local Hutchinson, HVP budgets, adaptive
/// probing, exact diagonals (closed-form classifier, unit vectors), the true Fisher, and the
/// stability helpers, checked against exact oracles on tiny float64 networks.
module Pai.Tests.CurvatureTests

open Expecto
open Pai.Tests.Support

open System
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

// ---- block-local Hutchinson -----------------------------------------------------------------------

// ---- adaptive mode ------------------------------------------------------------------------------

let private relSes (model: IModelView) (e: HutchinsonEstimate) =
    List.map2
        (fun (m: Tensor) (s: Tensor) -> Stability.medianRelativeSe (Tensors.toFloats m) (Tensors.toFloats s))
        e.Mean
        e.StdErr

// ---- exact diagonals ------------------------------------------------------------------------------

// ---- diagnostics reach the report ------------------------------------------------------------------

[<Tests>]
let tests =
    testSequenced
    <| testList
        "CurvatureTests"
        [
            testCase "Jaccard counts shared kept weights over all kept weights"
            <| fun () ->
                Expect.floatClose
                    (decimals 12)
                    (Stability.jaccard [| true; true; false; false |] [| true; false; true; false |])
                    (1.0 / 3.0)
                    "Stability.jaccard [| true; true; false; false |] [| true; false; tr..."

                Expect.equal
                    (Stability.jaccard [| false; false |] [| false; false |])
                    1.0
                    "Stability.jaccard [| false; false |] [| false; false |]"

                Expect.equal
                    (Stability.jaccard [| true; false |] [| false; true |])
                    0.0
                    "Stability.jaccard [| true; false |] [| false; true |]"

                Expect.equal
                    (Stability.jaccard [| true; false; true |] [| true; false; true |])
                    1.0
                    "Stability.jaccard [| true; false; true |] [| true; false; true |]"

                throws<ArgumentException>(fun () -> Stability.jaccard [| true |] [| true; false |] |> ignore)
                |> ignore
            testCase
                "median relative SE leaves out exactly-known zeros and counts zero estimates with error as infinite"
            <| fun () ->
                // Ratios 0.5, 0.25, (0/0 left out), +inf, 1 → median of [0.25; 0.5; 1; inf] = 0.75.
                let m =
                    Stability.medianRelativeSe [| 1.0; -2.0; 0.0; 0.0; 4.0 |] [| 0.5; 0.5; 0.0; 0.1; 4.0 |]

                Expect.floatClose (decimals 12) m 0.75 "m"

                Expect.equal
                    (Stability.medianRelativeSe [| 0.0; 0.0 |] [| 0.0; 0.0 |])
                    0.0
                    "Stability.medianRelativeSe [| 0.0; 0.0 |] [| 0.0; 0.0 |]"

                Expect.floatClose
                    (decimals 12)
                    (Stability.medianRelativeSe [| -5.0; 10.0; 1.0 |] [| 1.0; 1.0; 1.0 |])
                    0.2
                    "Stability.medianRelativeSe [| -5.0; 10.0; 1.0 |] [| 1.0; 1.0; 1.0 |]"
            testCase "Spearman ranks with average ties; relative error is a norm ratio"
            <| fun () ->
                Expect.floatClose
                    (decimals 12)
                    (Stability.spearman [| 1.0; 5.0; 2.0; 9.0 |] [| 10.0; 50.0; 20.0; 1000.0 |])
                    1.0
                    "Stability.spearman [| 1.0; 5.0; 2.0; 9.0 |] [| 10.0; 50.0; 20.0; 10..."

                Expect.floatClose
                    (decimals 12)
                    (Stability.spearman [| 1.0; 2.0; 3.0 |] [| 3.0; 2.0; 1.0 |])
                    -1.0
                    "Stability.spearman [| 1.0; 2.0; 3.0 |] [| 3.0; 2.0; 1.0 |]"
                // x ranks [1; 2.5; 2.5; 4] against [1; 2; 3; 4]: 4.5 / sqrt(4.5 · 5).
                Expect.floatClose
                    (decimals 12)
                    (Stability.spearman [| 1.0; 2.0; 2.0; 3.0 |] [| 1.0; 2.0; 3.0; 4.0 |])
                    (4.5 / sqrt 22.5)
                    "Stability.spearman [| 1.0; 2.0; 2.0; 3.0 |] [| 1.0; 2.0; 3.0; 4.0 |]"

                Expect.isTrue
                    (Double.IsNaN(Stability.spearman [| 1.0; 1.0 |] [| 1.0; 2.0 |]))
                    "Double.IsNaN(Stability.spearman [| 1.0; 1.0 |] [| 1.0; 2.0 |])"

                Expect.floatClose
                    (decimals 12)
                    (Stability.relativeError [| 1.0; 2.0 |] [| 1.0; 1.0 |])
                    (1.0 / sqrt 2.0)
                    "Stability.relativeError [| 1.0; 2.0 |] [| 1.0; 1.0 |]"

                Expect.equal
                    (Stability.relativeError [| 0.0 |] [| 0.0 |])
                    0.0
                    "Stability.relativeError [| 0.0 |] [| 0.0 |]"
            testCase "probe scopes parse, print and must partition the layers"
            <| fun () ->
                Expect.equal (ProbeScope.parse "full") (Ok ProbeScope.Full) "ProbeScope.parse \"full\""
                Expect.equal (ProbeScope.parse " Layer ") (Ok ProbeScope.PerLayer) "ProbeScope.parse \" Layer \""
                let grouped = ProbeScope.parse "0+1,2"
                Expect.equal grouped (Ok(ProbeScope.Grouped [ [ 0; 1 ]; [ 2 ] ])) "grouped"

                Expect.equal
                    (ProbeScope.format (ProbeScope.Grouped [ [ 0; 1 ]; [ 2 ] ]))
                    "0+1,2"
                    "ProbeScope.format (ProbeScope.Grouped [ [ 0; 1 ]; [ 2 ] ])"

                Expect.isTrue ((ProbeScope.parse "0+x").IsError) "(ProbeScope.parse \"0+x\").IsError"

                Expect.equal
                    (ProbeScope.blocks 3 ProbeScope.Full)
                    ([ [ 0; 1; 2 ] ])
                    "ProbeScope.blocks 3 ProbeScope.Full"

                let e =
                    throws<ArgumentException>(fun () ->
                        ProbeScope.blocks 3 (ProbeScope.Grouped [ [ 0 ]; [ 2 ] ]) |> ignore)

                Expect.stringContains e.Message "exactly once" "e.Message"
            testCase "block-local Hutchinson is unbiased for grouped and per-layer blocks"
            <| fun () ->
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

                        Expect.isTrue
                            (abs (average - exact.[i]) <= tol)
                            ($"blocks %A{blocks}, weight %d{i}: average %g{average} vs exact %g{exact.[i]} (tol %g{tol})")

                    runs
                    |> Seq.iter (fun r -> Expect.equal r.HvpCount (8 * 6 * List.length blocks) "r.HvpCount")
            testCase "block-local Hutchinson's standard error and error fall like 1/sqrt(probes)"
            <| fun () ->
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
                inRange (se16 / se256) 3.0 5.3 "se16 / se256"
                inRange (err16 / err256) 2.0 8.0 "err16 / err256"
            testCase "block-local probing is less noisy than full probing at an equal HVP budget"
            <| fun () ->
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
                full |> Seq.iter (fun (_, i) -> Expect.equal i.Hvps (6 * 3 * 32) "i.Hvps")
                layer |> Seq.iter (fun (_, i) -> Expect.equal i.Hvps (6 * 3 * 32) "i.Hvps")

                full
                |> Seq.iter (fun (_, i) -> i.Layers |> Seq.iter (fun l -> Expect.equal l.Probes 96 "l.Probes"))

                layer
                |> Seq.iter (fun (_, i) -> i.Layers |> Seq.iter (fun l -> Expect.equal l.Probes 32 "l.Probes"))

                let errFull = full |> List.averageBy fst
                let errLayer = layer |> List.averageBy fst

                Expect.isTrue
                    (errLayer < errFull)
                    ($"per-layer %g{errLayer} should beat full %g{errFull} at equal cost")

                let e =
                    throws<ArgumentException>(fun () ->
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

                Expect.stringContains e.Message "HvpBudget" "e.Message"
            testCase "the same seed gives a bit-identical estimate"
            <| fun () ->
                use model = net ()
                let batches = data ()

                let run () =
                    flatOf (estimate model (ProbeBudget.Probes 20) [ [ 0 ]; [ 1; 2 ] ] 9UL batches).Mean

                Expect.equal (run ()) (run ()) "run ()"
            testCase "adaptive Hutchinson stops once every layer reaches the target"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let blocks = [ [ 0 ]; [ 1 ]; [ 2 ] ]
                let target = 0.25
                let cap = 20_000
                let e = estimate model (ProbeBudget.Adaptive(target, cap)) blocks 5UL batches
                let achieved = relSes model e

                achieved
                |> Seq.iter (fun r -> Expect.isTrue (r <= target) ($"median relative SE %g{r} above target %g{target}"))

                Expect.isTrue (e.HvpCount < cap) "e.HvpCount < cap"

                e.Probes
                |> Seq.iter (fun p -> Expect.equal (p % Hutchinson.AdaptiveChunk) 0 "p % Hutchinson.AdaptiveChunk")
                // It stopped on time: one chunk fewer would not have met the target for the last block.
                let longest = List.max e.Probes
                Expect.isTrue (longest > Hutchinson.AdaptiveChunk) "longest > Hutchinson.AdaptiveChunk"

                let shorter =
                    estimate model (ProbeBudget.Probes(longest - Hutchinson.AdaptiveChunk)) blocks 5UL batches

                let i = List.findIndex ((=) longest) e.Probes
                Expect.isTrue ((relSes model shorter).[i] > target) "the adaptive mode kept probing past its target"
            testCase "adaptive Hutchinson stops when the HVP budget runs out"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let blocks = [ [ 0; 1 ]; [ 2 ] ]
                let cap = 6 * 2 * 4 * 3 + 7
                let e = estimate model (ProbeBudget.Adaptive(1e-6, cap)) blocks 5UL batches
                Expect.isTrue (e.HvpCount <= cap) ($"used %d{e.HvpCount} HVPs of a budget of %d{cap}")
                // Less than one more probe for every block was left.
                Expect.isTrue (cap - e.HvpCount < 6 * 2) ($"stopped early: %d{e.HvpCount} of %d{cap}")

                Expect.isTrue
                    (relSes model e |> List.exists (fun r -> r > 1e-6))
                    "relSes model e |> List.exists (fun r -> r > 1e-6)"

                throws<ArgumentException>(fun () ->
                    estimate model (ProbeBudget.Adaptive(0.1, 10)) blocks 5UL batches |> ignore)
                |> ignore
            testCase "closed-form classifier diagonal equals autograd's exact diagonal, bias included"
            <| fun () ->
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
                        Array.forall2
                            (fun c e -> abs (c - e) <= 1e-12 + 1e-9 * abs e)
                            closed
                            exact.[start .. start + size - 1]
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

                Check.One(
                    Config.QuickThrowOnFailure.WithMaxTest(8),
                    Prop.forAll (Arb.fromGen (Gen.choose (1, 10000))) check
                )
            testCase "closed-form classifier diagonal matches unit-vector HVPs on lenet5"
            <| fun () ->
                use model =
                    ModelZoo.Create(
                        "lenet5",
                        ModelOptions(
                            InputShape = InputShape(1, 28, 28),
                            Classes = 10,
                            Seed = 4UL,
                            DType = DType.Float64
                        )
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
                Expect.equal ((Seq.last view.Prunable).Key) model.ClassifierWeightName "(Seq.last view.Prunable).Key"

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

                    Expect.isTrue
                        (abs (entry - closed.[k]) <= 1e-10 * max 1e-12 (abs entry))
                        ($"entry %d{k}: HVP %g{entry} vs closed form %g{closed.[k]}")

                w.Dispose()
                b.Dispose()
            testCase "exact options: closed-form classifier, unit-vector small layers, Hutchinson elsewhere"
            <| fun () ->
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
                        Expect.floatClose (decimals 10) (got.[i]) (exact.[i]) "got.[i]"

                Expect.equal
                    (info.Layers |> List.map (fun l -> l.Method))
                    ([
                        CurvatureMethod.UnitHvp
                        CurvatureMethod.Hutchinson
                        CurvatureMethod.ClosedForm
                    ])
                    "info.Layers |> List.map (fun l -> l.Method)"

                // Unit vectors: 24 weights × 6 batches; Hutchinson: 4 probes × 6 batches on the middle layer.
                Expect.equal info.Hvps (24 * 6 + 4 * 6) "info.Hvps"
                Expect.equal (info.Layers.[2].MedianRelativeSe) 0.0 "info.Layers.[2].MedianRelativeSe"
                Expect.isTrue (info.Layers.[1].MedianRelativeSe > 0.0) "info.Layers.[1].MedianRelativeSe > 0.0"
            testCase "true Fisher on the classifier averages to its Hessian diagonal"
            <| fun () ->
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

                inRange (Stability.relativeError average exact) 0.0 0.1 "Stability.relativeError average exact"
                // And it differs from the empirical Fisher, which uses the labels.
                let empirical =
                    Tensors.toFloats (List.last (Estimators.fisherDiagonal model batches))

                Expect.isTrue
                    (Stability.relativeError empirical exact > 0.1)
                    "Stability.relativeError empirical exact > 0.1"
            testCase "pruning reports the curvature estimator's achieved error through compositions"
            <| fun () ->
                use model = net ()
                let batches = data ()

                let spec =
                    { PruneSpec.Default with
                        Sparsity = 0.5
                        Curvature =
                            { CurvatureOptions.Default with
                                ProbeScope = ProbeScope.PerLayer
                                HvpBudget = 6 * 3 * 4
                            }
                        Seed = 1UL
                    }

                let result =
                    Pruning.prune spec (Registry.find "hts") model [ 4L ] batches Seq.empty [] ignore

                disposeResult result
                let d = singleItem result.Report.Curvature
                Expect.equal d.Hvps (6 * 3 * 4) "d.Hvps"
                Expect.equal d.Layers.Length 3 "d.Layers.Length"

                d.Layers
                |> Seq.iter (fun l ->
                    Expect.isTrue (l.Probes = 4 && l.MedianRelativeSe > 0.0) "l.Probes = 4 && l.MedianRelativeSe > 0.0")

                let plain =
                    Pruning.prune spec (Registry.find "snip") model [ 4L ] batches Seq.empty [] ignore

                disposeResult plain
                Expect.isEmpty plain.Report.Curvature "plain.Report.Curvature"
        ]
