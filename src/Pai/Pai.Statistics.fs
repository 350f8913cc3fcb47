/// Statistics: named per-weight quantities computed from the model and the scoring data. A
/// criterion (Pai.Criteria.fs) is an expression over them; a scoring context computes each
/// statistic once (StatisticCache), however many criteria read it. See docs/architecture.md §1.
namespace Pai

open System
open System.Collections.Generic
open System.Globalization
open Pai.Torch

/// One statistic's per-layer tensors (in the model's prunable order) and the diagnostics of the
/// estimator that produced them (empty unless it is a curvature estimate).
type StatisticValue =
    {
        Layers: Tensor list
        Diagnostics: CurvatureDiagnostics list
    }

/// A named per-weight quantity. Parameters are part of the name (grad(T=200) is not grad), so a
/// formula cannot silently mix two losses. Equality is by name.
[<RequireQualifiedAccess; CustomEquality; NoComparison>]
type Statistic =
    /// θ, the weights.
    | Theta
    /// g = ∇θ L(f/T), the gradient of the mean scoring loss at temperature T.
    | Grad of temperature: float
    /// H·g (GraSP's): g detached and H both of L(f/T).
    | HessianGradient of temperature: float
    /// The empirical Fisher diagonal, mean over scoring samples of gᵢ² (T = 1).
    | Fisher
    /// The true-Fisher (Gauss–Newton) diagonal: mean of gᵢ² with labels drawn from the model's
    /// own softmax (seeded).
    | TrueFisher
    /// The Hessian diagonal of L(f/T); its estimator (exact or Hutchinson) and settings come from
    /// the context's CurvatureOptions and are recorded in the diagnostics. The name does not say
    /// which: a store of statistics keys it by the scoring settings, the estimator among them.
    | HessianDiagonal of temperature: float
    /// SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ|, R = Σ f(1) with |θ| in float64.
    | SynapticSaliency
    /// Seeded uniform noise in [0, 1).
    | Random
    /// A learned predictor's output (AutoS), identified by its name.
    | Learned of LearnedStatistic

    /// The canonical name, e.g. "theta", "grad", "grad(T=200)", "hdiag(T=200)".
    member this.Name =
        let withT (name: string) (t: float) =
            if t = 1.0 then
                name
            else
                $"""%s{name}(T=%s{t.ToString("R", CultureInfo.InvariantCulture)})"""

        match this with
        | Theta -> "theta"
        | Grad t -> withT "grad" t
        | HessianGradient t -> withT "hg" t
        | Fisher -> "fisher"
        | TrueFisher -> "true_fisher"
        | HessianDiagonal t -> withT "hdiag" t
        | SynapticSaliency -> "synflow"
        | Random -> "random"
        | Learned l -> l.Name

    override this.Equals(other) =
        match other with
        | :? Statistic as s -> s.Name = this.Name
        | _ -> false

    override this.GetHashCode() = this.Name.GetHashCode()
    override this.ToString() = this.Name

/// A statistic computed by a learned predictor. Compute receives the context's statistics (so
/// features such as g are shared with the rest of a formula) and returns one tensor per layer.
and [<NoEquality; NoComparison>] LearnedStatistic =
    {
        Name: string
        Compute: (Statistic -> StatisticValue) -> ScoringContext -> Tensor list
    }

