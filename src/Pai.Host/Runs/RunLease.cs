namespace Pai.Host.Runs;

/// <summary>What both run stores say and do the same way: lease renewal, refused writes, schema versions, status.</summary>
static class RunLease
{
    /// <summary>A timer that renews the lease on <paramref name="key"/> until disposed.</summary>
    public static IDisposable KeepAlive(IRunStore store, TimeSpan lease, string key, TimeSpan? interval)
    {
        var period = interval ?? TimeSpan.FromTicks(Math.Max(lease.Ticks / 4, TimeSpan.TicksPerMillisecond * 100));
        return new Timer(_ =>
        {
            // An exception escaping a timer callback would end the process; a lost claim or an
            // unreachable database surfaces at the run's next write.
            try { store.Heartbeat(key); } catch (Exception) { }
        }, null, period, period);
    }

    /// <summary>Why a write to a run this store does not hold was refused, and what to do.</summary>
    /// <param name="key">The run.</param>
    /// <param name="status">Its status now.</param>
    /// <param name="mine">The fencing token this store's claim carried (null: it never claimed the run).</param>
    /// <param name="current">The run's fencing token now.</param>
    /// <param name="holder">Who holds or ended it now, in words.</param>
    public static string LostMessage(string key, RunStatus status, long? mine, long? current, string holder)
    {
        if (mine is not { } token)
            return $"run {key} is not claimed by this worker: claim it first";
        if (current == token)
            return status == RunStatus.Finished ? $"run {key} is already finished" : $"run {key} has already {(status == RunStatus.Failed ? "failed" : "been released")}";
        var what = status switch
        {
            RunStatus.Running => $"is now held by {holder} under fencing token {current}",
            RunStatus.Finished => $"was finished by {holder} under fencing token {current}",
            RunStatus.Failed => $"failed under {holder} with fencing token {current}",
            _ => "was returned to the queue",
        };
        return $"write refused: this worker's claim on run {key} (fencing token {token}) expired and was taken over; the run {what}. " +
               "Nothing was written; stop working on this run.";
    }

    /// <summary>Refuses a schema version other than <paramref name="expected"/>, unless an older one may be migrated (null: an empty store).</summary>
    public static void CheckSchema(string where, string location, int? found, int expected, bool migrate)
    {
        if (found > expected)
            throw new RunStoreException(
                $"The run store {where} has schema version {found}, newer than this Pai ({PaiHost.Version}, schema version " +
                $"{expected}) can read. Use the newer Pai that wrote it, or choose another store ({location.Split(' ')[0]}).");
        if (found < expected && !migrate)
            throw new RunStoreException(
                $"The run store {where} has schema version {found}, older than this Pai's schema version {expected}. " +
                $"Upgrade it in place with `./pai status {location} --migrate` (stop workers running an older Pai first), " +
                "or choose another store.");
    }
}

/// <summary>One run as the status query reads it.</summary>
sealed record RunStatusRow(string Sweep, string Key, string Config, RunStatus Status, int? Pid, string? Host,
    DateTimeOffset? Heartbeat, TimeSpan? HeartbeatAge, int Attempts)
{
    /// <summary>Counts per sweep, in the order the sweeps first appear.</summary>
    public static IReadOnlyList<SweepStatus> Summarize(IEnumerable<RunStatusRow> rows) =>
        rows.GroupBy(r => r.Sweep).Select(g => new SweepStatus(g.Key,
            g.Count(r => r.Status == RunStatus.Pending), g.Count(r => r.Status == RunStatus.Running),
            g.Count(r => r.Status == RunStatus.Finished), g.Count(r => r.Status == RunStatus.Failed),
            g.Where(r => r.Status == RunStatus.Running).Select(r => new RunningRun(r.Key, RunConfig.FromJson(r.Config).Label,
                new RunOwner(r.Pid ?? 0, r.Host ?? "?", r.Heartbeat ?? default), r.HeartbeatAge ?? TimeSpan.Zero, r.Attempts)).ToList()))
        .ToList();
}
