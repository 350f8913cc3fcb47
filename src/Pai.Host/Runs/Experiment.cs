using System.Diagnostics;
using System.Text.Json;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.AutoS;
using Pai.Host.Checkpoints;
using Pai.Host.Data;
using Pai.Host.Distributed;
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
/// The statistics of the first scoring round are stored by what they depend on (the data and
/// scoring settings, not the criterion, sparsity or training), so a sweep computes each statistic
/// of one initialization once: hutch_obd and hts share one Hessian diagonal, snip and grad_norm
/// one gradient.
/// </summary>
public static class Experiment
{
    /// <summary>
    /// Checks every setting (finite, in range, a known choice, from the declarations in
    /// <see cref="RunConfig"/>) and how they fit together; throws ArgumentException naming the
    /// problem and the fix. Expects a configuration from <see cref="Configure"/>.
    /// </summary>
    public static void Validate(RunConfig c)
    {
        if (RunSettings.Problems(c).FirstOrDefault() is { } problem) throw new ArgumentException(problem);
        if (!ModelZoo.Contains(c.Model))
            throw new ArgumentException($"unknown model '{c.Model}'; valid models: {string.Join(", ", ModelZoo.Names)}");
        DatasetRegistry.Canonical(c.Dataset); // throws listing the valid names
        if (c.Criterion != DenseCriterion)
        {
            if (c.Criterion == Registry.learnedName && c.Predictor is null)
                throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE");
            if (c.Criterion == Registry.learnedName && c.PredictorHash is null)
                throw new ArgumentException("an autos run needs the predictor's content hash in its configuration: build it with Experiment.Configure");
            if (c.Criterion != Registry.learnedName) PaiPruning.ResolveCriterion(c.Criterion, TemperaturesOf(c));
        }
        else
        {
            if (c.Sparsity != 0)
                throw new ArgumentException($"a dense run has sparsity 0, got {c.Sparsity}; pick a criterion to prune (-c snip, say)");
            if (c.Ablation != "none")
                throw new ArgumentException($"the ablation '{c.Ablation}' changes a mask: it needs a criterion and a sparsity");
        }
        if (ProbeScopeModule.parse(c.ProbeScope) is { IsError: true } scope) throw new ArgumentException(scope.ErrorValue);
        if (c.AdaptiveTarget is not null && c.HvpBudget is null) throw new ArgumentException("the adaptive mode needs --hvp-budget as its cap");
        if (c.Curvature == "auto" && c.Criterion != DenseCriterion && ReadsHessianDiagonal(c))
            throw new ArgumentException("--curvature auto is settled by Experiment.Configure (exact or hutchinson, by the model): configure the run first");
        TrainOptionsOf(c).Validate();
    }

    /// <summary>The criterion name of a run without pruning.</summary>
    public const string DenseCriterion = "dense";

    /// <summary>
    /// The configuration in canonical form, so that equal experiments get equal keys: model and
    /// data set names in lower case; a built-in criterion by its name, a formula by its canonical
    /// text; for "autos", the predictor path made absolute and its content hash recorded (part of
    /// the run key); for any other criterion, no predictor at all (a stray --predictor does not
    /// change other runs' keys).
    /// </summary>
    public static RunConfig Configure(RunConfig c)
    {
        c = c with { Model = c.Model.Trim().ToLowerInvariant(), Dataset = c.Dataset.Trim().ToLowerInvariant(), ProbeScope = c.ProbeScope.Trim().ToLowerInvariant() };
        var criterion = c.Criterion.Trim();
        if (criterion.Equals(DenseCriterion, StringComparison.OrdinalIgnoreCase)) c = c with { Criterion = DenseCriterion };
        else if (criterion.Equals(Registry.learnedName, StringComparison.OrdinalIgnoreCase)) c = c with { Criterion = Registry.learnedName };
        else c = c with { Criterion = PaiPruning.ResolveCriterion(criterion, TemperaturesOf(c)).Name };
        c = c with { Curvature = CurvatureSetting(c) };
        if (c.Criterion != Registry.learnedName) return c with { Predictor = null, PredictorHash = null };
        if (c.Predictor is null) throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE (train one with `pai autos fit`)");
        var path = Path.GetFullPath(c.Predictor);
        return c with { Predictor = path, PredictorHash = Predictor.ContentHash(path) };
    }

