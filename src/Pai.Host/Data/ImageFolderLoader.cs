using System.Collections;
using System.Collections.Concurrent;

namespace Pai.Host.Data;

/// <summary>The per-image pipeline of an <see cref="ImageFolderLoader"/>.</summary>
public enum ImagePipeline
{
    /// <summary>Training: RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3) to the output size + random horizontal flip.</summary>
    Train,
    /// <summary>Evaluation: resize the shorter side to 256/224 of the output size, then center crop (256 → 224 for ImageNet).</summary>
    Eval,
}

/// <summary>
/// Batches of an <see cref="ImageFolder"/> too large to hold in memory (ImageNet): worker threads
/// read, decode (<see cref="Jpeg"/>), crop, resize, flip and normalize whole batches in parallel and
/// keep up to <see cref="Prefetch"/> batches ready ahead of the training loop; the loop's thread only
/// copies a finished batch into a tensor. The order (seeded shuffle per epoch) and every image's
/// augmentation depend only on seed, epoch and sample, never on thread timing, so an epoch is
/// reproducible. A bad image stops the epoch with a <see cref="DatasetException"/> naming the
/// file, unless <c>skipBadImages</c> is set: then it is left out of its batch and counted in
/// <see cref="SkippedFiles"/>. Batches are created in the caller's dispose scope when the
/// enumerator advances, like <see cref="DataLoader"/>'s.
/// </summary>
public sealed class ImageFolderLoader : IBatchSource
{
    readonly double[] mean, std;
    readonly ConcurrentDictionary<string, string> skipped = new();
    readonly ConcurrentBag<float[]> buffers = new(); // batch buffers, reused across batches and epochs

