using Pai.Host.Reports;

namespace Pai.Host.Tests;

/// <summary>
/// The report's statistics across seeds: which test compares which cells, ablations beside their
/// criterion, and whole reports with 1, 2 and 5 seeds against reviewed golden Markdown
/// (tests/Pai.Host.Tests/Golden; PAI_UPDATE_GOLDEN=1 rewrites them and fails, to be reviewed).
/// </summary>
public class ReportStatisticsTests
{
    static readonly string[] Layers = ["conv1.weight", "fc1.weight", "fc2.weight"];
    static readonly long[] Sizes = [150, 48_000, 840];
    static readonly long[] Flops = [150 * 784, 48_000, 840];

    static RunRecord Run(string criterion, double sparsity, ulong seed, double top1, string ablation = "none")
    {
        var config = new RunConfig
        {
            Model = "lenet5", Dataset = "fashion-mnist", Criterion = criterion, Sparsity = sparsity, Seed = seed, Ablation = ablation,
            WarmupBatches = 0, Epochs = 2,
        };
        PruneSummary? prune = null;
        if (criterion != "dense")
        {
            // Criteria keep the first layer denser than random does; all keep the configured total.
            var first = criterion == "random" ? 1 - sparsity : Math.Min(1, 3 * (1 - sparsity));
            var layers = Layers.Select((name, i) =>
            {
                var density = i == 0 ? first : 1 - sparsity;
                return new LayerDensityRecord(name, (long)Math.Round(density * Sizes[i]), Sizes[i], Flops[i]);
            }).ToList();
            prune = new PruneSummary(criterion, layers, [], 1, layers.Sum(l => (double)l.Kept) / layers.Sum(l => (double)l.Total),
                DenseFlops: Flops.Sum());
        }
        return new RunRecord
        {
            Key = config.Key, Config = config, Status = RunStatus.Finished, FinalTop1 = top1, Prune = prune,
            PaiVersion = "0.1.0", LibtorchVersion = "1.13.1",
        };
    }

    /// <summary>Seed-to-seed variation shared by every cell (as the seed fixes the initial weights and data order) plus a cell's own.</summary>
    static double Noise(ulong seed, int cell) =>
        ((long)((seed * 37 + 5) % 13) - 6) * 0.0015 + ((long)((seed * seed * 7 + seed * 3 + (ulong)(cell * cell * 5) + (ulong)cell * seed * 11) % 9) - 4) * 0.0012;

    /// <summary>Dense, random, snip (with its shuffle and invert ablations) and synflow at 90% and 98% with <paramref name="seeds"/> seeds.</summary>
    internal static List<RunRecord> Grid(int seeds)
    {
        var runs = new List<RunRecord>();
        var cells = new (string Criterion, string Ablation, double At90, double At98)[]
        {
            ("random", "none", 0.862, 0.801), ("snip", "none", 0.885, 0.861), ("snip", "shuffle", 0.8852, 0.852),
            ("snip", "invert", 0.700, 0.550), ("synflow", "none", 0.884, 0.848),
        };
        for (ulong seed = 0; seed < (ulong)seeds; seed++)
        {
            runs.Add(Run("dense", 0, seed, 0.905 + Noise(seed, 0)));
            for (var c = 0; c < cells.Length; c++)
            {
                runs.Add(Run(cells[c].Criterion, 0.9, seed, cells[c].At90 + Noise(seed, 2 * c + 1), cells[c].Ablation));
                runs.Add(Run(cells[c].Criterion, 0.98, seed, cells[c].At98 + Noise(seed, 2 * c + 2), cells[c].Ablation));
            }
        }
        return runs;
    }

