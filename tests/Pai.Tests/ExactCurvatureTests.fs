/// Batched per-sample statistics and the exact Hessian diagonal (issue 12), checked against
/// unit-vector HVPs, the per-sample loops and explicit per-sample gradients.
module Pai.Tests.ExactCurvatureTests

open Expecto

open System
open Pai
open Pai.Torch
open Pai.Host.Models
open Pai.Tests.Support

let private options (shape: InputShape) (dtype: DType) =
    ModelOptions(InputShape = shape, Classes = 10, Seed = 3UL, DType = dtype)

// The Gauss–Newton identity holds for any number of classes; the big models use 4 (the exact
// method costs one backward pass per class).
let private fewClasses (shape: InputShape) (dtype: DType) =
    ModelOptions(InputShape = shape, Classes = 4, Seed = 3UL, DType = dtype)

/// A small BN ResNet: stem 4, stages 4 and 8 (the second with a 1×1 projection shortcut).
let private smallResNet (dtype: DType) =
    new ResNet("resnet-small", 4, [| 4; 8 |], [| 1; 1 |], fewClasses (InputShape(3, 8, 8)) dtype)

/// A one-block ViT on 8×8 images: patch 4, width 8, 2 heads, MLP 16.
let private smallVit (dtype: DType) =
    new VisionTransformer("vit-small", options (InputShape(3, 8, 8)) dtype, 4, 8, 1, 2, 16)

/// Seeded N(0, 1) images and labels in 0..3 (valid for the 4- and the 10-class models).
let private randomBatches (seed: uint64) (shape: InputShape) (dtype: DType) (sizes: int list) : Batch list =
    use gen = new Generator(seed)

    [
        for n in sizes ->
            {
                Inputs = Libtorch.Randn(shape.WithBatch(int64 n), gen, dtype).DetachFromScope()
                Targets = Libtorch.RandInt(0L, 4L, [| int64 n |], gen).DetachFromScope()
            }
    ]

/// Gives batch norm running statistics that are not the identity: one train-mode pass without
/// gradients (as a BN warm-up), then eval mode.
let private warmUp (model: Model) (batches: Batch list) =
    use _scope = new DisposeScope()
    use _noGrad = Libtorch.NoGrad()
    model.Training <- true

    for b in batches do
        model.Forward b.Inputs |> ignore

    model.Training <- false

/// The Hessian diagonal at the given flat indices of every prunable layer, from unit vectors:
/// for each batch one gradient with a graph, then for index k of layer l the k-th entry of
/// ∂(g_l)_k/∂θ_l (what Estimators.unitVectorDiagonal does for every index of one layer).
let private hvpDiagonalAt (model: IModelView) (temperature: float) (indices: int64 list list) (batches: Batch list) =
    Estimators.withEval model (fun () ->
        use _scope = new DisposeScope()
        let ps = [| for kv in model.Prunable -> kv.Value |]
        let total = batches |> List.sumBy (fun b -> b.Targets.NumEl) |> float
        let diag = indices |> List.map (fun ks -> Array.zeroCreate<float> ks.Length)

        for b in batches do
            use _batch = new DisposeScope()
            let loss = Estimators.batchLoss model temperature total b
            let grads = Autograd.Grad(loss, ps, createGraph = true, retainGraph = true)

            for l, ks in List.indexed indices do
                let g = grads.[l].Flatten()

                for j, k in List.indexed ks do
                    use _k = new DisposeScope()

                    let row =
                        Autograd.Grad([| g.Select(0L, k) |], [| ps.[l] |], retainGraph = true, allowUnused = true)

                    match row.[0] with
                    | null -> ()
                    | r -> diag.[l].[j] <- diag.[l].[j] + r.Flatten().Select(0L, k).Item()

        diag)

let private norm (xs: float[]) = sqrt (Array.sumBy (fun x -> x * x) xs)

/// ‖a − b‖ / ‖b‖ (0 when both are zero).
let private relativeError (expected: float[]) (actual: float[]) =
    let d = norm (Array.map2 (-) actual expected)
    if d = 0.0 then 0.0 else d / norm expected

