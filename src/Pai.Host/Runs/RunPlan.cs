using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.AutoS;

namespace Pai.Host.Runs;

/// <summary>The sanity-check ablation of a mask (docs/architecture.md §5b).</summary>
public enum Ablation
{
    /// <summary>The mask as the criterion chose it.</summary>
    None,
    /// <summary>Each layer's mask permuted (keeps the layer densities).</summary>
    Shuffle,
    /// <summary>The mask applied to fresh initial weights.</summary>
    Reinit,
    /// <summary>The lowest scores kept.</summary>
    Invert,
}

/// <summary>What a run prunes with: nothing (the dense baseline), a criterion, or the AutoS predictor's learned criterion.</summary>
public abstract record PlannedCriterion
{
    PlannedCriterion() { }

    /// <summary>No pruning: the dense baseline.</summary>
    public sealed record Dense : PlannedCriterion;

    /// <summary>A built-in criterion at the run's temperatures, or a formula.</summary>
    public sealed record Scored(Criterion Criterion) : PlannedCriterion;

    /// <summary>
    /// The AutoS predictor's criterion: the predictor is a network, loaded when the run prunes
    /// (and checked against the content hash the run was configured with).
    /// </summary>
    public sealed record Learned(string Predictor, string Hash, double HessianTemperature) : PlannedCriterion;
}

/// <summary>
/// A run, settled and typed once: the canonical <see cref="RunConfig"/> (its key and record) and
/// every decision taken from it — the criterion, the ablation, the ranking (pruning scope), the Hessian
/// diagonal's estimator, the training options and the device. Everything downstream of
/// <see cref="Of"/> reads these values; nothing parses a setting's text again.
/// </summary>
public sealed record RunPlan
{
    RunPlan(RunConfig config)
    {
        Config = config;
        Criterion = config.Criterion == RunConfig.DenseCriterion ? new PlannedCriterion.Dense()
            : config.Criterion == Registry.learnedName ? new PlannedCriterion.Learned(config.Predictor!, config.PredictorHash!, config.HutchinsonTemperature)
            : new PlannedCriterion.Scored(Resolve(config.Criterion, TemperaturesOf(config)));
        Ablation = Enum.Parse<Ablation>(config.Ablation, ignoreCase: true);
        Ranking = config.Scope == "layer" ? Ranking.PerLayer : Ranking.Global;
        Curvature = CurvatureOf(config);
        Train = TrainOptionsOf(config);
        Device = DeviceOf(config.Device);
    }

    /// <summary>The canonical configuration: the run's identity and what its record stores.</summary>
    public RunConfig Config { get; }

    /// <summary>The run key (<see cref="RunConfig.Key"/>).</summary>
    public string Key => Config.Key;

    /// <summary>What the run prunes with.</summary>
    public PlannedCriterion Criterion { get; }

    /// <summary>Whether the run is the dense baseline (no pruning).</summary>
    public bool IsDense => Criterion is PlannedCriterion.Dense;

    /// <summary>The ablation applied to the mask or the weights.</summary>
    public Ablation Ablation { get; }

    /// <summary>Whether the mask ranks all layers together or each layer on its own (--scope).</summary>
    public Ranking Ranking { get; }

    /// <summary>The Hessian diagonal's estimator and its settings.</summary>
    public CurvatureOptions Curvature { get; }

    /// <summary>The training options.</summary>
    public TrainOptions Train { get; }

    /// <summary>Where the run computes.</summary>
    public Device Device { get; }

    /// <summary>
    /// Settles a configuration (<see cref="Canonical"/>), checks it (<see cref="Validate"/>) and
    /// types it; throws ArgumentException naming the problem and the fix.
    /// </summary>
    public static RunPlan Of(RunConfig config) => Stored(Canonical(config));

    /// <summary>
    /// The plan of a configuration settled before (read back from a results store): checked and
    /// typed, not settled again, so that a changed predictor file is an error when the run prunes
    /// instead of silently another run.
    /// </summary>
    public static RunPlan Stored(RunConfig canonical)
    {
        Validate(canonical);
        return new RunPlan(canonical);
    }

