using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Pai.Host.Runs;

namespace Pai.Host.Reports;

/// <summary>
/// The runs of one experiment cell, (model, data set, criterion, sparsity, warm-up batches), across
/// seeds. Accuracy statistics use the finished runs that have a final top-1; failed and unfinished
/// runs are only counted.
/// </summary>
/// <param name="Model">Model name.</param>
/// <param name="Dataset">Data set name.</param>
/// <param name="Criterion">Criterion name ("dense" for the unpruned baseline).</param>
/// <param name="Sparsity">Configured sparsity (fraction of prunable weights removed).</param>
/// <param name="WarmupBatches">BN warm-up batches before scoring (0: off).</param>
/// <param name="Runs">Every run of the cell, whatever its status, ordered by seed.</param>
/// <param name="Seeds">Number of finished runs with a final top-1: the n of the statistics.</param>
/// <param name="Failed">Number of failed runs.</param>
/// <param name="Unfinished">Number of pending or running runs.</param>
/// <param name="MeanTop1">Mean final top-1 over <paramref name="Seeds"/> runs (null when none).</param>
/// <param name="StdTop1">Sample standard deviation (n − 1) of final top-1; null when fewer than two runs.</param>
/// <param name="MinTop1">Lowest final top-1.</param>
/// <param name="MaxTop1">Highest final top-1.</param>
/// <param name="MeanTop5">Mean final top-5 over the runs that have one.</param>
/// <param name="MeanLoss">Mean final test loss over the runs that have one.</param>
/// <param name="MeanDensity">Mean achieved density (kept / prunable weights); 1 for dense runs.</param>
/// <param name="RunsWithCollapse">Finished runs in which at least one layer lost every weight.</param>
/// <param name="MixedSettings">
/// Config fields (snake_case) other than the seed whose values differ between runs of the cell,
/// e.g. "epochs": a sign that the cell mixes different experiments. Empty when consistent.
/// </param>
public sealed record ResultGroup(
    string Model,
    string Dataset,
    string Criterion,
    double Sparsity,
    int WarmupBatches,
    IReadOnlyList<RunRecord> Runs,
    int Seeds,
    int Failed,
    int Unfinished,
    double? MeanTop1,
    double? StdTop1,
    double? MinTop1,
    double? MaxTop1,
    double? MeanTop5,
    double? MeanLoss,
    double? MeanDensity,
    int RunsWithCollapse,
    IReadOnlyList<string> MixedSettings)
{
    /// <summary>True for the unpruned baseline (criterion "dense").</summary>
    public bool IsDense => ReportTables.IsDense(Criterion);
}

/// <summary>One column of a <see cref="ReportTable"/>.</summary>
/// <param name="Header">Column title.</param>
/// <param name="RightAligned">True for numbers (right-aligned in the terminal and Markdown).</param>
public sealed record ReportColumn(string Header, bool RightAligned);

/// <summary>
/// A table of display strings, the one source of the terminal table (drawn by the CLI), the
/// Markdown table and the HTML table, so the three always agree.
/// </summary>
/// <param name="Columns">Column definitions.</param>
/// <param name="Rows">Cells, one list per row, as many as <paramref name="Columns"/>.</param>
public sealed record ReportTable(IReadOnlyList<ReportColumn> Columns, IReadOnlyList<IReadOnlyList<string>> Rows);

/// <summary>Aggregation of run records and the tables built from them (results table, CSV, Markdown).</summary>
public static class ReportTables
{
    /// <summary>The criterion name of the unpruned baseline.</summary>
    public const string DenseCriterion = "dense";

    /// <summary>The phases written as CSV columns first, in pipeline order; others follow alphabetically.</summary>
    public static readonly IReadOnlyList<string> KnownPhases = ["warmup", "scoring", "selection", "training"];

