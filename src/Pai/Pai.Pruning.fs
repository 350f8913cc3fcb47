/// The pruning pipeline: top-k selection, BN warm-up, then r rounds of scoring and selection.
namespace Pai

open System
open System.Diagnostics
open Pai.Torch

/// The result of pruning: the mask, its report, the last round's scores, and the statistics
/// round 1 computed that are worth storing (the caller owns every tensor).
[<NoComparison; NoEquality>]
type PruneResult =
    {
        Mask: Mask
        Report: PruneReport
        Scores: Scores
        Statistics: (string * StatisticValue) list
    }

/// Top-k mask selection: exactly k = round(density·N) weights are kept (per ranking), ties broken
/// by position (the earlier weight, in layer order then row-major order, wins).
module Selection =
    /// k = round(density·n), halves rounded away from zero.
    let keepCount (density: float) (n: int64) =
        int64 (System.Math.Round(density * float n, System.MidpointRounding.AwayFromZero))

    /// Checks a sparsity value, naming the parameter in the error.
    let validateSparsity (sparsity: float) =
        if System.Double.IsNaN sparsity || sparsity < 0.0 || sparsity >= 1.0 then
            invalidArg
                "sparsity"
                $"sparsity must lie in [0, 1) (the fraction of weights removed), got %g{sparsity}; e.g. 0.9 keeps 10%% of the weights"

    /// Fails when any score is NaN or infinite, naming the layer.
    let validateScores (scores: Scores) =
        for name, s in scores.Layers do
            use finite = s.IsFinite()
            let bad = s.NumEl - finite.CountNonZero()

            if bad > 0L then
                invalidArg
                    "scores"
                    $"the criterion produced %d{bad} non-finite score(s) (NaN or ±inf) in layer '%s{name}'; check its formula (a division by a zero statistic?) or its predictor file, then the model's weights and the scoring data"

    // Indices of the k best entries of a 1-d tensor, best first, equal values in position order.
    let private topIndices (k: int64) (flat: Tensor) =
        use order = flat.ArgSort(0L, descending = true, stable = true)
        order.Narrow(0L, 0L, k)

    let private boolMaskOf (n: int64) (indices: Tensor) (device: Device) =
        use zeros = Libtorch.Zeros([| n |], DType.Bool, device)
        use ones = Libtorch.Ones([| indices.NumEl |], DType.Bool, device)
        zeros.Scatter(0L, indices, ones)

    /// Selects the mask. With a previous mask, weights it pruned score -inf and stay pruned.
    /// keepOnePerLayer reserves each layer's best weight first (k stays exact).
    let select
        (ranking: Ranking)
        (density: float)
        (keepOnePerLayer: bool)
        (previous: Mask option)
        (scores: Scores)
        : Mask =
        if System.Double.IsNaN density || density <= 0.0 || density > 1.0 then
            invalidArg "density" $"density must lie in (0, 1], got %g{density}"

        validateScores scores
        use _scope = new DisposeScope()

        let ranked =
            scores.Layers
            |> List.mapi (fun i (name, s) ->
                let flat = s.Flatten().To(DType.Float64)

                let flat =
                    match previous with
                    | Some prev ->
                        let _, keep = prev.Layers.[i]
                        use k = keep.Flatten()

                        use ninf =
                            Libtorch.Full([||], System.Double.NegativeInfinity, DType.Float64, flat.Device)

                        Tensor.Where(k, flat, ninf)
                    | None -> flat

                name, s.Shape, flat)

        let reserve (flat: Tensor) =
            if keepOnePerLayer && flat.NumEl > 0L then
                use best = flat.ArgMax()
                use one = Libtorch.Ones([| 1L |], DType.Bool, flat.Device)
                use idx = best.Reshape([| 1L |])

                use reserved =
                    Libtorch.Zeros([| flat.NumEl |], DType.Bool, flat.Device).Scatter(0L, idx, one)

                use inf =
                    Libtorch.Full([||], System.Double.PositiveInfinity, DType.Float64, flat.Device)

                Tensor.Where(reserved, inf, flat)
            else
                flat

        let layers =
            match ranking with
            | Ranking.PerLayer ->
                ranked
                |> List.map (fun (name, shape, flat) ->
                    let k0 = keepCount density flat.NumEl
                    let k = if keepOnePerLayer then max 1L k0 |> min flat.NumEl else k0
                    let keep = boolMaskOf flat.NumEl (topIndices k (reserve flat)) flat.Device
                    name, keep.View(shape))
            | Ranking.Global ->
                let flats = ranked |> List.map (fun (_, _, f) -> reserve f)
                let all = Libtorch.Cat(List.toArray flats, 0L)
                let k = keepCount density all.NumEl
                let keepAll = boolMaskOf all.NumEl (topIndices k all) all.Device
                let mutable offset = 0L

                ranked
                |> List.map (fun (name, shape, flat) ->
                    let part = keepAll.Narrow(0L, offset, flat.NumEl)
                    offset <- offset + flat.NumEl
                    name, part.Reshape(shape).Clone())

        {
            Layers = layers |> List.map (fun (name, t) -> name, t.DetachFromScope())
        }