    static string GoldenDirectory => Path.Combine(Path.GetDirectoryName(TorchOracle.OracleDirectory)!, "Pai.Host.Tests", "Golden");

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public void Report_markdown_matches_the_reviewed_golden_file(int seeds)
    {
        using var dir = new TempDirectory();
        var files = ReportWriter.Write(Grid(seeds), dir.Path, new ReportOptions { Title = $"Golden report, {seeds} seed(s)", RequireCharts = true });
        var markdown = File.ReadAllText(files.Markdown);
        if (Environment.GetEnvironmentVariable("PAI_REPORT_SAMPLE_DIR") is { Length: > 0 } keep) // a copy to look at
        {
            var copy = Directory.CreateDirectory(Path.Combine(keep, $"{seeds}-seeds")).FullName;
            foreach (var f in Directory.GetFiles(dir.Path)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)), overwrite: true);
        }
        var golden = Path.Combine(GoldenDirectory, $"report-{seeds}-seeds.md");
        if (Environment.GetEnvironmentVariable("PAI_UPDATE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(GoldenDirectory);
            File.WriteAllText(golden, markdown);
            Assert.Fail($"{golden} rewritten: review it, then run the tests without PAI_UPDATE_GOLDEN");
        }
        Assert.True(File.Exists(golden), $"{golden} is missing (PAI_UPDATE_GOLDEN=1 writes it)");
        Assert.Equal(File.ReadAllText(golden), markdown);
    }

    [Fact]
    public void Cells_are_compared_by_a_paired_test_on_shared_seeds_else_welch_else_not_at_all()
    {
        var groups = ReportTables.Aggregate(Grid(5));
        var snip = groups.Single(g => g.Criterion == "snip" && g.Ablation == "none" && g.Sparsity == 0.98);
        var random = groups.Single(g => g.Criterion == "random" && g.Sparsity == 0.98);
        Assert.Equal(TTestKind.Paired, snip.VsRandom!.Test!.Kind);
        Assert.Same(random.Runs, snip.VsRandom.Reference.Runs);
        var expected = SeedStatistics.Paired(snip.Runs.Select(r => r.FinalTop1!.Value).ToList(), random.Runs.Select(r => r.FinalTop1!.Value).ToList());
        Assert.Equal(expected.P, snip.VsRandom.Test.P, 15);
        Assert.True(snip.IsBest);
        Assert.Null(snip.VsBest);
        Assert.Null(random.VsRandom);

        // Disjoint seeds: nothing pairs them, Welch.
        var disjoint = ReportTables.Aggregate([.. Grid(3).Where(r => r.Config.Criterion != "random"),
            Run("random", 0.9, 10, 0.85), Run("random", 0.9, 11, 0.86), Run("random", 0.9, 12, 0.84)]);
        var snip90 = disjoint.Single(g => g.Criterion == "snip" && g.Ablation == "none" && g.Sparsity == 0.9);
        Assert.Equal(TTestKind.Welch, snip90.VsRandom!.Test!.Kind);
        Assert.Contains("Welch", ReportTables.ComparisonCell(snip90.VsRandom, oneSided: false));

        // A single seed on one side: the difference, no test.
        var single = ReportTables.Aggregate([.. Grid(3).Where(r => r.Config.Criterion != "random"), Run("random", 0.9, 0, 0.85)]);
        var vs = single.Single(g => g.Criterion == "snip" && g.Ablation == "none" && g.Sparsity == 0.9).VsRandom!;
        Assert.Null(vs.Test);
        Assert.EndsWith("(1 seed)", ReportTables.ComparisonCell(vs, oneSided: false));
    }

    [Fact]
    public void Ablations_sit_beside_their_criterion_and_are_flagged_when_not_significantly_worse()
    {
        var groups = ReportTables.Aggregate(Grid(5));
        var order = groups.Where(g => g.Criterion == "snip").Select(g => $"{g.Sparsity} {g.Ablation}").ToList();
        Assert.Equal(["0.9 none", "0.9 shuffle", "0.9 invert", "0.98 none", "0.98 shuffle", "0.98 invert"], order);

        var table = ReportTables.ResultsTable(groups);
        var headers = table.Columns.Select(c => c.Header).ToList();
        var ablation = headers.IndexOf("Ablation");
        var vsCriterion = headers.IndexOf("vs criterion (pp)");
        Assert.True(ablation > 0 && vsCriterion > 0);
        string Cell(double sparsity, string which) =>
            table.Rows.Single(r => r[2] == "snip" && r[ablation] == which && r[headers.IndexOf("Sparsity")] == Format(sparsity))[vsCriterion];
        // Shuffle at 90% is as good as snip: not significantly worse. Invert is far worse.
        Assert.Contains(ReportTables.NotWorseMark, Cell(0.9, "shuffle"));
        Assert.Contains(ReportTables.LowerMark, Cell(0.9, "invert"));
        Assert.DoesNotContain(ReportTables.NotWorseMark, Cell(0.9, "invert"));
        Assert.Equal("–", Cell(0.9, "none"));
        // At 98% shuffle is 0.9 pp below snip: the one-sided p of "shuffle is worse" is half the two-sided p.
        var shuffle = groups.Single(g => g.Ablation == "shuffle" && g.Sparsity == 0.98).VsCriterion!.Test!;
        Assert.True(shuffle.Difference < 0);
        Assert.Equal(shuffle.P / 2, shuffle.PLess, 12);
        Assert.Contains(ReportTables.LowerMark, Cell(0.98, "shuffle"));
    }

    static string Format(double sparsity) => Math.Round(sparsity * 100, 3).ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + "%";
}
