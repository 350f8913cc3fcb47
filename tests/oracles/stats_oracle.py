"""Statistics oracle for the report tests: SciPy computes what Pai.Host.Reports computes itself.

Reads one JSON object on stdin and writes one on stdout:
  quantiles: [[p, df], ...]        -> t.ppf(p, df)
  cdfs:      [[t, df], ...]        -> t.cdf(t, df)
  betas:     [[x, a, b], ...]      -> betainc(a, b, x)
  intervals: [[values...], ...]    -> half-width of the 95% t confidence interval of the mean
  welch:     [[a...], [b...]] ...  -> [t, p two-sided, p one-sided (a < b), df] of Welch's t-test
  paired:    [[a...], [b...]] ...  -> [t, p two-sided, p one-sided (a < b)] of the paired t-test
  holm:      [[p...], ...]         -> Holm's step-down adjusted p-values, in the order given
  holm_paired: [{"pairs": [[[a...], [b...]], ...], "alternative": "two-sided" | "less"}, ...]
                                   -> per family, the paired t-tests' p-values Holm-adjusted together

SciPy has no Holm correction: it is computed here by its definition (sort ascending, multiply the
i-th smallest, i from 0, by m - i, take the running maximum, cap at 1), independently of the C#.
"""
import json
import sys

import numpy as np
from scipy import special, stats

q = json.load(sys.stdin)
out = {
    "quantiles": [float(stats.t.ppf(p, df)) for p, df in q.get("quantiles", [])],
    "cdfs": [float(stats.t.cdf(t, df)) for t, df in q.get("cdfs", [])],
    "betas": [float(special.betainc(a, b, x)) for x, a, b in q.get("betas", [])],
    "intervals": [],
    "welch": [],
    "paired": [],
    "holm": [],
    "holm_paired": [],
}


def holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted

for values in q.get("intervals", []):
    v = np.asarray(values, dtype=float)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    out["intervals"].append(float((hi - lo) / 2))
for a, b in q.get("welch", []):
    two = stats.ttest_ind(a, b, equal_var=False)
    less = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = getattr(two, "df", (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    out["welch"].append([float(two.statistic), float(two.pvalue), float(less.pvalue), float(df)])
for a, b in q.get("paired", []):
    two = stats.ttest_rel(a, b)
    less = stats.ttest_rel(a, b, alternative="less")
    out["paired"].append([float(two.statistic), float(two.pvalue), float(less.pvalue)])
for p in q.get("holm", []):
    out["holm"].append([float(v) for v in holm(p)])
for family in q.get("holm_paired", []):
    alternative = family.get("alternative", "two-sided")
    p = [float(stats.ttest_rel(a, b, alternative=alternative).pvalue) for a, b in family["pairs"]]
    out["holm_paired"].append(holm(p))
json.dump(out, sys.stdout)
