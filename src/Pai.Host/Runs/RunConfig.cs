using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Pai.Host.Runs;

/// <summary>Which part of a run a setting shapes; a setting may shape several.</summary>
[Flags]
public enum SettingGroup
{
    /// <summary>Data and model: what is pruned and trained.</summary>
    Data = 1,
    /// <summary>Scoring: what the statistics are computed from (warm-up, scoring subset, estimators).</summary>
    Scoring = 2,
    /// <summary>Pruning: criterion, sparsity and selection.</summary>
    Pruning = 4,
    /// <summary>Training of the (sparse) network.</summary>
    Training = 8,
    /// <summary>Where and how the run computes (the device): recorded with the run, not part of its key.</summary>
    Execution = 16,
}

/// <summary>
/// Declares a run setting once: its group, its command-line option and help, and its valid range.
/// The CLI options, validation, the run key and the statistic-cache key are all derived from these
/// declarations (see <see cref="RunSettings"/>).
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SettingAttribute(SettingGroup group, string option, string description) : Attribute
{
    /// <summary>The groups the setting belongs to.</summary>
    public SettingGroup Group { get; } = group;
    /// <summary>The long option, e.g. "--lr".</summary>
    public string Option { get; } = option;
    /// <summary>Help text (the default is appended by the CLI).</summary>
    public string Description { get; } = description;
    /// <summary>A short alias, e.g. "-m".</summary>
    public string? Alias { get; init; }
    /// <summary>Smallest valid value (numbers).</summary>
    public double Min { get; init; } = double.NegativeInfinity;
    /// <summary>Largest valid value (numbers).</summary>
    public double Max { get; init; } = double.PositiveInfinity;
    /// <summary>Whether <see cref="Min"/> itself is invalid.</summary>
    public bool MinExclusive { get; init; }
    /// <summary>Whether <see cref="Max"/> itself is invalid.</summary>
    public bool MaxExclusive { get; init; }
    /// <summary>The only valid values (strings).</summary>
    public string[]? Choices { get; init; }
    /// <summary>An example of a valid value, for error messages.</summary>
    public string? Example { get; init; }
    /// <summary>For an optional number: 0 on the command line means "none" (null).</summary>
    public bool ZeroMeansNone { get; init; }
    /// <summary>
    /// The value every run had before the setting existed (a string setting whose default is
    /// resolved by RunPlan.Canonical): left out of the run key like the default, so those runs
    /// keep their keys, and what a stored configuration without the field reads back as.
    /// </summary>
    public string? Legacy { get; init; }
    /// <summary>
    /// Configures Hutchinson's estimator of the Hessian diagonal alone (the exact method ignores it):
    /// giving it settles --curvature auto on Hutchinson.
    /// </summary>
    public bool HutchinsonOnly { get; init; }
}

