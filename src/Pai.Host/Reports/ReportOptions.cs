namespace Pai.Host.Reports;

/// <summary>Options of <see cref="ReportWriter.Write"/>.</summary>
public sealed record ReportOptions
{
    /// <summary>Title of the Markdown and HTML report.</summary>
    public string Title { get; init; } = "Pai report";

    /// <summary>
    /// Keys of the runs whose per-layer density is charted and tabulated. Null: per model and data
    /// set, the sparsity shared by the most settings (the highest on ties), one finished run
    /// (lowest seed) per criterion, ablation and warm-up setting.
    /// </summary>
    public IReadOnlyList<string>? LayerRunKeys { get; init; }

    /// <summary>Draw the charts (SVG and PNG; default true). False: tables only.</summary>
    public bool RenderCharts { get; init; } = true;

    /// <summary>
    /// Throw when a chart cannot be drawn (default false: the report is written without charts
    /// and says why).
    /// </summary>
    public bool RequireCharts { get; init; }

    /// <summary>The seed target the sweep ran with (null: none): the findings name the cells still wider than it at its seed limit.</summary>
    public SeedTarget? Seeds { get; init; }
}

/// <summary>Paths of the files a report wrote.</summary>
/// <param name="Directory">The output directory.</param>
/// <param name="Markdown">report.md.</param>
/// <param name="Csv">results.csv (one row per run).</param>
/// <param name="Html">report.html: tables and charts inlined, no external references.</param>
/// <param name="Charts">The charts' SVG and PNG files, in report order (empty when none was drawn).</param>
/// <param name="ChartProblem">Why charts were not drawn (null when every chart was, or there was nothing to chart).</param>
public sealed record ReportFiles(
    string Directory,
    string Markdown,
    string Csv,
    string Html,
    IReadOnlyList<string> Charts,
    string? ChartProblem);
