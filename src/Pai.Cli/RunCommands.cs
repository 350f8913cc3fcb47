using System.CommandLine;
using System.Globalization;
using Pai.Host.Runs;
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

    /// <summary>The defaults of the main job: the Fashion-MNIST comparison of the README.</summary>
    internal static readonly string[] MainCriteria = ["random", "magnitude", "snip", "grasp", "synflow", "fisher_obd", "hutch_obd", "hts"];
    internal static readonly double[] MainSparsities = [0.9, 0.98, 0.995];
    // The main job's short budget. LeNet-5 has no batch norm: from Kaiming init, 0.05 diverges dense and 0.01 diverges GraSP at 90%.
    internal const int MainEpochs = 1;
    internal const double MainLearningRate = 0.005;
    // 200 batches of 128 (25,600 images): 25 runs fit in the 15-minute budget on 2 cores.
    internal const int MainMaxBatches = 200;

    internal static Command Run(ConfigOptions o)
    {
        var cmd = new Command("run", "Prune then train one configuration, recorded in the results store (a finished run is not repeated).");
        cmd.Options.Add(new Option<string>("--criterion", "-c") { Description = "pruning criterion, or dense", DefaultValueFactory = _ => "dense" });
        cmd.Options.Add(new Option<double>("--sparsity", "-s") { Description = "fraction of prunable weights removed, in [0, 1)" });
        o.AddPruning(cmd);
        o.AddTraining(cmd);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var criterion = p.GetValue<string>("--criterion")!;
            var config = Experiment.ConfigurePredictor(o.Read(p, criterion, criterion == "dense" ? 0 : p.GetValue<double>("--sparsity")));
            Experiment.Validate(config);
            using var store = WorkerCommands.OpenStore(p);
            var failed = Execute(store, [config], "run");
            var record = store.Get(config.Key)!;
            if (record.Prune is { } prune)
                AnsiConsole.MarkupLine($"kept {prune.Density:P2} of prunable weights{(prune.Collapsed.Count > 0 ? $", [yellow]collapsed: {Markup.Escape(string.Join(", ", prune.Collapsed))}[/]" : "")}");
            if (record.FinalTop1 is { } top1)
                AnsiConsole.MarkupLine($"{Markup.Escape(config.Label)}: test top-1 [bold]{top1:P2}[/] (run {config.Key} in {Markup.Escape(store.Directory)})");
            return failed == 0 ? 0 : 1;
        }));
        return cmd;
    }

    internal static Command Sweep(ConfigOptions o)
    {
        var criteria = new Option<string>("--criteria") { Description = "comma-separated criteria", DefaultValueFactory = _ => string.Join(",", MainCriteria) };
        var sparsities = new Option<string>("--sparsities") { Description = "comma-separated sparsities in [0, 1)", DefaultValueFactory = _ => string.Join(",", MainSparsities.Select(s => s.ToString(CultureInfo.InvariantCulture))) };
        var seeds = new Option<string>("--seeds") { Description = "comma-separated seeds", DefaultValueFactory = _ => "0" };
        var warmups = new Option<string>("--warmup-modes") { Description = "BN warm-up on, off, or on,off (on uses --warmup batches)", DefaultValueFactory = _ => "on" };
        var noDense = new Option<bool>("--no-dense") { Description = "skip the dense baseline" };
        var noReport = new Option<bool>("--no-report") { Description = "do not write the report at the end" };
        var cmd = new Command("sweep",
            "A grid of criteria × sparsities × seeds × warm-up, plus a dense baseline, recorded in the store and resumable: " +
            "finished runs are skipped, an interrupted one restarts. With no options it is the main job: lenet5 on Fashion-MNIST, " +
            $"8 criteria at 90%, 98% and 99.5% sparsity, a short budget ({MainEpochs} epoch of at most {MainMaxBatches} batches at learning rate {MainLearningRate}; --epochs, --max-batches and --lr change it).");
        foreach (var opt in new Option[] { criteria, sparsities, seeds, warmups, noDense, noReport }) cmd.Options.Add(opt);
        o.AddPruning(cmd);
        o.AddTraining(cmd);
        WorkerCommands.AddSweepOptions(cmd);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var names = Split(p.GetValue(criteria)!, "--criteria");
            var levels = Split(p.GetValue(sparsities)!, "--sparsities").Select(s => ParseDouble(s, "--sparsities")).ToList();
            var seedList = Split(p.GetValue(seeds)!, "--seeds").Select(s => ParseSeed(s)).ToList();
            var modes = Split(p.GetValue(warmups)!, "--warmup-modes");
            if (modes.Any(m => m is not ("on" or "off"))) throw new ArgumentException($"--warmup-modes takes on, off or on,off; got '{p.GetValue(warmups)}'");
            var warmupOn = p.GetValue(o.Warmup) > 0 ? p.GetValue(o.Warmup) : new RunConfig().WarmupBatches;
            var configs = new List<RunConfig>();
            foreach (var seed in seedList)
            {
                var baseConfig = WithMainBudget(p, o, o.Read(p, "dense", 0)) with { Seed = seed };
                if (!p.GetValue(noDense)) configs.Add(Experiment.ConfigurePredictor(baseConfig with { WarmupBatches = new RunConfig().WarmupBatches }));
                foreach (var mode in modes)
                    foreach (var criterion in names)
                        foreach (var sparsity in levels)
                            configs.Add(Experiment.ConfigurePredictor(baseConfig with { Criterion = criterion, Sparsity = sparsity, WarmupBatches = mode == "on" ? warmupOn : 0 }));
            }
            configs = configs.DistinctBy(c => c.Key).ToList();
            return WorkerCommands.RunSweep(p, configs, report: !p.GetValue(noReport));
        }));
        return cmd;
    }

    /// <summary>The main job's short training budget, except where --epochs, --lr or --max-batches were given.</summary>
    internal static RunConfig WithMainBudget(ParseResult p, ConfigOptions o, RunConfig c) => c with
    {
        Epochs = p.GetResult(o.Epochs) is { Implicit: false } ? p.GetValue(o.Epochs) : MainEpochs,
        LearningRate = p.GetResult(o.Lr) is { Implicit: false } ? p.GetValue(o.Lr) : MainLearningRate,
        MaxBatchesPerEpoch = p.GetResult(o.MaxBatches) is { Implicit: false } ? p.GetValue(o.MaxBatches)
            : p.GetResult(o.Epochs) is { Implicit: false } ? null : MainMaxBatches,
    };

    /// <summary>Runs the configs with progress display; returns how many failed.</summary>
    internal static int Execute(IRunStore store, IReadOnlyList<RunConfig> configs, string sweep)
    {
        var summary = ConsoleProgress.Show(progress => Pai.Host.Runs.Sweep.Execute(store, sweep, configs, progress, line =>
        {
            if (line.Contains(" failed: ")) AnsiConsole.MarkupLine($"[red]{Markup.Escape(line)}[/]");
            else Console.WriteLine(line);
        }));
        Console.WriteLine($"{summary.Ran} run, {summary.Skipped} skipped, {summary.Failed} failed");
        return summary.Failed;
    }

    static List<string> Split(string text, string option)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => s.ToLowerInvariant()).ToList();
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
