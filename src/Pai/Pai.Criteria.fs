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
        /// Estimated diagonal per prunable layer.
        Mean: Tensor list
        /// Standard error of each entry of Mean (over probes).
        StdErr: Tensor list
        /// Probes per scoring batch.
        Probes: int
        /// Hessian-vector products computed.
        HvpCount: int
    }

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

    /// Empirical Fisher diagonal: the mean over scoring samples of the squared per-sample
    /// gradient, gᵢ², with gᵢ = ∇θ ℓ(f(xᵢ), yᵢ). Computed sample by sample.
    let fisherDiagonal (model: IModelView) (batches: Batch list) : Tensor list =
        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model
            let total = totalSamples batches
            let acc = zerosLike ps

            for b in batches do
                for s in samples b do
                    use _step = new DisposeScope()
                    let loss = batchLoss model 1.0 1.0 s
                    let g = Autograd.Grad(loss, List.toArray ps)

                    for a, gi in List.zip acc (Array.toList g) do
                        a.AddCMul_(gi, gi) |> ignore

            acc |> List.map (fun a -> (a / total).MoveToOuterScope()))

    /// H·v for the Hessian of the mean scoring loss (temperature T), by double backward.
    let hessianVectorProduct (model: IModelView) (temperature: float) (batches: Batch list) (v: Tensor list) =
        sumOverBatches model temperature batches (fun ps loss ->
            Autograd.HessianVectorProduct(loss, ps, List.toArray v))

    /// H·g for GraSP: g = ∇θ L(f/T) detached, then H of L(f/T) applied to it.
    let hessianGradient (model: IModelView) (temperature: float) (batches: Batch list) : Tensor list =
        use _scope = new DisposeScope()
        let g = meanGradient model temperature batches
        hessianVectorProduct model temperature batches g |> moveOut

    /// Hutchinson's estimator of diag(H) for the mean scoring loss at temperature T:
    /// the mean over probes of z ⊙ (H z), z Rademacher, unbiased for every probe scope.
    /// Each scoring batch gets its own probes; the standard error comes from the sample
    /// variance over probes within each batch (the batches' errors are independent and add).
    /// probeFor batch probe layer weight returns the probe vector z for that layer (it must be
    /// Rademacher ±1 for the estimator to be unbiased); see `hutchinson` for the seeded default.
    let hutchinsonWith
        (probeFor: int -> int -> int -> Tensor -> Tensor)
        (model: IModelView)
        (temperature: float)
        (probes: int)
        (scope: ProbeScope)
        (batches: Batch list)
        =
        if probes < 2 then
            invalidArg "probes" $"Hutchinson needs at least 2 probes to estimate its own error, got %d{probes}"

        withEval model (fun () ->
            use _scope = new DisposeScope()
            let ps = leaves model
            let total = totalSamples batches
            let mean = zerosLike ps
            let varSum = zerosLike ps
            let mutable hvps = 0

            for bi, b in List.indexed batches do
                use _batch = new DisposeScope()
                let loss = batchLoss model temperature total b

                let grads =
                    Autograd.Grad(loss, List.toArray ps, createGraph = true, retainGraph = true)
                // Welford over this batch's probes, per weight.
                let m = zerosLike ps
                let m2 = zerosLike ps

                let blocks =
                    match scope with
                    | ProbeScope.Full -> [ [ 0 .. ps.Length - 1 ] ]
                    | ProbeScope.PerLayer -> [ for i in 0 .. ps.Length - 1 -> [ i ] ]

                for j in 1..probes do
                    use _probe = new DisposeScope()

                    for block in blocks do
                        let zs = block |> List.map (fun i -> i, probeFor bi j i ps.[i])

                        let dot =
                            zs
                            |> List.map (fun (i, z) -> (use product = grads.[i] * z in product.Sum()))
                            |> List.reduce (+)

                        let inputs = zs |> List.map (fun (i, _) -> ps.[i]) |> List.toArray
                        let hz = Autograd.Grad([| dot |], inputs, retainGraph = true, allowUnused = true)
                        hvps <- hvps + 1

                        // The blocks partition the layers, so this is layer i's whole sample
                        // x = z ⊙ Hz of probe j. Welford: δ = x − m, m += δ/j, and
                        // M2 += δ·(x − m_new) = δ²·(j − 1)/j (one fused update).
                        // Weight-sized temporaries are freed as soon as they are used.
                        zs
                        |> List.iteri (fun k (i, z) ->
                            use delta =
                                match hz.[k] with
                                | null -> m.[i].Neg()
                                | h ->
                                    use h = h
                                    (z * h).Add_(m.[i], -1.0)

                            m.[i].Add_(delta, 1.0 / float j) |> ignore
                            m2.[i].AddCMul_(delta, delta, float (j - 1) / float j) |> ignore)

                accumulate mean m
                // Var of this batch's mean over probes: s² / J, with s² = M2 / (J - 1).
                for i in 0 .. ps.Length - 1 do
                    varSum.[i].Add_(m2.[i], 1.0 / float (probes * (probes - 1))) |> ignore

            {
                Mean = moveOut mean
                StdErr = varSum |> List.map (fun v -> v.Sqrt().MoveToOuterScope())
                Probes = probes
                HvpCount = hvps
            })

    /// Hutchinson with seeded Rademacher probes, drawn in (batch, probe, layer) order.
    let hutchinson
        (model: IModelView)
        (temperature: float)
        (probes: int)
        (scope: ProbeScope)
        (seed: uint64)
        (batches: Batch list)
        =
        use gen = new Generator(seed)
        hutchinsonWith (fun _ _ _ w -> Libtorch.RademacherLike(w, gen)) model temperature probes scope batches

    /// SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ| with R = Σ f(1) on a float64 copy of the model
    /// whose parameters are replaced by their absolute values (eval mode, all-ones input).
    /// Pruned weights (the context's mask) are zero in that copy. The model is not changed.
    let synapticSaliency (model: IModelView) (inputShape: int64 list) (mask: Mask option) : Tensor list =
        use _scope = new DisposeScope()
        use copy = model.CopyAs DType.Float64
        copy.Training <- false

        using (Libtorch.NoGrad()) (fun _ ->
            for kv in copy.Parameters do
                kv.Value.Copy_(kv.Value.Abs()) |> ignore

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
        {
            Layers = List.zip (layerNames model) ts
        }

    let private weights (ctx: ScoringContext) = Estimators.leaves ctx.Model

    // Runs f in a scope and moves its result tensors out.
    let private scored (f: unit -> (string * Tensor) list) : Scores =
        use _scope = new DisposeScope()

        {
            Layers = f () |> List.map (fun (n, t) -> n, t.MoveToOuterScope())
        }

    /// A criterion from a name and a function of the context returning one tensor per prunable layer.
    let create (name: string) (needsData: bool) (f: ScoringContext -> Tensor list) : Criterion =
        {
            Name = name
            NeedsData = needsData
            DefaultRounds = 1
            Score = fun ctx -> scored (fun () -> List.zip (layerNames ctx.Model) (f ctx))
        }

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

    let private hutchinsonMean (ctx: ScoringContext) =
        let o = ctx.Options
        (Estimators.hutchinson ctx.Model o.HutchinsonTemperature o.Probes o.ProbeScope ctx.Seed ctx.Batches).Mean

    /// Hutchinson Hessian diagonal, mean over samples and probes of z ⊙ (H z) (signed).
    let hutchDiag = create "hutch_diag" true hutchinsonMean

    /// OBD with the Hutchinson diagonal: ½ θ² ⊙ Ĥ (signed).
    let hutchObd =
        create "hutch_obd" true (fun ctx ->
            List.map2 (fun (w: Tensor) (h: Tensor) -> w.Square() * h * 0.5) (detached ctx) (hutchinsonMean ctx))

    // ---- algebra -----------------------------------------------------------------------------

    let private mapScores (name: string) (f: Tensor -> Tensor) (c: Criterion) : Criterion =
        { c with
            Name = name
            Score =
                fun ctx ->
                    let s = c.Score ctx

                    try
                        scored (fun () -> s.Layers |> List.map (fun (n, t) -> n, f t))
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
                        scored (fun () -> List.map2 (fun (n, x) (_, y) -> n, f x y) sa.Layers sb.Layers)
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

                        scored (fun () ->
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
                        scored (fun () ->
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
    /// Hutchinson Taylor sensitivity: |θ ⊙ g + ½ θ² ⊙ Ĥ|.
    let hts = abs (add taylor1 hutchObd) |> named "hts"

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
            hutchDiag, "mean of z ⊙ (H z), T = 200"
            hutchObd, "½ θ² ⊙ Ĥ"
            hts, "|θ ⊙ g + ½ θ² ⊙ Ĥ|"
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
