
namespace Pai.Host.Models;

/// <summary>
/// VGG with batch norm for small images: the conv stacks of configuration A (vgg11), D (vgg16)
/// or E (vgg19), each conv 3×3 (padding 1, with bias) + BN + ReLU, a 2×2 max-pool where the
/// configuration has one (skipped once the feature map is already smaller than 2×2, so 28×28
/// inputs work), global average pooling and one Linear 512→classes. Layers: features.i (as in
/// torchvision, pools included in the numbering) and classifier.
/// </summary>
public sealed class Vgg : Model
{
    // 0 marks a max-pool.
    static readonly IReadOnlyDictionary<int, int[]> Configurations = new Dictionary<int, int[]>
    {
        [11] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        [16] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0],
        [19] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0],
    };

    readonly Sequential features;
    readonly Linear classifier;

    /// <summary>VGG-<paramref name="depth"/> (11, 16 or 19) for <paramref name="options"/>, initialized.</summary>
    public Vgg(int depth, ModelOptions options) : this(depth, options, initialize: true) { }

    Vgg(int depth, ModelOptions options, bool initialize) : base($"vgg{depth}", options)
    {
        if (!Configurations.TryGetValue(depth, out var cfg))
            throw new ArgumentOutOfRangeException(nameof(depth), depth, "VGG depth must be 11, 16 or 19");
        Depth = depth;
        var (dt, dev) = (options.DType, options.Device);
        features = new Sequential();
        long channels = options.InputShape.Channels;
        foreach (var v in cfg)
        {
            if (v == 0)
            {
                features.Add(new MaxPool2d(2, skipWhenTooSmall: true));
                continue;
            }
            features.Add(new Conv2d(channels, v, 3, padding: 1, bias: true, dtype: dt, device: dev));
            features.Add(new BatchNorm2d(v, dtype: dt, device: dev));
            features.Add(new Relu());
            channels = v;
        }
        RegisterModule("features", features);
        classifier = RegisterClassifier("classifier", new Linear(channels, options.Classes, dtype: dt, device: dev));
        if (initialize) Initialize(options.Init, options.Seed);
    }

    /// <summary>11, 16 or 19.</summary>
    public int Depth { get; }

    /// <inheritdoc/>
    protected override Tensor Logits(Tensor inputs)
    {
        var h = features.Forward(inputs);
        h = Functional.AdaptiveAvgPool2d(h, 1, 1).Flatten(1);
        return classifier.Forward(h);
    }

    /// <summary>True: ReLU, pooling, eval-mode batch norm; the logits are linear in each weight taken alone.</summary>
    public override bool IsPiecewiseLinear => true;

    /// <summary>True: batch norm, ReLU, max pooling and flattening keep batch-innermost activations.</summary>
    public override bool PassesBatchInnermost => true;

    /// <inheritdoc/>
    protected override Model CreateLike(ModelOptions options) => new Vgg(Depth, options, initialize: false);
}
