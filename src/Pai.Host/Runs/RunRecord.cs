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
public sealed record LayerDensityRecord(string Name, long Kept, long Total);

/// <summary>What pruning did, as stored.</summary>
public sealed record PruneSummary(string Criterion, IReadOnlyList<LayerDensityRecord> Layers,
    IReadOnlyList<string> Collapsed, int Rounds, double Density);

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
