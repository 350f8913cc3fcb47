
namespace Pai.Host.Tests;

public class LayerTests
{
    static Tensor Randn(long[] shape, ulong seed)
    {
        using var g = new Generator(seed);
        return Libtorch.Randn(shape, g);
    }

    [Fact]
    public void Conv2d_honours_stride_padding_dilation_groups_and_the_bias_option()
    {
        using var conv = new Conv2d(4, 6, 3, stride: 2, padding: 2, dilation: 2, groups: 2, bias: false);
        Assert.Equal([6L, 2, 3, 3], conv.Weight.Shape);
        Assert.Null(conv.Bias);
        Assert.Equal(["weight"], conv.NamedParameters().Select(p => p.Name));
        Assert.Equal(["weight"], conv.NamedPrunable().Select(p => p.Name));
        using var scope = new DisposeScope();
        using var g = new Generator(1);
        conv.ResetParameters(WeightInit.KaimingNormal, g);
        var x = Randn([2, 4, 9, 9], 2);
        // (9 + 2·2 − 2·(3 − 1) − 1) / 2 + 1 = 5
        var y = conv.Forward(x);
        Assert.Equal([2L, 6, 5, 5], y.Shape);
        Assert.True(y.Equal(Functional.Conv2d(x, conv.Weight, null, 2, 2, 2, 2)));
        // Group 0's outputs do not depend on group 1's inputs.
        var x2 = x.Clone();
        x2.Narrow(1, 2, 2).Fill_(5);
        Assert.True(conv.Forward(x2).Narrow(1, 0, 3).Equal(y.Narrow(1, 0, 3)));
        Assert.Throws<ArgumentException>(() => new Conv2d(3, 6, 3, groups: 2));
    }

    [Fact]
    public void Linear_weight_is_prunable_and_its_bias_is_not()
    {
        using var linear = new Linear(5, 3);
        Assert.Equal(["weight", "bias"], linear.NamedParameters().Select(p => p.Name));
        Assert.Equal(["weight"], linear.NamedPrunable().Select(p => p.Name));
        using var dense = new Linear(5, 3, bias: false, prunable: false);
        Assert.Empty(dense.NamedPrunable());
        using var scope = new DisposeScope();
        Assert.Equal([4L, 7, 3], linear.Forward(Randn([4, 7, 5], 1)).Shape);
    }

    [Fact]
    public void BatchNorm_train_mode_uses_batch_statistics_and_updates_running_stats_with_momentum()
    {
        using var bn = new BatchNorm2d(3);
        Assert.Equal(0.1, bn.Momentum);
        Assert.Equal(1e-5, bn.Eps);
        Assert.Equal(["weight", "bias"], bn.NamedParameters().Select(p => p.Name));
        Assert.Empty(bn.NamedPrunable());
        Assert.Equal(["running_mean", "running_var"], bn.NamedBuffers().Select(b => b.Name));
        using var scope = new DisposeScope();
        var x = Randn([4, 3, 5, 5], 3) * 2.0 + 3.0;
        var batchMean = x.Mean([0, 2, 3]);
        var batchVar = x.Var([0, 2, 3], unbiased: true);

        bn.Training = true;
        var y = bn.Forward(x);
        // Normalized with batch statistics: per-channel mean 0, biased variance ≈ 1.
        Assert.True(y.Mean([0, 2, 3]).Abs().Max().Item() < 1e-5);
        Assert.True((y.Var([0, 2, 3], unbiased: false) - 1.0).Abs().Max().Item() < 1e-3);
        Assert.True(bn.RunningMean.AllClose(batchMean * 0.1, 1e-5, 1e-6));
        Assert.True(bn.RunningVar.AllClose(batchVar * 0.1 + 0.9, 1e-5, 1e-6));

        bn.Momentum = 1.0;
        bn.Forward(x);
        Assert.True(bn.RunningMean.AllClose(batchMean, 1e-5, 1e-6));

        // Eval mode: uses (and leaves) the running statistics.
        bn.Training = false;
        var before = bn.RunningMean.Clone();
        var e = bn.Forward(x);
        Assert.True(bn.RunningMean.Equal(before));
        var expected = (x - batchMean.View(1, 3, 1, 1)) / (batchVar.View(1, 3, 1, 1) + 1e-5).Sqrt();
        Assert.True(e.AllClose(expected, 1e-4, 1e-5));
    }

    [Fact]
    public void BatchNorm_without_momentum_keeps_a_cumulative_average()
    {
        using var bn = new BatchNorm2d(2, momentum: null);
        using var scope = new DisposeScope();
        var a = Randn([3, 2, 4, 4], 1);
        var b = Randn([3, 2, 4, 4], 2) + 2.0;
        var c = Randn([3, 2, 4, 4], 3) - 1.0;
        bn.Forward(a);
        bn.Forward(b);
        bn.Forward(c);
        Assert.Equal(3, bn.BatchesTracked);
        var mean = (a.Mean([0, 2, 3]) + b.Mean([0, 2, 3]) + c.Mean([0, 2, 3])) / 3.0;
        Assert.True(bn.RunningMean.AllClose(mean, 1e-5, 1e-6));
        Assert.Throws<ArgumentException>(() => bn.Forward(Randn([3, 2], 4)));
    }

