using Microsoft.FSharp.Collections;

namespace Pai.Host;

/// <summary>
/// A run as a pipeline of immutable records, for scripts (<c>pipelines/*.fsx</c>) and programs:
/// <c>data |&gt; model |&gt; score criterion |&gt; prune 0.98 |&gt; train budget |&gt; record store</c>.
/// Each stage carries the <see cref="RunConfig"/> built so far; pruning and training run through
/// the same code as <c>pai run</c> (<see cref="Runner.Prune"/>, <see cref="Runner.Train"/>),
/// so a pipeline gives the run key, mask and accuracy of the equivalent command, bit for bit.
/// Records hold managed copies of weights and masks (<see cref="TensorSnapshot"/>), never native
/// tensors: a record needs no disposing, and one pruned record can be trained with several budgets.
/// </summary>
public static class Pipeline
{
    // Data sets are read-only inputs shared by every stage of every pipeline in the process.
    static readonly DataCache data = new();
    static readonly Lock dataLock = new();

    /// <summary>
    /// Starts a pipeline on a data set (see <c>pai list datasets</c>) with the default settings; the
    /// model chosen next brings its optimizer and learning rate, as on the command line.
    /// </summary>
    public static DataStage Data(string dataset, string? directory = null) =>
        new(new RunConfig { Dataset = DatasetRegistry.Canonical(dataset), DataDirectory = directory }, ModelDefaults: true);

    /// <summary>Starts a pipeline from a configuration, every setting of which (seed, warm-up, optimizer, learning rate, …) the run keeps as given.</summary>
    public static DataStage From(RunConfig config) => new(config with { Dataset = DatasetRegistry.Canonical(config.Dataset) }, ModelDefaults: false);

    internal static RunData Load(RunConfig c)
    {
        lock (dataLock) return data.For(c);
    }
}

/// <summary>A pipeline that has chosen its data.</summary>
/// <param name="Config">The run so far.</param>
/// <param name="ModelDefaults">Whether the model brings its optimizer, learning rate and warm-up (<see cref="ModelZoo.WithTrainingDefaults"/>).</param>
public sealed record DataStage(RunConfig Config, bool ModelDefaults)
{
    /// <summary>Chooses the model (see <c>pai list models</c>).</summary>
    public ModelStage Model(string name)
    {
        var c = Config with { Model = name };
        if (ModelDefaults) c = ModelZoo.WithTrainingDefaults(c);
        return new ModelStage(PaiHost.Configure(c));
    }
}

/// <summary>A pipeline that has chosen its data and model.</summary>
/// <param name="Config">The run so far.</param>
public sealed record ModelStage(RunConfig Config)
{
    /// <summary>
    /// Chooses the criterion, an F# value (a built-in from <c>Registry</c> or any <c>Criteria.ofFormula</c>).
    /// A built-in is recorded by its name, any other criterion by its canonical formula text, so
    /// the run key equals that of <c>pai run -c NAME</c> or <c>-c "FORMULA"</c>.
    /// </summary>
    public CriterionStage Score(Criterion criterion) =>
        Score(Registry.names.Contains(criterion.Name) && criterion.Name != Registry.learnedName &&
              Formula.render(Registry.resolve(RunPlan.TemperaturesOf(Config), criterion.Name).ResultValue.Formula) == Formula.render(criterion.Formula)
            ? criterion.Name
            : Formula.render(criterion.Formula));

    /// <summary>Chooses the criterion by name (<c>pai list criteria</c>) or formula text, e.g. "abs(theta * grad)".</summary>
    public CriterionStage Score(string criterion)
    {
        // A criterion needs a sparsity to validate; 0.5 stands in until prune sets the real one.
        var c = Config with { Criterion = criterion, Sparsity = 0.5 };
        PaiHost.Configure(c);
        return new CriterionStage(Config with { Criterion = criterion });
    }

    /// <summary>Skips pruning: the dense baseline.</summary>
    public PrunedStage Dense() => new(PaiHost.Configure(Config with { Criterion = RunConfig.DenseCriterion, Sparsity = 0 }), null, null, null);
}

