using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>
/// Where runs are stored and who works on them: `--store URL` and `--artifacts DIR` (everywhere
/// `--results` is accepted), `pai worker`, `pai status`, and the sweep options `--sweep`,
/// `--enqueue`, `--workers` and `--lease`.
/// </summary>
internal static class WorkerCommands
{
    internal static readonly Option<string?> Store = new("--store")
    {
        Description = "a PostgreSQL run store shared by workers on several machines (postgresql://user@host:port/database); default: the SQLite store in --results",
        Recursive = true,
    };

    internal static readonly Option<string?> Artifacts = new("--artifacts")
    {
        Description = "where masks, checkpoints and cached scores go with --store: a directory every worker and the report can read (default: --results)",
        Recursive = true,
    };

    static readonly Option<string> SweepName = new("--sweep")
    {
        Description = "the sweep's name in the store (workers join it by this name)",
        DefaultValueFactory = _ => "main",
    };

    static readonly Option<string?> WorkerSweep = new("--sweep") { Description = "work only on this sweep (default: any run in the store)" };

    static readonly Option<bool> Enqueue = new("--enqueue") { Description = "define the sweep in the store and return; `pai worker` runs it" };

    static readonly Option<int?> Workers = new("--workers")
    {
        Description = "local worker processes, each with its share of the cores (--threads sets each one's threads); " +
                      "sweep default: one per core on a CPU, 1 (this process) with --threads or a GPU; worker default: 1",
    };

    static readonly Option<double> Lease = new("--lease")
    {
        Description = "seconds a claimed run stays held without a renewal before other workers take it over (renewed every quarter of it)",
        DefaultValueFactory = _ => new RunStoreOptions().StaleAfter.TotalSeconds,
    };

    const double MaxLeaseSeconds = 7 * 24 * 3600;

    static readonly Option<bool> Migrate = new("--migrate") { Description = "upgrade a store written by an older Pai to this Pai's schema" };

    /// <summary>Registers the global options and the `worker` and `status` commands.</summary>
    internal static void Register(RootCommand root, Option<string> results)
    {
        root.Options.Add(Store);
        root.Options.Add(Artifacts);
        root.Subcommands.Add(Worker(results));
        root.Subcommands.Add(StatusCommand(results));
    }

    /// <summary>The options `pai sweep` takes for naming, enqueueing and local workers.</summary>
    internal static void AddSweepOptions(Command sweep)
    {
        foreach (var option in new Option[] { SweepName, Enqueue, Workers, Lease }) sweep.Options.Add(option);
    }

    /// <summary>The store named by --store (or --results), opened for writing (created when missing).</summary>
    internal static IRunStore OpenStore(ParseResult p, bool migrate = false)
    {
        CheckStoreFolders(p);
        return RunStores.Open(p.GetValue(Store), p.GetValue(RunCommands.Results)!, p.GetValue(Artifacts), Options(p, migrate));
    }

    /// <summary>
    /// Fails before any work when the folder that would hold a new --results (or --artifacts)
    /// directory does not exist: a mistyped path is named, not created along with the store.
    /// </summary>
    internal static void CheckStoreFolders(ParseResult p)
    {
        foreach (var (option, path) in new[] { ("--results", p.GetValue(RunCommands.Results)), ("--artifacts", p.GetValue(Artifacts)) })
        {
            if (path is null) continue;
            Cli.CheckWritable(path, option, folder: true);
            // Stricter than other output folders: a store is long-lived, so only its own folder is made.
            var full = Path.GetFullPath(path);
            if (!Directory.Exists(full) && Path.GetDirectoryName(full) is { } parent && !Directory.Exists(parent))
                throw new ArgumentException($"{option}: the folder '{parent}' does not exist; create it first or write elsewhere");
        }
    }

    /// <summary>
    /// The store named by --store or --results, which must exist already (for `report`, `status` and
    /// `worker`): nothing is created, and a missing store is bad input named with <paramref name="what"/>
    /// and <paramref name="fix"/>.
    /// </summary>
    internal static IRunStore OpenExistingStore(ParseResult p, bool migrate = false, string what = "",
        string fix = "run `./pai sweep` or `./pai run` first")
    {
        var options = Options(p, migrate) with { Existing = true };
        if (p.GetValue(Store) is null)
        {
            var dir = Path.GetFullPath(p.GetValue(RunCommands.Results)!);
            if (!File.Exists(Path.Combine(dir, SqliteRunStore.DatabaseFileName)))
                throw new ArgumentException($"{what}no results store in {dir}; {fix}, or point --results (or --store) at an existing store");
        }
        return RunStores.Open(p.GetValue(Store), p.GetValue(RunCommands.Results)!, p.GetValue(Artifacts), options);
    }

