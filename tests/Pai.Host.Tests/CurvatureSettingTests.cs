using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Pai.Host.Tests;

/// <summary>
/// The --curvature setting: how auto is settled per model, that the estimator is part of the run
/// and statistic keys (an exact diagonal is never read back as Hutchinson's or the reverse) while
/// Hutchinson's runs and every criterion without hdiag keep their keys, and what runs record.
/// </summary>
public sealed class CurvatureSettingTests
{
    // The pinned hts configuration of StoreTests (key 51038f657a5e02ff before --curvature existed).
    static readonly RunConfig Hts = new()
    {
        Criterion = "hts", Sparsity = 0.98, WarmupBatches = 391, Schedule = "multistep", Milestones = [30, 60],
    };

    [Fact]
    public void Auto_is_exact_on_piecewise_linear_models_and_a_new_key_while_hutchinson_keeps_the_old_one()
    {
        var exact = RunPlan.Canonical(Hts);
        Assert.Equal("exact", exact.Curvature);
        Assert.Contains("\"curvature\":\"exact\"", exact.CanonicalJson());
        Assert.NotEqual("51038f657a5e02ff", exact.Key);

        var hutchinson = RunPlan.Canonical(Hts with { Curvature = "hutchinson" });
        Assert.Equal("hutchinson", hutchinson.Curvature);
        Assert.Equal("51038f657a5e02ff", hutchinson.Key);
        Assert.NotEqual(exact.StatisticsKey, hutchinson.StatisticsKey);
        Assert.NotEqual(StatisticStore.CacheKey(exact, "hdiag(T=200)"), StatisticStore.CacheKey(hutchinson, "hdiag(T=200)"));
    }

    [Fact]
    public void Criteria_without_hdiag_keep_their_keys_whatever_the_curvature()
    {
        var snip = new RunConfig { Model = "vgg16", Dataset = "cifar10", Criterion = "snip", Sparsity = 0.9, Seed = 1 };
        foreach (var curvature in new[] { "auto", "exact", "hutchinson" })
            Assert.Equal("05abc347bce7a912", RunPlan.Canonical(snip with { Curvature = curvature }).Key);
        Assert.Equal("44136fa355b3678a", RunPlan.Canonical(new RunConfig()).Key);
    }

    [Fact]
    public void Stored_configurations_read_back_with_their_estimator()
    {
        foreach (var curvature in new[] { "exact", "hutchinson" })
        {
            var c = RunPlan.Canonical(Hts with { Curvature = curvature });
            var back = RunConfig.FromJson(c.CanonicalJson());
            Assert.Equal(curvature, back.Curvature);
            Assert.Equal(c.Key, back.Key);
            Assert.Equal(c.Key, RunPlan.Canonical(back).Key);
        }
        // A run stored before the setting existed was Hutchinson's.
        Assert.Equal("hutchinson", RunConfig.FromJson("""{"criterion":"hutch_obd","sparsity":0.9}""").Curvature);
    }

    [Fact]
    public void Hutchinson_options_or_a_model_that_is_not_piecewise_linear_settle_auto_on_hutchinson()
    {
        var obd = new RunConfig { Criterion = "hutch_obd", Sparsity = 0.9 };
        Assert.Equal("hutchinson", RunPlan.Canonical(obd with { Model = "vit-tiny", Dataset = "cifar10" }).Curvature);
        Assert.Equal("hutchinson", RunPlan.Canonical(obd with { ProbeScope = "layer" }).Curvature);
        Assert.Equal("hutchinson", RunPlan.Canonical(obd with { Probes = 2 }).Curvature);
        Assert.Equal("exact", RunPlan.Canonical(obd with { Model = "resnet20", Dataset = "cifar10" }).Curvature);
    }

    [Fact]
    public void Exact_refuses_the_vit_and_hutchinson_options_naming_the_fix()
    {
        var obd = new RunConfig { Criterion = "hutch_obd", Sparsity = 0.9, Curvature = "exact" };
        var vit = Assert.Throws<ArgumentException>(() => PaiHost.Configure(obd with { Model = "vit-tiny", Dataset = "cifar10" }));
        Assert.Contains("--curvature hutchinson", vit.Message);
        var probes = Assert.Throws<ArgumentException>(() => PaiHost.Configure(obd with { Probes = 20 }));
        Assert.Contains("--probes", probes.Message);
        Assert.Contains("--curvature hutchinson", probes.Message);
        var unsettled = Assert.Throws<ArgumentException>(() => RunPlan.Validate(obd with { Curvature = "auto" }));
        Assert.Contains("configure", unsettled.Message);
    }