    /// <summary>Creates a loader.</summary>
    /// <param name="folder">The images and labels.</param>
    /// <param name="batchSize">Samples per batch.</param>
    /// <param name="pipeline">Training or evaluation transforms.</param>
    /// <param name="mean">Per-channel normalization mean (3 values, pixels scaled to [0, 1]).</param>
    /// <param name="std">Per-channel normalization standard deviation (3 values).</param>
    /// <param name="size">Output side (224).</param>
    /// <param name="shuffle">Seeded random order, new every epoch.</param>
    /// <param name="seed">Seed of the order and of the augmentation.</param>
    /// <param name="dropLast">Drop a last, smaller batch.</param>
    /// <param name="threads">Decoding worker threads (default: every core).</param>
    /// <param name="prefetch">Batches prepared ahead of the consumer (default: 2 per thread).</param>
    /// <param name="skipBadImages">Leave undecodable images out (counted) instead of failing.</param>
    /// <param name="device">Where batches are put (default CPU).</param>
    /// <param name="rank">This process's rank in a data-parallel run (see <see cref="Pai.Host.Data.Sampler"/>).</param>
    /// <param name="worldSize">Ranks sharing each epoch.</param>
    public ImageFolderLoader(ImageFolder folder, int batchSize, ImagePipeline pipeline, IReadOnlyList<double> mean, IReadOnlyList<double> std,
        int size = 224, bool shuffle = true, ulong seed = 0, bool dropLast = false, int threads = 0, int prefetch = 0,
        bool skipBadImages = false, Device? device = null, int rank = 0, int worldSize = 1)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "the output size must be at least 1");
        if (mean.Count != 3 || std.Count != 3 || std.Any(s => !(s > 0)))
            throw new ArgumentException("image folders are RGB: give 3 means and 3 positive standard deviations");
        // A batch's pixels are one float array.
        if ((long)batchSize * 3 * size * size > Array.MaxLength)
            throw new ArgumentException(
                $"a batch of {batchSize} images of {size}×{size} takes more floats than one array holds ({Array.MaxLength}); lower the batch size", nameof(batchSize));
        Sampler = new Sampler(folder.Samples.Count, batchSize, shuffle, seed, dropLast, rank, worldSize);
        Folder = folder;
        Pipeline = pipeline;
        Size = size;
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        Prefetch = prefetch > 0 ? prefetch : 2 * Threads;
        SkipBadImages = skipBadImages;
        Device = device ?? Device.Cpu;
        this.mean = mean.ToArray();
        this.std = std.ToArray();
    }

    /// <summary>The images and labels.</summary>
    public ImageFolder Folder { get; }
    /// <summary>The order of the samples: shuffle, batches, drop-last.</summary>
    public Sampler Sampler { get; }
    /// <summary>Samples per batch.</summary>
    public int BatchSize => Sampler.BatchSize;
    /// <summary>Training or evaluation transforms.</summary>
    public ImagePipeline Pipeline { get; }
    /// <summary>Output side in pixels.</summary>
    public int Size { get; }
    /// <summary>Decoding worker threads.</summary>
    public int Threads { get; }
    /// <summary>Batches prepared ahead of the consumer.</summary>
    public int Prefetch { get; }
    /// <summary>Whether undecodable images are skipped (and counted) instead of failing.</summary>
    public bool SkipBadImages { get; }
    /// <summary>Where batches are put.</summary>
    public Device Device { get; }
    /// <summary>The epoch the next plain enumeration (foreach) produces; it advances by one per enumeration.</summary>
    public int NextEpoch { get; set; }

    /// <summary>The files skipped so far (with <c>skipBadImages</c>), each with the decoder's reason.</summary>
    public IReadOnlyDictionary<string, string> SkippedFiles => skipped;

    /// <summary>Batches per epoch.</summary>
    public int BatchCount => Sampler.BatchCount;

    /// <summary>The order in which an epoch visits the samples (a function of seed and epoch only).</summary>
    /// <param name="epoch">Epoch number (0-based).</param>
    public long[] Order(int epoch) => Sampler.Order(epoch);

    // One batch, ready to be copied into tensors.
    sealed record Prepared(float[] Pixels, long[] Labels);

    /// <summary>
    /// The batches of one epoch, prepared by <see cref="Threads"/> workers at most
    /// <see cref="Prefetch"/> batches ahead. Stopping the enumeration early stops the workers.
    /// </summary>
    /// <param name="epoch">Epoch number (0-based).</param>
    public IEnumerable<Batch> Epoch(int epoch)
    {
        var order = Order(epoch);
        var batches = BatchCount;
        var results = new TaskCompletionSource<Prepared>[batches];
        for (var i = 0; i < batches; i++) results[i] = new TaskCompletionSource<Prepared>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var slots = new SemaphoreSlim(Prefetch);
        using var stop = new CancellationTokenSource();
        var next = -1;
        long decoded = 0; // images of this epoch that decoded
        var workers = new Thread[Math.Min(Threads, Math.Max(batches, 1))];
        for (var t = 0; t < workers.Length; t++)
        {
            workers[t] = new Thread(() =>
            {
                while (true)
                {
                    try
                    {
                        slots.Wait(stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    var k = Interlocked.Increment(ref next);
                    if (k >= batches) return;
                    try
                    {
                        results[k].SetResult(Prepare(order, k, epoch));
                    }
                    catch (Exception e)
                    {
                        results[k].SetException(e);
                    }
                }
            }) { IsBackground = true, Name = $"pai-images-{t}" };
            workers[t].Start();
        }
        try
        {
            for (var k = 0; k < batches; k++)
            {
                Prepared p;
                try
                {
                    p = results[k].Task.GetAwaiter().GetResult();
                }
                finally
                {
                    slots.Release();
                }
                if (p.Labels.Length == 0)
                {
                    // Every image of the batch was skipped: a batch of nothing would make a NaN loss.
                    buffers.Add(p.Pixels);
                    if (Sampler.WorldSize == 1) continue;
                    // The ranks of a data-parallel run step together: one cannot leave a batch out.
                    throw new DatasetException(
                        $"{Folder.Name}: every image of batch {k + 1} of epoch {epoch + 1} on rank {Sampler.Rank} was skipped as undecodable, and in a data-parallel run " +
                        $"every rank must train on every batch; replace or delete the bad files (first: {skipped[Folder.Samples[(int)order[(long)k * BatchSize]].File]})", Folder.Root);
                }
                decoded += p.Labels.Length;
                var batch = ToBatch(p);
                buffers.Add(p.Pixels);
                yield return batch;
            }
            if (decoded == 0 && Sampler.SampleCount > 0)
            {
                var first = order.Take((int)Sampler.SampleCount).Min();
                throw Folder.NoneDecoded(Sampler.SampleCount, (int)first, skipped[Folder.Samples[(int)first].File]);
            }
        }
        finally
        {
            stop.Cancel();
            foreach (var w in workers) w.Join();
        }
    }

    Batch ToBatch(Prepared p)
    {
        var n = p.Labels.Length;
        using var pixels = Libtorch.FromArray(p.Pixels.AsSpan(0, n * 3 * Size * Size), [n, 3, Size, Size]);
        using var labels = Libtorch.FromArray(p.Labels);
        return new Batch(pixels.To(Device), labels.To(Device));
    }

    Prepared Prepare(long[] order, int k, int epoch)
    {
        var start = (long)k * BatchSize;
        var length = (int)Math.Min(BatchSize, order.Length - start);
        var plane = 3 * Size * Size;
        if (!buffers.TryTake(out var pixels)) pixels = new float[BatchSize * plane];
        var labels = new long[length];
        var n = 0;
        for (var i = 0; i < length; i++)
        {
            var sample = order[start + i];
            var (file, label) = Folder.Samples[(int)sample];
            if (skipped.ContainsKey(file)) continue;
            RgbImage image;
            try
            {
                image = Jpeg.Decode(ImageFolder.ReadImage(file), file, Pipeline == ImagePipeline.Eval ? EvalResize : 0);
            }
            catch (DatasetException e) when (SkipBadImages && e.File == file)
            {
                skipped.TryAdd(file, e.Message);
                continue;
            }
            var random = new SampleRandom(Sampler.Seed, epoch, sample);
            var (box, flip) = Pipeline == ImagePipeline.Train
                ? (ImageTransforms.RandomResizedCropBox(image.Width, image.Height, ref random), random.Coin())
                : (ImageTransforms.ResizeCenterCropBox(image.Width, image.Height, EvalResize, Size), false);
            ImageTransforms.ResampleNormalized(image, box, Size, Size, flip, mean, std, pixels.AsSpan(n * plane, plane));
            labels[n++] = label;
        }
        return new Prepared(pixels, n == length ? labels : labels[..n]);
    }

    // 256 for 224 outputs: the standard ratio 256/224 (= 8/7).
    int EvalResize => (int)Math.Round(Size * 8.0 / 7.0);

    /// <summary>Enumerates epoch <see cref="NextEpoch"/> and advances it.</summary>
    public IEnumerator<Batch> GetEnumerator() => Epoch(NextEpoch++).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Drops the reusable batch buffers (it holds no native memory).</summary>
    public void Dispose() => buffers.Clear();
}
