using System.Diagnostics;
using System.Text.Json;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.AutoS;
using Pai.Host.Distributed;

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
    /// <summary>Where the sweep stands, before each of its runs starts.</summary>
    void Sweep(SweepProgress progress) { }
}

/// <summary>Loaded data sets shared by the runs of one process (a sweep loads each once).</summary>
public sealed class DataCache : IDisposable
{
    readonly Dictionary<(string, string?, DatasetSplit), Dataset> sets = new();
    readonly Dictionary<string, (ImageFolder Train, ImageFolder Test)> folders = new();

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

    /// <summary>
    /// What a run of <paramref name="c"/> reads: its data set in memory (each split loaded on first use)
    /// or, for ImageNet, streamed from its JPEG folders (the folders indexed on first use).
    /// </summary>
    public RunData For(RunConfig c)
    {
        var name = DatasetRegistry.Canonical(c.Dataset);
        if (name != "imagenet")
            return RunData.InMemory(Get(name, c.DataDirectory, DatasetSplit.Train, c.SkipBadImages), () => Get(name, c.DataDirectory, DatasetSplit.Test, c.SkipBadImages));
        if (!folders.TryGetValue(c.DataDirectory ?? "", out var f))
            folders[c.DataDirectory ?? ""] = f = (DatasetRegistry.OpenImageFolder(name, DatasetSplit.Train, c.DataDirectory),
                DatasetRegistry.OpenImageFolder(name, DatasetSplit.Test, c.DataDirectory));
        return RunData.Streamed(DatasetRegistry.Info(name), f.Train, f.Test, c.SkipBadImages);
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
        var dataset = DatasetRegistry.Info(c.Dataset); // throws listing the valid names
        // More classes than the data set has would silently take them all: say so instead.
        if (c.CurvatureClasses > dataset.Classes)
            throw new ArgumentException($"--curvature-classes {c.CurvatureClasses} is more than the {dataset.Classes} classes of {dataset.Name}: take at most {dataset.Classes}, or 0 for the exact diagonal over every class");
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
        DeviceOf(c); // throws naming the fix when the device is unknown or not there
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
        // --curvature-classes configures the exact method only: elsewhere it must not change keys.
        if (c.Curvature != "exact") c = c with { CurvatureClasses = 0 };
        if (c.Criterion != Registry.learnedName) return c with { Predictor = null, PredictorHash = null };
        if (c.Predictor is null) throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE (train one with `./pai autos fit`)");
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
        || (c.Criterion != DenseCriterion && Criteria.readsHessianDiagonal(PaiPruning.ResolveCriterion(c.Criterion, TemperaturesOf(c))));

    // The settled --curvature (HessianEstimator.settle decides): "auto" for a criterion without
    // hdiag (no run key changes), and for one with it "exact" or "hutchinson".
    static string CurvatureSetting(RunConfig c)
    {
        var hutchinsonOptions = HutchinsonSettings.Select(RunSettings.Of)
            .Where(s => !Equals(s.Get(c), s.Get(DefaultConfig))).Select(s => s.Option);
        var settled = HessianEstimatorModule.settle(new CurvatureRequest(c.Curvature, ReadsHessianDiagonal(c), c.Criterion == Registry.learnedName,
            c.Model, ModelZoo.Contains(c.Model) ? FSharpOption<bool>.Some(ModelZoo.IsPiecewiseLinear(c.Model)) : FSharpOption<bool>.None, ListModule.OfSeq(hutchinsonOptions),
            c.CurvatureClasses));
        return settled.IsOk ? HessianEstimatorModule.setting(settled.ResultValue) : throw new ArgumentException(settled.ErrorValue);
    }

    /// <summary>The temperatures the built-in criteria's formulas take.</summary>
    public static Temperatures TemperaturesOf(RunConfig c) => new(c.GraspTemperature, c.HutchinsonTemperature);

    /// <summary>
    /// The Hessian diagonal's estimator and settings: exact for --curvature exact, Hutchinson
    /// otherwise (a configured run's "auto" only remains where no hdiag is read).
    /// </summary>
    public static CurvatureOptions CurvatureOf(RunConfig c) => new(
        HessianEstimatorModule.ofSetting(c.Curvature), c.Probes, ProbeScopeModule.parse(c.ProbeScope).ResultValue,
        c.HvpBudget ?? 0, c.AdaptiveTarget ?? 0, c.ExactLastLayer, c.ExactLayerSize, c.CurvatureClasses);

    /// <summary>Training options from a run configuration.</summary>
    public static TrainOptions TrainOptionsOf(RunConfig c) => new()
    {
        Epochs = c.Epochs,
        Optimizer = ChoiceOf<OptimizerKind>(c.Optimizer, "--optimizer"),
        LearningRate = c.LearningRate,
        LrWarmup = c.LrWarmup,
        Momentum = c.Momentum,
        Nesterov = c.Nesterov,
        WeightDecay = c.WeightDecay,
        Schedule = ChoiceOf<LrSchedule>(c.Schedule, "--schedule"),
        Milestones = c.Milestones,
        Gamma = c.Gamma,
        LabelSmoothing = c.LabelSmoothing,
        MaxBatchesPerEpoch = c.MaxBatchesPerEpoch,
        SparseKernels = ChoiceOf<SparseKernelMode>(c.SparseKernels, "--sparse-kernels"),
    };

    // A setting's text as its enum case ("adamw" is AdamW, "multistep" MultiStep).
    static T ChoiceOf<T>(string text, string option) where T : struct, Enum =>
        Enum.TryParse<T>(text, ignoreCase: true, out var value) && Enum.IsDefined(value)
            ? value
            : throw new ArgumentException($"{option}: unknown value '{text}'; valid: {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}");

    /// <summary>The F# prune specification of a run.</summary>
    public static PruneSpec PruneSpecOf(RunConfig c, Criterion criterion) => new(
        c.Sparsity,
        c.Scope == "layer" ? Scope.PerLayer : Scope.Global,
        c.Rounds ?? criterion.DefaultRounds,
        Schedule.Exponential,
        c.WarmupBatches,
        CurvatureOf(c),
        c.KeepOnePerLayer,
        c.Seed);

    /// <summary>
    /// Bumped whenever a statistic's values or what a stored statistic file holds change, so that
    /// a results store written by an older Pai recomputes instead of reading stale values
    /// (version 3: statistics instead of criterion scores, keyed by the data and scoring settings;
    /// version 4: batch-independent statistics read merged scoring batches, equal to float rounding).
    /// </summary>
    public const int StatisticsCacheVersion = 4;

    /// <summary>The cache key of one statistic of a run: its data and scoring settings and the statistic's name.</summary>
    public static string StatisticCacheKey(RunConfig c, string statistic) =>
        $"v{StatisticsCacheVersion}-{c.StatisticsKey}-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(statistic)))[..12];

    /// <summary>
    /// The device a run computes on: <see cref="RunConfig.Device"/>, or CUDA when this libtorch sees a
    /// GPU and the CPU otherwise. A device that is not there is an ArgumentException naming the fix.
    /// </summary>
    public static Device DeviceOf(RunConfig c)
    {
        if (c.Device is null) return Libtorch.CudaIsAvailable && Libtorch.CudaDeviceCount > 0 ? Device.Cuda(0) : Device.Cpu;
        var device = Device.Parse(c.Device);
        if (device.Type == DeviceType.Cuda && !Libtorch.CudaIsAvailable)
            throw new ArgumentException($"--device {c.Device}: this libtorch has no CUDA (Debian's is CPU-only); build Pai against PyTorch's CUDA libtorch (README, \"GPUs\") or use --device cpu");
        if (device.Type == DeviceType.Cuda && device.Index >= Libtorch.CudaDeviceCount)
            throw new ArgumentException($"--device {c.Device}: only {Libtorch.CudaDeviceCount} CUDA device(s) are visible (cuda:0 … cuda:{Libtorch.CudaDeviceCount - 1})");
        return device;
    }

    /// <summary>Builds the model a run trains (initialized with the run's seed).</summary>
    public static Model CreateModel(RunConfig c, RunData data) => ModelZoo.Create(c.Model, new ModelOptions
    {
        Device = DeviceOf(c),
        InputShape = data.InputShape,
        Classes = data.Classes,
        Seed = c.Seed,
        DenseClassifier = c.DenseClassifier,
    });

    /// <summary>The run's criterion: a built-in at the run's temperatures, a formula, or the AutoS predictor's.</summary>
    public static Criterion CriterionOf(RunConfig c, Predictor? predictor) =>
        c.Criterion == Registry.learnedName
            ? (predictor ?? throw new ArgumentException("the criterion 'autos' needs its predictor")).Criterion(c.HutchinsonTemperature)
            : PaiPruning.ResolveCriterion(c.Criterion, TemperaturesOf(c));

    /// <summary>What a run logs when it asks for BN warm-up on a model without batch norm (a sweep says it once).</summary>
    public static string NoBatchNormNote(string model) => $"{model} has no batch norm: BN warm-up does nothing and is skipped";

    /// <summary>
    /// Prunes a freshly initialized model as the config says. Returns the mask (owned by the
    /// caller) and report. With a store, the statistics of the first round are read from it when
    /// stored by an earlier run with the same data and scoring settings, and stored otherwise (a
    /// damaged file is reported, recomputed and replaced).
    /// </summary>
    public static PruneResult Prune(RunConfig c, Model model, RunData data, IRunStore? store, Action<string> log, string? scoresPath = null)
    {
        using var predictor = c.Criterion == Registry.learnedName ? LoadPredictor(c) : null;
        var criterion = CriterionOf(c, predictor);
        if (c.Ablation == "invert")
            criterion = new Criterion($"-({criterion.Name})", Expr.NewNegation(criterion.Formula), criterion.DefaultRounds);
        if (c.WarmupBatches > 0 && !model.BatchNorms.Any())
            log(NoBatchNormNote(model.Name));
        var known = store is null ? [] : LoadStatistics(store, c, criterion, model, log);
        using var scoring = data.Scoring(c.SamplesPerClass, c.Seed, c.ScoringBatchSize, model.Device);
        using var warmupLoader = data.Train(c.BatchSize, c.Seed, augment: false, model.Device);
        var warmup = model.BatchNorms.Any() ? warmupLoader.Epoch(0) : [];
        var spec = PruneSpecOf(c with { WarmupBatches = model.BatchNorms.Any() ? c.WarmupBatches : 0 }, criterion);
        PruneResult result;
        using (ScoringProgress.Install(ProgressLines(log)))
            result = PaiPruning.Prune(spec, criterion, model, data.InputShape.Dimensions, scoring, warmup, known, log);
        try
        {
            if (scoresPath is not null)
                using (var scope = new DisposeScope())
                    Safetensors.Save(Path.GetFullPath(scoresPath), result.Scores.Layers.Select(l => (l.Item1, l.Item2.To(DType.Float32))),
                        new Dictionary<string, string> { ["config"] = c.CanonicalJson(), ["criterion"] = criterion.Name, ["formula"] = Formula.render(criterion.Formula) });
            if (store is not null)
                foreach (var (name, value) in result.Statistics)
                    SaveStatistic(store.StatisticPath(StatisticCacheKey(c, name)), name, value, model.Prunable.Select(p => p.Key));
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
        foreach (var statistic in Criteria.storedStatistics(criterion))
        {
            var path = store.StatisticPath(StatisticCacheKey(c, statistic.Name));
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
            progress?.Phase(c, "data");
            var runData = data.For(c);
            using var model = CreateModel(c, runData);

            PrunedModel? pruned = null;
            try
            {
                if (c.Criterion != DenseCriterion && store is null)
                    pruned = new PrunedModel(DistributedRun.ReceiveMask(parallel!, model), null, new Dictionary<string, double>());
                else if (c.Criterion != DenseCriterion && store is not null)
                {
                    progress?.Phase(c, "warmup+scoring");
                    pruned = PruneForRun(c, model, runData, store, m => progress?.Log(c, m));
                    store.RecordPrune(key, pruned.Summary!, pruned.Phases);
                    Safetensors.Save(store.MaskPath(key),
                        pruned.Mask.Layers.Select(l => (l.Item1, l.Item2)), new Dictionary<string, string> { ["config"] = c.CanonicalJson() });
                    parallel?.BroadcastFromRoot(pruned.Mask.Layers.Select(l => l.Item2));
                }

                var record = TrainForRun(c, model, pruned, runData, started, progress, (p, e) =>
                {
                    if (p.Finished is not null) store?.RecordEpoch(key, e!);
                }, parallel);
                if (store is not null)
                {
                    Safetensors.Save(store.CheckpointPath(key),
                        model.State(),
                        new Dictionary<string, string> { ["config"] = c.CanonicalJson() });
                    store.Finish(key, record);
                }
                return record;
            }
            finally
            {
                if (pruned is not null) MaskModule.dispose(pruned.Mask);
            }
        }
        catch (Exception e)
        {
            try { store?.Fail(key, e.Message); } catch (Exception) { /* the claim may be gone; the original error matters */ }
            throw;
        }
    }

    /// <summary>
    /// The pruning half of a run: BN warm-up and scoring on <paramref name="model"/> (which keeps the
    /// warmed-up statistics, as training starts from them), the mask, its summary and phase timings,
    /// and the reinit ablation applied to the model. The mask is owned by the caller.
    /// </summary>
    public static PrunedModel PruneForRun(RunConfig c, Model model, RunData data, IRunStore? store, Action<string> log)
    {
        var result = Prune(c, model, data, store, log);
        var summary = new PruneSummary(result.Report.Criterion,
            result.Report.Layers.Select(l => new LayerDensityRecord(l.Name, l.Kept, l.Total)).ToList(),
            result.Report.Collapsed.ToList(), result.Report.Rounds, result.Report.Density,
            result.Report.Curvature.Select(CurvatureRecord.Of).ToList()).WithFlops(model.LayerFlops());
        if (c.Ablation == "reinit") Ablations.Reinitialize(model, c.Seed);
        return new PrunedModel(result.Mask, summary, result.Report.Seconds.ToDictionary(p => p.Item1, p => p.Item2));
    }

    /// <summary>
    /// The training half of a run: trains <paramref name="model"/> (masked when <paramref name="pruned"/>
    /// is given) and returns the finished record, without writing it anywhere. <paramref name="epoch"/>
    /// sees every progress report, with the epoch's metrics when one finished.
    /// </summary>
    public static RunRecord TrainForRun(RunConfig c, Model model, PrunedModel? pruned, RunData data, DateTimeOffset started,
        IRunProgress? progress = null, Action<TrainProgress, EpochMetrics?>? epoch = null, DataParallel? parallel = null)
    {
        progress?.Phase(c, "training");
        var phases = new Dictionary<string, double>(pruned?.Phases ?? new Dictionary<string, double>());
        var watch = Stopwatch.StartNew();
        using var trainLoader = data.Train(DistributedRun.BatchPerRank(c, parallel), c.Seed, c.Augment, model.Device, parallel?.Rank ?? 0, parallel?.Size ?? 1);
        using var testLoader = data.Test(EvalBatchSize(data), model.Device, parallel?.Rank ?? 0, parallel?.Size ?? 1);
        var options = TrainOptionsOf(c);
        var announced = pruned is null || parallel is not null || options.SparseKernels == SparseKernelMode.Off;
        var epochs = Trainer.Train(model, pruned is null ? null : MaskDictionary(pruned.Mask), trainLoader.Epoch, () => testLoader.Epoch(0),
            options, p =>
            {
                if (!announced) progress?.Log(c, Trainer.DescribeSparseLayers(options.SparseKernels, p.SparseLayers));
                announced = true;
                epoch?.Invoke(p, p.Finished is { } e ? MetricsOf(e) : null);
                progress?.Training(c, p);
            }, batchesPerEpoch: options.BatchesPerEpoch(trainLoader.BatchCount), parallel: parallel);
        phases["training"] = watch.Elapsed.TotalSeconds;
        var last = epochs[^1];
        return new RunRecord
        {
            Key = c.Key,
            Config = c,
            Status = RunStatus.Finished,
            Epochs = epochs.Select(MetricsOf).ToList(),
            FinalTop1 = last.Test?.Top1,
            FinalTop5 = last.Test?.Top5,
            FinalLoss = last.Test?.Loss,
            PhaseSeconds = phases,
            Prune = pruned?.Summary?.WithKernels(last.SparseLayers),
            Seeds = SeedsOf(c),
            PaiVersion = PaiHost.Version,
            LibtorchVersion = Libtorch.Version,
            Started = started,
            Finished = DateTimeOffset.UtcNow,
        };
    }

    /// <summary>Test batch size: 1000 small images, or 100 at ImageNet's 224×224 (0.6 GB of floats a batch).</summary>
    public static int EvalBatchSize(RunData data) => data.InputShape.Height * data.InputShape.Width > 128 * 128 ? 100 : 1000;

    static EpochMetrics MetricsOf(EpochResult e) =>
        new(e.Epoch, e.TrainLoss, e.TrainTop1, e.LearningRate, e.Test?.Loss, e.Test?.Top1, e.Test?.Top5, e.Seconds);
}

/// <summary>A model's mask after the pruning half of a run (<see cref="Experiment.PruneForRun"/>): the mask (owned by the holder), its summary (null when received from rank 0) and phase timings.</summary>
public sealed record PrunedModel(Mask Mask, PruneSummary? Summary, IReadOnlyDictionary<string, double> Phases);
