namespace Pai.Host.Runs;

/// <summary>
/// The results store: runs keyed by config hash, claimed atomically so that two processes never
/// run the same configuration, and resumable after a killed process (a claim whose process is
/// gone is taken over and the run restarts from scratch).
/// </summary>
public interface IRunStore : IDisposable
{
    /// <summary>The results directory (masks, checkpoints and cached scores live beside the database).</summary>
    string Directory { get; }

    /// <summary>Adds the config as Pending unless the store already knows its key. Returns the key.</summary>
    string Register(RunConfig config);

    /// <summary>
    /// Claims the run for this process if it is Pending, Failed (when retryFailed), or Running under
    /// a process that no longer exists; clears any partial results of an earlier attempt. False when
    /// it is Finished or claimed by a live process.
    /// </summary>
    bool TryClaim(string key, bool retryFailed = false);

    /// <summary>
    /// Tells other processes that this claim is still alive (records refresh it too). A claim held
    /// on another host is taken over once its heartbeat is older than the store's staleness limit.
    /// Throws when this process no longer owns the run.
    /// </summary>
    void Heartbeat(string key);

    /// <summary>Where the mask of a run is kept (a safetensors file beside the database).</summary>
    string MaskPath(string key);

    /// <summary>Where the trained checkpoint of a run is kept.</summary>
    string CheckpointPath(string key);

    /// <summary>Where cached criterion scores are kept, by a cache key of the caller's choosing.</summary>
    string ScoreCachePath(string cacheKey);

    /// <summary>Appends one epoch's metrics to a claimed run.</summary>
    void RecordEpoch(string key, EpochMetrics metrics);

    /// <summary>Stores the prune report of a claimed run.</summary>
    void RecordPrune(string key, PruneSummary prune, IReadOnlyDictionary<string, double> phaseSeconds);

    /// <summary>Marks a claimed run Finished with its final record fields.</summary>
    void Finish(string key, RunRecord final);

    /// <summary>Marks a claimed run Failed with the error.</summary>
    void Fail(string key, string error);

    /// <summary>One run, or null.</summary>
    RunRecord? Get(string key);

    /// <summary>Every run in the store, in registration order.</summary>
    IReadOnlyList<RunRecord> All();
}
