using System.Globalization;
using Pai.Host.Reports;

namespace Pai.Host.Tests;

/// <summary>`pai sweep --target-ci W --max-seeds K`: seeds where they are needed, and the sweep's progress line.</summary>
public sealed class SweepSeedTests
{
    static readonly RunConfig Dense = new() { Dataset = "synthetic" };
    static readonly RunConfig Snip = new() { Dataset = "synthetic", Criterion = "snip", Sparsity = 0.5 };
    static readonly RunConfig Magnitude = new() { Dataset = "synthetic", Criterion = "magnitude", Sparsity = 0.5 };

    static List<RunConfig> Grid(params ulong[] seeds) =>
        seeds.SelectMany(s => new[] { Dense, Snip, Magnitude }.Select(c => c with { Seed = s })).ToList();

    static RunRecord Record(RunConfig cell, ulong seed, double? top1, RunStatus status = RunStatus.Finished) =>
        new() { Key = (cell with { Seed = seed }).Key, Config = cell with { Seed = seed }, Status = status, FinalTop1 = top1 };

    static Func<string, RunRecord?> Store(params RunRecord[] records)
    {
        var byKey = records.ToDictionary(r => r.Key);
        return key => byKey.GetValueOrDefault(key);
    }

    static List<string> Names(IEnumerable<RunConfig> round) => round.Select(c => $"{c.Criterion} {c.Seed}").ToList();

    [Fact]
    public void The_next_round_gives_the_lowest_missing_seed_to_the_wide_cells_only()
    {
        var grid = Grid(0, 1);
        // dense: the same top-1 every seed (±0); snip: 10% and 90% (±508 pp); magnitude: 50% and 51% (±6.35 pp).
        RunRecord[] given =
        [
            Record(Dense, 0, 0.5), Record(Dense, 1, 0.5), Record(Snip, 0, 0.1), Record(Snip, 1, 0.9),
            Record(Magnitude, 0, 0.50), Record(Magnitude, 1, 0.51),
        ];
        Assert.Equal(["snip 2"], Names(SeedRounds.NextRound(grid, new SeedTarget(10, 4), Store(given))));
        Assert.Equal(["snip 2", "magnitude 2"], Names(SeedRounds.NextRound(grid, new SeedTarget(5, 4), Store(given))));
        Assert.Empty(SeedRounds.NextRound(grid, new SeedTarget(600, 4), Store(given)));

        // A cell with more seeds waits until every wide cell has them: seed 2 before seed 3.
        var snip2 = given.Append(Record(Snip, 2, 0.5)).ToArray();
        Assert.Equal(["magnitude 2"], Names(SeedRounds.NextRound(grid, new SeedTarget(5, 4), Store(snip2))));
        var both2 = snip2.Append(Record(Magnitude, 2, 0.505)).ToArray();
        Assert.Equal(["snip 3", "magnitude 3"], Names(SeedRounds.NextRound(grid, new SeedTarget(1, 4), Store(both2))));
        // At the limit a cell gets no more, however wide.
        Assert.Equal(["magnitude 3"], Names(SeedRounds.NextRound(grid, new SeedTarget(1, 4), Store([.. both2, Record(Snip, 3, 0.1)]))));
        Assert.Empty(SeedRounds.NextRound(grid, new SeedTarget(1, 3), Store(both2)));

        // A registered run counts as a seed of its cell whatever its status; only finished ones count in the interval.
        var cells = SeedRounds.Cells(grid, new SeedTarget(5, 4), Store([.. given, Record(Snip, 2, null, RunStatus.Pending)]));
        var snip = cells.Single(c => c.Config.Criterion == "snip");
        Assert.Equal([0UL, 1, 2], snip.Seeds);
        Assert.Equal(3UL, snip.NextSeed);
        Assert.Equal(2, snip.Top1.Count);
        // One finished seed has no interval: the cell is wide. Its failed seed counts against the limit.
        RunRecord[] failed = [.. given.Where(r => r.Config.Criterion != "dense"), Record(Dense, 0, 0.5), Record(Dense, 1, null, RunStatus.Failed)];
        Assert.Contains("dense 2", Names(SeedRounds.NextRound(grid, new SeedTarget(600, 3), Store(failed))));
        Assert.Empty(SeedRounds.NextRound(grid, new SeedTarget(600, 2), Store(failed)));
    }

