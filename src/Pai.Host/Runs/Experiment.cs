using System.Diagnostics;
using System.Text.Json;
using Microsoft.FSharp.Core;
using Pai.Host.AutoS;
using Pai.Host.Checkpoints;
using Pai.Host.Data;
using Pai.Host.Models;
using Pai.Host.Training;
using Pai.Torch;

namespace Pai.Host.Runs;

/// <summary>Receives what a running experiment is doing (the CLI draws it).</summary>
public interface IRunProgress
{
    /// <summary>A phase starts: "data", "warmup+scoring", "training".</summary>
    void Phase(RunConfig config, string phase);
    /// <summary>A training batch or epoch finished.</summary>
    void Training(RunConfig config, TrainProgress progress);
    /// <summary>A line worth showing (warnings such as layer collapse).</summary>
    void Log(RunConfig config, string message);
}

/// <summary>Loaded data sets shared by the runs of one process (a sweep loads each once).</summary>
public sealed class DataCache : IDisposable
{
    readonly Dictionary<(string, string?, DatasetSplit), Dataset> sets = new();

    /// <summary>The split of a data set, loaded on first use.</summary>
    public Dataset Get(string name, string? directory, DatasetSplit split, bool skipBadImages = false)
    {
        var key = (DatasetRegistry.Canonical(name), directory, split);
        if (!sets.TryGetValue(key, out var d))
        {
            d = name == "synthetic" ? SyntheticData.Create(null, split) : DatasetRegistry.Load(key.Item1, split, directory, skipBadImages: skipBadImages);
            sets[key] = d;
        }
        return d;
    }

    /// <summary>Frees every loaded data set.</summary>
    public void Dispose()
    {
        foreach (var d in sets.Values) d.Dispose();
        sets.Clear();
    }
}

/// <summary>
/// One run end to end: data → model → (BN warm-up → scoring → mask) → masked training → record.
/// Scores of single-round criteria are cached by everything they depend on (not the sparsity),
/// so a sweep scores each (model, seed, criterion, scoring data, warm-up) once.
/// </summary>
public static class Experiment
{
    /// <summary>Checks names and ranges; throws ArgumentException naming the problem and the fix.</summary>
    public static void Validate(RunConfig c)
    {
        if (!ModelZoo.Contains(c.Model))
            throw new ArgumentException($"unknown model '{c.Model}'; valid models: {string.Join(", ", ModelZoo.Names)}");
        DatasetRegistry.Canonical(c.Dataset); // throws listing the valid names
        if (c.Criterion != "dense")
        {
            if (c.Criterion == "autos" && c.Predictor is null)
                throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE");
            if (c.Criterion == "autos" && c.PredictorHash is null)
                throw new ArgumentException("an autos run needs the predictor's content hash in its configuration: build it with Experiment.ConfigurePredictor");
            if (c.Criterion != "autos") PaiPruning.FindCriterion(c.Criterion);
            Selection.validateSparsity(c.Sparsity);
        }
        else if (c.Sparsity != 0)
            throw new ArgumentException($"a dense run has sparsity 0, got {c.Sparsity}; pick a criterion to prune");
        if (c.Scope is not ("global" or "layer")) throw new ArgumentException($"scope must be 'global' or 'layer', got '{c.Scope}'");
        if (ProbeScopeModule.parse(c.ProbeScope) is { IsError: true } scope) throw new ArgumentException(scope.ErrorValue);
        if (c.HvpBudget is < 1) throw new ArgumentException($"the HVP budget must be positive (or left out for --probes per batch), got {c.HvpBudget}");
        if (c.AdaptiveTarget is { } target && !(target > 0)) throw new ArgumentException($"the adaptive target median relative SE must be positive, e.g. 0.5, got {target}");
        if (c.AdaptiveTarget is not null && c.HvpBudget is null) throw new ArgumentException("the adaptive mode needs --hvp-budget as its cap");
        if (c.ExactLayerSize < 0) throw new ArgumentException($"the exact layer size must be 0 (off) or positive, got {c.ExactLayerSize}");
        if (c.SamplesPerClass < 1) throw new ArgumentException($"samples per class must be at least 1, got {c.SamplesPerClass}");
        if (c.ScoringBatchSize < 1) throw new ArgumentException($"the scoring batch size must be at least 1, got {c.ScoringBatchSize}");
        if (c.Probes < 2) throw new ArgumentException($"Hutchinson needs at least 2 probes, got {c.Probes}");
        if (c.BatchSize < 1) throw new ArgumentException($"the batch size must be at least 1, got {c.BatchSize}");
        if (c.WarmupBatches < 0) throw new ArgumentException($"warm-up batches must be 0 (off) or positive, got {c.WarmupBatches}");
        TrainOptionsOf(c).Validate();
    }

