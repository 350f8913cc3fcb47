using System.Net;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pai.Host.Runs;

namespace Pai.Host.Reports;

/// <summary>
/// Writes the report of a list of runs into a directory: report.md, results.csv,
/// accuracy.vl.json / layers.vl.json (Vega-Lite), accuracy.svg / layers.svg (rendered with node)
/// and report.html (self-contained: tables and SVGs inlined). Everything is computed first, then
/// each file is written atomically (temporary file + rename), so a failure never leaves a
/// half-written file. When node cannot render, the tables, specs and HTML are still written, the
/// report says why the pictures are missing, and stale SVGs of an earlier report are removed.
/// </summary>
public static class ReportWriter
{
    /// <summary>File name of the Markdown report.</summary>
    public const string MarkdownFile = "report.md";
    /// <summary>File name of the CSV (one row per run).</summary>
    public const string CsvFile = "results.csv";
    /// <summary>File name of the HTML report.</summary>
    public const string HtmlFile = "report.html";
    /// <summary>File name of the accuracy chart.</summary>
    public const string AccuracySvgFile = "accuracy.svg";
    /// <summary>File name of the per-layer density chart.</summary>
    public const string LayersSvgFile = "layers.svg";
    /// <summary>File name of the accuracy chart's Vega-Lite spec.</summary>
    public const string AccuracySpecFile = "accuracy.vl.json";
    /// <summary>File name of the per-layer chart's Vega-Lite spec.</summary>
    public const string LayersSpecFile = "layers.vl.json";

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes the report; returns the paths written.</summary>
    /// <param name="runs">The run records (any status; failed and unfinished runs are counted, not averaged).</param>
    /// <param name="outputDirectory">Created when missing.</param>
    /// <param name="options">Options (null: defaults).</param>
    /// <exception cref="ChartRenderingException">A chart could not be rendered and <see cref="ReportOptions.RequireCharts"/> is set.</exception>
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
        var panels = ChartSpecs.LayerPanels(layerRuns);
        var accuracySpec = ChartSpecs.Accuracy(groups, options.Spread);
        var layersSpec = ChartSpecs.Layers(panels);
        var accuracyJson = accuracySpec?.ToJsonString(Indented);
        var layersJson = layersSpec?.ToJsonString(Indented);

        string? accuracySvg = null, layersSvg = null, problem = null;
        if (!options.RenderCharts)
            problem = "chart rendering was turned off";
        else if (accuracyJson is not null || layersJson is not null)
        {
            var renderer = options.Renderer ?? new ChartRenderer();
            try
            {
                if (accuracyJson is not null) accuracySvg = renderer.RenderSvg(accuracyJson);
                if (layersJson is not null) layersSvg = renderer.RenderSvg(layersJson);
            }
            catch (ChartRenderingException e)
            {
                if (options.RequireCharts) throw;
                accuracySvg = layersSvg = null;
                problem = e.Message;
            }
        }

        var paths = new ReportFiles(
            dir,
            Markdown: Path.Combine(dir, MarkdownFile),
            Csv: Path.Combine(dir, CsvFile),
            Html: Path.Combine(dir, HtmlFile),
            AccuracySpec: accuracyJson is null ? null : Path.Combine(dir, AccuracySpecFile),
            LayersSpec: layersJson is null ? null : Path.Combine(dir, LayersSpecFile),
            AccuracySvg: accuracySvg is null ? null : Path.Combine(dir, AccuracySvgFile),
            LayersSvg: layersSvg is null ? null : Path.Combine(dir, LayersSvgFile),
            ChartProblem: problem);
        var content = new ReportContent(options.Title, runs, groups, results, panels, accuracyJson, layersJson, accuracySvg, layersSvg, problem);

