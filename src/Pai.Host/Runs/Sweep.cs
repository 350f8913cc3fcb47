namespace Pai.Host.Runs;

/// <summary>How a sweep (or a worker's share of one) went.</summary>
/// <param name="Ran">Runs executed to the end by this worker.</param>
/// <param name="Skipped">Runs of the sweep this worker did not run (finished earlier or by other workers).</param>
/// <param name="Failed">Runs that failed here (recorded in the store with their error).</param>
/// <param name="Lost">Runs this worker started but lost to another worker after its lease expired (its late writes were refused).</param>
public sealed record SweepSummary(int Ran, int Skipped, int Failed, int Lost = 0);

/// <summary>Where a sweep stands, as a worker shows it before each run.</summary>
/// <param name="Done">Runs finished or failed.</param>
/// <param name="Left">Runs pending or running (the one about to start among them).</param>
/// <param name="EstimatedLeft">Time until the runs left are done (null until a run finished in this process).</param>
public sealed record SweepProgress(int Done, int Left, TimeSpan? EstimatedLeft)
{
    /// <summary>Of the runs left, those running now (null: not counted).</summary>
    public int? Running { get; init; }

    /// <summary>Of the runs done, those that failed (null: not counted).</summary>
    public int? Failed { get; init; }

    /// <summary>E.g. "3 of 8 runs done, 5 left, about 4 min left", or with the counts "3 of 8 runs done, 5 left (2 running), 0 failed, about 4 min left".</summary>
    public override string ToString() =>
        $"{Done} of {Done + Left} runs done, {Left} left" + (Running is { } r ? $" ({r} running)" : "") + (Failed is { } f ? $", {f} failed" : "") +
        (Left == 0 ? "" : EstimatedLeft is { } t ? $", about {Duration(t)} left" : ", time left known after the first run");

    static string Duration(TimeSpan t) =>
        t.TotalSeconds < 90 ? FormattableString.Invariant($"{Math.Ceiling(t.TotalSeconds):0} s")
        : t.TotalMinutes < 90 ? FormattableString.Invariant($"{Math.Ceiling(t.TotalMinutes):0} min")
        : FormattableString.Invariant($"{t.TotalHours:0.0} h");
}

/// <summary>The wall times of the runs finished in this process (the basis of <see cref="SweepProgress.EstimatedLeft"/>).</summary>
public sealed class RunTimer
{
    TimeSpan total;
    int count;

    /// <summary>Records one finished run's wall time.</summary>
    public void Add(TimeSpan elapsed)
    {
        total += elapsed;
        count++;
    }

