using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Pai.Host.Runs;

/// <summary>
/// One experiment: which model and data, how to prune, how to train. Its identity is
/// <see cref="Key"/>: a hash of the canonical JSON of every field that differs from its default,
/// so adding a new option (with a default) never changes the keys of existing runs.
/// Execution details that do not change results (threads, results directory) are not part of it.
/// </summary>
public sealed record RunConfig
{
    /// <summary>Model name (see ModelZoo.Names).</summary>
    public string Model { get; init; } = "lenet5";
    /// <summary>Data set name (see DatasetRegistry.Names).</summary>
    public string Dataset { get; init; } = "fashion-mnist";
    /// <summary>Directory of the data set (null: its default location).</summary>
    public string? DataDirectory { get; init; }
    /// <summary>Criterion name, or "dense" for no pruning.</summary>
    public string Criterion { get; init; } = "dense";
    /// <summary>Fraction of prunable weights removed, in [0, 1).</summary>
    public double Sparsity { get; init; }
    /// <summary>"global" or "layer".</summary>
    public string Scope { get; init; } = "global";
    /// <summary>Pruning rounds (null: the criterion's default, 100 for SynFlow).</summary>
    public int? Rounds { get; init; }
    /// <summary>
    /// BN warm-up batches before scoring (0: off). On by default; it only applies to models with
    /// batch norm and criteria that read data.
    /// </summary>
    public int WarmupBatches { get; init; } = 100;
    /// <summary>Scoring samples per class.</summary>
    public int SamplesPerClass { get; init; } = 10;
    /// <summary>Scoring batch size.</summary>
    public int ScoringBatchSize { get; init; } = 1;
    /// <summary>Hutchinson probes per scoring batch.</summary>
    public int Probes { get; init; } = 10;
    /// <summary>Hutchinson probe scope: "full", "layer", or groups of layer indices such as "0+1,2,3".</summary>
    public string ProbeScope { get; init; } = "full";
    /// <summary>
    /// Hutchinson HVPs over all scoring batches (null: <see cref="Probes"/> per batch). Fixed mode
    /// gives every probe block floor(budget / (batches × blocks)) probes; adaptive mode stops at it.
    /// </summary>
    public int? HvpBudget { get; init; }
    /// <summary>Adaptive Hutchinson: probe until every layer's median relative SE is at most this (null: off; needs <see cref="HvpBudget"/>).</summary>
    public double? AdaptiveTarget { get; init; }
    /// <summary>The Hutchinson criteria take the classifier's Hessian diagonal from its closed form.</summary>
    public bool ExactLastLayer { get; init; }
    /// <summary>Layers with at most this many weights get their exact Hessian diagonal from unit-vector HVPs (0: none).</summary>
    public int ExactLayerSize { get; init; }
    /// <summary>Temperature of the Hutchinson criteria.</summary>
    public double HutchinsonTemperature { get; init; } = 200;
    /// <summary>Temperature of GraSP.</summary>
    public double GraspTemperature { get; init; } = 200;
    /// <summary>Keep at least one weight per layer.</summary>
    public bool KeepOnePerLayer { get; init; }
    /// <summary>Keep the classifier dense.</summary>
    public bool DenseClassifier { get; init; }
    /// <summary>AutoS predictor file (criterion "autos").</summary>
    public string? Predictor { get; init; }
    /// <summary>
    /// Content hash of <see cref="Predictor"/> (see Experiment.ConfigurePredictor), so that a changed
    /// predictor file is a different run. Null unless the criterion is "autos", so other keys are unchanged.
    /// </summary>
    public string? PredictorHash { get; init; }
    /// <summary>Seed of initialization, scoring subset, probes and data order.</summary>
    public ulong Seed { get; init; }
    /// <summary>Training epochs.</summary>
    public int Epochs { get; init; } = 10;
    /// <summary>Training batch size.</summary>
    public int BatchSize { get; init; } = 128;
    /// <summary>"sgd" or "adamw".</summary>
    public string Optimizer { get; init; } = "sgd";
    /// <summary>Base learning rate.</summary>
    public double LearningRate { get; init; } = 0.1;
    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; } = 0.9;
    /// <summary>Nesterov momentum.</summary>
    public bool Nesterov { get; init; }
    /// <summary>Weight decay.</summary>
    public double WeightDecay { get; init; } = 5e-4;
    /// <summary>"cosine", "multistep" or "constant".</summary>
    public string Schedule { get; init; } = "cosine";
    /// <summary>MultiStep factor applied at each milestone.</summary>
    public double Gamma { get; init; } = 0.1;
    /// <summary>MultiStep milestones (epochs).</summary>
    public IReadOnlyList<int> Milestones { get; init; } = [];
    /// <summary>Label smoothing.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Cap on batches per epoch (null: whole epochs), for short budgets.</summary>
    public int? MaxBatchesPerEpoch { get; init; }
    /// <summary>CIFAR augmentation (random crop + flip).</summary>
    public bool Augment { get; init; }
    /// <summary>Image-folder data sets: leave undecodable images out (counted) instead of failing.</summary>
    public bool SkipBadImages { get; init; }

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    static readonly JsonObject Defaults = (JsonObject)JsonSerializer.SerializeToNode(new RunConfig(), Json)!;

    /// <summary>
    /// Canonical JSON: only fields that differ from the defaults, keys sorted, no whitespace.
    /// Two configs with the same canonical JSON are the same experiment.
    /// </summary>
    public string CanonicalJson()
    {
        var node = (JsonObject)JsonSerializer.SerializeToNode(this, Json)!;
        var canonical = new JsonObject();
        foreach (var (name, value) in node.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (JsonNode.DeepEquals(value, Defaults[name])) continue;
            canonical[name] = value?.DeepClone();
        }
        return canonical.ToJsonString();
    }

    /// <summary>The run key: the first 16 hex digits of SHA-256 of <see cref="CanonicalJson"/>.</summary>
    [JsonIgnore] // derived, not part of the configuration (serializing it would recurse)
    public string Key => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(CanonicalJson())))[..16];

    /// <summary>Reads a config back from its (canonical or full) JSON.</summary>
    public static RunConfig FromJson(string json) =>
        JsonSerializer.Deserialize<RunConfig>(json, Json) ?? throw new ArgumentException("empty run configuration");

    /// <summary>A short human label, e.g. "lenet5 snip 90% seed 0".</summary>
    [JsonIgnore] // derived, not part of the configuration
    public string Label => Criterion == "dense"
        ? $"{Model} dense seed {Seed}"
        : $"{Model} {Criterion} {Sparsity:P1}{(WarmupBatches == 0 ? " no-warmup" : "")} seed {Seed}";
}
