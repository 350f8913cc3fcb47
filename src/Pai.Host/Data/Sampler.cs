namespace Pai.Host.Data;

/// <summary>
/// The order in which a loader visits a data set's samples: a seeded shuffle new every epoch (a
/// function of seed and epoch only, so a resumed run sees the data it would have seen), batches
/// with or without a last smaller one, and the share of one rank in a data-parallel run: every
/// epoch's order is the single process's, and rank r reads positions r, r + N, r + 2N, … of it
/// (the tail that does not divide evenly is left out, so every rank runs the same number of
/// batches). Both <see cref="DataLoader"/> and <see cref="ImageFolderLoader"/> batch by it.
/// </summary>
public sealed record Sampler
{
    /// <summary>Creates a sampler.</summary>
    /// <param name="count">Samples in the data set.</param>
    /// <param name="batchSize">Samples per batch.</param>
    /// <param name="shuffle">Seeded random order, new every epoch.</param>
    /// <param name="seed">Seed of the order.</param>
    /// <param name="dropLast">Drop a last batch smaller than <paramref name="batchSize"/>.</param>
    /// <param name="rank">This process's rank (0 … <paramref name="worldSize"/> − 1).</param>
    /// <param name="worldSize">Ranks sharing each epoch (1: one process reads everything).</param>
    public Sampler(long count, int batchSize, bool shuffle, ulong seed, bool dropLast, int rank = 0, int worldSize = 1)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "the batch size must be at least 1");
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "the world size must be at least 1");
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the rank must lie in 0 … {worldSize - 1}");
        if (count < worldSize) throw new ArgumentException($"{count} samples cannot be shared by {worldSize} ranks");
        (Count, BatchSize, Shuffle, Seed, DropLast, Rank, WorldSize) = (count, batchSize, shuffle, seed, dropLast, rank, worldSize);
    }

    /// <summary>Samples in the data set.</summary>
    public long Count { get; }
    /// <summary>Samples per batch.</summary>
    public int BatchSize { get; }
    /// <summary>Whether the order is shuffled each epoch.</summary>
    public bool Shuffle { get; }
    /// <summary>Seed of the order.</summary>
    public ulong Seed { get; }
    /// <summary>Whether a last, smaller batch is dropped.</summary>
    public bool DropLast { get; }
    /// <summary>This rank among <see cref="WorldSize"/>.</summary>
    public int Rank { get; }
    /// <summary>Ranks sharing each epoch.</summary>
    public int WorldSize { get; }

    // Samples this rank reads per epoch, before batching.
    long ShardCount => Count / WorldSize;

    /// <summary>Batches per epoch.</summary>
    public int BatchCount => (int)(DropLast ? ShardCount / BatchSize : (ShardCount + BatchSize - 1) / BatchSize);

    /// <summary>Samples per epoch this rank reads (after drop-last).</summary>
    public long SampleCount => DropLast ? ShardCount / BatchSize * BatchSize : ShardCount;

    /// <summary>This rank's order of visiting the samples in <paramref name="epoch"/> (0-based).</summary>
    public long[] Order(int epoch)
    {
        long[] order;
        if (Shuffle) order = Seeds.Permutation(Count, Seeds.Derive(Seed, Seeds.ShuffleStream, (ulong)epoch));
        else
        {
            order = new long[Count];
            for (var i = 0; i < order.Length; i++) order[i] = i;
        }
        if (WorldSize == 1) return order;
        var shard = new long[ShardCount];
        for (long i = 0; i < shard.Length; i++) shard[i] = order[Rank + i * WorldSize];
        return shard;
    }
}
