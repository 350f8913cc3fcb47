module Pai.Tests.CriteriaTests

open Expecto
open Pai.Tests.Support

open System
open FsCheck
open FsCheck.FSharp
open Pai
open Pai.Torch
open Pai.Tests.TinyNet

let private rms (xs: float[]) =
    sqrt (Array.averageBy (fun x -> x * x) xs)

let private diag (h: float[,]) =
    Array.init (Array2D.length1 h) (fun i -> h.[i, i])

let private net () = new TinyMlp([ 4; 5; 3 ], 7UL)

let private data () =
    singles (batch 11UL 6 4 3 DType.Float64)

let private hutch (model: IModelView) probes scope seed batches =
    let blocks = ProbeScope.blocks model.Prunable.Count scope
    Hutchinson.estimate model 1.0 (ProbeBudget.Probes probes) blocks seed batches

// ---- masks --------------------------------------------------------------------------------------

let private scoresOf (layers: (string * float[] * int64[]) list) : Scores =
    layers
    |> List.map (fun (n, v, s) -> n, Libtorch.FromArray<float>(v, s).DetachFromScope())
    |> Scores.ofLayers

let private keptFlat (m: Mask) =
    [|
        for _, k in m.Layers do
            yield! k.ToArray<bool>()
    |]

let private layerGen =
    gen {
        let! layers = Gen.choose (1, 4)
        let! sizes = Gen.listOfLength layers (Gen.choose (1, 40))

        let! values =
            sizes
            |> List.map (fun n -> Gen.arrayOfLength n (Gen.choose (-5, 5) |> Gen.map float))
            |> Gen.sequenceToList

        let! sparsity = Gen.choose (0, 99) |> Gen.map (fun p -> float p / 100.0)
        return List.zip sizes values, sparsity
    }

let private spec sparsity rounds =
    { PruneSpec.Default with
        Sparsity = sparsity
        Rounds = rounds
        Seed = 3UL
    }

// ---- algebra laws ---------------------------------------------------------------------------------

let private flatScores (c: Criterion) ctx =
    let s = c.Score ctx
    let v = s.Layers |> List.map snd |> flatOf
    Scores.dispose s
    v

/// Mean over `seeds` of the RMS error of Hutchinson's estimate (`probes` probes over `scope`) against `exact`.
let private meanHutchError model batches exact probes scope seeds =
    seeds
    |> List.map (fun seed ->
        let est = hutch model probes scope seed batches
        rms (Array.map2 (-) (flatOf est.Mean) exact))
    |> List.average

