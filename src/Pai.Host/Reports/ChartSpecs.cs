using System.Globalization;
using System.Text.Json.Nodes;
using Pai.Host.Runs;

namespace Pai.Host.Reports;

/// <summary>A run in a per-layer density chart, with the label that tells it apart from the others.</summary>
/// <param name="Label">E.g. "snip", "snip + warm-up", "snip 98% seed 1".</param>
/// <param name="Run">The run (has a prune record).</param>
public sealed record LabelledRun(string Label, RunRecord Run);

/// <summary>The runs of one model and data set whose per-layer densities are compared.</summary>
/// <param name="Title">E.g. "lenet5 · fashion-mnist · 98% sparsity".</param>
/// <param name="Layers">Layer names in network order (first appearance across the runs).</param>
/// <param name="Runs">The runs, labelled.</param>
public sealed record LayerPanel(string Title, IReadOnlyList<string> Layers, IReadOnlyList<LabelledRun> Runs);

/// <summary>
/// Vega-Lite specifications of the report's charts, built from data only (no rendering here):
/// accuracy versus sparsity, and per-layer density. The specs embed their data, so each is a
/// complete, portable chart description (written beside the SVG as *.vl.json).
/// </summary>
public static class ChartSpecs
{
    /// <summary>The Vega-Lite schema the specs follow.</summary>
    public const string Schema = "https://vega.github.io/schema/vega-lite/v6.json";

    /// <summary>Criteria in the design's order: each keeps its color in every report.</summary>
    public static readonly IReadOnlyList<string> KnownCriteria =
        [.. Registry.names];

    /// <summary>Sort rank of a criterion: its index in <see cref="KnownCriteria"/>, unknown ones after them.</summary>
    public static int CriterionRank(string criterion)
    {
        for (var i = 0; i < KnownCriteria.Count; i++)
            if (string.Equals(KnownCriteria[i], criterion, StringComparison.Ordinal)) return i;
        return KnownCriteria.Count;
    }

    static readonly string[] Palette =
    [
        "#9c755f", "#76b7b2", "#edc948", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#ff9da7", "#17becf",
        "#bcbd22", "#8c564b", "#e15759", "#1f3a93", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f", "#aec7e8",
    ];

