/// Immutable pipeline records and the model view that criteria consume. Criteria depend only on
/// this file and Pai.Torch, never on the host.
namespace Pai

open System
open System.Collections.Generic
open Pai.Torch

/// One batch: inputs [N, C, H, W] (float) and int64 class targets [N].
type Batch = { Inputs: Tensor; Targets: Tensor }

/// What kind of layer a prunable weight belongs to, with what batched per-sample statistics need
/// to turn its input into per-sample weight gradients.
[<RequireQualifiedAccess>]
type LayerKind =
    /// y = x·Wᵀ + b over the last dimension; x may carry positions ([N, P, in], the ViT's tokens).
    | Linear
    /// 2-d convolution with these settings (square kernels, the same on both axes).
    | Conv2d of stride: int * padding: int * dilation: int * groups: int

/// One prunable layer as seen in one forward pass: the tensors its weight met there.
type LayerCapture =
    {
        /// The weight's name, as in IModelView.Prunable.
        WeightName: string
        Kind: LayerKind
        /// The layer's input activation (a live tensor of the forward's graph).
        Input: Tensor
        /// The layer's output (the tensor the rest of the network consumed): gradients with
        /// respect to it are the per-sample output gradients δ.
        Output: Tensor
    }

/// What a criterion sees of a model. Implemented by the host's models.
type IModelView =
    /// Model name (e.g. "lenet5").
    abstract Name: string
    /// The classifier's (final linear layer's) weight name; it may be absent from Prunable
    /// (a dense classifier). Logits are W·h + b with h the classifier's input.
    abstract ClassifierWeightName: string
    /// Logits [N, classes] and the classifier's input features h [N, D] for inputs [N, C, H, W]:
    /// what the closed-form Hessian diagonal of the classifier needs.
    abstract ForwardWithFeatures: inputs: Tensor -> struct (Tensor * Tensor)
    /// The prunable weights in a fixed order, by parameter name. These are the live leaf
    /// tensors (requiring gradients) that forward uses.
    abstract Prunable: IReadOnlyList<KeyValuePair<string, Tensor>>
    /// Every trainable parameter by name (prunable or not: biases, norm weights, …).
    abstract Parameters: IReadOnlyList<KeyValuePair<string, Tensor>>
    /// Logits [N, classes] for inputs [N, C, H, W].
    abstract Forward: inputs: Tensor -> Tensor
    /// Logits [N, classes] and, for every prunable weight used in this forward pass, its layer's
    /// input and output (in forward order): one pass gives everything batched per-sample
    /// statistics need (PerSample).
    abstract ForwardCapturing: inputs: Tensor -> struct (Tensor * IReadOnlyList<LayerCapture>)
    /// True when, in eval mode, the logits are linear in each prunable weight tensor taken alone
    /// (ReLU, max/average pooling, eval-mode batch norm, residual sums, every weight used once):
    /// then each diagonal Hessian block of the loss equals the Gauss–Newton one and
    /// PerSample.exactHessianDiagonal is exact. False for attention, GELU or LayerNorm.
    abstract IsPiecewiseLinear: bool
    /// Train mode (batch statistics, dropout) or eval mode.
    abstract Training: bool with get, set
    /// The device the parameters live on.
    abstract Device: Device
    /// A deep copy of the model (parameters and buffers) converted to another dtype.
    abstract CopyAs: dtype: DType -> IModelView
    /// Frees the model's tensors.
    inherit System.IDisposable

/// How one layer's Hessian diagonal was obtained.
[<RequireQualifiedAccess>]
type CurvatureMethod =
    /// Hutchinson's estimator (noisy, unbiased).
    | Hutchinson
    /// The classifier's closed form p(1−p)·h²/T² (exact).
    | ClosedForm
    /// One HVP per weight with a unit vector (exact).
    | UnitHvp
    /// The Gauss–Newton identity of piecewise-linear networks (exact).
    | Exact
    /// The Gauss–Newton identity over classes drawn at random per sample, scaled (an unbiased
    /// approximation for many classes; seeded).
    | SampledClasses