    /// <summary>
    /// The config with its predictor settled: for the criterion "autos", the predictor path made
    /// absolute and its content hash recorded (part of the run key); for any other criterion, no
    /// predictor at all (so a stray --predictor does not change other runs' keys).
    /// </summary>
    public static RunConfig ConfigurePredictor(RunConfig c)
    {
        if (c.Criterion != "autos") return c with { Predictor = null, PredictorHash = null };
        if (c.Predictor is null) throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE (train one with `pai autos fit`)");
        var path = Path.GetFullPath(c.Predictor);
        return c with { Predictor = path, PredictorHash = Predictor.ContentHash(path) };
    }

    /// <summary>Training options from a run configuration.</summary>
    public static TrainOptions TrainOptionsOf(RunConfig c) => new()
    {
        Epochs = c.Epochs,
        Optimizer = c.Optimizer switch
        {
            "sgd" => OptimizerKind.Sgd,
            "adamw" => OptimizerKind.AdamW,
            _ => throw new ArgumentException($"unknown optimizer '{c.Optimizer}'; valid: sgd, adamw"),
        },
        LearningRate = c.LearningRate,
        Momentum = c.Momentum,
        Nesterov = c.Nesterov,
        WeightDecay = c.WeightDecay,
        Schedule = c.Schedule switch
        {
            "cosine" => LrSchedule.Cosine,
            "multistep" => LrSchedule.MultiStep,
            "constant" => LrSchedule.Constant,
            _ => throw new ArgumentException($"unknown schedule '{c.Schedule}'; valid: cosine, multistep, constant"),
        },
        Milestones = c.Milestones,
        Gamma = c.Gamma,
        LabelSmoothing = c.LabelSmoothing,
        MaxBatchesPerEpoch = c.MaxBatchesPerEpoch,
    };

    /// <summary>The F# prune specification of a run.</summary>
    public static PruneSpec PruneSpecOf(RunConfig c, Criterion criterion) => new(
        c.Criterion,
        c.Sparsity,
        c.Scope == "layer" ? Scope.PerLayer : Scope.Global,
        c.Rounds ?? criterion.DefaultRounds,
        Schedule.Exponential,
        c.WarmupBatches,
        c.SamplesPerClass,
        c.ScoringBatchSize,
        new CriterionOptions(c.Probes, ProbeScopeModule.parse(c.ProbeScope).ResultValue,
            c.HutchinsonTemperature, c.GraspTemperature, c.HvpBudget ?? 0, c.AdaptiveTarget ?? 0, c.ExactLastLayer, c.ExactLayerSize),
        c.KeepOnePerLayer,
        c.Seed);

    /// <summary>
    /// Bumped whenever a criterion's scores or what a cache file holds change, so that a results
    /// store written by an older Pai recomputes instead of reading stale scores (version 2: Hutchinson
    /// probes drawn in chunks, curvature diagnostics stored with the scores).
    /// </summary>
    public const int ScoreCacheVersion = 2;

    /// <summary>
    /// The cache key of a run's first-round scores: everything the scores depend on, not the sparsity,
    /// prefixed by <see cref="ScoreCacheVersion"/>.
    /// </summary>
    public static string ScoreCacheKey(RunConfig c) => $"v{ScoreCacheVersion}-" + (c with
    {
        Sparsity = 0, Scope = "global", Rounds = null, KeepOnePerLayer = false,
        Epochs = 0, BatchSize = 0, Optimizer = "", LearningRate = 0, Momentum = 0, Nesterov = false, WeightDecay = 0,
        Schedule = "", Milestones = [], Gamma = 0, LabelSmoothing = 0, MaxBatchesPerEpoch = null, Augment = false,
    }).Key;

    /// <summary>Builds the model a run trains (initialized with the run's seed).</summary>
    public static Model CreateModel(RunConfig c, Dataset train) => ModelZoo.Create(c.Model, new ModelOptions
    {
        InputShape = new InputShape(train.Channels, train.Height, train.Width),
        Classes = train.NumClasses,
        Seed = c.Seed,
        DenseClassifier = c.DenseClassifier,
    });