/// <summary>
/// One experiment, the one typed description of a run: which model and data, how to score and
/// prune, how to train. Each setting declares its group, option and range
/// (<see cref="SettingAttribute"/>), so the CLI, validation and the keys derive from one place.
/// Its identity is <see cref="Key"/>: a hash of the canonical JSON of every field that differs
/// from its default, so adding a new option (with a default) never changes the keys of existing
/// runs. Execution details that do not change results (threads, results directory) are not part of it.
/// </summary>
public sealed record RunConfig
{
    /// <summary>Model name (see ModelZoo.Names).</summary>
    [Setting(SettingGroup.Data, "--model", "model (see `pai list models`)", Alias = "-m")]
    public string Model { get; init; } = "lenet5";
    /// <summary>Data set name (see DatasetRegistry.Names).</summary>
    [Setting(SettingGroup.Data, "--dataset", "data set (see `pai list datasets`)", Alias = "-d")]
    public string Dataset { get; init; } = "fashion-mnist";
    /// <summary>Directory of the data set (null: its default location).</summary>
    [Setting(SettingGroup.Data, "--data", "directory of the data set files (default: its usual location)")]
    public string? DataDirectory { get; init; }
    /// <summary>Criterion: a built-in name, "autos", a formula over statistics, or "dense" for no pruning.</summary>
    [Setting(SettingGroup.Pruning, "--criterion", "pruning criterion: a name from `pai list criteria` or a formula over statistics such as \"abs(theta * grad)\"", Alias = "-c")]
    public string Criterion { get; init; } = "dense";
    /// <summary>Fraction of prunable weights removed, in [0, 1).</summary>
    [Setting(SettingGroup.Pruning, "--sparsity", "fraction of prunable weights removed", Alias = "-s", Min = 0, Max = 1, MaxExclusive = true, Example = "0.9")]
    public double Sparsity { get; init; }
    /// <summary>"global" or "layer".</summary>
    [Setting(SettingGroup.Pruning, "--scope", "rank weights globally or per layer", Choices = ["global", "layer"])]
    public string Scope { get; init; } = "global";
    /// <summary>Pruning rounds (null: the criterion's default, 100 for SynFlow).</summary>
    [Setting(SettingGroup.Pruning, "--rounds", "pruning rounds (default: the criterion's, 100 for synflow)", Min = 1)]
    public int? Rounds { get; init; }
    /// <summary>
    /// BN warm-up batches before scoring (0: off). On by default; it only applies to models with
    /// batch norm and criteria that read data.
    /// </summary>
    [Setting(SettingGroup.Scoring, "--warmup", "BN warm-up batches before scoring (0 = off; skipped for models without batch norm)", Min = 0)]
    public int WarmupBatches { get; init; } = 100;
    /// <summary>Scoring samples per class.</summary>
    [Setting(SettingGroup.Scoring, "--samples-per-class", "scoring samples per class", Min = 1)]
    public int SamplesPerClass { get; init; } = 10;
    /// <summary>Scoring batch size.</summary>
    [Setting(SettingGroup.Scoring, "--scoring-batch", "scoring batch size (Hutchinson draws its probes per batch)", Min = 1)]
    public int ScoringBatchSize { get; init; } = 1;
    /// <summary>
    /// How the Hessian diagonal (hdiag: hutch_diag, hutch_obd, hts) is computed: "exact" (the
    /// Gauss–Newton identity, for piecewise-linear models), "hutchinson" (the options below), or
    /// "auto", which <see cref="RunPlan.Canonical"/> settles: exact where the model is piecewise
    /// linear and no Hutchinson option is given, Hutchinson otherwise. Runs from before this
    /// setting were Hutchinson's, and keep their keys.
    /// </summary>
    [Setting(SettingGroup.Scoring, "--curvature", "Hessian diagonal (hdiag) of hutch_diag, hutch_obd, hts: exact (Gauss–Newton identity; piecewise-linear models: all but " +
        "vit-tiny), hutchinson (--probes, --probe-scope, …, the paper's estimator), or auto: exact where the model allows it and no Hutchinson option is given",
        Choices = ["auto", "exact", "hutchinson"], Legacy = "hutchinson")]
    public string Curvature { get; init; } = "auto";
    /// <summary>
    /// The exact Hessian diagonal over K classes per sample drawn at random (seeded) and scaled by
    /// C/K, so unbiased (0: every class, exact): K backward passes per scoring batch instead of
    /// C − 1, an approximation for many classes (CIFAR-100, TinyImageNet). Exact method only.
    /// </summary>
    [Setting(SettingGroup.Scoring, "--curvature-classes", "exact Hessian diagonal over K classes per sample drawn at random and scaled, unbiased (0 = every class): K backward " +
        "passes per scoring batch instead of C-1 for C classes, an approximation for many classes (its error: pai estimate --class-passes K)", Min = 0)]
    public int CurvatureClasses { get; init; }
    /// <summary>Hutchinson probes per scoring batch.</summary>
    [Setting(SettingGroup.Scoring, "--probes", "Hutchinson probes per scoring batch", Min = 2, HutchinsonOnly = true)]
    public int Probes { get; init; } = 10;
    /// <summary>Hutchinson probe scope: "full", "layer", or groups of layer indices such as "0+1,2,3".</summary>
    [Setting(SettingGroup.Scoring, "--probe-scope", "Hutchinson probe blocks: the whole network (full), one layer at a time (layer), or groups of layer indices such as " +
        "0+1,2,3", HutchinsonOnly = true)]
    public string ProbeScope { get; init; } = "full";
    /// <summary>
    /// Hutchinson HVPs over all scoring batches (null: <see cref="Probes"/> per batch). Fixed mode
    /// gives every probe block floor(budget / (batches × blocks)) probes; adaptive mode stops at it.
    /// </summary>
    [Setting(SettingGroup.Scoring, "--hvp-budget", "Hutchinson HVPs over all scoring batches, split evenly: each probe block gets budget / (batches × blocks) probes (default: " +
        "--probes per batch); the cap of --adaptive-target", Min = 1, HutchinsonOnly = true)]
    public int? HvpBudget { get; init; }
    /// <summary>Adaptive Hutchinson: probe until every layer's median relative SE is at most this (null: off; needs <see cref="HvpBudget"/>).</summary>
    [Setting(SettingGroup.Scoring, "--adaptive-target", "adaptive Hutchinson: probe in chunks until every layer's median relative SE is at most this (needs " +
        "--hvp-budget)", Min = 0, MinExclusive = true, Example = "0.5", HutchinsonOnly = true)]
    public double? AdaptiveTarget { get; init; }
    /// <summary>The Hessian diagonal takes the classifier's block from its closed form.</summary>
    [Setting(SettingGroup.Scoring, "--exact-last-layer", "Hessian diagonal: the classifier's in closed form, p(1−p)·h²/T² (pair it with --probe-scope layer: ranked globally " +
        "against full-probing noise, the exact classifier loses its weights, see docs/curvature-study.md)", HutchinsonOnly = true)]
    public bool ExactLastLayer { get; init; }
    /// <summary>Layers with at most this many weights get their exact Hessian diagonal from unit-vector HVPs (0: none).</summary>
    [Setting(SettingGroup.Scoring, "--exact-layer-size", "Hessian diagonal: layers with at most this many weights get theirs exactly from unit-vector HVPs (0 = " +
        "off)", Min = 0, HutchinsonOnly = true)]
    public int ExactLayerSize { get; init; }
    /// <summary>Temperature of the Hutchinson family's formulas (hdiag and, in hts, grad).</summary>
    [Setting(SettingGroup.Pruning, "--hutch-temperature", "temperature T of the built-in Hessian-diagonal criteria (hutch_diag, hutch_obd, hts: both of hts's " +
        "terms)", Min = 0, MinExclusive = true)]
    public double HutchinsonTemperature { get; init; } = 200;
    /// <summary>Temperature of GraSP's formula.</summary>
    [Setting(SettingGroup.Pruning, "--grasp-temperature", "temperature T of GraSP's H·g", Min = 0, MinExclusive = true)]
    public double GraspTemperature { get; init; } = 200;
    /// <summary>Keep at least one weight per layer.</summary>
    [Setting(SettingGroup.Pruning, "--keep-one-per-layer", "never prune a layer completely (prevents layer collapse)")]
    public bool KeepOnePerLayer { get; init; }
    /// <summary>Keep the classifier dense.</summary>
    [Setting(SettingGroup.Data, "--dense-classifier", "keep the last layer dense (not prunable)")]
    public bool DenseClassifier { get; init; }
    /// <summary>AutoS predictor file (criterion "autos").</summary>
    [Setting(SettingGroup.Pruning, "--predictor", "AutoS predictor file (criterion autos)")]
    public string? Predictor { get; init; }
    /// <summary>
    /// Content hash of <see cref="Predictor"/> (see <see cref="RunPlan.Canonical"/>), so that a changed
    /// predictor file is a different run. Null unless the criterion is "autos", so other keys are unchanged.
    /// </summary>
    public string? PredictorHash { get; init; }
    /// <summary>Seed of initialization, scoring subset, probes and data order.</summary>
    [Setting(SettingGroup.Data, "--seed", "seed of initialization, scoring subset, probes and data order", Min = 0)]
    public ulong Seed { get; init; }
    /// <summary>Training epochs.</summary>
    [Setting(SettingGroup.Training, "--epochs", "training epochs", Alias = "-e", Min = 1)]
    public int Epochs { get; init; } = 10;
    /// <summary>Training batch size (also the BN warm-up's).</summary>
    [Setting(SettingGroup.Training | SettingGroup.Scoring, "--batch-size", "training batch size (also the BN warm-up's)", Min = 1)]
    public int BatchSize { get; init; } = 128;
    /// <summary>"sgd" or "adamw".</summary>
    [Setting(SettingGroup.Training, "--optimizer", "optimizer", Choices = ["sgd", "adamw"])]
    public string Optimizer { get; init; } = "sgd";
    /// <summary>Base learning rate.</summary>
    [Setting(SettingGroup.Training, "--lr", "base learning rate", Min = 0, MinExclusive = true, Max = 10)]
    public double LearningRate { get; init; } = 0.1;
    /// <summary>Batches over which the learning rate rises linearly to its base value (0: none).</summary>
    [Setting(SettingGroup.Training, "--lr-warmup", "batches over which the learning rate rises linearly from 0 to --lr (0: no warm-up)", Min = 0, Max = 1_000_000)]
    public int LrWarmup { get; init; }
    /// <summary>SGD momentum.</summary>
    [Setting(SettingGroup.Training, "--momentum", "SGD momentum", Min = 0, Max = 1, MaxExclusive = true)]
    public double Momentum { get; init; } = 0.9;
    /// <summary>Nesterov momentum.</summary>
    [Setting(SettingGroup.Training, "--nesterov", "Nesterov momentum")]
    public bool Nesterov { get; init; }
    /// <summary>Weight decay.</summary>
    [Setting(SettingGroup.Training, "--weight-decay", "weight decay", Min = 0, Max = 1)]
    public double WeightDecay { get; init; } = 5e-4;
    /// <summary>"cosine", "multistep" or "constant".</summary>
    [Setting(SettingGroup.Training, "--schedule", "learning-rate schedule", Choices = ["cosine", "multistep", "constant"])]
    public string Schedule { get; init; } = "cosine";
    /// <summary>MultiStep factor applied at each milestone.</summary>
    [Setting(SettingGroup.Training, "--gamma", "multistep factor at each milestone", Min = 0, MinExclusive = true, Max = 1)]
    public double Gamma { get; init; } = 0.1;
    /// <summary>MultiStep milestones (epochs).</summary>
    [Setting(SettingGroup.Training, "--milestones", "multistep milestone epochs, e.g. 30,60", Min = 1)]
    public IReadOnlyList<int> Milestones { get; init; } = [];
    /// <summary>Label smoothing.</summary>
    [Setting(SettingGroup.Training, "--label-smoothing", "label smoothing", Min = 0, Max = 1, MaxExclusive = true)]
    public double LabelSmoothing { get; init; }
    /// <summary>Cap on batches per epoch (null: whole epochs), for short budgets.</summary>
    [Setting(SettingGroup.Training, "--max-batches", "stop each epoch after this many batches (0 = whole epochs)", Min = 0, ZeroMeansNone = true)]
    public int? MaxBatchesPerEpoch { get; init; }
    /// <summary>CIFAR augmentation (random crop + flip).</summary>
    [Setting(SettingGroup.Training, "--augment", "CIFAR augmentation: random crop (padding 4) and horizontal flip")]
    public bool Augment { get; init; }
    /// <summary>Sanity-check ablation of the mask: none, shuffle, reinit or invert (docs/architecture.md §5b).</summary>
    [Setting(SettingGroup.Pruning, "--ablation", "sanity check: none, shuffle (permute each layer's mask), reinit (fresh initial weights), invert (keep the lowest " +
        "scores)", Choices = ["none", "shuffle", "reinit", "invert"])]
    public string Ablation { get; init; } = "none";
    /// <summary>Image-folder data sets: leave undecodable images out (counted) instead of failing.</summary>
    [Setting(SettingGroup.Data, "--skip-bad-images", "image-folder data sets: leave undecodable images out (counted) instead of failing")]
    public bool SkipBadImages { get; init; }
    /// <summary>"cpu", "cuda" or "cuda:N"; null: CUDA when a GPU is visible, else the CPU.</summary>
    [Setting(SettingGroup.Execution, "--device", "where to compute: cpu, cuda or cuda:N (default: cuda when this libtorch sees a GPU, else cpu)")]
    public string? Device { get; init; }
    /// <summary>"auto", "on" or "off": whether masked layers train with the sparse kernels (CPU; results agree to float rounding).</summary>
    [Setting(SettingGroup.Execution, "--sparse-kernels", "masked layers on sparse kernels (CPU): auto (where a short calibration measures them faster; kept in ~/.cache/pai, or " +
        "$PAI_CACHE_DIR, so a rerun on this machine chooses alike), on, off", Choices = ["auto", "on", "off"])]
    public string SparseKernels { get; init; } = "auto";

