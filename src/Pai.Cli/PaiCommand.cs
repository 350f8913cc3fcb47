using System.CommandLine;
using Pai.Host;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>The `pai` command tree.</summary>
internal static class PaiCommand
{
    internal static readonly Option<int> Threads = new("--threads")
    {
        Description = "libtorch intra-op threads: 0 = the cores other processes leave free (the cores less the load at start, rounded, at least 1; `pai info` shows the " +
            "choice), a number is used as given",
        DefaultValueFactory = _ => 0,
        Recursive = true,
    };

    internal static RootCommand Build()
    {
        var root = new RootCommand("Pai: pruning at initialization on libtorch.");
        root.Options.Add(Threads);
        root.Subcommands.Add(InfoCommand());
        root.Subcommands.Add(ListCommand());
        root.Options.Add(RunCommands.Results);
        root.Subcommands.Add(PruneTrainCommands.Prune());
        root.Subcommands.Add(PruneTrainCommands.Train());
        root.Subcommands.Add(RunCommands.Run());
        root.Subcommands.Add(RunCommands.Sweep());
        root.Subcommands.Add(EstimateCommand.Create());
        root.Subcommands.Add(AutoSCommands.AutoS());
        root.Subcommands.Add(AutoSCommands.Imp());
        root.Subcommands.Add(ReportCommand.Create());
        WorkerCommands.Register(root, RunCommands.Results);
        return root;
    }

    static Command ListCommand()
    {
        var what = new Argument<string>("what") { Description = "models, datasets or criteria" };
        what.AcceptOnlyFromAmong("models", "datasets", "criteria");
        var list = new Command("list", "List the models, data sets or criteria (with their formulas).");
        list.Arguments.Add(what);
        list.SetAction(parse => Cli.Guard(parse, () =>
        {
            var table = new Table().Border(TableBorder.Rounded);
            switch (parse.GetValue(what))
            {
                case "models":
                    table.AddColumns("model", "description");
                    foreach (var m in Pai.Host.Models.ModelZoo.Names) table.AddRow(m, Markup.Escape(Pai.Host.Models.ModelZoo.Describe(m)));
                    break;
                case "datasets":
                    table.AddColumns("data set", "classes", "shape", "where");
                    foreach (var name in Pai.Host.Data.DatasetRegistry.Names)
                    {
                        var i = Pai.Host.Data.DatasetRegistry.Info(name);
                        var at = Pai.Host.Data.DatasetRegistry.Locate(name);
                        table.AddRow(name, i.Classes.ToString(), $"{i.Channels}×{i.Height}×{i.Width}",
                            Markup.Escape(at.Found ? at.Location : $"not found: {at.HowToGet}"));
                    }
                    break;
                default:
                    table.AddColumns("criterion", "score (keep the highest)", "rounds", "from");
                    foreach (var c in Registry.builtIns)
                        table.AddRow(c.Name, Markup.Escape(Registry.formulaText(c)), c.DefaultRounds.ToString(), Markup.Escape(c.Source));
                    table.AddRow(Registry.learnedName, "learned from iterative rewind pruning (needs --predictor FILE)", "1", "Liu et al. 2024");
                    AnsiConsole.Write(table);
                    var stats = new Table().Border(TableBorder.Rounded).Title("write your own: -c \"FORMULA\" over these statistics");
                    stats.AddColumns("statistic", "what");
                    foreach (var (name, what) in Statistics.described) stats.AddRow(Markup.Escape(name), Markup.Escape(what));
                    foreach (var (name, what) in Formula.functionsDescribed) stats.AddRow(Markup.Escape(name + "(…)"), Markup.Escape(what));
                    stats.AddRow("+ - * / ^", "arithmetic (^ takes a number exponent); temperatures go into the statistic: grad(T=200)");
                    table = stats;
                    table.Caption("hdiag (hutch_diag, hutch_obd, hts): exact by the Gauss–Newton identity on piecewise-linear models (all but vit-tiny); Hutchinson on " +
                        "vit-tiny, with --curvature hutchinson, or when a Hutchinson option (--probes, --probe-scope, …) is given");
                    break;
            }
            AnsiConsole.Write(table);
            return 0;
        }, computes: false));
        return list;
    }

    static Command InfoCommand()
    {
        var info = new Command("info", "Versions, threads, active BLAS, native library path and data set locations.");
        info.SetAction(parse => Cli.Guard(parse, () =>
        {
            var d = PaiHost.Describe();
            var table = new Table().AddColumns("", "").HideHeaders().Border(TableBorder.Rounded);
            table.AddRow("Pai", d.PaiVersion);
            table.AddRow("libtorch", Markup.Escape(d.Libtorch));
            table.AddRow("threads", Markup.Escape(d.ThreadsLine));
            table.AddRow("idle threads", Markup.Escape(d.WaitPolicy));
            table.AddRow("BLAS", Markup.Escape(d.Blas));
            table.AddRow("native library", Markup.Escape(d.NativeLibrary));
            table.AddRow("CUDA", Markup.Escape(d.Cuda));
            foreach (var ds in d.Datasets)
                table.AddRow($"data: {ds.Name}", Markup.Escape(ds.Found ? ds.Location : $"not found in {ds.Location}: {ds.HowToGet}"));
            AnsiConsole.Write(table);
            return 0;
        }));
        return info;
    }
}
