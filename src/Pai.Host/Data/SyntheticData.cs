
namespace Pai.Host.Data;

/// <summary>Shape and size of the synthetic data set.</summary>
/// <param name="Channels">Channels C.</param>
/// <param name="Height">Height H.</param>
/// <param name="Width">Width W.</param>
/// <param name="Classes">Number of classes.</param>
/// <param name="TrainCount">Training samples.</param>
/// <param name="TestCount">Test samples.</param>
/// <param name="Noise">Standard deviation of the per-sample noise relative to the class templates (which have std 1).</param>
/// <param name="Seed">Seed of the templates and samples.</param>
public sealed record SyntheticOptions(
    int Channels = 1, int Height = 28, int Width = 28, int Classes = 10,
    int TrainCount = 2000, int TestCount = 500, double Noise = 1.0, ulong Seed = 0);

/// <summary>
/// A small learnable data set for tests and smoke runs: every class has a random N(0, 1) template
/// image (drawn from the seed) and a sample is its class's template plus N(0, noise²) noise, the
/// sum scaled to unit variance. Classes are balanced (counts differ by at most one). Train and test
/// share the templates and draw independent noise. Values are already normalized (mean 0, std 1).
/// </summary>
public static class SyntheticData
{
    /// <summary>Data set name in the registry.</summary>
    public const string Name = "synthetic";

    /// <summary>Creates the training or test part.</summary>
    /// <param name="options">Shape, size, noise and seed (default: 1×28×28, 10 classes, 2000/500 samples).</param>
    /// <param name="split">Train or test.</param>
    public static Dataset Create(SyntheticOptions? options = null, DatasetSplit split = DatasetSplit.Train)
    {
        var o = options ?? new SyntheticOptions();
        if (o.Channels < 1 || o.Height < 1 || o.Width < 1)
            throw new ArgumentException($"synthetic images need positive sizes, got {o.Channels}x{o.Height}x{o.Width}");
        if (o.Classes < 1) throw new ArgumentException($"synthetic data needs at least one class, got {o.Classes}");
        if (o.Noise < 0) throw new ArgumentException($"noise must be non-negative, got {o.Noise}");
        var n = split switch
        {
            DatasetSplit.Train => o.TrainCount,
            DatasetSplit.Test => o.TestCount,
            _ => throw new ArgumentException("the synthetic data set has train and test parts; split validation off the training set with Dataset.SplitValidation"),
        };
        if (n < 1) throw new ArgumentException($"synthetic {split} count must be positive, got {n}");

        using var scope = new DisposeScope();
        using var templateGen = new Generator(Seeds.Derive(o.Seed, Seeds.SyntheticTemplateStream));
        using var sampleGen = new Generator(Seeds.Derive(o.Seed, Seeds.SyntheticSampleStream, (ulong)split));
        var templates = Libtorch.Randn([o.Classes, o.Channels, o.Height, o.Width], templateGen);
        // balanced, shuffled labels: a permutation of 0..n-1 taken modulo the class count
        var perm = Libtorch.RandPerm(n, sampleGen).ToArray<long>();
        var labelValues = new long[n];
        for (var i = 0; i < n; i++) labelValues[i] = perm[i] % o.Classes;
        var labels = Libtorch.FromArray(labelValues);
        var noise = Libtorch.Randn([n, o.Channels, o.Height, o.Width], sampleGen);
        var images = (templates.IndexSelect(0, labels) + noise * o.Noise) * (1.0 / Math.Sqrt(1 + o.Noise * o.Noise));
        return new Dataset(Name, split, images, labels, o.Classes, [0.0], [1.0]);
    }
}