    /// <summary>The mean wall time of a run; null before any finished.</summary>
    public TimeSpan? Mean => count == 0 ? null : total / count;
}

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
        var groups = configs.GroupBy(c => c.Criterion == RunConfig.DenseCriterion ? c.Key : $"{c.StatisticsKey}/{c.Criterion}").Select(g => g.ToList()).ToList();
        var ordered = new List<RunConfig>();
        for (var i = 0; groups.Any(g => i < g.Count); i++)
            ordered.AddRange(groups.Where(g => i < g.Count).Select(g => g[i]));
        return ordered;
    }

    /// <summary>Validates the configs and defines the sweep: registers them under <paramref name="sweep"/>, failed runs back to pending.</summary>
    public static IReadOnlyList<string> Define(IRunStore store, string sweep, IReadOnlyList<RunConfig> configs)
    {
        foreach (var c in configs) RunPlan.Validate(c);
        return store.RegisterAll(ClaimOrder(configs), sweep, requeueFailed: true);
    }

    /// <summary>
    /// Defines the sweep, then works on its runs among <paramref name="configs"/> in this process
    /// until each is finished or failed (here or by other workers); log receives one line per run.
    /// With <paramref name="seeds"/>, seeds are then added in rounds where they are needed (<see cref="InRounds"/>).
    /// </summary>
    public static SweepSummary Execute(IRunStore store, string sweep, IReadOnlyList<RunConfig> configs, IRunProgress? progress = null,
        Action<string>? log = null, WorkerOptions? options = null, SeedTarget? seeds = null)
    {
        var total = new SweepSummary(0, 0, 0);
        var timer = new RunTimer();
        var counted = new HashSet<string>(); // progress counts every round so far
        InRounds(store, configs, seeds, round =>
        {
            counted.UnionWith(round.Select(c => c.Key));
            Define(store, sweep, round);
            foreach (var c in round)
                if (store.Get(c.Key) is { Status: RunStatus.Finished } done)
                    log?.Invoke($"{c.Label}: finished earlier, test top-1 {done.FinalTop1:P2}");
            var worked = Work(store, sweep, progress, log, options, among: round.Select(c => c.Key).ToHashSet(), timer, counted);
            total = new SweepSummary(total.Ran + worked.Ran, total.Skipped + round.Count - worked.Ran - worked.Failed,
                total.Failed + worked.Failed, total.Lost + worked.Lost);
        }, log);
        return total;
    }

    /// <summary>
    /// Runs a sweep in rounds: <paramref name="runRound"/> defines and runs the configs it is given
    /// (in this process or by workers) and returns once they are finished or failed. Without
    /// <paramref name="seeds"/> there is one round, <paramref name="configs"/>. With it, the first
    /// round is <paramref name="configs"/> and the added seeds the store already holds (a sweep run
    /// again finishes them); then, from the store's finished runs, each further round adds the next
    /// seed to the cells still wider than the target (<see cref="SeedRounds.NextRound"/>), until none is.
    /// </summary>
    public static void InRounds(IRunStore store, IReadOnlyList<RunConfig> configs, SeedTarget? seeds, Action<IReadOnlyList<RunConfig>> runRound,
        Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(runRound);
        if (seeds is null)
        {
            runRound(configs);
            return;
        }
        var round = SeedRounds.Known(configs, seeds, store.Get);
        while (round.Count > 0)
        {
            runRound(round);
            round = SeedRounds.NextRound(configs, seeds, store.Get);
            if (round.Count > 0)
                log?.Invoke($"seed {round[0].Seed} for {round.Count} cell{(round.Count == 1 ? "" : "s")} whose 95% interval is wider than ±{seeds.Points} pp: " +
                            string.Join(", ", round.Select(c => c.Label)));
        }
        var cells = SeedRounds.Cells(configs, seeds, store.Get);
        var atLimit = cells.Count(c => c.NextSeed is null && seeds.IsWide(c.HalfWidth));
        log?.Invoke($"seeds: {cells.Count - atLimit} of {cells.Count} cells within ±{seeds.Points} pp" +
                    (atLimit > 0 ? $", {atLimit} still wider at the limit of {seeds.MaxSeeds} seeds" : ""));
    }

    /// <summary>
    /// One worker: claims the next run of <paramref name="sweep"/> (of the whole store when null;
    /// only runs among <paramref name="among"/> when given), runs it with its lease renewed in the
    /// background, records it, and goes on until nothing is left. Before each run it shows where the
    /// sweep stands (<see cref="Progress"/>, over <paramref name="counted"/> when given, else
    /// <paramref name="among"/>), its time left from the runs <paramref name="timer"/> saw finish. A run lost to another worker (this worker's lease expired) is abandoned and counted;
    /// an unreachable database ends the worker with <see cref="RunStoreUnavailableException"/>.
    /// </summary>
    public static SweepSummary Work(IRunStore store, string? sweep, IRunProgress? progress = null, Action<string>? log = null,
        WorkerOptions? options = null, IReadOnlyCollection<string>? among = null, RunTimer? timer = null, IReadOnlyCollection<string>? counted = null)
    {
        timer ??= new RunTimer();
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
            progress?.Sweep(Progress(store, sweep, counted ?? among, timer));
            try
            {
                using (store.KeepAlive(key))
                {
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    var result = Runner.Run(PlanOrFail(store, record), store, data, progress);
                    timer.Add(watch.Elapsed);
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
        public void Sweep(SweepProgress progress) => inner.Sweep(progress);
        public void Log(RunConfig config, string message)
        {
            if (message != Runner.NoBatchNormNote(config.Model) || said.Add(message)) inner.Log(config, message);
        }
    }

    /// <summary>
    /// Where the sweep stands (only the runs among <paramref name="among"/> when given; every sweep's
    /// when <paramref name="sweep"/> is null): runs ended and left, and the time left at the mean wall
    /// time of the runs <paramref name="timer"/> saw finish, shared among the workers holding runs now.
    /// </summary>
    public static SweepProgress Progress(IRunStore store, string? sweep, IReadOnlyCollection<string>? among, RunTimer timer)
    {
        ArgumentNullException.ThrowIfNull(timer);
        var count = Count(store, sweep, among);
        return new SweepProgress(count.Done, count.Left, count.TimeLeft(timer));
    }

    /// <summary>
    /// Where a sweep that other processes work on stands, as the process that started them sees it:
    /// <see cref="Progress"/> with the runs running and failed, its time left from the wall times
    /// (claim to finish) of the runs that finished having been claimed at or after <paramref name="since"/>.
    /// </summary>
    public static SweepProgress Observe(IRunStore store, string? sweep, IReadOnlyCollection<string>? among, DateTimeOffset since)
    {
        var count = Count(store, sweep, among); // first: a run that ends meanwhile adds to the time, not to the runs done
        var timer = new RunTimer();
        foreach (var r in among is null ? store.All() : among.Select(store.Get).OfType<RunRecord>())
            if (r is { Status: RunStatus.Finished, Started: { } started, Finished: { } finished } && started >= since)
                timer.Add(finished - started);
        return new SweepProgress(count.Done, count.Left, count.TimeLeft(timer)) { Running = count.Running, Failed = count.Failed };
    }

    sealed record Counts(int Done, int Left, int Running, int Failed, int Workers)
    {
        // The mean wall time of a run for each run left, shared among the workers holding runs now.
        public TimeSpan? TimeLeft(RunTimer timer) => timer.Mean is { } mean ? mean * Left / Workers : null;
    }

    static Counts Count(IRunStore store, string? sweep, IReadOnlyCollection<string>? among)
    {
        var status = store.Status().Where(s => sweep is null || s.Sweep == sweep).ToList();
        var workers = Math.Max(1, status.SelectMany(s => s.Held).Where(r => among is null || among.Contains(r.Key)).Select(r => r.Owner).DistinctBy(o => (o.ProcessId, o.Host)).Count());
        if (among is null)
            return new Counts(status.Sum(s => s.Finished + s.Failed), status.Sum(s => s.Pending + s.Running), status.Sum(s => s.Running), status.Sum(s => s.Failed), workers);
        var states = among.Select(k => store.Get(k)?.Status).ToList();
        var left = states.Count(s => s is RunStatus.Pending or RunStatus.Running);
        // The runs running from the one status query: read one by one, a worker that moved on meanwhile would count twice.
        var running = Math.Min(left, status.SelectMany(s => s.Held).Count(r => among.Contains(r.Key)));
        return new Counts(states.Count(s => s is RunStatus.Finished or RunStatus.Failed), left, running, states.Count(s => s is RunStatus.Failed), workers);
    }

    // A claimed run whose stored configuration no longer validates (a model or criterion this Pai lacks) fails in the store, not only here.
    static RunPlan PlanOrFail(IRunStore store, RunRecord claimed)
    {
        try
        {
            return RunPlan.Stored(claimed.Config);
        }
        catch (ArgumentException e)
        {
            store.Fail(claimed.Key, e.Message);
            throw;
        }
    }

    static bool OthersHoldRuns(IRunStore store, string? sweep, IReadOnlyCollection<string>? among) =>
        store.Status().Where(s => sweep is null || s.Sweep == sweep).SelectMany(s => s.Held).Any(r => among is null || among.Contains(r.Key));
}
