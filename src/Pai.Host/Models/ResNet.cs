
namespace Pai.Host.Models;

/// <summary>
/// A basic residual block: conv 3×3 (stride s) + BN + ReLU, conv 3×3 + BN, plus the shortcut,
/// then ReLU. The shortcut is the identity, or conv 1×1 (stride s) + BN ("shortcut.0",
/// "shortcut.1") when the stride or the channel count changes. Convs have no bias.
/// </summary>
public sealed class BasicBlock : Module
{
    readonly Conv2d conv1, conv2;
    readonly BatchNorm2d bn1, bn2;
    readonly Sequential? shortcut;

    /// <summary>A block from <paramref name="inChannels"/> to <paramref name="channels"/> with the first conv's <paramref name="stride"/>.</summary>
    public BasicBlock(long inChannels, long channels, int stride, DType dtype = DType.Float32, Device? device = null)
    {
        conv1 = RegisterModule("conv1", new Conv2d(inChannels, channels, 3, stride, padding: 1, bias: false, dtype: dtype, device: device));
        bn1 = RegisterModule("bn1", new BatchNorm2d(channels, dtype: dtype, device: device));
        conv2 = RegisterModule("conv2", new Conv2d(channels, channels, 3, 1, padding: 1, bias: false, dtype: dtype, device: device));
        bn2 = RegisterModule("bn2", new BatchNorm2d(channels, dtype: dtype, device: device));
        if (stride != 1 || inChannels != channels)
            shortcut = RegisterModule("shortcut", new Sequential(
                new Conv2d(inChannels, channels, 1, stride, bias: false, dtype: dtype, device: device),
                new BatchNorm2d(channels, dtype: dtype, device: device)));
    }

    /// <summary>True when the shortcut is a 1×1 conv + BN rather than the identity.</summary>
    public bool HasProjection => shortcut is not null;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        // Every intermediate's handle is freed on leaving: the autograd graph holds what its backward
        // pass needs, and the rest (batch norm's output, the shortcut's, the sum, all of them in
        // evaluation) then does not wait for the step's dispose scope to close.
        using var c1 = conv1.Forward(x);
        using var h = bn1.ForwardRelu(c1);
        using var c2 = conv2.Forward(h);
        using var main = bn2.Forward(c2);
        using var projected = shortcut?.Forward(x);
        // A sparse layer may have passed either branch on stored batch-innermost.
        using var skip = Functional.StoredLike(projected ?? x, main);
        using var sum = main + skip;
        return Functional.Relu(sum);
    }
}

/// <summary>
/// Residual networks of basic blocks for small images: a 3×3 stem conv (stride 1, no bias) + BN +
/// ReLU, no max-pool, stages of basic blocks (the first block of every stage after the first has
/// stride 2), global average pooling and a Linear classifier "fc". Layers: conv1, bn1,
/// layer1…layerK (blocks "layerK.i"), fc.
/// <list type="bullet">
/// <item>resnet20/32/56: He et al. (2016) CIFAR ResNets, 16/32/64 channels, n = 3/5/9 blocks per
/// stage (depth 6n + 2), with 1×1 conv + BN shortcuts where the shape changes (option B).</item>
/// <item>resnet18: 64/128/256/512 channels, 2 blocks per stage (the common CIFAR ResNet-18). For
/// inputs of at least 128×128 (ImageNet's 224) it takes the ImageNet stem of He et al.: a 7×7
/// stride-2 conv (padding 3) + BN + ReLU and a 3×3 stride-2 max-pool (padding 1). Smaller inputs,
/// Tiny ImageNet's 64×64 included, keep the 3×3 stride-1 stem without max-pool, as the Tiny
/// ImageNet ResNet-18 of SynFlow's and GraSP's code does.</item>
/// </list>
/// </summary>
public sealed class ResNet : Model
{
    readonly Conv2d conv1;
    readonly BatchNorm2d bn1;
    readonly Sequential[] stages;
    readonly Linear fc;

    /// <summary>A residual network named <paramref name="name"/> with the given stage widths and blocks per stage, initialized.</summary>
    /// <param name="name">Model name.</param>
    /// <param name="stemChannels">Channels of the stem conv.</param>
    /// <param name="stageChannels">Channels of each stage.</param>
    /// <param name="blocksPerStage">Basic blocks in each stage.</param>
    /// <param name="options">Input shape, classes, initialization, dtype, device.</param>
    /// <param name="imageNetStem">A 7×7 stride-2 stem conv and a 3×3 stride-2 max-pool instead of the 3×3 stride-1 stem.</param>
    public ResNet(string name, int stemChannels, IReadOnlyList<int> stageChannels, IReadOnlyList<int> blocksPerStage, ModelOptions options, bool imageNetStem = false)
        : this(name, stemChannels, stageChannels, blocksPerStage, options, imageNetStem, initialize: true) { }

