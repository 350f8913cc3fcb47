using System.Globalization;
using System.Text;
using System.Xml.Linq;
using Pai.Host.Reports;

namespace Pai.Host.Tests;

public class ReportTests
{
    static readonly string[] Layers = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"];
    static readonly long[] LayerSizes = [500, 25_000, 400_000, 5_000];
    /// <summary>Dense multiply-adds per image of each layer (convolutions run at every output position).</summary>
    static readonly long[] LayerFlops = [500 * 576, 25_000 * 64, 400_000, 5_000];
    /// <summary>The model's dense multiply-adds: the prunable layers and a 10,000 multiply-add layer that is not prunable.</summary>
    static readonly long DenseFlops = LayerFlops.Sum() + 10_000;

    /// <summary>A constructed run record: per-layer densities spread around the target so charts have something to show.</summary>
    static RunRecord Run(string criterion, double sparsity, ulong seed, double? top1, int warmup = 0,
        RunStatus status = RunStatus.Finished, string model = "lenet5", string dataset = "fashion-mnist",
        string? error = null, int epochs = 10, bool collapseFc2 = false, string ablation = "none")
    {
        var config = new RunConfig
        {
            Model = model, Dataset = dataset, Criterion = criterion, Sparsity = sparsity,
            WarmupBatches = warmup, Seed = seed, Epochs = epochs, Ablation = ablation,
        };
        PruneSummary? prune = null;
        if (criterion != "dense" && status != RunStatus.Pending)
        {
            var density = 1 - sparsity;
            var factors = new[] { 8.0, 1.5, 0.8, 3.0 };
            var layers = Layers.Select((name, i) =>
            {
                var kept = (long)Math.Round(Math.Min(1, density * factors[i] * (1 + 0.1 * criterion.Length % 3)) * LayerSizes[i]);
                if (collapseFc2 && i == 3) kept = 0;
                return new LayerDensityRecord(name, kept, LayerSizes[i], LayerFlops[i]);
            }).ToList();
            prune = new PruneSummary(criterion, layers, collapseFc2 ? ["fc2.weight"] : [], 1,
                layers.Sum(l => (double)l.Kept) / layers.Sum(l => (double)l.Total), DenseFlops: DenseFlops);
        }
        return new RunRecord
        {
            Key = config.Key,
            Config = config,
            Status = status,
            FinalTop1 = top1,
            FinalTop5 = top1 is null ? null : Math.Min(1, top1.Value + 0.05),
            FinalLoss = top1 is null ? null : 1 - top1.Value,
            Prune = prune,
            PhaseSeconds = new Dictionary<string, double> { ["scoring"] = 1.5, ["training"] = 42.25 },
            Error = error,
            PaiVersion = "0.1.0",
            LibtorchVersion = "1.13.1",
        };
    }

    /// <summary>Three criteria at three sparsities, three seeds, SNIP also with warm-up, a dense baseline, one failure.</summary>
    static List<RunRecord> Sweep()
    {
        var runs = new List<RunRecord>();
        for (ulong seed = 0; seed < 3; seed++)
            runs.Add(Run("dense", 0, seed, 0.915 + 0.002 * seed));
        var criteria = new (string Name, double Drop)[] { ("snip", 0.02), ("synflow", 0.012), ("hutch_obd", 0.03) };
        foreach (var (name, drop) in criteria)
            foreach (var sparsity in new[] { 0.9, 0.98, 0.995 })
                for (ulong seed = 0; seed < 3; seed++)
                {
                    var level = -Math.Log10(1 - sparsity); // 1, 1.7, 2.3
                    var top1 = 0.915 - drop * level * level + 0.004 * ((int)seed - 1);
                    runs.Add(Run(name, sparsity, seed, top1, collapseFc2: name == "hutch_obd" && sparsity == 0.995));
                    if (name == "snip")
                        runs.Add(Run(name, sparsity, seed, top1 + 0.01 * level, warmup: 100));
                }
        runs.Add(Run("synflow", 0.98, 7, null, status: RunStatus.Failed, error: "out of memory, \"CUDA\"\nstack trace"));
        runs.Add(Run("synflow", 0.98, 8, null, status: RunStatus.Running));
        return runs;
    }

