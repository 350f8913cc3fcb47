/// Statistics: named per-weight quantities computed from the model and the scoring data. A
/// criterion (Pai.Criteria.fs) is an expression over them; a scoring context computes each
/// statistic once (StatisticCache), however many criteria read it. Each statistic is one
/// StatisticDefinition (Statistics.builtIns); the parser, help, caching and computing read it.
/// See docs/architecture.md §1 and §8.
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

/// A number a statistic takes, written into its name (grad(T=200)). Values are positive numbers;
/// the default is left out of the canonical name (grad is grad(T=1)).
type StatisticParameter =
    {
        /// As formulas write it, e.g. "T" (read ignoring case).
        Name: string
        /// What it is, for messages: "temperature".
        Meaning: string
        Default: float
        /// The value messages show as an example (grad(T=200)).
        Example: float
    }

/// A statistic at given parameter values, e.g. grad at T = 200. Parameters are part of the name
/// (grad(T=200) is not grad), so a formula cannot silently mix two losses. Equality is by name.
[<CustomEquality; NoComparison>]
type Statistic =
    {
        Definition: StatisticDefinition
        /// One value per parameter of the definition, in its order.
        Arguments: float list
    }

    /// The canonical name, e.g. "theta", "grad", "grad(T=200)", "hdiag(T=200)": the definition's
    /// name, then the parameters that differ from their defaults.
    member this.Name =
        let given =
            List.zip this.Definition.Parameters this.Arguments
            |> List.filter (fun (p, v) -> v <> p.Default)
            |> List.map (fun (p, v) -> $"""%s{p.Name}=%s{v.ToString("R", CultureInfo.InvariantCulture)}""")

        match given with
        | [] -> this.Definition.Name
        | _ -> $"""%s{this.Definition.Name}(%s{String.Join(",", given)})"""

    /// The value of the named parameter (e.g. "T").
    member this.Argument(name: string) : float =
        match List.tryFindIndex (fun (p: StatisticParameter) -> p.Name = name) this.Definition.Parameters with
        | Some i -> this.Arguments.[i]
        | None -> invalidArg "name" $"the statistic '%s{this.Definition.Name}' has no parameter '%s{name}'"

    override this.Equals(other) =
        match other with
        | :? Statistic as s -> s.Name = this.Name
        | _ -> false

    override this.GetHashCode() = this.Name.GetHashCode()
    override this.ToString() = this.Name

/// Everything Pai knows of one statistic, in one value: the parser accepts it by name, `pai list
/// criteria` describes it, a results store caches it by name, and a scoring context computes it.
and [<NoEquality; NoComparison>] StatisticDefinition =
    {
        /// The name formulas write (lower case letters, digits and _), e.g. "grad".
        Name: string
        /// The parameters it takes (e.g. the temperature T), in the order its name lists them.
        Parameters: StatisticParameter list
        /// What it is, for help and `pai list criteria`.
        Description: string
        /// Whether computing it reads the scoring data itself (so BN warm-up matters); the
        /// statistics it reads add theirs.
        NeedsData: bool
        /// Whether a results store keeps it across runs (θ and noise cost nothing to recompute).
        /// A stored statistic is keyed by its name and the run's data and scoring settings.
        WorthCaching: bool
        /// The other statistics its computation reads through `get`.
        Reads: Statistic -> Statistic list
        /// Computes it on the context; `get` supplies other statistics (from the same cache). The
        /// tensors belong to the enclosing dispose scope; one per prunable layer.
        Compute: (Statistic -> StatisticValue) -> ScoringContext -> Statistic -> StatisticValue
    }

/// A statistic computed by a learned predictor, identified by its name: Compute receives the
/// context's statistics (so features such as g are shared with the rest of a formula) and returns
/// one tensor per layer. Statistic.Learned makes it a statistic (read data, never stored).
[<NoEquality; NoComparison>]
type LearnedStatistic =
    {
        Name: string
        Compute: (Statistic -> StatisticValue) -> ScoringContext -> Tensor list
    }