    [Fact]
    public void The_added_seeds_follow_the_highest_given_one_and_a_target_out_of_range_is_refused()
    {
        Assert.Equal([2UL, 3, 4], SeedRounds.ExtraSeeds(Grid(0, 1), new SeedTarget(1, 5)));
        Assert.Equal([8UL], SeedRounds.ExtraSeeds(Grid(7, 3), new SeedTarget(0.5, 3)));
        Assert.Empty(SeedRounds.ExtraSeeds(Grid(0, 1), new SeedTarget(1, 2)));
        foreach (var w in new[] { 0, -1, double.NaN, double.PositiveInfinity })
            Assert.Contains("--target-ci must be a positive number of accuracy points",
                Assert.Throws<ArgumentException>(() => SeedRounds.ExtraSeeds(Grid(0, 1), new SeedTarget(w, 4))).Message);
        Assert.Contains("--max-seeds 1 is fewer than the 2 seeds given by --seeds",
            Assert.Throws<ArgumentException>(() => SeedRounds.ExtraSeeds(Grid(0, 1), new SeedTarget(1, 1))).Message);
        Assert.Contains("leaves no room for the 2 seeds",
            Assert.Throws<ArgumentException>(() => SeedRounds.ExtraSeeds(Grid(ulong.MaxValue - 1), new SeedTarget(1, 3))).Message);
    }

    [Fact]
    public void The_report_names_the_cells_still_wider_than_the_target_at_the_seed_limit()
    {
        static RunRecord Run(RunConfig cell, ulong seed, double top1) =>
            Record(RunPlan.Canonical(cell), seed, top1) with { Epochs = [new EpochMetrics(1, 1.0, top1, 0.01, 1.0, top1, null, 1)] };
        // snip is wide at 3 seeds, magnitude narrow at 3 seeds, dense wide at 2 (below the limit).
        var runs = new[] { Run(Dense, 0, 0.3), Run(Dense, 1, 0.7) }
            .Concat(new ulong[] { 0, 1, 2 }.Select(s => Run(Snip, s, 0.2 + 0.3 * s)))
            .Concat(new ulong[] { 0, 1, 2 }.Select(s => Run(Magnitude, s, 0.5 + 0.001 * s))).ToList();
        var groups = ReportTables.Aggregate(runs);
        var target = new SeedTarget(2, 3);
        Assert.Equal(["snip"], ReportFindings.AtSeedLimit(groups, target).Select(g => g.Criterion));
        var line = Assert.Single(ReportFindings.Lines(groups, runs, target), l => l.StartsWith("Seed limit reached", StringComparison.Ordinal));
        Assert.Contains("±2 pp at 3 seeds (--max-seeds): lenet5 synthetic snip 50% (±74.52 pp)", line); // lenet5 has no batch norm: no warm-up named
        Assert.DoesNotContain(ReportFindings.Lines(groups, runs), l => l.StartsWith("Seed limit", StringComparison.Ordinal));

        using var dir = new TempDirectory();
        var files = ReportWriter.Write(runs, dir.Path, new ReportOptions { RenderCharts = false, Seeds = target });
        Assert.Contains("Seed limit reached", File.ReadAllText(files.Markdown));
        Assert.Contains("Seed limit reached", File.ReadAllText(files.Html));
    }

    [Fact]
    public void Progress_counts_the_runs_done_and_left_and_the_time_left_from_runs_finished_here()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var grid = Grid(0, 1);
        store.RegisterAll(grid, "s");
        var timer = new RunTimer();
        Assert.Equal("0 of 6 runs done, 6 left, time left known after the first run", Sweep.Progress(store, "s", null, timer).ToString());

