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