    /// <summary>True when <paramref name="criterion"/> names the unpruned baseline.</summary>
    public static bool IsDense(string criterion) => string.Equals(criterion, DenseCriterion, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Groups runs by (model, data set, criterion, sparsity, warm-up batches) and computes the
    /// statistics across seeds. Order: model, data set, dense first then the criteria in the design's
    /// order (<see cref="ChartSpecs.KnownCriteria"/>, others by name after them),
    /// sparsity ascending, warm-up ascending.
    /// </summary>
    public static IReadOnlyList<ResultGroup> Aggregate(IEnumerable<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        return runs
            .GroupBy(r => (r.Config.Model, r.Config.Dataset, Criterion: IsDense(r.Config.Criterion) ? DenseCriterion : r.Config.Criterion,
                Sparsity: IsDense(r.Config.Criterion) ? 0.0 : r.Config.Sparsity, r.Config.WarmupBatches))
            .Select(g => MakeGroup(g.Key.Model, g.Key.Dataset, g.Key.Criterion, g.Key.Sparsity, g.Key.WarmupBatches,
                g.OrderBy(r => r.Config.Seed).ThenBy(r => r.Key, StringComparer.Ordinal).ToList()))
            .OrderBy(g => g.Model, StringComparer.Ordinal)
            .ThenBy(g => g.Dataset, StringComparer.Ordinal)
            .ThenBy(g => g.IsDense ? 0 : 1)
            .ThenBy(g => ChartSpecs.CriterionRank(g.Criterion))
            .ThenBy(g => g.Criterion, StringComparer.Ordinal)
            .ThenBy(g => g.Sparsity)
            .ThenBy(g => g.WarmupBatches)
            .ToList();
    }

    static ResultGroup MakeGroup(string model, string dataset, string criterion, double sparsity, int warmup, List<RunRecord> runs)
    {
        var finished = runs.Where(r => r.Status == RunStatus.Finished).ToList();
        var top1 = finished.Where(r => r.FinalTop1 is not null).Select(r => r.FinalTop1!.Value).ToList();
        var top5 = finished.Where(r => r.FinalTop5 is not null).Select(r => r.FinalTop5!.Value).ToList();
        var loss = finished.Where(r => r.FinalLoss is not null).Select(r => r.FinalLoss!.Value).ToList();
        var density = finished.Select(AchievedDensity).Where(d => d is not null).Select(d => d!.Value).ToList();
        return new ResultGroup(
            model, dataset, criterion, sparsity, warmup, runs,
            Seeds: top1.Count,
            Failed: runs.Count(r => r.Status == RunStatus.Failed),
            Unfinished: runs.Count(r => r.Status is RunStatus.Pending or RunStatus.Running),
            MeanTop1: Mean(top1),
            StdTop1: SampleStd(top1),
            MinTop1: top1.Count > 0 ? top1.Min() : null,
            MaxTop1: top1.Count > 0 ? top1.Max() : null,
            MeanTop5: Mean(top5),
            MeanLoss: Mean(loss),
            MeanDensity: Mean(density),
            RunsWithCollapse: finished.Count(r => r.Prune is { Collapsed.Count: > 0 }),
            MixedSettings: MixedSettings(runs));
    }

    /// <summary>Arithmetic mean; null for no values.</summary>
    public static double? Mean(IReadOnlyCollection<double> values) => values.Count == 0 ? null : values.Average();

    /// <summary>Sample standard deviation (divides by n − 1); null for fewer than two values.</summary>
    public static double? SampleStd(IReadOnlyCollection<double> values)
    {
        if (values.Count < 2) return null;
        var mean = values.Average();
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
    }

    /// <summary>
    /// The density a run achieved: the recorded prune density, 1 for a dense run, null for a pruned
    /// run without a prune record (not yet pruned).
    /// </summary>
    public static double? AchievedDensity(RunRecord run) =>
        run.Prune is not null ? run.Prune.Density : IsDense(run.Config.Criterion) ? 1.0 : null;

    /// <summary>Config fields (other than the seed) whose values differ across <paramref name="runs"/>.</summary>
    static IReadOnlyList<string> MixedSettings(IReadOnlyList<RunRecord> runs)
    {
        if (runs.Count < 2) return [];
        var configs = runs.Select(r => (JsonObject)JsonNode.Parse((r.Config with { Seed = 0 }).CanonicalJson())!).ToList();
        var names = configs.SelectMany(c => c.Select(p => p.Key)).Distinct().OrderBy(n => n, StringComparer.Ordinal);
        return names.Where(n => configs.Any(c => !JsonNode.DeepEquals(c[n], configs[0][n]))).ToList();
    }

    /// <summary>
    /// Mean final top-1 of the dense baseline of (model, data set), pooled over every finished
    /// dense run whatever its warm-up; null when there is none.
    /// </summary>
    public static double? DenseBaseline(IReadOnlyList<ResultGroup> groups, string model, string dataset)
    {
        var top1 = groups.Where(g => g.IsDense && g.Model == model && g.Dataset == dataset)
            .SelectMany(g => g.Runs)
            .Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null)
            .Select(r => r.FinalTop1!.Value).ToList();
        return Mean(top1);
    }

