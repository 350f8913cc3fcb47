using System.Globalization;

namespace Pai.Host.Models;

/// <summary>The shape of one input image: channels, height, width.</summary>
/// <param name="Channels">Colour channels (1 for MNIST-like data, 3 for CIFAR).</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Width">Width in pixels.</param>
public readonly record struct InputShape(int Channels, int Height, int Width)
{
    /// <summary>1×28×28: MNIST and Fashion-MNIST.</summary>
    public static readonly InputShape Mnist = new(1, 28, 28);
    /// <summary>3×32×32: CIFAR-10 and CIFAR-100.</summary>
    public static readonly InputShape Cifar = new(3, 32, 32);
    /// <summary>3×64×64: Tiny ImageNet.</summary>
    public static readonly InputShape TinyImageNet = new(3, 64, 64);
    /// <summary>3×224×224: ImageNet after its crop.</summary>
    public static readonly InputShape ImageNet = new(3, 224, 224);

    /// <summary>Values per image (C·H·W).</summary>
    public long NumEl => (long)Channels * Height * Width;

    /// <summary>The batch shape [n, C, H, W].</summary>
    public long[] WithBatch(long n) => [n, .. Dimensions];

    /// <summary>The shape [C, H, W] of one image.</summary>
    public long[] Dimensions => [Channels, Height, Width];

    /// <summary>Parses "C×H×W" written with 'x' or '×' (e.g. "3x32x32").</summary>
    public static InputShape Parse(string text)
    {
        var parts = text.Trim().ToLowerInvariant().Replace('×', 'x').Split('x');
        if (parts.Length == 3
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var c)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var h)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var w)
            && c > 0 && h > 0 && w > 0)
            return new InputShape(c, h, w);
        throw new FormatException($"'{text}' is not an input shape: write channels x height x width, e.g. 3x32x32");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Channels}x{Height}x{Width}";
}

/// <summary>How conv and linear weights are drawn at initialization (biases are always zero).</summary>
public enum WeightInit
{
    /// <summary>
    /// Kaiming (He) normal, PyTorch's <c>kaiming_normal_(w, mode='fan_in', nonlinearity='relu')</c>:
    /// N(0, 2/fan_in), fan_in = in_features (linear) or in_channels/groups·kh·kw (conv).
    /// The default: it keeps activation variance constant through ReLU layers.
    /// </summary>
    KaimingNormal,

    /// <summary>
    /// Variance scaling as SNIP used it: TensorFlow 1.x's <c>tf.variance_scaling_initializer()</c>
    /// with its defaults (scale 1, mode fan_in, distribution "normal", which TensorFlow draws as a
    /// normal truncated at two standard deviations and widened by 1/0.87962566103423978 so that
    /// the variance stays exactly 1/fan_in). SNIP scores weights at this initialization, so the
    /// reproduction uses the same distribution rather than an untruncated N(0, 1/fan_in).
    /// </summary>
    VarianceScaling,
}

/// <summary>What a model is built for and how it is initialized (see <see cref="ModelZoo.Create"/>).</summary>
public sealed record ModelOptions
{
    /// <summary>Shape of one input image (default 3×32×32).</summary>
    public InputShape InputShape { get; init; } = InputShape.Cifar;

    /// <summary>Number of classes: the size of the logits (default 10).</summary>
    public int Classes { get; init; } = 10;

    /// <summary>Weight initialization scheme (default Kaiming normal).</summary>
    public WeightInit Init { get; init; } = WeightInit.KaimingNormal;

    /// <summary>Seed of the generator every initial value is drawn from: the same seed gives bit-identical weights.</summary>
    public ulong Seed { get; init; }

    /// <summary>Keep the final classifier dense: its weight is then not in <see cref="Model.Prunable"/>.</summary>
    public bool DenseClassifier { get; init; }

    /// <summary>Device the parameters live on (default the CPU).</summary>
    public Device Device { get; init; } = Device.Cpu;

    /// <summary>Element type of parameters and buffers (default float32).</summary>
    public DType DType { get; init; } = DType.Float32;
}
