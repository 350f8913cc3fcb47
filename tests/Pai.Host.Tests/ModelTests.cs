
namespace Pai.Host.Tests;

public class ModelTests
{
    public static TheoryData<string> AllModels => new(ModelZoo.Names);

    static Model Create(string name, InputShape shape, int classes = 10, ulong seed = 1, bool denseClassifier = false,
        WeightInit init = WeightInit.KaimingNormal) =>
        ModelZoo.Create(name, new ModelOptions { InputShape = shape, Classes = classes, Seed = seed, DenseClassifier = denseClassifier, Init = init });

    static Tensor Batch(InputShape shape, int n, ulong seed)
    {
        using var g = new Generator(seed);
        return Libtorch.Randn(shape.WithBatch(n), g);
    }

    static Tensor Targets(int n, int classes, ulong seed)
    {
        using var g = new Generator(seed);
        return Libtorch.RandInt(0, classes, [n], g);
    }

    static double[] Values(Tensor t)
    {
        using var scope = new DisposeScope();
        return t.Detach().To(DType.Float64).ToArray<double>();
    }

    // ---- shapes and counts ---------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Every_model_gives_logits_for_mnist_and_cifar_inputs(string name)
    {
        foreach (var (shape, classes) in new[] { (InputShape.Mnist, 10), (InputShape.Cifar, 100) })
        {
            using var model = Create(name, shape, classes);
            model.Training = false;
            using var scope = new DisposeScope();
            using var _ = Libtorch.NoGrad();
            var logits = model.Forward(Batch(shape, 2, 7));
            Assert.Equal([2L, classes], logits.Shape);
            Assert.Equal(0, logits.IsFinite().LogicalNot().CountNonZero());
        }
    }

    [Theory]
    [InlineData("resnet18")]
    [InlineData("vit-tiny")]
    public void Larger_models_take_tiny_imagenet_inputs(string name)
    {
        using var model = Create(name, InputShape.TinyImageNet, 200);
        model.Training = false;
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        Assert.Equal([2L, 200], model.Forward(Batch(InputShape.TinyImageNet, 2, 7)).Shape);
    }

    [Theory]
    [InlineData("lenet300", 1, 28, 28, 266_610)]
    [InlineData("lenet5", 1, 28, 28, 431_080)]
    [InlineData("resnet18", 3, 32, 32, 11_173_962)]
    [InlineData("vgg16", 3, 32, 32, 14_728_266)]
    [InlineData("resnet20", 3, 32, 32, 272_474)]
    [InlineData("resnet32", 3, 32, 32, 466_906)]
    [InlineData("vit-tiny", 3, 32, 32, 1_806_538)] // also checked against torch.nn below
    public void Parameter_counts_match_the_published_architectures(string name, int c, int h, int w, long expected)
    {
        using var model = Create(name, new InputShape(c, h, w));
        Assert.Equal(expected, model.ParameterCount);
        Assert.Equal(expected, model.Parameters.Sum(p => p.Value.NumEl));
    }

    [Fact]
    public void Input_dependent_layers_adapt_to_the_input_shape()
    {
        using var lenet300 = Create("lenet300", InputShape.Cifar);
        Assert.Equal([300L, 3 * 32 * 32], lenet300.Parameters.Single(p => p.Key == "fc1.weight").Value.Shape);
        using var lenet5 = Create("lenet5", InputShape.Cifar);
        Assert.Equal([500L, 50 * 5 * 5], lenet5.Parameters.Single(p => p.Key == "fc1.weight").Value.Shape);
        using var vit = Create("vit-tiny", InputShape.Mnist);
        Assert.Equal([1L, 7 * 7 + 1, 192], vit.Parameters.Single(p => p.Key == "pos_embed").Value.Shape);
        Assert.Equal([192L, 1, 4, 4], vit.Parameters.Single(p => p.Key == "patch_embed.weight").Value.Shape);
    }