    static RunStoreOptions Options(ParseResult p, bool migrate)
    {
        var lease = p.GetResult(Lease) is null ? new RunStoreOptions().StaleAfter.TotalSeconds : p.GetValue(Lease);
        // Below a second the renewals (every quarter lease) would flood the store; beyond a week a dead
        // worker's run would wait that long to be taken over (and 1e300 s overflows a TimeSpan).
        if (!(lease is >= 1 and <= MaxLeaseSeconds))
            throw new ArgumentException($"--lease must be from 1 to {MaxLeaseSeconds} seconds (a week), got {lease.ToString(CultureInfo.InvariantCulture)}");
        return new RunStoreOptions { StaleAfter = TimeSpan.FromSeconds(lease), Migrate = migrate };
    }

    /// <summary>
    /// `pai sweep` after its grid is built: define it in the store and return (--enqueue), run it in
    /// N local worker processes (--workers N), or work on it in this process; then the report.
    /// </summary>
    internal static int RunSweep(ParseResult p, IReadOnlyList<RunConfig> configs, bool report, SeedTarget? seeds = null)
    {
        var name = p.GetValue(SweepName)!;
        var workers = p.GetValue(Workers) ?? DefaultWorkers(p, configs);
        Cli.CheckProcesses(workers, "--workers");
        if (seeds is not null && p.GetValue(Enqueue))
            throw new ArgumentException("--target-ci adds seeds as runs finish, so this process must run the sweep: drop --enqueue (--workers N runs it in N local workers)");
        var interval = ProgressInterval();
        using var store = OpenStore(p);
        var seedNote = seeds is null ? "" : $" and seeds where needed (95% interval within ±{seeds.Points} pp, up to {seeds.MaxSeeds} a cell)";
        AnsiConsole.MarkupLine($"sweep {Markup.Escape(name)}: {configs.Count} runs{seedNote} " +
                               $"({Markup.Escape(configs[0].Model)} on {Markup.Escape(configs[0].Dataset)}), " +
                               $"store {Markup.Escape(store.Location)}, artifacts in [bold]{Markup.Escape(store.Directory)}[/]");
        var failed = 0;
        var since = DateTimeOffset.UtcNow;
        var counted = new HashSet<string>(); // progress counts every round so far
        if (p.GetValue(Enqueue) || workers > 1)
            Sweep.InRounds(store, configs, seeds, round =>
            {
                counted.UnionWith(round.Select(c => c.Key));
                var before = store.Status().FirstOrDefault(s => s.Sweep == name)?.Total ?? 0;
                Sweep.Define(store, name, round);
                var after = store.Status().First(s => s.Sweep == name);
                Console.WriteLine($"sweep {name}: {after.Total - before} runs added ({after.Pending} pending, {after.Running} running, {after.Finished} finished, " +
                    $"{after.Failed} failed)");
                if (p.GetValue(Enqueue))
                    Console.WriteLine($"start workers with: ./pai worker {store.Location} --sweep {name}{(store is PostgresRunStore ? $" --artifacts {store.Directory}" : "")}");
                else failed += RunLocalWorkers(p, store, name, workers, counted, since, interval);
            }, Console.WriteLine);
        else
        {
            Cli.ConfigureThreads(p); // only this process computes
            failed = RunCommands.Execute(store, configs, name, seeds);
        }
        if (p.GetValue(Enqueue)) return 0;
        if (report) ReportCommand.WriteReport(store, null, seeds: seeds);
        return failed == 0 ? 0 : 1;
    }

