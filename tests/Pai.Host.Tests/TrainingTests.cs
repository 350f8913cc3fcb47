
namespace Pai.Host.Tests;

public class TrainingTests
{
    /// A two-layer MLP built directly on Module, so the loop is tested apart from the zoo.
    sealed class Mlp : Module
    {
        readonly Tensor w1, b1, w2, b2;
        public Mlp(ulong seed)
        {
            using var g = new Generator(seed);
            w1 = RegisterParameter("fc1.weight", Libtorch.Randn([32, 20], g) * 0.2, prunable: true);
            b1 = RegisterParameter("fc1.bias", Libtorch.Zeros([32]));
            w2 = RegisterParameter("fc2.weight", Libtorch.Randn([4, 32], g) * 0.2, prunable: true);
            b2 = RegisterParameter("fc2.bias", Libtorch.Zeros([4]));
        }
        public override Tensor Forward(Tensor x) =>
            Functional.Linear(Functional.Relu(Functional.Linear(x, w1, b1)), w2, b2);
    }

    // Four Gaussian classes around fixed centres; the seed only draws the samples.
    static List<Pai.Batch> Data(ulong seed, int batches)
    {
        using var c = new Generator(99);
        using var centers = Libtorch.Randn([4, 20], c) * 2;
        using var g = new Generator(seed);
        var result = new List<Pai.Batch>();
        for (var i = 0; i < batches; i++)
        {
            var y = Libtorch.RandInt(0, 4, [16], g).DetachFromScope();
            var x = (centers.IndexSelect(0, y) + Libtorch.Randn([16, 20], g)).DetachFromScope();
            result.Add(new Pai.Batch(x, y));
        }
        return result;
    }