    [Fact]
    public void A_model_rejects_inputs_it_was_not_built_for()
    {
        using var model = Create("lenet5", InputShape.Mnist);
        using var scope = new DisposeScope();
        var wrongChannels = Assert.Throws<ArgumentException>(() => model.Forward(Batch(InputShape.Cifar, 1, 1)));
        Assert.Contains("[N, 1, H, W]", wrongChannels.Message);
        var wrongSize = Assert.Throws<ArgumentException>(() => model.Forward(Batch(new InputShape(1, 32, 32), 1, 1)));
        Assert.Contains("1x28x28", wrongSize.Message);
    }

    // ---- prunable weights ------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Prunable_is_every_conv_and_linear_weight_and_nothing_else(string name)
    {
        using var model = Create(name, InputShape.Cifar);
        var expected = model.NamedModules()
            .Where(m => m.Module is Conv2d or Linear)
            .Select(m => m.Name + ".weight")
            .ToHashSet();
        var prunable = model.Prunable.Select(p => p.Key).ToList();
        Assert.Equal(expected.Count, prunable.Count);
        Assert.True(expected.SetEquals(prunable));
        Assert.All(model.Prunable, p => Assert.True(p.Value.RequiresGrad));
        // Same tensors as in Parameters (live leaves, not copies).
        var byName = model.Parameters.ToDictionary(p => p.Key, p => p.Value);
        Assert.All(model.Prunable, p => Assert.Same(byName[p.Key], p.Value));
        Assert.Equal(model.ClassifierWeightName, prunable[^1]);
    }

    [Fact]
    public void Prunable_layer_lists_match_the_architectures()
    {
        using var resnet20 = Create("resnet20", InputShape.Cifar);
        Assert.Equal(1 + 18 + 2 + 1, resnet20.Prunable.Count); // stem, 9 blocks × 2, 2 shortcuts, fc
        Assert.Contains(resnet20.Prunable, p => p.Key == "layer2.0.shortcut.0.weight");
        Assert.DoesNotContain(resnet20.Prunable, p => p.Key.Contains("bn") || p.Key.EndsWith("bias") || p.Key.Contains("shortcut.1"));

        using var vit = Create("vit-tiny", InputShape.Cifar);
        var names = vit.Prunable.Select(p => p.Key).ToList();
        Assert.Equal(1 + 6 * 4 + 1, names.Count);
        Assert.Equal("patch_embed.weight", names[0]);
        Assert.Equal(["blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"], names.Skip(1).Take(4));
        Assert.Equal("head.weight", names[^1]);
        foreach (var notPrunable in new[] { "cls_token", "pos_embed", "norm.weight", "blocks.0.norm1.weight", "patch_embed.bias" })
        {
            Assert.DoesNotContain(notPrunable, names);
            Assert.Contains(vit.Parameters, p => p.Key == notPrunable);
        }
    }

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Dense_classifier_removes_only_the_classifier_from_prunable(string name)
    {
        using var sparse = Create(name, InputShape.Mnist);
        using var dense = Create(name, InputShape.Mnist, denseClassifier: true);
        Assert.Equal(sparse.Prunable.Count - 1, dense.Prunable.Count);
        Assert.DoesNotContain(dense.Prunable, p => p.Key == dense.ClassifierWeightName);
        Assert.Equal(sparse.Prunable.Take(sparse.Prunable.Count - 1).Select(p => p.Key), dense.Prunable.Select(p => p.Key));
        Assert.Contains(dense.Parameters, p => p.Key == dense.ClassifierWeightName);
        Assert.Equal(sparse.ParameterCount, dense.ParameterCount);
    }

    // ---- gradients ------------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Gradients_reach_every_parameter_and_are_finite(string name)
    {
        using var model = Create(name, InputShape.Cifar);
        model.Training = true;
        using (var scope = new DisposeScope())
        {
            var loss = Functional.CrossEntropy(model.Forward(Batch(InputShape.Cifar, 2, 3)), Targets(2, 10, 4));
            Assert.True(double.IsFinite(loss.Item()));
            loss.Backward();
            foreach (var (n, p) in model.Parameters)
            {
                var g = p.Grad;
                Assert.True(g is not null, $"{n} has no gradient");
                Assert.Equal(p.Shape, g!.Shape);
                Assert.True(g.IsFinite().LogicalNot().CountNonZero() == 0, $"{n} has a non-finite gradient");
            }
            foreach (var (n, p) in model.Prunable)
                Assert.True(p.Grad!.Abs().Sum().Item() > 0, $"no gradient flows to {n}");
        }
        foreach (var (_, p) in model.Parameters) p.ClearGrad();
    }