    [Fact]
    public void Sequential_runs_batch_norm_then_relu_with_the_values_gradients_and_statistics_of_the_two_layers_one_by_one()
    {
        using var scope = new DisposeScope();
        // Both layouts: the standard one, and batch-innermost as a sparse layer passes activations on.
        foreach (var batchInner in new[] { false, true })
        {
            var x0 = Randn([5, 3, 4, 6], 7) * 2.0 + 0.5;
            var dy = Randn([5, 3, 4, 6], 8);
            if (batchInner)
                (x0, dy) = (x0.Permute(1, 2, 3, 0).Contiguous().Permute(3, 0, 1, 2), dy.Permute(1, 2, 3, 0).Contiguous().Permute(3, 0, 1, 2));
            (Tensor Y, Tensor Dx, Tensor Dw, Tensor Mean, long Batches) Run(bool asSequence)
            {
                using var bn = new BatchNorm2d(3);
                using var g = new Generator(9);
                using (Libtorch.NoGrad()) bn.Weight.Copy_(Libtorch.Randn([3], g));
                bn.Training = true;
                using var seq = new Sequential(bn, new Relu());
                var x = x0.Detach().RequiresGrad_();
                var y = asSequence ? seq.Forward(x) : Functional.Relu(bn.Forward(x));
                (y * dy).Sum().Backward();
                return (y.Detach(), x.Grad!.Clone(), bn.Weight.Grad!.Clone(), bn.RunningMean.Clone(), bn.BatchesTracked);
            }
            var fused = Run(asSequence: true);
            var apart = Run(asSequence: false);
            Assert.True(fused.Y.AllClose(apart.Y, 1e-5, 1e-6), $"output, batch-innermost {batchInner}");
            Assert.True(fused.Dx.AllClose(apart.Dx, 1e-5, 1e-6), $"input gradient, batch-innermost {batchInner}");
            Assert.True(fused.Dw.AllClose(apart.Dw, 1e-5, 1e-6), $"weight gradient, batch-innermost {batchInner}");
            Assert.True(fused.Mean.AllClose(apart.Mean, 1e-6, 1e-7), $"running mean, batch-innermost {batchInner}");
            Assert.Equal(1, fused.Batches);
            Assert.True(fused.Y.Eq(0).Sum().Item() > 0 && fused.Y.Gt(0).Sum().Item() > 0, "the ReLU clips some values and passes others");
        }
    }

    [Fact]
    public void LayerNorm_normalizes_the_last_dimension()
    {
        using var ln = new LayerNorm(8);
        Assert.Empty(ln.NamedPrunable());
        using var scope = new DisposeScope();
        var y = ln.Forward(Randn([2, 5, 8], 1) * 4.0 + 1.0);
        Assert.True(y.Mean(-1).Abs().Max().Item() < 1e-5);
        Assert.True((y.Var([-1], unbiased: false) - 1.0).Abs().Max().Item() < 1e-3);
    }

    [Fact]
    public void Dropout_is_seeded_scaled_and_the_identity_in_eval_mode()
    {
        using var scope = new DisposeScope();
        var x = Libtorch.Ones([1000]);
        using var a = new Dropout(0.25, seed: 7);
        using var b = new Dropout(0.25, seed: 7);
        using var c = new Dropout(0.25, seed: 8);
        var ya = a.Forward(x);
        Assert.True(ya.Equal(b.Forward(x)));
        Assert.False(ya.Equal(c.Forward(x)));
        Assert.False(ya.Equal(a.Forward(x)), "the generator should advance between calls");
        var kept = ya.Ne(0.0).CountNonZero();
        Assert.InRange(kept, 700, 800);
        Assert.True((ya.MaskedSelect(ya.Ne(0.0)) - 1 / 0.75).Abs().Max().Item() < 1e-6);
        a.Training = false;
        Assert.True(a.Forward(x).Equal(x));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Dropout(1.0, 0));
    }

    [Fact]
    public void Sequential_names_layers_by_index_and_max_pool_can_skip_tiny_inputs()
    {
        using var seq = new Sequential(new Conv2d(1, 2, 3, padding: 1), new Relu(), new MaxPool2d(2, skipWhenTooSmall: true), new Flatten());
        Assert.Equal(["0.weight", "0.bias"], seq.NamedParameters().Select(p => p.Name));
        Assert.Equal(4, seq.Count);
        Assert.IsType<Relu>(seq[1]);
        using var scope = new DisposeScope();
        Assert.Equal([2L, 2 * 2 * 2], seq.Forward(Randn([2, 1, 4, 5], 1)).Shape);
        Assert.Equal([2L, 2], seq.Forward(Randn([2, 1, 1, 1], 1)).Shape);       // pool skipped at 1×1
        using var strict = new MaxPool2d(2);
        Assert.ThrowsAny<Exception>(() => strict.Forward(Randn([1, 1, 1, 1], 1)));
        using var gap = new GlobalAvgPool2d();
        var x = Randn([2, 3, 4, 4], 2);
        Assert.True(gap.Forward(x).AllClose(x.Mean([2, 3]), 1e-6, 1e-6));
        using var empty = new Sequential();
        var alias = empty.Forward(x);
        Assert.NotSame(x, alias);
        Assert.True(alias.Equal(x));
    }

    [Fact]
    public void Initialization_uses_the_fan_in_and_draws_the_same_values_from_the_same_seed()
    {
        using var scope = new DisposeScope();
        Assert.Equal(5, Initialization.FanIn(Libtorch.Zeros([3, 5])));
        Assert.Equal(4 * 3 * 3, Initialization.FanIn(Libtorch.Zeros([8, 4, 3, 3])));
        var a = Libtorch.Zeros([200, 300]);
        var b = Libtorch.Zeros([200, 300]);
        using (var g = new Generator(5)) Initialization.FillWeight(a, WeightInit.VarianceScaling, g);
        using (var g = new Generator(5)) Initialization.FillWeight(b, WeightInit.VarianceScaling, g);
        Assert.True(a.Equal(b));
        Assert.True(a.Abs().Max().Item() <= 2 * Math.Sqrt(1.0 / 300) / Initialization.TruncatedNormalStd * (1 + 1e-6));
    }
}