    [Fact]
    public void Aggregate_computes_mean_sample_std_min_max_and_counts_across_seeds()
    {
        var runs = new List<RunRecord>
        {
            Run("snip", 0.9, 0, 0.90), Run("snip", 0.9, 1, 0.92), Run("snip", 0.9, 2, 0.97),
            Run("snip", 0.9, 3, null, status: RunStatus.Failed, error: "boom"),
            Run("snip", 0.9, 4, null, status: RunStatus.Running),
            Run("snip", 0.9, 5, null, status: RunStatus.Pending),
            Run("snip", 0.9, 0, 0.80, warmup: 10),
            Run("snip", 0.98, 0, 0.85),
        };
        var groups = ReportTables.Aggregate(runs);
        Assert.Equal(3, groups.Count);

        var g = groups.Single(x => x.Sparsity == 0.9 && x.WarmupBatches == 0);
        Assert.Equal(3, g.Seeds);
        Assert.Equal(1, g.Failed);
        Assert.Equal(2, g.Unfinished);
        Assert.Equal(6, g.Runs.Count);
        Assert.Equal(0.93, g.MeanTop1!.Value, 12);
        // Sample std: deviations -0.03, -0.01, +0.04 → sqrt(0.0026 / 2).
        Assert.Equal(Math.Sqrt(0.0013), g.StdTop1!.Value, 12);
        // 95% t-interval: t(0.975, 2) = 4.302652729749464 (scipy.stats.t.ppf), times s / √3.
        Assert.Equal(4.302652729749464 * Math.Sqrt(0.0013) / Math.Sqrt(3), g.Ci95Top1!.Value, 10);
        Assert.Equal(0.90, g.MinTop1);
        Assert.Equal(0.97, g.MaxTop1);
        Assert.Equal((0.95 + 0.97 + 1.0) / 3, g.MeanTop5!.Value, 12); // top-5 = min(1, top-1 + 0.05)

        var warm = groups.Single(x => x.WarmupBatches == 10);
        Assert.Equal(1, warm.Seeds);
        Assert.Null(warm.StdTop1); // one seed: no spread, not zero
        Assert.Null(warm.Ci95Top1);
        Assert.Equal(0.80, warm.MeanTop1);
    }

