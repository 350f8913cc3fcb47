using System.Globalization;

namespace Pai.Host.Reports;

/// <summary>What the comparisons with the best criterion found at one sparsity and warm-up setting of a model and data set.</summary>
/// <param name="Setting">E.g. "lenet5 · fashion-mnist · 98%", with the warm-up when the model's runs differ in it.</param>
/// <param name="Best">The criterion (no ablation) with the highest mean top-1.</param>
/// <param name="NotWorse">Criteria not significantly worse than the best (Holm-corrected, two-sided).</param>
/// <param name="Worse">Criteria significantly below the best.</param>
/// <param name="Untested">Criteria that could not be tested against the best (a side has a single seed).</param>
/// <param name="AblationsNotWorse">Ablations not significantly worse than their criterion (the sanity check failed).</param>
public sealed record SparsityFinding(
    string Setting,
    ResultGroup Best,
    IReadOnlyList<ResultGroup> NotWorse,
    IReadOnlyList<ResultGroup> Worse,
    IReadOnlyList<ResultGroup> Untested,
    IReadOnlyList<ResultGroup> AblationsNotWorse);

/// <summary>A run whose training blew up, with the evidence.</summary>
/// <param name="Run">The run.</param>
/// <param name="ChanceLoss">ln C: the cross-entropy of predicting every one of the C classes equally.</param>
/// <param name="PeakLoss">The highest epoch-mean training loss (null for a run that failed on a diverged loss).</param>
/// <param name="PeakEpoch">The epoch of <paramref name="PeakLoss"/> (1-based).</param>
/// <param name="Error">For a failed run, the first line of its error (it names the epoch and batch).</param>
public sealed record TrainingBlowUp(RunRecord Run, double ChanceLoss, double? PeakLoss, int? PeakEpoch, string? Error);

/// <summary>
/// A criterion's cell (pruned, no ablation) whose 95% interval is wider than wanted, with what its seeds' masks show: the
/// layer that kept the smallest fraction of its weights, and each seed's top-1 beside that layer's kept count.
/// </summary>
/// <param name="Cell">The cell.</param>
/// <param name="Layer">The layer that kept the smallest fraction of its weights (median over the cell's seeds).</param>
/// <param name="Total">That layer's prunable weights.</param>
/// <param name="Seeds">(seed, kept weights in <paramref name="Layer"/>, top-1) of each finished seed, by kept weights, then seed.</param>
/// <param name="Spearman">Rank correlation of kept weights and top-1 over the seeds (NaN where either is constant).</param>
/// <param name="BlownUp">Seeds of the cell whose training blew up (flagged on their own).</param>
public sealed record WideCell(ResultGroup Cell, string Layer, long Total, IReadOnlyList<(ulong Seed, long Kept, double Top1)> Seeds,
    double Spearman, IReadOnlyList<ulong> BlownUp);

/// <summary>
/// The report's findings: per sparsity, the best criterion and those not significantly worse
/// than it, and the runs whose training blew up.
/// </summary>
public static class ReportFindings
{
    /// <summary>
    /// A run is flagged when an epoch's mean training loss exceeds this multiple of chance (ln C).
    /// The store keeps the mean training loss of each epoch, not each batch's: an epoch mean far
    /// above chance means the loss spent a good part of the epoch there.
    /// </summary>
    public const double BlowUpFactor = 1.5;

    /// <summary>
    /// A criterion's cell whose 95% half-width exceeds this many points is explained in the findings,
    /// unless the sweep set its own target (--target-ci).
    /// </summary>
    public const double WideHalfWidth = 6;

    /// <summary>How the findings were reached, for the report's readers.</summary>
    public static string Explanation =>
        "Per sparsity and warm-up setting: the criterion with the highest mean top-1, and the criteria not significantly worse than it by the vs best test " +
        "(a paired t-test over the seeds both finished, Welch's when fewer than two are shared), Holm-corrected over the criteria compared at that sparsity, " +
        $"two-sided p < {ReportTables.Alpha:0.00}. " +
        $"Training blew up: a run whose mean training loss over an epoch exceeded {BlowUpFactor:0.#} × chance (ln C for C classes; the store keeps " +
        "one mean per epoch, not per batch), or that failed on a diverged loss. " +
        $"Wide interval: a criterion's cell (no ablation) whose 95% half-width exceeds ±{WideHalfWidth:0.#} pp (or the sweep's --target-ci), shown with its sparsest layer " +
        "(the smallest fraction kept) and each seed's top-1 beside that layer's kept count: a near-empty layer is a bottleneck, and seeds differ in how narrow it is.";

