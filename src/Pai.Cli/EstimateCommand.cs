using System.CommandLine;
using System.Globalization;
using Pai.Host;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai estimate`: how far curvature-based masks and diagonals can be trusted (see <see cref="Estimation"/>).</summary>
internal static class EstimateCommand
{
    internal static Command Create()
    {
        var criteria = new Option<string>("--criteria") { Description = "comma-separated criteria whose masks are compared across probe " +
            "seeds", DefaultValueFactory = _ => "hutch_obd,hts" };
        var budgets = new Option<string>("--budgets") { Description = "comma-separated Hutchinson HVP budgets (over all scoring batches)", DefaultValueFactory = _ => "1200" };
        var scopes = new Option<string>("--scopes") { Description = "semicolon-separated probe scopes: full, layer, or groups such as " +
            "0+1,2,3", DefaultValueFactory = _ => "full;layer" };
        var sparsities = new Option<string>("--sparsities") { Description = "comma-separated sparsities in [0, 1)", DefaultValueFactory = _ => "0.9,0.98,0.995" };
        var probeSeeds = new Option<string>("--probe-seeds") { Description = "the two probe seeds compared (the model and scoring data follow " +
            "--seed)", DefaultValueFactory = _ => "1,2" };
        var referenceSize = new Option<int>("--reference-size") { Description = "models that are not piecewise linear (vit-tiny): exact reference diagonal by unit-vector HVPs " +
            "for layers with at most this many weights (the classifier always has its closed form); piecewise-linear models get the exact diagonal of every " +
                "layer", DefaultValueFactory = _ => 0 };
        var classPasses = new Option<string>("--class-passes") { Description = "comma-separated K: compare two approximations of the exact Hessian diagonal with K class " +
            "passes, each sample's K most probable classes and K classes drawn at random (scaled, unbiased), with the exact one: diagonal error and mask overlap " +
                "(piecewise-linear models)" };
        var cmd = new Command("estimate", "Mask stability and curvature error: Jaccard overlap of top-k masks between two probe seeds, per-layer relative SE, and error against " +
            "exact diagonals where cheap.");
        foreach (var opt in new Option[] { criteria, budgets, scopes, sparsities, probeSeeds, referenceSize, classPasses }) cmd.Options.Add(opt);
        var o = new ConfigOptions(cmd, SettingGroup.Data | SettingGroup.Scoring | SettingGroup.Pruning,
            except: [nameof(RunConfig.Criterion), nameof(RunConfig.Sparsity), nameof(RunConfig.Rounds), nameof(RunConfig.Ablation), nameof(RunConfig.Predictor)]);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var options = new EstimateOptions(
                List(p.GetValue(criteria)!, ',', "--criteria"),
                List(p.GetValue(budgets)!, ',', "--budgets").Select(b => int.TryParse(b, out var v) && v > 0 ? v
                    : throw new ArgumentException($"--budgets: '{b}' is not a positive number of HVPs (use e.g. 400,1200)")).ToList(),
                List(p.GetValue(scopes)!, ';', "--scopes"),
                List(p.GetValue(sparsities)!, ',', "--sparsities").Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
                    ? v : throw new ArgumentException($"--sparsities: '{s}' is not a number (use e.g. 0.9,0.98)")).ToList(),
                List(p.GetValue(probeSeeds)!, ',', "--probe-seeds").Select(s => ulong.TryParse(s, out var v) ? v
                    : throw new ArgumentException($"--probe-seeds: '{s}' is not a non-negative integer")).ToList(),
                p.GetValue(referenceSize),
                p.GetValue(classPasses) is { } k ? List(k, ',', "--class-passes").Select(x => int.TryParse(x, out var v) && v > 0 ? v
                    : throw new ArgumentException($"--class-passes: '{x}' is not a positive number of classes (use e.g. 1,5,10)")).ToList() : null);
            var report = PaiHost.Estimate(o.Read(p), options);
            Console.WriteLine(report.Header);
            var stability = new Table().Border(TableBorder.Rounded).Title("mask overlap (Jaccard of kept sets) between two probe seeds, or of an approximation and the exact " +
                "diagonal");
            stability.AddColumns(["criterion", "scope", "budget", "HVPs", .. report.Sparsities.Select(s => $"J @ {s:P1}")]);
            foreach (var r in report.Stability)
                stability.AddRow([Markup.Escape(r.Criterion), Markup.Escape(r.Scope), r.Budget.ToString(), r.Hvps.ToString(), .. r.Jaccard.Select(F)]);
            var errors = new Table().Border(TableBorder.Rounded).Title($"per-layer error of the diagonal (probe seed {options.ProbeSeeds[0]})");
            errors.AddColumns("estimator", "layer", "probes", "median rel. SE", "rel. error vs exact", "Spearman vs exact");
            foreach (var e in report.Errors)
                errors.AddRow(Markup.Escape(e.Estimator), Markup.Escape(e.Layer), e.Probes, double.IsNaN(e.MedianRelativeSe) ? "-" : F(e.MedianRelativeSe),
                    double.IsNaN(e.RelativeError) ? "-" : F(e.RelativeError), double.IsNaN(e.Spearman) ? "-" : F(e.Spearman));
            AnsiConsole.Write(stability);
            AnsiConsole.Write(errors);
            return 0;
        }));
        return cmd;
    }

    static List<string> List(string text, char separator, string option)
    {
        var parts = text.Split(separator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (parts.Count == 0) throw new ArgumentException($"{option} needs at least one value");
        return parts;
    }

    static string F(double v) => double.IsNaN(v) ? "n/a" : double.IsPositiveInfinity(v) ? "∞" : v.ToString("G3", CultureInfo.InvariantCulture);
}