/// BN warm-up (docs/architecture.md §4): train-mode forward passes with no gradients and no optimizer step,
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
    /// model (pruned weights are zeroed between rounds and restored at the end, statistics are
    /// recomputed each round), and a weight pruned once stays pruned. warmup supplies training
    /// batches for BN warm-up (used when spec.WarmupBatches > 0 and the criterion reads data).
    /// known holds statistics of the unmasked model already computed for this context (e.g.
    /// stored by an earlier run; the pipeline takes ownership); the result hands back the
    /// statistics round 1 computed that are worth storing. log receives progress lines.
    let prune
        (spec: PruneSpec)
        (criterion: Criterion)
        (model: IModelView)
        (inputShape: int64 list)
        (scoring: Batch list)
        (warmup: Batch seq)
        (known: (string * StatisticValue) list)
        (log: string -> unit)
        : PruneResult =
        validate spec
        let watch = Stopwatch.StartNew()
        let mutable warmupSeconds = 0.0

        if spec.WarmupBatches > 0 && Criteria.needsData criterion then
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
        let mutable computed: (string * StatisticValue) list = []
        let mutable lastScores: Scores option = None
        let mutable pending = known

        try
            try
                for round in 1 .. spec.Rounds do
                    let density = densityAt spec.Schedule (1.0 - spec.Sparsity) spec.Rounds round

                    let ctx =
                        {
                            Model = model
                            Batches = scoring
                            InputShape = inputShape
                            Seed = spec.Seed + uint64 (round - 1)
                            Curvature = spec.Curvature
                            Mask = mask
                        }

                    let t0 = watch.Elapsed.TotalSeconds

                    let scores =
                        use cache = new StatisticCache(ctx, pending)
                        pending <- []
                        let scores = Criteria.scoreWith cache criterion

                        if round = 1 then
                            computed <- cache.TakeComputed(Criteria.storedStatistics criterion)

                        scores

                    let t1 = watch.Elapsed.TotalSeconds
                    curvature <- scores.Diagnostics

                    lastScores |> Option.iter Scores.dispose
                    lastScores <- Some scores
                    let next = Selection.select spec.Ranking density spec.KeepOnePerLayer mask scores

                    scoringSeconds <- scoringSeconds + (t1 - t0)
                    selectionSeconds <- selectionSeconds + (watch.Elapsed.TotalSeconds - t1)
                    mask |> Option.iter Mask.dispose
                    mask <- Some next

                    if round < spec.Rounds then
                        applyMask model next

                    if spec.Rounds > 1 && (round = spec.Rounds || round % 10 = 0) then
                        log $"round %d{round}/%d{spec.Rounds}: density %.4f{density}"
            with _ ->
                for _, v in pending @ computed do
                    for t in v.Layers do
                        t.Dispose()

                lastScores |> Option.iter Scores.dispose
                mask |> Option.iter Mask.dispose

                reraise ()
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

        {
            Mask = final
            Scores = lastScores.Value
            Statistics = computed
            Report =
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
        }

/// C#-friendly entry points (overloads, Func/Action, IEnumerable) over the F# modules.
[<AbstractClass; Sealed>]
type PaiPruning =
    /// A built-in criterion by name at the given temperatures, or a user formula; bad names or
    /// formulas throw an ArgumentException that lists the valid criteria or points at the token.
    static member ResolveCriterion(text: string, temperatures: Temperatures) : Criterion =
        match Registry.resolve temperatures text with
        | Ok c -> c
        | Error e -> invalidArg "criterion" e

    /// Runs Pruning.prune; log receives progress lines and warnings (layer collapse).
    static member Prune
        (
            spec: PruneSpec,
            criterion: Criterion,
            model: IModelView,
            inputShape: seq<int64>,
            scoring: seq<Batch>,
            warmup: seq<Batch>,
            known: seq<string * StatisticValue>,
            log: Action<string>
        ) : PruneResult =
        Pruning.prune
            spec
            criterion
            model
            (List.ofSeq inputShape)
            (List.ofSeq scoring)
            warmup
            (List.ofSeq known)
            log.Invoke
