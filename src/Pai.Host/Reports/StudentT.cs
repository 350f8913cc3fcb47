namespace Pai.Host.Reports;

/// <summary>
/// Student's t distribution with real degrees of freedom ν &gt; 0 (Welch's ν is not an integer):
/// density, distribution function through the regularized incomplete beta function, and quantile.
/// Written here (no statistics package): the tests check it against SciPy and closed forms.
/// </summary>
public static class StudentT
{
    /// <summary>ln Γ(x) for x &gt; 0: shifted to x ≥ 10 by Γ(x + 1) = xΓ(x), then Stirling's series (error below 1e-15).</summary>
    public static double LogGamma(double x)
    {
        if (!(x > 0)) throw new ArgumentOutOfRangeException(nameof(x), x, "ln Γ is taken of positive numbers only");
        var shift = 0.0;
        while (x < 10)
        {
            shift += Math.Log(x);
            x += 1;
        }
        var inv = 1 / x;
        var inv2 = inv * inv;
        // Stirling: (x − ½) ln x − x + ½ ln 2π + Σ B₂ₖ / (2k(2k − 1) x^(2k−1)).
        var series = inv * (1.0 / 12 + inv2 * (-1.0 / 360 + inv2 * (1.0 / 1260 + inv2 * (-1.0 / 1680 + inv2 * (1.0 / 1188 + inv2 * (-691.0 / 360360))))));
        return (x - 0.5) * Math.Log(x) - x + 0.5 * Math.Log(2 * Math.PI) + series - shift;
    }

    /// <summary>
    /// The regularized incomplete beta function I_x(a, b) for a, b &gt; 0 and x in [0, 1]: the
    /// continued fraction of the incomplete beta function evaluated by the modified Lentz method,
    /// on x itself when x &lt; (a + 1) / (a + b + 2) (where it converges fast), else through
    /// I_x(a, b) = 1 − I_{1−x}(b, a).
    /// </summary>
    public static double RegularizedBeta(double x, double a, double b)
    {
        if (!(a > 0) || !(b > 0)) throw new ArgumentOutOfRangeException(nameof(a), $"I_x(a, b) needs a, b > 0 (got a = {a}, b = {b})");
        if (double.IsNaN(x) || x < 0 || x > 1) throw new ArgumentOutOfRangeException(nameof(x), x, "I_x(a, b) needs x in [0, 1]");
        if (x == 0) return 0;
        if (x == 1) return 1;
        if (x > (a + 1) / (a + b + 2)) return 1 - RegularizedBeta(1 - x, b, a);
        // Prefactor x^a (1 − x)^b / (a B(a, b)), in logs.
        var front = Math.Exp(a * Math.Log(x) + b * Math.Log(1 - x) - (LogGamma(a) + LogGamma(b) - LogGamma(a + b))) / a;
        return front * BetaContinuedFraction(x, a, b);
    }

    /// <summary>1 / (1 + d₁ / (1 + d₂ / (1 + …))) with d₂ₘ₊₁ = −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)), d₂ₘ = m(b − m)x / ((a + 2m − 1)(a + 2m)).</summary>
    static double BetaContinuedFraction(double x, double a, double b)
    {
        const double tiny = 1e-300, eps = 1e-16;
        // Lentz: f = C·D products, starting from the leading "1 +" term.
        var c = 1.0;
        var d = 1 - (a + b) * x / (a + 1);
        if (Math.Abs(d) < tiny) d = tiny;
        d = 1 / d;
        var f = d;
        for (var m = 1; m <= 10_000; m++)
        {
            // Even step.
            var even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
            d = 1 + even * d;
            if (Math.Abs(d) < tiny) d = tiny;
            c = 1 + even / c;
            if (Math.Abs(c) < tiny) c = tiny;
            d = 1 / d;
            f *= d * c;
            // Odd step.
            var odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
            d = 1 + odd * d;
            if (Math.Abs(d) < tiny) d = tiny;
            c = 1 + odd / c;
            if (Math.Abs(c) < tiny) c = tiny;
            d = 1 / d;
            var delta = d * c;
            f *= delta;
            if (Math.Abs(delta - 1) < eps) return f;
        }
        throw new ArithmeticException($"the incomplete beta continued fraction did not converge (x = {x}, a = {a}, b = {b})");
    }

    static void CheckDf(double df)
    {
        if (!(df > 0) || double.IsPositiveInfinity(df))
            throw new ArgumentOutOfRangeException(nameof(df), df, "Student's t needs finite degrees of freedom > 0");
    }