[<RequireQualifiedAccess>]
module CurvatureMethod =
    /// The stored name: "hutchinson", "closed-form", "unit-hvp", "exact" or "sampled-classes".
    let name (m: CurvatureMethod) =
        match m with
        | CurvatureMethod.Hutchinson -> "hutchinson"
        | CurvatureMethod.ClosedForm -> "closed-form"
        | CurvatureMethod.UnitHvp -> "unit-hvp"
        | CurvatureMethod.Exact -> "exact"
        | CurvatureMethod.SampledClasses -> "sampled-classes"

    /// Reads a stored name back; unknown names (from a newer Pai) are an error naming them.
    let parse (text: string) =
        match text with
        | "hutchinson" -> CurvatureMethod.Hutchinson
        | "closed-form" -> CurvatureMethod.ClosedForm
        | "unit-hvp" -> CurvatureMethod.UnitHvp
        | "exact" -> CurvatureMethod.Exact
        | "sampled-classes" -> CurvatureMethod.SampledClasses
        | other -> invalidArg "method" $"unknown curvature method '%s{other}'"

/// How one layer's curvature diagonal was obtained and how uncertain it is.
type LayerCurvature =
    {
        Name: string
        Method: CurvatureMethod
        /// Median over the layer of SE/|estimate| (see Stability.medianRelativeSe); 0 when exact.
        MedianRelativeSe: float
        /// Probes that reached this layer per scoring batch (0 when exact).
        Probes: int
    }

/// What a curvature estimate cost and how far it can be trusted, per layer.
type CurvatureDiagnostics =
    {
        /// The estimator and its settings, e.g. "hutchinson T=200 scope=layer".
        Estimator: string
        Layers: LayerCurvature list
        /// Hessian-vector products computed (Hutchinson probes and unit vectors).
        Hvps: int
        /// The adaptive mode's target median relative SE (0: fixed probes).
        Target: float
    }

/// Per-layer score tensors, shaped like the prunable weights, in the model's prunable order.
/// Higher means "keep". The tensors are owned by the value: dispose with Scores.dispose.
/// Diagnostics travel with the scores (rather than through a side channel) so that criteria stay
/// pure functions: a composition concatenates its parts' diagnostics and the pruning pipeline
/// copies them into the PruneReport. Empty for criteria without an estimator.
type Scores =
    {
        Layers: (string * Tensor) list
        Diagnostics: CurvatureDiagnostics list
    }

/// Which weights are kept: one bool tensor per prunable layer, shaped like its weight.
type Mask = { Layers: (string * Tensor) list }

/// Whether top-k selection ranks all layers together or each layer on its own.
[<RequireQualifiedAccess>]
type Ranking =
    | Global
    | PerLayer

/// How density falls over iterative rounds.
[<RequireQualifiedAccess>]
type Schedule =
    /// density after round k of n is d^(k/n) (as SynFlow and lottery-ticket pruning).
    | Exponential
    /// density after round k of n is 1 - (1 - d)·k/n.
    | Linear

/// Which Hessian blocks a Hutchinson probe touches.
[<RequireQualifiedAccess>]
type ProbeScope =
    /// One Rademacher vector over every prunable weight (cheap per HVP, cross-layer noise).
    | Full
    /// One layer's block at a time (z is zero outside it): one HVP per layer per probe.
    | PerLayer
    /// Chosen groups of layers (indices in the prunable order), each probed as one block; every
    /// layer belongs to exactly one group. Full is one group of all layers, PerLayer singletons.
    | Grouped of int list list

