using System.Collections;

namespace Pai.Host.Data;

/// <summary>
/// A fixed list of batches that owns its tensors (outside every dispose scope), for data that is
/// visited many times: the scoring batches of a pruning criterion. Dispose it to free them.
/// </summary>
public sealed class BatchSet : IReadOnlyList<Batch>, IDisposable
{
    readonly List<Batch> batches;

    internal BatchSet(List<Batch> batches, long[] indices)
    {
        this.batches = batches;
        Indices = indices;
    }

    /// <summary>The data set indices of the samples, in batch order.</summary>
    public IReadOnlyList<long> Indices { get; }

    /// <summary>Total number of samples.</summary>
    public int SampleCount => Indices.Count;

    /// <summary>Number of batches.</summary>
    public int Count => batches.Count;

    /// <summary>Batch <paramref name="index"/>.</summary>
    public Batch this[int index] => batches[index];

    /// <inheritdoc/>
    public IEnumerator<Batch> GetEnumerator() => batches.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Frees every batch's tensors.</summary>
    public void Dispose()
    {
        foreach (var b in batches)
        {
            b.Inputs.Dispose();
            b.Targets.Dispose();
        }
    }
}

/// <summary>
/// The seeded per-class subset that pruning criteria score on: exactly N samples of every class,
/// the same for the same seed (the reference code sampled it unseeded).
/// </summary>
public static class ScoringSubset
{
    /// <summary>
    /// Chooses <paramref name="perClass"/> samples of every class: the first ones of each class in a
    /// seeded random permutation of the data set, kept in that (class-interleaved) order.
    /// </summary>
    /// <param name="data">The data set (usually the training set).</param>
    /// <param name="perClass">Samples per class.</param>
    /// <param name="seed">Seed of the choice.</param>
    /// <exception cref="DatasetException">A class has fewer than <paramref name="perClass"/> samples.</exception>
    public static long[] SelectIndices(Dataset data, int perClass, ulong seed) =>
        SelectIndices(data.LabelArray(), data.NumClasses, perClass, seed, data.ToString());

    /// <summary>The same selection over any labels (e.g. an image folder's, before decoding anything).</summary>
    /// <param name="labels">Each sample's class.</param>
    /// <param name="classes">Number of classes.</param>
    /// <param name="perClass">Samples per class.</param>
    /// <param name="seed">Selection seed.</param>
    /// <param name="what">The data set, for the error message.</param>
    /// <exception cref="DatasetException">A class has fewer than <paramref name="perClass"/> samples.</exception>
    public static long[] SelectIndices(long[] labels, int classes, int perClass, ulong seed, string what)
    {
        if (perClass < 1) throw new ArgumentOutOfRangeException(nameof(perClass), perClass, "at least one sample per class");
        var perm = Seeds.Permutation(labels.LongLength, Seeds.Derive(seed, Seeds.ScoringStream));
        var taken = new int[classes];
        var chosen = new List<long>(perClass * classes);
        foreach (var i in perm)
        {
            var c = labels[i];
            if (taken[c] < perClass)
            {
                taken[c]++;
                chosen.Add(i);
                if (chosen.Count == perClass * classes) break;
            }
        }
        var shortClasses = Enumerable.Range(0, classes).Where(c => taken[c] < perClass).ToList();
        if (shortClasses.Count > 0)
            throw new DatasetException(
                $"{what}: cannot take {perClass} samples per class: class(es) {string.Join(", ", shortClasses.Select(c => $"{c} ({taken[c]})"))} have fewer; lower the samples per class");
        return chosen.ToArray();
    }

    /// <summary>
    /// The per-class subset as owned batches of <paramref name="batchSize"/> (the last may be
    /// smaller), normalized like the training batches and never augmented.
    /// </summary>
    /// <param name="data">The data set (usually the training set).</param>
    /// <param name="perClass">Samples per class (the reference: 10).</param>
    /// <param name="seed">Seed of the choice.</param>
    /// <param name="batchSize">Samples per batch (the reference: 1).</param>
    /// <param name="normalize">Normalize with the data set's mean and std.</param>
    /// <param name="device">Where the batches are put (default CPU).</param>
    public static BatchSet Create(Dataset data, int perClass, ulong seed, int batchSize = 1, bool normalize = true, Device? device = null)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "the batch size must be at least 1");
        var indices = SelectIndices(data, perClass, seed);
        var batches = new List<Batch>();
        using var maker = new BatchMaker(data, normalize, device ?? Device.Cpu);
        try
        {
            for (var start = 0; start < indices.Length; start += batchSize)
            {
                using var scope = new DisposeScope();
                var b = maker.Make(indices.AsSpan(start, Math.Min(batchSize, indices.Length - start)), null, 0);
                batches.Add(new Batch(b.Inputs.DetachFromScope(), b.Targets.DetachFromScope()));
            }
        }
        catch
        {
            new BatchSet(batches, indices).Dispose();
            throw;
        }
        return new BatchSet(batches, indices);
    }
}