    // The settings that configure Hutchinson's estimator (unused by the exact method).
    static readonly string[] HutchinsonSettings =
        [nameof(RunConfig.Probes), nameof(RunConfig.ProbeScope), nameof(RunConfig.HvpBudget), nameof(RunConfig.AdaptiveTarget),
         nameof(RunConfig.ExactLastLayer), nameof(RunConfig.ExactLayerSize)];

    static readonly RunConfig DefaultConfig = new();

    /// <summary>Whether the configured criterion reads the Hessian diagonal (hdiag), so that --curvature matters.</summary>
    public static bool ReadsHessianDiagonal(RunConfig c) =>
        c.Criterion == Registry.learnedName
        || (c.Criterion != DenseCriterion && Formula.statistics(PaiPruning.ResolveCriterion(c.Criterion, TemperaturesOf(c)).Formula).Any(s => s.IsHessianDiagonal));

    // The settled --curvature: "auto" for a criterion without hdiag (no run key changes), and for
    // one with it "exact" or "hutchinson". Auto is exact where the model is piecewise linear and no
    // Hutchinson option is given; the AutoS predictor keeps Hutchinson, whose hdiag its features
    // were fitted with. Exact with Hutchinson options, or on a model it does not fit, is refused.
    static string CurvatureSetting(RunConfig c)
    {
        if (!ReadsHessianDiagonal(c)) return "auto";
        var hutchinsonOptions = HutchinsonSettings.Select(RunSettings.Of)
            .Where(s => !Equals(s.Get(c), s.Get(DefaultConfig))).Select(s => s.Option).ToList();
        var piecewiseLinear = ModelZoo.Contains(c.Model) && ModelZoo.IsPiecewiseLinear(c.Model);
        switch (c.Curvature)
        {
            case "exact" when ModelZoo.Contains(c.Model) && !piecewiseLinear:
                throw new ArgumentException($"--curvature exact: {c.Model} is not piecewise linear in each layer's weights (attention, GELU or LayerNorm), so the Gauss–Newton identity does not give its Hessian diagonal; use --curvature hutchinson (block-local probes: --probe-scope layer)");
            case "exact" when hutchinsonOptions.Count > 0:
                throw new ArgumentException($"{string.Join(", ", hutchinsonOptions)} configure Hutchinson's estimator, which --curvature exact does not use: drop them, or use --curvature hutchinson");
            case "auto" when c.Criterion == Registry.learnedName:
                return "hutchinson";
            case "auto":
                return piecewiseLinear && hutchinsonOptions.Count == 0 ? "exact" : "hutchinson";
            default:
                return c.Curvature;
        }
    }

    /// <summary>The temperatures the built-in criteria's formulas take.</summary>
    public static Temperatures TemperaturesOf(RunConfig c) => new(c.GraspTemperature, c.HutchinsonTemperature);