    /// <summary>
    /// The configuration in canonical form, so that equal experiments get equal keys: model and
    /// data set names in lower case; a built-in criterion by its name, a formula by its canonical
    /// text; --curvature settled (<see cref="HessianEstimatorModule.settle"/>); for "autos", the
    /// predictor path made absolute and its content hash recorded (part of the run key); for any
    /// other criterion, no predictor at all (a stray --predictor does not change other runs' keys).
    /// </summary>
    public static RunConfig Canonical(RunConfig c)
    {
        c = c with { Model = c.Model.Trim().ToLowerInvariant(), Dataset = c.Dataset.Trim().ToLowerInvariant(), ProbeScope = c.ProbeScope.Trim().ToLowerInvariant() };
        var criterion = c.Criterion.Trim();
        if (criterion.Equals(RunConfig.DenseCriterion, StringComparison.OrdinalIgnoreCase)) c = c with { Criterion = RunConfig.DenseCriterion };
        else if (criterion.Equals(Registry.learnedName, StringComparison.OrdinalIgnoreCase)) c = c with { Criterion = Registry.learnedName };
        else c = c with { Criterion = Resolve(criterion, TemperaturesOf(c)).Name };
        c = c with { Curvature = CurvatureSetting(c) };
        // --curvature-classes configures the exact method only: elsewhere it must not change keys.
        if (c.Curvature != "exact") c = c with { CurvatureClasses = 0 };
        if (c.Criterion != Registry.learnedName) return c with { Predictor = null, PredictorHash = null };
        if (c.Predictor is null) throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE (train one with `./pai autos fit`)");
        var path = Path.GetFullPath(c.Predictor);
        return c with { Predictor = path, PredictorHash = AutoS.Predictor.ContentHash(path) };
    }

    /// <summary>
    /// Checks every setting (finite, in range, a known choice, from the declarations in
    /// <see cref="RunConfig"/>) and how they fit together; throws ArgumentException naming the
    /// problem and the fix. Expects a configuration from <see cref="Canonical"/>.
    /// </summary>
    public static void Validate(RunConfig c)
    {
        if (RunSettings.Problems(c).FirstOrDefault() is { } problem) throw new ArgumentException(problem);
        if (!ModelZoo.Contains(c.Model))
            throw new ArgumentException($"unknown model '{c.Model}'; valid models: {string.Join(", ", ModelZoo.Names)}");
        var dataset = DatasetRegistry.Info(c.Dataset); // throws listing the valid names
        // More classes than the data set has would silently take them all: say so instead.
        if (c.CurvatureClasses > dataset.Classes)
            throw new ArgumentException($"--curvature-classes {c.CurvatureClasses} is more than the {dataset.Classes} classes of {dataset.Name}: " +
                                        $"take at most {dataset.Classes}, or 0 for the exact diagonal over every class");
        if (c.Criterion != RunConfig.DenseCriterion)
        {
            if (c.Criterion == Registry.learnedName && c.Predictor is null)
                throw new ArgumentException("the criterion 'autos' needs a predictor file: --predictor FILE");
            if (c.Criterion == Registry.learnedName && c.PredictorHash is null)
                throw new ArgumentException("an autos run needs the predictor's content hash in its configuration: build it with RunPlan.Of");
            if (c.Criterion != Registry.learnedName) Resolve(c.Criterion, TemperaturesOf(c));
        }
        else
        {
            if (c.Sparsity != 0)
                throw new ArgumentException($"a dense run has sparsity 0, got {c.Sparsity}; pick a criterion to prune (-c snip, say)");
            if (c.Ablation != "none")
                throw new ArgumentException($"the ablation '{c.Ablation}' changes a mask: it needs a criterion and a sparsity");
        }
        DeviceOf(c.Device); // throws naming the fix when the device is unknown or not there
        if (ProbeScopeModule.parse(c.ProbeScope) is { IsError: true } scope) throw new ArgumentException(scope.ErrorValue);
        if (c.AdaptiveTarget is not null && c.HvpBudget is null) throw new ArgumentException("the adaptive mode needs --hvp-budget as its cap");
        if (c.Curvature == "auto" && c.Criterion != RunConfig.DenseCriterion && ReadsHessianDiagonal(c))
            throw new ArgumentException("--curvature auto is settled by RunPlan.Of (exact or hutchinson, by the model): configure the run first");
        TrainOptionsOf(c).Validate();
    }

    static Criterion Resolve(string criterion, Temperatures temperatures) => PaiPruning.ResolveCriterion(criterion, temperatures);

    static readonly RunConfig DefaultConfig = new();

    /// <summary>Whether the configured criterion reads the Hessian diagonal (hdiag), so that --curvature matters.</summary>
    public static bool ReadsHessianDiagonal(RunConfig c) =>
        c.Criterion == Registry.learnedName
        || (c.Criterion != RunConfig.DenseCriterion && Criteria.readsHessianDiagonal(Resolve(c.Criterion, TemperaturesOf(c))));