    /// <summary>The criterion of a run without pruning.</summary>
    public const string DenseCriterion = "dense";

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    static readonly JsonObject Defaults = (JsonObject)JsonSerializer.SerializeToNode(new RunConfig(), Json)!;

    /// <summary>
    /// Canonical JSON: only fields that differ from the defaults, keys sorted, no whitespace.
    /// Two configs with the same canonical JSON are the same experiment.
    /// </summary>
    public string CanonicalJson() => Canonical(_ => true);

    /// <summary>
    /// The canonical JSON of the settings in <paramref name="groups"/> alone (settings without a
    /// declaration, such as the predictor's hash, belong to the pruning group).
    /// </summary>
    public string CanonicalJson(SettingGroup groups) => Canonical(name =>
        (RunSettings.GroupOfJsonName(name) & groups) != 0);

    string Canonical(Func<string, bool> include)
    {
        var node = (JsonObject)JsonSerializer.SerializeToNode(this, Json)!;
        var canonical = new JsonObject();
        foreach (var (name, value) in node.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!include(name) || JsonNode.DeepEquals(value, Defaults[name])) continue;
            if (RunSettings.LegacyOfJsonName(name) is { } legacy && value?.GetValueKind() == JsonValueKind.String && value.GetValue<string>() == legacy) continue;
            canonical[name] = value?.DeepClone();
        }
        return canonical.ToJsonString();
    }

    /// <summary>
    /// The run key: the first 16 hex digits of SHA-256 of the canonical JSON of every setting but the
    /// execution ones (the device): the same experiment on another device is the same run.
    /// </summary>
    [JsonIgnore] // derived, not part of the configuration (serializing it would recurse)
    public string Key => Hash(CanonicalJson(~SettingGroup.Execution));

    /// <summary>
    /// What a run's statistics depend on: the data/model and scoring settings (a hash). Pruning and
    /// training settings are not part of it by their declared groups, so runs that differ only
    /// in criterion, sparsity or training share their statistics.
    /// </summary>
    [JsonIgnore] // derived
    public string StatisticsKey => Hash(CanonicalJson(SettingGroup.Data | SettingGroup.Scoring));

    static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];

    /// <summary>The JSON name of a property (the run key's field names).</summary>
    internal static string JsonName(string property) => Json.PropertyNamingPolicy!.ConvertName(property);

    /// <summary>
    /// Reads a config back from its (canonical or full) JSON; a setting with a legacy value that
    /// the JSON leaves out reads back as that value (see <see cref="SettingAttribute.Legacy"/>).
    /// </summary>
    public static RunConfig FromJson(string json)
    {
        var node = JsonNode.Parse(json) as JsonObject ?? throw new ArgumentException("empty run configuration");
        foreach (var s in RunSettings.All)
            if (s.Declaration.Legacy is { } legacy && !node.ContainsKey(JsonName(s.Property.Name)))
                node[JsonName(s.Property.Name)] = legacy;
        return node.Deserialize<RunConfig>(Json) ?? throw new ArgumentException("empty run configuration");
    }

    /// <summary>A short human label, e.g. "lenet5 snip 90% seed 0".</summary>
    [JsonIgnore] // derived, not part of the configuration
    public string Label => Criterion == DenseCriterion
        ? $"{Model} dense seed {Seed}"
        : $"{Model} {Criterion}{(Ablation == "none" ? "" : $" ({Ablation})")} {Sparsity:P1}{(WarmupBatches == 0 ? " no-warmup" : "")} seed {Seed}";
}

