namespace Pai.Host.Runs;

/// <summary>How a sweep went.</summary>
/// <param name="Ran">Runs executed to the end by this process.</param>
/// <param name="Skipped">Runs finished earlier or running in another process.</param>
/// <param name="Failed">Runs that failed (recorded in the store with their error).</param>
public sealed record SweepSummary(int Ran, int Skipped, int Failed);

/// <summary>
/// Runs a list of configurations against a store: each is registered, then claimed and run unless
/// it is finished or another live process holds it. Safe to interrupt and run again (an
/// interrupted run restarts) and to run in several processes at once (no run happens twice).
/// </summary>
public static class Sweep
{
    /// <summary>Executes the configs in order; log receives one line per run.</summary>
    public static SweepSummary Execute(IRunStore store, IReadOnlyList<RunConfig> configs, IRunProgress? progress = null, Action<string>? log = null)
    {
        foreach (var c in configs) Experiment.Validate(c);
        foreach (var c in configs) store.Register(c);
        int ran = 0, skipped = 0, failed = 0, n = 0;
        using var data = new DataCache();
        foreach (var c in configs)
        {
            n++;
            var prefix = $"[{n}/{configs.Count}] {c.Label}";
            var existing = store.Get(c.Key);
            if (existing?.Status == RunStatus.Finished)
            {
                skipped++;
                log?.Invoke($"{prefix}: finished earlier, test top-1 {existing.FinalTop1:P2}");
                continue;
            }
            if (!store.TryClaim(c.Key, retryFailed: true))
            {
                skipped++;
                log?.Invoke($"{prefix}: running in another process, skipped");
                continue;
            }
            log?.Invoke($"{prefix} (run {c.Key})");
            try
            {
                var record = Experiment.Run(c, store, data, progress);
                ran++;
                log?.Invoke($"{prefix}: test top-1 {record.FinalTop1:P2}");
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failed++;
                log?.Invoke($"{prefix} failed: {e.Message}");
            }
        }
        return new SweepSummary(ran, skipped, failed);
    }
}
