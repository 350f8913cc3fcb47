/// Pruning-at-initialization criteria as values: pure functions from a scoring context to
/// per-layer scores (higher = keep), an algebra to compose them, the curvature estimators they
/// are built from, and the (iterative) pruning pipeline. Formulas: DESIGN.md §5.
namespace Pai

open System
open System.Diagnostics
open Pai.Torch

/// A criterion: a name and a pure function from a scoring context to scores.
type Criterion =
    {
        Name: string
        /// Reads the scoring batches (so BN warm-up applies before it).
        NeedsData: bool
        /// Default number of pruning rounds (SynFlow: 100; everything else: 1).
        DefaultRounds: int
        Score: ScoringContext -> Scores
    }

/// A Hutchinson estimate of a Hessian diagonal with its Monte-Carlo uncertainty.
type HutchinsonEstimate =
    {
        /// Estimated diagonal per prunable layer (zero for layers outside every block).
        Mean: Tensor list
        /// Standard error of each entry of Mean (over probes).
        StdErr: Tensor list
        /// Probes per scoring batch that reached each layer (0 outside every block).
        Probes: int list
        /// Each layer's median of StdErr/|Mean| (Stability.medianRelativeSe; 0 outside every block).
        MedianRelativeSe: float list
        /// Hessian-vector products computed.
        HvpCount: int
    }