    static Command Worker(Option<string> results)
    {
        var cmd = new Command("worker",
            "Work on the runs of a sweep in the store (--store URL for workers on several machines): claim the next pending run, " +
            "run it with its lease renewed, record it, until none is left. A run whose worker died is taken over when its lease expires.");
        foreach (var option in new Option[] { WorkerSweep, Workers, Lease }) cmd.Options.Add(option);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var workers = p.GetValue(Workers) ?? 1;
            Cli.CheckProcesses(workers, "--workers");
            var interval = ProgressInterval();
            // A worker only works on runs a sweep defined: it never starts an empty store of its own.
            using var store = OpenExistingStore(p, what: "no store to work on: ", fix: "define a sweep there first (`./pai sweep --enqueue`)");
            var sweep = p.GetValue(WorkerSweep);
            if (workers > 1) return RunLocalWorkers(p, store, sweep, workers, among: null, DateTimeOffset.UtcNow, interval) == 0 ? 0 : 1;
            Console.WriteLine($"worker {Environment.ProcessId} on {store.Options.HostName}: {(sweep is null ? "every sweep" : $"sweep {sweep}")} of {store.Location}, " +
                              $"lease {store.Options.StaleAfter.TotalSeconds:0.#} s");
            var summary = ConsoleProgress.Show(progress => Sweep.Work(store, sweep, progress, Log));
            Console.WriteLine($"{summary.Ran} run, {summary.Failed} failed, {summary.Lost} lost to other workers");
            return summary.Failed == 0 ? 0 : 1;
        }));
        return cmd;
    }

    static Command StatusCommand(Option<string> results)
    {
        var cmd = new Command("status", "Runs pending, running (with worker and time since its last lease renewal), finished and failed, per sweep.");
        cmd.Options.Add(Migrate);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            using var store = OpenExistingStore(p, p.GetValue(Migrate));
            if (p.GetValue(Migrate)) Console.WriteLine($"{store.Location}: schema is current");
            var sweeps = store.Status();
            if (sweeps.Count == 0)
            {
                Console.WriteLine($"the store {store.Location} holds no runs yet");
                return 0;
            }
            var table = new Table().Border(TableBorder.Rounded).AddColumns("sweep", "pending", "running", "finished", "failed", "total");
            foreach (var s in sweeps)
                table.AddRow(Markup.Escape(s.Sweep.Length == 0 ? "(no sweep)" : s.Sweep), s.Pending.ToString(), s.Running.ToString(),
                    s.Finished.ToString(), s.Failed > 0 ? $"[red]{s.Failed}[/]" : "0", s.Total.ToString());
            AnsiConsole.Write(table);
            var held = sweeps.SelectMany(s => s.Held.Select(r => (s.Sweep, Run: r))).ToList();
            if (held.Count > 0)
            {
                var running = new Table().Border(TableBorder.Rounded).AddColumns("sweep", "run", "config", "worker", "last renewal", "attempt");
                foreach (var (sweep, r) in held)
                    running.AddRow(Markup.Escape(sweep), r.Key, Markup.Escape(r.Label), Markup.Escape($"{r.Owner.ProcessId}@{r.Owner.Host}"),
                        $"{r.HeartbeatAge.TotalSeconds:0} s ago{(r.HeartbeatAge > store.Options.StaleAfter ? " (lease expired)" : "")}", r.Attempts.ToString());
                AnsiConsole.Write(running);
            }
            Console.WriteLine($"store {store.Location}, artifacts in {store.Directory}");
            return 0;
        }, computes: false));
        return cmd;
    }

    static void Log(string line)
    {
        if (line.Contains(" failed: ")) Cli.ColourLine("red", line);
        else if (line.Contains(" lost: ")) Cli.ColourLine("yellow", line);
        else Console.WriteLine(line);
    }

    /// <summary>
    /// A sweep's workers when --workers is not given: on a CPU, one single-threaded process per core
    /// (at most one per run), since runs side by side use the cores better than threads within one
    /// small run (measured in docs/main-job.md); with --threads given, or on a GPU, this process
    /// alone. Not fewer on a busy machine: single-threaded processes share busy cores fairly, unlike
    /// the threads of one process, which wait for each other.
    /// </summary>
    static int DefaultWorkers(ParseResult p, IReadOnlyList<RunConfig> configs) =>
        p.GetResult(PaiCommand.Threads) is { Implicit: false } || p.GetValue(Enqueue) || configs.Count == 0
        || configs.Select(c => c.Device).Distinct().Any(d => RunPlan.DeviceOf(d).Type != Pai.Torch.DeviceType.Cpu)
            ? 1
            : Math.Clamp(Environment.ProcessorCount, 1, configs.Count);

    /// <summary>The environment variable that sets how often (seconds) the process that started local workers shows where the sweep stands.</summary>
    internal const string ProgressIntervalVariable = "PAI_PROGRESS_INTERVAL";

    static TimeSpan ProgressInterval()
    {
        var text = Environment.GetEnvironmentVariable(ProgressIntervalVariable);
        if (string.IsNullOrEmpty(text)) return TimeSpan.FromSeconds(30);
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds is >= 0.01 and <= 86_400
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"{ProgressIntervalVariable} must be a number of seconds from 0.01 to 86400, got '{text}'; unset it for the default of 30");
    }

    /// <summary>
    /// Starts <paramref name="count"/> `pai worker` processes on this machine, each with its share
    /// of the cores other processes leave free (or --threads each), relays their output, and waits,
    /// showing every <paramref name="interval"/> and at the end where the sweep stands (the runs
    /// <paramref name="among"/> when given; the time left from the runs claimed since
    /// <paramref name="since"/>). Returns how many failed.
    /// </summary>
    static int RunLocalWorkers(ParseResult p, IRunStore store, string? sweep, int count, IReadOnlyCollection<string>? among, DateTimeOffset since, TimeSpan interval)
    {
        var threads = p.GetResult(PaiCommand.Threads) is { Implicit: false } ? p.GetValue(PaiCommand.Threads) : Math.Max(1, Host.PaiHost.DefaultThreads.Threads / count);
        Console.WriteLine($"starting {count} worker processes with {threads} thread{(threads == 1 ? "" : "s")} each");
        var args = new List<string> { "worker", "--threads", threads.ToString(CultureInfo.InvariantCulture),
            "--lease", store.Options.StaleAfter.TotalSeconds.ToString(CultureInfo.InvariantCulture) };
        if (store is PostgresRunStore) args.AddRange(["--store", p.GetValue(Store)!, "--artifacts", store.Directory]);
        else args.AddRange(["--results", store.Directory]);
        if (sweep is not null) args.AddRange(["--sweep", sweep]);
        var children = Enumerable.Range(1, count).Select(i => StartSelf(args, $"[worker {i}] ")).ToList();
        try
        {
            // Each worker shows its own runs; this process, the whole sweep: when a run has ended (seen by a
            // cheap count every few seconds) and at least every interval.
            var who = sweep is null ? "workers" : $"sweep {sweep}";
            int? Ended()
            {
                try { return store.Status().Where(s => sweep is null || s.Sweep == sweep).Sum(s => s.Finished + s.Failed); }
                catch (RunStoreException) { return null; }
            }
            string? last = null;
            void Show(bool unlessSaid = false)
            {
                string line;
                try { line = $"{who}: {Sweep.Observe(store, sweep, among, since)}"; }
                catch (RunStoreException e) { line = $"{who}: progress not known now: {e.Message}"; } // the workers go on regardless
                if (!unlessSaid || line != last) Console.WriteLine(line);
                last = line;
            }
            var poll = interval < TimeSpan.FromSeconds(2) ? interval : TimeSpan.FromSeconds(2);
            var shown = Stopwatch.StartNew();
            var ended = Ended();
            while (children.FirstOrDefault(c => !c.HasExited) is { } running)
            {
                if (running.WaitForExit(poll) || children.All(c => c.HasExited)) continue; // the last line comes below
                var now = Ended();
                if (now == ended && shown.Elapsed < interval) continue;
                Show();
                (ended, shown) = (now, Stopwatch.StartNew());
            }
            foreach (var child in children) child.WaitForExit(); // their output relayed to the end
            Show(unlessSaid: true);
            var failed = children.Count(c => c.ExitCode != 0);
            Console.WriteLine($"{count} workers done{(failed > 0 ? $", {failed} exited with an error" : "")}");
            return failed;
        }
        finally
        {
            foreach (var child in children)
            {
                if (!child.HasExited) child.Kill(entireProcessTree: true);
                child.Dispose();
            }
        }
    }

    // This program again: the apphost, or `dotnet exec pai.dll` when run through the dotnet host.
    static Process StartSelf(IEnumerable<string> args, string prefix)
    {
        var self = Environment.ProcessPath ?? "dotnet";
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(typeof(WorkerCommands).Assembly.Location);
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start a worker process ({self})");
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) Console.WriteLine(prefix + e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine(prefix + e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }
}
