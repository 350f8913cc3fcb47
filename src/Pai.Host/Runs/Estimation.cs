using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Pai.Host.Runs;

/// <summary>What `pai estimate` compares.</summary>
/// <param name="Criteria">Criteria whose masks are compared across probe seeds.</param>
/// <param name="Budgets">Hutchinson HVP budgets (over all scoring batches).</param>
/// <param name="Scopes">Probe scopes, e.g. "full", "layer", "0+1,2".</param>
/// <param name="Sparsities">Sparsities of the compared masks.</param>
/// <param name="ProbeSeeds">The two probe seeds.</param>
/// <param name="ReferenceSize">Exact reference diagonal by unit-vector HVPs for layers with at most this many weights.</param>
/// <param name="ClassPasses">Class passes K of the approximations (top K classes, K sampled classes) compared with the exact diagonal (piecewise-linear models).</param>
public sealed record EstimateOptions(IReadOnlyList<string> Criteria, IReadOnlyList<int> Budgets, IReadOnlyList<string> Scopes,
    IReadOnlyList<double> Sparsities, IReadOnlyList<ulong> ProbeSeeds, int ReferenceSize, IReadOnlyList<int>? ClassPasses = null);

/// <summary>Mask overlap of one criterion at one probe setting: Jaccard per sparsity.</summary>
public sealed record StabilityRow(string Criterion, string Scope, int Budget, int Hvps, IReadOnlyList<double> Jaccard);

/// <summary>Error of one layer's diagonal against its exact value (NaN where no exact reference exists).</summary>
public sealed record DiagonalErrorRow(string Estimator, string Layer, string Probes, double MedianRelativeSe, double RelativeError, double Spearman);

/// <summary>The answer of `pai estimate`.</summary>
public sealed record EstimateReport(string Header, IReadOnlyList<double> Sparsities, IReadOnlyList<StabilityRow> Stability, IReadOnlyList<DiagonalErrorRow> Errors);