    /// <summary>Density of Student's t with <paramref name="df"/> degrees of freedom at <paramref name="t"/>.</summary>
    public static double Pdf(double t, double df)
    {
        CheckDf(df);
        var logNorm = LogGamma((df + 1) / 2) - LogGamma(df / 2) - 0.5 * Math.Log(df * Math.PI);
        return Math.Exp(logNorm - (df + 1) / 2 * Math.Log(1 + t * t / df));
    }

    /// <summary>P(T ≤ t) for Student's t with <paramref name="df"/> degrees of freedom: one tail is ½ I_{ν/(ν+t²)}(ν/2, ½).</summary>
    public static double Cdf(double t, double df)
    {
        CheckDf(df);
        if (double.IsNaN(t)) throw new ArgumentOutOfRangeException(nameof(t), t, "t is NaN");
        if (double.IsPositiveInfinity(t)) return 1;
        if (double.IsNegativeInfinity(t)) return 0;
        var tail = 0.5 * RegularizedBeta(df / (df + t * t), df / 2, 0.5);
        return t > 0 ? 1 - tail : tail;
    }

    /// <summary>Two-sided p-value of <paramref name="t"/>: P(|T| ≥ |t|).</summary>
    public static double TwoSidedP(double t, double df)
    {
        CheckDf(df);
        if (double.IsNaN(t)) throw new ArgumentOutOfRangeException(nameof(t), t, "t is NaN");
        return double.IsInfinity(t) ? 0 : RegularizedBeta(df / (df + t * t), df / 2, 0.5);
    }

    /// <summary>P(T ≥ t) for t ≥ 0, from the incomplete beta function directly (no 1 − F cancellation in the tail).</summary>
    static double UpperTail(double t, double df) => 0.5 * RegularizedBeta(df / (df + t * t), df / 2, 0.5);

    /// <summary>
    /// The quantile: the t with P(T ≤ t) = <paramref name="p"/>, for p in (0, 1). By symmetry the
    /// upper tail q = min(p, 1 − p) is solved for t ≥ 0 (the tail itself, so small tails keep
    /// their precision): bracket by doubling, then Newton steps kept inside the bracket by
    /// bisection, to a relative accuracy of about 1e-14.
    /// </summary>
    public static double Quantile(double p, double df)
    {
        CheckDf(df);
        if (!(p > 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "a quantile needs 0 < p < 1");
        if (p == 0.5) return 0;
        var q = Math.Min(p, 1 - p);
        var sign = p > 0.5 ? 1 : -1;
        double lo = 0, hi = 1;
        while (UpperTail(hi, df) > q)
        {
            lo = hi;
            hi *= 2;
            if (hi > 1e300) return sign * double.PositiveInfinity;
        }
        var t = (lo + hi) / 2;
        for (var i = 0; i < 300; i++)
        {
            var f = UpperTail(t, df) - q; // decreasing in t
            if (f == 0) return sign * t;
            if (f > 0) lo = t; else hi = t;
            var next = t + f / Pdf(t, df);
            if (!(next > lo && next < hi)) next = (lo + hi) / 2;
            if (Math.Abs(next - t) <= 1e-15 * Math.Max(1, Math.Abs(t)) || hi - lo <= 1e-15 * Math.Max(1, hi)) return sign * next;
            t = next;
        }
        return sign * t;
    }
}

/// <summary>Which two-sample t-test compared two cells.</summary>
public enum TTestKind
{
    /// <summary>Paired t-test on the differences of runs with the same seed.</summary>
    Paired,
    /// <summary>Welch's unequal-variance t-test.</summary>
    Welch,
}

/// <summary>The outcome of a t-test of mean(A) − mean(B).</summary>
/// <param name="Kind">Paired or Welch.</param>
/// <param name="Difference">Mean of A − mean of B (for a paired test: the mean difference over the pairs).</param>
/// <param name="T">The t statistic (±∞ when the spread is zero and the difference is not).</param>
/// <param name="Df">Degrees of freedom (Welch–Satterthwaite for Welch; pairs − 1 for paired).</param>
/// <param name="P">Two-sided p-value.</param>
/// <param name="PLess">One-sided p-value of the alternative mean(A) &lt; mean(B).</param>
/// <param name="N">Pairs (paired) or the smaller sample size (Welch).</param>
public sealed record TTestResult(TTestKind Kind, double Difference, double T, double Df, double P, double PLess, int N);

/// <summary>Confidence intervals and two-sample tests across seeds.</summary>
public static class SeedStatistics
{
    /// <summary>
    /// Half-width of the two-sided Student t confidence interval of the mean:
    /// t_{(1+level)/2, n−1} · s / √n, s the sample standard deviation. Null for fewer than two values.
    /// </summary>
    public static double? ConfidenceHalfWidth(IReadOnlyCollection<double> values, double level = 0.95)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (!(level > 0 && level < 1)) throw new ArgumentOutOfRangeException(nameof(level), level, "the confidence level must be in (0, 1)");
        if (values.Count < 2) return null;
        var std = ReportTables.SampleStd(values)!.Value;
        return StudentT.Quantile((1 + level) / 2, values.Count - 1) * std / Math.Sqrt(values.Count);
    }