    /// <summary>The findings at each sparsity and warm-up setting that has a best criterion, in table order.</summary>
    public static IReadOnlyList<SparsityFinding> Comparisons(IReadOnlyList<ResultGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var findings = new List<SparsityFinding>();
        foreach (var model in groups.Where(g => !g.IsDense).GroupBy(g => (g.Model, g.Dataset)))
        {
            var warmups = model.Select(g => g.WarmupBatches).Distinct().Count();
            foreach (var cell in model.GroupBy(g => (g.Sparsity, g.WarmupBatches)).OrderBy(c => c.Key.Sparsity).ThenBy(c => c.Key.WarmupBatches))
            {
                if (cell.FirstOrDefault(g => g.IsBest) is not { } best) continue;
                var others = cell.Where(g => !g.IsAblation && !g.IsBest && g.VsBest is not null).ToList();
                var setting = $"{model.Key.Model} · {model.Key.Dataset} · {Format.Sparsity(cell.Key.Sparsity)}" +
                              (warmups == 1 ? "" : " · " + WarmupSetting(model.Key.Model, cell.Key.WarmupBatches));
                findings.Add(new SparsityFinding(setting, best,
                    NotWorse: others.Where(g => g.VsBest!.Test is not null && !Worse(g.VsBest)).ToList(),
                    Worse: others.Where(g => Worse(g.VsBest!)).ToList(),
                    Untested: others.Where(g => g.VsBest!.Test is null).ToList(),
                    AblationsNotWorse: cell.Where(g => g.VsCriterion is { Test: not null } c && !ReportTables.Significant(c, oneSided: true)).ToList()));
            }
        }
        return findings;
    }

    // The best is the highest mean over all its seeds, the test pairs the seeds both cells finished:
    // with unshared seeds the paired difference can come out positive; that is not worse.
    static bool Worse(Comparison vsBest) => ReportTables.Significant(vsBest, oneSided: false) && vsBest.Difference < 0;

    static string WarmupSetting(string model, int batches) =>
        batches == 0 ? "no warm-up" : ModelZoo.HasBatchNorm(model) ? $"warm-up ({batches})" : $"warm-up {batches} (no BN: no effect)";

    /// <summary>
    /// The runs whose training blew up: an epoch-mean training loss above <see cref="BlowUpFactor"/>
    /// × ln C (the highest such epoch is the evidence), or a failed run whose error says its training
    /// diverged. Runs of a data set Pai does not know (C unknown) are not judged by their loss.
    /// </summary>
    public static IReadOnlyList<TrainingBlowUp> BlowUps(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var found = new List<TrainingBlowUp>();
        foreach (var run in runs)
        {
            if (ClassCount(run.Config.Dataset) is not { } classes || classes < 2) continue;
            var chance = Math.Log(classes);
            if (run.Status == RunStatus.Failed && run.Error is { } error && error.StartsWith("training diverged", StringComparison.Ordinal))
            {
                found.Add(new TrainingBlowUp(run, chance, null, null, error.Split('\n', 2)[0].Trim()));
                continue;
            }
            if (run.Epochs.Count == 0) continue;
            var peak = run.Epochs.MaxBy(e => e.TrainLoss)!;
            if (!(peak.TrainLoss <= BlowUpFactor * chance)) found.Add(new TrainingBlowUp(run, chance, peak.TrainLoss, peak.Epoch, null));
        }
        return found;
    }