[<RequireQualifiedAccess>]
module ProbeScope =
    /// Reads "full", "layer", or groups of layer indices such as "0+1,2,3" ('+' joins layers into
    /// one block, ',' separates blocks).
    let parse (text: string) : Result<ProbeScope, string> =
        match text.Trim().ToLowerInvariant() with
        | "full" -> Ok ProbeScope.Full
        | "layer" -> Ok ProbeScope.PerLayer
        | spec ->
            let parseIndex (s: string) =
                match System.Int32.TryParse(s.Trim()) with
                | true, i when i >= 0 -> Some i
                | _ -> None

            let groups =
                spec.Split(',')
                |> Array.map (fun g -> g.Split('+') |> Array.map parseIndex)
                |> List.ofArray

            if groups |> List.exists (Array.exists Option.isNone) then
                Error
                    $"probe scope must be 'full', 'layer' or groups of layer indices such as '0+1,2,3' ('+' joins layers into a block, ',' separates blocks), got '%s{text}'"
            else
                Ok(ProbeScope.Grouped(groups |> List.map (Array.choose id >> List.ofArray)))

    /// The text parse reads back.
    let format (scope: ProbeScope) =
        match scope with
        | ProbeScope.Full -> "full"
        | ProbeScope.PerLayer -> "layer"
        | ProbeScope.Grouped groups ->
            groups
            |> List.map (fun g -> g |> List.map string |> String.concat "+")
            |> String.concat ","

    /// The blocks (lists of layer indices) for a model with `layers` prunable layers; groups must
    /// partition the layers.
    let blocks (layers: int) (scope: ProbeScope) : int list list =
        match scope with
        | ProbeScope.Full -> [ [ 0 .. layers - 1 ] ]
        | ProbeScope.PerLayer -> [ for i in 0 .. layers - 1 -> [ i ] ]
        | ProbeScope.Grouped groups ->
            let all = List.concat groups |> List.sort

            if all <> [ 0 .. layers - 1 ] || List.exists List.isEmpty groups then
                invalidArg
                    "ProbeScope"
                    $"the probe groups '%s{format scope}' must name every layer index 0..%d{layers - 1} exactly once (this model has %d{layers} prunable layers)"

            groups

/// Which method the Hessian-diagonal statistic (hdiag) takes: the run's curvature choice, settled
/// by HessianEstimator.settle. How each layer's diagonal came out is its CurvatureMethod (the
/// Hutchinson estimator computes some layers exactly).
[<RequireQualifiedAccess>]
type HessianEstimator =
    /// The Gauss–Newton identity (PerSample.exactHessianDiagonal): exact, C backward passes per
    /// scoring batch, for models that are piecewise linear in each layer's weights
    /// (IModelView.IsPiecewiseLinear); other models are refused with a message naming Hutchinson.
    | Exact
    /// Hutchinson's estimator with the options' probes, probe scope, budget and exact layers (the
    /// second-order paper's estimator).
    | Hutchinson

/// What settles a run's Hessian-diagonal estimator (HessianEstimator.settle).
type CurvatureRequest =
    {
        /// The curvature setting: "auto", "exact" or "hutchinson" (--curvature).
        Setting: string
        /// Whether the criterion reads the Hessian diagonal (a learned criterion does).
        ReadsHessianDiagonal: bool
        /// Whether the criterion is learned (AutoS), whose features were fitted with Hutchinson's hdiag.
        Learned: bool
        /// The model's name, for messages.
        Model: string
        /// Whether the model is piecewise linear in each layer's weights; None for a model Pai
        /// does not know (refused elsewhere, naming the valid ones).
        PiecewiseLinear: bool option
        /// The options configuring Hutchinson that were given (away from their defaults), as the
        /// command line writes them: --probes, --probe-scope, ….
        HutchinsonOptions: string list
        /// The exact method's classes per sample (--curvature-classes; 0: every class).
        Classes: int
    }