/// <summary>
/// A pipeline that has chosen its criterion; scoring runs in <see cref="Prune"/>, since iterative
/// criteria (SynFlow's 100 rounds) rescore the masked model at each round towards the sparsity.
/// </summary>
/// <param name="Config">The run so far.</param>
public sealed record CriterionStage(RunConfig Config)
{
    /// <summary>
    /// Initializes the model from the run's seed, warms up batch norm, scores and keeps the top
    /// 1 − <paramref name="sparsity"/> of the prunable weights. Statistics come from and go to
    /// <paramref name="store"/> when one is given (as in <c>pai run</c>); <paramref name="progress"/>
    /// hears of each phase and what scoring says on the way, as <c>pai run</c> shows it.
    /// </summary>
    public PrunedStage Prune(double sparsity, IRunStore? store = null, IRunProgress? progress = null)
    {
        var plan = RunPlan.Of(Config with { Sparsity = sparsity });
        var c = plan.Config;
        progress?.Phase(c, "data");
        var data = Pipeline.Load(c);
        using var model = Runner.CreateModel(plan, data);
        progress?.Phase(c, "warmup+scoring");
        var pruned = Runner.Prune(plan, model, data, store, m => progress?.Log(c, m));
        try
        {
            return new PrunedStage(c, pruned.Summary, TensorSnapshot.Of(pruned.Mask.Layers.Select(l => (l.Item1, l.Item2))),
                TensorSnapshot.Of(model.State()), pruned.Phases);
        }
        finally
        {
            MaskModule.dispose(pruned.Mask);
        }
    }
}

/// <summary>A pruned (or dense) network, ready to train.</summary>
/// <param name="Config">The run so far.</param>
/// <param name="Summary">Per-layer densities, collapsed layers, rounds, curvature diagnostics (null for the dense baseline).</param>
/// <param name="Mask">The mask, per prunable layer (null for the dense baseline).</param>
/// <param name="Weights">Parameters and buffers after pruning: BN warm-up statistics and the reinit ablation included (null: the fresh initialization).</param>
/// <param name="Phases">Seconds per pruning phase (warm-up, scoring, selection).</param>
public sealed record PrunedStage(RunConfig Config, PruneSummary? Summary, TensorSnapshot? Mask, TensorSnapshot? Weights,
    IReadOnlyDictionary<string, double>? Phases = null)
{
    /// <summary>Fraction of prunable weights kept (1 for the dense baseline).</summary>
    public double Density => Summary?.Density ?? 1.0;

    /// <summary>
    /// Trains the network (masked weights stay zero) for <paramref name="budget"/> and returns the
    /// finished, not yet recorded, run; <paramref name="progress"/> hears of every batch and epoch.
    /// </summary>
    public TrainedStage Train(Budget budget, IRunProgress? progress = null)
    {
        var plan = RunPlan.Of(Config with { Epochs = budget.Epochs, MaxBatchesPerEpoch = budget.MaxBatchesPerEpoch });
        var data = Pipeline.Load(plan.Config);
        using var scope = new DisposeScope();
        using var model = Runner.CreateModel(plan, data);
        Weights?.CopyInto(model.State());
        var maskTensors = Mask?.ToTensors(model.Device);
        var mask = maskTensors is null ? null : new Mask(ListModule.OfSeq(maskTensors.Select(t => Tuple.Create(t.Name, t.Tensor))));
        var pruned = mask is null ? null : new PrunedModel(mask, Summary, Phases ?? new Dictionary<string, double>());
        var record = Runner.Train(plan, model, pruned, data, DateTimeOffset.UtcNow, progress);
        return new TrainedStage(record, Mask, TensorSnapshot.Of(model.State()));
    }
}

/// <summary>How long to train: epochs, and optionally at most so many batches per epoch (short budgets).</summary>
public sealed record Budget(int Epochs, int? MaxBatchesPerEpoch = null);

/// <summary>A trained run, not yet in any store.</summary>
/// <param name="Run">The finished record: configuration, key, every epoch, final metrics, prune summary, seeds, versions.</param>
/// <param name="Mask">The mask it trained with (null: dense).</param>
/// <param name="Weights">The trained parameters and buffers.</param>
public sealed record TrainedStage(RunRecord Run, TensorSnapshot? Mask, TensorSnapshot Weights)
{
    /// <summary>Final test top-1 accuracy.</summary>
    public double? Top1 => Run.FinalTop1;