    // ---- initialization -------------------------------------------------------------------------

    [Theory]
    [InlineData("resnet20")]
    [InlineData("vit-tiny")]
    [InlineData("vgg11")]
    public void Same_seed_gives_bit_identical_weights_and_another_seed_does_not(string name)
    {
        using var a = Create(name, InputShape.Cifar, seed: 42);
        using var b = Create(name, InputShape.Cifar, seed: 42);
        using var c = Create(name, InputShape.Cifar, seed: 43);
        for (var i = 0; i < a.Parameters.Count; i++)
        {
            Assert.Equal(a.Parameters[i].Key, b.Parameters[i].Key);
            Assert.True(a.Parameters[i].Value.Equal(b.Parameters[i].Value), $"{a.Parameters[i].Key} differs for the same seed");
        }
        foreach (var ((n, pa), (_, pc)) in a.Prunable.Zip(c.Prunable))
            Assert.False(pa.Equal(pc), $"{n} is the same for seeds 42 and 43");
        if (name == "vit-tiny")
        {
            var cls = a.Parameters.Single(p => p.Key == "cls_token").Value;
            Assert.False(cls.Equal(c.Parameters.Single(p => p.Key == "cls_token").Value));
            Assert.InRange(Std(a.Parameters.Single(p => p.Key == "pos_embed").Value), 0.018, 0.022);
        }
    }

    static double Std(Tensor t)
    {
        using var scope = new DisposeScope();
        return t.Detach().To(DType.Float64).Var(unbiased: false).Sqrt().Item();
    }

    static double Mean(Tensor t)
    {
        using var scope = new DisposeScope();
        return t.Detach().To(DType.Float64).Mean().Item();
    }

    [Fact]
    public void Kaiming_normal_has_std_sqrt_2_over_fan_in_and_zero_biases_and_unit_batch_norm()
    {
        using var model = Create("resnet18", InputShape.Cifar);
        var w = model.Parameters.Single(p => p.Key == "layer4.1.conv2.weight").Value; // 2.4M draws, fan-in 512·9
        Assert.Equal(Math.Sqrt(2.0 / (512 * 9)), Std(w), Math.Sqrt(2.0 / (512 * 9)) * 0.01);
        Assert.InRange(Math.Abs(Mean(w)), 0, 1e-4);
        var fc = model.Parameters.Single(p => p.Key == "fc.weight").Value;
        Assert.Equal(Math.Sqrt(2.0 / 512), Std(fc), Math.Sqrt(2.0 / 512) * 0.1);
        using var scope = new DisposeScope();
        Assert.Equal(0, model.Parameters.Single(p => p.Key == "fc.bias").Value.CountNonZero());
        foreach (var bn in model.BatchNorms)
        {
            Assert.True(bn.Weight.Eq(1.0).LogicalNot().CountNonZero() == 0);
            Assert.Equal(0, bn.Bias.CountNonZero());
            Assert.Equal(0, bn.RunningMean.CountNonZero());
            Assert.True(bn.RunningVar.Eq(1.0).LogicalNot().CountNonZero() == 0);
        }
    }

    [Fact]
    public void Variance_scaling_is_truncated_normal_with_variance_one_over_fan_in()
    {
        using var model = Create("resnet18", InputShape.Cifar, init: WeightInit.VarianceScaling);
        var w = model.Parameters.Single(p => p.Key == "layer4.1.conv2.weight").Value;
        var target = Math.Sqrt(1.0 / (512 * 9));
        Assert.Equal(target, Std(w), target * 0.01);
        using var scope = new DisposeScope();
        var bound = 2 * target / Initialization.TruncatedNormalStd;
        Assert.True(w.Abs().Max().Item() <= bound * (1 + 1e-6), "draws beyond two standard deviations survived truncation");
        Assert.True(w.Abs().Max().Item() > bound * 0.99, "the truncated normal should reach close to its bound with 2.4M draws");
        Assert.Equal(0, model.Parameters.Single(p => p.Key == "layer4.1.bn2.bias").Value.CountNonZero());

        using var kaiming = Create("resnet18", InputShape.Cifar);
        Assert.False(w.Equal(kaiming.Parameters.Single(p => p.Key == "layer4.1.conv2.weight").Value));
    }