    [Fact]
    public void Results_table_reports_delta_to_dense_baseline_and_flags_mixed_settings()
    {
        var runs = new List<RunRecord>
        {
            Run("dense", 0, 0, 0.90), Run("dense", 0, 1, 0.92),
            Run("snip", 0.98, 0, 0.88), Run("snip", 0.98, 1, 0.89, epochs: 20),
            Run("grasp", 0.98, 0, 0.87, collapseFc2: true),
        };
        var groups = ReportTables.Aggregate(runs);
        Assert.Equal(["dense", "snip", "grasp"], groups.Select(g => g.Criterion)); // the design's order, not by name
        Assert.Equal(["epochs"], groups.Single(g => g.Criterion == "snip").MixedSettings);
        Assert.Empty(groups.Single(g => g.Criterion == "dense").MixedSettings);

        var table = ReportTables.ResultsTable(groups);
        var headers = table.Columns.Select(c => c.Header).ToList();
        int Col(string header) => headers.IndexOf(header) is var i and >= 0 ? i : throw new Xunit.Sdk.XunitException($"no column {header}");
        Assert.DoesNotContain("Ablation", headers); // no ablation runs: no ablation columns
        var snip = table.Rows.Single(r => r[2] == "snip");
        Assert.Equal("-2.50", snip[Col("Δ dense (pp)")]); // 0.885 − 0.91
        Assert.Equal("98%", snip[Col("Sparsity")]);
        // 95% CI of {0.88, 0.89}: t(0.975, 1) = 12.706204736174698 times 0.00707107 / √2 = 0.0635.
        Assert.Equal("88.50 ± 6.35", snip[Col("Top-1 % mean ± 95% CI")]);
        Assert.Equal("88.00–89.00", snip[Col("Top-1 % min–max")]);
        var grasp = table.Rows.Single(r => r[2] == "grasp");
        Assert.Equal("1/1", grasp[Col("Collapsed")]);
        Assert.Equal("87.00 (1 seed)", grasp[Col("Top-1 % mean ± 95% CI")]);
        // snip is the best at 98%; grasp has one seed, so its difference has no test.
        Assert.Equal("best", snip[Col("vs best (pp)")]);
        Assert.Equal("-1.50 (1 seed)", grasp[Col("vs best (pp)")]);
        Assert.Equal("–", snip[Col("vs random (pp)")]); // no random runs
        // FLOPs: grasp keeps fc2 at 0, the other layers at density × factor; check against the per-layer sum.
        var graspRun = runs.Single(r => r.Config.Criterion == "grasp");
        var remaining = DenseFlops - graspRun.Prune!.Layers.Sum(l => l.Flops!.Value * (1 - (double)l.Kept / l.Total));
        Assert.Equal(remaining / DenseFlops, graspRun.Prune.RemainingFlopsFraction!.Value, 12);
        Assert.Equal(Format2(remaining / DenseFlops), grasp[Col("FLOPs %")]);
        Assert.Equal("100.00", table.Rows.Single(r => r[2] == "dense")[Col("FLOPs %")]);

        var markdown = ReportTables.Markdown(table);
        Assert.Contains("| snip |", markdown);
        Assert.Contains("---:", markdown);
    }