    const string DenseColor = "#222222";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The color of a criterion, stable across reports for the known criteria.</summary>
    static Dictionary<string, string> Colors(IEnumerable<string> criteria)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        var next = KnownCriteria.Count;
        foreach (var c in OrderCriteria(criteria))
        {
            if (ReportTables.IsDense(c)) { result[c] = DenseColor; continue; }
            var rank = CriterionRank(c);
            result[c] = Palette[(rank < KnownCriteria.Count ? rank : next++) % Palette.Length];
        }
        return result;
    }

    /// <summary>Known criteria in the design's order, then others by name, dense last.</summary>
    static List<string> OrderCriteria(IEnumerable<string> criteria) =>
        criteria.Distinct(StringComparer.Ordinal)
            .OrderBy(c => ReportTables.IsDense(c) ? 1 : 0)
            .ThenBy(CriterionRank)
            .ThenBy(c => c, StringComparer.Ordinal)
            .ToList();

    static JsonArray Array(IEnumerable<JsonNode?> items) => new([.. items]);
    static JsonArray Strings(IEnumerable<string> items) => Array(items.Select(s => (JsonNode?)JsonValue.Create(s)));
    static JsonArray Numbers(IEnumerable<double> items) => Array(items.Select(s => (JsonNode?)JsonValue.Create(s)));

    static string WarmupLabel(int batches, bool showCounts) => batches == 0 ? "off" : showCounts ? $"on ({batches})" : "on";

    static JsonObject Config() => new()
    {
        ["font"] = "DejaVu Sans, Helvetica, Arial, sans-serif",
        ["title"] = new JsonObject { ["fontSize"] = 17, ["subtitleFontSize"] = 12, ["subtitleColor"] = "#555", ["anchor"] = "start", ["offset"] = 12 },
        ["axis"] = new JsonObject { ["labelFontSize"] = 12, ["titleFontSize"] = 13, ["titlePadding"] = 10, ["gridColor"] = "#e6e6e6" },
        ["legend"] = new JsonObject { ["labelFontSize"] = 12, ["titleFontSize"] = 12, ["symbolSize"] = 120, ["labelLimit"] = 260 },
        ["header"] = new JsonObject { ["labelFontSize"] = 14, ["labelFontWeight"] = "bold" },
        ["view"] = new JsonObject { ["stroke"] = "#cccccc" },
    };

    /// <summary>
    /// Accuracy versus sparsity: per criterion (color) and warm-up setting (dash, when both on and
    /// off exist) a line through the mean final top-1 across seeds, a shaded band for the spread
    /// (<paramref name="spread"/>), the single seeds as open circles, and the dense baseline as a
    /// dashed horizontal line with its own min–max band. The x axis is the density on a reversed log
    /// scale, labelled as sparsity at each configured sparsity (90%, 98%, 99.5% …), so high
    /// sparsities are spread out. One panel per model and data set. Null when no finished run has
    /// a final top-1.
    /// </summary>
    /// <remarks>
    /// Data rows carry <c>kind</c> ("pruned", "seed" or "dense"), <c>panel</c>, <c>criterion</c>,
    /// <c>warmup</c>, <c>sparsity</c>, <c>density</c>, and <c>mean</c>/<c>lo</c>/<c>hi</c>/<c>n</c>
    /// or <c>top1</c>.
    /// </remarks>
    public static JsonObject? Accuracy(IReadOnlyList<ResultGroup> groups, SpreadKind spread = SpreadKind.MinMax)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var withData = groups.Where(g => g.Seeds > 0).ToList();
        if (withData.Count == 0) return null;
        var pruned = withData.Where(g => !g.IsDense).ToList();
        var nonzeroWarmups = pruned.Select(g => g.WarmupBatches).Where(w => w > 0).Distinct().Count();
        var warmupLabels = pruned.Select(g => WarmupLabel(g.WarmupBatches, nonzeroWarmups > 1)).Distinct().ToList();
        var dashByWarmup = warmupLabels.Count > 1;
        var panels = withData.Select(g => Panel(g.Model, g.Dataset)).Distinct().ToList();

        var values = new JsonArray();
        foreach (var g in withData)
        {
            if (g.IsDense) continue; // the baseline is pooled per panel below
            var (lo, hi) = spread == SpreadKind.MinMax
                ? (g.MinTop1!.Value, g.MaxTop1!.Value)
                : (g.MeanTop1!.Value - (g.StdTop1 ?? 0), g.MeanTop1!.Value + (g.StdTop1 ?? 0));
            var panel = Panel(g.Model, g.Dataset);
            var density = 1 - g.Sparsity;
            values.Add(new JsonObject
            {
                ["kind"] = "pruned", ["panel"] = panel, ["criterion"] = g.Criterion,
                ["warmup"] = WarmupLabel(g.WarmupBatches, nonzeroWarmups > 1), ["sparsity"] = g.Sparsity, ["density"] = density,
                ["mean"] = g.MeanTop1, ["lo"] = lo, ["hi"] = hi, ["n"] = g.Seeds,
            });
            foreach (var r in g.Runs.Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null))
                values.Add(new JsonObject
                {
                    ["kind"] = "seed", ["panel"] = panel, ["criterion"] = g.Criterion,
                    ["warmup"] = WarmupLabel(g.WarmupBatches, nonzeroWarmups > 1), ["sparsity"] = g.Sparsity, ["density"] = density,
                    ["top1"] = r.FinalTop1, ["seed"] = (double)r.Config.Seed, ["key"] = r.Key,
                });
        }
        // One baseline per panel, pooled over every dense run of that model and data set.
        foreach (var panelGroups in withData.Where(g => g.IsDense).GroupBy(g => Panel(g.Model, g.Dataset)))
        {
            var top1 = panelGroups.SelectMany(g => g.Runs).Where(r => r.Status == RunStatus.Finished && r.FinalTop1 is not null)
                .Select(r => r.FinalTop1!.Value).ToList();
            var mean = top1.Average();
            var std = ReportTables.SampleStd(top1) ?? 0;
            var (lo, hi) = spread == SpreadKind.MinMax ? (top1.Min(), top1.Max()) : (mean - std, mean + std);
            values.Add(new JsonObject
            {
                ["kind"] = "dense", ["panel"] = panelGroups.Key, ["criterion"] = ReportTables.DenseCriterion,
                ["mean"] = mean, ["lo"] = lo, ["hi"] = hi, ["n"] = top1.Count,
                ["label"] = $"dense baseline {Format.Percent(mean)} (n={top1.Count})",
            });
        }

        var densities = pruned.Select(g => 1 - g.Sparsity).Distinct().OrderBy(d => d).ToList();
        if (densities.Count == 0) densities = [1.0];
        var colors = Colors(withData.Select(g => g.Criterion));
        var criteria = colors.Keys.ToList();

        JsonObject X() => new()
        {
            ["field"] = "density", ["type"] = "quantitative",
            ["scale"] = new JsonObject
            {
                ["type"] = "log", ["reverse"] = true,
                ["domain"] = Numbers([densities[0] / 1.35, densities[^1] * 1.35]),
            },
            ["axis"] = new JsonObject
            {
                ["title"] = "Sparsity (log scale of remaining weights)",
                ["values"] = Numbers(densities),
                ["labelExpr"] = "format(1 - datum.value, '.3~%')",
                ["labelOverlap"] = true, ["grid"] = true,
            },
        };
        JsonObject Y(string field) => new()
        {
            ["field"] = field, ["type"] = "quantitative",
            ["scale"] = new JsonObject { ["zero"] = false, ["nice"] = true },
            ["axis"] = new JsonObject { ["title"] = "Top-1 test accuracy", ["format"] = ".3~%" },
        };
        var color = new JsonObject
        {
            ["field"] = "criterion", ["type"] = "nominal",
            ["scale"] = new JsonObject { ["domain"] = Strings(criteria), ["range"] = Strings(criteria.Select(c => colors[c])) },
            // Line-shaped, opaque legend symbols: the band layer would otherwise make them pale.
            ["legend"] = new JsonObject
            {
                ["title"] = "Criterion", ["symbolType"] = "stroke", ["symbolStrokeWidth"] = 3, ["symbolOpacity"] = 1, ["symbolSize"] = 300,
            },
        };
        JsonObject Filter(string kind) => new() { ["filter"] = $"datum.kind === '{kind}'" };

        var band = new JsonObject
        {
            ["transform"] = Array([Filter("pruned")]),
            ["mark"] = new JsonObject { ["type"] = "area", ["opacity"] = 0.16 },
            ["encoding"] = new JsonObject
            {
                ["x"] = X(), ["y"] = Y("lo"), ["y2"] = new JsonObject { ["field"] = "hi" },
                ["color"] = color.DeepClone(), ["detail"] = new JsonObject { ["field"] = "warmup" },
            },
        };
        var lineEncoding = new JsonObject { ["x"] = X(), ["y"] = Y("mean"), ["color"] = color.DeepClone() };
        if (dashByWarmup)
            lineEncoding["strokeDash"] = new JsonObject
            {
                ["field"] = "warmup", ["type"] = "nominal",
                ["scale"] = new JsonObject
                {
                    ["domain"] = Strings(warmupLabels.OrderBy(w => w == "off" ? 0 : 1).ThenBy(w => w, StringComparer.Ordinal)),
                    ["range"] = Array(warmupLabels.Select((w, i) => (JsonNode?)(i == 0 ? Numbers([1, 0]) : Numbers([7 - i, 3])))),
                },
                ["legend"] = new JsonObject
                {
                    ["title"] = "BN warm-up", ["symbolType"] = "stroke", ["symbolStrokeWidth"] = 2.5, ["symbolOpacity"] = 1, ["symbolSize"] = 300,
                    // symbolStrokeColor is not applied to a strokeDash legend: set the stroke directly.
                    ["encode"] = new JsonObject
                    {
                        ["symbols"] = new JsonObject { ["update"] = new JsonObject { ["stroke"] = new JsonObject { ["value"] = "#333333" } } },
                    },
                },
            };
        else
            lineEncoding["detail"] = new JsonObject { ["field"] = "warmup" };
        var line = new JsonObject
        {
            ["transform"] = Array([Filter("pruned")]),
            ["mark"] = new JsonObject { ["type"] = "line", ["strokeWidth"] = 2.2, ["point"] = new JsonObject { ["filled"] = true, ["size"] = 55 } },
            ["encoding"] = lineEncoding,
        };
        var seeds = new JsonObject
        {
            ["transform"] = Array([Filter("seed")]),
            ["mark"] = new JsonObject { ["type"] = "point", ["filled"] = false, ["size"] = 26, ["opacity"] = 0.7, ["strokeWidth"] = 1 },
            ["encoding"] = new JsonObject { ["x"] = X(), ["y"] = Y("top1"), ["color"] = color.DeepClone() },
        };
        var denseBand = new JsonObject
        {
            ["transform"] = Array([Filter("dense")]),
            ["mark"] = new JsonObject { ["type"] = "rect", ["color"] = "#888888", ["opacity"] = 0.13 },
            ["encoding"] = new JsonObject { ["y"] = Y("lo"), ["y2"] = new JsonObject { ["field"] = "hi" } },
        };
        var denseRule = new JsonObject
        {
            ["transform"] = Array([Filter("dense")]),
            ["mark"] = new JsonObject { ["type"] = "rule", ["strokeDash"] = Numbers([5, 4]), ["strokeWidth"] = 1.6 },
            ["encoding"] = new JsonObject { ["y"] = Y("mean"), ["color"] = color.DeepClone() },
        };
        var denseText = new JsonObject
        {
            ["transform"] = Array([Filter("dense")]),
            ["mark"] = new JsonObject { ["type"] = "text", ["align"] = "left", ["baseline"] = "bottom", ["dx"] = 4, ["dy"] = -3, ["fontSize"] = 11, ["color"] = "#333333" },
            ["encoding"] = new JsonObject { ["y"] = Y("mean"), ["x"] = new JsonObject { ["value"] = 0 }, ["text"] = new JsonObject { ["field"] = "label" } },
        };

        var layers = Array([denseBand, denseRule, band, line, seeds, denseText]);
        var spreadText = spread == SpreadKind.MinMax ? "band: min–max across seeds" : "band: ± 1 std across seeds";
        var spec = new JsonObject
        {
            ["$schema"] = Schema,
            ["description"] = "Pai report: final top-1 accuracy versus sparsity, one line per criterion, spread across seeds, dense baseline.",
            ["title"] = new JsonObject
            {
                ["text"] = "Top-1 test accuracy versus sparsity",
                ["subtitle"] = Strings([$"line: mean over seeds · {spreadText}", "circles: single seeds · dashed: dense baseline"]),
            },
            ["background"] = "white",
            ["padding"] = 16,
            ["data"] = new JsonObject { ["values"] = values },
            ["config"] = Config(),
        };
        var view = new JsonObject { ["width"] = 600, ["height"] = 360, ["layer"] = layers };
        if (panels.Count == 1)
        {
            spec["title"]!["subtitle"]!.AsArray().Insert(0, panels[0]);
            foreach (var (name, value) in view.ToList()) { view.Remove(name); spec[name] = value; }
        }
        else
        {
            spec["facet"] = new JsonObject { ["field"] = "panel", ["type"] = "nominal", ["title"] = null, ["sort"] = Strings(panels) };
            spec["columns"] = 2;
            view["width"] = 460;
            view["height"] = 300;
            spec["spec"] = view;
            spec["resolve"] = new JsonObject { ["scale"] = new JsonObject { ["y"] = "independent" } };
        }
        return spec;
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

    static string Panel(string model, string dataset) => $"{model} · {dataset}";

    /// <summary>
    /// The default runs of the per-layer chart: per model and data set, the sparsity shared by the
    /// most (criterion, warm-up) settings, the highest on ties, and there one finished run (lowest
    /// seed) per setting. Only runs with per-layer prune records count.
    /// </summary>
    public static IReadOnlyList<RunRecord> DefaultLayerRuns(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var chosen = new List<RunRecord>();
        var candidates = runs.Where(r => r.Status == RunStatus.Finished && !ReportTables.IsDense(r.Config.Criterion) && r.Prune is { Layers.Count: > 0 });
        foreach (var panel in candidates.GroupBy(r => (r.Config.Model, r.Config.Dataset)).OrderBy(p => p.Key.Model, StringComparer.Ordinal).ThenBy(p => p.Key.Dataset, StringComparer.Ordinal))
        {
            var best = panel.GroupBy(r => r.Config.Sparsity)
                .OrderByDescending(s => s.Select(r => (r.Config.Criterion, r.Config.WarmupBatches)).Distinct().Count())
                .ThenByDescending(s => s.Key)
                .First();
            chosen.AddRange(best.GroupBy(r => (r.Config.Criterion, r.Config.WarmupBatches))
                .Select(s => s.OrderBy(r => r.Config.Seed).ThenBy(r => r.Key, StringComparer.Ordinal).First()));
        }
        return chosen;
    }

    /// <summary>
    /// Groups runs with per-layer prune records into panels (one per model and data set) and gives
    /// each run a label unique in its panel: the criterion (+ warm-up), then the sparsity, the seed
    /// and finally the key when needed to tell runs apart.
    /// </summary>
    public static IReadOnlyList<LayerPanel> LayerPanels(IReadOnlyList<RunRecord> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var panels = new List<LayerPanel>();
        var withLayers = runs.Where(r => r.Prune is { Layers.Count: > 0 }).ToList();
        foreach (var panel in withLayers.GroupBy(r => (r.Config.Model, r.Config.Dataset)))
        {
            var members = panel.OrderBy(r => CriterionRank(r.Config.Criterion)).ThenBy(r => r.Config.Criterion, StringComparer.Ordinal)
                .ThenBy(r => r.Config.WarmupBatches).ThenBy(r => r.Config.Sparsity).ThenBy(r => r.Config.Seed).ToList();
            var multipleWarmups = members.Select(r => r.Config.WarmupBatches).Where(w => w > 0).Distinct().Count() > 1;
            Func<RunRecord, string>[] parts =
            [
                r => r.Config.Criterion + (r.Config.WarmupBatches == 0 ? "" : multipleWarmups ? $" + warm-up ({r.Config.WarmupBatches})" : " + warm-up"),
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

    /// <summary>
    /// Per-layer density as grouped bars: layer on x (network order), density on a log y axis, one
    /// bar per run, colored by criterion (lighter without warm-up when both settings appear). A
    /// collapsed layer (no weight left) gets a red × at the bottom. One row per panel. Null when no
    /// run has per-layer data.
    /// </summary>
    public static JsonObject? Layers(IReadOnlyList<LayerPanel> panels)
    {
        ArgumentNullException.ThrowIfNull(panels);
        if (panels.Count == 0 || panels.All(p => p.Runs.Count == 0)) return null;
        var all = panels.SelectMany(p => p.Runs).ToList();
        var densities = all.SelectMany(r => r.Run.Prune!.Layers).Where(l => l.Total > 0 && l.Kept > 0)
            .Select(l => (double)l.Kept / l.Total).ToList();
        var minPositive = densities.Count > 0 ? densities.Min() : 0.1;
        var floor = Math.Min(0.1, Math.Pow(10, Math.Floor(Math.Log10(minPositive))));
        if (floor >= minPositive) floor /= 10;
        var bothWarmups = all.Select(r => r.Run.Config.WarmupBatches > 0).Distinct().Count() > 1;

        var values = new JsonArray();
        foreach (var panel in panels)
            foreach (var (label, run) in panel.Runs)
                foreach (var layer in run.Prune!.Layers)
                {
                    var density = layer.Total > 0 ? (double)layer.Kept / layer.Total : 0;
                    values.Add(new JsonObject
                    {
                        ["panel"] = panel.Title, ["layer"] = layer.Name, ["series"] = label,
                        ["criterion"] = run.Config.Criterion, ["warmup"] = run.Config.WarmupBatches > 0 ? "on" : "off",
                        ["kept"] = layer.Kept, ["total"] = layer.Total, ["density"] = density,
                        ["plot_density"] = Math.Max(density, floor), ["collapsed"] = layer.Kept == 0,
                        ["key"] = run.Key,
                    });
                }

        var colors = Colors(all.Select(r => r.Run.Config.Criterion));
        var criteria = colors.Keys.ToList();
        var layerOrder = panels.SelectMany(p => p.Layers).Distinct().ToList();
        var seriesOrder = panels.SelectMany(p => p.Runs.Select(r => r.Label)).Distinct().ToList();
        var maxSeries = panels.Max(p => p.Runs.Count);

        // With xOffset the width step is one bar; a layer's group is as many steps as it has runs.
        // Bars narrow (down to 4 px) so that a deep network still fits about 1,100 px.
        var bars = panels.Max(p => p.Layers.Count * Math.Max(1, p.Runs.Count));
        var step = Math.Clamp(1100 / bars, 4, 22);
        var labelAngle = layerOrder.Max(l => l.Length) * 6.5 <= step * maxSeries - 4 ? 0 : -35;
        JsonObject X() => new()
        {
            ["field"] = "layer", ["type"] = "nominal", ["sort"] = Strings(layerOrder),
            ["axis"] = new JsonObject { ["title"] = "Layer (network order)", ["labelAngle"] = labelAngle, ["labelLimit"] = 320 },
        };
        JsonObject XOffset() => new() { ["field"] = "series", ["type"] = "nominal", ["sort"] = Strings(seriesOrder) };
        JsonObject Y() => new()
        {
            ["field"] = "plot_density", ["type"] = "quantitative",
            ["scale"] = new JsonObject { ["type"] = "log", ["domain"] = Numbers([floor, 1]) },
            ["axis"] = new JsonObject
            {
                ["title"] = "Density (log scale)", ["format"] = "~%",
                ["values"] = Numbers(LogTicks(floor)), ["gridOpacity"] = 0.8,
            },
        };
        var barEncoding = new JsonObject
        {
            ["x"] = X(), ["xOffset"] = XOffset(), ["y"] = Y(), ["y2"] = new JsonObject { ["datum"] = floor },
            ["color"] = new JsonObject
            {
                ["field"] = "criterion", ["type"] = "nominal",
                ["scale"] = new JsonObject { ["domain"] = Strings(criteria), ["range"] = Strings(criteria.Select(c => colors[c])) },
                ["legend"] = new JsonObject { ["title"] = "Criterion" },
            },
        };
        if (bothWarmups)
            barEncoding["opacity"] = new JsonObject
            {
                ["field"] = "warmup", ["type"] = "nominal",
                ["scale"] = new JsonObject { ["domain"] = Strings(["off", "on"]), ["range"] = Numbers([0.45, 1]) },
                ["legend"] = new JsonObject { ["title"] = "BN warm-up" },
            };
        var barLayer = new JsonObject
        {
            ["mark"] = new JsonObject { ["type"] = "bar", ["stroke"] = "#ffffff", ["strokeWidth"] = step >= 8 ? 0.5 : 0 },
            ["encoding"] = barEncoding,
        };
        var collapsed = new JsonObject
        {
            ["transform"] = Array([new JsonObject { ["filter"] = "datum.collapsed" }]),
            ["mark"] = new JsonObject { ["type"] = "text", ["text"] = "×", ["color"] = "#c00000", ["fontSize"] = 15, ["fontWeight"] = "bold", ["baseline"] = "bottom", ["dy"] = -1 },
            ["encoding"] = new JsonObject { ["x"] = X(), ["xOffset"] = XOffset(), ["y"] = Y() },
        };
        var view = new JsonObject
        {
            ["width"] = new JsonObject { ["step"] = step },
            ["height"] = 300,
            ["layer"] = Array([barLayer, collapsed]),
        };
        var spec = new JsonObject
        {
            ["$schema"] = Schema,
            ["description"] = "Pai report: density of every prunable layer for the chosen runs.",
            ["title"] = new JsonObject
            {
                ["text"] = "Per-layer density after pruning",
                ["subtitle"] = Strings(["density = kept / total weights of the layer · one bar per run", "red ×: collapsed layer (no weight left)"]),
            },
            ["background"] = "white",
            ["padding"] = 16,
            ["data"] = new JsonObject { ["values"] = values },
            ["config"] = Config(),
        };
        if (panels.Count == 1)
        {
            spec["title"]!["subtitle"]!.AsArray().Insert(0, panels[0].Title);
            foreach (var (name, value) in view.ToList()) { view.Remove(name); spec[name] = value; }
        }
        else
        {
            spec["facet"] = new JsonObject
            {
                ["row"] = new JsonObject
                {
                    ["field"] = "panel", ["type"] = "nominal", ["title"] = null, ["sort"] = Strings(panels.Select(p => p.Title)),
                    ["header"] = new JsonObject { ["labelAngle"] = 0, ["labelOrient"] = "top", ["labelAnchor"] = "start", ["labelAlign"] = "left" },
                },
            };
            spec["spec"] = view;
            // Each row keeps its own axes: a shared y axis is laid out apart from the plots.
            spec["resolve"] = new JsonObject
            {
                ["scale"] = new JsonObject { ["x"] = "independent" },
                ["axis"] = new JsonObject { ["y"] = "independent" },
            };
        }
        return spec;
    }
}
