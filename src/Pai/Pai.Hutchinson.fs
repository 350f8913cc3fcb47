/// Hutchinson's estimator of the Hessian diagonal with its own uncertainty, and the curvature
/// source of the hdiag statistic (exact where cheap, Hutchinson for the rest).
namespace Pai

open System
open Pai.Torch
open Pai.Estimators

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

/// Hutchinson probing and the combined curvature source.
module Hutchinson =

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
    /// be unbiased); see `estimate` for the seeded default.
    let estimateWith
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
                    ScoringProgress.Report($"Hutchinson, %d{count} probes per block", bi + 1, nBatches)
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
    let estimate
        (model: IModelView)
        (temperature: float)
        (budget: ProbeBudget)
        (blocks: int list list)
        (seed: uint64)
        (batches: Batch list)
        =
        use gen = new Generator(seed)
        estimateWith (fun _ _ _ w -> Libtorch.RademacherLike(w, gen)) model temperature budget blocks batches


    // The layers whose diagonal is cheap to get exactly on a model that is not piecewise linear:
    // the classifier's (closed form, when asked) and, by unit-vector HVPs, the other layers of at
    // most maxSize weights.
    let private cheapExactLayers (model: IModelView) (classifier: bool) (maxSize: int) =
        let names = [ for kv in model.Prunable -> kv.Key ]

        let classifier =
            if classifier then
                names |> List.tryFindIndex ((=) model.ClassifierWeightName)
            else
                None

        let unitLayers =
            [
                for i, kv in List.indexed (List.ofSeq model.Prunable) do
                    if Some i <> classifier && kv.Value.NumEl <= int64 maxSize then
                        i
            ]

        classifier, unitLayers

    // The Hutchinson side of `curvature`.
    let private hutchinsonCurvature
        (model: IModelView)
        (temperature: float)
        (options: CurvatureOptions)
        (seed: uint64)
        (batches: Batch list)
        =
        use _scope = new DisposeScope()
        let t = temperature
        let names = [ for kv in model.Prunable -> kv.Key ]
        let layers = names.Length

        let classifier, unitLayers =
            cheapExactLayers model options.ExactClassifier options.ExactLayerSize

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
                Some(estimate model t budget blocks seed batches)

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
                        Method = CurvatureMethod.Hutchinson
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
            info.[i] <- exactInfo i CurvatureMethod.ClosedForm)

        for i in unitLayers do
            let d, n = unitVectorDiagonal model t i batches
            diagonal.[i] <- d
            hvps <- hvps + n
            info.[i] <- exactInfo i CurvatureMethod.UnitHvp

        let scope =
            if blocks.IsEmpty then
                "none"
            else
                ProbeScope.format options.ProbeScope

        let probes =
            info
            |> Array.filter (fun l -> l.Method = CurvatureMethod.Hutchinson)
            |> Array.map (fun l -> l.Probes)
            |> Array.distinct
            |> Array.sort

        let probeText =
            match probes with
            | [||] -> "no probes"
            | [| p |] -> $"%d{p} probes"
            | ps -> $"%d{ps.[0]}–%d{Array.last ps} probes"

        let estimator =
            $"hutchinson (%s{probeText}) T=%g{t} scope=%s{scope}"
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

    /// The diagnostics of an exact diagonal (classes = 0) or of its sampled-classes approximation:
    /// every layer by that method, no HVP.
    let exactDiagnostics (model: IModelView) (temperature: float) (classes: int) : CurvatureDiagnostics =
        {
            Estimator =
                if classes > 0 then
                    $"sampled-classes (Gauss–Newton identity, %d{classes} classes per sample drawn at random, unbiased) T=%g{temperature}"
                else
                    $"exact (Gauss–Newton identity) T=%g{temperature}"
            Layers =
                [
                    for kv in model.Prunable ->
                        {
                            Name = kv.Key
                            Method =
                                if classes > 0 then
                                    CurvatureMethod.SampledClasses
                                else
                                    CurvatureMethod.Exact
                            MedianRelativeSe = 0.0
                            Probes = 0
                        }
                ]
            Hvps = 0
            Target = 0.0
        }

    /// The Hessian diagonal the hdiag statistic uses at temperature T on the scoring batches, with
    /// its diagnostics (whose Estimator text starts with the method's name). options.Estimator
    /// picks the method:
    /// - Exact: PerSample.exactHessianDiagonal with every class (C backward passes per merged
    ///   scoring batch: a mean over samples, batch-1 semantics at batched cost), or with
    ///   options.Classes classes per sample drawn at random (seeded) when set; models that are
    ///   not piecewise linear in each layer's weights are refused.
    /// - Hutchinson: the classifier's closed form (options.ExactClassifier), unit-vector HVPs for
    ///   layers of at most options.ExactLayerSize weights, and Hutchinson for the rest, its probe
    ///   blocks restricted to the remaining layers. The HVP budget covers the Hutchinson probes
    ///   only; unit-vector HVPs are a fixed cost, counted in the diagnostics' total.
    let curvature
        (model: IModelView)
        (temperature: float)
        (options: CurvatureOptions)
        (seed: uint64)
        (batches: Batch list)
        : Tensor list * CurvatureDiagnostics =
        match options.Estimator with
        | HessianEstimator.Exact when options.Classes > 0 ->
            PerSample.sampledClassesHessianDiagonal model temperature options.Classes seed (mergeBatches batches),
            exactDiagnostics model temperature options.Classes
        | HessianEstimator.Exact ->
            PerSample.exactHessianDiagonal model temperature (mergeBatches batches),
            exactDiagnostics model temperature 0
        | HessianEstimator.Hutchinson -> hutchinsonCurvature model temperature options seed batches

    /// The exact Hessian diagonal of L(f/T) where it can be had, by layer index, as a reference
    /// for estimates (`pai estimate`): every layer of a piecewise-linear model by the Gauss–Newton
    /// identity; otherwise the classifier's closed form and, by unit-vector HVPs, the layers of at
    /// most maxSize weights. The tensors belong to the enclosing dispose scope.
    let exactReference (model: IModelView) (temperature: float) (maxSize: int) (batches: Batch list) =
        if model.IsPiecewiseLinear then
            PerSample.exactHessianDiagonal model temperature (mergeBatches batches)
            |> List.indexed
        else
            let classifier, unitLayers = cheapExactLayers model true maxSize

            [
                for i in Option.toList classifier do
                    yield i, fst (classifierDiagonal model temperature batches)
                for i in unitLayers do
                    yield i, fst (unitVectorDiagonal model temperature i batches)
            ]
