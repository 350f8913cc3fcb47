namespace Pai.Host.Runs;

/// <summary>Where a run is in its life.</summary>
public enum RunStatus
{
    /// <summary>Known to the store, not started.</summary>
    Pending,
    /// <summary>Claimed by a live process.</summary>
    Running,
    /// <summary>Finished with metrics.</summary>
    Finished,
    /// <summary>Stopped by an error (recorded).</summary>
    Failed,
}

/// <summary>Metrics after one training epoch.</summary>
public sealed record EpochMetrics(int Epoch, double TrainLoss, double TrainTop1, double LearningRate,
    double? TestLoss, double? TestTop1, double? TestTop5, double Seconds);

/// <summary>Per-layer outcome of pruning.</summary>
/// <param name="Name">Layer (weight) name.</param>
/// <param name="Kept">Weights kept.</param>
/// <param name="Total">Prunable weights of the layer.</param>
/// <param name="Flops">Dense multiply-adds of the layer for one image (null: not recorded, runs before it was).</param>
/// <param name="Kernel">
/// How the layer trained: "sparse" (the sparse kernels, --sparse-kernels) or "dense" (masked dense
/// weights); null before training or in runs from before it was recorded. An execution detail,
/// outside the run key.
/// </param>
/// <param name="Speedup">
/// The sparse kernels' measured speedup on this layer (dense step time over sparse, from
/// --sparse-kernels auto's calibration), whichever kernel it trained with; null where not measured
/// (on, off, CUDA) or in runs from before it was recorded.
/// </param>
public sealed record LayerDensityRecord(string Name, long Kept, long Total, long? Flops = null, string? Kernel = null, double? Speedup = null);

/// <summary>How one layer's curvature diagonal was obtained and its achieved error.</summary>
/// <param name="Name">Layer (weight) name.</param>
/// <param name="Method">"hutchinson", "closed-form", "unit-hvp", "exact" or "sampled-classes" (CurvatureMethod.name).</param>
/// <param name="MedianRelativeSe">Median over the layer of SE/|estimate| (0 when exact; null when infinite).</param>
/// <param name="Probes">Probes per scoring batch that reached the layer (0 when exact).</param>
public sealed record LayerCurvatureRecord(string Name, string Method, double? MedianRelativeSe, int Probes);

/// <summary>A curvature estimator's cost and achieved error.</summary>
/// <param name="Estimator">The estimator and its settings.</param>
/// <param name="Hvps">Hessian-vector products computed.</param>
/// <param name="Target">Adaptive target median relative SE (0: fixed probes).</param>
/// <param name="Layers">Per-layer method and error.</param>
public sealed record CurvatureRecord(string Estimator, int Hvps, double Target, IReadOnlyList<LayerCurvatureRecord> Layers)
{
    /// <summary>The stored form of the F# diagnostics.</summary>
    public static CurvatureRecord Of(Pai.CurvatureDiagnostics d) => new(d.Estimator, d.Hvps, d.Target,
        d.Layers.Select(l => new LayerCurvatureRecord(l.Name, CurvatureMethodModule.name(l.Method),
            double.IsFinite(l.MedianRelativeSe) ? l.MedianRelativeSe : null, l.Probes)).ToList());

    /// <summary>Back to the F# diagnostics (an infinite error comes back as +∞).</summary>
    public Pai.CurvatureDiagnostics ToDiagnostics() => new(Estimator,
        Microsoft.FSharp.Collections.ListModule.OfSeq(Layers.Select(l =>
            new Pai.LayerCurvature(l.Name, CurvatureMethodModule.parse(l.Method), l.MedianRelativeSe ?? double.PositiveInfinity, l.Probes))),
        Hvps, Target);
}