    /// <summary>Minimal RFC 4180 reader, to check that what we write reads back field by field.</summary>
    static List<List<string>> ParseCsv(string text)
    {
        var rows = new List<List<string>>();
        var row = new List<string>();
        var field = new StringBuilder();
        var quoted = false;
        for (var i = 0; i < text.Length; i++)
        {
            var ch = text[i];
            if (quoted)
            {
                if (ch == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i++; }
                else if (ch == '"') quoted = false;
                else field.Append(ch);
            }
            else if (ch == '"') quoted = true;
            else if (ch == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (ch == '\r' && i + 1 < text.Length && text[i + 1] == '\n')
            {
                row.Add(field.ToString()); field.Clear(); rows.Add(row); row = []; i++;
            }
            else field.Append(ch);
        }
        Assert.False(quoted, "unterminated quoted field");
        Assert.Equal(0, field.Length + row.Count); // every row ends with CRLF
        return rows;
    }

    [Fact]
    public void The_warm_up_column_says_no_BN_for_models_without_batch_norm_and_the_setting_otherwise()
    {
        var runs = new List<RunRecord>
        {
            Run("snip", 0.9, 0, 0.80, warmup: 100), // lenet5: no batch norm, warm-up did nothing
            Run("snip", 0.9, 0, 0.70, warmup: 100, model: "resnet20", dataset: "cifar10"),
            Run("snip", 0.9, 0, 0.60, warmup: 0, model: "resnet20", dataset: "cifar10"),
        };
        var table = ReportTables.ResultsTable(ReportTables.Aggregate(runs));
        var warmup = table.Columns.Select(c => c.Header).ToList().IndexOf("Warm-up");
        Assert.Equal(["– (no BN)", "on (100)", "off"], table.Rows.OrderBy(r => r[0] == "lenet5" ? 0 : 1).ThenBy(r => r[warmup] == "off" ? 1 : 0).Select(r => r[warmup]));
    }

    [Fact]
    public void Remaining_flops_scale_each_pruned_layer_by_its_density_and_keep_other_layers_dense()
    {
        var prune = new PruneSummary("snip", [new LayerDensityRecord("conv.weight", 10, 100), new LayerDensityRecord("fc.weight", 50, 100)], [], 1, 0.3);
        Assert.Null(prune.RemainingFlopsFraction); // not recorded
        // conv: 1,000 multiply-adds; fc applied twice, 200 each; a dense 600 multiply-add layer that is not prunable.
        var recorded = prune.WithFlops([new("conv.weight", 1_000), new("fc.weight", 200), new("head.weight", 600), new("fc.weight", 200)]);
        Assert.Equal([1_000L, 400L], recorded.Layers.Select(l => l.Flops!.Value));
        Assert.Equal(2_000L, recorded.DenseFlops);
        Assert.Equal((1_000 * 0.1 + 400 * 0.5 + 600) / 2_000, recorded.RemainingFlopsFraction!.Value, 14);
        // A prunable layer the counter did not see: unknown, not guessed.
        var partial = (prune with { Layers = [.. prune.Layers, new LayerDensityRecord("attn.weight", 1, 4)] }).WithFlops([new("conv.weight", 1_000), new("fc.weight", 200)]);
        Assert.Null(partial.RemainingFlopsFraction);
    }

    [Fact]
    public void Csv_has_one_row_per_run_and_quotes_commas_quotes_and_line_breaks()
    {
        var runs = Sweep();
        var rows = ParseCsv(ReportTables.Csv(runs));
        var header = rows[0];
        Assert.Equal(runs.Count + 1, rows.Count);
        Assert.All(rows, r => Assert.Equal(header.Count, r.Count));
        Assert.Equal(runs.Select(r => r.Key), rows.Skip(1).Select(r => r[header.IndexOf("key")]));

        var failed = rows.Single(r => r[header.IndexOf("status")] == "failed");
        Assert.Equal("out of memory, \"CUDA\"\nstack trace", failed[header.IndexOf("error")]);
        Assert.Equal("", failed[header.IndexOf("final_top1")]);

        var collapsed = rows.First(r => r[header.IndexOf("collapsed_count")] == "1");
        Assert.Equal("fc2.weight", collapsed[header.IndexOf("collapsed_layers")]);
        Assert.Equal(["scoring_s", "training_s"], header.Where(h => h.EndsWith("_s")));
        Assert.Equal("none", rows[1][header.IndexOf("ablation")]);
        Assert.Equal(ReportTables.RemainingFlops(runs[^3])!.Value, double.Parse(rows[^3][header.IndexOf("flops")], CultureInfo.InvariantCulture));
        Assert.Equal("42.25", rows[1][header.IndexOf("training_s")]);
        var first = runs[0];
        Assert.Equal(first.FinalTop1!.Value, double.Parse(rows[1][header.IndexOf("final_top1")], CultureInfo.InvariantCulture));

        Assert.Equal("plain", ReportTables.CsvField("plain"));
        Assert.Equal("\"a,b\"", ReportTables.CsvField("a,b"));
        Assert.Equal("\"say \"\"hi\"\"\"", ReportTables.CsvField("say \"hi\""));
        Assert.Equal("\" padded\"", ReportTables.CsvField(" padded"));
    }

    static string Format2(double fraction) => (fraction * 100).ToString("F2", CultureInfo.InvariantCulture);

    /// <summary>The text of an SVG document's text elements.</summary>
    static List<string> SvgTexts(string svg) =>
        XDocument.Parse(svg).Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value.Trim()).ToList();