[<RequireQualifiedAccess>]
module Statistic =
    /// Whether computing it reads the scoring data (so BN warm-up matters).
    let needsData (s: Statistic) =
        match s with
        | Statistic.Theta
        | Statistic.Random
        | Statistic.SynapticSaliency -> false
        | _ -> true

    /// Whether a stored copy is worth keeping across runs (θ and noise cost nothing; a learned
    /// predictor's output is keyed by its file, not by the scoring context).
    let worthCaching (s: Statistic) =
        match s with
        | Statistic.Theta
        | Statistic.Random
        | Statistic.Learned _ -> false
        | _ -> true

    /// The statistics the expression language knows, with what they are (for help and errors).
    let described: (string * string) list =
        [
            "theta", "θ, the weights"
            "grad(T=1)", "g = ∇θ L(f/T), gradient of the mean scoring loss"
            "hg(T=1)", "H·g at temperature T (GraSP's)"
            "fisher", "empirical Fisher diagonal, mean of per-sample gᵢ²"
            "true_fisher", "true-Fisher (Gauss–Newton) diagonal, labels drawn from the model"
            "hdiag(T=1)", "Hessian diagonal of L(f/T): exact or Hutchinson (--curvature; --probes, …)"
            "synflow", "SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ|"
            "random", "seeded uniform noise"
        ]

    /// Computes a statistic on the context; `get` supplies other statistics (learned ones use it).
    /// The tensors belong to the enclosing dispose scope.
    let compute (get: Statistic -> StatisticValue) (ctx: ScoringContext) (s: Statistic) : StatisticValue =
        let plain layers = { Layers = layers; Diagnostics = [] }

        // Means over samples that do not depend on the batching read merged batches (batch-1
        // semantics at batched cost); Hutchinson keeps the scoring batches its probes are drawn for.
        let merged () = Estimators.mergeBatches ctx.Batches

        match s with
        | Statistic.Theta -> plain [ for kv in ctx.Model.Prunable -> kv.Value.Detach().Clone() ]
        | Statistic.Grad t -> plain (Estimators.meanGradient ctx.Model t (merged ()))
        | Statistic.HessianGradient t -> plain (Estimators.hessianGradient ctx.Model t (merged ()))
        | Statistic.Fisher -> plain (PerSample.fisherDiagonal ctx.Model (merged ()))
        | Statistic.TrueFisher -> plain (PerSample.trueFisherDiagonal ctx.Model ctx.Seed (merged ()))
        | Statistic.HessianDiagonal t ->
            let batches =
                match ctx.Curvature.Estimator with
                | HessianEstimator.Exact -> merged ()
                | HessianEstimator.Hutchinson -> ctx.Batches

            let d, diagnostics = Hutchinson.curvature ctx.Model t ctx.Curvature ctx.Seed batches

            {
                Layers = d
                Diagnostics = [ diagnostics ]
            }
        | Statistic.SynapticSaliency -> plain (Estimators.synapticSaliency ctx.Model ctx.InputShape ctx.Mask)
        | Statistic.Random ->
            use gen = new Generator(ctx.Seed)

            plain
                [
                    for kv in ctx.Model.Prunable -> Libtorch.Rand(kv.Value.Shape, gen, DType.Float32, kv.Value.Device)
                ]
        | Statistic.Learned l -> plain (l.Compute get ctx)

/// The statistics of one scoring context, each computed at most once. Values given at creation
/// (e.g. read from a results store) are used instead of computing them; the cache owns every
/// tensor it holds and frees them when disposed, except those handed out by TakeComputed.
type StatisticCache(context: ScoringContext, known: seq<string * StatisticValue>) =
    let values = Dictionary<string, StatisticValue>()
    let computed = List<string>()

    do
        for name, v in known do
            values.[name] <- v

    let dispose (v: StatisticValue) =
        for t in v.Layers do
            t.Dispose()

    /// An empty cache for the context.
    new(context) = new StatisticCache(context, [])

    /// The context the statistics are computed on.
    member _.Context = context

    /// The statistic's value, computed on first use.
    member this.Get(s: Statistic) : StatisticValue =
        match values.TryGetValue s.Name with
        | true, v -> v
        | _ ->
            let v =
                use _scope = new DisposeScope()
                let v = Statistic.compute this.Get context s

                if v.Layers.Length <> context.Model.Prunable.Count then
                    invalidOp
                        $"the statistic '%s{s.Name}' returned %d{v.Layers.Length} tensors for %d{context.Model.Prunable.Count} prunable layers"

                { v with
                    Layers = v.Layers |> List.map (fun t -> t.DetachFromScope())
                }

            values.[s.Name] <- v
            computed.Add s.Name
            v

    /// Names of the statistics computed here (not given), in the order they were computed; each
    /// appears once.
    member _.Computed: string list = List.ofSeq computed

    /// Hands the computed values of the given statistics to the caller (who then owns their
    /// tensors), e.g. to store them; the cache no longer frees them.
    member _.TakeComputed(statistics: Statistic list) : (string * StatisticValue) list =
        [
            for s in statistics do
                if computed.Contains s.Name && values.ContainsKey s.Name then
                    let v = values.[s.Name]
                    values.Remove s.Name |> ignore
                    yield s.Name, v
        ]

    interface IDisposable with
        member _.Dispose() =
            for v in values.Values do
                dispose v

            values.Clear()