    /// <summary>
    /// Prunes a freshly initialized model as the config says. Returns the mask (owned by the
    /// caller) and report. scoreCache, when given, is the safetensors file of cached first-round scores.
    /// </summary>
    public static PruneResult Prune(RunConfig c, Model model, Dataset train, string? scoreCache, Action<string> log)
    {
        using var predictor = c.Criterion == "autos" ? LoadPredictor(c) : null;
        var criterion = predictor?.Criterion() ?? PaiPruning.FindCriterion(c.Criterion);
        if (c.WarmupBatches > 0 && !model.BatchNorms.Any())
            log($"{model.Name} has no batch norm: BN warm-up does nothing and is skipped");
        if (scoreCache is not null)
            criterion = PaiPruning.Cached(criterion, () => LoadScores(scoreCache, model), s => SaveScores(scoreCache, s));
        using var scoring = ScoringSubset.Create(train, c.SamplesPerClass, c.Seed, c.ScoringBatchSize, device: model.Device);
        using var warmupLoader = new DataLoader(train, c.BatchSize, shuffle: true, seed: c.Seed, device: model.Device);
        var warmup = model.BatchNorms.Any() ? warmupLoader.Epoch(0) : [];
        var spec = PruneSpecOf(c with { WarmupBatches = model.BatchNorms.Any() ? c.WarmupBatches : 0 }, criterion);
        return PaiPruning.Prune(spec, criterion, model, train.InputShape, scoring, warmup, log);
    }

    // The predictor the run was configured with; a file changed since then would silently be another experiment.
    static Predictor LoadPredictor(RunConfig c)
    {
        var hash = Predictor.ContentHash(c.Predictor!);
        if (hash != c.PredictorHash)
            throw new ArgumentException($"predictor file '{c.Predictor}' changed since this run was configured (content hash {hash}, configured {c.PredictorHash}); configure the run again so that the new predictor is a new run");
        return Predictor.Load(c.Predictor!);
    }

    static FSharpOption<Scores> LoadScores(string path, Model model)
    {
        if (!File.Exists(path)) return FSharpOption<Scores>.None;
        using var file = Safetensors.Load(path, model.Prunable.Select(p => new TensorSpec(p.Key, DType.Float32, p.Value.Shape)), strict: true);
        var layers = model.Prunable.Select(p => Tuple.Create(p.Key, file.Take(p.Key))).ToList();
        var diagnostics = file.Metadata.TryGetValue(DiagnosticsKey, out var json)
            ? JsonSerializer.Deserialize<List<CurvatureRecord>>(json)!.Select(r => r.ToDiagnostics())
            : [];
        return FSharpOption<Scores>.Some(new Scores(Microsoft.FSharp.Collections.ListModule.OfSeq(layers),
            Microsoft.FSharp.Collections.ListModule.OfSeq(diagnostics)));
    }

    // Cached scores keep their estimators' diagnostics, so every sparsity of a sweep records the achieved error.
    const string DiagnosticsKey = "curvature";

    static void SaveScores(string path, Scores scores)
    {
        using var scope = new DisposeScope();
        var metadata = new Dictionary<string, string> { [DiagnosticsKey] = JsonSerializer.Serialize(scores.Diagnostics.Select(CurvatureRecord.Of).ToList()) };
        Safetensors.Save(path, scores.Layers.Select(l => (l.Item1, l.Item2.To(DType.Float32))), metadata);
    }

    /// <summary>The mask as a name → tensor dictionary (what the trainer takes).</summary>
    public static Dictionary<string, Tensor> MaskDictionary(Mask mask) =>
        mask.Layers.ToDictionary(l => l.Item1, l => l.Item2);