[<RequireQualifiedAccess>]
module Statistic =
    /// The definition's statistic at the given parameter values (by name, e.g. ["T", 200.0]); the
    /// others take their defaults.
    let at (d: StatisticDefinition) (values: (string * float) list) : Statistic =
        for name, _ in values do
            if not (d.Parameters |> List.exists (fun p -> p.Name = name)) then
                invalidArg "values" $"the statistic '%s{d.Name}' has no parameter '%s{name}'"

        {
            Definition = d
            Arguments =
                [
                    for p in d.Parameters ->
                        values
                        |> List.tryFind (fun (n, _) -> n = p.Name)
                        |> Option.map snd
                        |> Option.defaultValue p.Default
                ]
        }

    /// The definition's statistic at its parameters' defaults.
    let ofDefinition (d: StatisticDefinition) = at d []

    /// The statistic and everything it reads, directly or through other statistics, each once.
    let closure (s: Statistic) : Statistic list =
        let rec go (seen: Statistic list) (pending: Statistic list) =
            match pending with
            | [] -> List.rev seen
            | s :: rest when List.contains s seen -> go seen rest
            | s :: rest -> go (s :: seen) (s.Definition.Reads s @ rest)

        go [] [ s ]

    /// Whether computing it reads the scoring data (so BN warm-up matters).
    let needsData (s: Statistic) =
        closure s |> List.exists (fun r -> r.Definition.NeedsData)

    /// Whether a stored copy is worth keeping across runs.
    let worthCaching (s: Statistic) = s.Definition.WorthCaching

    /// How formulas write it with its parameters at their defaults, e.g. "grad(T=1)".
    let usage (d: StatisticDefinition) =
        match d.Parameters with
        | [] -> d.Name
        | ps ->
            let given =
                ps
                |> List.map (fun p -> $"""%s{p.Name}=%s{p.Default.ToString("R", CultureInfo.InvariantCulture)}""")

            $"""%s{d.Name}(%s{String.Join(",", given)})"""

    /// Computes a statistic on the context; `get` supplies the statistics it reads. The tensors
    /// belong to the enclosing dispose scope.
    let compute (get: Statistic -> StatisticValue) (ctx: ScoringContext) (s: Statistic) : StatisticValue =
        s.Definition.Compute get ctx s

/// The statistics Pai defines: one StatisticDefinition each (docs/architecture.md §8).
module Statistics =
    /// The temperature T of a loss L(f/T) (logits divided by T).
    let temperature =
        {
            Name = "T"
            Meaning = "temperature"
            Default = 1.0
            Example = 200.0
        }

    let private plain layers = { Layers = layers; Diagnostics = [] }

    // Means over samples that do not depend on the batching read merged batches (batch-1
    // semantics at batched cost).
    let private merged (ctx: ScoringContext) = Estimators.mergeBatches ctx.Batches

    /// A definition that reads data, is worth caching, takes no parameter and reads no other
    /// statistic; change what differs with `{ define … with … }`.
    let define name description (compute: ScoringContext -> Statistic -> StatisticValue) =
        {
            Name = name
            Parameters = []
            Description = description
            NeedsData = true
            WorthCaching = true
            Reads = fun _ -> []
            Compute = fun _ ctx s -> compute ctx s
        }

    // A definition taking the temperature T.
    let private atTemperature name description (compute: ScoringContext -> float -> Tensor list) =
        { define name description (fun ctx s -> plain (compute ctx (s.Argument temperature.Name))) with
            Parameters = [ temperature ]
        }

    /// θ, the weights.
    let theta =
        { define "theta" "θ, the weights" (fun ctx _ ->
              plain [ for kv in ctx.Model.Prunable -> kv.Value.Detach().Clone() ]) with
            NeedsData = false
            WorthCaching = false
        }

    /// g = ∇θ L(f/T), the gradient of the mean scoring loss at temperature T.
    let grad =
        atTemperature "grad" "g = ∇θ L(f/T), gradient of the mean scoring loss" (fun ctx t ->
            Estimators.meanGradient ctx.Model t (merged ctx))

    /// H·g (GraSP's): g detached and H both of L(f/T).
    let hg =
        atTemperature "hg" "H·g at temperature T (GraSP's)" (fun ctx t ->
            Estimators.hessianGradient ctx.Model t (merged ctx))

    /// The empirical Fisher diagonal, mean over scoring samples of gᵢ² (T = 1).
    let fisher =
        define "fisher" "empirical Fisher diagonal, mean of per-sample gᵢ²" (fun ctx _ ->
            plain (PerSample.fisherDiagonal ctx.Model (merged ctx)))

    /// The true-Fisher (Gauss–Newton) diagonal: mean of gᵢ² with labels drawn from the model's
    /// own softmax (seeded).
    let trueFisher =
        define "true_fisher" "true-Fisher (Gauss–Newton) diagonal, labels drawn from the model" (fun ctx _ ->
            plain (PerSample.trueFisherDiagonal ctx.Model ctx.Seed (merged ctx)))

    /// The Hessian diagonal of L(f/T); its estimator (exact or Hutchinson) and settings come from
    /// the context's CurvatureOptions and are recorded in the diagnostics. The name does not say
    /// which: a store of statistics keys it by the scoring settings, the estimator among them.
    let hdiag =
        { define "hdiag" "Hessian diagonal of L(f/T): exact or Hutchinson (--curvature; --probes, …)" (fun ctx s ->
              let d, diagnostics =
                  Hutchinson.curvature ctx.Model (s.Argument temperature.Name) ctx.Curvature ctx.Seed ctx.Batches

              {
                  Layers = d
                  Diagnostics = [ diagnostics ]
              }) with
            Parameters = [ temperature ]
        }

    /// SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ|, R = Σ f(1) with |θ| in float64.
    let synflow =
        { define "synflow" "SynFlow's synaptic saliency |θ ⊙ ∂R/∂θ|" (fun ctx _ ->
              plain (Estimators.synapticSaliency ctx.Model ctx.InputShape ctx.Mask)) with
            NeedsData = false
        }

    /// Seeded uniform noise in [0, 1).
    let random =
        { define "random" "seeded uniform noise" (fun ctx _ ->
              use gen = new Generator(ctx.Seed)

              plain
                  [
                      for kv in ctx.Model.Prunable ->
                          Libtorch.Rand(kv.Value.Shape, gen, DType.Float32, kv.Value.Device)
                  ]) with
            NeedsData = false
            WorthCaching = false
        }

    /// The statistics formulas may read, in the order help lists them.
    let builtIns: StatisticDefinition list =
        [ theta; grad; hg; fisher; trueFisher; hdiag; synflow; random ]

    /// How formulas write each statistic and what it is (for help and `pai list criteria`).
    let describe (definitions: StatisticDefinition list) : (string * string) list =
        definitions |> List.map (fun d -> Statistic.usage d, d.Description)

    /// The built-in statistics described.
    let described = describe builtIns

    /// Refuses a list of definitions the parser could not tell apart or read: names that are not
    /// lower-case identifiers, or that appear twice.
    let check (definitions: StatisticDefinition list) =
        for d in definitions do
            let isIdentifier =
                d.Name.Length > 0
                && (Char.IsLetter d.Name.[0] || d.Name.[0] = '_')
                && d.Name |> Seq.forall (fun c -> Char.IsLetterOrDigit c || c = '_')

            if not isIdentifier || d.Name <> d.Name.ToLowerInvariant() then
                invalidArg "definitions" $"the statistic name '%s{d.Name}' is not a lower-case identifier"

        match
            definitions
            |> List.countBy (fun d -> d.Name)
            |> List.tryFind (fun (_, n) -> n > 1)
        with
        | Some(name, _) -> invalidArg "definitions" $"the statistic '%s{name}' is defined twice"
        | None -> ()

