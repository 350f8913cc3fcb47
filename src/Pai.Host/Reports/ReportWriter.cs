using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace Pai.Host.Reports;

/// <summary>
/// Writes the report of a list of runs into a directory: report.md, results.csv, the charts
/// (accuracy-MODEL-DATA and layers-MODEL-DATA…, each as .svg and .png, drawn in-process by
/// <see cref="ReportCharts"/>) and report.html (self-contained: tables inlined, charts as data
/// URIs). Everything is computed first, then each file is written atomically (temporary file +
/// rename), so a failure never leaves a half-written file; charts of an earlier report that this
/// one does not draw are removed. When a chart cannot be drawn, the tables and HTML are still
/// written and say why.
/// </summary>
public static partial class ReportWriter
{
    /// <summary>File name of the Markdown report.</summary>
    public const string MarkdownFile = "report.md";
    /// <summary>File name of the CSV (one row per run).</summary>
    public const string CsvFile = "results.csv";
    /// <summary>File name of the HTML report.</summary>
    public const string HtmlFile = "report.html";

    /// <summary>Writes the report; returns the paths written.</summary>
    /// <param name="runs">The run records (any status; failed and unfinished runs are counted, not averaged).</param>
    /// <param name="outputDirectory">Created when missing.</param>
    /// <param name="options">Options (null: defaults).</param>
    /// <exception cref="ChartRenderingException">A chart could not be drawn and <see cref="ReportOptions.RequireCharts"/> is set.</exception>
    public static ReportFiles Write(IReadOnlyList<RunRecord> runs, string outputDirectory, ReportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(runs);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        options ??= new ReportOptions();
        var dir = Path.GetFullPath(outputDirectory);
        Directory.CreateDirectory(dir);

        var groups = ReportTables.Aggregate(runs);
        var results = ReportTables.ResultsTable(groups);
        var layerRuns = SelectLayerRuns(runs, options.LayerRunKeys);
        var panels = ReportCharts.LayerPanels(layerRuns);
        var hasData = groups.Any(g => g.Seeds > 0);

        IReadOnlyList<ReportChart> accuracy = [], layers = [];
        string? problem = null;
        if (!options.RenderCharts)
            problem = "chart drawing was turned off";
        else
        {
            try
            {
                accuracy = ReportCharts.Accuracy(groups);
                layers = ReportCharts.Layers(panels);
            }
            catch (ChartRenderingException e)
            {
                if (options.RequireCharts) throw;
                accuracy = layers = [];
                problem = e.Message;
            }
        }
        var charts = accuracy.Concat(layers).ToList();
        var chartFiles = charts.SelectMany(c => new[] { Path.Combine(dir, c.SvgFile), Path.Combine(dir, c.PngFile) }).ToList();
        var paths = new ReportFiles(dir, Path.Combine(dir, MarkdownFile), Path.Combine(dir, CsvFile), Path.Combine(dir, HtmlFile),
            chartFiles, hasData || panels.Count > 0 ? problem : null);
        var content = new ReportContent(options.Title, runs, groups, results, ReportFindings.Lines(groups, runs, options.Seeds), panels, hasData, accuracy, layers, paths.ChartProblem);

        // Pictures first, the documents that point at them last.
        foreach (var c in charts)
        {
            AtomicFile.WriteAllText(Path.Combine(dir, c.SvgFile), c.Svg);
            AtomicFile.WriteAllBytes(Path.Combine(dir, c.PngFile), c.Png);
        }
        RemoveStaleCharts(dir, chartFiles);
        AtomicFile.WriteAllText(paths.Csv, ReportTables.Csv(runs));
        AtomicFile.WriteAllText(paths.Markdown, Render(content, new MarkdownPage()));
        AtomicFile.WriteAllText(paths.Html, Render(content, new HtmlPage()));
        return paths;
    }

    /// <summary>Removes chart files of an earlier report (accuracy*/layers* .svg and .png, old Vega-Lite specs) not written now.</summary>
    static void RemoveStaleCharts(string dir, IReadOnlyList<string> keep)
    {
        var keepSet = keep.ToHashSet(StringComparer.Ordinal);
        var stale = new[] { "accuracy*.svg", "accuracy*.png", "layers*.svg", "layers*.png", "*.vl.json" }
            .SelectMany(pattern => Directory.GetFiles(dir, pattern))
            .Where(f => !keepSet.Contains(f));
        foreach (var f in stale) File.Delete(f);
    }

