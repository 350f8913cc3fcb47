using System.Text.RegularExpressions;

namespace Pai.Host.Tests;

/// <summary>The sanity checks (docs/architecture.md §5b): shuffle, reinit and invert do exactly what they say.</summary>
public sealed class AblationTests
{
    static readonly DataCache Data = new();

    static Dictionary<string, bool[]> MaskOf(RunConfig config)
    {
        var c = RunPlan.Canonical(config);
        var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
        using var m = Runner.CreateModel(RunPlan.Of(c), train);
        var result = Runner.Prune(RunPlan.Of(c), m, train, null, _ => { });
        try { return result.Mask.Layers.ToDictionary(l => l.Item1, l => l.Item2.Flatten().ToArray<bool>()); }
        finally { MaskModule.dispose(result.Mask); }
    }

    static readonly RunConfig Magnitude = new() { Dataset = "synthetic", Criterion = "magnitude", Sparsity = 0.9 };

    [Fact]
    public void Shuffle_keeps_each_layers_count_moves_the_positions_and_is_reproducible()
    {
        var original = MaskOf(Magnitude);
        var shuffled = MaskOf(Magnitude with { Ablation = "shuffle" });
        Assert.Equal(shuffled, MaskOf(Magnitude with { Ablation = "shuffle" }));
        Assert.NotEqual(shuffled, MaskOf(Magnitude with { Ablation = "shuffle", Seed = 1 }));
        foreach (var (layer, keep) in original)
        {
            Assert.Equal(keep.Count(k => k), shuffled[layer].Count(k => k));
            if (keep.Count(k => k) > 10) Assert.NotEqual(keep, shuffled[layer]);
        }
    }

    [Fact]
    public void Invert_keeps_exactly_k_of_the_lowest_scores_and_inverting_twice_is_the_original()
    {
        var original = MaskOf(Magnitude);
        var inverted = MaskOf(Magnitude with { Ablation = "invert" });
        Assert.Equal(original.Values.Sum(k => k.Count(x => x)), inverted.Values.Sum(k => k.Count(x => x)));
        // |θ| has no ties here: at 90% sparsity the 10% smallest and the 10% largest are disjoint.
        Assert.All(original.Keys, l => Assert.DoesNotContain(original[l].Zip(inverted[l]), p => p.First && p.Second));
        // The formula negated twice is the criterion again.
        Assert.Equal(original, MaskOf(Magnitude with { Criterion = "neg(abs(theta))", Ablation = "invert" }));
    }

    [Fact]
    public void Reinit_draws_every_weight_afresh_from_its_own_seed()
    {
        var c = RunPlan.Canonical(Magnitude with { Ablation = "reinit" });
        var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
        float[] Weights(Pai.Host.Models.Model m) => m.Prunable.SelectMany(p => p.Value.Flatten().ToArray<float>()).ToArray();
        using var a = Runner.CreateModel(RunPlan.Of(c), train);
        using var b = Runner.CreateModel(RunPlan.Of(c), train);
        var before = Weights(a);
        Ablations.Reinitialize(a, c.Seed);
        Ablations.Reinitialize(b, c.Seed);
        var after = Weights(a);
        Assert.Equal(after, Weights(b)); // reproducible
        Assert.All(before.Zip(after), p => Assert.NotEqual(p.First, p.Second)); // every prunable weight changes
        Assert.Equal(Ablations.ReinitSeed(c.Seed), RunPlan.Of(c).Seeds()["reinit"]);
        // The mask is the criterion's: reinit changes the weights it is applied to, not the mask.
        Assert.Equal(MaskOf(Magnitude), MaskOf(Magnitude with { Ablation = "reinit" }));
    }

    [Fact]
    public void Prune_on_the_command_line_applies_each_ablation_and_a_reinit_mask_trains_from_fresh_weights()
    {
        using var dir = new TempDirectory();
        var masks = new Dictionary<string, Dictionary<string, bool[]>>();
        foreach (var ablation in Ablations.Names)
        {
            var (code, stdout, err) = CliEndToEndTests.Run("prune", "-c", "magnitude", "-s", "0.9", "-d", "synthetic", "--samples-per-class", "1",
                "--ablation", ablation, "-o", dir.File($"{ablation}.safetensors"), "--threads", "1");
            Assert.True(code == 0, $"--ablation {ablation}: exit {code}\n{stdout}\n{err}");
            using var scope = new DisposeScope();
            using var file = Safetensors.Load(dir.File($"{ablation}.safetensors"));
            masks[ablation] = file.Tensors.ToDictionary(t => t.Name, t => t.Tensor.Flatten().ToArray<bool>());
            Assert.Equal(ablation, RunConfig.FromJson(file.Metadata["config"]).Ablation);
            // The per-layer density table is the ablated mask's: each layer's kept count is printed.
            foreach (var (layer, keep) in masks[ablation])
                Assert.Matches($@"{Regex.Escape(layer)}\s*│\s*{keep.Count(k => k):N0}\s*│", stdout);
            if (ablation != "none") Assert.Contains($"ablation {ablation}: ", stdout);
        }
        Assert.Equal(MaskOf(Magnitude with { SamplesPerClass = 1 }), masks["none"]);
        Assert.Equal(MaskOf(Magnitude with { SamplesPerClass = 1, Ablation = "shuffle" }), masks["shuffle"]);
        Assert.Equal(MaskOf(Magnitude with { SamplesPerClass = 1, Ablation = "invert" }), masks["invert"]);
        Assert.Equal(masks["none"], masks["reinit"]); // reinit changes the weights the mask is applied to
        Assert.NotEqual(masks["none"], masks["shuffle"]);

        // Training the reinit mask starts from fresh weights; training the criterion's own does not.
        foreach (var ablation in new[] { "reinit", "none" })
        {
            var (code, stdout, err) = CliEndToEndTests.Run("train", "-d", "synthetic", "--mask", dir.File($"{ablation}.safetensors"), "-e", "1", "--max-batches", "1", "--threads", "1");
            Assert.True(code == 0, $"train {ablation}: exit {code}\n{stdout}\n{err}");
            Assert.Equal(ablation == "reinit", stdout.Contains($"made for the reinit check: training from fresh initial weights (seed {Ablations.ReinitSeed(0)})"));
        }
    }

    [Fact]
    public void Ablations_are_part_of_the_run_key()
    {
        var keys = Ablations.Names.Select(a => RunPlan.Canonical(Magnitude with { Ablation = a }).Key).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.Equal(RunPlan.Canonical(Magnitude).Key, keys[0]); // "none" leaves existing keys alone
        Assert.Throws<ArgumentException>(() => RunPlan.Validate(new RunConfig { Ablation = "shuffle" })); // needs a criterion
    }
}
