namespace Pai.Host.Tests;

/// <summary>
/// The typed run plan: one settling of a configuration into values (criterion, ablation, scope,
/// curvature, training options, device) that every step of a run reads instead of setting text.
/// </summary>
public sealed class RunPlanTests
{
    [Fact]
    public void A_built_in_criterion_is_planned_as_the_registry_value_under_the_key_of_its_canonical_configuration()
    {
        var raw = new RunConfig { Model = " LeNet5 ", Criterion = " SNIP ", Sparsity = 0.9, Scope = "layer", Optimizer = "adamw" };
        var plan = RunPlan.Of(raw);
        var scored = Assert.IsType<PlannedCriterion.Scored>(plan.Criterion);
        Assert.Equal("snip", scored.Criterion.Name);
        Assert.Equal(Formula.render(Registry.resolve(RunPlan.TemperaturesOf(raw), "snip").ResultValue.Formula), Formula.render(scored.Criterion.Formula));
        Assert.Equal(RunPlan.Canonical(raw).Key, plan.Key);
        Assert.Equal("lenet5", plan.Config.Model);
        Assert.Equal(Ranking.PerLayer, plan.Ranking);
        Assert.Equal(OptimizerKind.AdamW, plan.Train.Optimizer);
        Assert.Equal(Device.Cpu, plan.Device);
        Assert.False(plan.IsDense);
    }

    [Fact]
    public void A_formula_is_planned_by_its_canonical_text_and_the_dense_baseline_as_dense()
    {
        var formula = RunPlan.Of(new RunConfig { Criterion = "abs( theta*grad )", Sparsity = 0.5 });
        Assert.Equal(formula.Config.Criterion, Assert.IsType<PlannedCriterion.Scored>(formula.Criterion).Criterion.Name);
        Assert.NotEqual("abs( theta*grad )", formula.Config.Criterion);

        var dense = RunPlan.Of(new RunConfig { Criterion = "Dense" });
        Assert.True(dense.IsDense);
        Assert.IsType<PlannedCriterion.Dense>(dense.Criterion);
        Assert.Equal(RunConfig.DenseCriterion, dense.Config.Criterion);
        var e = Assert.Throws<ArgumentException>(() => RunPlan.Of(new RunConfig { Ablation = "invert" }));
        Assert.Contains("needs a criterion and a sparsity", e.Message);
    }

    [Theory]
    [InlineData("none", Ablation.None, new string[0])]
    [InlineData("shuffle", Ablation.Shuffle, new[] { "shuffle" })]
    [InlineData("reinit", Ablation.Reinit, new[] { "reinit" })]
    [InlineData("invert", Ablation.Invert, new string[0])]
    public void The_ablation_is_a_value_and_its_seeds_are_recorded(string setting, Ablation ablation, string[] extraSeeds)
    {
        var plan = RunPlan.Of(new RunConfig { Criterion = "magnitude", Sparsity = 0.9, Ablation = setting, Seed = 7 });
        Assert.Equal(ablation, plan.Ablation);
        Assert.Equal(new[] { "data", "init", "probes", "scoring" }.Concat(extraSeeds).Order(), plan.Seeds().Keys.Order());
        Assert.Equal(7UL, plan.Seeds()["init"]);
    }

    [Fact]
    public void Every_hutchinson_only_setting_settles_auto_on_hutchinson_and_the_others_leave_it_exact()
    {
        // One non-default value per setting declared HutchinsonOnly: a new declaration must be added here.
        var values = new Dictionary<string, object>
        {
            [nameof(RunConfig.Probes)] = 20,
            [nameof(RunConfig.ProbeScope)] = "layer",
            [nameof(RunConfig.HvpBudget)] = 100,
            [nameof(RunConfig.AdaptiveTarget)] = 0.5,
            [nameof(RunConfig.ExactLastLayer)] = true,
            [nameof(RunConfig.ExactLayerSize)] = 10,
        };
        var declared = RunSettings.All.Where(s => s.Declaration.HutchinsonOnly).ToList();
        Assert.Equal(values.Keys.Order(), declared.Select(s => s.Property.Name).Order());
        var obd = new RunConfig { Criterion = "hutch_obd", Sparsity = 0.9 };
        Assert.Equal(HessianEstimator.Exact, RunPlan.Of(obd).Curvature.Estimator);
        foreach (var s in declared)
            Assert.Equal("hutchinson", RunPlan.Canonical(s.With(obd, values[s.Property.Name])).Curvature);
        Assert.Equal("exact", RunPlan.Canonical(obd with { Seed = 3, SamplesPerClass = 5 }).Curvature);
    }

    [Fact]
    public void A_stored_configuration_is_typed_without_being_settled_again()
    {
        // The learned criterion keeps the hash it was configured with; a changed file is refused when the run prunes.
        var stored = new RunConfig { Criterion = "autos", Sparsity = 0.9, Curvature = "hutchinson", Predictor = "/nowhere/p.safetensors", PredictorHash = "0123abcd" };
        var learned = Assert.IsType<PlannedCriterion.Learned>(RunPlan.Stored(stored).Criterion);
        Assert.Equal(("/nowhere/p.safetensors", "0123abcd", 200.0), (learned.Predictor, learned.Hash, learned.HessianTemperature));
        Assert.Equal(stored.Key, RunPlan.Stored(stored).Key);
        Assert.ThrowsAny<Exception>(() => RunPlan.Of(stored)); // settling reads the predictor file to hash it
        var unsettled = Assert.Throws<ArgumentException>(() => RunPlan.Stored(new RunConfig { Criterion = "hutch_obd", Sparsity = 0.9 }));
        Assert.Contains("settled by RunPlan.Of", unsettled.Message);
    }
}