/// Exact diagonal vs unit-vector HVPs at T = 1 and 200 on every layer (every weight of layers with
/// at most `perLayer`; else `perLayer` seeded weights, half of them drawn among those with a
/// non-zero diagonal, since on tiny images most taps of a deep 3×3 conv see only padding):
/// relative error ≤ 1e-10 per layer.
let private checkAgainstHvps (model: Model) (batches: Batch list) (perLayer: int) =
    let view = model :> IModelView
    use gen = new Generator(17UL)

    let nonZero =
        inScope (fun () ->
            PerSample.exactHessianDiagonal view 1.0 batches
            |> List.map (fun d ->
                Tensors.toFloats d
                |> Array.indexed
                |> Array.filter (fun (_, v) -> v <> 0.0)
                |> Array.map fst))

    let draw (n: int64) (count: int) =
        let idx = Libtorch.RandInt(0L, n, [| int64 count |], gen)
        let picked = idx.ToArray<int64>()
        idx.Dispose()
        picked

    let indices =
        [
            for kv, nz in List.zip (List.ofSeq view.Prunable) nonZero ->
                let n = kv.Value.NumEl

                if n <= int64 perLayer then
                    [ 0L .. n - 1L ]
                else
                    let anywhere = draw n (perLayer / 2)

                    let active =
                        draw (int64 (max 1 nz.Length)) (perLayer - perLayer / 2)
                        |> Array.map (fun j -> int64 nz.[int j])

                    Array.append anywhere active |> Array.distinct |> List.ofArray
        ]

    for t in [ 1.0; 200.0 ] do
        use _scope = new DisposeScope()
        let exact = PerSample.exactHessianDiagonal view t batches
        let reference = hvpDiagonalAt view t indices batches

        for (name, ks), e, r in List.zip3 (List.zip [ for kv in view.Prunable -> kv.Key ] indices) exact reference do
            let all = Tensors.toFloats e
            let picked = ks |> List.map (fun k -> all.[int k]) |> Array.ofList

            Expect.isTrue
                (norm r > 0.0)
                ($"%s{model.Name} %s{name} T=%g{t}: the sampled HVP diagonal is all zero; pick other weights")

            let err = relativeError r picked

            Expect.isTrue
                (err <= 1e-10)
                ($"%s{model.Name} %s{name} T=%g{t}: exact diagonal vs unit-vector HVPs relative error %g{err}")