    [Fact]
    public void Curvature_classes_are_part_of_an_exact_key_refused_with_hutchinson_and_ignored_without_hdiag()
    {
        var exact = RunPlan.Canonical(Hts);
        var top3 = RunPlan.Canonical(Hts with { CurvatureClasses = 3 });
        Assert.Equal("exact", top3.Curvature);
        Assert.Contains("\"curvature_classes\":3", top3.CanonicalJson());
        Assert.NotEqual(exact.Key, top3.Key);
        Assert.NotEqual(exact.StatisticsKey, top3.StatisticsKey);
        Assert.Equal(3, RunPlan.CurvatureOf(top3).Classes);

        foreach (var hutchinson in new[] { Hts with { Curvature = "hutchinson" }, Hts with { ProbeScope = "layer" } })
        {
            var e = Assert.Throws<ArgumentException>(() => RunPlan.Canonical(hutchinson with { CurvatureClasses = 3 }));
            Assert.Contains("drop --curvature-classes", e.Message);
        }
        var vit = Assert.Throws<ArgumentException>(() => RunPlan.Canonical(Hts with { Model = "vit-tiny", Dataset = "cifar10", CurvatureClasses = 3 }));
        Assert.Contains("not piecewise linear", vit.Message);

        // A criterion without hdiag: the stray option changes nothing.
        var snip = new RunConfig { Model = "vgg16", Dataset = "cifar10", Criterion = "snip", Sparsity = 0.9, Seed = 1 };
        Assert.Equal("05abc347bce7a912", RunPlan.Canonical(snip with { CurvatureClasses = 3 }).Key);
    }

    [Fact]
    public void The_zoo_knows_which_models_are_piecewise_linear_as_the_models_say()
    {
        foreach (var name in ModelZoo.Names)
        {
            var small = name == "lenet300" || name == "lenet5" ? new InputShape(1, 28, 28) : InputShape.Cifar;
            using var m = ModelZoo.Create(name, new ModelOptions { InputShape = small });
            Assert.True(m.IsPiecewiseLinear == ModelZoo.IsPiecewiseLinear(name), name);
        }
        Assert.False(ModelZoo.IsPiecewiseLinear("vit-tiny"));
    }

    [Fact]
    public void A_run_records_which_estimator_its_hessian_diagonal_took()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        using var data = new DataCache();
        foreach (var curvature in new[] { "exact", "hutchinson" })
        {
            var c = RunPlan.Canonical(new RunConfig
            {
                Dataset = "synthetic", Criterion = "hutch_obd", Sparsity = 0.9, SamplesPerClass = 1, Curvature = curvature,
            });
            var train = data.Get(c.Dataset, null, DatasetSplit.Train);
            using var m = Runner.CreateModel(RunPlan.Of(c), train);
            var result = Runner.Prune(RunPlan.Of(c), m, train, store, _ => { });
            MaskModule.dispose(result.Mask);
            var d = Assert.Single(result.Report!.Curvature);
            Assert.StartsWith(curvature == "exact" ? "exact (Gauss–Newton identity) T=200" : "hutchinson (10 probes) T=200", d.Estimator);
            Assert.All(d.Layers, l => Assert.Equal(curvature == "exact" ? CurvatureMethod.Exact : CurvatureMethod.Hutchinson, l.Method));
            Assert.Equal(curvature == "exact" ? 0 : 10 * 10 * 1, d.Hvps); // 10 scoring batches × 10 probes × one block
        }
    }

    [Fact]
    public void A_sampled_classes_run_records_its_approximation()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        using var data = new DataCache();
        var c = RunPlan.Canonical(new RunConfig
        {
            Dataset = "synthetic", Criterion = "hutch_obd", Sparsity = 0.9, SamplesPerClass = 1, CurvatureClasses = 2,
        });
        var train = data.Get(c.Dataset, null, DatasetSplit.Train);
        using var m = Runner.CreateModel(RunPlan.Of(c), train);
        var result = Runner.Prune(RunPlan.Of(c), m, train, store, _ => { });
        MaskModule.dispose(result.Mask);
        var d = Assert.Single(result.Report!.Curvature);
        Assert.StartsWith("sampled-classes (Gauss–Newton identity, 2 classes per sample drawn at random, unbiased) T=200", d.Estimator);
        Assert.All(d.Layers, l => Assert.Equal(CurvatureMethod.SampledClasses, l.Method));
        // Stored and read back under its own name.
        var back = CurvatureRecord.Of(d).ToDiagnostics();
        Assert.All(CurvatureRecord.Of(d).Layers, l => Assert.Equal("sampled-classes", l.Method));
        Assert.All(back.Layers, l => Assert.Equal(CurvatureMethod.SampledClasses, l.Method));
    }

    [Fact]
    public void Prune_says_which_estimator_and_the_exact_method_refuses_the_vit()
    {
        using var dir = new TempDirectory();
        string[] scoring = ["-d", "synthetic", "--samples-per-class", "1", "--threads", "1", "-c", "hutch_obd", "-s", "0.9"];
        var exact = CliEndToEndTests.Run(["prune", "-m", "lenet5", .. scoring, "-o", Path.Combine(dir.Path, "m.safetensors")]);
        Assert.True(exact.Code == 0, exact.Err);
        Assert.Contains("hdiag: exact (Gauss–Newton identity)", exact.Out);
        var hutchinson = CliEndToEndTests.Run(["prune", "-m", "lenet5", .. scoring, "--curvature", "hutchinson", "--probes", "2", "-o", Path.Combine(dir.Path, "h.safetensors")]);
        Assert.True(hutchinson.Code == 0, hutchinson.Err);
        Assert.Contains("hdiag: hutchinson (2 probes)", hutchinson.Out);
        var vit = CliEndToEndTests.Run(["prune", "-m", "vit-tiny", .. scoring, "--curvature", "exact", "-o", Path.Combine(dir.Path, "v.safetensors")]);
        Assert.Equal(2, vit.Code);
        Assert.Contains("--curvature hutchinson", vit.Err);
        Assert.False(File.Exists(Path.Combine(dir.Path, "v.safetensors")));
    }
}