    ResNet(string name, int stemChannels, IReadOnlyList<int> stageChannels, IReadOnlyList<int> blocksPerStage, ModelOptions options, bool imageNetStem, bool initialize)
        : base(name, options)
    {
        if (stageChannels.Count == 0 || stageChannels.Count != blocksPerStage.Count)
            throw new ArgumentException("a ResNet needs one block count per stage");
        StemChannels = stemChannels;
        StageChannels = stageChannels.ToArray();
        BlocksPerStage = blocksPerStage.ToArray();
        ImageNetStem = imageNetStem;
        var (dt, dev) = (options.DType, options.Device);
        conv1 = RegisterModule("conv1", imageNetStem
            ? new Conv2d(options.InputShape.Channels, stemChannels, 7, 2, padding: 3, bias: false, dtype: dt, device: dev)
            : new Conv2d(options.InputShape.Channels, stemChannels, 3, 1, padding: 1, bias: false, dtype: dt, device: dev));
        bn1 = RegisterModule("bn1", new BatchNorm2d(stemChannels, dtype: dt, device: dev));
        stages = new Sequential[stageChannels.Count];
        long channels = stemChannels;
        for (var s = 0; s < stages.Length; s++)
        {
            var stage = new Sequential();
            for (var b = 0; b < blocksPerStage[s]; b++)
            {
                var stride = s > 0 && b == 0 ? 2 : 1;
                stage.Add(new BasicBlock(channels, stageChannels[s], stride, dt, dev));
                channels = stageChannels[s];
            }
            stages[s] = RegisterModule($"layer{s + 1}", stage);
        }
        fc = RegisterClassifier("fc", new Linear(channels, options.Classes, dtype: dt, device: dev));
        if (initialize) Initialize(options.Init, options.Seed);
    }

    /// <summary>He et al.'s CIFAR ResNet of depth 6n + 2 (20, 32, 56, …): 16/32/64 channels, n blocks per stage.</summary>
    public static ResNet Cifar(int depth, ModelOptions options)
    {
        if (depth < 8 || (depth - 2) % 6 != 0)
            throw new ArgumentOutOfRangeException(nameof(depth), depth, "a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110)");
        var n = (depth - 2) / 6;
        return new ResNet($"resnet{depth}", 16, [16, 32, 64], [n, n, n], options);
    }

    /// <summary>
    /// ResNet-18, 64/128/256/512 × 2 blocks: with the ImageNet stem (7×7 stride-2 conv + max-pool)
    /// when the input is at least 128×128, else the 3×3 stride-1 stem without max-pool (CIFAR, Tiny ImageNet).
    /// </summary>
    public static ResNet ResNet18(ModelOptions options) =>
        new("resnet18", 64, [64, 128, 256, 512], [2, 2, 2, 2], options, UsesImageNetStem(options.InputShape));

    /// <summary>Whether ResNet-18 takes the ImageNet stem for inputs of this shape: both sides at least 128.</summary>
    public static bool UsesImageNetStem(InputShape shape) => shape.Height >= 128 && shape.Width >= 128;

    /// <summary>True for the ImageNet stem (7×7 stride-2 conv + 3×3 stride-2 max-pool).</summary>
    public bool ImageNetStem { get; }

    /// <summary>Channels of the stem conv.</summary>
    public int StemChannels { get; }
    /// <summary>Channels of each stage.</summary>
    public IReadOnlyList<int> StageChannels { get; }
    /// <summary>Basic blocks in each stage.</summary>
    public IReadOnlyList<int> BlocksPerStage { get; }

    /// <inheritdoc/>
    protected override Tensor Logits(Tensor inputs)
    {
        // Its small dense convolutions run faster channels-last on the CPU (benchmarks/README.md,
        // "sparse-training"), and every op after them keeps that storage; a sparse stem passes its
        // output on batch-innermost, so the input stays as it is.
        using var x = conv1.Sparse is null ? Functional.ChannelsLast(inputs) : inputs.Alias();
        using var c = conv1.Forward(x);
        var h = bn1.ForwardRelu(c);
        // each intermediate's handle freed when the next is computed, as in BasicBlock.Forward
        Tensor Then(Tensor next)
        {
            h.Dispose();
            return next;
        }
        if (ImageNetStem) h = Then(Functional.MaxPool2d(h, 3, 2, padding: 1));
        foreach (var stage in stages) h = Then(stage.Forward(h));
        h = Then(Functional.AdaptiveAvgPool2d(h, 1, 1).Flatten(1));
        return Then(fc.Forward(h));
    }

    /// <summary>True: ReLU, pooling, eval-mode batch norm and residual sums; the logits are linear in each weight taken alone.</summary>
    public override bool IsPiecewiseLinear => true;

    /// <summary>True: batch norm, ReLU and the residual sums keep batch-innermost activations (the blocks match the two branches' storage).</summary>
    public override bool PassesBatchInnermost => true;

    /// <inheritdoc/>
    protected override Model CreateLike(ModelOptions options) => new ResNet(Name, StemChannels, StageChannels, BlocksPerStage, options, ImageNetStem, initialize: false);
}