/// <summary>What pruning did, as stored.</summary>
/// <param name="Criterion">Criterion name.</param>
/// <param name="Layers">Kept and total weights per layer.</param>
/// <param name="Collapsed">Layers with no weight left.</param>
/// <param name="Rounds">Pruning rounds.</param>
/// <param name="Density">Fraction of prunable weights kept.</param>
/// <param name="Curvature">The curvature estimators' cost and achieved error (null or empty when the criterion has none).</param>
/// <param name="DenseFlops">
/// Dense multiply-adds of every conv and linear layer of the model for one image, prunable or not
/// (null: not recorded).
/// </param>
public sealed record PruneSummary(string Criterion, IReadOnlyList<LayerDensityRecord> Layers,
    IReadOnlyList<string> Collapsed, int Rounds, double Density, IReadOnlyList<CurvatureRecord>? Curvature = null,
    long? DenseFlops = null)
{
    /// <summary>
    /// The summary with each layer's dense multiply-adds and the model's total from
    /// <paramref name="flops"/> (<see cref="Models.Model.LayerFlops"/>, measured on the run's model).
    /// </summary>
    public PruneSummary WithFlops(IReadOnlyList<Models.LayerFlops> flops)
    {
        ArgumentNullException.ThrowIfNull(flops);
        // A layer applied twice in one forward pass reports twice: its cost is the sum.
        var byName = flops.GroupBy(f => f.Name, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Sum(f => f.MultiplyAdds), StringComparer.Ordinal);
        return this with
        {
            Layers = Layers.Select(l => l with { Flops = byName.TryGetValue(l.Name, out var f) ? f : null }).ToList(),
            DenseFlops = flops.Sum(f => f.MultiplyAdds),
        };
    }

    /// <summary>
    /// The summary with each layer's kernel, "sparse" for the layers that ran sparse (a layer "fc1"
    /// is the weight "fc1.weight") and "dense" for the others, and its measured speedup where the
    /// calibration timed it.
    /// </summary>
    public PruneSummary WithKernels(Pai.Host.Training.SparseLayerChoices kernels)
    {
        var byWeight = kernels.Layers.ToDictionary(l => l.Name + ".weight", StringComparer.Ordinal);
        return this with
        {
            Layers = Layers.Select(l => byWeight.TryGetValue(l.Name, out var k)
                ? l with { Kernel = k.Sparse ? "sparse" : "dense", Speedup = k.Speedup }
                : l with { Kernel = "dense" }).ToList(),
        };
    }

    /// <summary>
    /// Multiply-adds left after pruning as a fraction of the dense model's: a prunable layer costs
    /// its dense multiply-adds times its density (kept / total), other conv and linear layers stay
    /// dense. Null when the multiply-adds were not recorded for the model or some prunable layer.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore] // derived from the stored fields
    public double? RemainingFlopsFraction
    {
        get
        {
            if (DenseFlops is not > 0 || Layers.Any(l => l.Flops is null)) return null;
            var removed = Layers.Sum(l => l.Total > 0 ? l.Flops!.Value * (1 - (double)l.Kept / l.Total) : 0);
            return (DenseFlops.Value - removed) / DenseFlops.Value;
        }
    }
}

/// <summary>The process that claimed a run (for a finished or failed run: the one that ended it).</summary>
/// <param name="ProcessId">Its process id.</param>
/// <param name="Host">Its host name.</param>
/// <param name="Heartbeat">When it last showed it was alive (UTC).</param>
public sealed record RunOwner(int ProcessId, string Host, DateTimeOffset Heartbeat);

/// <summary>Everything the store keeps about one run.</summary>
public sealed record RunRecord
{
    /// <summary>The run key (hash of the canonical config).</summary>
    public required string Key { get; init; }
    /// <summary>The configuration.</summary>
    public required RunConfig Config { get; init; }
    /// <summary>Status.</summary>
    public RunStatus Status { get; init; }
    /// <summary>Per-epoch metrics, in order.</summary>
    public IReadOnlyList<EpochMetrics> Epochs { get; init; } = [];
    /// <summary>Final test top-1 accuracy.</summary>
    public double? FinalTop1 { get; init; }
    /// <summary>Final test top-5 accuracy.</summary>
    public double? FinalTop5 { get; init; }
    /// <summary>Final test loss.</summary>
    public double? FinalLoss { get; init; }
    /// <summary>Seconds per phase: "warmup", "scoring", "selection", "training".</summary>
    public IReadOnlyDictionary<string, double> PhaseSeconds { get; init; } = new Dictionary<string, double>();
    /// <summary>The pruning report (null for dense runs).</summary>
    public PruneSummary? Prune { get; init; }
    /// <summary>Seeds used, by purpose ("init", "scoring", "data", "probes").</summary>
    public IReadOnlyDictionary<string, ulong> Seeds { get; init; } = new Dictionary<string, ulong>();
    /// <summary>Pai version that ran it.</summary>
    public string? PaiVersion { get; init; }
    /// <summary>libtorch version that ran it.</summary>
    public string? LibtorchVersion { get; init; }
    /// <summary>Error message of a failed run.</summary>
    public string? Error { get; init; }
    /// <summary>When it started and finished (UTC).</summary>
    public DateTimeOffset? Started { get; init; }
    /// <summary>When it finished (UTC).</summary>
    public DateTimeOffset? Finished { get; init; }
    /// <summary>The process that claimed it last (null while Pending).</summary>
    public RunOwner? Owner { get; init; }
    /// <summary>How many times it was claimed (a takeover or a retry counts again).</summary>
    public int Attempts { get; init; }
}