[<Tests>]
let tests =
    testSequenced
    <| testList
        "ExactCurvatureTests"
        [
            testCase "exact Hessian diagonal equals unit-vector HVPs on lenet300 and lenet5 at T 1 and 200"
            <| fun () ->
                // Small images keep it fast: lenet300 on 1×6×6 (fc1 36→300), lenet5 on 1×16×16.
                use lenet300 =
                    ModelZoo.Create("lenet300", options (InputShape(1, 6, 6)) DType.Float64)

                checkAgainstHvps lenet300 (randomBatches 5UL (InputShape(1, 6, 6)) DType.Float64 [ 3; 2 ]) 12

                use lenet5 =
                    ModelZoo.Create("lenet5", options (InputShape(1, 16, 16)) DType.Float64)

                checkAgainstHvps lenet5 (randomBatches 6UL (InputShape(1, 16, 16)) DType.Float64 [ 3; 2 ]) 12
            testCase "exact Hessian diagonal equals unit-vector HVPs on vgg11 and a BN ResNet in eval mode"
            <| fun () ->
                // 3×8×8 images, 4 classes, 3 samples, 4 seeded weights per layer (the big conv layers have millions).
                let shape = InputShape(3, 8, 8)
                use vgg = ModelZoo.Create("vgg11", fewClasses shape DType.Float64)
                let vggData = randomBatches 7UL shape DType.Float64 [ 3 ]
                warmUp vgg (randomBatches 70UL shape DType.Float64 [ 8 ])
                checkAgainstHvps vgg vggData 4

                use resnet = smallResNet DType.Float64
                warmUp resnet (randomBatches 80UL shape DType.Float64 [ 8 ])
                Expect.isTrue ((resnet :> IModelView).IsPiecewiseLinear) "(resnet :> IModelView).IsPiecewiseLinear"
                checkAgainstHvps resnet (randomBatches 8UL shape DType.Float64 [ 2; 2 ]) 4
            testCase "batched empirical Fisher equals the per-sample loop in float32"
            <| fun () ->
                let check (model: Model) (batches: Batch list) =
                    use _scope = new DisposeScope()
                    let view = model :> IModelView
                    let batched = PerSample.fisherDiagonal view batches
                    let loop = Estimators.fisherDiagonal view batches

                    for (kv, b), l in List.zip (List.zip (List.ofSeq view.Prunable) batched) loop do
                        let err = relativeError (Tensors.toFloats l) (Tensors.toFloats b)

                        Expect.isTrue
                            (err <= 1e-5)
                            ($"%s{model.Name} %s{kv.Key}: batched Fisher vs loop relative error %g{err}")

                use lenet5 = ModelZoo.Create("lenet5", options InputShape.Mnist DType.Float32)
                check lenet5 (randomBatches 9UL InputShape.Mnist DType.Float32 [ 4; 3 ])
                use resnet = smallResNet DType.Float32
                warmUp resnet (randomBatches 90UL (InputShape(3, 8, 8)) DType.Float32 [ 8 ])
                check resnet (randomBatches 10UL (InputShape(3, 8, 8)) DType.Float32 [ 5 ])
                // The ViT's linear layers see tokens: per-sample gradients are summed over positions first.
                use vit = smallVit DType.Float32
                check vit (randomBatches 11UL (InputShape(3, 8, 8)) DType.Float32 [ 4 ])
            testCase "batched true Fisher draws the per-sample loop's labels and gives its numbers"
            <| fun () ->
                use _scope = new DisposeScope()
                use model = ModelZoo.Create("lenet5", options (InputShape(1, 16, 16)) DType.Float64)
                let view = model :> IModelView
                let batches = randomBatches 12UL (InputShape(1, 16, 16)) DType.Float64 [ 4; 3 ]
                let batched = PerSample.trueFisherDiagonal view 21UL batches
                let loop = Estimators.trueFisherDiagonal view 21UL batches
                let other = PerSample.trueFisherDiagonal view 22UL batches

                for b, l in List.zip batched loop do
                    let err = relativeError (Tensors.toFloats l) (Tensors.toFloats b)
                    Expect.isTrue (err <= 1e-10) ($"batched true Fisher vs loop relative error %g{err}")

                // The seed matters (the labels are drawn), so the agreement above is not a coincidence of
                // labels that do not depend on it.
                Expect.isTrue
                    (List.exists2 (fun (a: Tensor) (b: Tensor) -> not (a.AllClose(b, 1e-6, 0.0))) batched other)
                    "List.exists2 (fun (a: Tensor) (b: Tensor) -> not (a.AllClose(b, 1e-..."
            testCase "batched conv per-sample squares equal explicit per-sample gradients, on either path"
            <| fun () ->
                use _scope = new DisposeScope()
                use gen = new Generator(13UL)

                // One thread: the per-sample kernel loop; two: the batched products over unfolded inputs.
                // Three vectors' output gradients stacked along the channels sum their squares.
                for threads, vectors, (stride, padding, dilation, groups) in
                    [
                        for threads in [ 1; 2 ] do
                            for vectors in [ 1L; 3L ] do
                                for setting in [ 1, 0, 1, 1; 2, 1, 1, 2; 1, 2, 2, 1; 3, 1, 2, 4 ] ->
                                    threads, vectors, setting
                    ] do
                    use _case = new DisposeScope()
                    let x = Libtorch.Randn([| 5L; 4L; 9L; 10L |], gen, DType.Float64)

                    let w =
                        Libtorch.Randn([| 8L; 4L / int64 groups; 3L; 3L |], gen, DType.Float64).RequiresGrad_()

                    let y = Functional.Conv2d(x, w, null, stride, padding, dilation, groups)

                    let delta =
                        Libtorch.Randn([| y.Size 0; vectors * y.Size 1; y.Size 2; y.Size 3 |], gen, DType.Float64)

                    let capture =
                        {
                            WeightName = "w"
                            Kind = LayerKind.Conv2d(stride, padding, dilation, groups)
                            Input = x
                            Output = y
                        }

                    let batched =
                        withThreads threads (fun () ->
                            PerSample.squaredSampleGradients
                                w.Shape
                                capture
                                [| for k in 0L .. vectors - 1L -> delta.Narrow(1L, k * 8L, 8L) |])

                    let explicitSum = Libtorch.Zeros(w.Shape, DType.Float64)

                    for i in 0L .. 4L do
                        let yi =
                            Functional.Conv2d(x.Narrow(0L, i, 1L), w, null, stride, padding, dilation, groups)

                        for k in 0L .. vectors - 1L do
                            let dk = delta.Narrow(0L, i, 1L).Narrow(1L, k * 8L, 8L)
                            let gi = Autograd.Grad((yi * dk).Sum(), [| w |], retainGraph = true).[0]
                            explicitSum.AddCMul_(gi, gi) |> ignore

                    let err = relativeError (Tensors.toFloats explicitSum) (Tensors.toFloats batched)

                    Expect.isTrue
                        (err <= 1e-12)
                        ($"%d{threads} threads, %d{vectors} vectors, stride %d{stride} padding %d{padding} dilation %d{dilation} groups %d{groups}: relative error %g{err}")
            testCase "Hutchinson's mean converges to the exact diagonal as one over root probes"
            <| fun () ->
                use _scope = new DisposeScope()
                use model = ModelZoo.Create("lenet5", options (InputShape(1, 16, 16)) DType.Float64)
                let view = model :> IModelView
                let batches = randomBatches 14UL (InputShape(1, 16, 16)) DType.Float64 [ 4 ]
                let layers = view.Prunable.Count
                let t = 1.0

                let exact =
                    PerSample.exactHessianDiagonal view t batches
                    |> List.map Tensors.toFloats
                    |> Array.concat

                // The error of a mean of p probes has expectation ∝ 1/√p; over the ~55k weights the error norm
                // concentrates, so 16× the probes must cut it by about 4 (accepted: 2.5 to 6.5).
                let errorAt probes seed =
                    let e =
                        Hutchinson.estimate view t (ProbeBudget.Probes probes) [ [ 0 .. layers - 1 ] ] seed batches

                    relativeError exact (e.Mean |> List.map Tensors.toFloats |> Array.concat)

                let few, many = errorAt 4 31UL, errorAt 64 32UL
                let ratio = few / many

                Expect.isTrue
                    (ratio >= 2.5 && ratio <= 6.5)
                    ($"error %g{few} at 4 probes, %g{many} at 64: ratio %g{ratio}, expected about 4")
            testCase "the exact method refuses the ViT with a message that names the fix"
            <| fun () ->
                use vit = smallVit DType.Float32
                let view = vit :> IModelView
                Expect.isFalse view.IsPiecewiseLinear "view.IsPiecewiseLinear"
                let batches = randomBatches 15UL (InputShape(3, 8, 8)) DType.Float32 [ 2 ]

                let e =
                    throws<ArgumentException>(fun () -> PerSample.exactHessianDiagonal view 200.0 batches |> ignore)

                Expect.stringContains e.Message "vit-small" "e.Message"
                Expect.stringContains e.Message "piecewise linear" "e.Message"
                Expect.stringContains e.Message "Hutchinson" "e.Message"
            testCase "batched statistics keep their memory bounded on resnet18, on either path"
            <| fun () ->
                // resnet18 on 8×8 images, 80 samples: the last stage's conv weights (512·512·9) have 9.4 MB of
                // per-sample gradient per sample, 755 MB for the batch at once. Chunking bounds the scratch
                // memory at PerSample.ChunkBytes (64 MiB) on the batched path (2 threads); the per-sample
                // kernel loop (1 thread) holds one sample's gradient at a time. On both, the peak RSS growth
                // (scratch, activations and the 45 MB weight-sized sums) must stay below half the unchunked size.
                use model = ModelZoo.Create("resnet18", options (InputShape(3, 8, 8)) DType.Float32)
                let view = model :> IModelView
                let batches = randomBatches 16UL (InputShape(3, 8, 8)) DType.Float32 [ 80 ]
                let largest = view.Prunable |> Seq.map (fun kv -> kv.Value.NumEl) |> Seq.max
                let unchunked = 80L * largest * 4L

                for threads in [ 1; 2 ] do
                    GC.Collect()
                    // Resets VmHWM (the peak RSS) to the current RSS.
                    IO.File.WriteAllText("/proc/self/clear_refs", "5")
                    let before = residentBytes ()

                    withThreads threads (fun () ->
                        use _scope = new DisposeScope()
                        PerSample.fisherDiagonal view batches |> ignore)

                    let peak =
                        IO.File.ReadAllLines "/proc/self/status"
                        |> Array.find (fun l -> l.StartsWith "VmHWM:")
                        |> fun l -> l.Substring(6).Trim().Split(' ').[0] |> int64 |> (*) 1024L

                    let growth = peak - before

                    Expect.isTrue
                        (growth < unchunked / 2L)
                        ($"%d{threads} threads: peak RSS grew by %d{growth / 1_048_576L} MiB; the unchunked per-sample gradients alone take %d{unchunked / 1_048_576L} MiB")
            testCase
                "the top-classes approximation stays below the exact diagonal and its error shrinks with more classes"
            <| fun () ->
                use _scope = new DisposeScope()
                use model = ModelZoo.Create("lenet5", options (InputShape(1, 16, 16)) DType.Float64)
                let view = model :> IModelView
                let batches = randomBatches 18UL (InputShape(1, 16, 16)) DType.Float64 [ 5 ]

                for t in [ 1.0; 200.0 ] do
                    let exact =
                        PerSample.exactHessianDiagonal view t batches
                        |> List.map Tensors.toFloats
                        |> Array.concat

                    let errorWith k =
                        let approx =
                            PerSample.topClassesHessianDiagonal view t k batches
                            |> List.map Tensors.toFloats
                            |> Array.concat

                        // Dropped columns only remove squares: the approximation never exceeds the exact value.
                        Expect.isTrue
                            (Array.forall2 (fun a e -> a <= e * (1.0 + 1e-12) + 1e-300) approx exact)
                            ($"T=%g{t} k=%d{k}: above exact")

                        relativeError exact approx

                    // Every class's column of diag(√p) − p√pᵀ: the same matrix as the exact diagonal's C − 1
                    // Householder columns, factored differently.
                    let all =
                        PerSample.topClassesHessianDiagonal view t System.Int32.MaxValue batches
                        |> List.map Tensors.toFloats
                        |> Array.concat

                    let allError = relativeError exact all
                    Expect.isTrue (allError <= 1e-12) ($"T=%g{t}: every class vs exact, relative error %g{allError}")

                    let errors = [ for k in [ 1; 4 ] -> errorWith k ]

                    Expect.isTrue
                        (List.pairwise errors |> List.forall (fun (a, b) -> b <= a))
                        ($"T=%g{t}: errors %A{errors} should shrink")

                    Expect.isTrue
                        (errors.[0] > 1e-6)
                        ($"T=%g{t}: one class should not already be exact (%g{errors.[0]})")
            testCase
                "sampled classes are exact with every class, seeded, and unbiased: their mean over seeds converges to the exact diagonal"
            <| fun () ->
                use _scope = new DisposeScope()

                use model =
                    ModelZoo.Create("lenet5", fewClasses (InputShape(1, 16, 16)) DType.Float64)

                let view = model :> IModelView
                let batches = randomBatches 19UL (InputShape(1, 16, 16)) DType.Float64 [ 3; 3 ]

                let flat (ts: Tensor list) =
                    ts |> List.map Tensors.toFloats |> Array.concat

                for t in [ 1.0; 200.0 ] do
                    let exact = flat (PerSample.exactHessianDiagonal view t batches)

                    let sampled k seed =
                        flat (PerSample.sampledClassesHessianDiagonal view t k seed batches)

                    let all = relativeError exact (sampled 4 1UL)
                    Expect.isTrue (all <= 1e-10) ($"T=%g{t}: every class drawn should be exact, error %g{all}")
                    Expect.equal (sampled 1 7UL) (sampled 1 7UL) "the same seed draws the same classes"

                    let draws = [ for seed in 1UL .. 64UL -> sampled 1 seed ]
                    let single = relativeError exact draws.[0]

                    let mean =
                        Array.init exact.Length (fun i -> draws |> List.averageBy (fun d -> d.[i]))

                    let meanError = relativeError exact mean
                    // Unbiased: the error of a mean of 64 draws falls like 1/√64 (allow 1/4, not 1/8).
                    Expect.isTrue
                        (single > 1e-3 && meanError < single / 4.0)
                        ($"T=%g{t}: one draw error %g{single}, mean of 64 draws %g{meanError}")
            testCase "merged scoring batches keep the sample order, never split a batch and respect both bounds"
            <| fun () ->
                use _scope = new DisposeScope()

                let sizesOf (bs: Batch list) =
                    bs |> List.map (fun b -> int b.Targets.NumEl)

                let mnist =
                    randomBatches 30UL (InputShape(1, 16, 16)) DType.Float32 (List.replicate 40 1)

                let merged = Estimators.mergeBatches mnist
                Expect.equal (sizesOf merged) [ 32; 8 ] "40 single samples of 1×16×16 merge into 32 + 8"

                let cat (bs: Batch list) =
                    Libtorch.Cat([ for b in bs -> b.Inputs ]), Libtorch.Cat([ for b in bs -> b.Targets ])

                let inputs, targets = cat mnist
                let mergedInputs, mergedTargets = cat merged
                Expect.isTrue (inputs.Equal mergedInputs && targets.Equal mergedTargets) "same samples, same order"

                // A larger batch the user chose stays whole; the singles around it merge on their own.
                let mixed = randomBatches 31UL (InputShape(1, 16, 16)) DType.Float32 [ 1; 1; 40; 1 ]
                Expect.equal (sizesOf (Estimators.mergeBatches mixed)) [ 2; 40; 1 ] "a batch of 40 is not split"

                // 3×32×32 inputs: 12,288 / 3,072 elements give 4 samples per batch; 1×48×48 give 5.
                let cifar =
                    randomBatches 32UL (InputShape(3, 32, 32)) DType.Float32 (List.replicate 10 1)

                Expect.equal (sizesOf (Estimators.mergeBatches cifar)) [ 4; 4; 2 ] "the input-element bound"

                let larger =
                    randomBatches 33UL (InputShape(1, 48, 48)) DType.Float32 (List.replicate 9 1)

                Expect.equal
                    (sizesOf (Estimators.mergeBatches larger))
                    [ 5; 4 ]
                    "the input-element bound, larger inputs"
            testCase
                "statistics on batch-1 scoring data equal the batch-1 loops to float32 tolerance; Hutchinson keeps its batches"
            <| fun () ->
                let check (model: Model) (singles: Batch list) =
                    use _scope = new DisposeScope()
                    let view = model :> IModelView

                    let exactCtx =
                        { TinyNet.context view singles 5UL with
                            Curvature =
                                { CurvatureOptions.Default with
                                    Estimator = HessianEstimator.Exact
                                }
                        }

                    use cache = new StatisticCache(exactCtx)

                    // The gradient reports one step per batch it reads: the merged ones.
                    let totals = Collections.Generic.List<string * int>()

                    do
                        use _progress =
                            ScoringProgress.Install(
                                Action<string, int, int>(fun what _ total -> totals.Add((what, total)))
                            )

                        (cache.Get(Statistic.Grad 1.0)).Layers |> ignore

                    let merged = (Estimators.mergeBatches singles).Length
                    Expect.isLessThan merged singles.Length "the singles merge into fewer batches"

                    Expect.equal
                        (totals |> Seq.map snd |> Seq.distinct |> List.ofSeq)
                        [ merged ]
                        "grad read the merged batches"

                    let expected: (Statistic * Tensor list) list =
                        [
                            Statistic.Grad 1.0, Estimators.meanGradient view 1.0 singles
                            Statistic.Grad 200.0, Estimators.meanGradient view 200.0 singles
                            Statistic.HessianGradient 200.0, Estimators.hessianGradient view 200.0 singles
                            Statistic.Fisher, Estimators.fisherDiagonal view singles
                            Statistic.TrueFisher, Estimators.trueFisherDiagonal view 5UL singles
                            Statistic.HessianDiagonal 200.0, PerSample.exactHessianDiagonal view 200.0 singles
                        ]

                    for s, loop in expected do
                        for (kv, l), c in List.zip (List.zip (List.ofSeq view.Prunable) loop) (cache.Get s).Layers do
                            let err = relativeError (Tensors.toFloats l) (Tensors.toFloats c)

                            Expect.isTrue
                                (err <= 1e-5)
                                ($"%s{model.Name} %s{s.Name} %s{kv.Key}: merged vs batch-1 relative error %g{err}")

                    // Hutchinson draws probes per scoring batch: it reads the batches as given, bit for bit.
                    use hutchCache = new StatisticCache(TinyNet.context view singles 5UL)
                    let direct, _ = Hutchinson.curvature view 200.0 CurvatureOptions.Default 5UL singles

                    for d, c in List.zip direct (hutchCache.Get(Statistic.HessianDiagonal 200.0)).Layers do
                        Expect.isTrue (d.Equal c) $"%s{model.Name}: Hutchinson on the scoring batches as given"

                use lenet5 = ModelZoo.Create("lenet5", options InputShape.Mnist DType.Float32)
                check lenet5 (randomBatches 33UL InputShape.Mnist DType.Float32 (List.replicate 36 1))
                use resnet = smallResNet DType.Float32
                warmUp resnet (randomBatches 34UL (InputShape(3, 8, 8)) DType.Float32 [ 8 ])
                check resnet (randomBatches 35UL (InputShape(3, 8, 8)) DType.Float32 (List.replicate 12 1))

            testCase "the exact reference: every layer of a piecewise-linear model, the cheap layers of the others"
            <| fun () ->
                use _scope = new DisposeScope()
                use lenet = ModelZoo.Create("lenet300", options (InputShape(1, 4, 4)) DType.Float64)
                let batches = randomBatches 41UL (InputShape(1, 4, 4)) DType.Float64 [ 3; 3 ]
                let reference = Hutchinson.exactReference lenet 200.0 0 batches

                let expected =
                    PerSample.exactHessianDiagonal lenet 200.0 (Estimators.mergeBatches batches)

                Expect.equal (List.map fst reference) [ 0..2 ] "every layer"

                for (_, r), e in List.zip reference expected do
                    Expect.isTrue (r.Equal e) "the Gauss–Newton identity"

                use vit = smallVit DType.Float64
                let view = vit :> IModelView
                let vitBatches = randomBatches 42UL (InputShape(3, 8, 8)) DType.Float64 [ 2; 2 ]

                let classifier =
                    [ for kv in view.Prunable -> kv.Key ]
                    |> List.findIndex ((=) view.ClassifierWeightName)

                let smallest, size =
                    view.Prunable
                    |> Seq.indexed
                    |> Seq.filter (fun (i, _) -> i <> classifier)
                    |> Seq.map (fun (i, kv) -> i, kv.Value.NumEl)
                    |> Seq.minBy snd

                let vitReference = Hutchinson.exactReference view 200.0 (int size) vitBatches

                Expect.equal
                    (List.map fst vitReference |> List.take 2)
                    [ classifier; smallest ]
                    "the classifier, then small layers"

                Expect.isTrue
                    ((snd vitReference.[0]).Equal(fst (Estimators.classifierDiagonal view 200.0 vitBatches)))
                    "the classifier's closed form"

                Expect.isTrue
                    ((snd vitReference.[1]).Equal(fst (Estimators.unitVectorDiagonal view 200.0 smallest vitBatches)))
                    "unit-vector HVPs"
            testCase
                "the curvature decision: auto is exact where it fits, and what cannot work is refused naming the fix"
            <| fun () ->
                let request =
                    {
                        Setting = "auto"
                        ReadsHessianDiagonal = true
                        Learned = false
                        Model = "lenet5"
                        PiecewiseLinear = Some true
                        HutchinsonOptions = []
                        Classes = 0
                    }

                let settled r =
                    match HessianEstimator.settle r with
                    | Ok e -> HessianEstimator.setting e
                    | Error e -> "error: " + e

                Expect.equal (settled request) "exact" "auto, piecewise linear"

                Expect.equal
                    (settled
                        { request with
                            ReadsHessianDiagonal = false
                            Setting = "exact"
                        })
                    "auto"
                    "no hdiag read"

                Expect.equal
                    (settled
                        { request with
                            PiecewiseLinear = Some false
                        })
                    "hutchinson"
                    "auto, not piecewise linear"

                Expect.equal
                    (settled
                        { request with
                            HutchinsonOptions = [ "--probes" ]
                        })
                    "hutchinson"
                    "auto, probes given"

                Expect.equal (settled { request with Learned = true }) "hutchinson" "auto, learned"
                Expect.equal (settled { request with Setting = "hutchinson" }) "hutchinson" "hutchinson"
                Expect.equal (settled { request with Classes = 3 }) "exact" "auto, classes"

                for r, problem in
                    [
                        { request with
                            Setting = "exact"
                            Model = "vit-tiny"
                            PiecewiseLinear = Some false
                        },
                        "--curvature exact: vit-tiny is not piecewise linear"
                        { request with
                            Setting = "exact"
                            HutchinsonOptions = [ "--probes"; "--probe-scope" ]
                        },
                        "--probes, --probe-scope configure Hutchinson's estimator"
                        { request with
                            Setting = "hutchinson"
                            Classes = 3
                        },
                        "drop --curvature-classes or the Hutchinson options"
                        { request with
                            Learned = true
                            Classes = 3
                        },
                        "drop --curvature-classes"
                        { request with Setting = "newton" },
                        "--curvature: unknown value 'newton'; valid: auto, exact, hutchinson"
                    ] do
                    let answer = settled r
                    Expect.isTrue (answer.StartsWith "error: ") answer
                    Expect.stringContains answer problem problem
        ]