    /// <summary>
    /// Holm's step-down adjustment of a family of p-values, returned in the order given: sorted
    /// ascending, the i-th smallest (i from 0) is multiplied by m − i, a running maximum keeps the
    /// adjusted values in the same order as the raw ones, and each is capped at 1. Rejecting where
    /// the adjusted p is below α keeps the chance of any false rejection in the family at most α,
    /// whatever the dependence between the tests.
    /// </summary>
    public static double[] Holm(IReadOnlyList<double> p)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (p.Any(v => !(v >= 0 && v <= 1))) throw new ArgumentOutOfRangeException(nameof(p), "p-values must lie in [0, 1]");
        var order = Enumerable.Range(0, p.Count).OrderBy(i => p[i]).ToArray(); // stable: ties keep their order
        var adjusted = new double[p.Count];
        var running = 0.0;
        for (var rank = 0; rank < order.Length; rank++)
        {
            running = Math.Max(running, Math.Min(1, (order.Length - rank) * p[order[rank]]));
            adjusted[order[rank]] = running;
        }
        return adjusted;
    }

    /// <summary>From t and df: ±∞ for a zero spread with a non-zero difference, 0 when both are zero.</summary>
    static TTestResult Result(TTestKind kind, double difference, double se, double df, int n)
    {
        if (se == 0)
        {
            if (difference == 0) return new(kind, 0, 0, df, 1, 0.5, n);
            var inf = difference > 0 ? double.PositiveInfinity : double.NegativeInfinity;
            return new(kind, difference, inf, df, 0, difference < 0 ? 0 : 1, n);
        }
        var t = difference / se;
        return new(kind, difference, t, df, StudentT.TwoSidedP(t, df), StudentT.Cdf(t, df), n);
    }

    /// <summary>
    /// Welch's t-test of mean(a) − mean(b): t = (x̄ₐ − x̄_b) / √(sₐ²/nₐ + s_b²/n_b) with
    /// Welch–Satterthwaite degrees of freedom. Needs at least two values on each side.
    /// </summary>
    public static TTestResult Welch(IReadOnlyCollection<double> a, IReadOnlyCollection<double> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count < 2 || b.Count < 2) throw new ArgumentException($"Welch's t-test needs two or more values on each side (got {a.Count} and {b.Count})");
        var va = Math.Pow(ReportTables.SampleStd(a)!.Value, 2) / a.Count;
        var vb = Math.Pow(ReportTables.SampleStd(b)!.Value, 2) / b.Count;
        var se = Math.Sqrt(va + vb);
        var df = se == 0 ? a.Count + b.Count - 2 : Math.Pow(va + vb, 2) / (va * va / (a.Count - 1) + vb * vb / (b.Count - 1));
        return Result(TTestKind.Welch, a.Average() - b.Average(), se, df, Math.Min(a.Count, b.Count));
    }

    /// <summary>
    /// Paired t-test of the mean of the differences aᵢ − bᵢ: t = d̄ / (s_d / √n), n − 1 degrees of
    /// freedom. Needs at least two pairs.
    /// </summary>
    public static TTestResult Paired(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count) throw new ArgumentException($"a paired t-test needs as many values on each side (got {a.Count} and {b.Count})");
        if (a.Count < 2) throw new ArgumentException($"a paired t-test needs two or more pairs (got {a.Count})");
        var d = a.Zip(b, (x, y) => x - y).ToList();
        var se = ReportTables.SampleStd(d)!.Value / Math.Sqrt(d.Count);
        return Result(TTestKind.Paired, d.Average(), se, d.Count - 1, d.Count);
    }
}