    // The settled --curvature (HessianEstimator.settle decides): "auto" for a criterion without
    // hdiag (no run key changes), and for one with it "exact" or "hutchinson".
    static string CurvatureSetting(RunConfig c)
    {
        var hutchinsonOptions = RunSettings.All.Where(s => s.Declaration.HutchinsonOnly && !Equals(s.Get(c), s.Get(DefaultConfig))).Select(s => s.Option);
        var settled = HessianEstimatorModule.settle(new CurvatureRequest(c.Curvature, ReadsHessianDiagonal(c), c.Criterion == Registry.learnedName,
            c.Model, ModelZoo.Contains(c.Model) ? FSharpOption<bool>.Some(ModelZoo.IsPiecewiseLinear(c.Model)) : FSharpOption<bool>.None,
            ListModule.OfSeq(hutchinsonOptions), c.CurvatureClasses));
        return settled.IsOk ? HessianEstimatorModule.setting(settled.ResultValue) : throw new ArgumentException(settled.ErrorValue);
    }

    /// <summary>The temperatures the built-in criteria's formulas take.</summary>
    public static Temperatures TemperaturesOf(RunConfig c) => new(c.GraspTemperature, c.HutchinsonTemperature);

    /// <summary>
    /// The Hessian diagonal's estimator and settings of a configuration: exact for --curvature exact,
    /// Hutchinson otherwise (a settled run's "auto" only remains where no hdiag is read).
    /// </summary>
    public static CurvatureOptions CurvatureOf(RunConfig c) => new(
        HessianEstimatorModule.ofSetting(c.Curvature), c.Probes, ProbeScopeModule.parse(c.ProbeScope).ResultValue,
        c.HvpBudget ?? 0, c.AdaptiveTarget ?? 0, c.ExactLastLayer, c.ExactLayerSize, c.CurvatureClasses);

    static TrainOptions TrainOptionsOf(RunConfig c) => new()
    {
        Optimizer = ChoiceOf<OptimizerKind>(c.Optimizer, "--optimizer"),
        Schedule = ChoiceOf<LrSchedule>(c.Schedule, "--schedule"),
        SparseKernels = ChoiceOf<SparseKernelMode>(c.SparseKernels, "--sparse-kernels"),
        Epochs = c.Epochs, MaxBatchesPerEpoch = c.MaxBatchesPerEpoch,
        LearningRate = c.LearningRate, LrWarmup = c.LrWarmup, Milestones = c.Milestones, Gamma = c.Gamma,
        Momentum = c.Momentum, Nesterov = c.Nesterov, WeightDecay = c.WeightDecay, LabelSmoothing = c.LabelSmoothing,
    };

    // A setting's text as its enum case ("adamw" is AdamW, "multistep" MultiStep).
    static T ChoiceOf<T>(string text, string option) where T : struct, Enum =>
        Enum.TryParse<T>(text, ignoreCase: true, out var value) && Enum.IsDefined(value)
            ? value
            : throw new ArgumentException($"{option}: unknown value '{text}'; valid: {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}");

    /// <summary>
    /// The device of a --device setting (<see cref="RunConfig.Device"/>): the one named, or for none
    /// CUDA when this libtorch sees a GPU and the CPU otherwise. A device that is not there is an
    /// ArgumentException naming the fix.
    /// </summary>
    public static Device DeviceOf(string? setting)
    {
        if (setting is null) return Libtorch.CudaIsAvailable && Libtorch.CudaDeviceCount > 0 ? Device.Cuda(0) : Device.Cpu;
        var device = Device.Parse(setting);
        if (device.Type == DeviceType.Cuda && !Libtorch.CudaIsAvailable)
            throw new ArgumentException($"--device {setting}: this libtorch has no CUDA (Debian's is CPU-only); build Pai against PyTorch's CUDA libtorch (README, \"GPUs\") or use --device cpu");
        if (device.Type == DeviceType.Cuda && device.Index >= Libtorch.CudaDeviceCount)
            throw new ArgumentException($"--device {setting}: only {Libtorch.CudaDeviceCount} CUDA device(s) are visible (cuda:0 … cuda:{Libtorch.CudaDeviceCount - 1})");
        return device;
    }

    /// <summary>The F# prune specification (rounds: the configured number, or the criterion's default).</summary>
    public PruneSpec PruneSpecFor(Criterion criterion, bool warmsUp) => new(
        Config.Sparsity, Ranking, Config.Rounds ?? criterion.DefaultRounds, Schedule.Exponential,
        warmsUp ? Config.WarmupBatches : 0, Curvature, Config.KeepOnePerLayer, Config.Seed);

    /// <summary>Every seed the run uses, by purpose (recorded with the run).</summary>
    public Dictionary<string, ulong> Seeds()
    {
        var seed = Config.Seed;
        var seeds = new Dictionary<string, ulong> { ["init"] = seed, ["scoring"] = seed, ["probes"] = seed, ["data"] = seed };
        if (Ablation == Ablation.Reinit) seeds["reinit"] = Ablations.ReinitSeed(seed);
        if (Ablation == Ablation.Shuffle) seeds["shuffle"] = seed;
        return seeds;
    }
}
