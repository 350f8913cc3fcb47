using System.Globalization;
using ScottPlot;

namespace Pai.Host.Reports;

/// <summary>A chart could not be drawn (e.g. SkiaSharp's native library failed to load).</summary>
public sealed class ChartRenderingException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A run in a per-layer density chart, with the label that tells it apart from the others.</summary>
/// <param name="Label">E.g. "snip", "snip + warm-up", "snip (shuffle)", "snip 98% seed 1".</param>
/// <param name="Run">The run (has a prune record).</param>
public sealed record LabelledRun(string Label, RunRecord Run);

/// <summary>The runs of one model and data set whose per-layer densities are compared.</summary>
/// <param name="Title">E.g. "lenet5 · fashion-mnist · 98% sparsity".</param>
/// <param name="Layers">Layer names in network order (first appearance across the runs).</param>
/// <param name="Runs">The runs, labelled.</param>
public sealed record LayerPanel(string Title, IReadOnlyList<string> Layers, IReadOnlyList<LabelledRun> Runs);

/// <summary>One drawn chart: the same picture as SVG and PNG.</summary>
/// <param name="FileStem">File name without extension, e.g. "accuracy-lenet5-fashion-mnist".</param>
/// <param name="Title">What it shows (alt text and caption).</param>
/// <param name="Caption">How to read it: marks, bars and lines explained.</param>
/// <param name="Svg">The SVG document.</param>
/// <param name="Png">The PNG image.</param>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
public sealed record ReportChart(string FileStem, string Title, string Caption, string Svg, byte[] Png, int Width, int Height)
{
    /// <summary>
    /// The vertical axis's limits as drawn, in the plotted unit (accuracy charts: percent; per-layer
    /// charts: log₁₀ of the density).
    /// </summary>
    public (double Bottom, double Top) YLimits { get; init; }

    /// <summary>The SVG's file name.</summary>
    public string SvgFile => FileStem + ".svg";

    /// <summary>The PNG's file name.</summary>
    public string PngFile => FileStem + ".png";
}

