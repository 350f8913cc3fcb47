namespace Pai.Host.Reports;

/// <summary>What the shaded band around each accuracy line shows.</summary>
public enum SpreadKind
{
    /// <summary>Lowest to highest top-1 across seeds.</summary>
    MinMax,
    /// <summary>Mean ± one sample standard deviation across seeds.</summary>
    StdDev,
}

/// <summary>Options of <see cref="ReportWriter.Write"/>.</summary>
public sealed record ReportOptions
{
    /// <summary>Title of the Markdown and HTML report.</summary>
    public string Title { get; init; } = "Pai report";

    /// <summary>What the band around each accuracy line shows (default: min–max across seeds).</summary>
    public SpreadKind Spread { get; init; } = SpreadKind.MinMax;

    /// <summary>
    /// Keys of the runs whose per-layer density is charted and tabulated. Null: per model and data
    /// set, the sparsity shared by the most criteria (the highest on ties), one finished run
    /// (lowest seed) per criterion and warm-up setting.
    /// </summary>
    public IReadOnlyList<string>? LayerRunKeys { get; init; }

    /// <summary>Render the charts to SVG with node (default true). False: write only the Vega-Lite specs.</summary>
    public bool RenderCharts { get; init; } = true;

    /// <summary>
    /// Throw when a chart cannot be rendered (default false: the report is written without SVG
    /// and says why).
    /// </summary>
    public bool RequireCharts { get; init; }

    /// <summary>The renderer to use (null: a <see cref="ChartRenderer"/> with default settings).</summary>
    public ChartRenderer? Renderer { get; init; }
}

/// <summary>Paths of the files a report wrote.</summary>
/// <param name="Directory">The output directory.</param>
/// <param name="Markdown">report.md.</param>
/// <param name="Csv">results.csv (one row per run).</param>
/// <param name="Html">report.html: tables and SVGs inlined, no external references.</param>
/// <param name="AccuracySpec">accuracy.vl.json, the Vega-Lite spec (null when there was nothing to chart).</param>
/// <param name="LayersSpec">layers.vl.json, the Vega-Lite spec (null when there was nothing to chart).</param>
/// <param name="AccuracySvg">accuracy.svg (null when not rendered).</param>
/// <param name="LayersSvg">layers.svg (null when not rendered).</param>
/// <param name="ChartProblem">Why charts were not rendered (null when every chart was).</param>
public sealed record ReportFiles(
    string Directory,
    string Markdown,
    string Csv,
    string Html,
    string? AccuracySpec,
    string? LayersSpec,
    string? AccuracySvg,
    string? LayersSvg,
    string? ChartProblem);
