/// Batched per-sample statistics (the technique of BackPACK, Dangel et al. 2020): one forward
/// pass records each prunable layer's input a and output z, one backward of the batch gives the
/// output gradients δ = ∂(Σᵢ vᵢ·fᵢ)/∂z for a vector vᵢ per sample on the logits fᵢ, and the sum
/// over samples of the squared per-sample weight gradients Σᵢ (δᵢ aᵢᵀ)² follows from δ and a
/// without a per-sample backward pass. On it: the empirical and true Fisher diagonals, and the
/// exact Hessian diagonal of piecewise-linear networks by the Gauss–Newton identity (docs/architecture.md §5).
/// Every statistic is a mean over the scoring samples with the model in eval mode (samples are
/// then independent, so δᵢ depends on sample i alone), as Estimators.batchLoss's mean loss.
namespace Pai

open System.Collections.Generic
open Pai.Torch

[<RequireQualifiedAccess>]
module PerSample =
    /// Scratch memory one chunk of samples may take when a layer's per-sample gradients are
    /// formed explicitly in a batch (conv layers on unfolded inputs: the unfolded input, the
    /// per-sample gradients, squared in place, and the output gradients' reshaped copy; linear
    /// layers over positions: the per-sample gradients): 64 MiB. Chunks hold at least one sample,
    /// so a single sample whose unfolded input alone exceeds it still runs.
    [<Literal>]
    let ChunkBytes = 67_108_864L

    // Samples per chunk so that `perSample` elements of `dtype` per sample stay within ChunkBytes.
    let private chunkSize (perSample: int64) (dtype: DType) =
        max 1L (ChunkBytes / max 1L (perSample * int64 (dtype.ElementSize())))

    // Σ over chunks [start, start + n) of 0..total-1 of f start n.
    let private sumOverChunks (total: int64) (chunk: int64) (f: int64 -> int64 -> Tensor) : Tensor =
        let mutable acc: Tensor option = None
        let mutable start = 0L

        while start < total do
            let n = min chunk (total - start)
            use _chunk = new DisposeScope()
            let part = f start n

            match acc with
            | None -> acc <- Some(part.MoveToOuterScope())
            | Some a -> a.Add_(part) |> ignore

            start <- start + n

        acc.Value

    /// Σᵢ Σₖ Gᵢₖ ∘ Gᵢₖ over the samples of one captured layer and K output-gradient vectors, Gᵢₖ the
    /// per-sample gradient of the weight (shape `weightShape`) given δₖ = deltas.[k], each shaped
    /// like capture.Output:
    /// - Linear on [N, in]: Gᵢₖ = δᵢₖ aᵢᵀ, so the sum is (Σₖ δₖ∘δₖ)ᵀ(a∘a) with no per-sample tensor.
    /// - Linear over positions [N, P…, in] (the ViT's tokens): Gᵢₖ = Σ_p δᵢₖₚ aᵢₚᵀ, summed over
    ///   positions before squaring, formed in chunks of samples, one vector at a time.
    /// - Conv2d, one CPU thread: libtorch's weight-gradient convolution of each sample alone for
    ///   all K vectors at once, stacked as output channels, squared and summed natively
    ///   (Functional.Conv2dSquaredSampleGradients): about 2× faster than the batched product below
    ///   with one vector, and half the time per vector again when stacked (the input's columns are
    ///   formed once per sample, not per vector; resnet20's exact diagonal: 3.2 s for 10 columns
    ///   one by one, 1.6 s for 9 stacked), with no scratch beyond K gradients.
    /// - Conv2d otherwise (several threads, an accelerator): Gᵢₖ = δᵢₖ Uᵢᵀ per group with
    ///   Uᵢ = unfold(aᵢ) [C·kh·kw, L], as batched products over chunks of samples (ChunkBytes
    ///   bounds a chunk's unfolded inputs and gradients), one vector at a time. Batch-1 kernels do
    ///   not scale with intra-op threads (resnet20's Fisher on 2 cores: the loop 0.62 s at 1 thread
    ///   and 2.24 s at 2, the batched products 1.41 s at 2; PyTorch's batch-1 loops slow down
    ///   alike); large batched products do, and suit a GPU.
    let squaredSampleGradients (weightShape: int64[]) (capture: LayerCapture) (deltas: Tensor[]) : Tensor =
        use _scope = new DisposeScope()

        if deltas.Length = 0 then
            invalidArg "deltas" $"layer '%s{capture.WeightName}': give at least one output gradient"

        let a = capture.Input.Detach()
        let ds = deltas |> Array.map (fun d -> d.Detach())
        let n = a.Size 0
        let outFeatures = weightShape.[0]

        // The sum over vectors of f applied to each vector's output gradient.
        let perVector (f: Tensor -> Tensor) =
            let acc = f ds.[0]

            for d in Array.skip 1 ds do
                acc.Add_(f d) |> ignore

            acc

        let result =
            match capture.Kind with
            | LayerKind.Linear when a.Dim = 2 ->
                let summed =
                    if ds.Length = 1 then
                        ds.[0].Square()
                    else
                        Libtorch.Stack(ds, 1L).Square().Sum(1L)

                summed.Transpose(0L, 1L).MatMul(a.Square())
            | LayerKind.Linear ->
                let inF = a.Size(-1)
                let a3 = a.Reshape(n, -1L, inF)

                perVector (fun dk ->
                    let d3 = dk.Reshape(n, -1L, outFeatures)

                    sumOverChunks n (chunkSize (outFeatures * inF) a.DType) (fun start k ->
                        let g = d3.Narrow(0L, start, k).Transpose(1L, 2L).MatMul(a3.Narrow(0L, start, k))
                        g.Mul_(g).Sum(0L)))
            | LayerKind.Conv2d(stride, padding, dilation, groups) when
                a.Device.Type = DeviceType.Cpu && Libtorch.NumThreads = 1
                ->
                Functional.Conv2dSquaredSampleGradients(
                    a,
                    (if ds.Length = 1 then ds.[0] else Libtorch.Cat(ds, 1L)),
                    weightShape,
                    struct (stride, stride),
                    struct (padding, padding),
                    struct (dilation, dilation),
                    groups
                )
            | LayerKind.Conv2d(stride, padding, dilation, groups) ->
                let outC, kh, kw = weightShape.[0], weightShape.[2], weightShape.[3]
                let g = int64 groups
                let rows = a.Size 1 * kh * kw
                let positions = ds.[0].Size 2 * ds.[0].Size 3
                let perGroup = rows / g
                let perSample = rows * positions + outC * perGroup + outC * positions

                perVector (fun dk ->
                    sumOverChunks n (chunkSize perSample a.DType) (fun start k ->
                        let u =
                            Functional.Unfold(
                                a.Narrow(0L, start, k),
                                struct (int kh, int kw),
                                struct (dilation, dilation),
                                struct (padding, padding),
                                struct (stride, stride)
                            )

                        if u.Size 2 <> positions then
                            invalidOp
                                $"layer '%s{capture.WeightName}': its unfolded input has %d{u.Size 2} positions but its output %d{positions}; the captured convolution settings do not match the layer"

                        let ug = u.Reshape(k, g, perGroup, positions)
                        let dg = dk.Narrow(0L, start, k).Reshape(k, g, outC / g, positions)
                        let grads = dg.MatMul(ug.Transpose(-2L, -1L)) // [k, groups, out/groups, perGroup]
                        grads.Mul_(grads).Sum(0L).Reshape(weightShape)))

        result.MoveToOuterScope()

    // The captures of one forward pass, one per prunable weight (None for a weight the forward did
    // not use: its gradient is zero). A weight used twice would need its per-sample gradients
    // summed before squaring; no model does that, so it is refused rather than silently wrong.
    let private capturesByWeight (model: IModelView) (captures: IReadOnlyList<LayerCapture>) =
        let byName = captures |> Seq.groupBy (fun c -> c.WeightName) |> dict

        [
            for kv in model.Prunable ->
                match byName.TryGetValue kv.Key with
                | true, cs when Seq.length cs > 1 ->
                    invalidOp
                        $"%s{model.Name} uses the weight '%s{kv.Key}' %d{Seq.length cs} times in one forward pass; batched per-sample statistics support weights used once: use the per-sample loop (Estimators) for this model"
                | true, cs -> Some(Seq.head cs)
                | _ -> None
        ]

    /// The most bytes of output gradients held at once for one scoring batch: the gradients of
    /// that many vectors' worth (at least one) are stacked and squared together, so the conv
    /// layers form each sample's input columns once per group of vectors instead of once per
    /// vector. 32 MiB: resnet20's outputs take 0.8 MB per sample and vector, so its merged batches
    /// of 4 samples stack all 9 of the exact diagonal's class columns (CIFAR-100's 99 in groups of
    /// 10). Measured there (100 samples, one thread, four interleaved runs): 3.4–3.6 s and 72 MB
    /// of peak RSS growth, against 3.5–4.5 s and 53 MB at 16 MiB (5 + 4 columns) and 3.3–3.6 s
    /// and 154 MB for batches of 16 at 64 MiB (5 + 4 columns).
    [<Literal>]
    let StackBytes = 33_554_432L

    // The engine behind every statistic here: for each scoring batch, vectorsOf returns vectors
    // v on the logits [N, classes] (detached); for each v, δ = ∂(Σᵢ vᵢ·fᵢ)/∂z for every captured
    // output z, and Σᵢ Gᵢ² accumulates per weight, vectors taken in groups within StackBytes.
    // Returns the sums divided by the number of scoring samples, in the prunable order. Progress
    // counts vectors, reported as `what` once per group.
    let private meanSquaredGradients
        (what: string)
        (model: IModelView)
        (vectorsOf: Batch -> Tensor -> Tensor list)
        (batches: Batch list)
        : Tensor list =
        Estimators.withEval model (fun () ->
            use _scope = new DisposeScope()
            let total = Estimators.totalSamples batches

            let acc =
                [
                    for kv in model.Prunable -> Libtorch.Zeros(kv.Value.Shape, kv.Value.DType, kv.Value.Device)
                ]

            let shapes = [ for kv in model.Prunable -> kv.Value.Shape ]

            for bi, b in List.indexed batches do
                use _batch = new DisposeScope()
                let struct (logits, captures) = model.ForwardCapturing b.Inputs
                let layers = capturesByWeight model captures
                let used = layers |> List.choose id |> List.toArray
                let outputs = used |> Array.map (fun c -> c.Output)
                let vectors = vectorsOf b logits |> List.toArray

                let bytesPerVector =
                    outputs |> Array.sumBy (fun z -> z.NumEl * int64 (z.DType.ElementSize()))

                let group = int (max 1L (StackBytes / max 1L bytesPerVector))
                let mutable start = 0

                while start < vectors.Length do
                    use _group = new DisposeScope()
                    let count = min group (vectors.Length - start)

                    // deltas.[k].[j]: vector start + k's output gradient of captured layer j.
                    let deltas =
                        Array.init count (fun k ->
                            let last = start + k = vectors.Length - 1

                            Autograd.Grad(
                                [| logits |],
                                outputs,
                                [| vectors.[start + k] |],
                                retainGraph = not last,
                                allowUnused = true
                            ))

                    let mutable j = 0

                    for a, shape, capture in List.zip3 acc shapes layers do
                        match capture with
                        | Some c ->
                            let present =
                                deltas
                                |> Array.choose (fun d ->
                                    match d.[j] with
                                    | null -> None
                                    | t -> Some t)

                            if present.Length > 0 then
                                // Frees the layer's squared sums (weight-sized) before the next layer.
                                use _layer = new DisposeScope()
                                a.Add_(squaredSampleGradients shape c present) |> ignore

                            j <- j + 1
                        | None -> ()

                    start <- start + count
                    ScoringProgress.Report(what, bi * vectors.Length + start, batches.Length * vectors.Length)

            acc |> List.map (fun a -> (a / total).MoveToOuterScope()))

    // p − onehot(y): the gradient of Σᵢ ℓ(fᵢ, yᵢ) (cross-entropy, T = 1) with respect to the logits.
    let private crossEntropyGradient (logits: Tensor) (labels: Tensor) =
        use _scope = new DisposeScope()
        let p = Functional.Softmax(logits.Detach(), 1L)
        let n = labels.NumEl
        let ones = Libtorch.Ones([| n; 1L |], p.DType, p.Device)

        let oneHot =
            Libtorch.Zeros(p.Shape, p.DType, p.Device).Scatter(1L, labels.Reshape(n, 1L), ones)

        (p - oneHot).MoveToOuterScope()

    /// Empirical Fisher diagonal: the mean over scoring samples of gᵢ², gᵢ = ∇θ ℓ(f(xᵢ), yᵢ)
    /// (cross-entropy at T = 1), batched: one forward and one backward per scoring batch. The same
    /// numbers as the per-sample loop Estimators.fisherDiagonal, to float rounding.
    let fisherDiagonal (model: IModelView) (batches: Batch list) : Tensor list =
        meanSquaredGradients
            "per-sample squared gradients"
            model
            (fun b logits -> [ crossEntropyGradient logits b.Targets ])
            batches

    /// The true-Fisher (Gauss–Newton) diagonal: the mean over scoring samples of gᵢ² with
    /// gᵢ = ∇θ ℓ(f(xᵢ), ŷᵢ) and ŷᵢ drawn (seeded) from softmax(f(xᵢ)), batched. The draws are
    /// the per-sample loop's (Estimators.trueFisherDiagonal): one uniform per sample from one
    /// generator, in sample order, mapped through the inverse CDF; only the probabilities come
    /// from the batched forward instead of one forward per sample, so a draw within float
    /// rounding of a class boundary could pick the neighbouring class.
    let trueFisherDiagonal (model: IModelView) (seed: uint64) (batches: Batch list) : Tensor list =
        use gen = new Generator(seed)

        let sampled (b: Batch) (logits: Tensor) =
            use _scope = new DisposeScope()
            let n = b.Targets.NumEl
            let p = Functional.Softmax(logits.Detach(), 1L)
            let classes = int (p.Size 1)
            let probs = Tensors.toFloats p
            let draws = Tensors.toFloats (Libtorch.Rand([| n |], gen, DType.Float64))

            let labels =
                Array.init (int n) (fun i ->
                    let mutable c = 0
                    let mutable cdf = probs.[i * classes]

                    // Inverse CDF; the last class takes any rounding remainder.
                    while c < classes - 1 && not (draws.[i] < cdf) do
                        c <- c + 1
                        cdf <- cdf + probs.[i * classes + c]

                    int64 c)

            let y = Libtorch.FromArray<int64>(labels, [| n |], p.Device)
            [ (crossEntropyGradient logits y).MoveToOuterScope() ]

        meanSquaredGradients "per-sample squared gradients (sampled labels)" model sampled batches

    // Refuses models whose Hessian blocks are not the Gauss–Newton ones.
    let private requirePiecewiseLinear (model: IModelView) (temperature: float) =
        if not model.IsPiecewiseLinear then
            invalidArg
                "model"
                $"the exact Hessian diagonal needs a network that is piecewise linear in each layer's weights (ReLU, pooling, eval-mode batch norm, residual sums, every weight used once), and %s{model.Name} is not (attention, GELU or LayerNorm make its Hessian blocks differ from the Gauss-Newton ones): use the Hutchinson estimator for it (--curvature hutchinson, with block-local probes)"

        if not (temperature > 0.0) then
            invalidArg "temperature" $"the temperature must be positive, got %g{temperature}"

    // The Gauss–Newton diagonal from the columns of Sᵢ/T of `classes` classes per sample: the
    // first `classes` of the order `rank` gives each sample's classes ([N, C] → [N, C] class
    // indices), column c scaled by `scale` C k: (s)_id = √p_ic (δ_dc − p_id) / T · scale.
    let private classColumnsDiagonal
        (what: string)
        (model: IModelView)
        (temperature: float)
        (classes: int)
        (rank: Tensor -> Tensor)
        (scale: int64 -> int64 -> float)
        (batches: Batch list)
        =
        requirePiecewiseLinear model temperature

        if classes < 1 then
            invalidArg "classes" $"take at least one class per sample, got %d{classes}"

        let columns (_: Batch) (logits: Tensor) =
            use _scope = new DisposeScope()
            let p = Functional.Softmax(logits.Detach() / temperature, 1L)
            let n, all = p.Size 0, p.Size 1
            let k = min (int64 classes) all
            let order = rank p
            let ones = Libtorch.Ones([| n; 1L |], p.DType, p.Device)
            let factor = scale all k

            [
                for j in 0L .. k - 1L ->
                    let c = order.Narrow(1L, j, 1L)
                    let unit = Libtorch.Zeros(p.Shape, p.DType, p.Device).Scatter(1L, c, ones)
                    let column = p.Gather(1L, c).Sqrt() * (unit - p) / temperature
                    (if factor = 1.0 then column else column * factor).MoveToOuterScope()
            ]

        meanSquaredGradients what model columns batches

    /// The Gauss–Newton diagonal from the columns of Sᵢ = diag(√pᵢ) − pᵢ√pᵢᵀ of each sample's
    /// `classes` most probable classes (pᵢ = softmax(fᵢ/T)): (1/(N T²)) Σᵢ Σ_{c ∈ top(i)} (Jᵢᵀ s_ic)².
    /// With every class it is exactHessianDiagonal; with fewer it is an approximation for many
    /// classes (CIFAR-100, TinyImageNet) that drops the columns of the least probable classes,
    /// whose norm is √p_c·‖e_c − pᵢ‖, costing `classes` backward passes per batch instead of C;
    /// it never exceeds the exact diagonal (every dropped term is a square). Same model
    /// requirement as exactHessianDiagonal.
    let topClassesHessianDiagonal (model: IModelView) (temperature: float) (classes: int) (batches: Batch list) =
        classColumnsDiagonal
            "Hessian diagonal, class passes"
            model
            temperature
            classes
            (fun p -> p.ArgSort(1L, descending = true))
            (fun _ _ -> 1.0)
            batches

    /// The Gauss–Newton diagonal from `classes` columns of Sᵢ/T per sample, drawn uniformly
    /// without replacement (seeded; one [N, C] uniform draw per scoring batch, ranked) and scaled by
    /// C/classes: every class enters with probability classes/C, so the estimate is unbiased for
    /// the exact diagonal, deterministic for a seed, and costs `classes` backward passes per batch.
    /// Unlike the top classes it does not depend on the softmax being peaked, which it is not at
    /// initialization and T = 200 (every pᵢ_c ≈ 1/C). Same model requirement as exactHessianDiagonal.
    let sampledClassesHessianDiagonal
        (model: IModelView)
        (temperature: float)
        (classes: int)
        (seed: uint64)
        (batches: Batch list)
        =
        use gen = new Generator(seed)

        classColumnsDiagonal
            "Hessian diagonal, sampled class passes"
            model
            temperature
            classes
            (fun p -> Libtorch.Rand(p.Shape, gen, p.DType, p.Device).ArgSort(1L))
            (fun all k -> sqrt (float all / float k))
            batches

    /// The exact Hessian diagonal of the mean scoring loss at temperature T, for models that are
    /// piecewise linear in each layer's weights (IModelView.IsPiecewiseLinear): their logits are
    /// linear in any one weight tensor, so each diagonal Hessian block is the Gauss–Newton one,
    /// diag H = (1/(N T²)) Σᵢ Σ_c (Jᵢᵀ s_ic)², for any Sᵢ with SᵢSᵢᵀ = diag(pᵢ) − pᵢpᵢᵀ
    /// (pᵢ = softmax(fᵢ/T)). That matrix has rank C − 1 (its null space is the ones vector), so
    /// Sᵢ = diag(uᵢ) Q with u = √p and Q the C − 1 columns of the Householder reflection
    /// I − 2wwᵀ/‖w‖², w = u + e_C, other than column C: an orthonormal basis of u's complement, and
    /// diag(u)(I − uuᵀ)diag(u) = diag(p) − ppᵀ. Column k is u_k (e_k − r) with
    /// r = (p + u_C e_C)/(1 + u_C); ‖w‖² = 2 + 2u_C ≥ 2 keeps it stable. One forward and C − 1
    /// backward passes per scoring batch (C classes), no Hessian-vector product, one fewer than
    /// the columns of diag(√p) − p√pᵀ. Refuses other models (the ViT).
    let exactHessianDiagonal (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        requirePiecewiseLinear model temperature

        let columns (_: Batch) (logits: Tensor) =
            use _scope = new DisposeScope()
            let p = Functional.Softmax(logits.Detach() / temperature, 1L)
            let classes = p.Size 1
            let u = p.Sqrt()
            let uLast = u.Narrow(1L, classes - 1L, 1L)
            let last = Libtorch.Zeros(p.Shape, p.DType, p.Device)
            last.Narrow(1L, classes - 1L, 1L).Copy_(uLast) |> ignore
            let r = (p + last) / (uLast + 1.0)

            [
                for k in 0L .. classes - 2L ->
                    let unit = Libtorch.Zeros(p.Shape, p.DType, p.Device)
                    unit.Narrow(1L, k, 1L).Fill_(1.0) |> ignore
                    (u.Narrow(1L, k, 1L) * (unit - r) / temperature).MoveToOuterScope()
            ]

        meanSquaredGradients "Hessian diagonal, class passes" model columns batches