/// <summary>
/// The report's charts, drawn in-process with ScottPlot (SkiaSharp): accuracy versus sparsity with
/// 95% confidence intervals across seeds, and per-layer density on a log scale. Each criterion
/// keeps its colour (<see cref="CriterionColours.CriterionColour"/>). One chart per model and data set.
/// </summary>
public static class ReportCharts
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    const string FontName = "DejaVu Sans";

    static Color Colour(string criterion) => Color.FromHex(CriterionColours.CriterionColour(criterion));

    static string Panel(string model, string dataset) => $"{model} · {dataset}";

    /// <summary>A file-name-safe stem: letters, digits, '-', '_' and '.' kept, others become '-'.</summary>
    static string Stem(string prefix, params string[] parts) =>
        prefix + string.Concat(parts.Select(p => "-" + new string(p.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '.' ? ch : '-').ToArray())));

    static Plot NewPlot()
    {
        var plot = new Plot();
        plot.Font.Set(FontName);
        plot.Axes.Title.Label.FontSize = 17;
        plot.Axes.Bottom.Label.FontSize = 14;
        plot.Axes.Left.Label.FontSize = 14;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 12;
        plot.Axes.Left.TickLabelStyle.FontSize = 12;
        plot.Legend.FontSize = 12;
        return plot;
    }

    static ReportChart Render(Plot plot, string stem, string title, string caption, int width, int height)
    {
        try
        {
            var chart = new ReportChart(stem, title, caption, plot.GetSvgXml(width, height), plot.GetImageBytes(width, height, ImageFormat.Png), width, height);
            var limits = plot.Axes.GetLimits();
            return chart with { YLimits = (limits.Bottom, limits.Top) };
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new ChartRenderingException($"drawing the chart '{title}' failed: SkiaSharp's native library could not be used ({e.Message})", e);
        }
        finally
        {
            plot.Dispose();
        }
    }

    // Lines are solid throughout: a dotted or dashed series line is a Skia path effect, which
    // Skia's SVG backend does not support (it printed "Unsupported path effect in addPaint." on
    // standard error for each). Ablations and warm-up settings are told apart by markers, line
    // width and opacity instead, the same in the SVG and the PNG.

    /// <summary>Marker of an ablation's accuracy series: each ablation its own, in the criterion's colour.</summary>
    static MarkerShape AblationMarker(string ablation) => ablation switch
    {
        ReportTables.NoAblation => MarkerShape.FilledCircle,
        "shuffle" => MarkerShape.FilledSquare,
        "reinit" => MarkerShape.FilledDiamond,
        "invert" => MarkerShape.FilledTriangleDown,
        _ => MarkerShape.FilledTriangleUp,
    };

    /// <summary>The hatch of an ablation's bars in the per-layer chart (null: none, for plain runs).</summary>
    static IHatch? AblationHatch(string ablation) => ablation switch
    {
        ReportTables.NoAblation => null,
        "shuffle" => new ScottPlot.Hatches.Striped(),
        "reinit" => new ScottPlot.Hatches.Checker(),
        "invert" => new ScottPlot.Hatches.Dots(),
        _ => new ScottPlot.Hatches.Grid(),
    };

    /// <summary>An interval clipped to [0, 100]: the drawn ends and whether each end was cut.</summary>
    static (double Low, double High, bool CutLow, bool CutHigh) Clip(double mean, double halfWidth) =>
        (Math.Max(0, mean - halfWidth), Math.Min(100, mean + halfWidth), mean - halfWidth < 0, mean + halfWidth > 100);

    /// <summary>
    /// The accuracy axis: the drawn data (means, single seeds, clipped intervals, the dense band)
    /// with a margin, kept within [0, 100] so that a wide interval cannot stretch it.
    /// </summary>
    public static (double Bottom, double Top) AccuracyLimits(IReadOnlyCollection<double> drawn)
    {
        ArgumentNullException.ThrowIfNull(drawn);
        if (drawn.Count == 0) return (0, 100);
        var (lo, hi) = (drawn.Min(), drawn.Max());
        var pad = Math.Max(1, 0.06 * (hi - lo));
        return (Math.Max(0, lo - pad), Math.Min(100, hi + pad));
    }

    /// <summary>
    /// Accuracy versus sparsity, one chart per model and data set: per criterion, ablation and
    /// warm-up setting a line through the mean final top-1 across seeds with 95% Student t
    /// confidence intervals as error bars (none for a single seed), the single seeds as open
    /// circles, and the dense baseline as a black line with its interval shaded. The x axis is
    /// log(1 / density), labelled as sparsity at each configured sparsity, so that 90%, 98% and
    /// 99.5% are spread out; series are nudged apart sideways so their error bars do not overlap.
    /// The y axis stays within [0, 100] (<see cref="AccuracyLimits"/>): an interval that leaves it is
    /// drawn to the edge and marked there with a triangle pointing out. Ablations have their own
    /// markers and thinner, paler lines; for a model with batch norm, warm-up off has pale lines and
    /// open markers when both settings appear. Empty when no finished run has a final top-1.
    /// </summary>
    public static IReadOnlyList<ReportChart> Accuracy(IReadOnlyList<ResultGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var charts = new List<ReportChart>();
        foreach (var panel in groups.Where(g => g.Seeds > 0).GroupBy(g => (g.Model, g.Dataset)))
        {
            var pruned = panel.Where(g => !g.IsDense).ToList();
            var dense = panel.Where(g => g.IsDense).SelectMany(g => g.Runs)
                .Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null).Select(r => r.FinalTop1!.Value * 100).ToList();
            var warmups = pruned.Select(g => g.WarmupBatches).Distinct().ToList();
            var showWarmup = warmups.Count > 1 && ModelZoo.HasBatchNorm(panel.Key.Model);
            var warmupCounts = warmups.Count(w => w > 0) > 1;
            var drawn = new List<double>(); // every y drawn, for the axis limits
            var cut = new List<(double X, bool Up, Color Colour)>(); // interval ends beyond 0 (down) or 100 (up)
            var series = pruned.GroupBy(g => (g.Criterion, g.Ablation, g.WarmupBatches)).ToList();
            var sparsities = pruned.Select(g => g.Sparsity).Distinct().Order().ToList();
            static double X(double sparsity) => Math.Log10(1 / (1 - sparsity));
            var xs = sparsities.Select(X).ToList();
            var span = xs.Count > 1 ? xs[^1] - xs[0] : 1;
            var nudge = series.Count > 1 ? Math.Min(0.03 * span, 0.25 * span / series.Count) : 0;

            var plot = NewPlot();
            if (dense.Count > 0)
            {
                var mean = dense.Average();
                var ci = SeedStatistics.ConfidenceHalfWidth(dense);
                drawn.Add(mean);
                if (ci is { } h)
                {
                    var (low, high, _, _) = Clip(mean, h);
                    var band = plot.Add.VerticalSpan(low, high, Color.FromHex(CriterionColours.DenseColour).WithOpacity(0.10));
                    band.LineWidth = 0;
                    drawn.AddRange([low, high]);
                }
                var line = plot.Add.HorizontalLine(mean, 1.6f, Color.FromHex(CriterionColours.DenseColour), LinePattern.Solid);
                line.LegendText = $"dense {mean.ToString("F2", Inv)}%" + (ci is { } c ? $" ± {c.ToString("F2", Inv)}" : "") + $" (n={dense.Count})";
            }
            for (var i = 0; i < series.Count; i++)
            {
                var cells = series[i].OrderBy(g => g.Sparsity).ToList();
                var (criterion, ablation, warmup) = series[i].Key;
                var colour = Colour(criterion);
                var offset = (i - (series.Count - 1) / 2.0) * nudge;
                var sx = cells.Select(g => X(g.Sparsity) + offset).ToArray();
                var sy = cells.Select(g => g.MeanTop1!.Value * 100).ToArray();
                var seeds = cells.SelectMany(g => g.Runs.Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null)
                    .Select(r => (X: X(g.Sparsity) + offset, Y: r.FinalTop1!.Value * 100))).ToList();
                drawn.AddRange(sy);
                drawn.AddRange(seeds.Select(p => p.Y));
                if (seeds.Count > cells.Count)
                {
                    var points = plot.Add.Scatter(seeds.Select(p => p.X).ToArray(), seeds.Select(p => p.Y).ToArray(), colour.WithOpacity(0.7));
                    points.LineWidth = 0;
                    points.MarkerShape = MarkerShape.OpenCircle;
                    points.MarkerSize = 6;
                }
                var pale = showWarmup && warmup == 0;
                var isAblation = ablation != ReportTables.NoAblation;
                var lineColour = isAblation || pale ? colour.WithOpacity(pale ? 0.45 : 0.7) : colour;
                var withCi = cells.Select((g, j) => (g, j)).Where(p => p.g.Ci95Top1 is not null).ToList();
                if (withCi.Count > 0)
                {
                    var clipped = withCi.Select(p => (p.j, Clip(sy[p.j], p.g.Ci95Top1!.Value * 100))).ToList();
                    var bars = new ScottPlot.Plottables.ErrorBar(clipped.Select(c => sx[c.j]).ToArray(), clipped.Select(c => sy[c.j]).ToArray(), null, null,
                        clipped.Select(c => c.Item2.High - sy[c.j]).ToArray(), clipped.Select(c => sy[c.j] - c.Item2.Low).ToArray())
                    {
                        Color = lineColour, LineWidth = 1.6f, CapSize = 6,
                    };
                    plot.Add.Plottable(bars);
                    foreach (var (j, (low, high, cutLow, cutHigh)) in clipped)
                    {
                        drawn.AddRange([low, high]);
                        if (cutLow) cut.Add((sx[j], false, colour));
                        if (cutHigh) cut.Add((sx[j], true, colour));
                    }
                }
                var means = plot.Add.Scatter(sx, sy, lineColour);
                means.LineWidth = isAblation ? 1.4f : 2.2f;
                means.MarkerSize = 8;
                means.MarkerShape = pale && !isAblation ? MarkerShape.OpenCircle : AblationMarker(ablation);
                means.MarkerColor = colour;
                means.LegendText = criterion + (isAblation ? $" ({ablation})" : "") + ReportTables.WarmupLabel(panel.Key.Model, warmup, warmups.Count > 1, warmupCounts);
            }

            var (bottom, top) = AccuracyLimits(drawn);
            plot.Axes.SetLimitsY(bottom, top);
            var inset = 0.025 * (top - bottom); // a marker centred on the edge would be cut in half
            foreach (var (x, up, colour) in cut)
                plot.Add.Marker(x, up ? top - inset : bottom + inset, up ? MarkerShape.FilledTriangleUp : MarkerShape.FilledTriangleDown, 11, colour);

            if (xs.Count > 0)
            {
                plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xs.ToArray(), sparsities.Select(Format.Sparsity).ToArray());
                var pad = Math.Max(0.12 * span, 0.15);
                plot.Axes.SetLimitsX(xs[0] - pad, xs[^1] + pad);
            }
            plot.Title($"Top-1 test accuracy versus sparsity · {Panel(panel.Key.Model, panel.Key.Dataset)}");
            plot.XLabel("Sparsity (log scale of remaining weights)");
            plot.YLabel("Top-1 test accuracy (%)");
            plot.ShowLegend(Edge.Right);
            charts.Add(Render(plot, Stem("accuracy", panel.Key.Model, panel.Key.Dataset),
                $"Top-1 test accuracy versus sparsity, {Panel(panel.Key.Model, panel.Key.Dataset)}",
                "Line: mean over seeds; error bars: 95% Student t confidence interval of the mean (none for a single seed); " +
                "open circles: single seeds; black line: dense baseline, its interval shaded. Ablations in their criterion's colour, thinner lines: " +
                "shuffle squares, reinit diamonds, invert triangles." +
                (showWarmup ? " Pale lines with open circles: BN warm-up off." : "") +
                (cut.Count > 0 ? " A triangle at the top or bottom edge: the interval reaches beyond 100% or 0% and is drawn to the edge." : ""),
                1000, 560));
        }
        return charts;
    }

    /// <summary>1, 2, 5 × powers of ten from <paramref name="floor"/> to 1: readable log-axis ticks.</summary>
    static IEnumerable<double> LogTicks(double floor)
    {
        for (var decade = Math.Pow(10, Math.Floor(Math.Log10(floor))); decade < 1.5; decade *= 10)
            foreach (var m in new[] { 1.0, 2.0, 5.0 })
            {
                var tick = Math.Round(m * decade, 12);
                if (tick >= floor * 0.999 && tick <= 1.0001) yield return tick;
            }
    }

    /// <summary>
    /// Per-layer density as grouped bars, one chart per panel: a group per layer (network order),
    /// one bar per run coloured by criterion (paler without warm-up when both settings appear,
    /// hatched for ablations, in the legend too), bar height the density on a log scale from a floor below the
    /// smallest kept density. A collapsed layer (no weight left) gets a red × at the floor.
    /// </summary>
    public static IReadOnlyList<ReportChart> Layers(IReadOnlyList<LayerPanel> panels)
    {
        ArgumentNullException.ThrowIfNull(panels);
        var charts = new List<ReportChart>();
        foreach (var panel in panels.Where(p => p.Runs.Count > 0))
        {
            var densities = panel.Runs.SelectMany(r => r.Run.Prune!.Layers).Where(l => l.Total > 0 && l.Kept > 0)
                .Select(l => (double)l.Kept / l.Total).ToList();
            var minPositive = densities.Count > 0 ? densities.Min() : 0.1;
            var floor = Math.Min(0.1, Math.Pow(10, Math.Floor(Math.Log10(minPositive))));
            if (floor >= minPositive) floor /= 10;
            var logFloor = Math.Log10(floor);
            var bothWarmups = ModelZoo.HasBatchNorm(panel.Runs[0].Run.Config.Model) && panel.Runs.Select(r => r.Run.Config.WarmupBatches > 0).Distinct().Count() > 1;

            var plot = NewPlot();
            var n = panel.Runs.Count;
            var width = 0.8 / n;
            for (var j = 0; j < n; j++)
            {
                var (label, run) = panel.Runs[j];
                var colour = Colour(run.Config.Criterion);
                if (bothWarmups && run.Config.WarmupBatches == 0) colour = colour.WithOpacity(0.5);
                var hatch = AblationHatch(run.Config.Ablation);
                var hatchColour = Colors.White.WithOpacity(0.7);
                var bars = new List<Bar>();
                for (var i = 0; i < panel.Layers.Count; i++)
                {
                    var layer = run.Prune!.Layers.FirstOrDefault(l => l.Name == panel.Layers[i]);
                    if (layer is null) continue;
                    var x = i - 0.4 + width * (j + 0.5);
                    if (layer.Kept == 0)
                    {
                        var cross = plot.Add.Text("×", x, logFloor);
                        cross.LabelFontColor = Color.FromHex("#c00000");
                        cross.LabelFontSize = 18;
                        cross.LabelBold = true;
                        cross.LabelAlignment = Alignment.LowerCenter;
                        continue;
                    }
                    var bar = new Bar
                    {
                        Position = x, Value = Math.Log10((double)layer.Kept / layer.Total), ValueBase = logFloor, Size = width * 0.92,
                        FillColor = colour, LineWidth = 0,
                    };
                    if (hatch is not null)
                    {
                        bar.FillHatch = hatch;
                        bar.FillHatchColor = hatchColour;
                    }
                    bars.Add(bar);
                }
                plot.Add.Bars(bars);
                plot.Legend.ManualItems.Add(new LegendItem { LabelText = label, FillColor = colour, FillHatch = hatch, FillHatchColor = hatchColour });
            }

            var ticks = LogTicks(floor).ToArray();
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.Select(Math.Log10).ToArray(),
                ticks.Select(t => (t * 100).ToString("0.###", Inv) + "%").ToArray());
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
                Enumerable.Range(0, panel.Layers.Count).Select(i => (double)i).ToArray(), panel.Layers.ToArray());
            var longest = panel.Layers.Max(l => l.Length);
            var slotPixels = 900.0 / Math.Max(1, panel.Layers.Count);
            if (longest * 7.5 > slotPixels)
            {
                plot.Axes.Bottom.TickLabelStyle.Rotation = 40;
                plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
                plot.Axes.Bottom.MinimumSize = (float)Math.Min(260, longest * 6.5 + 30);
            }
            plot.Axes.SetLimits(-0.6, panel.Layers.Count - 0.4, logFloor - 0.02, 0.08); // the margin keeps the floor's tick label
            plot.Title($"Per-layer density after pruning · {panel.Title}");
            plot.XLabel("Layer (network order)");
            plot.YLabel("Density: kept / total weights (log scale)");
            plot.ShowLegend(Edge.Right);
            var chartWidth = Math.Clamp(260 + panel.Layers.Count * Math.Max(40, n * 12), 900, 2400);
            charts.Add(Render(plot, Stem("layers", panel.Runs[0].Run.Config.Model, panel.Runs[0].Run.Config.Dataset), $"Per-layer density after pruning, {panel.Title}",
                "One bar per run and layer; bar height: density (kept / total weights of the layer) on a log scale; red ×: collapsed layer (no weight left)." +
                (bothWarmups ? " Pale bars: BN warm-up off." : "") + (panel.Runs.Any(r => r.Run.Config.Ablation != ReportTables.NoAblation) ? " Hatched bars: ablations (stripes shuffle, checks reinit, dots invert)." : ""),
                chartWidth, 520));
        }
        return charts;
    }

    /// <summary>
    /// The default runs of the per-layer chart: per model and data set, the sparsity shared by the
    /// most (criterion, ablation, warm-up) settings, the highest on ties, and there one finished
    /// run (lowest seed) per setting. Only runs with per-layer prune records count.
    /// </summary>
    public static IReadOnlyList<RunRecord> DefaultLayerRuns(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var chosen = new List<RunRecord>();
        var candidates = runs.Where(r => r.Status == RunStatus.Finished && !ReportTables.IsDense(r.Config.Criterion) && r.Prune is { Layers.Count: > 0 });
        foreach (var panel in candidates.GroupBy(r => (r.Config.Model, r.Config.Dataset)).OrderBy(p => p.Key.Model, StringComparer.Ordinal).ThenBy(p => p.Key.Dataset, StringComparer.Ordinal))
        {
            var best = panel.GroupBy(r => r.Config.Sparsity)
                .OrderByDescending(s => s.Select(r => (r.Config.Criterion, r.Config.Ablation, r.Config.WarmupBatches)).Distinct().Count())
                .ThenByDescending(s => s.Key)
                .First();
            chosen.AddRange(best.GroupBy(r => (r.Config.Criterion, r.Config.Ablation, r.Config.WarmupBatches))
                .Select(s => s.OrderBy(r => r.Config.Seed).ThenBy(r => r.Key, StringComparer.Ordinal).First()));
        }
        return chosen;
    }

    /// <summary>
    /// Groups runs with per-layer prune records into panels (one per model and data set) and gives
    /// each run a label unique in its panel: the criterion (+ ablation, + warm-up), then the
    /// sparsity, the seed and finally the key when needed to tell runs apart.
    /// </summary>
    public static IReadOnlyList<LayerPanel> LayerPanels(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var panels = new List<LayerPanel>();
        var withLayers = runs.Where(r => r.Prune is { Layers.Count: > 0 }).ToList();
        foreach (var panel in withLayers.GroupBy(r => (r.Config.Model, r.Config.Dataset)))
        {
            var members = panel.OrderBy(r => CriterionColours.Rank(r.Config.Criterion)).ThenBy(r => r.Config.Criterion, StringComparer.Ordinal)
                .ThenBy(r => r.Config.WarmupBatches).ThenBy(r => ReportTables.AblationRank(r.Config.Ablation))
                .ThenBy(r => r.Config.Ablation, StringComparer.Ordinal).ThenBy(r => r.Config.Sparsity).ThenBy(r => r.Config.Seed).ToList();
            var multipleWarmups = members.Select(r => r.Config.WarmupBatches).Where(w => w > 0).Distinct().Count() > 1;
            var severalWarmups = members.Select(r => r.Config.WarmupBatches).Distinct().Count() > 1;
            Func<RunRecord, string>[] parts =
            [
                r => r.Config.Criterion + (r.Config.Ablation == ReportTables.NoAblation ? "" : $" ({r.Config.Ablation})")
                     + ReportTables.WarmupLabel(r.Config.Model, r.Config.WarmupBatches, severalWarmups, multipleWarmups),
                r => " " + Format.Sparsity(r.Config.Sparsity),
                r => " seed " + r.Config.Seed.ToString(Inv),
                r => " " + r.Key,
            ];
            var labels = members.Select(r => parts[0](r)).ToList();
            for (var level = 1; level < parts.Length && labels.Distinct().Count() < labels.Count; level++)
            {
                var duplicated = labels.GroupBy(l => l).Where(g => g.Count() > 1).Select(g => g.Key).ToHashSet();
                labels = labels.Select((l, i) => duplicated.Contains(l) ? l + parts[level](members[i]) : l).ToList();
            }
            var layers = members.SelectMany(r => r.Prune!.Layers.Select(l => l.Name)).Distinct().ToList();
            var sparsities = members.Select(r => r.Config.Sparsity).Distinct().ToList();
            var title = Panel(panel.Key.Model, panel.Key.Dataset) + (sparsities.Count == 1 ? $" · {Format.Sparsity(sparsities[0])} sparsity" : "");
            panels.Add(new LayerPanel(title, layers, members.Select((r, i) => new LabelledRun(labels[i], r)).ToList()));
        }
        return panels.OrderBy(p => p.Title, StringComparer.Ordinal).ToList();
    }
}
