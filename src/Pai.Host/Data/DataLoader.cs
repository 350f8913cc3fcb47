using System.Collections;

namespace Pai.Host.Data;

/// <summary>
/// Batches of a <see cref="Dataset"/>: seeded shuffling, batch size, drop-last, normalization and
/// optional random crop + horizontal flip. Batches are created lazily when the enumerator advances,
/// so they belong to whatever <see cref="DisposeScope"/> the caller has open at that moment; a
/// training loop that opens one scope per step frees each batch with its step. The loader holds
/// small normalization constants: dispose it when done. It does not own the data set.
/// With <c>worldSize</c> &gt; 1 it reads one rank's share of each epoch (<see cref="Pai.Host.Data.Sampler"/>):
/// the ranks' batch i together hold the samples of the single process's batch i at N times the batch size.
/// </summary>
public sealed class DataLoader : IBatchSource
{
    readonly BatchMaker maker;

    /// <summary>Creates a loader.</summary>
    /// <param name="data">The data set (not owned; must outlive the loader's enumerations).</param>
    /// <param name="batchSize">Samples per batch.</param>
    /// <param name="shuffle">Visit the samples in a seeded random order, new for every epoch.</param>
    /// <param name="seed">Seed of the shuffling and augmentation.</param>
    /// <param name="dropLast">Drop the last batch when it is smaller than <paramref name="batchSize"/>.</param>
    /// <param name="augment">Random crop (zero padding <paramref name="augmentPadding"/>) and horizontal flip per sample.</param>
    /// <param name="normalize">Subtract the data set's mean and divide by its std (after scaling uint8 pixels to [0, 1]).</param>
    /// <param name="device">Where batches are put (default CPU).</param>
    /// <param name="augmentPadding">Padding of the random crop (4 for CIFAR).</param>
    /// <param name="rank">This process's rank in a data-parallel run (0 … <paramref name="worldSize"/> − 1).</param>
    /// <param name="worldSize">Ranks sharing each epoch (1: one process reads everything).</param>
    public DataLoader(Dataset data, int batchSize, bool shuffle = true, ulong seed = 0, bool dropLast = false,
        bool augment = false, bool normalize = true, Device? device = null, int augmentPadding = 4, int rank = 0, int worldSize = 1)
    {
        if (augmentPadding < 0) throw new ArgumentOutOfRangeException(nameof(augmentPadding), augmentPadding, "padding must be non-negative");
        Sampler = new Sampler(data.Count, batchSize, shuffle, seed, dropLast, rank, worldSize);
        Data = data;
        Augment = augment;
        AugmentPadding = augmentPadding;
        Normalize = normalize;
        Device = device ?? Device.Cpu;
        maker = new BatchMaker(data, normalize, Device);
    }

    /// <summary>The data set batched.</summary>
    public Dataset Data { get; }
    /// <summary>The order of the samples: shuffle, batches, drop-last, this rank's share.</summary>
    public Sampler Sampler { get; }
    /// <summary>Samples per batch.</summary>
    public int BatchSize => Sampler.BatchSize;
    /// <summary>Whether the order is shuffled each epoch.</summary>
    public bool Shuffle => Sampler.Shuffle;
    /// <summary>Seed of the shuffling and augmentation.</summary>
    public ulong Seed => Sampler.Seed;
    /// <summary>Whether a last, smaller batch is dropped.</summary>
    public bool DropLast => Sampler.DropLast;
    /// <summary>Whether batches are augmented (random crop + flip).</summary>
    public bool Augment { get; }
    /// <summary>Zero padding of the random crop.</summary>
    public int AugmentPadding { get; }
    /// <summary>Whether inputs are normalized with the data set's mean and std.</summary>
    public bool Normalize { get; }
    /// <summary>Where batches are put.</summary>
    public Device Device { get; }
    /// <summary>This loader's rank among <see cref="WorldSize"/> ranks.</summary>
    public int Rank => Sampler.Rank;
    /// <summary>Ranks sharing each epoch.</summary>
    public int WorldSize => Sampler.WorldSize;