    // ---- batch norm and modes -------------------------------------------------------------------

    [Theory]
    [InlineData("resnet20")]
    [InlineData("vgg11")]
    public void Batch_norm_models_differ_between_train_and_eval_and_only_train_updates_running_stats(string name)
    {
        using var model = Create(name, InputShape.Cifar);
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var x = Batch(InputShape.Cifar, 4, 11) * 3.0 + 1.0;
        var before = model.Buffers.Select(b => b.Value.Clone()).ToList();

        model.Training = false;
        var eval = model.Forward(x);
        for (var i = 0; i < before.Count; i++) Assert.True(before[i].Equal(model.Buffers[i].Value), "eval mode changed running statistics");

        model.Training = true;
        Assert.True(model.BatchNorms.All(bn => bn.Training));
        var train = model.Forward(x);
        Assert.False(eval.AllClose(train, 1e-3, 1e-3));
        var mean0 = model.Buffers.Single(b => b.Key.EndsWith("running_mean") && (b.Key.StartsWith("bn1") || b.Key.StartsWith("features.1."))).Value;
        Assert.True(mean0.Abs().Sum().Item() > 0, "train mode did not update the running mean");
        Assert.True(model.Buffers.Select((b, i) => !b.Value.Equal(before[i])).All(changed => changed), "some running statistic was not updated");
    }

    [Fact]
    public void Batch_norm_momentum_is_settable_on_the_whole_model()
    {
        using var model = Create("resnet20", InputShape.Cifar);
        Assert.All(model.BatchNorms, bn => Assert.Equal(0.1, bn.Momentum));
        model.SetBatchNormMomentum(null);
        Assert.All(model.BatchNorms, bn => Assert.Null(bn.Momentum));
        model.Training = true;
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        model.Forward(Batch(InputShape.Cifar, 2, 1));
        Assert.All(model.BatchNorms, bn => Assert.Equal(1, bn.BatchesTracked));
        model.ResetBatchNormStats();
        Assert.All(model.BatchNorms, bn => Assert.Equal(0, bn.BatchesTracked));
        Assert.All(model.BatchNorms, bn => Assert.Equal(0, bn.RunningMean.CountNonZero()));
    }

    // ---- copies --------------------------------------------------------------------------------

    [Theory]
    [InlineData("resnet20")]
    [InlineData("vit-tiny")]
    public void CopyAs_float64_is_a_deep_copy_with_the_same_values(string name)
    {
        using var model = Create(name, InputShape.Cifar);
        model.Training = true;
        using (var s = new DisposeScope())
        using (Libtorch.NoGrad())
            model.Forward(Batch(InputShape.Cifar, 2, 5)); // move the running statistics away from 0 / 1
        model.Training = false;
        using var copy = model.CopyAs(DType.Float64);
        IModelView view = copy;
        Assert.Equal(name, view.Name);
        Assert.False(view.Training);
        Assert.Equal(DType.Float64, copy.DType);
        Assert.Equal(model.Parameters.Select(p => p.Key), copy.Parameters.Select(p => p.Key));
        Assert.Equal(model.Prunable.Count, view.Prunable.Count);
        using var scope = new DisposeScope();
        foreach (var (src, dst) in model.Parameters.Concat(model.Buffers).Zip(copy.Parameters.Concat(copy.Buffers)))
        {
            Assert.Equal(DType.Float64, dst.Value.DType);
            Assert.True(src.Value.Detach().To(DType.Float64).Equal(dst.Value), $"{src.Key} changed in the copy");
            Assert.NotSame(src.Value, dst.Value);
        }
        Assert.All(copy.Parameters, p => Assert.True(p.Value.RequiresGrad));

        var x = Batch(InputShape.Cifar, 2, 6);
        using (Libtorch.NoGrad())
        {
            var y32 = model.Forward(x).To(DType.Float64);
            var y64 = copy.Forward(x.To(DType.Float64));
            Assert.True(y32.AllClose(y64, 1e-3, 1e-4));
            // Independent storage: changing the copy leaves the original alone.
            copy.Prunable[0].Value.Zero_();
            Assert.True(model.Prunable[0].Value.Abs().Sum().Item() > 0);
        }
    }

