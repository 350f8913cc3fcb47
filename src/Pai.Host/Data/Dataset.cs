
namespace Pai.Host.Data;

/// <summary>Which part of a data set.</summary>
public enum DatasetSplit
{
    /// <summary>The training set (or what remains of it after a validation split).</summary>
    Train,
    /// <summary>The held-out test set.</summary>
    Test,
    /// <summary>A validation set split off the training set.</summary>
    Validation,
}

/// <summary>
/// An image classification data set in memory: images [N, C, H, W] as uint8 (raw pixels, scaled by
/// 1/255 when batched) or float32, and int64 labels [N]. The data set owns both tensors (they live
/// outside every dispose scope) and frees them when disposed. Keep raw uint8 images: loaders convert
/// one batch at a time (60000 Fashion-MNIST images are 47 MB as bytes, 188 MB as floats).
/// </summary>
public sealed class Dataset : IDisposable
{
    readonly double[] mean;
    readonly double[] std;

    /// <summary>Wraps image and label tensors; the data set takes ownership of both (they are detached from any scope).</summary>
    /// <param name="name">Data set name, e.g. "fashion-mnist".</param>
    /// <param name="split">Which part this is.</param>
    /// <param name="images">[N, C, H, W], uint8 or float32.</param>
    /// <param name="labels">int64 [N], values in 0..numClasses-1.</param>
    /// <param name="numClasses">Number of classes.</param>
    /// <param name="mean">Per-channel mean of the scaled pixels (C values, or one value for every channel).</param>
    /// <param name="std">Per-channel standard deviation of the scaled pixels (C values, or one).</param>
    /// <exception cref="ArgumentException">Shapes, dtypes or normalization do not fit together.</exception>
    public Dataset(string name, DatasetSplit split, Tensor images, Tensor labels, int numClasses, IReadOnlyList<double> mean, IReadOnlyList<double> std)
    {
        if (images.Dim != 4)
            throw new ArgumentException($"images must be [N, C, H, W], got [{string.Join(", ", images.Shape)}]", nameof(images));
        if (images.DType is not (DType.UInt8 or DType.Float32))
            throw new ArgumentException($"images must be uint8 or float32, got {images.DType}", nameof(images));
        if (labels.Dim != 1 || labels.DType != DType.Int64)
            throw new ArgumentException($"labels must be a 1-d int64 tensor, got {labels}", nameof(labels));
        var shape = images.Shape;
        if (labels.Size(0) != shape[0])
            throw new ArgumentException($"{shape[0]} images but {labels.Size(0)} labels", nameof(labels));
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "at least one class");
        var channels = (int)shape[1];
        this.mean = PerChannel(mean, channels, nameof(mean));
        this.std = PerChannel(std, channels, nameof(std));
        if (this.std.Any(s => !(s > 0)))
            throw new ArgumentException($"standard deviations must be positive, got [{string.Join(", ", this.std)}]", nameof(std));
        if (shape[0] > 0)
        {
            using var scope = new DisposeScope();
            var lo = labels.Min().ItemLong();
            var hi = labels.Max().ItemLong();
            if (lo < 0 || hi >= numClasses)
                throw new ArgumentException($"labels span {lo}..{hi}, outside 0..{numClasses - 1}", nameof(labels));
        }
        Name = name;
        Split = split;
        NumClasses = numClasses;
        Count = shape[0];
        Channels = channels;
        Height = (int)shape[2];
        Width = (int)shape[3];
        Images = images.DetachFromScope();
        Labels = labels.DetachFromScope();
    }

    static double[] PerChannel(IReadOnlyList<double> values, int channels, string what)
    {
        if (values.Count == channels) return values.ToArray();
        if (values.Count == 1) return Enumerable.Repeat(values[0], channels).ToArray();
        throw new ArgumentException($"{values.Count} {what} values for {channels} channels", what);
    }

    /// <summary>Data set name, e.g. "fashion-mnist".</summary>
    public string Name { get; }
    /// <summary>Which part of the data set this is.</summary>
    public DatasetSplit Split { get; }
    /// <summary>Images [N, C, H, W] (uint8 or float32), owned by this data set.</summary>
    public Tensor Images { get; }
    /// <summary>Labels [N] (int64), owned by this data set.</summary>
    public Tensor Labels { get; }
    /// <summary>Number of classes.</summary>
    public int NumClasses { get; }
    /// <summary>Number of samples N.</summary>
    public long Count { get; }
    /// <summary>Channels C.</summary>
    public int Channels { get; }
    /// <summary>Height H.</summary>
    public int Height { get; }
    /// <summary>Width W.</summary>
    public int Width { get; }
    /// <summary>The shape of one input: [C, H, W].</summary>
    public long[] InputShape => [Channels, Height, Width];
    /// <summary>Per-channel mean of the scaled pixels, subtracted when normalizing.</summary>
    public IReadOnlyList<double> Mean => mean;
    /// <summary>Per-channel standard deviation of the scaled pixels, divided by when normalizing.</summary>
    public IReadOnlyList<double> Std => std;
    /// <summary>Factor from stored values to the [0, 1] scale the mean and std refer to: 1/255 for uint8 images, 1 for float.</summary>
    public double PixelScale => Images.DType == DType.UInt8 ? 1.0 / 255.0 : 1.0;

    /// <summary>Image files the loader left out because they could not be decoded (--skip-bad-images); empty otherwise.</summary>
    public IReadOnlyList<string> SkippedFiles { get; init; } = [];

    /// <summary>The labels as a managed array.</summary>
    public long[] LabelArray() => Labels.ToArray<long>();

    /// <summary>Number of samples of each class (index = class).</summary>
    public long[] ClassCounts()
    {
        var counts = new long[NumClasses];
        foreach (var l in LabelArray()) counts[l]++;
        return counts;
    }

    /// <summary>A new data set of the samples at <paramref name="indices"/> (copied; the result owns its tensors).</summary>
    /// <param name="indices">Sample indices, each in 0..Count-1.</param>
    /// <param name="split">The split of the result (default: this one's).</param>
    public Dataset Subset(ReadOnlySpan<long> indices, DatasetSplit? split = null)
    {
        foreach (var i in indices)
            if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(indices), i, $"sample index outside 0..{Count - 1}");
        using var scope = new DisposeScope();
        var idx = Libtorch.FromArray(indices, [indices.Length]);
        var images = Images.IndexSelect(0, idx);
        var labels = Labels.IndexSelect(0, idx);
        return new Dataset(Name, split ?? Split, images, labels, NumClasses, mean, std);
    }

    /// <summary>
    /// Splits off a seeded random validation set of <paramref name="fraction"/> of the samples
    /// (rounded to the nearest count). Returns two new data sets; this one is left as it is
    /// (dispose it when only the parts are needed).
    /// </summary>
    /// <param name="fraction">Fraction of samples for validation, in (0, 1).</param>
    /// <param name="seed">Seed of the random split.</param>
    public (Dataset Train, Dataset Validation) SplitValidation(double fraction, ulong seed)
    {
        if (!(fraction > 0 && fraction < 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "the validation fraction must be in (0, 1)");
        return SplitValidation((long)Math.Round(fraction * Count), seed);
    }

    /// <summary>
    /// Splits off a seeded random validation set of <paramref name="count"/> samples. Returns two new
    /// data sets (both keep their samples in the original order); this one is left as it is.
    /// </summary>
    /// <param name="count">Validation samples, in 1..Count-1.</param>
    /// <param name="seed">Seed of the random split.</param>
    public (Dataset Train, Dataset Validation) SplitValidation(long count, ulong seed)
    {
        if (count < 1 || count >= Count)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"the validation set must hold 1..{Count - 1} of the {Count} samples");
        var perm = Seeds.Permutation(Count, Seeds.Derive(seed, Seeds.ValidationStream));
        var validation = perm[..(int)count];
        var train = perm[(int)count..];
        Array.Sort(validation);
        Array.Sort(train);
        var t = Subset(train, DatasetSplit.Train);
        try
        {
            return (t, Subset(validation, DatasetSplit.Validation));
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>True once <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed => Images.IsDisposed;

    /// <summary>Frees the image and label tensors.</summary>
    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name} ({Split.ToString().ToLowerInvariant()}): {Count} images {Channels}x{Height}x{Width} {Images.DType}, {NumClasses} classes";
}

/// <summary>Seed handling shared by the data code: independent streams derived from one seed.</summary>
internal static class Seeds
{
    internal const ulong ShuffleStream = 1, AugmentStream = 2, ValidationStream = 3, ScoringStream = 4, SyntheticTemplateStream = 5, SyntheticSampleStream = 6;

    // SplitMix64 finalizer: nearby (seed, stream, epoch) triples give unrelated generator seeds.
    static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    internal static ulong Derive(ulong seed, ulong stream, ulong index = 0) =>
        Mix(Mix(Mix(seed) ^ stream) ^ index) >> 1; // below 2^63, so a derived seed also fits a signed 64-bit field (JSON, SQLite)

    /// <summary>A seeded permutation of 0..n-1 drawn with libtorch's generator.</summary>
    internal static long[] Permutation(long n, ulong seed)
    {
        using var scope = new DisposeScope();
        using var g = new Generator(seed);
        return Libtorch.RandPerm(n, g).ToArray<long>();
    }
}
