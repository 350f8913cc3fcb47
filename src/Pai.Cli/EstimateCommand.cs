using System.CommandLine;
using System.Globalization;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.Data;
using Pai.Host.Runs;
using Pai.Torch;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>
/// `pai estimate`: how far curvature-based masks and diagonals can be trusted. For every probe
/// scope and HVP budget it scores the model twice with independent probe seeds (same weights,
/// same scoring data) and reports the Jaccard overlap of the two top-k masks per criterion and
/// sparsity, each layer's median relative SE, and, where an exact diagonal is cheap (the
/// classifier's closed form, layers up to --reference-size by unit-vector HVPs), the relative
/// error and Spearman correlation of the estimate against it, with the empirical and true Fisher
/// diagonals for comparison.
/// </summary>
internal static class EstimateCommand
{
    internal static Command Create(ConfigOptions o)
    {
        var criteria = new Option<string>("--criteria") { Description = "comma-separated criteria whose masks are compared across probe seeds", DefaultValueFactory = _ => "hutch_obd,hts" };
        var budgets = new Option<string>("--budgets") { Description = "comma-separated Hutchinson HVP budgets (over all scoring batches)", DefaultValueFactory = _ => "1200" };
        var scopes = new Option<string>("--scopes") { Description = "semicolon-separated probe scopes: full, layer, or groups such as 0+1,2,3", DefaultValueFactory = _ => "full;layer" };
        var sparsities = new Option<string>("--sparsities") { Description = "comma-separated sparsities in [0, 1)", DefaultValueFactory = _ => string.Join(",", RunCommands.MainSparsities.Select(s => s.ToString(CultureInfo.InvariantCulture))) };
        var probeSeeds = new Option<string>("--probe-seeds") { Description = "the two probe seeds compared (the model and scoring data follow --seed)", DefaultValueFactory = _ => "1,2" };
        var referenceSize = new Option<int>("--reference-size") { Description = "exact reference diagonal by unit-vector HVPs for layers with at most this many weights (the classifier always has its closed form)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("estimate", "Mask stability and curvature error: Jaccard overlap of top-k masks between two probe seeds, per-layer relative SE, and error against exact diagonals where cheap.");
        foreach (var opt in new Option[] { criteria, budgets, scopes, sparsities, probeSeeds, referenceSize }) cmd.Options.Add(opt);
        o.AddPruning(cmd);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = o.Read(p, "dense", 0);
            Experiment.Validate(config);
            var names = List(p.GetValue(criteria)!, ',', "--criteria");
            var found = names.Select(PaiPruning.FindCriterion).ToList();
            var budgetList = List(p.GetValue(budgets)!, ',', "--budgets").Select(b => int.TryParse(b, out var v) && v > 0 ? v
                : throw new ArgumentException($"--budgets: '{b}' is not a positive number of HVPs (use e.g. 400,1200)")).ToList();
            var scopeList = List(p.GetValue(scopes)!, ';', "--scopes").Select(s => ProbeScopeModule.parse(s) is var r && r.IsError
                ? throw new ArgumentException($"--scopes: {r.ErrorValue}") : r.ResultValue).ToList();
            var levels = List(p.GetValue(sparsities)!, ',', "--sparsities").Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
                ? v : throw new ArgumentException($"--sparsities: '{s}' is not a number (use e.g. 0.9,0.98)")).ToList();
            foreach (var s in levels) Selection.validateSparsity(s);
            var seeds = List(p.GetValue(probeSeeds)!, ',', "--probe-seeds").Select(s => ulong.TryParse(s, out var v) ? v
                : throw new ArgumentException($"--probe-seeds: '{s}' is not a non-negative integer")).ToList();
            if (seeds.Count != 2) throw new ArgumentException($"--probe-seeds takes exactly two seeds to compare, got {seeds.Count}");
            var reference = p.GetValue(referenceSize);
            if (reference < 0) throw new ArgumentException($"--reference-size must be 0 (classifier only) or positive, got {reference}");

            using var data = new DataCache();
            var train = data.Get(config.Dataset, config.DataDirectory, DatasetSplit.Train, config.SkipBadImages);
            using var model = Experiment.CreateModel(config, train);
            using var scoring = ScoringSubset.Create(train, config.SamplesPerClass, config.Seed, config.ScoringBatchSize, device: model.Device);
            var batches = ListModule.OfSeq(scoring);
            var spec = Experiment.PruneSpecOf(config, found.FirstOrDefault() ?? PaiPruning.FindCriterion("hutch_obd"));
            var baseOptions = spec.Options;
            var layerNames = model.Prunable.Select(kv => kv.Key).ToList();
            var t = config.HutchinsonTemperature;

            // Exact references: the classifier's closed form, small layers by unit vectors. At the
            // Hutchinson temperature for Ĥ, and at T = 1 for the Fisher diagonals (which use T = 1).
            Dictionary<int, double[]> ExactAt(double temperature)
            {
                using var _ = new DisposeScope();
                var exact = new Dictionary<int, double[]>();
                var classifier = layerNames.IndexOf(model.ClassifierWeightName);
                if (classifier >= 0) exact[classifier] = Tensors.toFloats(Estimators.classifierDiagonal(model, temperature, batches).Item1);
                for (var i = 0; i < layerNames.Count; i++)
                    if (i != classifier && model.Prunable[i].Value.NumEl <= reference)
                        exact[i] = Tensors.toFloats(Estimators.unitVectorDiagonal(model, temperature, i, batches).Item1);
                return exact;
            }
            var exact = ExactAt(t);
            var exactT1 = t == 1 ? exact : ExactAt(1);
            Console.WriteLine($"{model.Name} on {config.Dataset}: {batches.Length} scoring batches, T = {t}, exact reference for {string.Join(", ", exact.Keys.Select(i => layerNames[i]))}");

            var stability = new Table().Border(TableBorder.Rounded).Title("mask overlap between probe seeds (Jaccard of kept sets)");
            stability.AddColumns(["criterion", "scope", "budget", "HVPs", .. levels.Select(s => $"J @ {s:P1}")]);
            var errors = new Table().Border(TableBorder.Rounded).Title("per-layer error of the diagonal (probe seed " + seeds[0] + ")");
            errors.AddColumns("estimator", "layer", "probes", "median rel. SE", "rel. error vs exact", "Spearman vs exact");

            // Empirical and true Fisher against the exact diagonal: no probes, one row each.
            using (var _ = new DisposeScope())
            {
                var empirical = ListModule.ToArray(Estimators.fisherDiagonal(model, batches));
                var trueFisher = ListModule.ToArray(Estimators.trueFisherDiagonal(model, seeds[0], batches));
                foreach (var (label, d) in new[] { ("empirical Fisher (vs T=1)", empirical), ("true Fisher/GN (vs T=1)", trueFisher) })
                    foreach (var (i, x) in exactT1)
                    {
                        var est = Tensors.toFloats(d[i]);
                        errors.AddRow(label, layerNames[i], "-", "-", F(Stability.relativeError(est, x)), F(Stability.spearman(est, x)));
                    }
            }

            foreach (var scope in scopeList)
                foreach (var budget in budgetList)
                {
                    var options = new CriterionOptions(baseOptions.Probes, scope, baseOptions.HutchinsonTemperature, baseOptions.GraspTemperature,
                        budget, baseOptions.AdaptiveTarget, baseOptions.ExactClassifier, baseOptions.ExactLayerSize);
                    var label = $"{ProbeScopeModule.format(scope)} B={budget}";
                    // One curvature estimate per probe seed, shared by every criterion of the Hutchinson family.
                    var estimates = new Dictionary<ulong, (FSharpList<Tensor> Diagonal, CurvatureDiagnostics Info)>();
                    try
                    {
                        foreach (var seed in seeds)
                        {
                            var (d, info) = Estimators.curvature(model, options, seed, batches);
                            estimates[seed] = (ListModule.OfSeq(d.Select(x => x.DetachFromScope())), info);
                        }
                        var (diagonal, diagnostics) = estimates[seeds[0]];
                        for (var i = 0; i < layerNames.Count; i++)
                        {
                            var l = diagnostics.Layers[i];
                            var est = Tensors.toFloats(diagonal[i]);
                            var (relErr, rho) = exact.TryGetValue(i, out var x) ? (F(Stability.relativeError(est, x)), F(Stability.spearman(est, x))) : ("-", "-");
                            errors.AddRow(Markup.Escape($"{l.Method} {label}"), layerNames[i], l.Probes.ToString(), F(l.MedianRelativeSe), relErr, rho);
                        }

                        var shared = Criteria.curvatureFamily(FuncConvert.FromFunc((ScoringContext ctx) =>
                            Tuple.Create(ListModule.OfSeq(estimates[ctx.Seed].Diagonal.Select(x => x.Clone())), ListModule.Singleton(estimates[ctx.Seed].Info))));
                        foreach (var criterion in found)
                        {
                            var c = criterion.Name switch
                            {
                                "hutch_diag" => shared.Item1,
                                "hutch_obd" => shared.Item2,
                                "hts" => shared.Item3,
                                _ => criterion,
                            };
                            var masks = seeds.Select(seed => MasksOf(c, model, batches, train, spec, options, seed, levels)).ToList();
                            var row = new List<string> { c.Name, Markup.Escape(ProbeScopeModule.format(scope)), budget.ToString(), diagnostics.Hvps.ToString() };
                            row.AddRange(levels.Select((_, k) => F(Stability.jaccard(masks[0][k], masks[1][k]))));
                            stability.AddRow(row.ToArray());
                        }
                    }
                    finally
                    {
                        foreach (var (d, _) in estimates.Values)
                            foreach (var x in d) x.Dispose();
                    }
                }
            AnsiConsole.Write(stability);
            AnsiConsole.Write(errors);
            return 0;
        }));
        return cmd;
    }

    // The criterion's global top-k masks at each sparsity, flattened, for one probe seed.
    static List<bool[]> MasksOf(Criterion c, Pai.Host.Models.Model model, FSharpList<Batch> batches, Dataset train, PruneSpec spec,
        CriterionOptions options, ulong seed, List<double> levels)
    {
        var ctx = new ScoringContext(model, batches, ListModule.OfSeq(train.InputShape), seed, options, FSharpOption<Mask>.None);
        var scores = c.Score.Invoke(ctx);
        try
        {
            return levels.Select(s =>
            {
                var mask = Selection.select(spec.Scope, 1 - s, spec.KeepOnePerLayer, FSharpOption<Mask>.None, scores);
                try { return mask.Layers.SelectMany(l => l.Item2.Flatten().ToArray<bool>()).ToArray(); }
                finally { MaskModule.dispose(mask); }
            }).ToList();
        }
        finally
        {
            ScoresModule.dispose(scores);
        }
    }

    static List<string> List(string text, char separator, string option)
    {
        var parts = text.Split(separator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (parts.Count == 0) throw new ArgumentException($"{option} needs at least one value");
        return parts;
    }

    static string F(double v) => double.IsNaN(v) ? "n/a" : double.IsPositiveInfinity(v) ? "∞" : v.ToString("G3", CultureInfo.InvariantCulture);
}