    /// <summary>
    /// Runs a claimed configuration to the end and records it in the store: prune report, every
    /// epoch, final metrics, timings, seeds, versions, the mask and a checkpoint (safetensors).
    /// A failure is recorded as Failed and rethrown.
    /// </summary>
    public static RunRecord Run(RunConfig c, IRunStore store, DataCache data, IRunProgress? progress = null)
    {
        var key = c.Key;
        var started = DateTimeOffset.UtcNow;
        try
        {
            Validate(c);
            var phases = new Dictionary<string, double>();
            progress?.Phase(c, "data");
            var train = data.Get(c.Dataset, c.DataDirectory, DatasetSplit.Train, c.SkipBadImages);
            var test = data.Get(c.Dataset, c.DataDirectory, DatasetSplit.Test, c.SkipBadImages);
            using var model = CreateModel(c, train);

            Mask? mask = null;
            PruneSummary? prune = null;
            try
            {
                if (c.Criterion != "dense")
                {
                    progress?.Phase(c, "warmup+scoring");
                    var result = Prune(c, model, train, ScoreCachePath(store, c), m => progress?.Log(c, m));
                    mask = result.Mask;
                    foreach (var (phase, seconds) in result.Report.Seconds) phases[phase] = seconds;
                    prune = new PruneSummary(result.Report.Criterion,
                        result.Report.Layers.Select(l => new LayerDensityRecord(l.Name, l.Kept, l.Total)).ToList(),
                        result.Report.Collapsed.ToList(), result.Report.Rounds, result.Report.Density,
                        result.Report.Curvature.Select(CurvatureRecord.Of).ToList());
                    store.RecordPrune(key, prune, phases);
                    Safetensors.Save(store.MaskPath(key),
                        mask.Layers.Select(l => (l.Item1, l.Item2)), new Dictionary<string, string> { ["config"] = c.CanonicalJson() });
                }

                progress?.Phase(c, "training");
                var watch = Stopwatch.StartNew();
                using var trainLoader = new DataLoader(train, c.BatchSize, shuffle: true, seed: c.Seed, augment: c.Augment, device: model.Device);
                using var testLoader = new DataLoader(test, 1000, shuffle: false, device: model.Device);
                var options = TrainOptionsOf(c);
                var epochs = Trainer.Train(model, mask is null ? null : MaskDictionary(mask), trainLoader.Epoch, () => testLoader.Epoch(0),
                    options, p =>
                    {
                        if (p.Finished is { } e)
                            store.RecordEpoch(key, new EpochMetrics(e.Epoch, e.TrainLoss, e.TrainTop1, e.LearningRate,
                                e.Test?.Loss, e.Test?.Top1, e.Test?.Top5, e.Seconds));
                        progress?.Training(c, p);
                    }, batchesPerEpoch: options.BatchesPerEpoch(trainLoader.BatchCount));
                phases["training"] = watch.Elapsed.TotalSeconds;

                Safetensors.Save(store.CheckpointPath(key),
                    model.Parameters.Select(p => (p.Key, p.Value)).Concat(model.Buffers.Select(b => (b.Key, b.Value))),
                    new Dictionary<string, string> { ["config"] = c.CanonicalJson() });

                var last = epochs[^1];
                var record = new RunRecord
                {
                    Key = key,
                    Config = c,
                    Status = RunStatus.Finished,
                    Epochs = epochs.Select(e => new EpochMetrics(e.Epoch, e.TrainLoss, e.TrainTop1, e.LearningRate,
                        e.Test?.Loss, e.Test?.Top1, e.Test?.Top5, e.Seconds)).ToList(),
                    FinalTop1 = last.Test?.Top1,
                    FinalTop5 = last.Test?.Top5,
                    FinalLoss = last.Test?.Loss,
                    PhaseSeconds = phases,
                    Prune = prune,
                    Seeds = new Dictionary<string, ulong> { ["init"] = c.Seed, ["scoring"] = c.Seed, ["probes"] = c.Seed, ["data"] = c.Seed },
                    PaiVersion = PaiHost.Version,
                    LibtorchVersion = Libtorch.Version,
                    Started = started,
                    Finished = DateTimeOffset.UtcNow,
                };
                store.Finish(key, record);
                return record;
            }
            finally
            {
                if (mask is not null) MaskModule.dispose(mask);
            }
        }
        catch (Exception e)
        {
            try { store.Fail(key, e.Message); } catch (Exception) { /* the claim may be gone; the original error matters */ }
            throw;
        }
    }

    // Single-round scores are cached; iterative criteria (SynFlow's 100 rounds) depend on the sparsity.
    static string? ScoreCachePath(IRunStore store, RunConfig c)
    {
        var defaultRounds = c.Criterion == "autos" ? 1 : PaiPruning.FindCriterion(c.Criterion).DefaultRounds;
        if ((c.Rounds ?? defaultRounds) != 1) return null;
        return store.ScoreCachePath(ScoreCacheKey(c));
    }
}
