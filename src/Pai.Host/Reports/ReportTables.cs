using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Pai.Host.Reports;

/// <summary>
/// The runs of one experiment cell, (model, data set, criterion, ablation, sparsity, warm-up
/// batches), across seeds. Accuracy statistics use the finished runs that have a final top-1;
/// failed and unfinished runs are only counted.
/// </summary>
/// <param name="Model">Model name.</param>
/// <param name="Dataset">Data set name.</param>
/// <param name="Criterion">Criterion name ("dense" for the unpruned baseline).</param>
/// <param name="Ablation">Sanity-check ablation of the criterion's mask ("none", "shuffle", "reinit", "invert").</param>
/// <param name="Sparsity">Configured sparsity (fraction of prunable weights removed).</param>
/// <param name="WarmupBatches">BN warm-up batches before scoring (0: off).</param>
/// <param name="Runs">Every run of the cell, whatever its status, ordered by seed.</param>
/// <param name="Seeds">Number of finished runs with a final top-1: the n of the statistics.</param>
/// <param name="Failed">Number of failed runs.</param>
/// <param name="Unfinished">Number of pending or running runs.</param>
/// <param name="MeanTop1">Mean final top-1 over <paramref name="Seeds"/> runs (null when none).</param>
/// <param name="StdTop1">Sample standard deviation (n − 1) of final top-1; null when fewer than two runs.</param>
/// <param name="Ci95Top1">
/// Half-width of the 95% Student t confidence interval of the mean top-1,
/// t₀.₉₇₅,ₙ₋₁ · s / √n; null when fewer than two runs.
/// </param>
/// <param name="MinTop1">Lowest final top-1.</param>
/// <param name="MaxTop1">Highest final top-1.</param>
/// <param name="MeanTop5">Mean final top-5 over the runs that have one.</param>
/// <param name="MeanLoss">Mean final test loss over the runs that have one.</param>
/// <param name="MeanDensity">Mean achieved density (kept / prunable weights); 1 for dense runs.</param>
/// <param name="MeanFlops">Mean remaining multiply-adds as a fraction of the dense model's; 1 for dense runs; null when not recorded.</param>
/// <param name="RunsWithCollapse">Finished runs in which at least one layer lost every weight.</param>
/// <param name="MixedSettings">
/// Config fields (snake_case) other than the seed whose values differ between runs of the cell,
/// e.g. "epochs": a sign that the cell mixes different experiments. Empty when consistent.
/// </param>
public sealed record ResultGroup(
    string Model,
    string Dataset,
    string Criterion,
    string Ablation,
    double Sparsity,
    int WarmupBatches,
    IReadOnlyList<RunRecord> Runs,
    int Seeds,
    int Failed,
    int Unfinished,
    double? MeanTop1,
    double? StdTop1,
    double? Ci95Top1,
    double? MinTop1,
    double? MaxTop1,
    double? MeanTop5,
    double? MeanLoss,
    double? MeanDensity,
    double? MeanFlops,
    int RunsWithCollapse,
    IReadOnlyList<string> MixedSettings)
{
    /// <summary>True for the unpruned baseline (criterion "dense").</summary>
    public bool IsDense => ReportTables.IsDense(Criterion);

    /// <summary>True for a sanity-check ablation of a criterion (ablation other than "none").</summary>
    public bool IsAblation => !IsDense && Ablation != ReportTables.NoAblation;

    /// <summary>Final top-1 by seed of the finished runs (the first run of a seed when a cell holds several).</summary>
    public IReadOnlyDictionary<ulong, double> Top1BySeed =>
        Runs.Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null)
            .GroupBy(r => r.Config.Seed).ToDictionary(g => g.Key, g => g.First().FinalTop1!.Value);

    /// <summary>Against the random criterion at the same sparsity and warm-up (null: none, or this is random itself).</summary>
    public Comparison? VsRandom { get; init; }

    /// <summary>Against the best criterion (highest mean top-1, no ablation) at the same sparsity and warm-up (null: this is the best, or there is none).</summary>
    public Comparison? VsBest { get; init; }

    /// <summary>For an ablation: against its own criterion without ablation at the same sparsity and warm-up.</summary>
    public Comparison? VsCriterion { get; init; }

    /// <summary>True when this cell has the highest mean top-1 of the criteria (no ablation) at its sparsity and warm-up.</summary>
    public bool IsBest { get; init; }
}