/// <summary>
/// How far curvature-based masks and diagonals can be trusted: for every probe scope and HVP
/// budget the model is scored twice with independent probe seeds (same weights, same scoring data);
/// reports the Jaccard overlap of the top-k masks per criterion and sparsity, each layer's median
/// relative SE, and the error and Spearman correlation against the exact diagonal (every layer of a
/// piecewise-linear model; otherwise the classifier's closed form and small layers by unit-vector
/// HVPs), with the empirical and true
/// Fisher diagonals for comparison. Criteria scored on one probe seed share one Hessian diagonal
/// through their statistics.
/// </summary>
public static class Estimation
{
    /// <summary>Runs the comparison.</summary>
    public static EstimateReport Run(RunPlan plan, EstimateOptions o)
    {
        var config = plan.Config;
        if (o.ProbeSeeds.Count != 2) throw new ArgumentException($"give exactly two probe seeds to compare, got {o.ProbeSeeds.Count}");
        if (o.ReferenceSize < 0) throw new ArgumentException($"the reference size must be 0 (classifier only) or positive, got {o.ReferenceSize}");
        foreach (var s in o.Sparsities) Selection.validateSparsity(s);
        foreach (var b in o.Budgets) if (b < 1) throw new ArgumentException($"an HVP budget must be positive, got {b}");
        var scopes = o.Scopes.Select(s => ProbeScopeModule.parse(s) is var r && r.IsError ? throw new ArgumentException(r.ErrorValue) : r.ResultValue).ToList();
        var criteria = o.Criteria.Select(name => PaiPruning.ResolveCriterion(name, RunPlan.TemperaturesOf(config))).ToList();

        using var data = new DataCache();
        var train = data.For(config);
        if (o.ClassPasses?.FirstOrDefault(k => k > train.Classes) is > 0 and var tooMany)
            throw new ArgumentException($"--class-passes {tooMany} is more than the {train.Classes} classes of {config.Dataset}: take at most {train.Classes}");
        using var model = Runner.CreateModel(plan, train);
        using var scoring = train.Scoring(config.SamplesPerClass, config.Seed, config.ScoringBatchSize, model.Device);
        var batches = ListModule.OfSeq(scoring);
        var names = model.Prunable.Select(kv => kv.Key).ToList();
        var t = config.HutchinsonTemperature;
        var ranking = plan.Ranking;

        // Exact references (Hutchinson.exactReference) at the Hessian temperature for Ĥ, and at
        // T = 1 for the Fisher diagonals (which use T = 1).
        Dictionary<int, double[]> ExactAt(double temperature)
        {
            using var _ = new DisposeScope();
            return Hutchinson.exactReference(model, temperature, o.ReferenceSize, batches).ToDictionary(r => r.Item1, r => Tensors.toFloats(r.Item2));
        }
        var exact = ExactAt(t);
        var exactT1 = t == 1 ? exact : ExactAt(1);
        var header = $"{model.Name} on {config.Dataset}: {batches.Length} scoring batches, T = {t}, exact reference for {string.Join(", ", exact.Keys.Select(i => names[i]))}";

        var errors = new List<DiagonalErrorRow>();
        using (var _ = new DisposeScope())
        {
            var empirical = ListModule.ToArray(Estimators.fisherDiagonal(model, batches));
            var trueFisher = ListModule.ToArray(Estimators.trueFisherDiagonal(model, o.ProbeSeeds[0], batches));
            foreach (var (label, d) in new[] { ("empirical Fisher (vs T=1)", empirical), ("true Fisher/GN (vs T=1)", trueFisher) })
                foreach (var (i, x) in exactT1)
                {
                    var est = Tensors.toFloats(d[i]);
                    errors.Add(new DiagonalErrorRow(label, names[i], "-", double.NaN, Stability.relativeError(est, x), Stability.spearman(est, x)));
                }
        }

        var stability = new List<StabilityRow>();
        var hdiag = Statistic.HessianDiagonal(t);
        var shape = ListModule.OfSeq(train.InputShape.Dimensions);
        var classPasses = o.ClassPasses ?? [];
        if (classPasses.Count > 0)
        {
            if (!model.IsPiecewiseLinear)
                throw new ArgumentException($"--class-passes compares approximations with the exact Hessian diagonal, which {model.Name} does not have (it is not piecewise " +
                    "linear in each layer's weights): drop --class-passes");
            var context = new ScoringContext(model, batches, shape, o.ProbeSeeds[0],
                RunPlan.CurvatureOf(config with { Curvature = "exact" }), FSharpOption<Mask>.None);
            using var exactCache = new StatisticCache(context);
            foreach (var k in classPasses)
                foreach (var (label, approximation) in new (string, Func<FSharpList<Batch>, FSharpList<Tensor>>)[]
                {
                    ($"top-classes K={k}", b => PerSample.topClassesHessianDiagonal(model, t, k, b)),
                    ($"sampled-classes K={k}", b => PerSample.sampledClassesHessianDiagonal(model, t, k, o.ProbeSeeds[0], b)),
                })
                {
                    FSharpList<Tensor> approx;
                    using (var _ = new DisposeScope())
                        approx = ListModule.OfSeq(approximation(Estimators.mergeBatches(batches)).Select(x => x.DetachFromScope()));
                    using var cache = new StatisticCache(context, [Tuple.Create(hdiag.Name, new StatisticValue(approx, FSharpList<CurvatureDiagnostics>.Empty))]);
                    var layers = approx.ToArray();
                    for (var i = 0; i < names.Count; i++)
                    {
                        var est = Tensors.toFloats(layers[i]);
                        errors.Add(new DiagonalErrorRow(label, names[i], "-", double.NaN, Stability.relativeError(est, exact[i]), Stability.spearman(est, exact[i])));
                    }
                    foreach (var criterion in criteria)
                    {
                        var a = MasksOf(criterion, cache, ranking, config.KeepOnePerLayer, o.Sparsities);
                        var b = MasksOf(criterion, exactCache, ranking, config.KeepOnePerLayer, o.Sparsities);
                        stability.Add(new StabilityRow(criterion.Name, $"{label} vs exact", 0, 0, o.Sparsities.Select((_, j) => Stability.jaccard(a[j], b[j])).ToList()));
                    }
                }
        }
        foreach (var probeScope in scopes)
            foreach (var budget in o.Budgets)
            {
                var curvature = RunPlan.CurvatureOf(config with { Curvature = "hutchinson", ProbeScope = ProbeScopeModule.format(probeScope), HvpBudget = budget });
                var label = $"{ProbeScopeModule.format(probeScope)} B={budget}";
                var contexts = o.ProbeSeeds.Select(seed => new ScoringContext(model, batches, shape, seed, curvature, FSharpOption<Mask>.None)).ToList();
                var caches = contexts.Select(ctx => new StatisticCache(ctx)).ToList();
                try
                {
                    var first = caches[0].Get(hdiag);
                    var diagnostics = first.Diagnostics.Single();
                    for (var i = 0; i < names.Count; i++)
                    {
                        var l = diagnostics.Layers[i];
                        var est = Tensors.toFloats(first.Layers[i]);
                        var (relErr, rho) = exact.TryGetValue(i, out var x) ? (Stability.relativeError(est, x), Stability.spearman(est, x)) : (double.NaN, double.NaN);
                        errors.Add(new DiagonalErrorRow($"{CurvatureMethodModule.name(l.Method)} {label}", names[i], l.Probes.ToString(), l.MedianRelativeSe, relErr, rho));
                    }
                    foreach (var criterion in criteria)
                    {
                        var masks = caches.Select(cache => MasksOf(criterion, cache, ranking, config.KeepOnePerLayer, o.Sparsities)).ToList();
                        stability.Add(new StabilityRow(criterion.Name, ProbeScopeModule.format(probeScope), budget, diagnostics.Hvps,
                            o.Sparsities.Select((_, k) => Stability.jaccard(masks[0][k], masks[1][k])).ToList()));
                    }
                }
                finally
                {
                    foreach (var cache in caches) ((IDisposable)cache).Dispose();
                }
            }
        return new EstimateReport(header, o.Sparsities, stability, errors);
    }

    // The criterion's top-k masks at each sparsity, flattened, from the cache's statistics.
    static List<bool[]> MasksOf(Criterion c, StatisticCache cache, Ranking ranking, bool keepOne, IReadOnlyList<double> levels)
    {
        var scores = Criteria.scoreWith(cache, c);
        try
        {
            return levels.Select(s =>
            {
                var mask = Selection.select(ranking, 1 - s, keepOne, FSharpOption<Mask>.None, scores);
                try { return mask.Layers.SelectMany(l => l.Item2.Flatten().ToArray<bool>()).ToArray(); }
                finally { MaskModule.dispose(mask); }
            }).ToList();
        }
        finally
        {
            ScoresModule.dispose(scores);
        }
    }
}