    /// <summary>
    /// Writes the run into <paramref name="store"/> as <c>pai run</c> does (prune summary, epochs, mask
    /// and checkpoint files, final record) and returns the stored record. A run of the same key that the
    /// store already finished is kept as it is and returned: a rerun script does not duplicate results.
    /// </summary>
    public RunRecord Record(IRunStore store)
    {
        var c = Run.Config;
        var key = store.Register(c);
        if (store.Get(key) is { Status: RunStatus.Finished } earlier) return earlier;
        if (!store.TryClaim(key, retryFailed: true))
            throw new RunStoreException($"run {key} ({c.Label}) is being worked on by another process in {store.Location}; record it after that run ends, or use another store");
        try
        {
            if (Run.Prune is { } prune) store.RecordPrune(key, prune, Run.PhaseSeconds.Where(p => p.Key != "training").ToDictionary());
            foreach (var e in Run.Epochs) store.RecordEpoch(key, e);
            using var scope = new DisposeScope();
            store.Record(Run, Mask?.ToTensors().Select(t => (t.Name, t.Tensor)), Weights.ToTensors().Select(t => (t.Name, t.Tensor)));
            return store.Get(key)!;
        }
        catch (Exception e) when (e is not RunStoreUnavailableException)
        {
            try { store.Fail(key, e.Message); } catch (Exception) { /* the original error matters */ }
            throw;
        }
    }
}

/// <summary>
/// A managed, immutable copy of named tensors (weights, buffers, a mask): what pipeline records
/// hold instead of native tensors.
/// </summary>
public sealed class TensorSnapshot
{
    readonly (string Name, DType Type, long[] Shape, Array Values)[] entries;

    TensorSnapshot((string, DType, long[], Array)[] entries) => this.entries = entries;

    /// <summary>The names, in order.</summary>
    public IReadOnlyList<string> Names => entries.Select(e => e.Name).ToArray();

    /// <summary>Copies the tensors out (any device).</summary>
    public static TensorSnapshot Of(IEnumerable<(string Name, Tensor Tensor)> tensors) =>
        new(tensors.Select(t => (t.Name, t.Tensor.DType, t.Tensor.Shape, CopyOut(t.Tensor))).ToArray());

    static Array CopyOut(Tensor t)
    {
        using var cpu = t.To(Device.Cpu);
        return t.DType switch
        {
            DType.Float32 => cpu.ToArray<float>(),
            DType.Float64 => cpu.ToArray<double>(),
            DType.Int64 => cpu.ToArray<long>(),
            DType.Int32 => cpu.ToArray<int>(),
            DType.UInt8 => cpu.ToArray<byte>(),
            DType.Bool => cpu.ToArray<bool>(),
            _ => throw new NotSupportedException($"cannot snapshot a {t.DType} tensor"),
        };
    }

    /// <summary>New tensors with the snapshot's values, on <paramref name="device"/> (CPU by default); free them with a dispose scope.</summary>
    public (string Name, Tensor Tensor)[] ToTensors(Device? device = null) =>
        entries.Select(e => (e.Name, e.Values switch
        {
            float[] a => Libtorch.FromArray(a, e.Shape, device),
            double[] a => Libtorch.FromArray(a, e.Shape, device),
            long[] a => Libtorch.FromArray(a, e.Shape, device),
            int[] a => Libtorch.FromArray(a, e.Shape, device),
            byte[] a => Libtorch.FromArray(a, e.Shape, device),
            bool[] a => Libtorch.FromArray(a, e.Shape, device),
            _ => throw new NotSupportedException(e.Values.GetType().Name),
        })).ToArray();

    /// <summary>Copies the values into existing tensors of the same names and shapes (a model's state).</summary>
    /// <exception cref="ArgumentException">A name is missing or a shape differs.</exception>
    public void CopyInto(IEnumerable<(string Name, Tensor Tensor)> targets)
    {
        var byName = targets.ToDictionary(t => t.Name, t => t.Tensor);
        using var scope = new DisposeScope();
        using var noGrad = Libtorch.NoGrad();
        foreach (var (name, value) in ToTensors())
        {
            if (!byName.TryGetValue(name, out var target))
                throw new ArgumentException($"the snapshot has '{name}', which the model lacks: it was taken from another model");
            if (!target.Shape.SequenceEqual(value.Shape))
                throw new ArgumentException($"'{name}' has shape [{string.Join(", ", value.Shape)}] in the snapshot but [{string.Join(", ", target.Shape)}] in the model");
            target.Copy_(value);
        }
    }

    /// <summary>Whether both hold the same names, shapes, types and values, bit for bit.</summary>
    public bool SameAs(TensorSnapshot other) =>
        entries.Length == other.entries.Length && entries.Zip(other.entries).All(p =>
            p.First.Name == p.Second.Name && p.First.Type == p.Second.Type && p.First.Shape.SequenceEqual(p.Second.Shape) &&
            Bytes(p.First.Values).AsSpan().SequenceEqual(Bytes(p.Second.Values)));

    // The raw bytes of a primitive array: equality of these is bitwise (−0 ≠ +0, NaN payloads count).
    static byte[] Bytes(Array values)
    {
        var bytes = new byte[Buffer.ByteLength(values)];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return bytes;
    }
}