    /// <summary>The epoch the next plain enumeration (foreach) will produce; it advances by one per enumeration.</summary>
    public int NextEpoch { get; set; }

    /// <summary>Batches per epoch.</summary>
    public int BatchCount => Sampler.BatchCount;

    /// <summary>Samples per epoch this rank reads (after drop-last).</summary>
    public long SampleCount => Sampler.SampleCount;

    /// <summary>The order in which this rank visits the samples in an epoch (see <see cref="Pai.Host.Data.Sampler"/>).</summary>
    /// <param name="epoch">Epoch number (0-based).</param>
    public long[] Order(int epoch) => Sampler.Order(epoch);

    /// <summary>
    /// The batches of one epoch: the same for the same seed and epoch, whatever happened before, so
    /// a resumed run sees the data it would have seen. Each batch is created when the enumerator
    /// advances, in the caller's current dispose scope.
    /// </summary>
    /// <param name="epoch">Epoch number (0-based).</param>
    public IEnumerable<Batch> Epoch(int epoch)
    {
        var order = Order(epoch);
        var count = SampleCount;
        // Each rank draws its own augmentation stream (rank 0's is the single process's).
        var augmentSeed = Seeds.Derive(Seed, Seeds.AugmentStream, (ulong)epoch);
        Generator? augment = Augment ? new Generator(Rank == 0 ? augmentSeed : Seeds.Derive(augmentSeed, (ulong)Rank)) : null;
        try
        {
            for (long start = 0; start < count; start += BatchSize)
            {
                var length = (int)Math.Min(BatchSize, count - start);
                yield return maker.Make(order.AsSpan((int)start, length), augment, AugmentPadding);
            }
        }
        finally
        {
            augment?.Dispose();
        }
    }

    /// <summary>Enumerates epoch <see cref="NextEpoch"/> and advances it.</summary>
    public IEnumerator<Batch> GetEnumerator() => Epoch(NextEpoch++).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Frees the normalization constants.</summary>
    public void Dispose() => maker.Dispose();
}

/// <summary>Turns sample indices into a model-ready batch: gather, move, augment, convert, normalize.</summary>
internal sealed class BatchMaker : IDisposable
{
    readonly Dataset data;
    readonly Device device;
    readonly Tensor scale; // [1, C, 1, 1]: pixelScale / std (or pixelScale)
    readonly Tensor shift; // [1, C, 1, 1]: mean / std (or 0)

    internal BatchMaker(Dataset data, bool normalize, Device device)
    {
        this.data = data;
        this.device = device;
        var c = data.Channels;
        var a = new float[c];
        var b = new float[c];
        for (var i = 0; i < c; i++)
        {
            a[i] = (float)(normalize ? data.PixelScale / data.Std[i] : data.PixelScale);
            b[i] = (float)(normalize ? data.Mean[i] / data.Std[i] : 0.0);
        }
        using var scope = new DisposeScope();
        scale = Libtorch.FromArray(a, [1, c, 1, 1]).To(device).DetachFromScope();
        shift = Libtorch.FromArray(b, [1, c, 1, 1]).To(device).DetachFromScope();
    }

    /// <summary>A batch of the given samples, created in the current scope.</summary>
    internal Batch Make(ReadOnlySpan<long> indices, Generator? augment, int padding)
    {
        using var idx = Libtorch.FromArray(indices, [indices.Length]);
        using var raw = data.Images.IndexSelect(0, idx);
        using var onDevice = raw.To(device);
        using var cropped = augment is null ? onDevice.Alias() : Augmentation.RandomCropFlip(onDevice, padding, flip: true, augment);
        using var asFloat = cropped.To(DType.Float32);
        using var scaled = asFloat * scale;
        var inputs = scaled - shift;
        using var labels = data.Labels.IndexSelect(0, idx);
        var targets = labels.To(device);
        return new Batch(inputs, targets);
    }

    public void Dispose()
    {
        scale.Dispose();
        shift.Dispose();
    }
}