    /// <summary>
    /// The results table: one row per <see cref="ResultGroup"/>, numbers in percent (the unit is in
    /// the header). Columns: model, data, criterion, sparsity, warm-up, seeds, top-1 mean ± std,
    /// min–max, difference to the dense baseline in percentage points, achieved density, runs with
    /// collapsed layers (k/n); top-5 when any run has it;
    /// failed and unfinished counts when any run is in that state.
    /// </summary>
    public static ReportTable ResultsTable(IReadOnlyList<ResultGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var withTop5 = groups.Any(g => g.MeanTop5 is not null);
        var withFailed = groups.Any(g => g.Failed > 0);
        var withUnfinished = groups.Any(g => g.Unfinished > 0);
        var columns = new List<ReportColumn>
        {
            new("Model", false), new("Data", false), new("Criterion", false), new("Sparsity", true),
            new("Warm-up", false), new("Seeds", true), new("Top-1 % mean ± std", true), new("Top-1 % min–max", true),
        };
        if (withTop5) columns.Add(new("Top-5 % mean", true));
        columns.Add(new("Δ dense (pp)", true));
        columns.Add(new("Density %", true));
        columns.Add(new("Collapsed", true));
        if (withFailed) columns.Add(new("Failed", true));
        if (withUnfinished) columns.Add(new("Unfinished", true));

        var rows = new List<IReadOnlyList<string>>();
        foreach (var g in groups)
        {
            var baseline = g.IsDense ? null : DenseBaseline(groups, g.Model, g.Dataset);
            var row = new List<string>
            {
                g.Model, g.Dataset, g.Criterion,
                g.IsDense ? "0%" : Format.Sparsity(g.Sparsity),
                g.WarmupBatches > 0 ? $"on ({g.WarmupBatches})" : "off",
                g.Seeds.ToString(CultureInfo.InvariantCulture),
                g.MeanTop1 is null ? "–" : Format.Points(g.MeanTop1.Value) + (g.StdTop1 is null ? "" : " ± " + Format.Points(g.StdTop1.Value)),
                g.MinTop1 is null ? "–" : $"{Format.Points(g.MinTop1.Value)}–{Format.Points(g.MaxTop1!.Value)}",
            };
            if (withTop5) row.Add(g.MeanTop5 is null ? "–" : Format.Points(g.MeanTop5.Value));
            row.Add(g.IsDense || g.MeanTop1 is null || baseline is null ? "–" : Format.SignedPoints(g.MeanTop1.Value - baseline.Value));
            row.Add(g.MeanDensity is null ? "–" : Format.Points(g.MeanDensity.Value));
            row.Add(g.IsDense ? "–" : $"{g.RunsWithCollapse}/{g.Runs.Count(r => r.Status == RunStatus.Finished)}");
            if (withFailed) row.Add(g.Failed.ToString(CultureInfo.InvariantCulture));
            if (withUnfinished) row.Add(g.Unfinished.ToString(CultureInfo.InvariantCulture));
            rows.Add(row);
        }
        return new ReportTable(columns, rows);
    }