        var first = store.ClaimNext("s")!;
        store.Finish(first, new RunRecord { Key = first, Config = store.Get(first)!.Config, FinalTop1 = 0.5 });
        timer.Add(TimeSpan.FromSeconds(8));
        timer.Add(TimeSpan.FromSeconds(12));
        var second = store.ClaimNext("s")!;
        store.Fail(second, "boom");
        Assert.NotNull(store.ClaimNext("s")); // held by this worker: one worker shares the time left
        var progress = Sweep.Progress(store, "s", null, timer);
        Assert.Equal(new SweepProgress(2, 4, TimeSpan.FromSeconds(40)), progress);
        Assert.Equal("2 of 6 runs done, 4 left, about 40 s left", progress.ToString());
        Assert.Equal("about 15 min left", new SweepProgress(1, 3, TimeSpan.FromMinutes(14.2)).ToString()[^17..]);
        Assert.Equal("about 2.5 h left", new SweepProgress(1, 3, TimeSpan.FromMinutes(150)).ToString()[^16..]);

        // Counted among some runs only (this process's share of the sweep).
        Assert.Equal(new SweepProgress(1, 1, TimeSpan.FromSeconds(10)), Sweep.Progress(store, "s", [first, grid[^1].Key], timer));
    }

    // A tiny budget: synthetic 1×28×28 data, a few batches per epoch.
    static readonly string[] Tiny = ["-m", "lenet5", "-d", "synthetic", "--max-batches", "4", "--batch-size", "32", "--lr", "0.01", "--samples-per-class", "2", "--threads", "1",
        "--seeds", "0,1", "--criteria", "magnitude,random", "--sparsities", "0.5", "--epochs", "1"];

    static double? HalfWidthPoints(IEnumerable<RunRecord> runs) =>
        SeedStatistics.ConfidenceHalfWidth(runs.Where(r => r.Status == RunStatus.Finished).Select(r => r.FinalTop1!.Value).ToList()) * 100;

    [Fact]
    public void Sweep_target_ci_adds_seeds_only_to_wide_cells_stops_at_the_limit_and_a_rerun_adds_nothing()
    {
        using var dir = new TempDirectory();
        var first = CliEndToEndTests.Run(["sweep", .. Tiny, "--results", dir.Path, "--no-report"]);
        Assert.True(first.Code == 0, $"exit {first.Code}\n{first.Out}\n{first.Err}");
        Assert.Contains("sweep: 0 of 6 runs done, 6 left, time left known after the first run", first.Out);
        Assert.Matches(@"sweep: 5 of 6 runs done, 1 left, about \d+ s left", first.Out);

        // A target between the narrowest and the widest cell's interval (below every one when they are equal):
        // which cells are wide is then known before the seeds are added.
        Dictionary<string, double> before;
        using (var store = new SqliteRunStore(dir.Path))
            before = store.All().GroupBy(r => r.Config.Criterion).ToDictionary(g => g.Key, g => HalfWidthPoints(g)!.Value);
        var (narrowest, widest) = (before.Values.Min(), before.Values.Max());
        var w = narrowest < widest ? (narrowest + widest) / 2 : narrowest / 2;
        var wide = before.Where(c => c.Value > w).Select(c => c.Key).ToHashSet();
        Assert.NotEmpty(wide);

        const int limit = 4;
        string[] adaptive = ["sweep", .. Tiny, "--results", dir.Path, "--target-ci", w.ToString("R", CultureInfo.InvariantCulture), "--max-seeds", limit.ToString(CultureInfo.InvariantCulture)];
        var second = CliEndToEndTests.Run(adaptive);
        Assert.True(second.Code == 0, $"exit {second.Code}\n{second.Out}\n{second.Err}");
        Assert.Contains($"seed 2 for {wide.Count} cell", second.Out);

        List<RunRecord> runs;
        using (var store = new SqliteRunStore(dir.Path)) runs = store.All().ToList();
        Assert.All(runs, r => Assert.Equal(RunStatus.Finished, r.Status));
        var atLimitWide = 0;
        foreach (var cell in runs.GroupBy(r => r.Config.Criterion))
        {
            var seeds = cell.Select(r => r.Config.Seed).Order().ToList();
            // The given seeds and then 2, 3, … without gaps, one more only while the interval was wider than the target.
            Assert.Equal(Enumerable.Range(0, seeds.Count).Select(i => (ulong)i), seeds);
            Assert.InRange(seeds.Count, 2, limit);
            if (!wide.Contains(cell.Key)) Assert.Equal(2, seeds.Count);
            for (var n = 2; n < seeds.Count; n++)
                Assert.True(HalfWidthPoints(cell.Where(r => r.Config.Seed < (ulong)n)) > w, $"{cell.Key} got seed {n} though narrow");
            var halfWidth = HalfWidthPoints(cell);
            Assert.True(seeds.Count == limit || !(halfWidth > w), $"{cell.Key} stopped at {seeds.Count} seeds at ±{halfWidth} pp");
            if (seeds.Count == limit && halfWidth > w) atLimitWide++;
        }
        var markdown = File.ReadAllText(Path.Combine(dir.Path, "report", "report.md"));
        Assert.Equal(atLimitWide > 0, markdown.Contains("Seed limit reached", StringComparison.Ordinal));

        // `pai report` told a target names the cells at its limit (every cell with a spread is wider than ±0.0001 pp at
        // 2 seeds); told none, it names none.
        var told = CliEndToEndTests.Run(["report", "--results", dir.Path, "--target-ci", "0.0001", "--max-seeds", "2"]);
        Assert.True(told.Code == 0, $"exit {told.Code}\n{told.Out}\n{told.Err}");
        Assert.Contains("Seed limit reached", File.ReadAllText(Path.Combine(dir.Path, "report", "report.md")));
        Assert.Contains("Seed limit reached", told.Out);
        var untold = CliEndToEndTests.Run(["report", "--results", dir.Path]);
        Assert.DoesNotContain("Seed limit reached", untold.Out + File.ReadAllText(Path.Combine(dir.Path, "report", "report.md")));

        // The same command again adds nothing, in this process or in local workers.
        var again = CliEndToEndTests.Run([.. adaptive, "--no-report"]);
        Assert.True(again.Code == 0, $"exit {again.Code}\n{again.Out}\n{again.Err}");
        Assert.Contains($"0 run, {runs.Count} skipped, 0 failed", again.Out);
        var workers = CliEndToEndTests.Run([.. adaptive, "--no-report", "--workers", "2"]);
        Assert.True(workers.Code == 0, $"exit {workers.Code}\n{workers.Out}\n{workers.Err}");
        Assert.Contains("sweep main: 0 runs added", workers.Out);
        Assert.DoesNotContain("seed 2 for", workers.Out + again.Out);
        using (var store = new SqliteRunStore(dir.Path)) Assert.Equal(runs.Count, store.All().Count);
    }

    [Fact]
    public void A_dry_run_with_a_target_lists_the_first_round_and_says_seeds_may_be_added()
    {
        string[] grid = ["sweep", "--dry-run", "--criteria", "snip", "--sparsities", "0.9", "--seeds", "0,1"];
        var plain = CliEndToEndTests.Run(grid);
        var target = CliEndToEndTests.Run([.. grid, "--target-ci", "1", "--max-seeds", "4"]);
        Assert.Equal(0, target.Code);
        Assert.EndsWith("4 runs\n", plain.Out);
        Assert.StartsWith(plain.Out[..plain.Out.LastIndexOf("4 runs", StringComparison.Ordinal)], target.Out); // the same runs
        Assert.Contains("4 runs in the first round; seeds 2–3 may be added to the cells whose 95% interval is wider than ±1 pp, up to 4 seeds a cell (at most 4 more runs)", target.Out);
        Assert.Contains("up to 10 seeds a cell (at most 16 more runs)", CliEndToEndTests.Run([.. grid, "--target-ci", "0.5"]).Out);
    }
}