    /// <summary>
    /// The Hessian diagonal's estimator and settings: exact for --curvature exact, Hutchinson
    /// otherwise (a configured run's "auto" only remains where no hdiag is read).
    /// </summary>
    public static CurvatureOptions CurvatureOf(RunConfig c) => new(
        c.Curvature == "exact" ? HessianEstimator.Exact : HessianEstimator.Hutchinson, c.Probes, ProbeScopeModule.parse(c.ProbeScope).ResultValue,
        c.HvpBudget ?? 0, c.AdaptiveTarget ?? 0, c.ExactLastLayer, c.ExactLayerSize);

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
        CurvatureOf(c),
        c.KeepOnePerLayer,
        c.Seed);

    /// <summary>
    /// Bumped whenever a statistic's values or what a stored statistic file holds change, so that
    /// a results store written by an older Pai recomputes instead of reading stale values
    /// (version 3: statistics instead of criterion scores, keyed by the data and scoring settings).
    /// </summary>
    public const int StatisticsCacheVersion = 3;

    /// <summary>The cache key of one statistic of a run: its data and scoring settings and the statistic's name.</summary>
    public static string StatisticCacheKey(RunConfig c, string statistic) =>
        $"v{StatisticsCacheVersion}-{c.StatisticsKey}-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(statistic)))[..12];

    /// <summary>Builds the model a run trains (initialized with the run's seed).</summary>
    public static Model CreateModel(RunConfig c, Dataset train) => ModelZoo.Create(c.Model, new ModelOptions
    {
        InputShape = new InputShape(train.Channels, train.Height, train.Width),
        Classes = train.NumClasses,
        Seed = c.Seed,
        DenseClassifier = c.DenseClassifier,
    });

    /// <summary>The run's criterion: a built-in at the run's temperatures, a formula, or the AutoS predictor's.</summary>
    public static Criterion CriterionOf(RunConfig c, Predictor? predictor) =>
        c.Criterion == Registry.learnedName
            ? (predictor ?? throw new ArgumentException("the criterion 'autos' needs its predictor")).Criterion(c.HutchinsonTemperature)
            : PaiPruning.ResolveCriterion(c.Criterion, TemperaturesOf(c));

    /// <summary>
    /// Prunes a freshly initialized model as the config says. Returns the mask (owned by the
    /// caller) and report. With a store, the statistics of the first round are read from it when
    /// stored by an earlier run with the same data and scoring settings, and stored otherwise (a
    /// damaged file is reported, recomputed and replaced).
    /// </summary>
    public static PruneResult Prune(RunConfig c, Model model, Dataset train, IRunStore? store, Action<string> log, string? scoresPath = null)
    {
        using var predictor = c.Criterion == Registry.learnedName ? LoadPredictor(c) : null;
        var criterion = CriterionOf(c, predictor);
        if (c.Ablation == "invert")
            criterion = new Criterion($"-({criterion.Name})", Expr.NewNegation(criterion.Formula), criterion.DefaultRounds);
        if (c.WarmupBatches > 0 && !model.BatchNorms.Any())
            log($"{model.Name} has no batch norm: BN warm-up does nothing and is skipped");
        var known = store is null ? [] : LoadStatistics(store, c, criterion, model, log);
        using var scoring = ScoringSubset.Create(train, c.SamplesPerClass, c.Seed, c.ScoringBatchSize, device: model.Device);
        using var warmupLoader = new DataLoader(train, c.BatchSize, shuffle: true, seed: c.Seed, device: model.Device);
        var warmup = model.BatchNorms.Any() ? warmupLoader.Epoch(0) : [];
        var spec = PruneSpecOf(c with { WarmupBatches = model.BatchNorms.Any() ? c.WarmupBatches : 0 }, criterion);
        PruneResult result;
        using (ScoringProgress.Install(ProgressLines(log)))
            result = PaiPruning.Prune(spec, criterion, model, train.InputShape, scoring, warmup, known, log);
        try
        {
            if (scoresPath is not null)
                using (var scope = new DisposeScope())
                    Safetensors.Save(Path.GetFullPath(scoresPath), result.Scores.Layers.Select(l => (l.Item1, l.Item2.To(DType.Float32))),
                        new Dictionary<string, string> { ["config"] = c.CanonicalJson(), ["criterion"] = criterion.Name, ["formula"] = Formula.render(criterion.Formula) });
            if (store is not null)
                foreach (var (name, value) in result.Statistics)
                    SaveStatistic(store.ScoreCachePath(StatisticCacheKey(c, name)), name, value, model.Prunable.Select(p => p.Key));
        }
        finally
        {
            foreach (var (_, value) in result.Statistics)
                foreach (var t in value.Layers) t.Dispose();
            ScoresModule.dispose(result.Scores);
        }
        // Scores and statistics are stored or freed above: the caller gets the mask and report.
        var done = new PruneResult(result.Mask, result.Report, ScoresModule.ofLayers(FSharpList<Tuple<string, Tensor>>.Empty),
            FSharpList<Tuple<string, StatisticValue>>.Empty);
        return c.Ablation == "shuffle" ? Ablations.Shuffle(done, c.Seed) : done;
    }

    /// <summary>How often long scoring work reports its progress.</summary>
    public static TimeSpan ScoringProgressInterval { get; set; } = TimeSpan.FromSeconds(10);

    // Scoring progress as log lines, at most one per interval, with the step's rate and ETA.
    static Action<string, int, int> ProgressLines(Action<string> log)
    {
        var watch = Stopwatch.StartNew();
        var last = TimeSpan.Zero;
        var (step, started) = ("", TimeSpan.Zero);
        return (what, done, total) =>
        {
            if (what != step) (step, started) = (what, watch.Elapsed);
            if (watch.Elapsed - last < ScoringProgressInterval || done >= total) return;
            last = watch.Elapsed;
            var perItem = (watch.Elapsed - started).TotalSeconds / Math.Max(done, 1);
            log($"scoring: {what} {done}/{total} ({100.0 * done / total:F0}%), about {perItem * (total - done):F0} s left in this step");
        };
    }

    // The predictor the run was configured with; a file changed since then would silently be another experiment.
    static Predictor LoadPredictor(RunConfig c)
    {
        var hash = Predictor.ContentHash(c.Predictor!);
        if (hash != c.PredictorHash)
            throw new ArgumentException($"predictor file '{c.Predictor}' changed since this run was configured (content hash {hash}, configured {c.PredictorHash}); configure the run again so that the new predictor is a new run");
        return Predictor.Load(c.Predictor!);
    }

    // The criterion's stored statistics; a damaged file is reported, deleted and recomputed.
    static List<Tuple<string, StatisticValue>> LoadStatistics(IRunStore store, RunConfig c, Criterion criterion, Model model, Action<string> log)
    {
        var known = new List<Tuple<string, StatisticValue>>();
        foreach (var statistic in Formula.statistics(criterion.Formula).Where(StatisticModule.worthCaching))
        {
            var path = store.ScoreCachePath(StatisticCacheKey(c, statistic.Name));
            if (!File.Exists(path)) continue;
            try
            {
                using var file = Safetensors.Load(path, model.Prunable.Select(p => new TensorSpec(p.Key, DType.Float32, p.Value.Shape)), strict: true);
                if (!file.Metadata.TryGetValue(StatisticKey, out var stored) || stored != statistic.Name)
                    throw new CheckpointException(path, $"holds '{stored}', not the statistic '{statistic.Name}'");
                var layers = model.Prunable.Select(p => file.Take(p.Key)).ToList();
                var diagnostics = file.Metadata.TryGetValue(DiagnosticsKey, out var json)
                    ? JsonSerializer.Deserialize<List<CurvatureRecord>>(json)!.Select(r => r.ToDiagnostics())
                    : [];
                known.Add(Tuple.Create(statistic.Name, new StatisticValue(ListModule.OfSeq(layers), ListModule.OfSeq(diagnostics))));
            }
            catch (Exception e) when (e is CheckpointException or IOException or InvalidDataException or JsonException)
            {
                log($"warning: stored statistic {statistic.Name} is damaged ({e.Message}); recomputing it and replacing {path}");
                File.Delete(path);
            }
        }
        return known;
    }

    // Stored statistics keep their estimators' diagnostics, so every sparsity of a sweep records the achieved error.
    const string DiagnosticsKey = "curvature";
    const string StatisticKey = "statistic";

    static void SaveStatistic(string path, string name, StatisticValue value, IEnumerable<string> layerNames)
    {
        using var scope = new DisposeScope();
        var metadata = new Dictionary<string, string>
        {
            [StatisticKey] = name,
            [DiagnosticsKey] = JsonSerializer.Serialize(value.Diagnostics.Select(CurvatureRecord.Of).ToList()),
        };
        Safetensors.Save(path, layerNames.Zip(value.Layers).Select(x => (x.First, x.Second.To(DType.Float32))), metadata);
    }

    /// <summary>Every seed a run used, by purpose (recorded with the run).</summary>
    public static Dictionary<string, ulong> SeedsOf(RunConfig c)
    {
        var seeds = new Dictionary<string, ulong> { ["init"] = c.Seed, ["scoring"] = c.Seed, ["probes"] = c.Seed, ["data"] = c.Seed };
        if (c.Ablation == "reinit") seeds["reinit"] = Ablations.ReinitSeed(c.Seed);
        if (c.Ablation == "shuffle") seeds["shuffle"] = c.Seed;
        return seeds;
    }

    /// <summary>The mask as a name → tensor dictionary (what the trainer takes).</summary>
    public static Dictionary<string, Tensor> MaskDictionary(Mask mask) =>
        mask.Layers.ToDictionary(l => l.Item1, l => l.Item2);

    /// <summary>
    /// Runs a claimed configuration to the end and records it in the store: prune report, every
    /// epoch, final metrics, timings, seeds, versions, the mask and a checkpoint (safetensors).
    /// A failure is recorded as Failed and rethrown. In a data-parallel run (<paramref name="parallel"/>)
    /// rank 0 prunes and broadcasts the mask, every rank trains on its shard, and only rank 0 writes:
    /// the other ranks pass a null <paramref name="store"/>.
    /// </summary>
    public static RunRecord Run(RunConfig c, IRunStore? store, DataCache data, IRunProgress? progress = null, DataParallel? parallel = null)
    {
        if (store is null && parallel is not { IsRoot: false }) throw new ArgumentNullException(nameof(store), "only ranks other than 0 of a data-parallel run go without a results store");
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
                if (c.Criterion != "dense" && store is null)
                    mask = DistributedRun.ReceiveMask(parallel!, model);
                else if (c.Criterion != "dense" && store is not null)
                {
                    progress?.Phase(c, "warmup+scoring");
                    var result = Prune(c, model, train, store, m => progress?.Log(c, m));
                    mask = result.Mask;
                    foreach (var (phase, seconds) in result.Report.Seconds) phases[phase] = seconds;
                    prune = new PruneSummary(result.Report.Criterion,
                        result.Report.Layers.Select(l => new LayerDensityRecord(l.Name, l.Kept, l.Total)).ToList(),
                        result.Report.Collapsed.ToList(), result.Report.Rounds, result.Report.Density,
                        result.Report.Curvature.Select(CurvatureRecord.Of).ToList());
                    prune = prune.WithFlops(model.LayerFlops());
                    store.RecordPrune(key, prune, phases);
                    if (c.Ablation == "reinit") Ablations.Reinitialize(model, c.Seed);
                    Safetensors.Save(store.MaskPath(key),
                        mask.Layers.Select(l => (l.Item1, l.Item2)), new Dictionary<string, string> { ["config"] = c.CanonicalJson() });
                    parallel?.BroadcastFromRoot(mask.Layers.Select(l => l.Item2));
                }

                progress?.Phase(c, "training");
                var watch = Stopwatch.StartNew();
                using var trainLoader = new DataLoader(train, DistributedRun.BatchPerRank(c, parallel), shuffle: true, seed: c.Seed, augment: c.Augment, device: model.Device,
                    rank: parallel?.Rank ?? 0, worldSize: parallel?.Size ?? 1);
                using var testLoader = new DataLoader(test, 1000, shuffle: false, device: model.Device, rank: parallel?.Rank ?? 0, worldSize: parallel?.Size ?? 1);
                var options = TrainOptionsOf(c);
                var epochs = Trainer.Train(model, mask is null ? null : MaskDictionary(mask), trainLoader.Epoch, () => testLoader.Epoch(0),
                    options, p =>
                    {
                        if (p.Finished is { } e)
                            store?.RecordEpoch(key, new EpochMetrics(e.Epoch, e.TrainLoss, e.TrainTop1, e.LearningRate,
                                e.Test?.Loss, e.Test?.Top1, e.Test?.Top5, e.Seconds));
                        progress?.Training(c, p);
                    }, batchesPerEpoch: options.BatchesPerEpoch(trainLoader.BatchCount), parallel: parallel);
                phases["training"] = watch.Elapsed.TotalSeconds;

                if (store is not null)
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
                    Seeds = SeedsOf(c),
                    PaiVersion = PaiHost.Version,
                    LibtorchVersion = Libtorch.Version,
                    Started = started,
                    Finished = DateTimeOffset.UtcNow,
                };
                store?.Finish(key, record);
                return record;
            }
            finally
            {
                if (mask is not null) MaskModule.dispose(mask);
            }
        }
        catch (Exception e)
        {
            try { store?.Fail(key, e.Message); } catch (Exception) { /* the claim may be gone; the original error matters */ }
            throw;
        }
    }

}