        // Pictures and specs first, the documents that point at them last.
        WriteOrRemove(paths.AccuracySvg ?? Path.Combine(dir, AccuracySvgFile), accuracySvg);
        WriteOrRemove(paths.LayersSvg ?? Path.Combine(dir, LayersSvgFile), layersSvg);
        WriteOrRemove(Path.Combine(dir, AccuracySpecFile), accuracyJson);
        WriteOrRemove(Path.Combine(dir, LayersSpecFile), layersJson);
        AtomicFile.WriteAllText(paths.Csv, ReportTables.Csv(runs));
        AtomicFile.WriteAllText(paths.Markdown, Markdown(content));
        AtomicFile.WriteAllText(paths.Html, Html(content));
        return paths;
    }

    /// <summary>Writes <paramref name="text"/>, or removes a stale file of an earlier report when there is none.</summary>
    static void WriteOrRemove(string path, string? text)
    {
        if (text is not null) AtomicFile.WriteAllText(path, text);
        else if (File.Exists(path)) File.Delete(path);
    }

    static IReadOnlyList<RunRecord> SelectLayerRuns(IReadOnlyList<RunRecord> runs, IReadOnlyList<string>? keys)
    {
        if (keys is null) return ChartSpecs.DefaultLayerRuns(runs);
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
        IReadOnlyList<LayerPanel> Panels,
        string? AccuracySpec,
        string? LayersSpec,
        string? AccuracySvg,
        string? LayersSvg,
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
                yield return "Top-1 is the final test accuracy, mean ± sample standard deviation (n − 1) over the seeds that finished; " +
                             "Δ dense is the difference to the mean of the dense runs of the same model and data set, in percentage points; " +
                             "Density is the achieved fraction of prunable weights kept; Collapsed counts finished runs with a layer that lost every weight.";
                foreach (var g in Groups.Where(g => g.MixedSettings.Count > 0))
                    yield return $"Warning: {g.Model} {g.Dataset} {g.Criterion} {Format.Sparsity(g.Sparsity)} mixes runs whose settings differ in " +
                                 $"{string.Join(", ", g.MixedSettings)}; its statistics average different experiments.";
            }
        }

        public IEnumerable<RunRecord> FailedRuns => Runs.Where(r => r.Status == RunStatus.Failed);
    }

    /// <summary>"lenet5 fashion-mnist snip 98% + warm-up (100) seed 1".</summary>
    static string RunLabel(RunRecord r) =>
        $"{r.Config.Model} {r.Config.Dataset} {r.Config.Criterion}" +
        (ReportTables.IsDense(r.Config.Criterion) ? "" : " " + Format.Sparsity(r.Config.Sparsity)) +
        (r.Config.WarmupBatches > 0 ? $" + warm-up ({r.Config.WarmupBatches})" : "") + $" seed {r.Config.Seed}";

    static string FirstLine(string? text, int max = 300)
    {
        var line = (text ?? "").Split('\n', 2)[0].Trim();
        return line.Length <= max ? line : line[..max] + "…";
    }

    static string Markdown(ReportContent c)
    {
        var sb = new StringBuilder();
        sb.Append("# ").Append(ReportTables.MarkdownCell(c.Title)).Append("\n\n");
        sb.Append(c.Summary).Append(" One row per run: [").Append(CsvFile).Append("](").Append(CsvFile).Append(").\n\n");
        sb.Append("## Results\n\n");
        sb.Append(c.Results.Rows.Count == 0 ? "No runs.\n" : ReportTables.Markdown(c.Results)).Append('\n');
        foreach (var note in c.Notes) sb.Append("- ").Append(note).Append('\n');
        sb.Append('\n');

        sb.Append("## Accuracy versus sparsity\n\n");
        AppendChart(sb, c.AccuracySpec, c.AccuracySvg, AccuracySvgFile, AccuracySpecFile, "Top-1 accuracy versus sparsity", c.Problem);

        sb.Append("## Per-layer density\n\n");
        AppendChart(sb, c.LayersSpec, c.LayersSvg, LayersSvgFile, LayersSpecFile, "Per-layer density", c.Problem);
        foreach (var panel in c.Panels)
        {
            sb.Append("### ").Append(ReportTables.MarkdownCell(panel.Title)).Append("\n\n");
            sb.Append(ReportTables.Markdown(ReportTables.LayerTable(panel))).Append('\n');
            sb.Append("Runs: ").AppendJoin(", ", panel.Runs.Select(r => $"{ReportTables.MarkdownCell(r.Label)} = `{r.Run.Key}`")).Append("\n\n");
        }

        if (ReportTables.CurvatureTable(c.Runs) is { } curvature)
            sb.Append("## Curvature estimates\n\n").Append(ReportTables.Markdown(curvature)).Append('\n');

        var failed = c.FailedRuns.ToList();
        if (failed.Count > 0)
        {
            sb.Append("## Failed runs\n\n");
            foreach (var r in failed)
                sb.Append("- `").Append(r.Key).Append("` ").Append(ReportTables.MarkdownCell(RunLabel(r))).Append(": ")
                  .Append(ReportTables.MarkdownCell(FirstLine(r.Error))).Append('\n');
            sb.Append('\n');
        }
        return sb.ToString();
    }

    static void AppendChart(StringBuilder sb, string? spec, string? svg, string svgFile, string specFile, string alt, string? problem)
    {
        if (spec is null) sb.Append("Nothing to chart: no finished run has the data.\n\n");
        else if (svg is not null) sb.Append("![").Append(alt).Append("](").Append(svgFile).Append(")\n\nVega-Lite spec: [").Append(specFile).Append("](").Append(specFile).Append(").\n\n");
        else sb.Append("The chart could not be rendered to SVG (").Append(ReportTables.MarkdownCell(FirstLine(problem))).Append("). Its Vega-Lite spec is [")
               .Append(specFile).Append("](").Append(specFile).Append("): open it in any Vega-Lite viewer.\n\n");
    }

    static string H(string text) => WebUtility.HtmlEncode(text);

    static void AppendHtmlTable(StringBuilder sb, ReportTable table)
    {
        sb.Append("<div class=\"table\"><table>\n<thead><tr>");
        foreach (var col in table.Columns) sb.Append(col.RightAligned ? "<th class=\"num\">" : "<th>").Append(H(col.Header)).Append("</th>");
        sb.Append("</tr></thead>\n<tbody>\n");
        foreach (var row in table.Rows)
        {
            sb.Append("<tr>");
            for (var i = 0; i < row.Count; i++)
                sb.Append(table.Columns[i].RightAligned ? "<td class=\"num\">" : "<td>").Append(H(row[i])).Append("</td>");
            sb.Append("</tr>\n");
        }
        sb.Append("</tbody>\n</table></div>\n");
    }

    /// <summary>The SVG as an inline element: without an XML declaration or doctype, which HTML does not allow there.</summary>
    static string InlineSvg(string svg)
    {
        var start = svg.IndexOf("<svg", StringComparison.Ordinal);
        return start > 0 ? svg[start..] : svg;
    }

    const string Style = """
        body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
        h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1.05rem; }
        table { border-collapse: collapse; font-size: .88rem; margin: .6rem 0; }
        th, td { border: 1px solid #d6d6d6; padding: .25rem .55rem; white-space: nowrap; }
        .table { overflow-x: auto; } th { background: #f3f3f3; text-align: left; }
        .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        tbody tr:nth-child(even) { background: #fafafa; }
        figure { margin: 1rem 0; overflow-x: auto; } figure svg { max-width: 100%; height: auto; }
        .problem { background: #fff4e5; border: 1px solid #f0c36d; padding: .6rem .9rem; }
        .notes { color: #555; font-size: .85rem; } code { font-size: .85rem; }
        pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .75rem; max-height: 24rem; }
        """;

    static string Html(ReportContent c)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        sb.Append("<title>").Append(H(c.Title)).Append("</title>\n<style>\n").Append(Style).Append("\n</style>\n</head>\n<body>\n");
        sb.Append("<h1>").Append(H(c.Title)).Append("</h1>\n<p>").Append(H(c.Summary)).Append(" One row per run: <a href=\"").Append(CsvFile).Append("\">").Append(CsvFile).Append("</a>.</p>\n");
        sb.Append("<h2>Results</h2>\n");
        if (c.Results.Rows.Count == 0) sb.Append("<p>No runs.</p>\n"); else AppendHtmlTable(sb, c.Results);
        sb.Append("<ul class=\"notes\">\n");
        foreach (var note in c.Notes) sb.Append("<li>").Append(H(note)).Append("</li>\n");
        sb.Append("</ul>\n");

        sb.Append("<h2>Accuracy versus sparsity</h2>\n");
        AppendHtmlChart(sb, c.AccuracySpec, c.AccuracySvg, AccuracySpecFile, c.Problem);
        sb.Append("<h2>Per-layer density</h2>\n");
        AppendHtmlChart(sb, c.LayersSpec, c.LayersSvg, LayersSpecFile, c.Problem);
        foreach (var panel in c.Panels)
        {
            sb.Append("<h3>").Append(H(panel.Title)).Append("</h3>\n");
            AppendHtmlTable(sb, ReportTables.LayerTable(panel));
            sb.Append("<p class=\"notes\">Runs: ").AppendJoin(", ", panel.Runs.Select(r => $"{H(r.Label)} = <code>{H(r.Run.Key)}</code>")).Append("</p>\n");
        }

        if (ReportTables.CurvatureTable(c.Runs) is { } curvature)
        {
            sb.Append("<h2>Curvature estimates</h2>\n");
            AppendHtmlTable(sb, curvature);
        }

        var failed = c.FailedRuns.ToList();
        if (failed.Count > 0)
        {
            sb.Append("<h2>Failed runs</h2>\n<ul>\n");
            foreach (var r in failed)
                sb.Append("<li><code>").Append(H(r.Key)).Append("</code> ").Append(H(RunLabel(r))).Append(": ").Append(H(FirstLine(r.Error))).Append("</li>\n");
            sb.Append("</ul>\n");
        }
        sb.Append("</body>\n</html>\n");
        return sb.ToString();
    }

    static void AppendHtmlChart(StringBuilder sb, string? spec, string? svg, string specFile, string? problem)
    {
        if (spec is null) { sb.Append("<p>Nothing to chart: no finished run has the data.</p>\n"); return; }
        if (svg is not null) { sb.Append("<figure>\n").Append(InlineSvg(svg)).Append("\n</figure>\n"); return; }
        sb.Append("<p class=\"problem\">The chart could not be rendered to SVG: ").Append(H(FirstLine(problem)))
          .Append(". Its Vega-Lite spec is <a href=\"").Append(specFile).Append("\">").Append(specFile).Append("</a> (also below): open it in any Vega-Lite viewer.</p>\n");
        sb.Append("<details><summary>Vega-Lite spec</summary>\n<pre>").Append(H(spec)).Append("</pre>\n</details>\n");
    }
}