/// <summary>A declared run setting: the property and its declaration.</summary>
/// <param name="Property">The <see cref="RunConfig"/> property.</param>
/// <param name="Declaration">Its group, option, help and range.</param>
public sealed record RunSetting(PropertyInfo Property, SettingAttribute Declaration)
{
    /// <summary>The long option, e.g. "--lr".</summary>
    public string Option => Declaration.Option;

    /// <summary>The value type without nullability (string, int, double, bool, ulong or a list of int).</summary>
    public Type ValueType => Nullable.GetUnderlyingType(Property.PropertyType) ?? Property.PropertyType;

    /// <summary>Whether the option is a flag (a bool, no argument).</summary>
    public bool IsFlag => ValueType == typeof(bool);

    /// <summary>The setting's value in a configuration.</summary>
    public object? Get(RunConfig c) => Property.GetValue(c);

    /// <summary>A copy of the configuration with the setting's value replaced.</summary>
    public RunConfig With(RunConfig c, object? value)
    {
        var copy = c with { };
        Property.SetValue(copy, value);
        return copy;
    }

    /// <summary>The value as the command line writes it ("" for none).</summary>
    public string Format(object? value) => value switch
    {
        null => "",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        IEnumerable<int> list => string.Join(",", list.Select(i => i.ToString(CultureInfo.InvariantCulture))),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    /// <summary>Parses the command line's text for this setting; errors name the option and the fix.</summary>
    public object? Parse(string text)
    {
        var t = text.Trim();
        var d = Declaration;
        string Bad(string what) => $"{Option}: '{text}' is not {what}{(d.Example is { } e ? $" (e.g. {Option} {e})" : "")}";
        object? value;
        if (ValueType == typeof(string)) value = t.ToLowerInvariant() is var lower && d.Choices is not null ? lower : t;
        else if (ValueType == typeof(bool))
            value = bool.TryParse(t, out var b) ? b : throw new ArgumentException(Bad("true or false"));
        else if (ValueType == typeof(int))
            value = int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) ? i : throw new ArgumentException(Bad("a whole number"));
        else if (ValueType == typeof(ulong))
            value = ulong.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var u) ? u : throw new ArgumentException(Bad("a non-negative whole number"));
        else if (ValueType == typeof(double))
            value = double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) ? x : throw new ArgumentException(Bad("a number"));
        else if (ValueType == typeof(IReadOnlyList<int>))
            value = t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(part => int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) ? i
                    : throw new ArgumentException(Bad("a comma-separated list of whole numbers"))).ToArray();
        else throw new InvalidOperationException($"internal: setting {Option} has an unsupported type {ValueType}");
        if (d.ZeroMeansNone && value is 0) value = null;
        return value;
    }

    /// <summary>The problem with a value (range, finiteness, choices), or null when it is valid.</summary>
    public string? Check(object? value)
    {
        var d = Declaration;
        IEnumerable<double> numbers = value switch
        {
            double x => [x],
            int i => [i],
            ulong u => [u],
            IEnumerable<int> list => list.Select(i => (double)i),
            _ => [],
        };
        foreach (var x in numbers)
        {
            if (!double.IsFinite(x)) return $"{Option} must be a finite number, got {Format(x)}";
            var low = d.MinExclusive ? x <= d.Min : x < d.Min;
            var high = d.MaxExclusive ? x >= d.Max : x > d.Max;
            if (low || high)
            {
                var lo = double.IsNegativeInfinity(d.Min) ? "" : $"{(d.MinExclusive ? "above" : "at least")} {Format(d.Min)}";
                var hi = double.IsPositiveInfinity(d.Max) ? "" : $"{(d.MaxExclusive ? "below" : "at most")} {Format(d.Max)}";
                var range = string.Join(" and ", new[] { lo, hi }.Where(r => r != ""));
                return $"{Option} must be {range}, got {Format(x)}";
            }
        }
        if (value is string s && d.Choices is { } choices && !choices.Contains(s))
            return $"{Option} must be one of {string.Join(", ", choices)}, got '{s}'";
        return null;
    }
}