    static Dictionary<string, Tensor> RandomMask(Module m, ulong seed, double density)
    {
        using var g = new Generator(seed);
        return m.NamedPrunable().ToDictionary(p => p.Name,
            p => Libtorch.Rand(p.Tensor.Shape, g).Lt(density).DetachFromScope());
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd, false)]
    [InlineData(OptimizerKind.Sgd, true)]
    [InlineData(OptimizerKind.AdamW, false)]
    public void Pruned_weights_stay_exactly_zero_through_200_steps(OptimizerKind optimizer, bool nesterov)
    {
        using var model = new Mlp(1);
        var mask = RandomMask(model, 2, 0.3);
        var data = Data(3, 20);
        var options = new TrainOptions
        {
            Epochs = 10, Optimizer = optimizer, Nesterov = nesterov, LearningRate = optimizer == OptimizerKind.Sgd ? 0.05 : 0.01,
            Momentum = 0.9, WeightDecay = 5e-3, Schedule = LrSchedule.Constant,
        };
        var steps = 0;
        Trainer.Train(model, mask, _ => data, null, options, p => { if (p.Finished is null) steps++; });
        Assert.Equal(200, steps);
        foreach (var (name, w) in model.NamedPrunable())
        {
            var values = w.ToArray<float>();
            var keep = mask[name].ToArray<bool>();
            for (var i = 0; i < values.Length; i++)
            {
                if (!keep[i]) Assert.Equal(0f, values[i]);
            }
            // The kept weights did train.
            Assert.Contains(values.Where((_, i) => keep[i]), v => v != 0f);
        }
    }

    [Fact]
    public void Training_keeps_its_freed_blocks_for_the_next_step()
    {
        // batches of 4,096: the hidden activation and its gradient are 512 KB, sizes the allocator keeps
        using var model = new Mlp(7);
        using var g = new Generator(8);
        var data = Enumerable.Range(0, 4).Select(_ => new Pai.Batch(
            Libtorch.Randn([4096, 20], g).DetachFromScope(), Libtorch.RandInt(0, 4, [4096], g).DetachFromScope())).ToList();
        long kept = 0;
        Trainer.Train(model, null, _ => data, null, new TrainOptions { Epochs = 1, LearningRate = 0.01 },
            p => { if (p.Finished is null && p.Batch > 1) kept = Math.Max(kept, Libtorch.CpuCacheBytes); });
        Assert.True(kept >= 512 * 1024, $"kept {kept} bytes during training");
    }

    [Fact]
    public void Training_learns_and_evaluation_reports_accuracy()
    {
        using var model = new Mlp(4);
        var train = Data(5, 30);
        var test = Data(6, 10);
        var before = Trainer.Evaluate(model, test);
        var results = Trainer.Train(model, null, _ => train, () => test,
            new TrainOptions { Epochs = 3, LearningRate = 0.05, Schedule = LrSchedule.Cosine });
        var after = results[^1].Test!;
        Assert.True(after.Top1 > 0.9, $"top-1 {after.Top1}");
        Assert.True(after.Loss < before.Loss);
        Assert.Equal(1.0, after.Top5); // 4 classes: top-min(5, 4) always hits
        Assert.Equal(160, after.Samples);
        Assert.Equal(3, results.Count);
    }

    [Fact]
    public void Schedules_follow_their_formulas()
    {
        var cos = new TrainOptions { Epochs = 4, LearningRate = 0.2, Schedule = LrSchedule.Cosine };
        Assert.Equal(0.2, cos.LearningRateAt(0), 12);
        Assert.Equal(0.1, cos.LearningRateAt(2), 12);
        var steps = new TrainOptions { LearningRate = 1, Schedule = LrSchedule.MultiStep, Milestones = [2, 4], Gamma = 0.1 };
        Assert.Equal(1.0, steps.LearningRateAt(1), 12);
        Assert.Equal(0.1, steps.LearningRateAt(2), 12);
        Assert.Equal(0.01, steps.LearningRateAt(5), 12);
    }

    [Fact]
    public void A_mask_for_an_unknown_layer_or_shape_is_rejected_with_names()
    {
        using var model = new Mlp(1);
        var bad = new Dictionary<string, Tensor> { ["fc9.weight"] = Libtorch.Ones([2, 2], DType.Bool) };
        var e = Assert.Throws<ArgumentException>(() => Trainer.Train(model, bad, _ => Data(1, 1), null, new TrainOptions { Epochs = 1 }));
        Assert.Contains("fc9.weight", e.Message);
        Assert.Contains("fc1.weight", e.Message);
        var wrongShape = new Dictionary<string, Tensor> { ["fc1.weight"] = Libtorch.Ones([2, 2], DType.Bool) };
        e = Assert.Throws<ArgumentException>(() => Trainer.Train(model, wrongShape, _ => Data(1, 1), null, new TrainOptions { Epochs = 1 }));
        Assert.Contains("[32, 20]", e.Message);
        Assert.Throws<ArgumentException>(() => Trainer.Train(model, null, _ => Data(1, 1), null, new TrainOptions { Epochs = 0 }));
    }

    [Fact]
    public void A_diverging_run_stops_with_a_message_naming_the_learning_rate()
    {
        using var model = new Mlp(7);
        var e = Assert.Throws<TrainingDivergedException>(() => Trainer.Train(model, null, _ => Data(8, 20), null,
            new TrainOptions { Epochs = 1, LearningRate = 1e6, Schedule = LrSchedule.Constant }));
        Assert.Contains("diverged", e.Message);
        Assert.Contains("learning rate", e.Message);
    }

    // Warm-up scales each step's rate: with momentum 0 and no weight decay, k warm-up steps at
    // rate r take the same steps as rates r/k, 2r/k, … given one at a time; after them, the full rate.
    [Fact]
    public void Learning_rate_warm_up_rises_linearly_over_its_batches_then_holds()
    {
        var data = Data(5, 6);
        float[] Weights(Module m) => m.NamedParameters().SelectMany(p => p.Tensor.Flatten().ToArray<float>()).ToArray();
        var plain = new TrainOptions { Epochs = 1, LearningRate = 0.5, Momentum = 0, WeightDecay = 0, Schedule = LrSchedule.Constant };
        using var warmed = new Mlp(4);
        Trainer.Train(warmed, null, _ => data, null, plain with { LrWarmup = 4 });
        using var stepped = new Mlp(4);
        double[] rates = [0.125, 0.25, 0.375, 0.5, 0.5, 0.5];
        for (var i = 0; i < rates.Length; i++)
            Trainer.Train(stepped, null, _ => data.Skip(i).Take(1), null, plain with { LearningRate = rates[i] });
        Assert.Equal(Weights(stepped), Weights(warmed));
        using var full = new Mlp(4);
        Trainer.Train(full, null, _ => data, null, plain);
        Assert.NotEqual(Weights(full), Weights(warmed));
        Assert.Equal(0.5 * 3 / 4, (plain with { LrWarmup = 4 }).WarmedUp(0.5, 2));
        Assert.Equal(0.5, (plain with { LrWarmup = 4 }).WarmedUp(0.5, 4));
    }
}
