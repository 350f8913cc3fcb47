using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pai.Host.Reports;

namespace Pai.Host.Tests;

/// <summary>
/// Student's t, the confidence intervals and the t-tests of the report, against closed forms and
/// against SciPy (Debian's python3-scipy, run as an independent oracle).
/// </summary>
public class StatisticsTests
{
    [Fact]
    public void Log_gamma_matches_known_values()
    {
        Assert.Equal(0.5 * Math.Log(Math.PI), StudentT.LogGamma(0.5), 14); // Γ(½) = √π
        Assert.Equal(0, StudentT.LogGamma(1), 14);
        Assert.Equal(0, StudentT.LogGamma(2), 14);
        Assert.Equal(Math.Log(24), StudentT.LogGamma(5), 13); // Γ(5) = 4!
        Assert.Equal(Math.Log(3628800), StudentT.LogGamma(11), 12); // Γ(11) = 10!
        Assert.Equal(Math.Log(0.75 * Math.Sqrt(Math.PI)), StudentT.LogGamma(2.5), 14); // Γ(5/2) = ¾√π
        Assert.Throws<ArgumentOutOfRangeException>(() => StudentT.LogGamma(0));
    }

    [Fact]
    public void T_distribution_matches_the_closed_forms_of_one_and_two_degrees_of_freedom()
    {
        foreach (var t in new[] { -30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 100.0 })
        {
            // ν = 1 is the Cauchy distribution; ν = 2 has F(t) = ½ + t / (2√(2 + t²)).
            Assert.Equal(0.5 + Math.Atan(t) / Math.PI, StudentT.Cdf(t, 1), 13);
            Assert.Equal(0.5 + t / (2 * Math.Sqrt(2 + t * t)), StudentT.Cdf(t, 2), 13);
            Assert.Equal(1 / (Math.PI * (1 + t * t)), StudentT.Pdf(t, 1), 13);
        }
        foreach (var p in new[] { 0.001, 0.025, 0.3, 0.5, 0.8, 0.975, 0.9995 })
        {
            Assert.Equal(Math.Tan(Math.PI * (p - 0.5)), StudentT.Quantile(p, 1), 9);
            Assert.Equal((2 * p - 1) / Math.Sqrt(2 * p * (1 - p)), StudentT.Quantile(p, 2), 10);
        }
        // The familiar table values: t₀.₉₇₅ for 1, 2, 4 and 30 degrees of freedom.
        Assert.Equal(12.706204736174698, StudentT.Quantile(0.975, 1), 9);
        Assert.Equal(4.302652729749464, StudentT.Quantile(0.975, 2), 11);
        Assert.Equal(2.7764451051977987, StudentT.Quantile(0.975, 4), 11);
        Assert.Equal(2.0422724563012373, StudentT.Quantile(0.975, 30), 11);
        Assert.Equal(1.0, StudentT.TwoSidedP(0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => StudentT.Quantile(1, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => StudentT.Cdf(1, 0));
    }

    [Fact]
    public void Confidence_interval_and_tests_match_hand_computed_cases()
    {
        // {1, 2, 4}: mean 7/3, s² = 7/3, half-width t(0.975, 2) · √(7/9).
        Assert.Equal(4.302652729749464 * Math.Sqrt(7.0 / 9), SeedStatistics.ConfidenceHalfWidth([1.0, 2, 4])!.Value, 12);
        Assert.Null(SeedStatistics.ConfidenceHalfWidth([0.9]));

        // Paired, differences {1, 1, 4}: d̄ = 2, s_d = √3, t = 2 / (√3 / √3) = 2 with 2 df; two-sided p = 1 − 2/√6 (closed form for ν = 2).
        var paired = SeedStatistics.Paired([2.0, 3, 7], [1.0, 2, 3]);
        Assert.Equal(TTestKind.Paired, paired.Kind);
        Assert.Equal(2, paired.Difference, 14);
        Assert.Equal(2, paired.T, 12);
        Assert.Equal(2, paired.Df);
        Assert.Equal(1 - 2 / Math.Sqrt(6), paired.P, 12);
        Assert.Equal(0.5 + 1 / Math.Sqrt(6), paired.PLess, 12);

        // Welch with equal sizes and variances: t = Δ / √(2s²/n), df = 2(n − 1).
        var welch = SeedStatistics.Welch([1.0, 2, 3], [3.0, 4, 5]);
        Assert.Equal(TTestKind.Welch, welch.Kind);
        Assert.Equal(-2 / Math.Sqrt(2.0 / 3), welch.T, 12);
        Assert.Equal(4, welch.Df, 12);

        // Zero spread: a sure difference, or none.
        Assert.Equal(0, SeedStatistics.Paired([1.0, 2], [0.5, 1.5]).P);
        Assert.Equal(1, SeedStatistics.Welch([1.0, 1], [1.0, 1]).P);
        Assert.Throws<ArgumentException>(() => SeedStatistics.Welch([1.0], [1.0, 2]));
        Assert.Throws<ArgumentException>(() => SeedStatistics.Paired([1.0, 2], [1.0]));
    }

    [Fact]
    public void Holm_multiplies_the_sorted_p_values_by_the_tests_left_keeps_them_ordered_and_caps_them_at_one()
    {
        // Sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 → 0.06 (running maximum).
        Assert.Equal([0.03, 0.06, 0.06, 0.02], SeedStatistics.Holm([0.01, 0.04, 0.03, 0.005]), new ToleranceComparer(1e-15));
        Assert.Equal([1.0, 1.0], SeedStatistics.Holm([0.6, 0.7])); // 1.2 and 0.7 → capped, then the running maximum
        Assert.Equal([0.3, 0.3, 0.3], SeedStatistics.Holm([0.1, 0.1, 0.2]), new ToleranceComparer(1e-15)); // 0.3, then 0.2 and 0.2 lifted by the running maximum
        Assert.Equal([0.04], SeedStatistics.Holm([0.04])); // a family of one is not corrected
        Assert.Empty(SeedStatistics.Holm([]));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeedStatistics.Holm([0.1, double.NaN]));
    }

    sealed class ToleranceComparer(double tolerance) : IEqualityComparer<double>
    {
        public bool Equals(double x, double y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(double obj) => 0;
    }

    [Fact]
    public void Holm_adjusted_p_values_of_the_report_match_the_oracle()
    {
        // The definition on fixed inputs, computed independently in Python.
        double[][] families = [[0.01, 0.04, 0.03, 0.005], [0.2, 0.001, 0.049, 0.5, 0.0125, 0.9], [0.3], [0.02, 0.02, 0.5]];
        // The report's families: SciPy's paired t-tests of the cells' top-1 over the same seeds, adjusted together.
        var groups = ReportTables.Aggregate(ReportStatisticsTests.Grid(5));
        var vsRandom = groups.Where(g => g.VsRandom?.Test is not null).ToList();
        var vsBest98 = groups.Where(g => g.Sparsity == 0.98 && g.VsBest?.Test is not null).ToList();
        var ablations = groups.Where(g => g.VsCriterion?.Test is not null).ToList();
        Assert.True(vsRandom.Count >= 6 && vsBest98.Count == 2 && ablations.Count == 4);
        double[] Top1(ResultGroup g) => [.. g.Runs.OrderBy(r => r.Config.Seed).Select(r => r.FinalTop1!.Value)];
        JsonNode Family(IEnumerable<(ResultGroup A, ResultGroup B)> pairs, string alternative) => new JsonObject
        {
            ["pairs"] = new JsonArray([.. pairs.Select(p => (JsonNode?)Rows([Top1(p.A), Top1(p.B)]))]),
            ["alternative"] = alternative,
        };
        var scipy = Scipy(new JsonObject
        {
            ["holm"] = Rows(families),
            ["holm_paired"] = new JsonArray(
                Family(vsRandom.Select(g => (g, g.VsRandom!.Reference)), "two-sided"),
                Family(vsBest98.Select(g => (g, g.VsBest!.Reference)), "two-sided"),
                Family(ablations.Select(g => (g, g.VsCriterion!.Reference)), "less")),
        });
        for (var f = 0; f < families.Length; f++)
        {
            var ours = SeedStatistics.Holm(families[f]);
            for (var i = 0; i < ours.Length; i++) Close((double)scipy["holm"]![f]![i]!, ours[i], 1e-14, $"Holm family {f} p {i}");
        }
        var reported = new[]
        {
            vsRandom.Select(g => g.VsRandom!).ToList(), vsBest98.Select(g => g.VsBest!).ToList(), ablations.Select(g => g.VsCriterion!).ToList(),
        };
        for (var f = 0; f < reported.Length; f++)
            for (var i = 0; i < reported[f].Count; i++)
            {
                Assert.Equal(reported[f].Count, reported[f][i].FamilySize);
                Close((double)scipy["holm_paired"]![f]![i]!, reported[f][i].HolmP!.Value, 1e-9, $"report family {f} comparison {i}");
            }
    }

    static JsonNode Scipy(JsonObject query)
    {
        var script = Path.Combine(TorchOracle.OracleDirectory, "stats_oracle.py");
        var psi = new ProcessStartInfo(TorchOracle.Python, [script]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(query.ToJsonString());
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"the SciPy oracle failed ({p.ExitCode}); is python3-scipy installed (scripts/bootstrap.sh --tests)?\n{stderr}");
        return JsonNode.Parse(stdout.Result)!;
    }

    static JsonArray Rows(IEnumerable<double[]> rows) => new([.. rows.Select(r => (JsonNode?)new JsonArray([.. r.Select(v => (JsonNode?)v)]))]);

    static void Close(double expected, double actual, double relative, string what)
    {
        var tolerance = Math.Max(1e-12, relative * Math.Abs(expected)); // absolute near 0 (SciPy's median of t is 8e-17, ours 0)
        Assert.True(Math.Abs(expected - actual) <= tolerance, $"{what}: SciPy {expected:R}, ours {actual:R}");
    }

    [Fact]
    public void T_distribution_tests_and_intervals_match_scipy()
    {
        // Degrees of freedom as they occur in reports: small integers (seeds − 1) and Welch's fractions.
        double[] dfs = [1, 2, 3, 4, 7.3, 9, 29, 2.71828];
        double[] ps = [1e-6, 0.001, 0.025, 0.05, 0.3, 0.5, 0.77, 0.95, 0.975, 0.999];
        double[] ts = [-40, -6.2, -2.1, -0.4, 0, 0.05, 1.3, 3.7, 12, 250];
        var quantiles = (from df in dfs from p in ps select new[] { p, df }).ToList();
        var cdfs = (from df in dfs from t in ts select new[] { t, df }).ToList();
        var betas = new List<double[]> { new[] { 0.3, 2.0, 3.0 }, new[] { 0.999, 0.5, 7.5 }, new[] { 1e-4, 3.5, 0.5 }, new[] { 0.6, 40.0, 25.0 } };
        // Top-1 accuracies of 2, 3 and 5 seeds, one with unequal spreads, one with a tiny difference.
        var samples = new List<(double[] A, double[] B)>
        {
            ([0.9012, 0.9048], [0.8871, 0.8933]),
            ([0.8123, 0.8301, 0.8210], [0.8011, 0.8105, 0.8302]),
            ([0.88, 0.91, 0.90, 0.87, 0.905], [0.86, 0.9105, 0.875, 0.8601, 0.89]),
            ([0.7000, 0.7001, 0.7003, 0.6999, 0.7002], [0.6, 0.75, 0.71, 0.66, 0.8]),
        };
        var query = new JsonObject
        {
            ["quantiles"] = Rows(quantiles),
            ["cdfs"] = Rows(cdfs),
            ["betas"] = Rows(betas),
            ["intervals"] = Rows(samples.SelectMany(s => new[] { s.A, s.B })),
            ["welch"] = new JsonArray([.. samples.Select(s => (JsonNode?)Rows([s.A, s.B]))]),
            ["paired"] = new JsonArray([.. samples.Select(s => (JsonNode?)Rows([s.A, s.B]))]),
        };
        var scipy = Scipy(query);

        // SciPy's t.ppf is good to about 1e-8 relative in far tails (at p = 1e-6, ν = 3 its quantile has
        // P(T ≤ t) = 0.99999999299e-6 by its own cdf); ours is checked tighter by the round trip below.
        for (var i = 0; i < quantiles.Count; i++)
        {
            var (p, df) = (quantiles[i][0], quantiles[i][1]);
            var t = StudentT.Quantile(p, df);
            Close((double)scipy["quantiles"]![i]!, t, 1e-8, $"t quantile p={p} df={df}");
            Close(p, StudentT.Cdf(t, df), 1e-12, $"round trip p={p} df={df}");
        }
        for (var i = 0; i < cdfs.Count; i++)
            Close((double)scipy["cdfs"]![i]!, StudentT.Cdf(cdfs[i][0], cdfs[i][1]), 1e-10, $"t cdf t={cdfs[i][0]} df={cdfs[i][1]}");
        for (var i = 0; i < betas.Count; i++)
            Close((double)scipy["betas"]![i]!, StudentT.RegularizedBeta(betas[i][0], betas[i][1], betas[i][2]), 1e-11, $"I_x(a, b) {string.Join(", ", betas[i])}");
        var intervals = samples.SelectMany(s => new[] { s.A, s.B }).ToList();
        for (var i = 0; i < intervals.Count; i++)
            Close((double)scipy["intervals"]![i]!, SeedStatistics.ConfidenceHalfWidth(intervals[i])!.Value, 1e-10, $"95% CI of sample {i}");
        for (var i = 0; i < samples.Count; i++)
        {
            var w = SeedStatistics.Welch(samples[i].A, samples[i].B);
            var expected = scipy["welch"]![i]!.AsArray().Select(v => (double)v!).ToArray();
            Close(expected[0], w.T, 1e-10, $"Welch t {i}");
            Close(expected[1], w.P, 1e-9, $"Welch p {i}");
            Close(expected[2], w.PLess, 1e-9, $"Welch one-sided p {i}");
            Close(expected[3], w.Df, 1e-10, $"Welch df {i}");
            var p = SeedStatistics.Paired(samples[i].A, samples[i].B);
            var expectedPaired = scipy["paired"]![i]!.AsArray().Select(v => (double)v!).ToArray();
            Close(expectedPaired[0], p.T, 1e-10, $"paired t {i}");
            Close(expectedPaired[1], p.P, 1e-9, $"paired p {i}");
            Close(expectedPaired[2], p.PLess, 1e-9, $"paired one-sided p {i}");
        }
    }
}
