namespace Pai.Host.Runs;

/// <summary>How a sweep (or a worker's share of one) went.</summary>
/// <param name="Ran">Runs executed to the end by this worker.</param>
/// <param name="Skipped">Runs of the sweep this worker did not run (finished earlier or by other workers).</param>
/// <param name="Failed">Runs that failed here (recorded in the store with their error).</param>
/// <param name="Lost">Runs this worker started but lost to another worker after its lease expired (its late writes were refused).</param>
public sealed record SweepSummary(int Ran, int Skipped, int Failed, int Lost = 0);

/// <summary>How a worker behaves.</summary>
public sealed record WorkerOptions
{
    /// <summary>
    /// When nothing is claimable but other workers still hold runs of the sweep, wait and try again
    /// (default true), so that a run whose worker died is taken over once its lease expires.
    /// </summary>
    public bool WaitForOthers { get; init; } = true;

    /// <summary>How often to look again while waiting (default: 2 s, or a quarter of the lease when shorter).</summary>
    public TimeSpan? PollInterval { get; init; }
}

/// <summary>
/// Runs the configurations of a sweep against a store. A sweep is defined once (its runs
/// registered under a name) and then worked on by any number of workers, each claiming the next
/// claimable run atomically. Safe to interrupt and run again (an interrupted run restarts) and to
/// run in several processes or on several machines at once (no run is recorded twice).
/// </summary>
public static class Sweep
{
    /// <summary>
    /// The order runs are claimed in: runs that share cached scores (one criterion at several
    /// sparsities) are spread apart, so that concurrent workers start on different criteria and each
    /// later sparsity finds its scores cached. Runs of one criterion keep their relative order.
    /// </summary>
    public static IReadOnlyList<RunConfig> ClaimOrder(IEnumerable<RunConfig> configs)
    {
        var groups = configs.GroupBy(c => c.Criterion == "dense" ? c.Key : $"{c.StatisticsKey}/{c.Criterion}").Select(g => g.ToList()).ToList();
        var ordered = new List<RunConfig>();
        for (var i = 0; groups.Any(g => i < g.Count); i++)
            ordered.AddRange(groups.Where(g => i < g.Count).Select(g => g[i]));
        return ordered;
    }

    /// <summary>Validates the configs and defines the sweep: registers them under <paramref name="sweep"/>, failed runs back to pending.</summary>
    public static IReadOnlyList<string> Define(IRunStore store, string sweep, IReadOnlyList<RunConfig> configs)
    {
        foreach (var c in configs) Experiment.Validate(c);
        return store.RegisterAll(ClaimOrder(configs), sweep, requeueFailed: true);
    }

    /// <summary>
    /// Defines the sweep, then works on its runs among <paramref name="configs"/> in this process
    /// until each is finished or failed (here or by other workers); log receives one line per run.
    /// </summary>
    public static SweepSummary Execute(IRunStore store, string sweep, IReadOnlyList<RunConfig> configs, IRunProgress? progress = null,
        Action<string>? log = null, WorkerOptions? options = null)
    {
        Define(store, sweep, configs);
        var finishedEarlier = 0;
        foreach (var c in configs)
            if (store.Get(c.Key) is { Status: RunStatus.Finished } done)
            {
                finishedEarlier++;
                log?.Invoke($"{c.Label}: finished earlier, test top-1 {done.FinalTop1:P2}");
            }
        var worked = Work(store, sweep, progress, log, options, among: configs.Select(c => c.Key).ToHashSet());
        return worked with { Skipped = configs.Count - worked.Ran - worked.Failed };
    }

    /// <summary>
    /// One worker: claims the next run of <paramref name="sweep"/> (of the whole store when null;
    /// only runs among <paramref name="among"/> when given), runs it with its lease renewed in the
    /// background, records it, and goes on until nothing is left. A run lost to another worker (this worker's lease expired) is abandoned and counted;
    /// an unreachable database ends the worker with <see cref="RunStoreUnavailableException"/>.
    /// </summary>
    public static SweepSummary Work(IRunStore store, string? sweep, IRunProgress? progress = null, Action<string>? log = null,
        WorkerOptions? options = null, IReadOnlyCollection<string>? among = null)
    {
        options ??= new WorkerOptions();
        if (progress is not null) progress = new NotesOnce(progress);
        var lease = store.Options.StaleAfter;
        var poll = options.PollInterval ?? TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(2).Ticks, Math.Max(lease.Ticks / 4, TimeSpan.TicksPerMillisecond * 100)));
        int ran = 0, failed = 0, lost = 0;
        using var data = new DataCache();
        while (true)
        {
            var key = store.ClaimNext(sweep, among);
            if (key is null)
            {
                if (!options.WaitForOthers || !OthersHoldRuns(store, sweep, among)) break;
                Thread.Sleep(poll);
                continue;
            }
            var record = store.Get(key) ?? throw new RunStoreException($"run {key} vanished from the store {store.Location}");
            var label = $"{record.Config.Label} (run {key}{(record.Attempts > 1 ? $", attempt {record.Attempts}" : "")})";
            log?.Invoke($"{label}: claimed");
            try
            {
                using (store.KeepAlive(key))
                {
                    var result = Experiment.Run(record.Config, store, data, progress);
                    ran++;
                    log?.Invoke($"{label}: test top-1 {result.FinalTop1:P2}");
                }
            }
            catch (RunClaimLostException e)
            {
                lost++;
                log?.Invoke($"{label} lost: {e.Message}");
            }
            catch (RunStoreUnavailableException)
            {
                throw;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failed++;
                log?.Invoke($"{label} failed: {e.Message}");
            }
        }
        return new SweepSummary(ran, 0, failed, lost);
    }

    // A note true of every run of a model (it has no batch norm to warm up) is said once, not once per run.
    sealed class NotesOnce(IRunProgress inner) : IRunProgress
    {
        readonly HashSet<string> said = [];
        public void Phase(RunConfig config, string phase) => inner.Phase(config, phase);
        public void Training(RunConfig config, TrainProgress progress) => inner.Training(config, progress);
        public void Log(RunConfig config, string message)
        {
            if (message != Experiment.NoBatchNormNote(config.Model) || said.Add(message)) inner.Log(config, message);
        }
    }

    static bool OthersHoldRuns(IRunStore store, string? sweep, IReadOnlyCollection<string>? among) =>
        store.Status().Where(s => sweep is null || s.Sweep == sweep).SelectMany(s => s.Held).Any(r => among is null || among.Contains(r.Key));
}