/// How many probes Hutchinson draws.
[<RequireQualifiedAccess>]
type ProbeBudget =
    /// This many probes per scoring batch for every block.
    | Probes of int
    /// Probes in chunks until every layer's median relative SE is at most target, or until the
    /// next chunk would exceed maxHvps Hessian-vector products in all.
    | Adaptive of target: float * maxHvps: int

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

    /// This batch's share of the mean loss over all scoring samples: Σᵢ ℓ(f(xᵢ)/T, yᵢ) / N.
    let batchLoss (model: IModelView) (temperature: float) (total: float) (batch: Batch) =
        // The forward's intermediates are freed on return: the autograd graph keeps what the
        // gradient needs and releases it as soon as the gradient has been taken.
        use _forward = new DisposeScope()
        let logits = model.Forward batch.Inputs
        let scaled = if temperature = 1.0 then logits else logits / temperature
        let sum = Functional.CrossEntropy(scaled, batch.Targets, Reduction.Sum)
        (sum / total).MoveToOuterScope()

    let private moveOut (ts: Tensor list) =
        ts |> List.map (fun t -> t.MoveToOuterScope())

    let private accumulate (acc: Tensor list) (xs: Tensor list) =
        List.iter2 (fun (a: Tensor) (x: Tensor) -> a.Add_(x) |> ignore) acc xs

    let private zerosLike (ts: Tensor list) =
        ts |> List.map (fun t -> Libtorch.Zeros(t.Shape, t.DType, t.Device))

    // Σ over scoring batches of perBatch(weights, this batch's share of the mean loss), in eval
    // mode, one tensor per prunable layer: the loop behind the mean gradient and H·v.
    let private sumOverBatches
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

            for b in batches do
                use _step = new DisposeScope()
                let loss = batchLoss model temperature total b
                accumulate acc (perBatch (List.toArray ps) loss |> Array.toList)

            moveOut acc)

    /// g = ∇θ L, the gradient of the mean loss over all scoring samples (temperature T).
    let meanGradient (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        sumOverBatches model temperature batches (fun ps loss -> Autograd.Grad(loss, ps))

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

            for b in batches do
                for s in samples b do
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
        sumOverBatches model temperature batches (fun ps loss ->
            Autograd.HessianVectorProduct(loss, ps, List.toArray v))

    /// H·g for GraSP: g = ∇θ L(f/T) detached, then H of L(f/T) applied to it.
    let hessianGradient (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        use _scope = new DisposeScope()
        let g = meanGradient model temperature batches
        hessianVectorProduct model temperature batches g |> moveOut

    /// Probes per adaptive chunk; also the first chunk, so every block starts with enough
    /// probes for its standard error to mean something.
    [<Literal>]
    let AdaptiveChunk = 4

    // Composite probes accumulated at once: bounds memory at this many weight-sized sums.
    [<Literal>]
    let private MaxChunk = 16

    /// Hutchinson's estimator of diag(H) for the mean scoring loss at temperature T: the mean
    /// over probes of z ⊙ (H z), z Rademacher, unbiased for every partition of the layers into
    /// blocks (z is zero outside its block). One probe of a block is one independent Rademacher
    /// vector per scoring batch; its sample Σ_batches z ⊙ (H_batch z) is unbiased for the whole
    /// diagonal, so the standard error comes from the sample variance over probes (Welford).
    /// Layers outside every block get zeros and 0 probes. Probes are drawn per chunk in
    /// (batch, probe, block, layer) order; probeFor batch probe layer weight returns z for that
    /// layer (probe counts from 1 within its block and must be Rademacher ±1 for the estimator to
    /// be unbiased); see `hutchinson` for the seeded default.
    let hutchinsonWith
        (probeFor: int -> int -> int -> Tensor -> Tensor)
        (model: IModelView)
        (temperature: float)
        (budget: ProbeBudget)
        (blocks: int list list)
        (batches: Batch list)
        =
        let layers = model.Prunable.Count
        let covered = List.concat blocks

        if blocks.IsEmpty || List.exists List.isEmpty blocks then
            invalidArg "blocks" "Hutchinson needs at least one block of at least one layer"

        if
            List.distinct covered <> covered
            || List.exists (fun i -> i < 0 || i >= layers) covered
        then
            invalidArg "blocks" $"blocks must name distinct layer indices in 0..%d{layers - 1}, got %A{blocks}"

        let nBatches = batches.Length

        match budget with
        | ProbeBudget.Probes p when p < 2 ->
            invalidArg "probes" $"Hutchinson needs at least 2 probes to estimate its own error, got %d{p}"
        | ProbeBudget.Adaptive(target, _) when not (target > 0.0) ->
            invalidArg "AdaptiveTarget" $"the adaptive target median relative SE must be positive, got %g{target}"
        | ProbeBudget.Adaptive(_, cap) when cap < AdaptiveChunk * nBatches * blocks.Length ->
            invalidArg
                "HvpBudget"
                $"adaptive Hutchinson starts with %d{AdaptiveChunk} probes per block: give an HVP budget of at least %d{AdaptiveChunk * nBatches * blocks.Length} (%d{AdaptiveChunk} × %d{nBatches} batches × %d{blocks.Length} blocks), got %d{cap}"
        | _ -> ()

        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model |> List.toArray
            let total = totalSamples batches
            let mean = zerosLike (List.ofArray ps) |> List.toArray
            let m2 = zerosLike (List.ofArray ps) |> List.toArray
            let probesOf = Array.zeroCreate<int> blocks.Length
            let mutable hvps = 0

            // `count` more probes for each block in `active`, then Welford over their samples.
            let runChunk (active: int list) (count: int) =
                use _chunk = new DisposeScope()

                let probed = active |> List.collect (fun bIdx -> blocks.[bIdx])

                let sums =
                    Array.init count (fun _ ->
                        Array.init layers (fun i ->
                            if List.contains i probed then
                                Some(Libtorch.Zeros(ps.[i].Shape, ps.[i].DType, ps.[i].Device))
                            else
                                None))

                for bi, b in List.indexed batches do
                    use _batch = new DisposeScope()
                    let loss = batchLoss model temperature total b
                    let grads = Autograd.Grad(loss, ps, createGraph = true, retainGraph = true)

                    for k in 0 .. count - 1 do
                        for blockIndex in active do
                            use _probe = new DisposeScope()
                            let block = blocks.[blockIndex]
                            let j = probesOf.[blockIndex] + k + 1
                            let zs = block |> List.map (fun i -> i, probeFor bi j i ps.[i])

                            let dot =
                                zs
                                |> List.map (fun (i, z) -> (use product = grads.[i] * z in product.Sum()))
                                |> List.reduce (+)

                            let inputs = zs |> List.map (fun (i, _) -> ps.[i]) |> List.toArray
                            let hz = Autograd.Grad([| dot |], inputs, retainGraph = true, allowUnused = true)
                            hvps <- hvps + 1

                            zs
                            |> List.iteri (fun n (i, z) ->
                                match hz.[n] with
                                | null -> ()
                                | h -> sums.[k].[i].Value.AddCMul_(z, h) |> ignore)

                // Welford per weight over the chunk's samples x: δ = x − m, m += δ/n,
                // M2 += δ·(x − m_new) = δ²·(n − 1)/n (one fused update).
                for blockIndex in active do
                    for k in 0 .. count - 1 do
                        let n = probesOf.[blockIndex] + k + 1

                        for i in blocks.[blockIndex] do
                            use delta = sums.[k].[i].Value.Add_(mean.[i], -1.0)
                            mean.[i].Add_(delta, 1.0 / float n) |> ignore
                            m2.[i].AddCMul_(delta, delta, float (n - 1) / float n) |> ignore

                    probesOf.[blockIndex] <- probesOf.[blockIndex] + count

            // Var of the mean over n probes: s² / n with s² = M2 / (n − 1).
            let stdErr i n =
                if n < 2 then
                    Libtorch.Zeros(ps.[i].Shape, ps.[i].DType, ps.[i].Device)
                else
                    (m2.[i] / float (n * (n - 1))).Sqrt()

            let layerProbes () =
                let p = Array.zeroCreate<int> layers

                blocks
                |> List.iteri (fun bIdx block ->
                    for i in block do
                        p.[i] <- probesOf.[bIdx])

                p

            let relSeOf (m: Tensor) (se: Tensor) =
                Stability.medianRelativeSe (Tensors.toFloats m) (Tensors.toFloats se)

            let relSe i =
                use se = stdErr i (layerProbes ()).[i]
                relSeOf mean.[i] se

            match budget with
            | ProbeBudget.Probes p ->
                let all = [ 0 .. blocks.Length - 1 ]
                let mutable left = p

                while left > 0 do
                    let c = min left MaxChunk
                    runChunk all c
                    left <- left - c
            | ProbeBudget.Adaptive(target, cap) ->
                let mutable active = [ 0 .. blocks.Length - 1 ]

                while not active.IsEmpty do
                    let perProbe = nBatches * active.Length
                    let c = min AdaptiveChunk ((cap - hvps) / perProbe)

                    if c < 1 then
                        active <- []
                    else
                        runChunk active c

                        active <-
                            active
                            |> List.filter (fun bIdx -> blocks.[bIdx] |> List.exists (fun i -> relSe i > target))

            let probes = layerProbes ()
            let stdErrs = List.init layers (fun i -> stdErr i probes.[i])

            let relSes = List.map2 relSeOf (List.ofArray mean) stdErrs

            {
                Mean = mean |> Array.map (fun t -> t.MoveToOuterScope()) |> List.ofArray
                StdErr = stdErrs |> List.map (fun t -> t.MoveToOuterScope())
                Probes = List.ofArray probes
                MedianRelativeSe = relSes
                HvpCount = hvps
            })

    /// Hutchinson with seeded Rademacher probes.
    let hutchinson
        (model: IModelView)
        (temperature: float)
        (budget: ProbeBudget)
        (blocks: int list list)
        (seed: uint64)
        (batches: Batch list)
        =
        use gen = new Generator(seed)
        hutchinsonWith (fun _ _ _ w -> Libtorch.RademacherLike(w, gen)) model temperature budget blocks batches

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

    /// The Hessian diagonal the Hutchinson criteria use, with its diagnostics: the classifier's
    /// closed form (options.ExactClassifier), unit-vector HVPs for layers of at most
    /// options.ExactLayerSize weights, and Hutchinson for the rest, its probe blocks restricted
    /// to the remaining layers. The HVP budget covers the Hutchinson probes only; unit-vector
    /// HVPs are a fixed cost, counted in the diagnostics' total.
    let curvature (model: IModelView) (options: CriterionOptions) (seed: uint64) (batches: Batch list) =
        use _scope = new DisposeScope()
        let t = options.HutchinsonTemperature
        let names = [ for kv in model.Prunable -> kv.Key ]
        let layers = names.Length

        let classifier =
            if options.ExactClassifier then
                names |> List.tryFindIndex ((=) model.ClassifierWeightName)
            else
                None

        let unitLayers =
            [
                for i, kv in List.indexed (List.ofSeq model.Prunable) do
                    if Some i <> classifier && kv.Value.NumEl <= int64 options.ExactLayerSize then
                        i
            ]

        let exact = Option.toList classifier @ unitLayers

        let blocks =
            ProbeScope.blocks layers options.ProbeScope
            |> List.map (List.filter (fun i -> not (List.contains i exact)))
            |> List.filter (List.isEmpty >> not)

        let nBatches = batches.Length

        let budget =
            match options.HvpBudget, options.AdaptiveTarget with
            | 0, target when target > 0.0 ->
                invalidArg
                    "AdaptiveTarget"
                    "adaptive Hutchinson needs an HVP budget as its cap: set HvpBudget (--hvp-budget)"
            | 0, _ -> ProbeBudget.Probes options.Probes
            | b, target when target > 0.0 -> ProbeBudget.Adaptive(target, b)
            | b, _ ->
                let perBlock = b / (nBatches * max 1 blocks.Length)

                if perBlock < 2 && not blocks.IsEmpty then
                    invalidArg
                        "HvpBudget"
                        $"an HVP budget of %d{b} gives %d{perBlock} probe(s) per block; Hutchinson needs 2: give at least %d{2 * nBatches * blocks.Length} (2 × %d{nBatches} scoring batches × %d{blocks.Length} blocks)"

                ProbeBudget.Probes perBlock

        let estimate =
            if blocks.IsEmpty then
                None
            else
                Some(hutchinson model t budget blocks seed batches)

        let diagonal = Array.zeroCreate<Tensor> layers
        let info = Array.zeroCreate<LayerCurvature> layers

        let mutable hvps =
            estimate |> Option.map (fun e -> e.HvpCount) |> Option.defaultValue 0

        match estimate with
        | Some e ->
            for i in List.concat blocks do
                diagonal.[i] <- e.Mean.[i]

                info.[i] <-
                    {
                        Name = names.[i]
                        Method = "hutchinson"
                        MedianRelativeSe = e.MedianRelativeSe.[i]
                        Probes = e.Probes.[i]
                    }
        | None -> ()

        let exactInfo i method =
            {
                Name = names.[i]
                Method = method
                MedianRelativeSe = 0.0
                Probes = 0
            }

        classifier
        |> Option.iter (fun i ->
            diagonal.[i] <- fst (classifierDiagonal model t batches)
            info.[i] <- exactInfo i "closed-form")

        for i in unitLayers do
            let d, n = unitVectorDiagonal model t i batches
            diagonal.[i] <- d
            hvps <- hvps + n
            info.[i] <- exactInfo i "unit-hvp"

        let scope =
            if blocks.IsEmpty then
                "none"
            else
                ProbeScope.format options.ProbeScope

        let estimator =
            $"hutchinson T=%g{t} scope=%s{scope}"
            + (if options.HvpBudget > 0 then
                   $" budget=%d{options.HvpBudget}"
               else
                   "")
            + (if classifier.IsSome then " exact-classifier" else "")
            + (if unitLayers.IsEmpty then
                   ""
               else
                   $" exact-size<=%d{options.ExactLayerSize}")

        diagonal |> Array.map (fun d -> d.MoveToOuterScope()) |> List.ofArray,
        {
            Estimator = estimator
            Layers = List.ofArray info
            Hvps = hvps
            Target = options.AdaptiveTarget
        }

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

/// Built-in criteria, the criterion algebra and the registry.
module Criteria =
    let private layerNames (model: IModelView) = [ for kv in model.Prunable -> kv.Key ]

    /// Scores from per-layer tensors in the model's prunable order.
    let ofTensors (model: IModelView) (ts: Tensor list) : Scores =
        Scores.ofLayers (List.zip (layerNames model) ts)

    let private weights (ctx: ScoringContext) = Estimators.leaves ctx.Model

    // Runs f in a scope and moves its result tensors out, keeping the given diagnostics.
    let private scored (diagnostics: CurvatureDiagnostics list) (f: unit -> (string * Tensor) list) : Scores =
        use _scope = new DisposeScope()

        {
            Layers = f () |> List.map (fun (n, t) -> n, t.MoveToOuterScope())
            Diagnostics = diagnostics
        }

    /// A criterion whose function also reports its estimators' diagnostics.
    let createWithDiagnostics
        (name: string)
        (needsData: bool)
        (f: ScoringContext -> Tensor list * CurvatureDiagnostics list)
        : Criterion =
        {
            Name = name
            NeedsData = needsData
            DefaultRounds = 1
            Score =
                fun ctx ->
                    use _scope = new DisposeScope()
                    let ts, diagnostics = f ctx

                    {
                        Layers =
                            List.zip (layerNames ctx.Model) ts
                            |> List.map (fun (n, t) -> n, t.MoveToOuterScope())
                        Diagnostics = diagnostics
                    }
        }

    /// A criterion from a name and a function of the context returning one tensor per prunable layer.
    let create (name: string) (needsData: bool) (f: ScoringContext -> Tensor list) : Criterion =
        createWithDiagnostics name needsData (fun ctx -> f ctx, [])

    let private detached (ctx: ScoringContext) =
        weights ctx |> List.map (fun w -> w.Detach())

    // ---- the table of DESIGN.md §5 -----------------------------------------------------------

    /// Seeded uniform scores.
    let random =
        create "random" false (fun ctx ->
            use gen = new Generator(ctx.Seed)

            weights ctx
            |> List.map (fun w -> Libtorch.Rand(w.Shape, gen, DType.Float32, w.Device)))

    /// |θ|.
    let magnitude =
        create "magnitude" false (fun ctx -> detached ctx |> List.map (fun w -> w.Abs()))

    /// |g|.
    let gradNorm =
        create "grad_norm" true (fun ctx ->
            Estimators.meanGradient ctx.Model 1.0 ctx.Batches |> List.map (fun g -> g.Abs()))

    /// θ ⊙ g, the first-order Taylor term (signed).
    let taylor1 =
        create "taylor1" true (fun ctx ->
            let g = Estimators.meanGradient ctx.Model 1.0 ctx.Batches
            List.map2 (fun (w: Tensor) (gi: Tensor) -> w * gi) (detached ctx) g)

    /// GraSP: θ ⊙ (H g) at temperature T; keeping the largest θ⊙Hg removes the largest −θ⊙Hg.
    let grasp =
        create "grasp" true (fun ctx ->
            let hg =
                Estimators.hessianGradient ctx.Model ctx.Options.GraspTemperature ctx.Batches

            List.map2 (fun (w: Tensor) (h: Tensor) -> w * h) (detached ctx) hg)

    /// SynFlow: |θ ⊙ ∂R/∂θ| on |θ| in float64 (100 rounds by default).
    let synflow =
        { create "synflow" false (fun ctx -> Estimators.synapticSaliency ctx.Model ctx.InputShape ctx.Mask) with
            DefaultRounds = 100
        }

    /// Empirical Fisher diagonal, mean(gᵢ²).
    let fisherDiag =
        create "fisher_diag" true (fun ctx -> Estimators.fisherDiagonal ctx.Model ctx.Batches)

    /// OBD with the empirical Fisher: ½ θ² ⊙ mean(gᵢ²).
    let fisherObd =
        create "fisher_obd" true (fun ctx ->
            let f = Estimators.fisherDiagonal ctx.Model ctx.Batches
            List.map2 (fun (w: Tensor) (fi: Tensor) -> w.Square() * fi * 0.5) (detached ctx) f)

    /// Gauss–Newton (true Fisher) diagonal: mean(gᵢ²) with labels drawn from the model's own
    /// predictions (seeded), to compare with the empirical Fisher.
    let gnDiag =
        create "gn_diag" true (fun ctx -> Estimators.trueFisherDiagonal ctx.Model ctx.Seed ctx.Batches)

    // ---- algebra -----------------------------------------------------------------------------

    let private mapScores (name: string) (f: Tensor -> Tensor) (c: Criterion) : Criterion =
        { c with
            Name = name
            Score =
                fun ctx ->
                    let s = c.Score ctx

                    try
                        scored s.Diagnostics (fun () -> s.Layers |> List.map (fun (n, t) -> n, f t))
                    finally
                        Scores.dispose s
        }

    let private combine (name: string) (f: Tensor -> Tensor -> Tensor) (a: Criterion) (b: Criterion) : Criterion =
        {
            Name = name
            NeedsData = a.NeedsData || b.NeedsData
            DefaultRounds = max a.DefaultRounds b.DefaultRounds
            Score =
                fun ctx ->
                    let sa = a.Score ctx
                    let sb = b.Score ctx

                    try
                        scored (sa.Diagnostics @ sb.Diagnostics) (fun () ->
                            List.map2 (fun (n, x) (_, y) -> n, f x y) sa.Layers sb.Layers)
                    finally
                        Scores.dispose sa
                        Scores.dispose sb
        }

    /// |s|.
    let abs (c: Criterion) =
        mapScores $"abs(%s{c.Name})" (fun t -> t.Abs()) c

    /// −s: inverts a criterion (keeps what it would prune). Never 1/s, which breaks at 0 and for signed scores.
    let negate (c: Criterion) =
        mapScores $"-(%s{c.Name})" (fun t -> t.Neg()) c

    /// k·s.
    let scale (k: float) (c: Criterion) =
        mapScores $"%g{k}*(%s{c.Name})" (fun t -> t * k) c

    /// s₁ + s₂.
    let add (a: Criterion) (b: Criterion) =
        combine $"%s{a.Name} + %s{b.Name}" (fun x y -> x + y) a b

    /// s₁ ⊙ s₂.
    let multiply (a: Criterion) (b: Criterion) =
        combine $"%s{a.Name} * %s{b.Name}" (fun x y -> x * y) a b

    /// Each layer's scores divided by that layer's Σ|s| (layers with all-zero scores stay zero).
    let normalizePerLayer (c: Criterion) =
        mapScores
            $"layernorm(%s{c.Name})"
            (fun t ->
                use total = t.Abs().Sum()
                let z = total.Item()
                if z = 0.0 then t.Clone() else t / z)
            c

    /// All scores divided by the global Σ|s| (SNIP's normalization).
    let normalizeGlobal (c: Criterion) =
        { c with
            Name = $"globalnorm(%s{c.Name})"
            Score =
                fun ctx ->
                    let s = c.Score ctx

                    try
                        let z = s.Layers |> List.sumBy (fun (_, t) -> (use a = t.Abs().Sum() in a.Item()))

                        scored s.Diagnostics (fun () ->
                            s.Layers |> List.map (fun (n, t) -> n, (if z = 0.0 then t.Clone() else t / z)))
                    finally
                        Scores.dispose s
        }

    /// Global rank of each score in (0, 1]: the best weight gets 1, ties ordered by position.
    /// Makes criteria of different scales comparable before they are combined.
    let rank (c: Criterion) =
        { c with
            Name = $"rank(%s{c.Name})"
            Score =
                fun ctx ->
                    let s = c.Score ctx

                    try
                        scored s.Diagnostics (fun () ->
                            let flats = s.Layers |> List.map (fun (_, t) -> t.Flatten().To(DType.Float64))
                            let all = Libtorch.Cat(List.toArray flats, 0L)
                            let n = all.NumEl
                            let order = all.ArgSort(0L, descending = false, stable = true)

                            let ranks =
                                Libtorch.Arange(1.0, float n + 1.0, 1.0, DType.Float64, all.Device) / float n

                            let ranked =
                                Libtorch.Zeros([| n |], DType.Float64, all.Device).Scatter(0L, order, ranks)

                            let mutable offset = 0L

                            s.Layers
                            |> List.map (fun (name, t) ->
                                let part = ranked.Narrow(0L, offset, t.NumEl).Reshape(t.Shape).To(DType.Float32)
                                offset <- offset + t.NumEl
                                name, part))
                    finally
                        Scores.dispose s
        }

    /// Renames a composed criterion.
    let named (name: string) (c: Criterion) = { c with Name = name }

    // ---- compositions ------------------------------------------------------------------------

    /// SNIP: |θ ⊙ g|.
    let snip = abs taylor1 |> named "snip"
    /// Fisher Taylor sensitivity: |θ ⊙ g + ½ θ² ⊙ F|.
    let fts = abs (add taylor1 fisherObd) |> named "fts"

    /// The Hessian-diagonal criteria over a curvature source, a function of the context returning
    /// the diagonal and its diagnostics: hutch_diag (Ĥ), hutch_obd (½ θ² ⊙ Ĥ) and hts
    /// (|θ ⊙ g + ½ θ² ⊙ Ĥ|). The source's tensors are owned by the caller of the criterion. The
    /// built-in criteria use Estimators.curvature; `pai estimate` passes a source that shares one
    /// estimate between the three.
    let curvatureFamily (source: ScoringContext -> Tensor list * CurvatureDiagnostics list) =
        let diag = createWithDiagnostics "hutch_diag" true source

        let obd =
            createWithDiagnostics "hutch_obd" true (fun ctx ->
                let h, diagnostics = source ctx
                List.map2 (fun (w: Tensor) (h: Tensor) -> w.Square() * h * 0.5) (detached ctx) h, diagnostics)

        diag, obd, abs (add taylor1 obd) |> named "hts"

    /// Ĥ from Estimators.curvature with the context's options: Hutchinson, exact where the
    /// options ask (classifier closed form, small layers by unit vectors).
    let hutchinsonCurvature (ctx: ScoringContext) =
        let d, diagnostics = Estimators.curvature ctx.Model ctx.Options ctx.Seed ctx.Batches
        d, [ diagnostics ]

    let private hutchinsonFamily = curvatureFamily hutchinsonCurvature

    /// Hutchinson Hessian diagonal Ĥ, mean over samples and probes of z ⊙ (H z) (signed).
    let hutchDiag = let d, _, _ = hutchinsonFamily in d

    /// OBD with the Hutchinson diagonal: ½ θ² ⊙ Ĥ (signed).
    let hutchObd = let _, o, _ = hutchinsonFamily in o

    /// Hutchinson Taylor sensitivity: |θ ⊙ g + ½ θ² ⊙ Ĥ|.
    let hts = let _, _, h = hutchinsonFamily in h

    // ---- extension point for learned criteria --------------------------------------------------

    /// A learned criterion (AutoS): scores come from a trained predictor of a weight's
    /// initial features. The predictor is a function of the context (it computes the features
    /// it needs, e.g. θ₀ and g₀) returning one tensor per prunable layer.
    let learned (name: string) (predict: ScoringContext -> Tensor list) = create name true predict

    /// The built-in criteria with their formulas, in DESIGN.md's order.
    let all: (Criterion * string) list =
        [
            random, "seeded uniform"
            magnitude, "|θ|"
            gradNorm, "|g|"
            snip, "|θ ⊙ g|"
            grasp, "θ ⊙ (H g), T = 200"
            synflow, "|θ ⊙ ∂R/∂θ|, R = Σ f(1) with |θ|, float64, 100 rounds"
            fisherDiag, "mean(gᵢ²)"
            fisherObd, "½ θ² ⊙ mean(gᵢ²)"
            fts, "|θ ⊙ g + ½ θ² ⊙ F|"
            gnDiag, "mean(gᵢ²), labels drawn from the model's own softmax (Gauss–Newton / true Fisher)"
            hutchDiag,
            "Ĥ = mean of z ⊙ (H z), T = 200; --probe-scope full|layer|groups, --hvp-budget, --adaptive-target; --exact-last-layer: classifier p(1−p)·h²/T² in closed form; --exact-layer-size N: unit-vector HVPs"
            hutchObd, "½ θ² ⊙ Ĥ (Ĥ as hutch_diag, same options)"
            hts, "|θ ⊙ g + ½ θ² ⊙ Ĥ| (Ĥ as hutch_diag, same options)"
        ]

    /// Valid criterion names, with "autos" (which needs a predictor file).
    let names = (all |> List.map (fun (c, _) -> c.Name)) @ [ "autos" ]

    /// Looks a criterion up by name; unknown names get an error listing the valid ones.
    let tryFind (name: string) : Result<Criterion, string> =
        match all |> List.tryFind (fun (c, _) -> c.Name = name) with
        | Some(c, _) -> Ok c
        | None when name = "autos" ->
            Error
                "the criterion 'autos' is learned: it needs a predictor file (train one with `pai autos fit`, then pass --predictor FILE)"
        | None -> Error $"""unknown criterion '%s{name}'; valid criteria: %s{String.Join(", ", names)}"""

/// BN warm-up (DESIGN.md §4): train-mode forward passes with no gradients and no optimizer step,
/// so that batch-norm running statistics describe the data before scoring.
module BnWarmup =
    /// Runs up to `count` batches through the model in train mode, then returns it to eval mode.
    /// Returns the number of batches used.
    let run (model: IModelView) (count: int) (batches: Batch seq) : int =
        let mutable used = 0
        model.Training <- true

        try
            use _noGrad = Libtorch.NoGrad()
            // Advanced inside the step's scope, so that a batch the enumeration creates
            // (DataLoader batches are made lazily) is freed with its step.
            use e = (Seq.truncate count batches).GetEnumerator()
            let mutable more = true

            while more do
                use _step = new DisposeScope()
                more <- e.MoveNext()

                if more then
                    model.Forward e.Current.Inputs |> ignore
                    used <- used + 1
        finally
            model.Training <- false

        used

/// The pruning pipeline: optional BN warm-up, then r rounds of scoring and top-k selection.
module Pruning =
    /// Density after round k of n toward the final density d.
    let densityAt (schedule: Schedule) (finalDensity: float) (rounds: int) (k: int) =
        match schedule with
        | Schedule.Exponential -> Math.Pow(finalDensity, float k / float rounds)
        | Schedule.Linear -> 1.0 - (1.0 - finalDensity) * float k / float rounds

    /// Checks a spec and names the offending field.
    let validate (spec: PruneSpec) =
        Selection.validateSparsity spec.Sparsity

        if spec.Rounds < 1 then
            invalidArg "Rounds" $"rounds must be at least 1, got %d{spec.Rounds}"

        if spec.WarmupBatches < 0 then
            invalidArg "WarmupBatches" $"warm-up batches must be 0 (off) or positive, got %d{spec.WarmupBatches}"

    let private applyMask (model: IModelView) (mask: Mask) =
        use _noGrad = Libtorch.NoGrad()

        for kv, (_, keep) in List.zip (List.ofSeq model.Prunable) mask.Layers do
            kv.Value.Mul_(keep) |> ignore

    /// Prunes the model's prunable weights with the criterion. Iterative rounds score the masked
    /// model (pruned weights are zeroed between rounds and restored at the end), and a weight
    /// pruned once stays pruned. warmup supplies training batches for BN warm-up (used when
    /// spec.WarmupBatches > 0 and the criterion reads data). log receives progress lines.
    let prune
        (spec: PruneSpec)
        (criterion: Criterion)
        (model: IModelView)
        (inputShape: int64 list)
        (scoring: Batch list)
        (warmup: Batch seq)
        (log: string -> unit)
        : Mask * PruneReport =
        validate spec
        let watch = Stopwatch.StartNew()
        let mutable warmupSeconds = 0.0

        if spec.WarmupBatches > 0 && criterion.NeedsData then
            let used = BnWarmup.run model spec.WarmupBatches warmup
            warmupSeconds <- watch.Elapsed.TotalSeconds
            log $"BN warm-up: %d{used} batches in %.1f{warmupSeconds} s"

        model.Training <- false

        let originals =
            [ for kv in model.Prunable -> kv.Value.Detach().Clone().DetachFromScope() ]

        let mutable scoringSeconds = 0.0
        let mutable selectionSeconds = 0.0
        let mutable mask: Mask option = None
        let mutable curvature: CurvatureDiagnostics list = []

        try
            for round in 1 .. spec.Rounds do
                let density = densityAt spec.Schedule (1.0 - spec.Sparsity) spec.Rounds round

                let ctx =
                    {
                        Model = model
                        Batches = scoring
                        InputShape = inputShape
                        Seed = spec.Seed + uint64 (round - 1)
                        Options = spec.Options
                        Mask = mask
                    }

                let t0 = watch.Elapsed.TotalSeconds
                let scores = criterion.Score ctx
                let t1 = watch.Elapsed.TotalSeconds
                curvature <- scores.Diagnostics

                let next =
                    try
                        Selection.select spec.Scope density spec.KeepOnePerLayer mask scores
                    finally
                        Scores.dispose scores

                scoringSeconds <- scoringSeconds + (t1 - t0)
                selectionSeconds <- selectionSeconds + (watch.Elapsed.TotalSeconds - t1)
                mask |> Option.iter Mask.dispose
                mask <- Some next

                if round < spec.Rounds then
                    applyMask model next

                if spec.Rounds > 1 && (round = spec.Rounds || round % 10 = 0) then
                    log $"round %d{round}/%d{spec.Rounds}: density %.4f{density}"
        finally
            use _noGrad = Libtorch.NoGrad()

            for kv, orig in List.zip (List.ofSeq model.Prunable) originals do
                kv.Value.Copy_(orig) |> ignore
                orig.Dispose()

        let final = mask.Value
        let layers = Mask.densities final

        let collapsed =
            layers |> List.filter (fun l -> l.Kept = 0L) |> List.map (fun l -> l.Name)

        if not collapsed.IsEmpty then
            log (
                "warning: layer collapse — no weight left in "
                + String.Join(", ", collapsed)
                + ": the network is disconnected there (use the keep-one-per-layer guard to prevent it)"
            )

        final,
        {
            Criterion = criterion.Name
            Layers = layers
            Collapsed = collapsed
            Seconds =
                [
                    "warmup", warmupSeconds
                    "scoring", scoringSeconds
                    "selection", selectionSeconds
                ]
            Rounds = spec.Rounds
            Curvature = curvature
        }

/// The result of pruning: the mask and its report.
type PruneResult = { Mask: Mask; Report: PruneReport }

/// C#-friendly entry points (overloads, Func/Action, IEnumerable) over the F# modules.
[<AbstractClass; Sealed>]
type PaiPruning =
    /// The criterion called name; unknown names throw an ArgumentException listing the valid ones.
    static member FindCriterion(name: string) : Criterion =
        match Criteria.tryFind name with
        | Ok c -> c
        | Error e -> invalidArg "criterion" e

    /// Valid criterion names with their formulas.
    static member CriterionFormulas: (string * string) list =
        Criteria.all |> List.map (fun (c, f) -> c.Name, f)

    /// Runs Pruning.prune; log receives progress lines and warnings (layer collapse).
    static member Prune
        (
            spec: PruneSpec,
            criterion: Criterion,
            model: IModelView,
            inputShape: seq<int64>,
            scoring: seq<Batch>,
            warmup: seq<Batch>,
            log: Action<string>
        ) : PruneResult =
        let mask, report =
            Pruning.prune spec criterion model (List.ofSeq inputShape) (List.ofSeq scoring) warmup log.Invoke

        { Mask = mask; Report = report }

    /// Wraps a criterion with a score cache for its first (unmasked) round: load returns cached
    /// scores or null; save receives freshly computed scores. Later rounds are never cached.
    static member Cached(criterion: Criterion, load: Func<Scores option>, save: Action<Scores>) : Criterion =
        { criterion with
            Score =
                fun ctx ->
                    if ctx.Mask.IsSome then
                        criterion.Score ctx
                    else
                        match load.Invoke() with
                        | Some s -> s
                        | None ->
                            let s = criterion.Score ctx
                            save.Invoke s
                            s
        }
