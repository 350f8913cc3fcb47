using System.CommandLine;
using System.Globalization;
using Pai.Host;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai run` and `pai sweep`: experiments recorded in the results store, resumable.</summary>
internal static class RunCommands
{
    internal static readonly Option<string> Results = new("--results", "-r")
    {
        Description = "results directory (SQLite store, masks, checkpoints, cached scores, reports)",
        DefaultValueFactory = _ => "pai-results",
        Recursive = true,
    };

    /// <summary>
    /// The main job's training budget, the default of `pai sweep`: two whole epochs (2 × 469 batches
    /// of 128 on Fashion-MNIST), what five seeds of the grid afford in 15 minutes on two cores, and
    /// for LeNet-5, the main job's model, AdamW at 0.001 instead of its SGD at 0.005: in two epochs
    /// it trains every cell further (dense 88.96% against 87.65%) without the blow-ups a faster SGD
    /// rate gives GraSP's 90% masks (docs/main-job.md).
    /// </summary>
    internal static readonly CommandDefaults MainBudget = new(c => c.Model == "lenet5"
        ? c with { Epochs = 2, Optimizer = "adamw", LearningRate = 0.001 }
        : c with { Epochs = 2 });

    /// <summary>
    /// The per-round budget of `pai autos label` and `pai imp` (1 epoch of at most 200 batches of
    /// 128): R rounds of it on lenet5 take minutes. The learning rate is the model's default.
    /// </summary>
    internal static readonly CommandDefaults RoundBudget = new(c => c with { Epochs = 1, MaxBatchesPerEpoch = 200 });

    /// <summary>
    /// The main job's sparsities: the two ends of the usual range. Five seeds of the eight criteria
    /// at three sparsities would not fit the 15-minute budget on 2 cores.
    /// </summary>
    internal static readonly double[] MainSparsities = [0.9, 0.995];

    /// <summary>
    /// The main job's seeds, the same for every cell (the report's tests pair them): five, enough
    /// for 95% intervals of about ±2 points where the seeds' spread is 1–2 points.
    /// </summary>
    internal static readonly ulong[] MainSeeds = [0, 1, 2, 3, 4];

    const SettingGroup AllGroups = SettingGroup.Data | SettingGroup.Scoring | SettingGroup.Pruning | SettingGroup.Training;

    internal static Command Run()
    {
        var cmd = new Command("run", "Prune then train one configuration, recorded in the results store (a finished run is not repeated). Without -c it trains densely.");
        var o = new ConfigOptions(cmd, AllGroups);
        cmd.Options.Add(DistributedLaunch.NProc);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = PaiHost.Configure(Cli.CriterionAndSparsity(p, o, o.Read(p), required: false));
            if (DistributedLaunch.Run(p, config) is { } exitCode) return exitCode;
            using var store = WorkerCommands.OpenStore(p);
            var failed = Execute(store, [config], "run");
            var record = store.Get(config.Key)!;
            if (record.Prune is { } prune)
                AnsiConsole.MarkupLine($"kept {prune.Density:P2} of prunable " +
                    $"weights{(prune.Collapsed.Count > 0 ? $", [yellow]collapsed: {Markup.Escape(string.Join(", ", prune.Collapsed))}[/]" : "")}");
            if (record.FinalTop1 is { } top1)
                AnsiConsole.MarkupLine($"{Markup.Escape(config.Label)}: test top-1 [bold]{top1:P2}[/] (run {config.Key} in {Markup.Escape(store.Directory)})");
            return failed == 0 ? 0 : 1;
        }));
        return cmd;
    }

    internal static Command Sweep()
    {
        var criteria = new Option<string>("--criteria") { Description = "comma-separated criteria (names or formulas; separate formulas with ';' when they contain " +
            "commas)", DefaultValueFactory = _ => string.Join(",", Registry.mainJob) };
        var sparsities = new Option<string>("--sparsities")
        {
            Description = "comma-separated sparsities in [0, 1)",
            DefaultValueFactory = _ => string.Join(",", MainSparsities.Select(s => s.ToString(CultureInfo.InvariantCulture))),
        };
        var seeds = new Option<string>("--seeds") { Description = "comma-separated seeds", DefaultValueFactory = _ => string.Join(",", MainSeeds) };
        var warmups = new Option<string>("--warmup-modes") { Description = "BN warm-up on, off, or on,off (on uses --warmup batches)", DefaultValueFactory = _ => "on" };
        var ablations = new Option<string>("--ablations") { Description = $"sanity checks run beside each criterion: {string.Join(",", Ablations.Names)} " +
            "(comma-separated)", DefaultValueFactory = _ => "none" };
        var noDense = new Option<bool>("--no-dense") { Description = "skip the dense baseline" };
        var noReport = new Option<bool>("--no-report") { Description = "do not write the report at the end" };
        var dryRun = new Option<bool>("--dry-run") { Description = "print the runs (key and label) the grid describes, then stop" };
        var (targetCi, maxSeeds) = SeedTargetOptions("add seeds (the numbers after --seeds, the same for every cell) to the cells whose 95% interval of the mean top-1 is wider " +
            "than ± this many accuracy points, until it is narrower or --max-seeds is reached");
        var cmd = new Command("sweep",
            "A grid of criteria × sparsities × seeds × warm-up × ablations, plus a dense baseline, recorded in the store and resumable: " +
            "finished runs are skipped, an interrupted one restarts. With no options it is the main job: lenet5 on Fashion-MNIST, " +
            $"{Registry.mainJob.Length} criteria at 90% and 99.5% sparsity, seeds {string.Join(", ", MainSeeds)}, on the budget shown below (--epochs, --max-batches, --optimizer, --lr " +
                "change it), in one worker process per core.");
        foreach (var opt in new Option[] { criteria, sparsities, seeds, warmups, ablations, noDense, noReport, dryRun, targetCi, maxSeeds }) cmd.Options.Add(opt);
        var o = new ConfigOptions(cmd, AllGroups, MainBudget, nameof(RunConfig.Criterion), nameof(RunConfig.Sparsity), nameof(RunConfig.Ablation));
        WorkerCommands.AddSweepOptions(cmd);
        // Threads are configured only where this process runs the sweep itself (not for --dry-run, --enqueue or workers).
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var names = SplitCriteria(p.GetValue(criteria)!);
            var levels = Split(p.GetValue(sparsities)!, "--sparsities").Select(s => ParseDouble(s, "--sparsities")).ToList();
            foreach (var level in levels) Selection.validateSparsity(level);
            var seedList = Split(p.GetValue(seeds)!, "--seeds").Select(s => ParseSeed(s)).ToList();
            var modes = Split(p.GetValue(warmups)!, "--warmup-modes");
            if (modes.Any(m => m is not ("on" or "off"))) throw new ArgumentException($"--warmup-modes takes on, off or on,off; got '{p.GetValue(warmups)}'");
            var checks = Split(p.GetValue(ablations)!, "--ablations");
            if (checks.FirstOrDefault(a => !Ablations.Names.Contains(a)) is { } bad) throw new ArgumentException($"--ablations: unknown ablation '{bad}'; valid: " +
                $"{string.Join(", ", Ablations.Names)}");
            var baseline = o.Read(p);
            var warmupOn = baseline.WarmupBatches > 0 ? baseline.WarmupBatches : new RunConfig().WarmupBatches;
            var configs = new List<RunConfig>();
            foreach (var seed in seedList)
            {
                var seeded = baseline with { Seed = seed };
                if (!p.GetValue(noDense)) configs.Add(seeded with { WarmupBatches = new RunConfig().WarmupBatches });
                foreach (var mode in modes)
                    foreach (var criterion in names)
                        foreach (var sparsity in levels)
                            foreach (var ablation in checks)
                                configs.Add(seeded with { Criterion = criterion, Sparsity = sparsity, WarmupBatches = mode == "on" ? warmupOn : 0, Ablation = ablation });
            }
            // Every configuration is checked before the store is touched: a bad grid leaves nothing behind.
            configs = configs.Select(PaiHost.Configure).DistinctBy(c => c.Key).ToList();
            var target = SeedTargetOf(p.GetValue(targetCi), p.GetValue(maxSeeds), seedList.Distinct().Count());
            var extra = target is null ? [] : SeedRounds.ExtraSeeds(configs, target);
            if (p.GetValue(dryRun))
            {
                foreach (var c in configs) Console.WriteLine($"{c.Key}  {c.Label}  {c.CanonicalJson()}");
                Console.WriteLine($"{configs.Count} runs" + (target is null ? "" : extra.Count == 0
                    ? $" (--max-seeds {target.MaxSeeds}: no seeds may be added)"
                    : $" in the first round; seeds {extra[0]}–{extra[^1]} may be added to the cells whose 95% interval is wider than ±{target.Points} pp, " +
                      $"up to {target.MaxSeeds} seeds a cell (at most {configs.Count / seedList.Distinct().Count() * extra.Count} more runs)"));
                return 0;
            }
            return WorkerCommands.RunSweep(p, configs, report: !p.GetValue(noReport), target);
        }, computes: false));
        return cmd;
    }

    /// <summary>The options of a seed target (sweep: the target to reach; report: the one the sweep had).</summary>
    internal static (Option<double?> TargetCi, Option<int?> MaxSeeds) SeedTargetOptions(string targetDescription) =>
        (new Option<double?>("--target-ci") { Description = targetDescription },
         new Option<int?>("--max-seeds") { Description = $"with --target-ci: the most seeds a cell gets, the given ones included (default: {SeedTarget.DefaultMaxSeeds})" });

    // --target-ci W [--max-seeds K]: --max-seeds alone has nothing to stop at; a target alone stops at the default limit
    // (or at the seeds given, when they are more).
    internal static SeedTarget? SeedTargetOf(double? halfWidth, int? maxSeeds, int givenSeeds)
    {
        if (halfWidth is null)
            return maxSeeds is null ? null
                : throw new ArgumentException("--max-seeds needs --target-ci W: seeds are added to the cells whose 95% interval is wider than ±W accuracy points");
        if (maxSeeds is < 1) throw new ArgumentException($"--max-seeds must be at least 1, got {maxSeeds}");
        return new SeedTarget(halfWidth.Value, maxSeeds ?? Math.Max(SeedTarget.DefaultMaxSeeds, givenSeeds));
    }

    // Criteria separated by ',' — or by ';' when any formula contains a comma (grad(T=200, …)).
    static List<string> SplitCriteria(string text) =>
        text.Contains(';') ? Split(text.Replace(';', '\n'), "--criteria", '\n') : Split(text, "--criteria");

    /// <summary>Runs the configs with progress display; returns how many failed.</summary>
    internal static int Execute(IRunStore store, IReadOnlyList<RunConfig> configs, string sweep, SeedTarget? seeds = null)
    {
        var summary = ConsoleProgress.Show(progress => Pai.Host.Runs.Sweep.Execute(store, sweep, configs, progress, line =>
        {
            if (line.Contains(" failed: ")) Cli.ColourLine("red", line);
            else Console.WriteLine(line);
        }, seeds: seeds));
        Console.WriteLine($"{summary.Ran} run, {summary.Skipped} skipped, {summary.Failed} failed");
        return summary.Failed;
    }

    static List<string> Split(string text, string option, char separator = ',')
    {
        var parts = text.Split(separator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => s.ToLowerInvariant()).ToList();
        if (parts.Count == 0) throw new ArgumentException($"{option} needs at least one value");
        return parts;
    }

    static double ParseDouble(string s, string option) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new ArgumentException($"{option}: '{s}' is not a number (use e.g. 0.9,0.98)");

    static ulong ParseSeed(string s) =>
        ulong.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new ArgumentException($"--seeds: '{s}' is not a non-negative integer");
}
