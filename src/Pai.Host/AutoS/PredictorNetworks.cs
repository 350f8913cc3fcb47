
namespace Pai.Host.AutoS;

/// <summary>A network that maps normalized per-weight features [n, F] to one predicted label per weight [n].</summary>
public abstract class PredictorNetwork : Module
{
    /// <summary>The architecture names <see cref="Create"/> knows: "mlp" (the default) and "resnet18" (the paper's).</summary>
    public static IReadOnlyList<string> Architectures { get; } = ["mlp", "resnet18"];

    /// <summary>Builds and initializes an architecture for <paramref name="features"/> inputs; the same seed gives the same weights.</summary>
    public static PredictorNetwork Create(string architecture, int features, ulong seed) => architecture switch
    {
        "mlp" => new MlpPredictor(features, seed),
        "resnet18" => new ResNetPredictor(features, seed),
        _ => throw new ArgumentException($"unknown predictor architecture '{architecture}'; valid: {string.Join(", ", Architectures)}"),
    };

    /// <summary>Weights per forward pass that keep memory modest: the ResNet runs a whole image per weight.</summary>
    public abstract int PredictionBatchSize { get; }

    /// <summary>Initializes the given modules and every layer below them (Kaiming normal) from one seeded generator, in order.</summary>
    protected static void InitializeLayers(ulong seed, params Module[] roots)
    {
        using var generator = new Generator(seed);
        foreach (var m in roots.SelectMany(SelfAndDescendants))
            if (m is IInitializable layer) layer.ResetParameters(WeightInit.KaimingNormal, generator);
    }

    static IEnumerable<Module> SelfAndDescendants(Module m) =>
        m.Children.SelectMany(c => SelfAndDescendants(c.Module)).Prepend(m);
}

/// <summary>The cheap predictor: Linear F→64, ReLU, Linear 64→64, ReLU, Linear 64→1.</summary>
public sealed class MlpPredictor : PredictorNetwork
{
    readonly Sequential layers;

    /// <summary>An initialized MLP for <paramref name="features"/> inputs.</summary>
    public MlpPredictor(int features, ulong seed)
    {
        layers = RegisterModule("layers", new Sequential(
            new Linear(features, 64, prunable: false), new Relu(),
            new Linear(64, 64, prunable: false), new Relu(),
            new Linear(64, 1, prunable: false)));
        InitializeLayers(seed, layers);
    }

    /// <inheritdoc/>
    public override int PredictionBatchSize => 65536;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => layers.Forward(x).Squeeze(1);
}

/// <summary>
/// The AutoS paper's predictor: Linear F→64, ReLU, Linear 64→3072, reshaped to a 3×32×32 "image"
/// per weight, and a ResNet-18 (CIFAR stem) regressing one number. One ResNet-18 forward per
/// weight: affordable on a GPU, only for small subsets on a CPU.
/// </summary>
public sealed class ResNetPredictor : PredictorNetwork
{
    readonly Linear embed, expand;
    readonly ResNet resnet;

    /// <summary>An initialized predictor for <paramref name="features"/> inputs.</summary>
    public ResNetPredictor(int features, ulong seed)
    {
        embed = RegisterModule("embed", new Linear(features, 64, prunable: false));
        expand = RegisterModule("expand", new Linear(64, 3 * 32 * 32, prunable: false));
        // The ResNet initializes itself from the seed.
        resnet = RegisterModule("resnet", ResNet.ResNet18(new ModelOptions { InputShape = InputShape.Cifar, Classes = 1, Seed = seed }));
        InitializeLayers(seed, embed, expand);
    }

    /// <inheritdoc/>
    public override int PredictionBatchSize => 256;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        var image = expand.Forward(Functional.Relu(embed.Forward(x))).Reshape(x.Size(0), 3, 32, 32);
        return resnet.Forward(image).Squeeze(1);
    }
}