    /// <summary>
    /// The criterion cells (pruned, no ablation) whose 95% interval is wider than <paramref name="halfWidthPoints"/> (in
    /// percentage points), each with the layer its seeds' masks kept the smallest fraction of and every
    /// finished seed's kept count there beside its top-1. Cells without pruning records are left out.
    /// </summary>
    public static IReadOnlyList<WideCell> WideCells(IReadOnlyList<ResultGroup> groups, double halfWidthPoints = WideHalfWidth)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var found = new List<WideCell>();
        foreach (var g in groups.Where(g => !g.IsDense && !g.IsAblation && g.Ci95Top1 is { } ci && ci * 100 > halfWidthPoints))
        {
            // One run per seed, as the interval counts them.
            var runs = g.Runs.Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null && r.Prune is not null)
                .GroupBy(r => r.Config.Seed).Select(s => s.First()).ToList();
            if (runs.Count < 2) continue;
            var layers = runs.SelectMany(r => r.Prune!.Layers).GroupBy(l => l.Name, StringComparer.Ordinal)
                .Where(l => l.Count() == runs.Count) // a layer every seed's record names
                .Select(l => (Name: l.Key, Total: l.First().Total, Median: Stability.median(l.Select(x => (double)x.Kept).ToArray())))
                .OrderBy(l => l.Total == 0 ? 1 : l.Median / l.Total).ThenBy(l => l.Name, StringComparer.Ordinal).ToList();
            if (layers.Count == 0) continue;
            var layer = layers[0];
            var seeds = runs.Select(r => (r.Config.Seed, Kept: r.Prune!.Layers.First(l => l.Name == layer.Name).Kept, Top1: r.FinalTop1!.Value))
                .OrderBy(s => s.Kept).ThenBy(s => s.Seed).ToList();
            var rho = Stability.spearman(seeds.Select(s => (double)s.Kept).ToArray(), seeds.Select(s => s.Top1).ToArray());
            var blown = BlowUps(g.Runs).Select(b => b.Run.Config.Seed).Distinct().Order().ToList();
            found.Add(new WideCell(g, layer.Name, layer.Total, seeds, rho, blown));
        }
        return found;
    }

    static int? ClassCount(string dataset)
    {
        try { return DatasetRegistry.Info(dataset).Classes; }
        catch (DatasetException) { return null; } // a data set Pai does not know: no chance level to compare with
    }

    /// <summary>
    /// The cells that reached the seed limit of <paramref name="seeds"/> (as many seeds as it allows,
    /// whatever their runs' status) with their 95% interval still wider than its target.
    /// </summary>
    public static IReadOnlyList<ResultGroup> AtSeedLimit(IReadOnlyList<ResultGroup> groups, SeedTarget seeds)
    {
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(seeds);
        return groups.Where(g => g.Runs.Select(r => r.Config.Seed).Distinct().Count() >= seeds.MaxSeeds && seeds.IsWide(g.Ci95Top1)).ToList();
    }

    /// <summary>
    /// The findings as lines of text, the same in Markdown, HTML and the terminal (empty when there is
    /// nothing to say); with the sweep's <paramref name="seeds"/>, the cells still wide at its seed limit.
    /// </summary>
    public static IReadOnlyList<string> Lines(IReadOnlyList<ResultGroup> groups, IReadOnlyList<RunRecord> runs, SeedTarget? seeds = null)
    {
        var lines = Comparisons(groups).Select(Line).ToList();
        if (seeds is not null && AtSeedLimit(groups, seeds) is { Count: > 0 } wide)
            lines.Add($"Seed limit reached: 95% interval still wider than ±{seeds.Points} pp at {seeds.MaxSeeds} seeds (--max-seeds): " +
                      string.Join(", ", wide.Select(g => $"{CellName(g, groups)} ({(g.Ci95Top1 is { } ci ? "±" + Format.Points(ci) + " pp" : $"{g.Seeds} finished")})")) + ".");
        foreach (var b in BlowUps(runs))
        {
            var chance = $"chance ln {ClassCount(b.Run.Config.Dataset)} = {b.ChanceLoss.ToString("F2", CultureInfo.InvariantCulture)}";
            lines.Add($"Training blew up: {ReportTables.RunLabel(b.Run)} (run {b.Run.Key}): " + (b.Error is not null
                ? $"failed, {b.Error} ({chance})."
                : $"mean training loss {b.PeakLoss!.Value.ToString("F2", CultureInfo.InvariantCulture)} in epoch {b.PeakEpoch}, " +
                  $"{(b.PeakLoss.Value / b.ChanceLoss).ToString("F1", CultureInfo.InvariantCulture)} × {chance}."));
        }
        foreach (var w in WideCells(groups, seeds?.HalfWidth ?? WideHalfWidth)) lines.Add(WideLine(w, groups));
        return lines;
    }

    // The warm-up is named for a model with batch norm, or where it tells two of the model's cells apart.
    static string CellName(ResultGroup g, IReadOnlyList<ResultGroup> groups) =>
        $"{g.Model} {g.Dataset} {Name(g)}" + (g.IsDense ? "" : " " + Format.Sparsity(g.Sparsity)) +
        ReportTables.WarmupLabel(g.Model, g.WarmupBatches, warmupCounts: true,
            severalWarmups: groups.Where(o => o.Model == g.Model && o.Dataset == g.Dataset && !o.IsDense).Select(o => o.WarmupBatches).Distinct().Count() > 1);

    // Blow-ups are the stronger evidence: with one in the cell, the masks are not discussed.
    static string WideLine(WideCell w, IReadOnlyList<ResultGroup> groups)
    {
        var inv = CultureInfo.InvariantCulture;
        var g = w.Cell;
        var head = $"Wide interval: {CellName(g, groups)} (±{Format.Points(g.Ci95Top1!.Value)} pp, {w.Seeds.Count} seeds, top-1 " +
                   $"{Format.Percent(g.MinTop1)}–{Format.Percent(g.MaxTop1)}). ";
        if (w.BlownUp.Count > 0)
            return head + $"Training blew up on seed{(w.BlownUp.Count == 1 ? "" : "s")} {string.Join(", ", w.BlownUp)} (flagged above).";
        var kept = w.Seeds.Select(s => s.Kept).ToList();
        var range = kept.Min() == kept.Max() ? kept.Min().ToString("N0", inv) : $"{kept.Min().ToString("N0", inv)}–{kept.Max().ToString("N0", inv)}";
        var bySeed = string.Join(", ", w.Seeds.Select(s => $"seed {s.Seed}: {s.Kept.ToString("N0", inv)} → {Format.Percent(s.Top1)}"));
        var rho = double.IsNaN(w.Spearman) ? "" : $"; rank correlation of kept weights and top-1 {w.Spearman.ToString("+0.00;-0.00", inv)}";
        return head + $"Its sparsest layer, {w.Layer}, keeps {range} of {w.Total.ToString("N0", inv)} weights; by seed, kept → top-1: {bySeed}{rho}.";
    }

    static string Name(ResultGroup g) => g.Criterion + (g.IsAblation ? $" ({g.Ablation})" : "");

    static string Line(SparsityFinding f)
    {
        var best = f.Best;
        var top1 = Format.Points(best.MeanTop1!.Value) + (best.Ci95Top1 is { } ci ? " ± " + Format.Points(ci) : "") + "%";
        var parts = new List<string> { $"best {best.Criterion} ({top1}, {best.Seeds} seed{(best.Seeds == 1 ? "" : "s")})" };
        string Versus(ResultGroup g) => $"{g.Criterion} ({Format.SignedPoints(g.VsBest!.Difference)} pp" +
                                        (g.VsBest.HolmP is { } p ? $", Holm {Format.PValue(p)}" : "") + ")";
        if (f.NotWorse.Count + f.Worse.Count + f.Untested.Count == 0) parts[0] += ", the only criterion";
        else if (f.NotWorse.Count + f.Worse.Count > 0) // something was tested
            parts.Add("not significantly worse: " + (f.NotWorse.Count == 0 ? "none" : string.Join(", ", f.NotWorse.Select(Versus))));
        if (f.Worse.Count > 0) parts.Add("significantly worse: " + string.Join(", ", f.Worse.Select(Versus)));
        if (f.Untested.Count > 0) parts.Add("not tested (1 seed): " + string.Join(", ", f.Untested.Select(Versus)));
        if (f.AblationsNotWorse.Count > 0)
            parts.Add($"ablations {ReportTables.NotWorseMark} than their criterion: " + string.Join(", ", f.AblationsNotWorse.Select(Name)));
        return $"{f.Setting}: {string.Join("; ", parts)}.";
    }
}