/// The built-in statistics as values (F# formulas and C# read them so).
type Statistic with
    /// θ.
    static member Theta = Statistic.ofDefinition Statistics.theta

    /// g at temperature T.
    static member Grad(temperature: float) =
        Statistic.at Statistics.grad [ Statistics.temperature.Name, temperature ]

    /// H·g at temperature T.
    static member HessianGradient(temperature: float) =
        Statistic.at Statistics.hg [ Statistics.temperature.Name, temperature ]

    /// The empirical Fisher diagonal.
    static member Fisher = Statistic.ofDefinition Statistics.fisher
    /// The true-Fisher diagonal.
    static member TrueFisher = Statistic.ofDefinition Statistics.trueFisher

    /// The Hessian diagonal at temperature T.
    static member HessianDiagonal(temperature: float) =
        Statistic.at Statistics.hdiag [ Statistics.temperature.Name, temperature ]

    /// SynFlow's synaptic saliency.
    static member SynapticSaliency = Statistic.ofDefinition Statistics.synflow
    /// Seeded uniform noise.
    static member Random = Statistic.ofDefinition Statistics.random

    /// A learned predictor's output as a statistic: reads data, never stored (a predictor is
    /// keyed by its file, not by the scoring context).
    static member Learned(l: LearnedStatistic) =
        Statistic.ofDefinition
            {
                Name = l.Name
                Parameters = []
                Description = "a learned predictor's output"
                NeedsData = true
                WorthCaching = false
                Reads = fun _ -> []
                Compute =
                    fun get ctx _ ->
                        {
                            Layers = l.Compute get ctx
                            Diagnostics = []
                        }
            }

    /// Whether this is the Hessian diagonal (at any temperature), whose estimator --curvature picks.
    member s.IsHessianDiagonal = s.Definition.Name = Statistics.hdiag.Name

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
