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
        // lenet5 has no batch norm: its warm-up runs are told apart without claiming that warm-up did anything.
        foreach (var label in new[] { "snip", "snip (warm-up 100, no BN)", "synflow", "hutch_obd", "90%", "98%", "99.5%" })
            Assert.Contains(label, texts);
        Assert.DoesNotContain(texts, t => t.Contains("+ warm-up", StringComparison.Ordinal));
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
        Assert.Contains(panel.Runs, r => r.Label == "snip (warm-up 100, no BN)");
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
        foreach (var label in Layers.Concat(["snip", "snip (warm-up 100, no BN)", "synflow", "hutch_obd", "grasp", "10%", "20%", "100%"]))
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
    [Fact]
    public void Accuracy_chart_keeps_its_y_axis_within_0_and_100_and_marks_an_interval_that_leaves_it()
    {
        // Two seeds 85 points apart: the 95% interval is ± 540 points.
        var wild = ReportTables.Aggregate([Run("snip", 0.9, 0, 0.10), Run("snip", 0.9, 1, 0.95), Run("random", 0.9, 0, 0.50), Run("random", 0.9, 1, 0.52)]);
        Assert.True(wild.Single(g => g.Criterion == "snip").Ci95Top1 > 5);
        var chart = Assert.Single(ReportCharts.Accuracy(wild));
        Assert.Equal((0.0, 100.0), chart.YLimits);
        Assert.Contains("A triangle at the top or bottom edge", chart.Caption);

        // Ordinary intervals: the axis follows the data with a margin, inside [0, 100], and nothing is marked.
        var groups = ReportTables.Aggregate(Sweep());
        var ordinary = Assert.Single(ReportCharts.Accuracy(groups));
        var lowest = groups.Where(g => g.Seeds > 0).Min(g => (g.MeanTop1!.Value - (g.Ci95Top1 ?? 0)) * 100);
        var highest = groups.Where(g => g.Seeds > 0).Max(g => (g.MeanTop1!.Value + (g.Ci95Top1 ?? 0)) * 100);
        Assert.InRange(ordinary.YLimits.Bottom, 0, lowest);
        Assert.InRange(ordinary.YLimits.Top, highest, 100);
        Assert.True(ordinary.YLimits.Bottom > 50, $"the axis starts at {ordinary.YLimits.Bottom}: it should follow the data");
        Assert.DoesNotContain("triangle at the top", ordinary.Caption);
        Assert.Equal((0.0, 100.0), ReportCharts.AccuracyLimits([-500, 50, 640]));
        Assert.Equal((49.0, 53.0), ReportCharts.AccuracyLimits([50, 52]));
    }

    [Fact]
    public void Warm_up_is_named_in_chart_labels_only_for_models_with_batch_norm()
    {
        var lenet = Assert.Single(ReportCharts.LayerPanels([Run("snip", 0.9, 0, 0.8, warmup: 100), Run("synflow", 0.9, 0, 0.8, warmup: 100)]));
        Assert.Equal(["snip", "synflow"], lenet.Runs.Select(r => r.Label));
        Assert.DoesNotContain(SvgTexts(Assert.Single(ReportCharts.Layers([lenet])).Svg), t => t.Contains("warm-up", StringComparison.Ordinal));
        var resnet = Assert.Single(ReportCharts.LayerPanels([Run("snip", 0.9, 0, 0.8, warmup: 100, model: "resnet20", dataset: "cifar10"),
            Run("synflow", 0.9, 0, 0.8, model: "resnet20", dataset: "cifar10")]));
        Assert.Equal(["snip + warm-up", "synflow"], resnet.Runs.Select(r => r.Label));
        Assert.Contains("snip + warm-up", SvgTexts(Assert.Single(ReportCharts.Layers([resnet])).Svg));
        // Both settings of one criterion on a model without batch norm: told apart, saying warm-up had nothing to change.
        var both = Assert.Single(ReportCharts.LayerPanels([Run("snip", 0.9, 0, 0.8, warmup: 100), Run("snip", 0.9, 0, 0.8)]));
        Assert.Equal(["snip", "snip (warm-up 100, no BN)"], both.Runs.Select(r => r.Label));
        // The accuracy chart the same way.
        var accuracy = SvgTexts(Assert.Single(ReportCharts.Accuracy(ReportTables.Aggregate([Run("snip", 0.9, 0, 0.8, warmup: 100), Run("synflow", 0.9, 0, 0.8, warmup: 100)]))).Svg);
        Assert.Contains("snip", accuracy);
        Assert.DoesNotContain(accuracy, t => t.Contains("warm-up", StringComparison.Ordinal));
    }

    [Fact]
    public void Warm_up_is_named_in_the_report_only_for_models_with_batch_norm()
    {
        // Every warmed-up run: a cell wide at its seed limit, a failed run whose training diverged (listed twice).
        static List<RunRecord> Runs(string model, string dataset) =>
        [
            Run("snip", 0.9, 0, 0.80, warmup: 100, model: model, dataset: dataset),
            Run("snip", 0.9, 1, 0.20, warmup: 100, model: model, dataset: dataset),
            Run("random", 0.9, 0, 0.70, warmup: 100, model: model, dataset: dataset),
            Run("random", 0.9, 1, 0.71, warmup: 100, model: model, dataset: dataset),
            Run("synflow", 0.9, 2, null, warmup: 100, model: model, dataset: dataset, status: RunStatus.Failed,
                error: "training diverged: the loss became NaN at epoch 1, batch 3; lower the learning rate"),
        ];
        foreach (var (model, dataset, batchNorm) in new[] { ("lenet5", "fashion-mnist", false), ("resnet20", "cifar10", true) })
        {
            using var dir = new TempDirectory();
            var files = ReportWriter.Write(Runs(model, dataset), dir.Path, new ReportOptions { RenderCharts = false, Seeds = new SeedTarget(2, 2) });
            var text = File.ReadAllText(files.Markdown) + File.ReadAllText(files.Html);
            Assert.Contains("Seed limit reached", text);
            Assert.Contains("Training blew up", text);
            if (batchNorm)
            {
                Assert.Contains($"{model} {dataset} snip 90% + warm-up (100) (±", text);
                Assert.Contains($"{model} {dataset} synflow 90% + warm-up (100) seed 2", text);
            }
            else
            {
                Assert.DoesNotContain("+ warm-up", text);
                Assert.Contains($"{model} {dataset} snip 90% (±", text);
                Assert.Contains($"{model} {dataset} synflow 90% seed 2", text);
            }
        }
    }

    [Fact]
    public void Curvature_table_collapses_an_estimator_whose_layers_all_came_out_alike()
    {
        var layers = Enumerable.Range(0, 32).Select(i => $"layer{i}.weight").ToList();
        var exact = new CurvatureRecord("exact", 0, 0, [.. layers.Select(l => new LayerCurvatureRecord(l, "exact", 0, 0))]);
        RunRecord With(RunRecord r, params CurvatureRecord[] c) => r with { Prune = r.Prune! with { Curvature = c } };
        var runs = new List<RunRecord> { With(Run("obd", 0.9, 0, 0.8), exact), With(Run("obd", 0.9, 1, 0.8), exact) };
        var table = ReportTables.CurvatureTable(runs)!;
        var row = Assert.Single(table.Rows);
        Assert.Equal(["2 runs", "exact", "0", "all 32 layers", "exact", "0", "0"], row);

        // Hutchinson: one run whose layers agree (one row), one whose errors differ (a row per layer).
        var alike = new CurvatureRecord("hutchinson T=8", 80, 0, [new LayerCurvatureRecord("a", "hutchinson", 0.2, 8), new LayerCurvatureRecord("b", "hutchinson", 0.2, 8)]);
        var mixed = new CurvatureRecord("hutchinson T=8", 80, 0, [new LayerCurvatureRecord("a", "hutchinson", 0.2, 8), new LayerCurvatureRecord("b", "closed-form", 0, 0),
            new LayerCurvatureRecord("c", "hutchinson", null, 8)]);
        var hutchinson = ReportTables.CurvatureTable([With(Run("hutch_obd", 0.9, 0, 0.8), alike), With(Run("hutch_obd", 0.9, 1, 0.8), mixed), runs[0]])!;
        Assert.Equal(5, hutchinson.Rows.Count);
        Assert.Single(hutchinson.Rows, r => r[1] == "exact" && r[0] == runs[0].Config.Label && r[3] == "all 32 layers");
        Assert.Single(hutchinson.Rows, r => r[1] == "hutchinson T=8" && r[3] == "all 2 layers" && r[6] == "0.2");
        Assert.Equal(["a", "b", "c"], hutchinson.Rows.Where(r => r[1] == "hutchinson T=8" && r[3] != "all 2 layers").Select(r => r[3]));
        Assert.Contains(hutchinson.Rows, r => r[3] == "c" && r[6] == "∞");
    }

    /// <summary>A store with many cells: ablations, warm-up on a batch-norm model, a failure, a run whose loss blew up.</summary>
    static List<RunRecord> WideSweep()
    {
        var runs = Sweep();
        for (ulong seed = 0; seed < 3; seed++)
        {
            runs.Add(Run("hutch_obd", 0.98, seed, 0.8284 + 0.004 * ((int)seed - 1) + new[] { 0.002, -0.001, 0.0 }[seed], ablation: "shuffle"));
            runs.Add(Run("hutch_obd", 0.98, seed, 0.60 + 0.01 * seed, ablation: "invert"));
            foreach (var warmup in new[] { 0, 100 })
            {
                runs.Add(Run("snip", 0.9, seed, 0.88 + 0.002 * seed + warmup * 1e-4, warmup: warmup, model: "resnet20", dataset: "cifar10"));
                runs.Add(Run("random", 0.9, seed, 0.85 + 0.003 * seed, warmup: warmup, model: "resnet20", dataset: "cifar10"));
            }
        }
        runs.Add(Run("snip", 0.995, 9, null, status: RunStatus.Failed, model: "resnet20", dataset: "cifar10",
            error: "training diverged: the loss became NaN at epoch 1, batch 17; lower the learning rate"));
        var blown = Run("synflow", 0.995, 5, 0.1);
        runs.Add(blown with
        {
            Epochs = [new EpochMetrics(1, 2.1, 0.3, 0.1, 2.0, 0.3, 0.6, 1), new EpochMetrics(2, 9.75, 0.1, 0.1, 14, 0.1, 0.5, 1), new EpochMetrics(3, 2.4, 0.1, 0.1, 2.3, 0.1, 0.5, 1)],
        });
        return runs;
    }

    [Fact]
    public void Terminal_tables_fit_the_width_one_per_model_with_the_comparisons_kept()
    {
        var groups = ReportTables.Aggregate(WideSweep());
        Assert.True(ReportTables.BorderedWidth(ReportTables.ResultsTable(groups)) > 200, "the full table should not fit: the test would show nothing");
        var tables = ReportTables.TerminalTables(groups);
        Assert.Equal(["lenet5 · fashion-mnist", "resnet20 · cifar10"], tables.Select(t => t.Title));
        foreach (var t in tables)
        {
            Assert.InRange(ReportTables.BorderedWidth(t.Table), 40, ReportTables.TerminalWidth);
            var headers = t.Table.Columns.Select(c => c.Header).ToList();
            Assert.Contains("vs random", headers);
            Assert.Contains("vs best", headers);
            Assert.DoesNotContain("Model", headers);
            Assert.DoesNotContain(t.Table.Rows.SelectMany(r => r), c => c.Contains("p=", StringComparison.Ordinal)); // p-values are in report.md
        }
        Assert.Contains("Warm-up", tables[1].Table.Columns.Select(c => c.Header)); // resnet20 has batch norm and both settings
        Assert.Contains("vs criterion", tables[0].Table.Columns.Select(c => c.Header));
        Assert.Contains(tables[0].Table.Rows, r => r[0] == "hutch_obd (shuffle)");
        // A narrow terminal: columns are left out, and named.
        var narrow = ReportTables.TerminalTables(groups, 90)[0];
        Assert.True(ReportTables.BorderedWidth(narrow.Table) <= 90, $"{ReportTables.BorderedWidth(narrow.Table)} columns");
        // hutch_obd (shuffle) is as good as hutch_obd: flagged by the mark alone.
        var shuffle = narrow.Table.Rows.Single(r => r[0] == "hutch_obd (shuffle)");
        Assert.Equal("+0.03 ⚠", shuffle[narrow.Table.Columns.Select(c => c.Header).ToList().IndexOf("vs criterion")]);
        Assert.Contains("Δ dense (pp)", narrow.LeftOut);
    }

    [Fact]
    public void Findings_name_the_best_criterion_per_sparsity_those_not_significantly_worse_and_runs_that_blew_up()
    {
        var groups = ReportTables.Aggregate(ReportStatisticsTests.Grid(5));
        var findings = ReportFindings.Comparisons(groups);
        Assert.Equal(["lenet5 · fashion-mnist · 90%", "lenet5 · fashion-mnist · 98%"], findings.Select(f => f.Setting));
        var (at90, at98) = (findings[0], findings[1]);
        Assert.Equal("snip", at90.Best.Criterion);
        Assert.Equal(["synflow"], at90.NotWorse.Select(g => g.Criterion)); // 0.03 pp behind
        Assert.Equal(["random"], at90.Worse.Select(g => g.Criterion));
        Assert.Equal(["shuffle"], at90.AblationsNotWorse.Select(g => g.Ablation));
        Assert.Empty(at98.NotWorse);
        Assert.Equal(["random", "synflow"], at98.Worse.Select(g => g.Criterion));

        var runs = WideSweep();
        var blowUps = ReportFindings.BlowUps(runs);
        Assert.Equal(2, blowUps.Count);
        var peak = blowUps.Single(b => b.PeakLoss is not null);
        Assert.Equal((9.75, 2), (peak.PeakLoss!.Value, peak.PeakEpoch!.Value));
        Assert.Equal(Math.Log(10), peak.ChanceLoss, 14);
        Assert.Contains("batch 17", blowUps.Single(b => b.Error is not null).Error);
        // A loss at chance is not a blow-up; a data set Pai does not know has no chance level to compare with.
        var healthy = Run("snip", 0.9, 0, 0.8) with { Epochs = [new EpochMetrics(1, 1.5 * Math.Log(10), 0.3, 0.1, 2.0, 0.3, 0.6, 1)] };
        var unknown = Run("snip", 0.9, 0, 0.8, dataset: "my-data") with { Epochs = [new EpochMetrics(1, 50, 0.3, 0.1, 2.0, 0.3, 0.6, 1)] };
        Assert.Empty(ReportFindings.BlowUps([healthy, unknown]));

        using var dir = new TempDirectory();
        var files = ReportWriter.Write(runs, dir.Path, new ReportOptions { RenderCharts = false });
        var markdown = File.ReadAllText(files.Markdown);
        Assert.Contains("## Findings", markdown);
        Assert.Contains($"Training blew up: {ReportTables.RunLabel(peak.Run)} (run {peak.Run.Key}): mean training loss 9.75 in epoch 2, 4.2 × chance ln 10 = 2.30.", markdown);
        Assert.Contains("not significantly worse:", File.ReadAllText(files.Html));
    }

    [Fact]
    public void Wide_cells_show_their_sparsest_layer_by_seed_or_their_blow_ups()
    {
        // grasp 99.5%: seeds whose sparsest layer (fc1, 0.0025% kept) kept more weights did better; synflow is tight.
        var fc1 = new[] { 11L, 10, 17, 55, 29 };
        var top1 = new[] { 0.4104, 0.4486, 0.5518, 0.6527, 0.6314 };
        var runs = new List<RunRecord>();
        for (var seed = 0; seed < 5; seed++)
        {
            var grasp = Run("grasp", 0.995, (ulong)seed, top1[seed]);
            runs.Add(grasp with { Prune = grasp.Prune! with { Layers = grasp.Prune.Layers.Select(l => l.Name == "fc1.weight" ? l with { Kept = fc1[seed] } : l).ToList() } });
            runs.Add(Run("synflow", 0.995, (ulong)seed, 0.79 + 0.001 * seed));
        }
        var blown = Run("snip", 0.995, 0, 0.2);
        runs.Add(blown with { Epochs = [new EpochMetrics(1, 9.0, 0.1, 0.1, 9, 0.1, 0.5, 1)] });
        runs.Add(Run("snip", 0.995, 1, 0.7));
        runs.Add(Run("snip", 0.995, 2, 0.72));
        // A sanity check's spread is not explained: ablations are left out however wide.
        runs.Add(Run("synflow", 0.995, 0, 0.3, ablation: "shuffle"));
        runs.Add(Run("synflow", 0.995, 1, 0.7, ablation: "shuffle"));
        var groups = ReportTables.Aggregate(runs);
        Assert.True(groups.Single(g => g.IsAblation).Ci95Top1 > 0.5);

        var wide = ReportFindings.WideCells(groups);
        Assert.Equal(["grasp", "snip"], wide.Select(w => w.Cell.Criterion).Order());
        var g = wide.Single(w => w.Cell.Criterion == "grasp");
        Assert.Equal("fc1.weight", g.Layer);
        Assert.Equal(LayerSizes[Array.IndexOf(Layers, "fc1.weight")], g.Total);
        Assert.Equal([(1UL, 10L), (0UL, 11L), (2UL, 17L), (4UL, 29L), (3UL, 55L)], g.Seeds.Select(s => (s.Seed, s.Kept)));
        Assert.Equal(0.9, g.Spearman, 12); // ranks of top-1 in kept order: 2 1 3 4 5
        Assert.Empty(g.BlownUp);
        Assert.Equal([0UL], wide.Single(w => w.Cell.Criterion == "snip").BlownUp);
        // A target of its own (--target-ci) replaces the default: at ±20 pp only snip (±73) is wide, grasp (±13) is not.
        Assert.Equal(["snip"], ReportFindings.WideCells(groups, 20).Select(w => w.Cell.Criterion));

        var lines = ReportFindings.Lines(groups, runs);
        var graspLine = Assert.Single(lines, l => l.StartsWith("Wide interval: lenet5 fashion-mnist grasp 99.5%", StringComparison.Ordinal));
        Assert.Contains("Its sparsest layer, fc1.weight, keeps 10–55 of", graspLine);
        Assert.Contains("seed 1: 10 → 44.86%, seed 0: 11 → 41.04%", graspLine);
        Assert.Contains("rank correlation of kept weights and top-1 +0.90", graspLine);
        var snipLine = Assert.Single(lines, l => l.StartsWith("Wide interval: lenet5 fashion-mnist snip 99.5%", StringComparison.Ordinal));
        Assert.EndsWith("Training blew up on seed 0 (flagged above).", snipLine);
        Assert.DoesNotContain(lines, l => l.Contains("synflow 99.5%", StringComparison.Ordinal) && l.StartsWith("Wide", StringComparison.Ordinal));
    }

    [Fact]
    public void Pai_report_fits_120_columns_unless_wide_and_the_chart_renderer_prints_nothing()
    {
        using var dir = new TempDirectory();
        var runs = WideSweep();
        using (var store = new SqliteRunStore(dir.Path))
            foreach (var r in runs)
            {
                var key = store.Register(r.Config);
                Assert.Equal(r.Key, key);
                Assert.True(store.TryClaim(key));
                if (r.Status == RunStatus.Failed) store.Fail(key, r.Error!);
                else if (r.Status == RunStatus.Finished) store.Finish(key, r);
            }

        var (code, output, err) = CliEndToEndTests.Run("report", "--results", dir.Path);
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        // SkiaSharp's SVG backend used to print "Unsupported path effect in addPaint." for every dashed line.
        Assert.Equal("", err);
        Assert.DoesNotContain("Unsupported", output);
        if (Environment.GetEnvironmentVariable("PAI_REPORT_SAMPLE_DIR") is { Length: > 0 } keep) // a copy to look at
        {
            var copy = Directory.CreateDirectory(Path.Combine(keep, "cli")).FullName;
            File.WriteAllText(Path.Combine(copy, "terminal.txt"), output);
            foreach (var f in Directory.GetFiles(Path.Combine(dir.Path, "report"))) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)), overwrite: true);
        }
        // Everything before the closing line that names the files (paths are as long as they are).
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).TakeWhile(l => !l.StartsWith("report: ", StringComparison.Ordinal)).ToList();
        var tooLong = lines.Where(l => l.Length > ReportTables.TerminalWidth).ToList();
        Assert.True(tooLong.Count == 0, "lines over 120 characters:\n" + string.Join("\n", tooLong));
        Assert.Contains(lines, l => l.StartsWith('│') && l.Contains("vs random", StringComparison.Ordinal));
        Assert.Contains("Findings", output);
        Assert.Contains("Training blew up", output);
        Assert.DoesNotContain("FLOPs", output);

        var wide = CliEndToEndTests.Run("report", "--results", dir.Path, "--wide");
        if (Environment.GetEnvironmentVariable("PAI_REPORT_SAMPLE_DIR") is { Length: > 0 } again)
            File.WriteAllText(Path.Combine(again, "cli", "terminal-wide.txt"), wide.Out);
        Assert.True(wide.Code == 0, $"exit {wide.Code}\n{wide.Out}\n{wide.Err}");
        Assert.Equal("", wide.Err);
        foreach (var header in ReportTables.ResultsTable(ReportTables.Aggregate(runs)).Columns.Select(c => c.Header.Split(' ')[0]))
            Assert.Contains(header, wide.Out);
        Assert.Contains("FLOPs", wide.Out);
        Assert.Contains("(Holm p", wide.Out);
    }
}