    /// <summary>
    /// The curvature estimates behind the runs that have them: one row per run, estimator and
    /// layer with its method, probes and achieved median relative SE (null when no run has any).
    /// </summary>
    public static ReportTable? CurvatureTable(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var rows = (from r in runs.OrderBy(r => r.Config.Criterion, StringComparer.Ordinal).ThenBy(r => r.Config.Sparsity).ThenBy(r => r.Key, StringComparer.Ordinal)
                    from d in r.Prune?.Curvature ?? []
                    from l in d.Layers
                    select (IReadOnlyList<string>)[r.Config.Label, d.Estimator, d.Hvps.ToString("N0", CultureInfo.InvariantCulture), l.Name, l.Method,
                        l.Probes.ToString(CultureInfo.InvariantCulture), l.MedianRelativeSe is { } se ? se.ToString("G3", CultureInfo.InvariantCulture) : "∞"]).ToList();
        if (rows.Count == 0) return null;
        ReportColumn[] columns = [new("run", false), new("estimator", false), new("HVPs", true), new("layer", false), new("method", false),
            new("probes", true), new("median rel. SE", true)];
        return new ReportTable(columns, rows);
    }

    /// <summary>The terminal table: the same columns and cells as <see cref="ResultsTable"/>, for the CLI to draw.</summary>
    public static ReportTable TerminalTable(IReadOnlyList<RunRecord> runs) => ResultsTable(Aggregate(runs));

    /// <summary>
    /// The CSV of results, one row per run (RFC 4180: comma separated, fields with a comma, quote
    /// or line break quoted, quotes doubled; invariant culture; round-trip numbers; empty for
    /// missing values). Columns: key, model, dataset, criterion, sparsity, warmup_batches, seed,
    /// status, final_top1, final_top5, final_loss, density, collapsed_count, collapsed_layers
    /// (';'-separated), epochs, one <c>{phase}_s</c> column per phase seen, error.
    /// </summary>
    public static string Csv(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var phases = runs.SelectMany(r => r.PhaseSeconds.Keys).Distinct().ToList();
        var orderedPhases = KnownPhases.Where(phases.Contains)
            .Concat(phases.Where(p => !KnownPhases.Contains(p)).OrderBy(p => p, StringComparer.Ordinal)).ToList();
        var header = new List<string>
        {
            "key", "model", "dataset", "criterion", "sparsity", "warmup_batches", "seed", "status",
            "final_top1", "final_top5", "final_loss", "density", "collapsed_count", "collapsed_layers", "epochs",
        };
        header.AddRange(orderedPhases.Select(p => p + "_s"));
        header.Add("error");

        var sb = new StringBuilder();
        AppendCsvRow(sb, header);
        foreach (var r in runs)
        {
            var c = r.Config;
            var row = new List<string>
            {
                r.Key, c.Model, c.Dataset, c.Criterion, Format.Number(c.Sparsity),
                c.WarmupBatches.ToString(CultureInfo.InvariantCulture), c.Seed.ToString(CultureInfo.InvariantCulture),
                r.Status.ToString().ToLowerInvariant(),
                Format.Number(r.FinalTop1), Format.Number(r.FinalTop5), Format.Number(r.FinalLoss),
                Format.Number(AchievedDensity(r)),
                r.Prune is null ? "" : r.Prune.Collapsed.Count.ToString(CultureInfo.InvariantCulture),
                r.Prune is null ? "" : string.Join(';', r.Prune.Collapsed),
                r.Epochs.Count.ToString(CultureInfo.InvariantCulture),
            };
            row.AddRange(orderedPhases.Select(p => r.PhaseSeconds.TryGetValue(p, out var s) ? Format.Number(s) : ""));
            row.Add(r.Error ?? "");
            AppendCsvRow(sb, row);
        }
        return sb.ToString();
    }