[<RequireQualifiedAccess>]
module HessianEstimator =
    /// The name runs and stored statistics record: "exact" or "hutchinson".
    let name (e: HessianEstimator) =
        match e with
        | HessianEstimator.Exact -> "exact"
        | HessianEstimator.Hutchinson -> "hutchinson"

    /// The curvature setting a choice is recorded as: "auto" where no Hessian diagonal is read
    /// (so that such runs keep their keys), else the estimator's name.
    let setting (e: HessianEstimator option) =
        e |> Option.map name |> Option.defaultValue "auto"

    /// The estimator of a settled curvature setting: exact for "exact", Hutchinson otherwise (a
    /// settled "auto" only remains where no Hessian diagonal is read).
    let ofSetting (setting: string) =
        if setting = "exact" then
            HessianEstimator.Exact
        else
            HessianEstimator.Hutchinson

    /// The one curvature decision: None where the criterion reads no Hessian diagonal, else the
    /// estimator. Auto is exact where the model is piecewise linear and no Hutchinson option is
    /// given; a learned criterion keeps Hutchinson, whose hdiag its features were fitted with.
    /// Exact with Hutchinson options or on a model it does not fit, and classes per sample
    /// without the exact method, are an error naming the fix.
    let settle (r: CurvatureRequest) : Result<HessianEstimator option, string> =
        let piecewiseLinear = r.PiecewiseLinear = Some true
        let hutchinsonGiven = not r.HutchinsonOptions.IsEmpty

        let classesUnused () =
            let why, fix =
                if piecewiseLinear then
                    "it estimates hdiag with Hutchinson", " or the Hutchinson options"
                else
                    $"%s{r.Model} is not piecewise linear", ""

            Error
                $"--curvature-classes configures the exact Hessian diagonal, which this run does not use (%s{why}): drop --curvature-classes%s{fix}"

        if not r.ReadsHessianDiagonal then
            Ok None
        else
            match r.Setting with
            | "exact" when r.PiecewiseLinear = Some false ->
                Error
                    $"--curvature exact: %s{r.Model} is not piecewise linear in each layer's weights (attention, GELU or LayerNorm), so the Gauss–Newton identity does not give its Hessian diagonal; use --curvature hutchinson (block-local probes: --probe-scope layer)"
            | "exact" when hutchinsonGiven ->
                Error
                    $"""%s{String.Join(", ", r.HutchinsonOptions)} configure Hutchinson's estimator, which --curvature exact does not use: drop them, or use --curvature hutchinson"""
            | "exact" -> Ok(Some HessianEstimator.Exact)
            | "hutchinson" when r.Classes > 0 -> classesUnused ()
            | "hutchinson" -> Ok(Some HessianEstimator.Hutchinson)
            | "auto" when r.Classes > 0 && (not piecewiseLinear || hutchinsonGiven || r.Learned) -> classesUnused ()
            | "auto" when r.Learned -> Ok(Some HessianEstimator.Hutchinson)
            | "auto" when piecewiseLinear && not hutchinsonGiven -> Ok(Some HessianEstimator.Exact)
            | "auto" -> Ok(Some HessianEstimator.Hutchinson)
            | other -> Error $"--curvature: unknown value '%s{other}'; valid: auto, exact, hutchinson"

/// How the Hessian-diagonal statistic is computed (its temperature is part of the statistic).
/// Every field but Estimator configures Hutchinson and is unused by the exact method.
type CurvatureOptions =
    {
        /// Exact (Gauss–Newton identity) or Hutchinson.
        Estimator: HessianEstimator
        /// Hutchinson probes per scoring batch.
        Probes: int
        /// Which Hessian blocks a probe covers.
        ProbeScope: ProbeScope
        /// Hutchinson HVPs over all scoring batches (0: none, Probes per batch is used). Fixed
        /// mode gives every block floor(B / (batches · blocks)) probes, so full probing gets L
        /// times the probes of per-layer probing at equal cost; adaptive mode stops at B.
        HvpBudget: int
        /// Adaptive Hutchinson (0: off): probe in chunks until every probed layer's median
        /// relative SE is at most this, or HvpBudget is spent.
        AdaptiveTarget: float
        /// The classifier's diagonal from its closed form p(1−p)·h²/T² instead of probes.
        ExactClassifier: bool
        /// Layers with at most this many weights get their exact diagonal from unit-vector HVPs
        /// (0: none).
        ExactLayerSize: int
        /// The exact method's classes per sample: 0 takes every class (exact); K > 0 draws K at
        /// random per sample, scaled to stay unbiased (PerSample.sampledClassesHessianDiagonal: K
        /// backward passes per batch instead of C − 1, for CIFAR-100 or TinyImageNet).
        /// Unused by Hutchinson.
        Classes: int
    }

    /// Hutchinson with 10 probes per scoring batch over the whole network, as the second-order
    /// paper (the host's runs choose Exact instead where the model allows it).
    static member Default =
        {
            Estimator = HessianEstimator.Hutchinson
            Probes = 10
            ProbeScope = ProbeScope.Full
            HvpBudget = 0
            AdaptiveTarget = 0.0
            ExactClassifier = false
            ExactLayerSize = 0
            Classes = 0
        }

/// The temperatures the built-in criteria's formulas take (logits / T). User formulas write
/// their temperatures into the statistics' names instead, e.g. grad(T=200).
type Temperatures =
    {
        /// GraSP's (the original GraSP uses 200).
        Grasp: float
        /// The Hutchinson family's, for both g and Ĥ in hts (the second-order paper's code uses 200).
        Hutchinson: float
    }

    static member Default = { Grasp = 200.0; Hutchinson = 200.0 }

