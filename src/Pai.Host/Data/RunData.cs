namespace Pai.Host.Data;

/// <summary>Batches a run reads, epoch by epoch: a <see cref="DataLoader"/> over a data set in memory or an <see cref="ImageFolderLoader"/> streaming JPEG folders.</summary>
public interface IBatchSource : IEnumerable<Batch>, IDisposable
{
    /// <summary>Batches per epoch.</summary>
    int BatchCount { get; }

    /// <summary>The batches of one epoch (0-based), the same for the same seed and epoch.</summary>
    IEnumerable<Batch> Epoch(int epoch);
}

/// <summary>
/// What a run reads of its data set: the input shape and classes the model is built for, seeded
/// training batches (augmented as configured; one rank's share in a data-parallel run), test
/// batches, and the class-balanced scoring subset. Data sets that fit in memory (IDX, CIFAR, Tiny
/// ImageNet, synthetic) are batched by <see cref="DataLoader"/>; ImageNet is streamed from its
/// JPEG folders by <see cref="ImageFolderLoader"/> (train: random-resized crop + flip; test and
/// scoring: resize 256, center crop 224), decoding only the batches a run asks for.
/// </summary>
public abstract class RunData
{
    /// <summary>The data set's canonical name.</summary>
    public abstract string Name { get; }
    /// <summary>Shape of one input.</summary>
    public abstract InputShape InputShape { get; }
    /// <summary>Number of classes.</summary>
    public abstract int Classes { get; }

    /// <summary>Seeded, shuffled training batches (<paramref name="augment"/>: the data set's augmentation).</summary>
    public abstract IBatchSource Train(int batchSize, ulong seed, bool augment, Device device, int rank = 0, int worldSize = 1);

    /// <summary>Test batches in file order.</summary>
    public abstract IBatchSource Test(int batchSize, Device device, int rank = 0, int worldSize = 1);

    /// <summary>The scoring subset: <paramref name="perClass"/> training samples of each class chosen by <paramref name="seed"/>, unaugmented, in batches of <paramref name="batchSize"/>.</summary>
    public abstract BatchSet Scoring(int perClass, ulong seed, int batchSize, Device device);

    /// <summary>A data set in memory; its test split is loaded on first use, and may be absent when a command only scores.</summary>
    public static RunData InMemory(Dataset train, Func<Dataset>? test = null) => new MemoryData(train, test);

    /// <summary>A data set in memory, for commands that only score (prune, estimate).</summary>
    public static implicit operator RunData(Dataset train) => InMemory(train);

    sealed class MemoryData(Dataset train, Func<Dataset>? test) : RunData
    {
        public override string Name => train.Name;
        public override InputShape InputShape => new(train.Channels, train.Height, train.Width);
        public override int Classes => train.NumClasses;

        public override IBatchSource Train(int batchSize, ulong seed, bool augment, Device device, int rank = 0, int worldSize = 1) =>
            new DataLoader(train, batchSize, shuffle: true, seed: seed, augment: augment, device: device, rank: rank, worldSize: worldSize);

        public override IBatchSource Test(int batchSize, Device device, int rank = 0, int worldSize = 1) =>
            new DataLoader(test?.Invoke() ?? throw new InvalidOperationException($"{train.Name}: no test split was given"), batchSize, shuffle: false,
                device: device, rank: rank, worldSize: worldSize);

        public override BatchSet Scoring(int perClass, ulong seed, int batchSize, Device device) =>
            ScoringSubset.Create(train, perClass, seed, batchSize, device: device);
    }

    /// <summary>An image-folder data set streamed from its JPEG files (ImageNet).</summary>
    /// <param name="info">Its classes, input size and normalization.</param>
    /// <param name="train">The training folder.</param>
    /// <param name="test">The validation folder.</param>
    /// <param name="skipBadImages">Leave undecodable images out (counted) instead of failing.</param>
    public static RunData Streamed(DatasetInfo info, ImageFolder train, ImageFolder test, bool skipBadImages) =>
        new StreamedData(info, train, test, skipBadImages);

    sealed class StreamedData(DatasetInfo info, ImageFolder train, ImageFolder test, bool skipBadImages) : RunData
    {
        public override string Name => info.Name;
        public override InputShape InputShape => new(info.Channels, info.Height, info.Width);
        public override int Classes => train.Classes.Count;

        ImageFolderLoader Loader(ImageFolder folder, int batchSize, ImagePipeline pipeline, bool shuffle, ulong seed, Device device, int rank, int worldSize) =>
            new(folder, batchSize, pipeline, info.Mean, info.Std, size: info.Height, shuffle: shuffle, seed: seed,
                skipBadImages: skipBadImages, device: device, rank: rank, worldSize: worldSize);

        public override IBatchSource Train(int batchSize, ulong seed, bool augment, Device device, int rank = 0, int worldSize = 1) =>
            Loader(train, batchSize, augment ? ImagePipeline.Train : ImagePipeline.Eval, true, seed, device, rank, worldSize);

        public override IBatchSource Test(int batchSize, Device device, int rank = 0, int worldSize = 1) =>
            Loader(test, batchSize, ImagePipeline.Eval, false, 0, device, rank, worldSize);

        public override BatchSet Scoring(int perClass, ulong seed, int batchSize, Device device)
        {
            var labels = train.Samples.Select(s => (long)s.Label).ToArray();
            var indices = ScoringSubset.SelectIndices(labels, Classes, perClass, seed, $"{info.Name} (train)");
            var subset = train.Subset(indices);
            using var loader = Loader(subset, batchSize, ImagePipeline.Eval, false, 0, device, 0, 1);
            var batches = new List<Batch>();
            try
            {
                foreach (var b in loader.Epoch(0)) batches.Add(new Batch(b.Inputs.DetachFromScope(), b.Targets.DetachFromScope()));
            }
            catch
            {
                foreach (var b in batches)
                {
                    b.Inputs.Dispose();
                    b.Targets.Dispose();
                }
                throw;
            }
            return new BatchSet(batches, indices);
        }
    }
}