/// <summary>
/// This cell against a reference cell: the difference of mean top-1 and, when both sides have two
/// or more seeds, a t-test (see <see cref="ReportTables.Compare"/>).
/// </summary>
/// <param name="Reference">The reference cell.</param>
/// <param name="Difference">
/// Mean top-1 of this cell − mean top-1 of the reference; for a paired test, the mean of the
/// differences over the seeds both cells finished.
/// </param>
/// <param name="Test">The t-test of the difference; null when a side has a single seed.</param>
public sealed record Comparison(ResultGroup Reference, double Difference, TTestResult? Test)
{
    /// <summary>
    /// The p-value the cell is judged by (two-sided, or one-sided for an ablation against its
    /// criterion) after Holm's correction over its family of comparisons (see
    /// <see cref="ReportTables.Aggregate"/>); null when there is no test, or the comparison was
    /// made alone (<see cref="ReportTables.Compare"/>), when it equals the raw p-value.
    /// </summary>
    public double? HolmP { get; init; }

    /// <summary>How many tests the Holm correction was taken over (0 when it was not applied).</summary>
    public int FamilySize { get; init; }
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

/// <summary>One of the default terminal tables (<see cref="ReportTables.TerminalTables"/>).</summary>
/// <param name="Title">The model and data set it shows.</param>
/// <param name="Table">Its columns and cells.</param>
/// <param name="LeftOut">Headers of the columns left out to fit the width (empty when none was).</param>
public sealed record TerminalTable(string Title, ReportTable Table, IReadOnlyList<string> LeftOut);

/// <summary>Aggregation of run records and the tables built from them (results table, CSV, Markdown).</summary>
public static class ReportTables
{
    /// <summary>The criterion name of the unpruned baseline.</summary>
    public const string DenseCriterion = "dense";

    /// <summary>The phases written as CSV columns first, in pipeline order; others follow alphabetically.</summary>
    public static readonly IReadOnlyList<string> KnownPhases = ["warmup", "scoring", "selection", "training"];

    /// <summary>True when <paramref name="criterion"/> names the unpruned baseline.</summary>
    public static bool IsDense(string criterion) => string.Equals(criterion, DenseCriterion, StringComparison.OrdinalIgnoreCase);

    /// <summary>The ablation of a plain run (<see cref="RunConfig.Ablation"/>).</summary>
    public const string NoAblation = "none";

    /// <summary>Ablations in the order the tables list them under their criterion; others follow by name.</summary>
    public static readonly IReadOnlyList<string> KnownAblations = [NoAblation, "shuffle", "reinit", "invert"];

    /// <summary>Significance level of every test in the report (two-sided, except the one-sided ablation check).</summary>
    public const double Alpha = 0.05;

    /// <summary>Sort rank of an ablation: its index in <see cref="KnownAblations"/>, others after them.</summary>
    public static int AblationRank(string ablation)
    {
        for (var i = 0; i < KnownAblations.Count; i++)
            if (KnownAblations[i] == ablation) return i;
        return KnownAblations.Count;
    }

    /// <summary>
    /// Groups runs by (model, data set, criterion, ablation, sparsity, warm-up batches), computes the
    /// statistics across seeds and compares each cell with random, with the best criterion and (for
    /// ablations) with its own criterion at the same sparsity and warm-up. The p-values are
    /// Holm-corrected (<see cref="Comparison.HolmP"/>) within each family: the comparisons with
    /// random of one model and data set; the comparisons with the best at one sparsity and warm-up
    /// of one model and data set (the criteria competing there); the ablation checks of one model
    /// and data set. Order: model, data set,
    /// dense first, then the criteria in the registry's order (<see cref="CriterionColours.Rank"/>,
    /// others by name after them), sparsity ascending, warm-up ascending, then the criterion's
    /// ablations beside it (none, shuffle, reinit, invert).
    /// </summary>
    public static IReadOnlyList<ResultGroup> Aggregate(IEnumerable<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var groups = runs
            .GroupBy(r => (r.Config.Model, r.Config.Dataset, Criterion: IsDense(r.Config.Criterion) ? DenseCriterion : r.Config.Criterion,
                Ablation: IsDense(r.Config.Criterion) ? NoAblation : r.Config.Ablation,
                Sparsity: IsDense(r.Config.Criterion) ? 0.0 : r.Config.Sparsity, r.Config.WarmupBatches))
            .Select(g => MakeGroup(g.Key.Model, g.Key.Dataset, g.Key.Criterion, g.Key.Ablation, g.Key.Sparsity, g.Key.WarmupBatches,
                g.OrderBy(r => r.Config.Seed).ThenBy(r => r.Key, StringComparer.Ordinal).ToList()))
            .OrderBy(g => g.Model, StringComparer.Ordinal)
            .ThenBy(g => g.Dataset, StringComparer.Ordinal)
            .ThenBy(g => g.IsDense ? 0 : 1)
            .ThenBy(g => CriterionColours.Rank(g.Criterion))
            .ThenBy(g => g.Criterion, StringComparer.Ordinal)
            .ThenBy(g => g.Sparsity)
            .ThenBy(g => g.WarmupBatches)
            .ThenBy(g => AblationRank(g.Ablation))
            .ThenBy(g => g.Ablation, StringComparer.Ordinal)
            .ToList();
        return WithComparisons(groups);
    }