    [Fact]
    public void Accuracy_chart_has_every_criterion_sparsity_labels_dense_baseline_and_fixed_colours()
    {
        var groups = ReportTables.Aggregate(Sweep());
        var chart = Assert.Single(ReportCharts.Accuracy(groups));
        Assert.Equal("accuracy-lenet5-fashion-mnist", chart.FileStem);
        var svg = XDocument.Parse(chart.Svg);
        Assert.Equal(XName.Get("svg", "http://www.w3.org/2000/svg"), svg.Root!.Name);
        var texts = SvgTexts(chart.Svg);
        foreach (var label in new[] { "snip", "snip + warm-up", "synflow", "hutch_obd", "90%", "98%", "99.5%" })
            Assert.Contains(label, texts);
        Assert.Contains(texts, t => t.StartsWith("dense 91.70% ± ", StringComparison.Ordinal) && t.EndsWith("(n=3)", StringComparison.Ordinal));
        Assert.Contains(texts, t => t.StartsWith("Sparsity", StringComparison.Ordinal));
        // Each criterion is drawn in its own fixed colour, read from the registry's order.
        foreach (var criterion in new[] { "snip", "synflow", "hutch_obd" })
            Assert.Contains(CriterionColours.CriterionColour(criterion).TrimStart('#'), chart.Svg, StringComparison.OrdinalIgnoreCase);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], chart.Png.Take(4));

        Assert.Empty(ReportCharts.Accuracy(ReportTables.Aggregate([Run("snip", 0.9, 0, null, status: RunStatus.Failed)])));
        // Two models: one chart each.
        var two = ReportCharts.Accuracy(ReportTables.Aggregate([Run("snip", 0.9, 0, 0.8), Run("snip", 0.9, 0, 0.7, model: "lenet300")]));
        Assert.Equal(["accuracy-lenet300-fashion-mnist", "accuracy-lenet5-fashion-mnist"], two.Select(c => c.FileStem).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Criterion_colours_follow_the_registry_order_and_stay_fixed()
    {
        var known = CriterionColours.KnownCriteria;
        Assert.Equal(Pai.Registry.names, known);
        Assert.Equal(known.Count, known.Select(CriterionColours.CriterionColour).Distinct().Count()); // one colour each
        Assert.Equal(0, CriterionColours.Rank("random"));
        Assert.True(CriterionColours.Rank("snip") < CriterionColours.Rank("hts"));
        Assert.Equal(known.Count - 1, CriterionColours.Rank("autos"));
        Assert.Equal(known.Count, CriterionColours.Rank("abs(theta) + fisher"));
        // A user formula keeps one colour, none of the registry's.
        var formula = CriterionColours.CriterionColour("abs(theta) + fisher");
        Assert.Equal(formula, CriterionColours.CriterionColour("abs(theta) + fisher"));
        Assert.DoesNotContain(formula, known.Select(CriterionColours.CriterionColour));
        Assert.Equal(CriterionColours.DenseColour, CriterionColours.CriterionColour("dense"));
    }

    [Fact]
    public void Default_layer_runs_take_the_most_shared_sparsity_and_one_seed_per_setting()
    {
        var runs = Sweep();
        runs.Add(Run("grasp", 0.9, 0, 0.8)); // 0.9 now has 5 settings, more than 0.995's 4
        var chosen = ReportCharts.DefaultLayerRuns(runs);
        Assert.All(chosen, r => Assert.Equal(0.9, r.Config.Sparsity));
        Assert.All(chosen, r => Assert.Equal(0UL, r.Config.Seed));
        Assert.Equal(5, chosen.Count);

        var panel = Assert.Single(ReportCharts.LayerPanels(chosen));
        Assert.Equal("lenet5 · fashion-mnist · 90% sparsity", panel.Title);
        Assert.Equal(Layers, panel.Layers);
        Assert.Contains(panel.Runs, r => r.Label == "snip + warm-up");
        Assert.Equal(panel.Runs.Count, panel.Runs.Select(r => r.Label).Distinct().Count());

        // Without grasp, 0.9, 0.98 and 0.995 tie at four settings: the highest sparsity wins.
        var tied = ReportCharts.DefaultLayerRuns(Sweep());
        Assert.All(tied, r => Assert.Equal(0.995, r.Config.Sparsity));
        var table = ReportTables.LayerTable(Assert.Single(ReportCharts.LayerPanels(tied)));
        var hutch = table.Columns.Select(c => c.Header).ToList().IndexOf("hutch_obd");
        Assert.Equal("0% (collapsed)", table.Rows.Single(r => r[0] == "fc2.weight")[hutch]);

        // Two seeds of one criterion get labels that tell them apart.
        var twoSeeds = ReportCharts.LayerPanels([Run("snip", 0.9, 0, 0.9), Run("snip", 0.9, 1, 0.9)]).Single();
        Assert.Equal(["snip 90% seed 0", "snip 90% seed 1"], twoSeeds.Runs.Select(r => r.Label));

        var chart = Assert.Single(ReportCharts.Layers(ReportCharts.LayerPanels(chosen)));
        var texts = SvgTexts(chart.Svg);
        foreach (var label in Layers.Concat(["snip", "snip + warm-up", "synflow", "hutch_obd", "grasp", "10%", "20%", "100%"]))
            Assert.True(texts.Contains(label), $"'{label}' is not among the chart's texts: {string.Join(" | ", texts)}");
        // The collapsed layer of hutch_obd at 99.5% gets a red ×.
        var collapsed = Assert.Single(ReportCharts.Layers(ReportCharts.LayerPanels(tied)));
        Assert.Contains("×", SvgTexts(collapsed.Svg));
        Assert.DoesNotContain("×", texts);
    }

    [Fact]
    public void Reports_list_curvature_estimates_with_their_achieved_error_only_when_runs_have_them()
    {
        using var dir = new TempDirectory();
        var plain = ReportWriter.Write(Sweep(), dir.Path, new ReportOptions { RenderCharts = false });
        Assert.DoesNotContain("Curvature estimates", File.ReadAllText(plain.Markdown));

        var run = Run("hutch_obd", 0.9, 0, 0.8);
        var curvature = new CurvatureRecord("hutchinson T=200 scope=layer budget=1200", 1200, 0,
            [new LayerCurvatureRecord("fc1.weight", "hutchinson", 0.37, 3), new LayerCurvatureRecord("fc2.weight", "closed-form", 0, 0),
             new LayerCurvatureRecord("conv1.weight", "hutchinson", null, 3)]);
        var files = ReportWriter.Write([run with { Prune = run.Prune! with { Curvature = [curvature] } }], dir.Path, new ReportOptions { RenderCharts = false });
        var markdown = File.ReadAllText(files.Markdown);
        Assert.Contains("Curvature estimates", markdown);
        Assert.Contains("hutchinson T=200 scope=layer budget=1200", markdown);
        Assert.Contains("0.37", markdown);
        Assert.Contains("∞", markdown);
        Assert.Contains("closed-form", File.ReadAllText(files.Html));
    }

    [Fact]
    public void Write_without_charts_writes_tables_and_html_and_removes_stale_charts()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("accuracy-lenet5-fashion-mnist.svg"), "<svg>stale</svg>");
        File.WriteAllText(dir.File("accuracy.vl.json"), "{}");
        var runs = Sweep();
        var files = ReportWriter.Write(runs, dir.Path, new ReportOptions { RenderCharts = false, Title = "Sweep | test" });

        Assert.True(File.Exists(files.Markdown) && File.Exists(files.Csv) && File.Exists(files.Html));
        Assert.Empty(files.Charts);
        Assert.False(File.Exists(dir.File("accuracy-lenet5-fashion-mnist.svg")), "a stale chart of an earlier report must not survive");
        Assert.False(File.Exists(dir.File("accuracy.vl.json")), "a Vega-Lite spec of an earlier report must not survive");
        Assert.NotNull(files.ChartProblem);

        var csv = File.ReadAllText(files.Csv);
        var markdown = File.ReadAllText(files.Markdown);
        var html = File.ReadAllText(files.Html);
        foreach (var run in runs) Assert.Contains(run.Key, csv);
        foreach (var criterion in runs.Select(r => r.Config.Criterion).Distinct())
        {
            Assert.Contains($"| {criterion} |", markdown);
            Assert.Contains($"<td>{criterion}</td>", html);
        }
        Assert.Contains("# Sweep \\| test", markdown);
        Assert.Contains("were not drawn", markdown);
        Assert.Contains("were not drawn", html);
        Assert.Contains("## Failed runs", markdown);
        Assert.Contains("out of memory", markdown);
        Assert.Contains("fc2.weight", markdown);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void No_finished_runs_gives_a_report_without_charts()
    {
        using var dir = new TempDirectory();
        var files = ReportWriter.Write([], dir.Path, new ReportOptions { RequireCharts = true });
        Assert.Empty(files.Charts);
        Assert.Null(files.ChartProblem);
        Assert.Contains("No runs.", File.ReadAllText(files.Markdown));
        Assert.Single(File.ReadAllLines(files.Csv)); // the header only

        var pendingOnly = ReportWriter.Write([Run("snip", 0.9, 0, null, status: RunStatus.Pending)], dir.Path, new ReportOptions { RequireCharts = true });
        Assert.Empty(pendingOnly.Charts);
        Assert.Contains("| snip |", File.ReadAllText(pendingOnly.Markdown));
        Assert.Contains("Nothing to chart", File.ReadAllText(pendingOnly.Html));
    }

    [Fact]
    public void Unknown_layer_run_key_is_an_error_that_names_it()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<ArgumentException>(() =>
            ReportWriter.Write(Sweep(), dir.Path, new ReportOptions { RenderCharts = false, LayerRunKeys = ["0123456789abcdef"] }));
        Assert.Contains("0123456789abcdef", e.Message);
        var dense = Sweep()[0].Key;
        Assert.Throws<ArgumentException>(() =>
            ReportWriter.Write(Sweep(), dir.Path, new ReportOptions { RenderCharts = false, LayerRunKeys = [dense] }));
    }

    [Fact]
    public void Charts_are_written_as_svg_and_png_and_inlined_in_a_self_contained_html_page()
    {
        using var dir = new TempDirectory();
        var files = ReportWriter.Write(Sweep(), dir.Path, new ReportOptions { RequireCharts = true });
        Assert.Null(files.ChartProblem);
        Assert.Equal(["accuracy-lenet5-fashion-mnist.svg", "accuracy-lenet5-fashion-mnist.png", "layers-lenet5-fashion-mnist.svg",
            "layers-lenet5-fashion-mnist.png"], files.Charts.Select(Path.GetFileName));
        foreach (var svg in files.Charts.Where(f => f.EndsWith(".svg", StringComparison.Ordinal))) XDocument.Load(svg);
        foreach (var png in files.Charts.Where(f => f.EndsWith(".png", StringComparison.Ordinal)))
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png).Take(4));

        var html = File.ReadAllText(files.Html);
        Assert.Equal(2, html.Split("src=\"data:image/svg+xml;base64,").Length - 1);
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("src=\"http", html);
        var markdown = File.ReadAllText(files.Markdown);
        Assert.Contains("![Top-1 test accuracy versus sparsity, lenet5 · fashion-mnist](accuracy-lenet5-fashion-mnist.svg)", markdown);
        Assert.Contains("[accuracy-lenet5-fashion-mnist.png](accuracy-lenet5-fashion-mnist.png)", markdown);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));

        // Keep a copy to look at when asked to (the temporary directory is deleted).
        var keep = Environment.GetEnvironmentVariable("PAI_REPORT_SAMPLE_DIR");
        if (!string.IsNullOrEmpty(keep))
        {
            Directory.CreateDirectory(keep);
            foreach (var f in Directory.GetFiles(dir.Path)) File.Copy(f, Path.Combine(keep, Path.GetFileName(f)), overwrite: true);
        }
    }
}