    static IReadOnlyList<RunRecord> SelectLayerRuns(IReadOnlyList<RunRecord> runs, IReadOnlyList<string>? keys)
    {
        if (keys is null) return ReportCharts.DefaultLayerRuns(runs);
        var byKey = runs.GroupBy(r => r.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var missing = keys.Where(k => !byKey.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new ArgumentException($"no run with key {string.Join(", ", missing)} among the {runs.Count} runs of the report", nameof(keys));
        var withoutLayers = keys.Where(k => byKey[k].Prune is not { Layers.Count: > 0 }).ToList();
        if (withoutLayers.Count > 0)
            throw new ArgumentException($"run {string.Join(", ", withoutLayers)} has no per-layer prune record (dense or not pruned yet)", nameof(keys));
        return keys.Distinct(StringComparer.Ordinal).Select(k => byKey[k]).ToList();
    }

    sealed record ReportContent(
        string Title,
        IReadOnlyList<RunRecord> Runs,
        IReadOnlyList<ResultGroup> Groups,
        ReportTable Results,
        IReadOnlyList<string> Findings,
        IReadOnlyList<LayerPanel> Panels,
        bool HasAccuracyData,
        IReadOnlyList<ReportChart> AccuracyCharts,
        IReadOnlyList<ReportChart> LayerCharts,
        string? Problem)
    {
        public string Summary
        {
            get
            {
                var finished = Runs.Count(r => r.Status == RunStatus.Finished);
                var failed = Runs.Count(r => r.Status == RunStatus.Failed);
                var unfinished = Runs.Count - finished - failed;
                var versions = Runs.Select(r => r.PaiVersion).Where(v => v is not null).Distinct().Order(StringComparer.Ordinal).ToList();
                var torch = Runs.Select(r => r.LibtorchVersion).Where(v => v is not null).Distinct().Order(StringComparer.Ordinal).ToList();
                var sb = new StringBuilder($"{Runs.Count} runs: {finished} finished, {failed} failed, {unfinished} pending or running.");
                if (versions.Count > 0) sb.Append($" Pai {string.Join(", ", versions)}.");
                if (torch.Count > 0) sb.Append($" libtorch {string.Join(", ", torch)}.");
                return sb.ToString();
            }
        }

        public IEnumerable<string> Notes
        {
            get
            {
                yield return "Top-1 is the final test accuracy: mean ± half-width of the 95% confidence interval of the mean over the seeds that finished, " +
                             "a Student t-interval (mean ± t₀.₉₇₅,ₙ₋₁ · s / √n, s the sample standard deviation, n the seeds); " +
                             "a cell with a single seed has no interval and says \"(1 seed)\".";
                yield return "vs random and vs best: the difference of mean top-1 to the random criterion and to the best criterion " +
                             "(highest mean, no ablation) at the same sparsity and warm-up, in percentage points, with the two-sided p-value of a t-test " +
                             "and, in brackets, the same p after Holm's correction for multiple comparisons: " +
                             $"{ReportTables.HigherMark} significantly higher, {ReportTables.LowerMark} significantly lower (Holm-corrected p < {ReportTables.Alpha:0.00}), " +
                             $"{ReportTables.NotSignificantMark} not significant. The families corrected together: for vs random, every comparison with random " +
                             "of the model and data set (all criteria, sparsities and warm-up settings); for vs best, the criteria compared with the best " +
                             "at one sparsity and warm-up. A run's seed fixes its initial weights, scoring batches and data order, " +
                             "so runs with the same seed are paired: the test is a paired t-test over the seeds both cells finished " +
                             "(the difference is then the mean of the paired differences), Welch's t-test (marked Welch) when fewer than two seeds are shared, " +
                             "and none when a side has a single seed (marked \"(1 seed)\").";
                if (Groups.Any(g => g.IsAblation))
                    yield return "Ablations (sanity checks of the criterion's choice of weights within each layer): shuffle permutes the mask within each layer, " +
                                 "reinit keeps the mask and draws fresh initial weights, invert keeps the lowest-scoring weights. " +
                                 "vs criterion: the ablation against its criterion at the same sparsity and warm-up, with the one-sided p-value of " +
                                 "\"the ablation is worse\" (paired or Welch as above) and, in brackets, the same p Holm-corrected over every ablation check " +
                                 $"of the model and data set: {ReportTables.LowerMark} significantly worse, " +
                                 $"{ReportTables.NotWorseMark}: not significantly worse, so these runs do not show that the criterion's choice of weights matters.";
                yield return "Δ dense is the difference to the mean of the dense runs of the same model and data set, in percentage points; " +
                             "Density is the achieved fraction of prunable weights kept; FLOPs is the remaining multiply-adds of the conv and linear layers " +
                             "for one image as a percentage of the dense model's (a pruned layer's multiply-adds scale with its density); " +
                             "Collapsed counts finished runs with a layer that lost every weight.";
                foreach (var g in Groups.Where(g => g.MixedSettings.Count > 0))
                    yield return $"Warning: {g.Model} {g.Dataset} {g.Criterion}{(g.IsAblation ? $" ({g.Ablation})" : "")} {Format.Sparsity(g.Sparsity)} mixes runs whose settings differ in " +
                                 $"{string.Join(", ", g.MixedSettings)}; its statistics average different experiments.";
            }
        }

        public IEnumerable<RunRecord> FailedRuns => Runs.Where(r => r.Status == RunStatus.Failed);
    }

    static string FirstLine(string? text, int max = 300)
    {
        var line = (text ?? "").Split('\n', 2)[0].Trim();
        return line.Length <= max ? line : line[..max] + "…";
    }

    // The report's sections, in order, written once for both formats (a Page renders each piece).
    static string Render(ReportContent c, Page page)
    {
        page.Title(c.Title);
        page.Summary(c.Summary);
        if (c.Findings.Count > 0)
        {
            page.Heading(2, "Findings");
            page.Findings(c.Findings, ReportFindings.Explanation);
        }
        page.Heading(2, "Results");
        if (c.Results.Rows.Count == 0) page.Text("No runs.");
        else page.ResultsTable(c.Results);
        page.Notes(c.Notes);

        page.Heading(2, "Accuracy versus sparsity");
        page.Charts(c.HasAccuracyData, c.AccuracyCharts, c.Problem);
        page.Heading(2, "Per-layer density");
        page.Charts(c.Panels.Count > 0, c.LayerCharts, c.Problem);
        foreach (var panel in c.Panels)
        {
            page.Heading(3, panel.Title);
            page.Table(ReportTables.LayerTable(panel));
            page.PanelRuns(panel.Runs.Select(r => (r.Label, r.Run.Key)));
        }

        if (ReportTables.CurvatureTable(c.Runs) is { } curvature)
        {
            page.Heading(2, "Curvature estimates");
            page.Table(curvature);
        }

        var failed = c.FailedRuns.ToList();
        if (failed.Count > 0)
        {
            page.Heading(2, "Failed runs");
            page.Failed(failed.Select(r => (r.Key, ReportTables.RunLabel(r), FirstLine(r.Error))));
        }
        return page.Finish();
    }

    /// <summary>One output format of the report: how each piece of <see cref="Render"/> is written.</summary>
    abstract class Page
    {
        protected readonly StringBuilder sb = new();
        public abstract void Title(string title);
        public abstract void Summary(string summary);
        public abstract void Heading(int level, string text);
        public abstract void Text(string text);
        public abstract void Table(ReportTable table);
        public virtual void ResultsTable(ReportTable table) => Table(table);
        public abstract void Notes(IEnumerable<string> notes);
        public abstract void Findings(IEnumerable<string> findings, string explanation);
        public abstract void Charts(bool hasData, IReadOnlyList<ReportChart> charts, string? problem);
        public abstract void PanelRuns(IEnumerable<(string Label, string Key)> runs);
        public abstract void Failed(IEnumerable<(string Key, string Label, string Error)> runs);
        public virtual string Finish() => sb.ToString();
    }

    sealed class MarkdownPage : Page
    {
        static string Cell(string text) => ReportTables.MarkdownCell(text);
        public override void Title(string title) => sb.Append("# ").Append(Cell(title)).Append("\n\n");
        public override void Summary(string summary) =>
            sb.Append(summary).Append(" One row per run: [").Append(CsvFile).Append("](").Append(CsvFile).Append(").\n\n");
        public override void Heading(int level, string text) => sb.Append('#', level).Append(' ').Append(level == 2 ? text : Cell(text)).Append("\n\n");
        public override void Text(string text) => sb.Append(text).Append("\n\n");
        public override void Table(ReportTable table) => sb.Append(ReportTables.Markdown(table)).Append('\n');

        public override void Notes(IEnumerable<string> notes)
        {
            foreach (var note in notes) sb.Append("- ").Append(note).Append('\n');
            sb.Append('\n');
        }

        public override void Findings(IEnumerable<string> findings, string explanation)
        {
            foreach (var finding in findings) sb.Append("- ").Append(Cell(finding)).Append('\n');
            sb.Append('\n').Append(explanation).Append("\n\n");
        }

        public override void Charts(bool hasData, IReadOnlyList<ReportChart> charts, string? problem)
        {
            if (!hasData) sb.Append("Nothing to chart: no finished run has the data.\n\n");
            else if (charts.Count == 0) sb.Append("The charts were not drawn (").Append(Cell(FirstLine(problem))).Append(").\n\n");
            foreach (var chart in charts)
                sb.Append("![").Append(chart.Title).Append("](").Append(chart.SvgFile).Append(")\n\n")
                  .Append(chart.Caption).Append(" PNG: [").Append(chart.PngFile).Append("](").Append(chart.PngFile).Append(").\n\n");
        }

        public override void PanelRuns(IEnumerable<(string Label, string Key)> runs) =>
            sb.Append("Runs: ").AppendJoin(", ", runs.Select(r => $"{Cell(r.Label)} = `{r.Key}`")).Append("\n\n");

        public override void Failed(IEnumerable<(string Key, string Label, string Error)> runs)
        {
            foreach (var (key, label, error) in runs)
                sb.Append("- `").Append(key).Append("` ").Append(Cell(label)).Append(": ").Append(Cell(error)).Append('\n');
            sb.Append('\n');
        }
    }

    sealed class HtmlPage : Page
    {
        public override void Title(string title) =>
            sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
              .Append("<title>").Append(H(title)).Append("</title>\n<style>\n").Append(Style).Append("\n</style>\n</head>\n<body>\n")
              .Append("<h1>").Append(H(title)).Append("</h1>\n");
        public override void Summary(string summary) =>
            sb.Append("<p>").Append(H(summary)).Append(" One row per run: <a href=\"").Append(CsvFile).Append("\">").Append(CsvFile).Append("</a>.</p>\n");
        public override void Heading(int level, string text) => sb.Append("<h").Append(level).Append('>').Append(H(text)).Append("</h").Append(level).Append(">\n");
        public override void Text(string text) => sb.Append("<p>").Append(H(text)).Append("</p>\n");
        public override void Table(ReportTable table) => AppendHtmlTable(sb, table);

        /// <summary>
        /// The results without the columns that are summaries of results.csv (top-1 min–max, top-5),
        /// so that the table fits the page; report.md keeps every column.
        /// </summary>
        public override void ResultsTable(ReportTable table)
        {
            var narrower = ReportTables.WithoutColumns(table, HtmlLeavesOut);
            Table(narrower);
            var left = HtmlLeavesOut.Where(h => table.Columns.Any(c => c.Header == h)).ToList();
            if (left.Count > 0)
                sb.Append("<p class=\"notes\">Not shown here: ").Append(H(string.Join(", ", left))).Append(" (in ").Append(MarkdownFile)
                  .Append("; every run in <a href=\"").Append(CsvFile).Append("\">").Append(CsvFile).Append("</a>).</p>\n");
        }

        public override void Notes(IEnumerable<string> notes)
        {
            sb.Append("<ul class=\"notes\">\n");
            foreach (var note in notes) sb.Append("<li>").Append(H(note)).Append("</li>\n");
            sb.Append("</ul>\n");
        }

        public override void Findings(IEnumerable<string> findings, string explanation)
        {
            sb.Append("<ul class=\"findings\">\n");
            foreach (var finding in findings) sb.Append("<li>").Append(H(finding)).Append("</li>\n");
            sb.Append("</ul>\n<p class=\"notes\">").Append(H(explanation)).Append("</p>\n");
        }

        /// <summary>Each chart as an &lt;img&gt; whose source is its SVG as a data URI (the page stays one self-contained file).</summary>
        public override void Charts(bool hasData, IReadOnlyList<ReportChart> charts, string? problem)
        {
            if (!hasData) { sb.Append("<p>Nothing to chart: no finished run has the data.</p>\n"); return; }
            if (charts.Count == 0) sb.Append("<p class=\"problem\">The charts were not drawn: ").Append(H(FirstLine(problem))).Append(".</p>\n");
            foreach (var chart in charts)
                sb.Append("<figure>\n<img class=\"chart\" width=\"").Append(chart.Width).Append("\" height=\"").Append(chart.Height)
                  .Append("\" alt=\"").Append(H(chart.Title)).Append("\" src=\"data:image/svg+xml;base64,")
                  .Append(Convert.ToBase64String(Encoding.UTF8.GetBytes(chart.Svg))).Append("\">\n<figcaption>").Append(H(chart.Caption))
                  .Append(" Files: <a href=\"").Append(chart.SvgFile).Append("\">").Append(chart.SvgFile).Append("</a>, <a href=\"")
                  .Append(chart.PngFile).Append("\">").Append(chart.PngFile).Append("</a>.</figcaption>\n</figure>\n");
        }

        public override void PanelRuns(IEnumerable<(string Label, string Key)> runs) =>
            sb.Append("<p class=\"notes\">Runs: ").AppendJoin(", ", runs.Select(r => $"{H(r.Label)} = <code>{H(r.Key)}</code>")).Append("</p>\n");

        public override void Failed(IEnumerable<(string Key, string Label, string Error)> runs)
        {
            sb.Append("<ul>\n");
            foreach (var (key, label, error) in runs)
                sb.Append("<li><code>").Append(H(key)).Append("</code> ").Append(H(label)).Append(": ").Append(H(error)).Append("</li>\n");
            sb.Append("</ul>\n");
        }

        public override string Finish() => sb.Append("</body>\n</html>\n").ToString();
    }

    static string H(string text) => WebUtility.HtmlEncode(text);

    /// <summary>Results columns the HTML page leaves out to fit its width (report.md has them, results.csv has every run).</summary>
    static readonly string[] HtmlLeavesOut = ["Top-1 % min–max", "Top-5 % mean"];

    /// <summary>
    /// A number cell that may wrap only between its parts, "+1.23 ▲" | "p=0.004" | "(Holm" |
    /// "p=0.012)" | "Welch" ("+0.21" | "⚠ not worse"), so that a wide table fits the page by
    /// wrapping: other spaces, as in "88.50 ± 0.99", become no-break spaces.
    /// </summary>
    static string KeepTogether(string cell) => UnbreakableSpace().Replace(cell, "\u00a0");

    [GeneratedRegex(" (?!p[=<]|\\(Holm|Welch|⚠)")]
    private static partial Regex UnbreakableSpace();

    static void AppendHtmlTable(StringBuilder sb, ReportTable table)
    {
        sb.Append("<div class=\"table\"><table>\n<thead><tr>");
        foreach (var col in table.Columns) sb.Append(col.RightAligned ? "<th class=\"num\">" : "<th>").Append(H(col.Header)).Append("</th>");
        sb.Append("</tr></thead>\n<tbody>\n");
        foreach (var row in table.Rows)
        {
            sb.Append("<tr>");
            for (var i = 0; i < row.Count; i++)
                sb.Append(table.Columns[i].RightAligned ? "<td class=\"num\">" : "<td>").Append(H(table.Columns[i].RightAligned ? KeepTogether(row[i]) : row[i])).Append("</td>");
            sb.Append("</tr>\n");
        }
        sb.Append("</tbody>\n</table></div>\n");
    }

    const string Style = """
        body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
        h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1.05rem; }
        table { border-collapse: collapse; font-size: .8rem; margin: .6rem 0; }
        th, td { border: 1px solid #d6d6d6; padding: .2rem .3rem; vertical-align: top; }
        .table { overflow-x: auto; } th { background: #f3f3f3; text-align: left; }
        .num { text-align: right; font-variant-numeric: tabular-nums; }
        tbody tr:nth-child(even) { background: #fafafa; }
        figure { margin: 1rem 0; overflow-x: auto; } figure img.chart { max-width: 100%; height: auto; }
        figcaption { color: #555; font-size: .85rem; margin-top: .3rem; }
        .problem { background: #fff4e5; border: 1px solid #f0c36d; padding: .6rem .9rem; }
        .notes { color: #555; font-size: .85rem; } code { font-size: .85rem; }
        pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .75rem; max-height: 24rem; }
        """;

}