[<Tests>]
let tests =
    testSequenced
    <| testList
        "CriteriaTests"
        [
            testCase "Hutchinson converges to the exact diagonal with error falling like 1/sqrt(probes)"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let exact = diag (exactHessian model 1.0 batches)

                let errorAt probes =
                    meanHutchError model batches exact probes ProbeScope.Full [ 1UL .. 6UL ]

                let e16 = errorAt 16
                let e256 = errorAt 256
                // 16x the probes: the error should shrink about 4x (sqrt 16).
                let ratio = e16 / e256
                inRange ratio 2.5 6.5 "ratio"
                Expect.isTrue (e256 < 0.5 * rms exact) ($"error %g{e256} vs diagonal size %g{rms exact}")
            testCase "Hutchinson is unbiased across seeds and its standard error is calibrated"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let exact = diag (exactHessian model 1.0 batches)

                let runs =
                    [ for seed in 100UL .. 139UL -> hutch model 8 ProbeScope.Full seed batches ]

                let means = runs |> List.map (fun r -> flatOf r.Mean)

                let average =
                    Array.init exact.Length (fun i -> means |> List.averageBy (fun m -> m.[i]))
                // The average of 40 independent estimates has error ~ SE/sqrt(40): compare with that.
                let se = runs |> List.map (fun r -> flatOf r.StdErr)

                let meanSe =
                    Array.init exact.Length (fun i -> se |> List.averageBy (fun s -> s.[i]))

                for i in 0 .. exact.Length - 1 do
                    let tol = 5.0 * meanSe.[i] / sqrt 40.0 + 1e-12

                    Expect.isTrue
                        (abs (average.[i] - exact.[i]) <= tol)
                        ($"weight %d{i}: average %g{average.[i]} vs exact %g{exact.[i]} (tol %g{tol})")

                // Calibration: |estimate - exact| / SE is below 3 for the great majority of entries.
                let z =
                    [
                        for r, m in List.zip runs means do
                            let s = flatOf r.StdErr

                            for i in 0 .. exact.Length - 1 do
                                if s.[i] > 0.0 then
                                    abs (m.[i] - exact.[i]) / s.[i]
                    ]

                let within = z |> List.filter (fun v -> v < 3.0) |> List.length
                Expect.isTrue (float within / float z.Length > 0.95) ($"only %d{within}/%d{z.Length} within 3 SE")
            testCase "per-layer probing is unbiased and less noisy than full-network probing"
            <| fun () ->
                use model = new TinyMlp([ 4; 6; 5; 3 ], 3UL)
                let batches = data ()
                let exact = diag (exactHessian model 1.0 batches)

                let errorOf scope =
                    meanHutchError model batches exact 64 scope [ 1UL .. 5UL ]

                let full = errorOf ProbeScope.Full
                let perLayer = errorOf ProbeScope.PerLayer
                Expect.isTrue (perLayer < full) ($"per-layer error %g{perLayer} should be below full %g{full}")
                Expect.isTrue (perLayer < 0.5 * rms exact) "perLayer < 0.5 * rms exact"
            testCase "Fisher diagonal equals the mean of explicit per-sample squared gradients"
            <| fun () ->
                use model = net ()
                let b = batch 5UL 7 4 3 DType.Float64
                // Batches of several samples: the estimator must still square per-sample gradients.
                let batches = [ b ]
                let fisher = Estimators.fisherDiagonal model batches |> flatOf
                let ps = [ for kv in (model :> IModelView).Prunable -> kv.Value ]

                let explicitMean =
                    [
                        for s in singles b ->
                            let logits = (model :> IModelView).Forward s.Inputs
                            let loss = Functional.CrossEntropy(logits, s.Targets)

                            Autograd.Grad(loss, List.toArray ps)
                            |> Array.toList
                            |> flatOf
                            |> Array.map (fun g -> g * g)
                    ]
                    |> List.reduce (Array.map2 (+))
                    |> Array.map (fun v -> v / 7.0)

                Expect.equal fisher.Length explicitMean.Length "fisher.Length"

                for e, f in Array.zip explicitMean fisher do
                    Expect.floatClose (decimals 12) f e "f"
            testCase "GraSP's Hg equals the exact Hessian times the gradient"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let t = 3.0
                let h = exactHessian model t batches
                let g = Estimators.meanGradient model t batches |> flatOf
                let hg = Estimators.hessianGradient model t batches |> flatOf
                let n = g.Length

                for i in 0 .. n - 1 do
                    let expected = Seq.sum (seq { for j in 0 .. n - 1 -> h.[i, j] * g.[j] })
                    Expect.floatClose (decimals 10) (hg.[i]) expected "hg.[i]"
            testCase "SynFlow conserves the score sum across layers of a bias-free ReLU chain"
            <| fun () ->
                let check (seed: uint64) =
                    use model = new TinyMlp([ 6; 8; 7; 4 ], seed, true, DType.Float32)
                    let scores = (Registry.find "synflow").Score(context model [] seed)

                    let sums =
                        scores.Layers
                        |> List.map (fun (_, s) -> (use t = s.To(DType.Float64).Sum() in t.Item()))

                    Scores.dispose scores
                    let first = List.head sums
                    sums |> List.forall (fun s -> abs (s - first) <= 1e-4 * abs first)

                Check.One(
                    Config.QuickThrowOnFailure.WithMaxTest(20),
                    Prop.forAll (Arb.fromGen (Gen.choose (1, 100000) |> Gen.map uint64)) check
                )
            testCase "SNIP equals |theta * g| in closed form on a linear model"
            <| fun () ->
                use model = new TinyMlp([ 3; 4 ], 21UL, true, DType.Float64)
                let b = batch 2UL 5 3 4 DType.Float64
                let scores = (Registry.find "snip").Score(context model [ b ] 0UL)
                let snip = scores.Layers |> List.map snd |> flatOf
                // Closed form: dL/dW = mean_i (softmax(W xᵢ) - onehot(yᵢ)) xᵢᵀ.
                let w = flatWeights model
                let x = Pai.Tensors.toFloats b.Inputs
                let y = b.Targets.ToArray<int64>()
                let grad = Array.zeroCreate<float> 12

                for i in 0..4 do
                    let xi = x.[i * 3 .. i * 3 + 2]

                    let z =
                        Array.init 4 (fun r -> Seq.sum (seq { for c in 0..2 -> w.[r * 3 + c] * xi.[c] }))

                    let m = Array.max z
                    let e = z |> Array.map (fun v -> exp (v - m))
                    let p = e |> Array.map (fun v -> v / Array.sum e)

                    for r in 0..3 do
                        let d = p.[r] - (if int64 r = y.[i] then 1.0 else 0.0)

                        for c in 0..2 do
                            grad.[r * 3 + c] <- grad.[r * 3 + c] + d * xi.[c] / 5.0

                for k in 0..11 do
                    Expect.floatClose (decimals 12) (snip.[k]) (abs (w.[k] * grad.[k])) "snip.[k]"

                Scores.dispose scores
            testCase "masks keep exactly k weights globally and per layer, ties broken by position"
            <| fun () ->
                let prop (layers: (int * float[]) list, sparsity: float) =
                    let scores =
                        scoresOf [ for i, (n, v) in List.indexed layers -> $"l%d{i}", v, [| int64 n |] ]

                    let density = 1.0 - sparsity
                    let total = layers |> List.sumBy fst |> int64
                    let g = Selection.select Ranking.Global density false None scores
                    let p = Selection.select Ranking.PerLayer density false None scores
                    let gKept = keptFlat g |> Array.filter id |> Array.length |> int64
                    let okGlobal = gKept = Selection.keepCount density total

                    let okPer =
                        List.forall2
                            (fun (n, _) (_, k: Tensor) -> k.CountNonZero() = Selection.keepCount density (int64 n))
                            layers
                            p.Layers
                    // Every kept score is >= every pruned score; among equal scores the earlier position wins.
                    let all = layers |> List.collect (fun (_, v) -> List.ofArray v) |> Array.ofList
                    let kept = keptFlat g

                    let orderOk =
                        Seq.forall
                            (fun (i, j) ->
                                not (kept.[j] && not kept.[i])
                                || all.[j] > all.[i]
                                || (all.[j] = all.[i] && j < i))
                            (seq {
                                for i in 0 .. all.Length - 1 do
                                    for j in 0 .. all.Length - 1 -> i, j
                            })

                    Scores.dispose scores
                    Mask.dispose g
                    Mask.dispose p
                    okGlobal && okPer && orderOk

                Check.One(Config.QuickThrowOnFailure.WithMaxTest(100), Prop.forAll (Arb.fromGen layerGen) prop)
            testCase "all-equal scores keep the first k positions"
            <| fun () ->
                let scores =
                    scoresOf [ "a", Array.create 6 1.0, [| 2L; 3L |]; "b", Array.create 4 1.0, [| 4L |] ]

                let m = Selection.select Ranking.Global 0.5 false None scores

                Expect.equal
                    (keptFlat m)
                    ([| true; true; true; true; true; false; false; false; false; false |])
                    "keptFlat m"
            testCase "the same seed gives a bit-identical mask, another seed another mask"
            <| fun () ->
                use model = net ()

                let maskFor seed =
                    let s = (Registry.find "random").Score(context model [] seed)
                    let m = Selection.select Ranking.Global 0.3 false None s
                    Scores.dispose s
                    let k = keptFlat m
                    Mask.dispose m
                    k

                Expect.equal (maskFor 5UL) (maskFor 5UL) "maskFor 5UL"
                Expect.notEqual (maskFor 6UL) (maskFor 5UL) "maskFor 6UL"
            testCase "non-finite scores and bad sparsity are rejected with the layer or parameter named"
            <| fun () ->
                let scores = scoresOf [ "conv1", [| 1.0; nan |], [| 2L |] ]

                let e =
                    throws<ArgumentException>(fun () -> Selection.select Ranking.Global 0.5 false None scores |> ignore)

                Expect.stringContains e.Message "conv1" "e.Message"
                let e2 = throws<ArgumentException>(fun () -> Selection.validateSparsity 1.0)
                Expect.stringContains e2.Message "sparsity" "e2.Message"

                throws<ArgumentException>(fun () -> Selection.validateSparsity -0.1) |> ignore
            testCase "keep-one-per-layer prevents collapse and keeps k exact"
            <| fun () ->
                let scores =
                    scoresOf
                        [
                            "big", Array.init 20 (fun i -> float (i + 10)), [| 20L |]
                            "small", [| 0.1; 0.2 |], [| 2L |]
                        ]

                let plain = Selection.select Ranking.Global 0.1 false None scores
                Expect.equal ((snd plain.Layers.[1]).CountNonZero()) 0L "(snd plain.Layers.[1]).CountNonZero()"
                let guarded = Selection.select Ranking.Global 0.1 true None scores
                Expect.equal ((snd guarded.Layers.[1]).CountNonZero()) 1L "(snd guarded.Layers.[1]).CountNonZero()"

                Expect.equal
                    (keptFlat guarded |> Array.filter id |> Array.length |> int64)
                    (Selection.keepCount 0.1 22L)
                    "keptFlat guarded |> Array.filter id |> Array.length |> int64"

                Expect.equal
                    ((snd guarded.Layers.[1]).ToArray<bool>())
                    ([| false; true |])
                    "(snd guarded.Layers.[1]).ToArray<bool>()"
            testCase "iterative pruning never revives a weight and restores the model's weights"
            <| fun () ->
                use model = new TinyMlp([ 6; 8; 7; 4 ], 9UL, true, DType.Float32)
                let before = flatWeights model
                let batches = [ batch 1UL 4 6 4 DType.Float32 ]
                let logs = ResizeArray()
                // Each round's mask must be a subset of the previous one: check via a criterion that records masks.
                let seen = ResizeArray<bool[]>()

                let recording =
                    { Registry.find "synflow" with
                        Formula =
                            Expr.Statistic(
                                Statistic.Learned
                                    {
                                        Name = "recording_synflow"
                                        Compute =
                                            fun get ctx ->
                                                ctx.Mask |> Option.iter (fun m -> seen.Add(keptFlat m))
                                                (get Statistic.SynapticSaliency).Layers |> List.map (fun t -> t.Clone())
                                    }
                            )
                    }

                let result =
                    Pruning.prune (spec 0.95 20) recording model [ 6L ] batches Seq.empty [] logs.Add

                let report = result.Report
                seen.Add(keptFlat result.Mask)

                for prev, next in Seq.pairwise seen do
                    Expect.isTrue (Array.forall2 (fun p n -> p || not n) prev next) "a pruned weight came back"

                Expect.equal report.Rounds 20 "report.Rounds"
                Expect.equal report.Kept (Selection.keepCount 0.05 (int64 before.Length)) "report.Kept"
                Expect.equal (flatWeights model) before "flatWeights model"
                disposeResult result
            testCase "algebra: abs is idempotent, negate twice is the identity, rank ignores positive scaling"
            <| fun () ->
                let prop (seed: int) =
                    use model = new TinyMlp([ 4; 5; 3 ], uint64 seed)
                    let ctx = context model [ batch (uint64 seed) 3 4 3 DType.Float64 ] (uint64 seed)
                    let score e = flatScores (Criteria.ofFormula e) ctx
                    let taylor1 = Formula.theta * Formula.grad
                    let t1 = score taylor1
                    let ok1 = score (abs (abs taylor1)) = score (abs taylor1)
                    let ok2 = score (-(-taylor1)) = t1
                    let r1 = score (Formula.rank taylor1)
                    let r2 = score (Formula.rank (3.5 * taylor1))
                    ok1 && ok2 && r1 = r2

                Check.One(
                    Config.QuickThrowOnFailure.WithMaxTest(15),
                    Prop.forAll (Arb.fromGen (Gen.choose (1, 10000))) prop
                )
            testCase "FTS and HTS are the compositions of their parts"
            <| fun () ->
                use model = net ()
                let ctx = context model (data ()) 4UL
                let t1 = flatScores (Criteria.ofFormula (Formula.theta * Formula.grad)) ctx
                let fo = flatScores (Registry.find "fisher_obd") ctx
                let fts = flatScores (Registry.find "fts") ctx
                Array.iteri (fun i v -> Expect.floatClose (decimals 12) v (abs (t1.[i] + fo.[i])) "v") fts
                // HTS takes g and Ĥ at the Hutchinson temperature: |θ ⊙ g_T + ½ θ² ⊙ Ĥ_T|.
                let t = Temperatures.Default.Hutchinson
                let t1T = flatScores (Criteria.ofFormula (Formula.theta * Formula.gradAt t)) ctx
                let ho = flatScores (Registry.find "hutch_obd") ctx
                let hts = flatScores (Registry.find "hts") ctx
                Array.iteri (fun i v -> Expect.floatClose (decimals 12) v (abs (t1T.[i] + ho.[i])) "v") hts
                Expect.equal ((Registry.find "fts").Name) "fts" "(Registry.find \"fts\").Name"
            testCase
                "criteria scored on one cache share their statistics: the Hessian-diagonal family computes one estimate"
            <| fun () ->
                use model = net ()
                let ctx = context model (data ()) 4UL
                let t = Temperatures.Default.Hutchinson
                use cache = new StatisticCache(ctx)

                let diag, obd, hts =
                    match
                        [ "hutch_diag"; "hutch_obd"; "hts" ]
                        |> List.map (fun n -> Criteria.scoreWith cache (Registry.find n))
                    with
                    | [ d; o; h ] -> d, o, h
                    | _ -> failwith "three criteria give three scores"

                // Each statistic was computed once, in order of first use.
                Expect.equal cache.Computed ([ $"hdiag(T=%g{t})"; "theta"; $"grad(T=%g{t})" ]) "cache.Computed"
                // Every member of the family carries the one estimate's diagnostics: 10 probes × 6 batches.
                for s in [ diag; obd; hts ] do
                    let d = singleItem s.Diagnostics
                    Expect.equal d.Hvps (10 * 6) "d.Hvps"

                let flat (s: Scores) = s.Layers |> List.map snd |> flatOf
                let h = flat diag
                // The shared estimate is the one a fresh scoring with the same seed draws.
                Expect.equal h (flatScores (Registry.find "hutch_diag") ctx) "h"
                let w = flatWeights model
                let g = flatOf (cache.Get(Statistic.Grad t)).Layers
                Array.iteri (fun i v -> Expect.floatClose (decimals 12) v (0.5 * w.[i] * w.[i] * h.[i]) "v") (flat obd)

                Array.iteri
                    (fun i v ->
                        Expect.floatClose (decimals 12) v (abs (w.[i] * g.[i] + 0.5 * w.[i] * w.[i] * h.[i])) "v")
                    (flat hts)

                for s in [ diag; obd; hts ] do
                    Scores.dispose s
            testCase "unknown criterion names list the valid ones; autos asks for a predictor"
            <| fun () ->
                match Registry.resolve Temperatures.Default "snipp" with
                | Error e -> Expect.stringContains e "hutch_obd" "e"
                | Ok _ -> failwith "expected an error"

                match Registry.resolve Temperatures.Default "autos" with
                | Error e -> Expect.stringContains e "predictor" "e"
                | Ok _ -> failwith "expected an error"

                Expect.equal Registry.names.Length 14 "Registry.names.Length"
        ]
