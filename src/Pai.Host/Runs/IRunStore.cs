namespace Pai.Host.Runs;

/// <summary>
/// The results store: runs keyed by config hash and grouped into named sweeps, claimed atomically
/// so that two workers never run the same configuration, and resumable after a killed worker (a
/// claim whose holder is gone is taken over, the run restarts from scratch, and the old holder's
/// late writes are refused). Two implementations share this contract: <see cref="SqliteRunStore"/>
/// (one file, one machine or one local file system) and <see cref="PostgresRunStore"/> (workers on
/// any number of machines).
/// </summary>
public interface IRunStore : IDisposable
{
    /// <summary>
    /// The artifact directory: masks, checkpoints and cached scores. For workers on several
    /// machines it must be a directory every worker and the report can read (a shared file system).
    /// </summary>
    string Directory { get; }

    /// <summary>The options it was opened with (the lease length among them).</summary>
    RunStoreOptions Options { get; }

    /// <summary>How a user names this store on the command line (<c>--results DIR</c> or <c>--store URL</c>, without a password).</summary>
    string Location { get; }

    /// <summary>Adds the config as Pending unless the store already knows its key. Returns the key.</summary>
    string Register(RunConfig config);

    /// <summary>
    /// Adds every config as Pending unless the store already knows its key, in one transaction, and
    /// makes it a member of <paramref name="sweep"/> (when given) in the order given; a config that is
    /// already a member keeps its place, so defining the same sweep again adds nothing. With
    /// <paramref name="requeueFailed"/>, failed runs among the configs go back to Pending.
    /// Returns the keys in order.
    /// </summary>
    IReadOnlyList<string> RegisterAll(IEnumerable<RunConfig> configs, string? sweep = null, bool requeueFailed = false);

    /// <summary>
    /// Claims the run for this store if it is Pending, Failed (when retryFailed), or Running under a
    /// holder that is gone (its lease expired, or its process no longer exists); clears any partial
    /// results of an earlier attempt and issues a new fencing token. False when it is Finished or
    /// held by a live holder. Throws <see cref="RunStoreException"/> for an unknown key.
    /// </summary>
    bool TryClaim(string key, bool retryFailed = false);

    /// <summary>
    /// Claims the first claimable run (Pending, or Running under a holder that is gone) of
    /// <paramref name="sweep"/>, in sweep order, or of the whole store when null, in registration
    /// order, only among the keys <paramref name="among"/> when given; atomically, so concurrent
    /// workers get different runs. Null when none is claimable.
    /// </summary>
    string? ClaimNext(string? sweep = null, IReadOnlyCollection<string>? among = null);

    /// <summary>
    /// Renews this store's lease on a run it holds (every record renews it too). Throws
    /// <see cref="RunClaimLostException"/> when this store no longer holds the run.
    /// </summary>
    void Heartbeat(string key);

    /// <summary>
    /// Renews the lease of a held run in the background every <paramref name="interval"/> (default:
    /// a quarter of the lease) until disposed, for phases that record nothing for a long time. A lost
    /// claim is not reported here: the next write throws <see cref="RunClaimLostException"/>.
    /// </summary>
    IDisposable KeepAlive(string key, TimeSpan? interval = null);

    /// <summary>Where the mask of a run is kept (a safetensors file in <see cref="Directory"/>).</summary>
    string MaskPath(string key);

    /// <summary>Where the trained checkpoint of a run is kept.</summary>
    string CheckpointPath(string key);

    /// <summary>
    /// Where a stored statistic (a gradient, a Hessian diagonal, …, shared by the runs of one
    /// initialization and scoring settings) is kept, by a cache key of the caller's choosing
    /// (<see cref="StatisticStore.CacheKey"/>). The files lie in the store's "scores" folder, as
    /// older stores wrote them.
    /// </summary>
    string StatisticPath(string cacheKey);

    /// <summary>Appends one epoch's metrics to a held run.</summary>
    void RecordEpoch(string key, EpochMetrics metrics);

    /// <summary>Stores the prune report of a held run.</summary>
    void RecordPrune(string key, PruneSummary prune, IReadOnlyDictionary<string, double> phaseSeconds);

    /// <summary>Marks a held run Finished with its final record fields.</summary>
    void Finish(string key, RunRecord final);

    /// <summary>Marks a held run Failed with the error.</summary>
    void Fail(string key, string error);

    /// <summary>One run, or null.</summary>
    RunRecord? Get(string key);

    /// <summary>Every run in the store, in registration order.</summary>
    IReadOnlyList<RunRecord> All();

    /// <summary>Runs per state for each sweep (runs in no sweep under the name ""), with who holds the running ones.</summary>
    IReadOnlyList<SweepStatus> Status();
}

/// <summary>What every results store does the same way on top of <see cref="IRunStore"/>.</summary>
public static class RunStoreWrites
{
    /// <summary>
    /// Ends a held run whose prune summary and epochs are recorded: writes its mask (when pruned) and
    /// trained checkpoint beside the store, both safetensors with the configuration in their
    /// metadata, then marks it Finished with <paramref name="run"/>'s final fields.
    /// </summary>
    public static void Record(this IRunStore store, RunRecord run, IEnumerable<(string Name, Tensor Tensor)>? mask,
        IEnumerable<(string Name, Tensor Tensor)> weights)
    {
        var config = new Dictionary<string, string> { ["config"] = run.Config.CanonicalJson() };
        if (mask is not null) Safetensors.Save(store.MaskPath(run.Key), mask, config);
        Safetensors.Save(store.CheckpointPath(run.Key), weights, config);
        store.Finish(run.Key, run);
    }
}

/// <summary>A running run as <see cref="IRunStore.Status"/> shows it.</summary>
/// <param name="Key">The run key.</param>
/// <param name="Label">The run's configuration in words.</param>
/// <param name="Owner">The worker holding it.</param>
/// <param name="HeartbeatAge">Time since its holder last renewed the lease.</param>
/// <param name="Attempts">How many times it was claimed.</param>
public sealed record RunningRun(string Key, string Label, RunOwner Owner, TimeSpan HeartbeatAge, int Attempts);

/// <summary>The state of one sweep.</summary>
/// <param name="Sweep">Its name ("" for runs that belong to no sweep).</param>
/// <param name="Pending">Runs not started.</param>
/// <param name="Running">Runs held by a worker.</param>
/// <param name="Finished">Runs finished.</param>
/// <param name="Failed">Runs failed.</param>
/// <param name="Held">The running runs and their holders.</param>
public sealed record SweepStatus(string Sweep, int Pending, int Running, int Finished, int Failed, IReadOnlyList<RunningRun> Held)
{
    /// <summary>Every run of the sweep.</summary>
    public int Total => Pending + Running + Finished + Failed;
}