/// Everything a criterion may read. Criteria are pure functions of it (the model's weights are
/// read, never changed; its train/eval mode is restored).
type ScoringContext =
    {
        Model: IModelView
        /// Scoring batches (the per-class subset), already on the model's device.
        Batches: Batch list
        /// Shape of one input [C; H; W] (data-free criteria such as SynFlow use it).
        InputShape: int64 list
        /// Seed for random criteria and probes.
        Seed: uint64
        Curvature: CurvatureOptions
        /// The current mask in iterative pruning (pruned weights are already zero in the model).
        Mask: Mask option
    }

/// The full specification of one pruning run.
type PruneSpec =
    {
        /// Fraction of prunable weights removed, in [0, 1).
        Sparsity: float
        Ranking: Ranking
        /// Scoring/pruning rounds (1 = one shot; SynFlow's default is 100).
        Rounds: int
        Schedule: Schedule
        /// BN warm-up batches before scoring (0 = off).
        WarmupBatches: int
        Curvature: CurvatureOptions
        /// Keep at least one weight in every layer (off by default: collapse is reported instead).
        KeepOnePerLayer: bool
        Seed: uint64
    }

    /// One-shot global pruning to 90% sparsity, no BN warm-up, the default curvature options,
    /// seed 0: change what differs with `{ PruneSpec.Default with … }`.
    static member Default =
        {
            Sparsity = 0.9
            Ranking = Ranking.Global
            Rounds = 1
            Schedule = Schedule.Exponential
            WarmupBatches = 0
            Curvature = CurvatureOptions.Default
            KeepOnePerLayer = false
            Seed = 0UL
        }

/// Kept and total weights of one layer.
type LayerDensity =
    {
        Name: string
        Kept: int64
        Total: int64
    }

    member this.Density =
        if this.Total = 0L then
            0.0
        else
            float this.Kept / float this.Total

/// What a pruning run did.
type PruneReport =
    {
        Criterion: string
        Layers: LayerDensity list
        /// Layers with no weight left: the network is disconnected there.
        Collapsed: string list
        /// Seconds per phase: "warmup", "scoring", "selection".
        Seconds: (string * float) list
        Rounds: int
        /// The curvature estimators' cost and achieved error in the last round (empty when the
        /// criterion has none).
        Curvature: CurvatureDiagnostics list
    }

    member this.Kept = this.Layers |> List.sumBy (fun l -> l.Kept)
    member this.Total = this.Layers |> List.sumBy (fun l -> l.Total)
    member this.Density = float this.Kept / float this.Total

module Scores =
    /// Scores without diagnostics.
    let ofLayers (layers: (string * Tensor) list) : Scores = { Layers = layers; Diagnostics = [] }

    /// Frees the score tensors.
    let dispose (s: Scores) =
        for _, t in s.Layers do
            t.Dispose()

module Mask =
    /// Frees the mask tensors.
    let dispose (m: Mask) =
        for _, t in m.Layers do
            t.Dispose()

    /// Kept/total per layer.
    let densities (m: Mask) =
        m.Layers
        |> List.map (fun (name, keep) ->
            {
                Name = name
                Kept = keep.CountNonZero()
                Total = keep.NumEl
            })

    /// A mask keeping everything, shaped like the model's prunable weights.
    let full (model: IModelView) =
        {
            Layers =
                [
                    for kv in model.Prunable ->
                        kv.Key, Libtorch.Ones(kv.Value.Shape, DType.Bool, kv.Value.Device).DetachFromScope()
                ]
        }

/// Progress of long scoring work (a Fisher loop over samples, Hutchinson over batches and
/// probes), reported to a sink the host installs for the current thread. A side channel on
/// purpose: progress is not part of any result, and criteria stay pure.
[<AbstractClass; Sealed>]
type ScoringProgress =
    [<ThreadStatic; DefaultValue>]
    static val mutable private sink: Action<string, int, int>

    /// Sends (what, done, total) to the installed sink, if any.
    static member Report(what: string, finished: int, total: int) =
        let s = ScoringProgress.sink

        if not (obj.ReferenceEquals(s, null)) then
            s.Invoke(what, finished, total)

    /// Installs a sink for the current thread until the returned value is disposed.
    static member Install(sink: Action<string, int, int>) : IDisposable =
        let previous = ScoringProgress.sink
        ScoringProgress.sink <- sink

        { new IDisposable with
            member _.Dispose() = ScoringProgress.sink <- previous
        }