    [Fact]
    public void Model_is_an_IModelView_on_its_device()
    {
        using var model = Create("lenet5", InputShape.Mnist);
        IModelView view = model;
        Assert.Equal("lenet5", view.Name);
        Assert.Equal(Device.Cpu, view.Device);
        Assert.All(view.Parameters, p => Assert.Equal(Device.Cpu, p.Value.Device));
        view.Training = false;
        Assert.False(model.Training);
        using var scope = new DisposeScope();
        Assert.Equal([3L, 10], view.Forward(Batch(InputShape.Mnist, 3, 1)).Shape);
    }

    // ---- FLOPs ---------------------------------------------------------------------------------

    [Fact]
    public void Layer_flops_are_the_dense_multiply_adds_named_by_weight()
    {
        using var lenet5 = Create("lenet5", InputShape.Mnist);
        var flops = lenet5.LayerFlops();
        Assert.Equal(
            [
                new LayerFlops("conv1.weight", 20L * 24 * 24 * 25),
                new LayerFlops("conv2.weight", 50L * 8 * 8 * 20 * 25),
                new LayerFlops("fc1.weight", 800L * 500),
                new LayerFlops("fc2.weight", 500L * 10),
            ], flops);

        using var lenet300 = Create("lenet300", InputShape.Mnist);
        Assert.Equal(784L * 300 + 300 * 100 + 100 * 10, lenet300.DenseFlops());

        // Every conv counted by hand: output positions × output channels × (input channels · k²).
        using var resnet20 = Create("resnet20", InputShape.Cifar);
        var r = resnet20.LayerFlops();
        Assert.Equal(resnet20.Prunable.Select(p => p.Key).ToHashSet(), r.Select(l => l.Name).ToHashSet());
        long expected = 32 * 32 * 16 * 3 * 9                      // stem
            + 6 * (32L * 32 * 16 * 16 * 9)                         // stage 1
            + (16L * 16 * 32 * 16 * 9) + 5 * (16L * 16 * 32 * 32 * 9) + 16 * 16 * 32 * 16 // stage 2 + shortcut
            + (8L * 8 * 64 * 32 * 9) + 5 * (8L * 8 * 64 * 64 * 9) + 8 * 8 * 64 * 32        // stage 3 + shortcut
            + 64 * 10;                                              // fc
        Assert.Equal(expected, resnet20.DenseFlops());
        Assert.True(resnet20.Training, "LayerFlops must restore the mode");

        using var vit = Create("vit-tiny", InputShape.Cifar);
        var qkv = vit.LayerFlops().Single(l => l.Name == "blocks.0.attn.qkv.weight");
        Assert.Equal(65L * 192 * 576, qkv.MultiplyAdds); // 64 patches + class token
    }

    // ---- the zoo -------------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllModels))]
    public void The_zoo_says_which_models_have_batch_norm_as_the_built_model_does(string name)
    {
        using var m = ModelZoo.Create(name, new ModelOptions { InputShape = InputShape.Cifar });
        Assert.Equal(m.BatchNorms.Any(), ModelZoo.HasBatchNorm(name));
    }

    [Fact]
    public void The_zoo_lists_its_models_and_rejects_unknown_names_with_the_valid_ones()
    {
        Assert.Equal(["lenet300", "lenet5", "vgg11", "vgg16", "vgg19", "resnet20", "resnet32", "resnet56", "resnet18", "vit-tiny"], ModelZoo.Names);
        var e = Assert.Throws<ArgumentException>(() => ModelZoo.Create("resnet50"));
        Assert.Contains("resnet50", e.Message);
        foreach (var n in ModelZoo.Names) Assert.Contains(n, e.Message);
        using var m = ModelZoo.Create("LeNet300", new ModelOptions { InputShape = InputShape.Mnist });
        Assert.Equal("lenet300", m.Name);
        Assert.Equal(InputShape.Cifar, new ModelOptions().InputShape);
        Assert.Equal(new InputShape(3, 64, 64), InputShape.Parse("3x64x64"));
        Assert.Throws<FormatException>(() => InputShape.Parse("3x64"));
    }