    /// <summary>One CSV field, quoted when it holds a comma, a quote, a line break or edge spaces.</summary>
    public static string CsvField(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var quote = value.AsSpan().IndexOfAny(",\"\r\n") >= 0 || (value.Length > 0 && (value[0] == ' ' || value[^1] == ' '));
        return quote ? "\"" + value.Replace("\"", "\"\"") + "\"" : value;
    }

    static void AppendCsvRow(StringBuilder sb, IEnumerable<string> fields)
    {
        sb.AppendJoin(',', fields.Select(CsvField));
        sb.Append("\r\n");
    }

    /// <summary>A Markdown (GitHub pipe) table; pipes in cells are escaped and line breaks flattened.</summary>
    public static string Markdown(ReportTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        var sb = new StringBuilder();
        sb.Append('|').AppendJoin('|', table.Columns.Select(c => " " + MarkdownCell(c.Header) + " ")).Append("|\n");
        sb.Append('|').AppendJoin('|', table.Columns.Select(c => c.RightAligned ? "---:" : "---")).Append("|\n");
        foreach (var row in table.Rows)
            sb.Append('|').AppendJoin('|', row.Select(c => " " + MarkdownCell(c) + " ")).Append("|\n");
        return sb.ToString();
    }

    /// <summary>
    /// The per-layer density table of one panel: a row per layer (network order) with its number
    /// of prunable weights and, per run, the kept fraction ("0% (collapsed)" when nothing is left,
    /// "–" when the run has no such layer).
    /// </summary>
    public static ReportTable LayerTable(LayerPanel panel)
    {
        ArgumentNullException.ThrowIfNull(panel);
        var columns = new List<ReportColumn> { new("Layer", false), new("Weights", true) };
        columns.AddRange(panel.Runs.Select(r => new ReportColumn(r.Label, true)));
        var rows = new List<IReadOnlyList<string>>();
        foreach (var layer in panel.Layers)
        {
            var records = panel.Runs.Select(r => r.Run.Prune!.Layers.FirstOrDefault(l => l.Name == layer)).ToList();
            var total = records.FirstOrDefault(l => l is not null)?.Total ?? 0;
            var row = new List<string> { layer, total.ToString("N0", CultureInfo.InvariantCulture) };
            row.AddRange(records.Select(l => l is null ? "–"
                : l.Kept == 0 ? "0% (collapsed)"
                : Format.Percent(l.Total > 0 ? (double)l.Kept / l.Total : 0)));
            rows.Add(row);
        }
        return new ReportTable(columns, rows);
    }

    /// <summary>Escapes a Markdown table cell.</summary>
    public static string MarkdownCell(string text) =>
        text.Replace("\\", "\\\\").Replace("|", "\\|").Replace("\r\n", " ").Replace('\n', ' ').Replace('\r', ' ');
}

/// <summary>Number formatting shared by the tables and charts (invariant culture).</summary>
static class Format
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>0.9123 → "91.23%"; null → "–".</summary>
    public static string Percent(double? fraction, int decimals = 2) =>
        fraction is null ? "–" : (fraction.Value * 100).ToString("F" + decimals, Inv) + "%";

    /// <summary>0.995 → "99.5%", 0.9 → "90%" (up to three decimals, trailing zeros dropped).</summary>
    public static string Sparsity(double fraction) => Math.Round(fraction * 100, 3).ToString("0.###", Inv) + "%";

    /// <summary>A fraction in percent without the sign, or a difference in percentage points: 0.0012 → "0.12".</summary>
    public static string Points(double fraction) => (fraction * 100).ToString("F2", Inv);

    /// <summary>Signed percentage points: -0.0123 → "-1.23", 0.004 → "+0.40".</summary>
    public static string SignedPoints(double fraction) => (fraction >= 0 ? "+" : "") + Points(fraction);

    /// <summary>Shortest round-trip invariant form; empty for null.</summary>
    public static string Number(double? value) => value is null ? "" : value.Value.ToString("R", Inv);
}
