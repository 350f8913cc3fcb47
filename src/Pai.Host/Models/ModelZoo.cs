namespace Pai.Host.Models;

/// <summary>The models Pai knows by name (docs/architecture.md §4), built for an input shape and class count.</summary>
public static class ModelZoo
{
    // One entry per model: how to build it and what the rest of Pai needs to know without building
    // it (tests check BatchNorm and PiecewiseLinear against the built models).
    // Training defaults train each model from its initialization (checked by a test that trains
    // every model 20 steps): without batch norm, SGD at 0.1 diverges on LeNets within a dozen
    // batches. The BN networks and the ViT start with a linear learning-rate warm-up (Goyal et al.
    // 2017): without it their first steps at full rate are chaotic, so whether the loss falls over
    // the first 20 steps depended on the seed and even on the CPU's rounding (resnet32 at 0.1 and
    // resnet56 at 0.05 climbed on some seeds). The deeper ones keep the lower rate of 0.05; the ViT
    // trains with AdamW as ViTs usually do.
    sealed record Entry(string Name, string Description, Func<ModelOptions, Model> Create,
        string Optimizer = "sgd", double LearningRate = 0.1, int LrWarmup = 0, bool BatchNorm = true, bool PiecewiseLinear = true);

    static readonly Entry[] Entries =
    [
        new("lenet300", "LeNet-300-100: FC (C·H·W)-300-100-classes, ReLU", o => new LeNet300(o), LearningRate: 0.005, BatchNorm: false),
        new("lenet5", "LeNet-5-Caffe: conv 20@5x5, pool, conv 50@5x5, pool, FC 500, FC classes", o => new LeNet5(o), LearningRate: 0.005, BatchNorm: false),
        new("vgg11", "VGG-11 (cfg A) with BN, global pool, Linear 512-classes", o => new Vgg(11, o), LrWarmup: 100),
        new("vgg16", "VGG-16 (cfg D) with BN, global pool, Linear 512-classes", o => new Vgg(16, o), LearningRate: 0.05, LrWarmup: 100),
        new("vgg19", "VGG-19 (cfg E) with BN, global pool, Linear 512-classes", o => new Vgg(19, o), LearningRate: 0.05, LrWarmup: 100),
        new("resnet20", "CIFAR ResNet-20: 16/32/64 channels, 3 blocks per stage", o => ResNet.Cifar(20, o), LrWarmup: 100),
        new("resnet32", "CIFAR ResNet-32: 16/32/64 channels, 5 blocks per stage", o => ResNet.Cifar(32, o), LrWarmup: 100),
        new("resnet56", "CIFAR ResNet-56: 16/32/64 channels, 9 blocks per stage", o => ResNet.Cifar(56, o), LearningRate: 0.05, LrWarmup: 100),
        new("resnet18", "ResNet-18, 64/128/256/512 x 2 blocks; 3x3 stride-1 stem (inputs under 128, e.g. CIFAR, Tiny ImageNet) or the ImageNet 7x7 stride-2 stem + max-pool (224)", o => ResNet.ResNet18(o), LearningRate: 0.05, LrWarmup: 100),
        new("vit-tiny", "ViT: patch 4, width 192, depth 6, 3 heads, MLP 384, class token", o => VisionTransformer.Tiny(o),
            Optimizer: "adamw", LearningRate: 0.001, LrWarmup: 100, BatchNorm: false, PiecewiseLinear: false),
    ];

    /// <summary>
    /// <paramref name="c"/> with the optimizer, learning rate and learning-rate warm-up its model
    /// trains with unless told otherwise (SGD at 0.1 for BN networks).
    /// </summary>
    public static Runs.RunConfig WithTrainingDefaults(Runs.RunConfig c)
    {
        var e = Find(c.Model);
        return c with { Optimizer = e.Optimizer, LearningRate = e.LearningRate, LrWarmup = e.LrWarmup };
    }

    /// <summary>Whether the model has batch norm, so that BN warm-up before scoring changes it (true for a name Pai does not know).</summary>
    public static bool HasBatchNorm(string name) => !Contains(name) || Find(name).BatchNorm;

    /// <summary>
    /// Whether the model called <paramref name="name"/> is piecewise linear in each layer's weights
    /// (its logits are linear in each weight tensor taken alone in eval mode, so the exact Hessian
    /// diagonal applies), without building it; see Model.IsPiecewiseLinear.
    /// </summary>
    public static bool IsPiecewiseLinear(string name) => Find(name).PiecewiseLinear;

    /// <summary>Every model name, in a fixed order.</summary>
    public static IReadOnlyList<string> Names { get; } = Entries.Select(e => e.Name).ToArray();

    /// <summary>A one-line description of the model called <paramref name="name"/>.</summary>
    public static string Describe(string name) => Find(name).Description;

    /// <summary>True when <paramref name="name"/> names a model (case-insensitive).</summary>
    public static bool Contains(string name) => Entries.Any(e => string.Equals(e.Name, name?.Trim(), StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Builds and initializes the model called <paramref name="name"/> (case-insensitive) for
    /// <paramref name="options"/> (default: 3×32×32 inputs, 10 classes, Kaiming normal, seed 0, CPU,
    /// float32). An unknown name throws an <see cref="ArgumentException"/> listing the valid names.
    /// </summary>
    public static Model Create(string name, ModelOptions? options = null) => Find(name).Create(options ?? new ModelOptions());

    static Entry Find(string name)
    {
        foreach (var e in Entries)
            if (string.Equals(e.Name, name?.Trim(), StringComparison.OrdinalIgnoreCase))
                return e;
        throw new ArgumentException($"unknown model '{name}'; valid models: {string.Join(", ", Names)}", nameof(name));
    }
}
