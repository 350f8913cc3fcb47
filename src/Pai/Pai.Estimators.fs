/// The gradient and curvature estimators behind the statistics, public for research use. All
/// read the model in eval mode, leave its weights unchanged and return tensors owned by the
/// caller (or the enclosing scope). Formulas: docs/architecture.md §5.
namespace Pai

open System
open Pai.Torch

/// The curvature estimators, public for research use. All read the model in eval mode, leave
/// its weights unchanged and return tensors owned by the caller (or the enclosing scope).
module Estimators =
    let internal leaves (model: IModelView) =
        [ for kv in model.Prunable -> kv.Value ]

    /// Runs f with the model in eval mode, then restores its mode.
    let withEval (model: IModelView) (f: unit -> 'a) : 'a =
        let was = model.Training
        model.Training <- false

        try
            f ()
        finally
            model.Training <- was

    let internal totalSamples (batches: Batch list) =
        let n = batches |> List.sumBy (fun b -> b.Targets.NumEl)

        if n = 0L then
            invalidArg "batches" "the scoring context has no samples: give at least one scoring batch"

        float n

    /// The most samples mergeBatches puts in one batch: enough to amortize the per-call cost that
    /// makes scoring batches of 1 slow on small inputs (lenet5's Fashion-MNIST).
    [<Literal>]
    let MergedSamples = 32L

    /// The most input elements mergeBatches puts in one batch (48 KiB of float32), a proxy for
    /// the activations a batch holds: 28×28 inputs get 15 samples, 32×32×3 get 4, 64×64×3 and
    /// larger are left one by one. Small batches keep the batched statistics' working set near a
    /// batch-1 loop's: on resnet20 the exact diagonal's peak RSS growth went from 154 MB at 16
    /// samples to 72 MB at 4, in the same time (PerSample.StackBytes); snip took 0.55–0.59 s
    /// against 0.50–0.57, the Fisher diagonal 0.68–0.74 against 0.65–0.72 and GraSP 2.7–3.0
    /// against 2.5–2.9 (100 samples, one thread, runs one after the other).
    [<Literal>]
    let MergedInputElements = 12_288L

    /// Consecutive scoring batches concatenated (in order) into batches of at most MergedSamples
    /// samples and MergedInputElements input elements; a batch is never split, so a user's larger
    /// scoring batches stay as they are. For the statistics whose value is a mean over samples
    /// that does not depend on how they are batched in eval mode (the mean gradient, H·g, the
    /// Fisher diagonals, the exact Hessian diagonal): batch-1 semantics at batched cost.
    /// Hutchinson draws its probes per scoring batch and keeps the batches it is given. New
    /// tensors belong to the enclosing dispose scope; unmerged batches are returned as they are.
    let mergeBatches (batches: Batch list) : Batch list =
        let samplesOf (b: Batch) = b.Targets.NumEl
        let elementsOf (b: Batch) = b.Inputs.NumEl

        let fits (group: Batch list) (b: Batch) =
            List.sumBy samplesOf group + samplesOf b <= MergedSamples
            && List.sumBy elementsOf group + elementsOf b <= MergedInputElements

        // Filled from the front: each group is built in reverse, then both orders are restored.
        let groups =
            ([], batches)
            ||> List.fold (fun acc b ->
                match acc with
                | group :: rest when fits group b -> (b :: group) :: rest
                | _ -> [ b ] :: acc)
            |> List.rev
            |> List.map List.rev

        groups
        |> List.map (fun group ->
            match group with
            | [ b ] -> b
            | _ ->
                {
                    Inputs = Libtorch.Cat([ for b in group -> b.Inputs ])
                    Targets = Libtorch.Cat([ for b in group -> b.Targets ])
                })

    /// This batch's share of the mean loss over all scoring samples: Σᵢ ℓ(f(xᵢ)/T, yᵢ) / N.
    let batchLoss (model: IModelView) (temperature: float) (total: float) (batch: Batch) =
        // The forward's intermediates are freed on return: the autograd graph keeps what the
        // gradient needs and releases it as soon as the gradient has been taken.
        use _forward = new DisposeScope()
        let logits = model.Forward batch.Inputs
        let scaled = if temperature = 1.0 then logits else logits / temperature
        let sum = Functional.CrossEntropy(scaled, batch.Targets, Reduction.Sum)
        (sum / total).MoveToOuterScope()

    let internal moveOut (ts: Tensor list) =
        ts |> List.map (fun t -> t.MoveToOuterScope())

    let private accumulate (acc: Tensor list) (xs: Tensor list) =
        List.iter2 (fun (a: Tensor) (x: Tensor) -> a.Add_(x) |> ignore) acc xs

    let internal zerosLike (ts: Tensor list) =
        ts |> List.map (fun t -> Libtorch.Zeros(t.Shape, t.DType, t.Device))

    // Σ over scoring batches of perBatch(weights, this batch's share of the mean loss), in eval
    // mode, one tensor per prunable layer: the loop behind the mean gradient and H·v.
    let private sumOverBatches
        (what: string)
        (model: IModelView)
        (temperature: float)
        (batches: Batch list)
        (perBatch: Tensor[] -> Tensor -> Tensor[])
        : Tensor list =
        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model
            let total = totalSamples batches
            let acc = zerosLike ps

            for i, b in List.indexed batches do
                use _step = new DisposeScope()
                let loss = batchLoss model temperature total b
                accumulate acc (perBatch (List.toArray ps) loss |> Array.toList)
                ScoringProgress.Report(what, i + 1, batches.Length)

            moveOut acc)

    /// g = ∇θ L, the gradient of the mean loss over all scoring samples (temperature T).
    let meanGradient (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        sumOverBatches "gradient" model temperature batches (fun ps loss -> Autograd.Grad(loss, ps))

    // Splits a batch into single samples (views), for honest per-sample quantities.
    let private samples (b: Batch) =
        let n = b.Targets.NumEl

        if n = 1L then
            [ b ]
        else
            [
                for i in 0L .. n - 1L ->
                    {
                        Inputs = b.Inputs.Narrow(0L, i, 1L)
                        Targets = b.Targets.Narrow(0L, i, 1L)
                    }
            ]

    // The mean over scoring samples of gᵢ², gᵢ = ∇θ ℓ(f(xᵢ), labelOf sample), sample by sample:
    // the loop behind both Fisher diagonals.
    let private meanSquaredSampleGradient (model: IModelView) (labelOf: Batch -> Tensor) (batches: Batch list) =
        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model
            let total = totalSamples batches
            let acc = zerosLike ps

            let n = int total
            let mutable finished = 0

            for b in batches do
                for s in samples b do
                    finished <- finished + 1
                    ScoringProgress.Report("per-sample gradients", finished, n)
                    use _step = new DisposeScope()
                    let loss = batchLoss model 1.0 1.0 { s with Targets = labelOf s }
                    let g = Autograd.Grad(loss, List.toArray ps)

                    for a, gi in List.zip acc (Array.toList g) do
                        a.AddCMul_(gi, gi) |> ignore

            acc |> List.map (fun a -> (a / total).MoveToOuterScope()))

    /// Empirical Fisher diagonal: the mean over scoring samples of the squared per-sample
    /// gradient, gᵢ², with gᵢ = ∇θ ℓ(f(xᵢ), yᵢ). Computed sample by sample.
    let fisherDiagonal (model: IModelView) (batches: Batch list) : Tensor list =
        meanSquaredSampleGradient model (fun s -> s.Targets) batches

    /// H·v for the Hessian of the mean scoring loss (temperature T), by double backward.
    let hessianVectorProduct (model: IModelView) (temperature: float) (batches: Batch list) (v: Tensor list) =
        sumOverBatches "H·v" model temperature batches (fun ps loss ->
            Autograd.HessianVectorProduct(loss, ps, List.toArray v))

    /// H·g for GraSP: g = ∇θ L(f/T) detached, then H of L(f/T) applied to it.
    let hessianGradient (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        use _scope = new DisposeScope()
        let g = meanGradient model temperature batches
        hessianVectorProduct model temperature batches g |> moveOut

    /// The closed-form Hessian diagonal of the classifier (final linear layer) for the mean
    /// cross-entropy at temperature T: logits (W h + b)/T make ∂²L/∂W_ai² the mean over samples
    /// of p_a(1 − p_a)·h_i²/T² and ∂²L/∂b_a² the mean of p_a(1 − p_a)/T² (h does not depend on
    /// W). Returns (weight diagonal, bias diagonal); one forward per batch, no HVP.
    let classifierDiagonal (model: IModelView) (temperature: float) (batches: Batch list) : Tensor * Tensor =
        withEval model (fun () ->
            use _scope = new DisposeScope()
            use _noGrad = Libtorch.NoGrad()
            let total = totalSamples batches
            let scale = 1.0 / (temperature * temperature * total)
            let mutable acc: (Tensor * Tensor) option = None

            for b in batches do
                use _step = new DisposeScope()
                let struct (logits, h) = model.ForwardWithFeatures b.Inputs

                if h.Dim <> 2 then
                    invalidOp
                        $"the classifier of %s{model.Name} takes features [N, D], got %A{h.Shape}: the closed form needs a plain linear head"

                let p = Functional.Softmax(logits / temperature, 1L)
                let q = p * (1.0 - p)
                let w = q.Transpose(0L, 1L).MatMul(h.Square()) * scale
                let bias = q.Sum(0L) * scale

                match acc with
                | None -> acc <- Some(w.MoveToOuterScope(), bias.MoveToOuterScope())
                | Some(accW, accB) ->
                    accW.Add_(w) |> ignore
                    accB.Add_(bias) |> ignore

            let accW, accB = acc.Value
            accW.MoveToOuterScope(), accB.MoveToOuterScope())

    /// The exact Hessian diagonal of one prunable layer from unit-vector HVPs: for every weight
    /// k, the k-th entry of ∂g_k/∂θ (one HVP per weight and batch, restricted to the layer).
    /// Returns the diagonal and the HVPs it took.
    let unitVectorDiagonal (model: IModelView) (temperature: float) (layer: int) (batches: Batch list) =
        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model |> List.toArray
            let w = ps.[layer]
            let n = w.NumEl
            let diag = Array.zeroCreate<float>(int n)
            let total = totalSamples batches
            let mutable hvps = 0

            for b in batches do
                use _batch = new DisposeScope()
                let loss = batchLoss model temperature total b

                let g =
                    (Autograd.Grad(loss, [| w |], createGraph = true, retainGraph = true)).[0].Flatten()

                for k in 0L .. n - 1L do
                    use _k = new DisposeScope()
                    let gk = g.Select(0L, k)
                    let row = Autograd.Grad([| gk |], [| w |], retainGraph = true, allowUnused = true)
                    hvps <- hvps + 1

                    match row.[0] with
                    | null -> ()
                    | r -> diag.[int k] <- diag.[int k] + r.Flatten().Select(0L, k).Item()

            Libtorch.FromArray<float>(diag, w.Shape).To(w.DType).MoveToOuterScope(), hvps)

    /// The Gauss–Newton ("true Fisher") diagonal: the mean over scoring samples of gᵢ² with
    /// gᵢ = ∇θ ℓ(f(xᵢ), ŷᵢ) and ŷᵢ drawn (seeded) from the model's own predictive distribution
    /// softmax(f(xᵢ)). Unlike the empirical Fisher it does not use the labels; in expectation over
    /// ŷ it is the diagonal of the generalized Gauss–Newton matrix of the cross-entropy.
    let trueFisherDiagonal (model: IModelView) (seed: uint64) (batches: Batch list) : Tensor list =
        use gen = new Generator(seed)

        let sampledLabel (s: Batch) =
            let probs =
                use _noGrad = Libtorch.NoGrad()
                use p = Functional.Softmax(model.Forward s.Inputs, 1L)
                Tensors.toFloats p

            use u = Libtorch.Rand([| 1L |], gen, DType.Float64)
            let draw = u.Item()
            // Inverse CDF; the last class takes any rounding remainder.
            let label =
                Array.scan (+) 0.0 probs
                |> Array.tail
                |> Array.tryFindIndex (fun c -> draw < c)
                |> Option.defaultValue (probs.Length - 1)

            Libtorch.FromArray<int64>([| int64 label |], [| 1L |], s.Inputs.Device)

        meanSquaredSampleGradient model sampledLabel batches

    /// SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ| with R = Σ f(1) on a float64 copy of the model
    /// whose parameters are replaced by their absolute values (eval mode, all-ones input).
    /// Pruned weights (the context's mask) are zero in that copy. The model is not changed.
    let synapticSaliency (model: IModelView) (inputShape: int64 list) (mask: Mask option) : Tensor list =
        use _scope = new DisposeScope()
        use copy = model.CopyAs DType.Float64
        copy.Training <- false

        using (Libtorch.NoGrad()) (fun _ ->
            for kv in copy.Parameters do
                kv.Value.Abs_() |> ignore

            match mask with
            | Some m ->
                for kv, (_, keep) in List.zip (List.ofSeq copy.Prunable) m.Layers do
                    kv.Value.Mul_(keep) |> ignore
            | None -> ())

        let ps = leaves copy
        let shape = Array.ofList (1L :: inputShape)
        let ones = Libtorch.Ones(shape, DType.Float64, copy.Device)
        let r = (copy.Forward ones).Sum()
        let g = Autograd.Grad(r, List.toArray ps)

        List.map2
            (fun (p: Tensor) (gi: Tensor) -> (p * gi).Abs().To(DType.Float32).MoveToOuterScope())
            ps
            (Array.toList g)
