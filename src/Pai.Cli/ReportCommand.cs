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
        var layers = new Option<string[]>("--layers") { Description = "run keys whose per-layer density to chart (default: one run per criterion at the highest sparsity)", AllowMultipleArgumentsPerToken = true };
        var cmd = new Command("report", "Results of the store: a terminal table, report.md, results.csv, accuracy-vs-sparsity and per-layer density charts (SVG and PNG), report.html.");
        cmd.Options.Add(output);
        cmd.Options.Add(layers);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            using var store = WorkerCommands.OpenExistingStore(p);
            var keys = p.GetValue(layers);
            WriteReport(store, p.GetValue(output), keys is { Length: > 0 } ? keys : null);
            return 0;
        }));
        return cmd;
    }

    /// <summary>Draws the results table and writes the report files.</summary>
    internal static void WriteReport(IRunStore store, string? outputDirectory, IReadOnlyList<string>? layerRuns = null)
    {
        var runs = store.All();
        if (runs.Count == 0)
        {
            Console.WriteLine($"the store {store.Location} holds no runs yet");
            return;
        }
        var table = ReportTables.TerminalTable(runs);
        var grid = new Table().Border(TableBorder.Rounded);
        foreach (var c in table.Columns)
            grid.AddColumn(new TableColumn(Markup.Escape(c.Header)) { Alignment = c.RightAligned ? Justify.Right : Justify.Left });
        foreach (var row in table.Rows) grid.AddRow(row.Select(Markup.Escape).ToArray());
        AnsiConsole.Write(grid);
        var files = ReportWriter.Write(runs, outputDirectory ?? Path.Combine(store.Directory, "report"),
            new ReportOptions { LayerRunKeys = layerRuns });
        if (files.ChartProblem is { } problem) AnsiConsole.MarkupLine($"[yellow]charts not drawn: {Markup.Escape(problem)}[/]");
        var others = new[] { files.Markdown, files.Csv }.Concat(files.Charts).Select(Path.GetFileName);
        AnsiConsole.MarkupLine($"report: [bold]{Markup.Escape(files.Html)}[/] (also {Markup.Escape(string.Join(", ", others))} in {Markup.Escape(files.Directory)})");
    }
}