    // ---- PyTorch oracle ------------------------------------------------------------------------

    static void AssertClose(double[] expected, double[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var scale = Math.Max(1.0, expected.Max(Math.Abs));
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * scale,
                $"{what}[{i}]: PyTorch {expected[i]}, Pai {actual[i]} (tolerance {tolerance * scale})");
    }

    /// <summary>Moves every parameter and BN statistic off its initial value so that biases and BN affine/statistics matter.</summary>
    static void Perturb(Model model, ulong seed)
    {
        using var g = new Generator(seed);
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        foreach (var (_, p) in model.Parameters) p.Add_(Libtorch.RandnLike(p, g) * 0.05);
        foreach (var (n, b) in model.Buffers)
            b.Copy_(n.EndsWith("running_var") ? Libtorch.RandnLike(b, g).Abs() + 0.5 : Libtorch.RandnLike(b, g) * 0.1);
    }

    [Theory]
    [InlineData("lenet300", 1, 28, 28, false)]
    [InlineData("lenet5", 1, 28, 28, false)]
    [InlineData("resnet20", 3, 32, 32, false)]
    [InlineData("resnet20", 3, 32, 32, true)]
    [InlineData("vgg11", 1, 28, 28, false)]
    [InlineData("vit-tiny", 3, 32, 32, false)]
    [InlineData("vit-tiny", 3, 32, 32, true)]
    public void Forward_backward_and_running_stats_match_pytorch_on_the_same_weights(string name, int c, int h, int w, bool float64)
    {
        var shape = new InputShape(c, h, w);
        using var model32 = Create(name, shape, seed: 9);
        Perturb(model32, 10);
        using var model = float64 ? model32.CopyAs(DType.Float64) : model32.Copy();
        using var scope = new DisposeScope();
        var x = Batch(shape, 3, 12).To(model.DType);
        var y = Targets(3, 10, 13);

        // PyTorch runs eval mode (logits), then one train-mode forward and backward.
        var oracle = TorchOracle.Run(model, x, y);
        Assert.Equal(model.ParameterCount, oracle.ParameterCount);
        // In float32 the rounding depends on the convolution's algorithm and storage (Pai runs
        // libtorch's CPU convolution channels-last, PyTorch's default is not), and on batch norm
        // over a batch of three it reaches 1e-4 of a gradient's scale. So both float32 results are
        // judged against the float64 one: Pai's error at most four times PyTorch's own, or 1e-4.
        OracleResult exact;
        if (float64) exact = oracle;
        else
        {
            using var model64 = model32.CopyAs(DType.Float64);
            exact = TorchOracle.Run(model64, x.To(DType.Float64), y);
        }
        double Tolerance(double[] torch, double[] truth)
        {
            if (float64) return 1e-10;
            var scale = Math.Max(1.0, truth.Max(Math.Abs));
            return Math.Max(1e-4, 4 * torch.Zip(truth, (a, b) => Math.Abs(a - b)).Max() / scale);
        }
        void Check(double[] torch, double[] truth, double[] pai, string what) => AssertClose(truth, pai, Tolerance(torch, truth), what);

        model.Training = false;
        using (Libtorch.NoGrad())
            Check(oracle.EvalLogits, exact.EvalLogits, Values(model.Forward(x)), "eval logits");

        model.Training = true;
        var logits = model.Forward(x);
        var loss = Functional.CrossEntropy(logits, y);
        loss.Backward();
        Check(oracle.TrainLogits, exact.TrainLogits, Values(logits), "train logits");
        Check([oracle.Loss], [exact.Loss], [loss.Item()], "loss");
        foreach (var (n, p) in model.Parameters)
            Check(oracle.Gradients[n], exact.Gradients[n], Values(p.Grad!), $"gradient of {n}");
        foreach (var (n, b) in model.Buffers)
            Check(oracle.BuffersAfter[n], exact.BuffersAfter[n], Values(b), $"buffer {n}");
        Assert.Equal(model.Buffers.Count, oracle.BuffersAfter.Count);
        Assert.Equal(model.Parameters.Count, oracle.Gradients.Count);
    }
}