    /// <summary>The random criterion's name: the reference of "vs random".</summary>
    public const string RandomCriterion = "random";

    static IReadOnlyList<ResultGroup> WithComparisons(List<ResultGroup> groups)
    {
        var result = new List<ResultGroup>(groups.Count);
        foreach (var g in groups)
        {
            if (g.IsDense || g.MeanTop1 is null) { result.Add(g); continue; }
            var peers = groups.Where(o => !o.IsDense && o.MeanTop1 is not null && o.Model == g.Model && o.Dataset == g.Dataset
                                          && o.Sparsity == g.Sparsity && o.WarmupBatches == g.WarmupBatches).ToList();
            var plain = peers.Where(o => !o.IsAblation).ToList();
            var random = plain.FirstOrDefault(o => o.Criterion == RandomCriterion);
            var best = plain.OrderByDescending(o => o.MeanTop1!.Value).FirstOrDefault(); // the first in table order on ties
            var own = plain.FirstOrDefault(o => o.Criterion == g.Criterion);
            result.Add(g with
            {
                VsRandom = random is null || ReferenceEquals(random, g) ? null : Compare(g, random),
                VsBest = g.IsAblation || best is null || ReferenceEquals(best, g) ? null : Compare(g, best),
                IsBest = ReferenceEquals(best, g),
                VsCriterion = g.IsAblation && own is not null ? Compare(g, own) : null,
            });
        }
        AdjustFamilies(result, g => g.VsRandom, (g, c) => g with { VsRandom = c }, g => (g.Model, g.Dataset), oneSided: false);
        AdjustFamilies(result, g => g.VsBest, (g, c) => g with { VsBest = c }, g => (g.Model, g.Dataset, g.Sparsity, g.WarmupBatches), oneSided: false);
        AdjustFamilies(result, g => g.VsCriterion, (g, c) => g with { VsCriterion = c }, g => (g.Model, g.Dataset), oneSided: true);
        return result;
    }

    /// <summary>Holm-corrects the tested comparisons that <paramref name="get"/> picks, family by family (<paramref name="family"/>: the key).</summary>
    static void AdjustFamilies(List<ResultGroup> groups, Func<ResultGroup, Comparison?> get, Func<ResultGroup, Comparison, ResultGroup> set,
        Func<ResultGroup, object> family, bool oneSided)
    {
        var tested = groups.Select((g, i) => (Group: g, Index: i)).Where(x => get(x.Group)?.Test is not null);
        foreach (var members in tested.GroupBy(x => family(x.Group)).Select(f => f.ToList()))
        {
            var adjusted = SeedStatistics.Holm(members.Select(x => TestedP(get(x.Group)!.Test!, oneSided)).ToList());
            for (var k = 0; k < members.Count; k++)
                groups[members[k].Index] = set(members[k].Group, get(members[k].Group)! with { HolmP = adjusted[k], FamilySize = members.Count });
        }
    }

    /// <summary>The p-value a comparison is judged by: two-sided, or one-sided ("A is worse") for an ablation against its criterion.</summary>
    static double TestedP(TTestResult test, bool oneSided) => oneSided ? test.PLess : test.P;