/// <summary>The declared settings of a run (the <see cref="SettingAttribute"/>s of <see cref="RunConfig"/>).</summary>
public static class RunSettings
{
    /// <summary>Every declared setting, in declaration order.</summary>
    public static IReadOnlyList<RunSetting> All { get; } = typeof(RunConfig).GetProperties()
        .Select(p => (p, a: p.GetCustomAttribute<SettingAttribute>()))
        .Where(x => x.a is not null)
        .OrderBy(x => x.p.MetadataToken)
        .Select(x => new RunSetting(x.p, x.a!)).ToArray();

    /// <summary>The settings in any of the groups.</summary>
    public static IEnumerable<RunSetting> In(SettingGroup groups) => All.Where(s => (s.Declaration.Group & groups) != 0);

    /// <summary>The setting of a property by name.</summary>
    public static RunSetting Of(string property) => All.Single(s => s.Property.Name == property);

    static readonly Dictionary<string, SettingGroup> GroupsByJsonName =
        All.ToDictionary(s => RunConfig.JsonName(s.Property.Name), s => s.Declaration.Group);

    /// <summary>The groups of a run-key field; undeclared fields (the predictor's hash) go with pruning.</summary>
    public static SettingGroup GroupOfJsonName(string jsonName) =>
        GroupsByJsonName.TryGetValue(jsonName, out var g) ? g : SettingGroup.Pruning;

    static readonly Dictionary<string, string> LegacyByJsonName = All.Where(s => s.Declaration.Legacy is not null)
        .ToDictionary(s => RunConfig.JsonName(s.Property.Name), s => s.Declaration.Legacy!);

    /// <summary>The legacy value of a run-key field (see <see cref="SettingAttribute.Legacy"/>), or null.</summary>
    public static string? LegacyOfJsonName(string jsonName) => LegacyByJsonName.GetValueOrDefault(jsonName);

    /// <summary>Every range problem of the configuration's declared settings (NaN, out of range, unknown choice).</summary>
    public static IEnumerable<string> Problems(RunConfig c) =>
        All.Select(s => s.Check(s.Get(c))).OfType<string>();
}
