using System.CommandLine;
using Pai.Host.Reports;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai report`: the results of a store as tables, CSV, Markdown, charts and an HTML page.</summary>
internal static class ReportCommand
{
    internal static Command Create()
    {
        var output = new Option<string?>("--out", "-o") { Description = "report directory (default: RESULTS/report)" };
        var layers = new Option<string[]>("--layers") { Description = "run keys whose per-layer density to chart (default: one run per criterion at the highest " +
            "sparsity)", AllowMultipleArgumentsPerToken = true };
        var wide = new Option<bool>("--wide") { Description = "show every column of the results table in the terminal, with p-values (default: the columns that fit 120 " +
            "characters)" };
        var (targetCi, maxSeeds) = RunCommands.SeedTargetOptions("the sweep's --target-ci W: the findings name the cells still wider than ±W accuracy points at --max-seeds seeds");
        var cmd = new Command("report", "Results of the store: a terminal table, report.md, results.csv, accuracy-vs-sparsity and per-layer density charts (SVG and PNG), " +
            "report.html.");
        cmd.Options.Add(output);
        cmd.Options.Add(layers);
        cmd.Options.Add(wide);
        cmd.Options.Add(targetCi);
        cmd.Options.Add(maxSeeds);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            using var store = WorkerCommands.OpenExistingStore(p);
            var keys = p.GetValue(layers);
            var seeds = RunCommands.SeedTargetOf(p.GetValue(targetCi), p.GetValue(maxSeeds), givenSeeds: 1);
            WriteReport(store, p.GetValue(output), keys is { Length: > 0 } ? keys : null, p.GetValue(wide), seeds);
            return 0;
        }, computes: false));
        return cmd;
    }

    /// <summary>Draws the results table and the findings, and writes the report files.</summary>
    internal static void WriteReport(IRunStore store, string? outputDirectory, IReadOnlyList<string>? layerRuns = null, bool wide = false, SeedTarget? seeds = null)
    {
        var runs = store.All();
        if (runs.Count == 0)
        {
            Console.WriteLine($"the store {store.Location} holds no runs yet");
            return;
        }
        var groups = ReportTables.Aggregate(runs);
        var width = Math.Min(ReportTables.TerminalWidth, AnsiConsole.Profile.Width);
        if (wide) Draw(ReportTables.ResultsTable(groups), natural: true);
        else
            foreach (var t in ReportTables.TerminalTables(groups, width))
            {
                AnsiConsole.MarkupLine($"[bold]{Markup.Escape(t.Title)}[/]");
                Draw(t.Table);
                if (t.LeftOut.Count > 0) Say($"Left out to fit {width} columns: {string.Join(", ", t.LeftOut)} (--wide shows every column).", width);
            }
        Say(wide
            ? $"{ReportTables.HigherMark} {ReportTables.LowerMark} significantly higher / lower, {ReportTables.NotSignificantMark} not significant: " +
              $"t-test over the seeds, Holm-corrected p < {ReportTables.Alpha:0.00} (in brackets). {ReportTables.NotWorseMark}: an ablation not significantly worse than its " +
                  "criterion."
            : $"Top-1: mean ± 95% CI over the seeds. {ReportTables.HigherMark} {ReportTables.LowerMark} significantly higher / lower, " +
              $"{ReportTables.NotSignificantMark} not significant (t-test over the seeds, Holm-corrected p < {ReportTables.Alpha:0.00}); " +
              $"{ReportTables.NotWorseMark[..1]}: an ablation not significantly worse than its criterion. p-values and every column: report.md, or --wide.", width);

        var findings = ReportFindings.Lines(groups, runs, seeds);
        if (findings.Count > 0)
        {
            AnsiConsole.MarkupLine("[bold]Findings[/]");
            foreach (var f in findings) Say("- " + f, width, "  ");
        }

        var files = ReportWriter.Write(runs, outputDirectory ?? Path.Combine(store.Directory, "report"),
            new ReportOptions { LayerRunKeys = layerRuns, Seeds = seeds });
        if (files.ChartProblem is { } problem) Cli.ColourLine("yellow", $"charts not drawn: {problem}");
        var others = new[] { files.Markdown, files.Csv }.Concat(files.Charts).Select(Path.GetFileName);
        AnsiConsole.MarkupLine($"report: [bold]{Markup.Escape(files.Html)}[/] (also {Markup.Escape(string.Join(", ", others))} in {Markup.Escape(files.Directory)})");
    }

    /// <summary>
    /// Draws a table; with <paramref name="natural"/> at its full width even beyond the terminal's
    /// (--wide asked for every column: squeezed into the terminal, cells would wrap mid-word).
    /// </summary>
    static void Draw(ReportTable table, bool natural = false)
    {
        var grid = new Table().Border(TableBorder.Rounded);
        foreach (var c in table.Columns)
            grid.AddColumn(new TableColumn(Markup.Escape(c.Header)) { Alignment = c.RightAligned ? Justify.Right : Justify.Left, NoWrap = natural });
        foreach (var row in table.Rows) grid.AddRow(row.Select(Markup.Escape).ToArray());
        var width = AnsiConsole.Profile.Width;
        if (natural) AnsiConsole.Profile.Width = Math.Max(width, ReportTables.BorderedWidth(table));
        try { AnsiConsole.Write(grid); }
        finally { AnsiConsole.Profile.Width = width; }
    }

    /// <summary>Writes text wrapped at spaces to <paramref name="width"/> characters, continuation lines indented.</summary>
    static void Say(string text, int width, string indent = "")
    {
        var line = "";
        foreach (var word in text.Split(' '))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width)
            {
                AnsiConsole.WriteLine(line);
                line = indent + word;
            }
            else line = line.Length == 0 ? word : line + " " + word;
        }
        if (line.Length > 0) AnsiConsole.WriteLine(line);
    }
}