    /// <summary>
    /// Compares cell <paramref name="a"/> with <paramref name="b"/>. A run's seed fixes its initial
    /// weights, scoring batches and data order, so two runs with the same seed share everything but
    /// what the cells differ in: the test is a paired t-test on the seeds both cells finished when
    /// there are two or more (it removes the seed-to-seed variation both share), else Welch's t-test
    /// when each side has two or more seeds; no test when a side has a single seed.
    /// </summary>
    public static Comparison Compare(ResultGroup a, ResultGroup b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.MeanTop1 is null || b.MeanTop1 is null) throw new ArgumentException("both cells need finished runs with a final top-1");
        var (ta, tb) = (a.Top1BySeed, b.Top1BySeed);
        var shared = ta.Keys.Intersect(tb.Keys).Order().ToList();
        var distinctSeeds = ta.Count == a.Seeds && tb.Count == b.Seeds; // pairs are unambiguous
        TTestResult? test = null;
        if (distinctSeeds && shared.Count >= 2)
            test = SeedStatistics.Paired(shared.Select(s => ta[s]).ToList(), shared.Select(s => tb[s]).ToList());
        else if (a.Seeds >= 2 && b.Seeds >= 2)
            test = SeedStatistics.Welch(Top1(a), Top1(b));
        return new Comparison(b, test?.Difference ?? a.MeanTop1.Value - b.MeanTop1.Value, test);
    }

