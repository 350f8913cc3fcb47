/// AutoS (Liu et al. 2024; docs/architecture.md §6): the per-weight features a learned criterion reads at initialization,
/// and the criterion that turns a trained predictor of those features into scores.
namespace Pai

open System
open Pai.Torch

/// One per-weight feature of a learned criterion, read at initialization.
[<RequireQualifiedAccess>]
type Feature =
    /// θ₀, the weight itself.
    | Weight
    /// g₀ = ∇θ L on the scoring batches in eval mode, L the mean cross-entropy over all N scoring
    /// samples: g₀ = Σ_batches ∇θ (Σ_{i∈batch} ℓᵢ / N), i.e. the per-batch gradients of each batch's
    /// share of the mean loss, summed over the batches (= the mean per-sample gradient).
    | Gradient
    /// |θ₀ ⊙ g₀| (SNIP's saliency).
    | Saliency
    /// The Hessian diagonal hdiag(T) at the temperature the features are computed with (the
    /// context's curvature estimator).
    | HutchinsonDiagonal
    /// ln(fan-in) of the weight's layer (the same for every weight of a layer); the logarithm
    /// keeps layers of very different widths on one scale.
    | LogFanIn

/// Feature names, parsing and computation.
module Features =
    // Every feature with its name in predictor files and on the command line, in canonical order.
    let private named =
        [
            Feature.Weight, "theta"
            Feature.Gradient, "grad"
            Feature.Saliency, "saliency"
            Feature.HutchinsonDiagonal, "hutch_diag"
            Feature.LogFanIn, "log_fan_in"
        ]

    /// The feature's name in predictor files and on the command line.
    let name (f: Feature) =
        named |> List.find (fst >> (=) f) |> snd

    /// Every feature, in canonical order.
    let all = List.map fst named

    /// θ₀ and g₀: the paper's feature set and the default.
    let standard = [ Feature.Weight; Feature.Gradient ]

    /// The standard features plus |θ₀·g₀|, the Hutchinson diagonal and ln(fan-in).
    let extended = all

    /// Comma-separated names, e.g. "theta,grad".
    let format (features: Feature list) =
        String.Join(",", features |> List.map name)

    /// Parses comma-separated names; an unknown or repeated name is an error listing the valid ones.
    let parse (text: string) : Result<Feature list, string> =
        let names =
            text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> List.ofArray

        let valid = format all

        let rec go acc rest =
            match rest with
            | [] when List.isEmpty acc -> Error $"no feature given; valid features: %s{valid}"
            | [] -> Ok(List.rev acc)
            | n :: tail ->
                match all |> List.tryFind (fun f -> name f = n) with
                | Some f when List.contains f acc -> Error $"feature '%s{n}' is given twice"
                | Some f -> go (f :: acc) tail
                | None ->
                    let hint = Suggestion.didYouMean (List.map name all) n
                    Error $"unknown feature '%s{n}'%s{hint}; valid features: %s{valid}"

        go [] names

    /// One [n, F] float32 matrix per prunable layer (n = the layer's weight count, row-major
    /// order of the weight), columns in the order of `features`. Reads the model at its current
    /// weights (θ₀ when called before training) and never changes it. g₀ and Ĥ are the
    /// statistics grad and hdiag(T) of `get`, so a formula that also reads them computes them once.
    let computeWith
        (get: Statistic -> StatisticValue)
        (hessianTemperature: float)
        (features: Feature list)
        (ctx: ScoringContext)
        : Tensor list =
        if List.isEmpty features then
            invalidArg "features" "a learned criterion needs at least one feature"

        use _scope = new DisposeScope()
        let weights = [ for kv in ctx.Model.Prunable -> kv.Value.Detach() ]
        // Looked up on first use, and only for the features that need them.
        let gradient = lazy (get (Statistic.Grad 1.0)).Layers

        let hessian = lazy (get (Statistic.HessianDiagonal hessianTemperature)).Layers

        weights
        |> List.mapi (fun i w ->
            let column (f: Feature) =
                match f with
                | Feature.Weight -> w.Flatten()
                | Feature.Gradient -> gradient.Value.[i].Flatten()
                | Feature.Saliency -> (w * gradient.Value.[i]).Abs().Flatten()
                | Feature.HutchinsonDiagonal -> hessian.Value.[i].Flatten()
                | Feature.LogFanIn ->
                    let fanIn = float w.NumEl / float w.Shape.[0]
                    Libtorch.Full([| w.NumEl |], Math.Log fanIn, w.DType, w.Device)

            let columns = features |> List.map column |> List.toArray
            Libtorch.Stack(columns, 1L).To(DType.Float32).MoveToOuterScope())

    /// computeWith on statistics computed afresh for the context.
    let compute (hessianTemperature: float) (features: Feature list) (ctx: ScoringContext) : Tensor list =
        use cache = new StatisticCache(ctx)
        computeWith cache.Get hessianTemperature features ctx

/// The learned criterion.
module AutoS =
    /// The criterion "autos": one learned statistic that scores each weight by predict(features).
    /// Features are computed per layer (Features.computeWith, Ĥ at hessianTemperature) and
    /// predict maps an [n, F] matrix to n scores (the predicted label: higher = survives longer =
    /// keep).
    let criterion (hessianTemperature: float) (features: Feature list) (predict: Tensor -> Tensor) : Criterion =
        let compute get (ctx: ScoringContext) =
            let weights = [ for kv in ctx.Model.Prunable -> kv.Value ]

            Features.computeWith get hessianTemperature features ctx
            |> List.map2
                (fun (w: Tensor) (x: Tensor) ->
                    let scores = predict x

                    if scores.NumEl <> w.NumEl then
                        invalidOp $"the predictor returned %d{scores.NumEl} scores for a layer of %d{w.NumEl} weights"

                    scores.Reshape(w.Shape))
                weights

        {
            Name = Registry.learnedName
            Formula =
                Expr.Statistic(
                    Statistic.Learned
                        {
                            Name = Registry.learnedName
                            Compute = compute
                        }
                )
            DefaultRounds = 1
        }

/// C#-friendly entry points of AutoS.
[<AbstractClass; Sealed>]
type PaiAutoS =
    /// The criterion of AutoS.criterion with a Func predictor.
    static member Criterion
        (hessianTemperature: float, features: seq<Feature>, predict: Func<Tensor, Tensor>)
        : Criterion =
        AutoS.criterion hessianTemperature (List.ofSeq features) predict.Invoke

    /// Features.compute for C#.
    static member ComputeFeatures
        (hessianTemperature: float, features: seq<Feature>, context: ScoringContext)
        : Tensor list =
        Features.compute hessianTemperature (List.ofSeq features) context

    /// Parses comma-separated feature names; throws an ArgumentException listing the valid ones.
    static member ParseFeatures(text: string) : Feature list =
        match Features.parse text with
        | Ok fs -> fs
        | Error e -> invalidArg "features" e