    static List<double> Top1(ResultGroup g) =>
        g.Runs.Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null).Select(r => r.FinalTop1!.Value).ToList();

    static ResultGroup MakeGroup(string model, string dataset, string criterion, string ablation, double sparsity, int warmup, List<RunRecord> runs)
    {
        var finished = runs.Where(r => r.Status == RunStatus.Finished).ToList();
        var top1 = finished.Where(r => r.FinalTop1 is not null).Select(r => r.FinalTop1!.Value).ToList();
        var top5 = finished.Where(r => r.FinalTop5 is not null).Select(r => r.FinalTop5!.Value).ToList();
        var loss = finished.Where(r => r.FinalLoss is not null).Select(r => r.FinalLoss!.Value).ToList();
        var density = finished.Select(AchievedDensity).Where(d => d is not null).Select(d => d!.Value).ToList();
        var flops = finished.Select(RemainingFlops).ToList();
        return new ResultGroup(
            model, dataset, criterion, ablation, sparsity, warmup, runs,
            Seeds: top1.Count,
            Failed: runs.Count(r => r.Status == RunStatus.Failed),
            Unfinished: runs.Count(r => r.Status is RunStatus.Pending or RunStatus.Running),
            MeanTop1: Mean(top1),
            StdTop1: SampleStd(top1),
            Ci95Top1: SeedStatistics.ConfidenceHalfWidth(top1),
            MinTop1: top1.Count > 0 ? top1.Min() : null,
            MaxTop1: top1.Count > 0 ? top1.Max() : null,
            MeanTop5: Mean(top5),
            MeanLoss: Mean(loss),
            MeanDensity: Mean(density),
            MeanFlops: flops.Count > 0 && flops.All(f => f is not null) ? flops.Average() : null,
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

    /// <summary>
    /// Remaining multiply-adds of a run as a fraction of the dense model's
    /// (<see cref="PruneSummary.RemainingFlopsFraction"/>), 1 for a dense run, null when not recorded.
    /// </summary>
    public static double? RemainingFlops(RunRecord run) =>
        run.Prune is not null ? run.Prune.RemainingFlopsFraction : IsDense(run.Config.Criterion) ? 1.0 : null;

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
    /// the header). Columns: model, data, criterion, ablation (when any cell has one), sparsity,
    /// warm-up, seeds, top-1 mean ± 95% confidence interval ("(1 seed)" for a single seed),
    /// min–max, top-5 when any run has it, the comparisons with random, with the best criterion and
    /// (for ablations) with the criterion (<see cref="ComparisonCell"/>), the difference to the
    /// dense baseline in percentage points, achieved density, remaining FLOPs, runs with collapsed
    /// layers (k/n); failed and unfinished counts when any run is in that state.
    /// </summary>
    public static ReportTable ResultsTable(IReadOnlyList<ResultGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var withAblation = groups.Any(g => g.IsAblation);
        var withTop5 = groups.Any(g => g.MeanTop5 is not null);
        var withFailed = groups.Any(g => g.Failed > 0);
        var withUnfinished = groups.Any(g => g.Unfinished > 0);
        var columns = new List<ReportColumn> { new("Model", false), new("Data", false), new("Criterion", false) };
        if (withAblation) columns.Add(new("Ablation", false));
        columns.AddRange([new("Sparsity", true), new("Warm-up", false), new("Seeds", true), new("Top-1 % mean ± 95% CI", true), new("Top-1 % min–max", true)]);
        if (withTop5) columns.Add(new("Top-5 % mean", true));
        columns.Add(new("vs random (pp)", true));
        columns.Add(new("vs best (pp)", true));
        if (withAblation) columns.Add(new("vs criterion (pp)", true));
        columns.Add(new("Δ dense (pp)", true));
        columns.Add(new("Density %", true));
        columns.Add(new("FLOPs %", true));
        columns.Add(new("Collapsed", true));
        if (withFailed) columns.Add(new("Failed", true));
        if (withUnfinished) columns.Add(new("Unfinished", true));

        var rows = new List<IReadOnlyList<string>>();
        foreach (var g in groups)
        {
            var baseline = g.IsDense ? null : DenseBaseline(groups, g.Model, g.Dataset);
            var row = new List<string> { g.Model, g.Dataset, g.Criterion };
            if (withAblation) row.Add(g.IsDense ? "–" : g.Ablation);
            row.AddRange(
            [
                g.IsDense ? "0%" : Format.Sparsity(g.Sparsity),
                WarmupCell(g),
                g.Seeds.ToString(CultureInfo.InvariantCulture),
                Top1Cell(g),
                g.MinTop1 is null ? "–" : $"{Format.Points(g.MinTop1.Value)}–{Format.Points(g.MaxTop1!.Value)}",
            ]);
            if (withTop5) row.Add(g.MeanTop5 is null ? "–" : Format.Points(g.MeanTop5.Value));
            row.Add(g.VsRandom is null ? "–" : ComparisonCell(g.VsRandom, oneSided: false));
            row.Add(g.IsBest ? "best" : g.VsBest is null ? "–" : ComparisonCell(g.VsBest, oneSided: false));
            if (withAblation) row.Add(g.VsCriterion is null ? "–" : ComparisonCell(g.VsCriterion, oneSided: true));
            row.Add(DenseDeltaCell(g, baseline));
            row.Add(g.MeanDensity is null ? "–" : Format.Points(g.MeanDensity.Value));
            row.Add(g.MeanFlops is null ? "–" : Format.Points(g.MeanFlops.Value));
            row.Add(g.IsDense ? "–" : $"{g.RunsWithCollapse}/{g.Runs.Count(r => r.Status == RunStatus.Finished)}");
            if (withFailed) row.Add(g.Failed.ToString(CultureInfo.InvariantCulture));
            if (withUnfinished) row.Add(g.Unfinished.ToString(CultureInfo.InvariantCulture));
            rows.Add(row);
        }
        return new ReportTable(columns, rows);
    }

    static string WarmupCell(ResultGroup g) => !ModelZoo.HasBatchNorm(g.Model) ? "– (no BN)" : g.WarmupBatches > 0 ? $"on ({g.WarmupBatches})" : "off";

    static string Top1Cell(ResultGroup g) =>
        g.MeanTop1 is null ? "–"
        : g.Ci95Top1 is null ? Format.Points(g.MeanTop1.Value) + " (1 seed)"
        : Format.Points(g.MeanTop1.Value) + " ± " + Format.Points(g.Ci95Top1.Value);

    static string DenseDeltaCell(ResultGroup g, double? baseline) =>
        g.IsDense || g.MeanTop1 is null || baseline is null ? "–" : Format.SignedPoints(g.MeanTop1.Value - baseline.Value);

    /// <summary>The table without the columns headed <paramref name="headers"/> (those it lacks are ignored).</summary>
    public static ReportTable WithoutColumns(ReportTable table, IReadOnlyCollection<string> headers)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(headers);
        var keep = table.Columns.Select((c, i) => (c, i)).Where(x => !headers.Contains(x.c.Header)).Select(x => x.i).ToList();
        return new ReportTable(keep.Select(i => table.Columns[i]).ToList(), table.Rows.Select(r => (IReadOnlyList<string>)keep.Select(i => r[i]).ToList()).ToList());
    }

    /// <summary>The widest the default terminal tables get, in characters, however wide the terminal.</summary>
    public const int TerminalWidth = 120;

    /// <summary>
    /// Characters a table takes when drawn with a border and one space either side of each cell
    /// (Spectre.Console's bordered tables): the widest cell of each column, plus three per column
    /// and one for the closing border.
    /// </summary>
    public static int BorderedWidth(ReportTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        var widths = table.Columns.Select((c, i) => table.Rows.Select(r => r[i].Length).Append(c.Header.Length).Max());
        return widths.Sum() + 3 * table.Columns.Count + 1;
    }

    /// <summary>
    /// The default terminal tables: one per model and data set (named in its title), fewer columns
    /// than <see cref="ResultsTable"/> so that it fits <paramref name="width"/> characters when drawn
    /// with a border (<see cref="BorderedWidth"/>). Columns: criterion (with its ablation), sparsity,
    /// warm-up (only when some run of the model warmed up or the settings differ), seeds, top-1 mean ±
    /// 95% CI, vs random, vs best, vs criterion (when there are ablations) as difference and mark
    /// (<see cref="ComparisonCell"/> without p-values: they are in report.md), Δ dense, failed and
    /// unfinished counts when any. When that is still too wide, Δ dense, seeds, unfinished, failed
    /// and (for a model without batch norm) warm-up are left out in that order and named in
    /// <see cref="TerminalTable.LeftOut"/>.
    /// </summary>
    public static IReadOnlyList<TerminalTable> TerminalTables(IReadOnlyList<ResultGroup> groups, int width = TerminalWidth)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var tables = new List<TerminalTable>();
        foreach (var panel in groups.GroupBy(g => (g.Model, g.Dataset)))
        {
            var cells = panel.ToList();
            var baseline = DenseBaseline(groups, panel.Key.Model, panel.Key.Dataset);
            var warmups = cells.Where(g => !g.IsDense).Select(g => g.WarmupBatches).Distinct().ToList();
            var columns = new List<(ReportColumn Column, Func<ResultGroup, string> Cell)>
            {
                (new("Criterion", false), g => g.Criterion + (g.IsAblation ? $" ({g.Ablation})" : "")),
                (new("Sparsity", true), g => g.IsDense ? "0%" : Format.Sparsity(g.Sparsity)),
            };
            if (warmups.Count > 1 || warmups.Any(w => w > 0)) columns.Add((new("Warm-up", false), WarmupCell));
            columns.AddRange(
            [
                (new("Seeds", true), g => g.Seeds.ToString(CultureInfo.InvariantCulture)),
                (new("Top-1 % ± CI", true), Top1Cell),
                (new("vs random", true), g => g.VsRandom is null ? "–" : ComparisonCell(g.VsRandom, oneSided: false, withP: false)),
                (new("vs best", true), g => g.IsBest ? "best" : g.VsBest is null ? "–" : ComparisonCell(g.VsBest, oneSided: false, withP: false)),
            ]);
            if (cells.Any(g => g.IsAblation))
                columns.Add((new("vs criterion", true), g => g.VsCriterion is null ? "–" : ComparisonCell(g.VsCriterion, oneSided: true, withP: false)));
            columns.Add((new("Δ dense (pp)", true), g => DenseDeltaCell(g, g.IsDense ? null : baseline)));
            if (cells.Any(g => g.Failed > 0)) columns.Add((new("Failed", true), g => g.Failed.ToString(CultureInfo.InvariantCulture)));
            if (cells.Any(g => g.Unfinished > 0)) columns.Add((new("Unfinished", true), g => g.Unfinished.ToString(CultureInfo.InvariantCulture)));

            ReportTable Build() => new(columns.Select(c => c.Column).ToList(), cells.Select(g => (IReadOnlyList<string>)columns.Select(c => c.Cell(g)).ToList()).ToList());
            var table = Build();
            var leftOut = new List<string>();
            // Warm-up last, and only for a model without batch norm, where it changed nothing.
            var droppables = ModelZoo.HasBatchNorm(panel.Key.Model) ? ["Δ dense (pp)", "Seeds", "Unfinished", "Failed"]
                : new[] { "Δ dense (pp)", "Seeds", "Unfinished", "Failed", "Warm-up" };
            foreach (var droppable in droppables)
            {
                if (BorderedWidth(table) <= width) break;
                var at = columns.FindIndex(c => c.Column.Header == droppable);
                if (at < 0) continue;
                columns.RemoveAt(at);
                leftOut.Add(droppable);
                table = Build();
            }
            tables.Add(new TerminalTable($"{panel.Key.Model} · {panel.Key.Dataset}", table, leftOut));
        }
        return tables;
    }

    /// <summary>Mark of a significantly higher mean (two-sided, Holm-corrected p &lt; <see cref="Alpha"/>).</summary>
    public const string HigherMark = "▲";
    /// <summary>Mark of a significantly lower mean (two-sided, Holm-corrected p &lt; <see cref="Alpha"/>; for an ablation, one-sided).</summary>
    public const string LowerMark = "▼";
    /// <summary>Mark of a difference that is not significant.</summary>
    public const string NotSignificantMark = "≈";
    /// <summary>Mark of an ablation that is not significantly worse than its criterion (one-sided p ≥ <see cref="Alpha"/>).</summary>
    public const string NotWorseMark = "⚠ not worse";

    /// <summary>
    /// A comparison as a table cell: the difference in percentage points, a mark, the raw p-value
    /// and the Holm-corrected one, e.g. "+1.23 ▲ p=0.004 (Holm p=0.012)", "-0.31 ≈ p=0.41
    /// (Holm p=1.00) Welch", "+0.80 (1 seed)" when no test was possible; without
    /// <paramref name="withP"/> the difference and mark alone ("+1.23 ▲"). The mark follows the
    /// corrected p. Two-sided: ▲ / ▼ significantly higher / lower, ≈ not significant. One-sided (an
    /// ablation against its criterion; the alternative is "the ablation is worse"): ▼ significantly
    /// worse, "⚠ not worse" otherwise ("⚠" alone without <paramref name="withP"/>).
    /// </summary>
    public static string ComparisonCell(Comparison comparison, bool oneSided, bool withP = true)
    {
        ArgumentNullException.ThrowIfNull(comparison);
        var diff = Format.SignedPoints(comparison.Difference);
        if (comparison.Test is not { } t) return diff + " (1 seed)";
        var p = TestedP(t, oneSided);
        var mark = Mark(comparison, oneSided);
        if (!withP) return $"{diff} {(mark == NotWorseMark ? NotWorseMark[..1] : mark)}";
        return $"{diff} {mark} {Format.PValue(p)} (Holm {Format.PValue(comparison.HolmP ?? p)})" + (t.Kind == TTestKind.Welch ? " Welch" : "");
    }

    /// <summary>
    /// True when the comparison is significant after Holm's correction: the corrected p (the raw p
    /// for a comparison made alone) is below <see cref="Alpha"/>. False without a test.
    /// </summary>
    public static bool Significant(Comparison comparison, bool oneSided)
    {
        ArgumentNullException.ThrowIfNull(comparison);
        return comparison.Test is { } t && (comparison.HolmP ?? TestedP(t, oneSided)) < Alpha;
    }

    static string Mark(Comparison c, bool oneSided) =>
        oneSided ? (Significant(c, oneSided) ? LowerMark : NotWorseMark)
        : Significant(c, oneSided) ? (c.Test!.Difference > 0 ? HigherMark : LowerMark) : NotSignificantMark;

    /// <summary>
    /// The curvature estimates behind the runs that have them (null when no run has any), as short
    /// as what varies allows: an estimator whose layers all came out alike (same HVPs, method,
    /// probes and error in every run, e.g. an exact diagonal: 0 probes, 0 error) is one row for all
    /// its runs and layers; otherwise one row per run whose layers came out alike, else one row
    /// per run and layer.
    /// </summary>
    public static ReportTable? CurvatureTable(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var entries = (from r in runs.OrderBy(r => r.Config.Criterion, StringComparer.Ordinal).ThenBy(r => r.Config.Sparsity).ThenBy(r => r.Key, StringComparer.Ordinal)
                       from d in r.Prune?.Curvature ?? []
                       from l in d.Layers
                       select (Run: r, Record: d, Layer: l)).ToList();
        if (entries.Count == 0) return null;
        static string Se(LayerCurvatureRecord l) => l.MedianRelativeSe is { } se ? se.ToString("G3", CultureInfo.InvariantCulture) : "∞";
        static (int, string, int, string) Outcome((RunRecord Run, CurvatureRecord Record, LayerCurvatureRecord Layer) e) =>
            (e.Record.Hvps, e.Layer.Method, e.Layer.Probes, Se(e.Layer));
        static string Layers(int n) => n == 1 ? "1 layer" : $"all {n} layers";
        IReadOnlyList<string> Row(string run, IReadOnlyList<(RunRecord Run, CurvatureRecord Record, LayerCurvatureRecord Layer)> alike, string layer)
        {
            var (hvps, method, probes, se) = Outcome(alike[0]);
            return [run, alike[0].Record.Estimator, hvps.ToString("N0", CultureInfo.InvariantCulture), layer, method,
                probes.ToString(CultureInfo.InvariantCulture), se];
        }
        var rows = new List<IReadOnlyList<string>>();
        foreach (var estimator in entries.GroupBy(e => e.Record.Estimator, StringComparer.Ordinal))
        {
            var all = estimator.ToList();
            var byRun = all.GroupBy(e => e.Run.Key, StringComparer.Ordinal).ToList();
            if (all.Select(Outcome).Distinct().Count() == 1)
            {
                var run = byRun.Count == 1 ? all[0].Run.Config.Label : $"{byRun.Count} runs";
                rows.Add(Row(run, all, Layers(all.Select(e => e.Layer.Name).Distinct(StringComparer.Ordinal).Count())));
                continue;
            }
            foreach (var run in byRun.Select(g => g.ToList()))
            {
                if (run.Select(Outcome).Distinct().Count() == 1)
                    rows.Add(Row(run[0].Run.Config.Label, run, Layers(run.Select(e => e.Layer.Name).Distinct(StringComparer.Ordinal).Count())));
                else rows.AddRange(run.Select(e => Row(e.Run.Config.Label, [e], e.Layer.Name)));
            }
        }
        ReportColumn[] columns = [new("run", false), new("estimator", false), new("HVPs", true), new("layer", false), new("method", false),
            new("probes", true), new("median rel. SE", true)];
        return new ReportTable(columns, rows);
    }

    /// <summary>
    /// The CSV of results, one row per run (RFC 4180: comma separated, fields with a comma, quote
    /// or line break quoted, quotes doubled; invariant culture; round-trip numbers; empty for
    /// missing values). Columns: key, model, dataset, criterion, ablation, sparsity, warmup_batches,
    /// seed, status, final_top1, final_top5, final_loss, density, flops (remaining fraction of the
    /// dense multiply-adds), collapsed_count, collapsed_layers
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
            "key", "model", "dataset", "criterion", "ablation", "sparsity", "warmup_batches", "seed", "status",
            "final_top1", "final_top5", "final_loss", "density", "flops", "collapsed_count", "collapsed_layers", "epochs",
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
                r.Key, c.Model, c.Dataset, c.Criterion, c.Ablation, Format.Number(c.Sparsity),
                c.WarmupBatches.ToString(CultureInfo.InvariantCulture), c.Seed.ToString(CultureInfo.InvariantCulture),
                r.Status.ToString().ToLowerInvariant(),
                Format.Number(r.FinalTop1), Format.Number(r.FinalTop5), Format.Number(r.FinalLoss),
                Format.Number(AchievedDensity(r)), Format.Number(RemainingFlops(r)),
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

    /// <summary>"resnet20 cifar10 snip 98% + warm-up (100) seed 1" (no warm-up for a model without batch norm, whose runs the key tells apart).</summary>
    internal static string RunLabel(RunRecord r) =>
        $"{r.Config.Model} {r.Config.Dataset} {r.Config.Criterion}" +
        (r.Config.Ablation == NoAblation ? "" : $" ({r.Config.Ablation})") +
        (IsDense(r.Config.Criterion) ? "" : " " + Format.Sparsity(r.Config.Sparsity)) +
        WarmupLabel(r.Config.Model, r.Config.WarmupBatches, severalWarmups: false, warmupCounts: true) + $" seed {r.Config.Seed}";

    /// <summary>
    /// The warm-up part of a run, cell or series label: " + warm-up" for a model with batch norm (with
    /// the batches when <paramref name="warmupCounts"/>), nothing without warm-up; a model without
    /// batch norm is not changed by warm-up, so its label says so only when it must tell two settings
    /// apart (<paramref name="severalWarmups"/>).
    /// </summary>
    internal static string WarmupLabel(string model, int warmup, bool severalWarmups, bool warmupCounts) =>
        warmup == 0 ? ""
        : !ModelZoo.HasBatchNorm(model) ? (severalWarmups ? $" (warm-up {warmup}, no BN)" : "")
        : warmupCounts ? $" + warm-up ({warmup})" : " + warm-up";

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

    /// <summary>A p-value: "p&lt;0.001", else three decimals below 0.1 and two above (0.0412 → "p=0.041", 0.3 → "p=0.30").</summary>
    public static string PValue(double p) =>
        p < 0.001 ? "p<0.001" : "p=" + (p < 0.1 ? p.ToString("F3", Inv) : p.ToString("F2", Inv));

    /// <summary>Shortest round-trip invariant form; empty for null.</summary>
    public static string Number(double? value) => value is null ? "" : value.Value.ToString("R", Inv);
}
