
namespace Pai.Host.Tests;

public class DataLoaderTests
{
    // N uint8 images of C×H×W whose pixels all equal the sample index, labels index mod classes.
    static Dataset Indexed(int n, int classes = 4, int c = 1, int h = 2, int w = 2, double[]? mean = null, double[]? std = null)
    {
        var pixels = new byte[n * c * h * w];
        for (var i = 0; i < n; i++) pixels.AsSpan(i * c * h * w, c * h * w).Fill((byte)i);
        var labels = Enumerable.Range(0, n).Select(i => (long)(i % classes)).ToArray();
        using var scope = new DisposeScope();
        return new Dataset("indexed", DatasetSplit.Train, Libtorch.FromArray(pixels, [n, c, h, w]), Libtorch.FromArray(labels), classes, mean ?? [0.0], std ?? [1.0]);
    }

    // The sample indices of a batch built from Indexed() without normalization.
    static long[] SampleIds(Batch b)
    {
        using var scope = new DisposeScope();
        var first = b.Inputs.Flatten(1).Select(1, 0);
        return (first * 255.0 + 0.5).To(DType.Int64).ToArray<long>();
    }

    static List<long[]> EpochIds(DataLoader loader, int epoch)
    {
        var result = new List<long[]>();
        foreach (var b in loader.Epoch(epoch))
        {
            using var scope = new DisposeScope();
            result.Add(SampleIds(b));
            b.Inputs.Dispose();
            b.Targets.Dispose();
        }
        return result;
    }

    [Fact]
    public void Same_seed_gives_the_same_order_and_different_seeds_or_epochs_do_not()
    {
        using var data = Indexed(100);
        using var a = new DataLoader(data, 16, seed: 7, normalize: false);
        using var b = new DataLoader(data, 16, seed: 7, normalize: false);
        using var c = new DataLoader(data, 16, seed: 8, normalize: false);
        var ea = EpochIds(a, 0);
        Assert.Equal(ea, EpochIds(b, 0));
        Assert.NotEqual(ea, EpochIds(c, 0));
        Assert.NotEqual(ea, EpochIds(a, 1));
        Assert.Equal(ea, EpochIds(a, 0)); // an epoch does not depend on what ran before
        var all = ea.SelectMany(x => x).ToList();
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), all.Order());
        Assert.NotEqual(Enumerable.Range(0, 100).Select(i => (long)i), all);
        Assert.Equal(all, a.Order(0));
    }

    [Fact]
    public void Targets_follow_their_samples()
    {
        using var data = Indexed(30, classes: 7);
        using var loader = new DataLoader(data, 8, seed: 3, normalize: false);
        foreach (var b in loader.Epoch(0))
        {
            using var scope = new DisposeScope();
            var ids = SampleIds(b);
            Assert.Equal(ids.Select(i => i % 7), b.Targets.ToArray<long>());
            Assert.Equal(DType.Int64, b.Targets.DType);
            Assert.Equal(DType.Float32, b.Inputs.DType);
        }
    }

    [Fact]
    public void Batch_sizes_and_drop_last()
    {
        using var data = Indexed(10);
        using var keep = new DataLoader(data, 4, shuffle: false, normalize: false);
        using var drop = new DataLoader(data, 4, shuffle: false, dropLast: true, normalize: false);
        Assert.Equal(3, keep.BatchCount);
        Assert.Equal(2, drop.BatchCount);
        Assert.Equal(8, drop.SampleCount);
        var k = EpochIds(keep, 0);
        Assert.Equal([[0L, 1, 2, 3], [4L, 5, 6, 7], [8L, 9]], k);
        Assert.Equal([[0L, 1, 2, 3], [4L, 5, 6, 7]], EpochIds(drop, 0));
    }

    [Fact]
    public void Foreach_advances_the_epoch()
    {
        using var data = Indexed(20);
        using var loader = new DataLoader(data, 20, seed: 1, normalize: false);
        var seen = new List<long[]>();
        for (var e = 0; e < 2; e++)
            foreach (var b in loader)
            {
                using var scope = new DisposeScope();
                seen.Add(SampleIds(b));
            }
        Assert.Equal(2, loader.NextEpoch);
        Assert.Equal(EpochIds(loader, 0)[0], seen[0]);
        Assert.Equal(EpochIds(loader, 1)[0], seen[1]);
    }

    [Fact]
    public void Normalization_uses_the_data_set_mean_and_std_per_channel()
    {
        using var data = Indexed(3, c: 2, mean: [0.5, 0.25], std: [0.5, 2.0]);
        using var loader = new DataLoader(data, 3, shuffle: false);
        using var scope = new DisposeScope();
        var b = loader.Epoch(0).Single();
        var x = b.Inputs.ToArray<float>(); // [3, 2, 2, 2]
        for (var i = 0; i < 3; i++)
            for (var c = 0; c < 2; c++)
                for (var p = 0; p < 4; p++)
                {
                    var expected = (i / 255.0 - (c == 0 ? 0.5 : 0.25)) / (c == 0 ? 0.5 : 2.0);
                    Assert.Equal(expected, x[i * 8 + c * 4 + p], 5);
                }
    }

    [Fact]
    public void Batches_belong_to_the_callers_scope_and_leave_nothing_else_behind()
    {
        using var data = Indexed(40);
        using var loader = new DataLoader(data, 8, seed: 5, augment: true, augmentPadding: 1);
        // a training loop: one scope per step, the enumerator advanced inside it
        using var outer = new DisposeScope();
        using var e = loader.Epoch(1).GetEnumerator();
        for (var i = 0; i < 3; i++)
        {
            Batch batch;
            using (var step = new DisposeScope())
            {
                Assert.True(e.MoveNext());
                batch = e.Current;
                Assert.Equal(2, step.OwnedCount); // inputs and targets; every intermediate already freed
                Assert.False(batch.Inputs.IsDisposed);
            }
            Assert.True(batch.Inputs.IsDisposed);
            Assert.True(batch.Targets.IsDisposed);
        }
        Assert.Equal(0, outer.OwnedCount);
    }

    [Fact]
    public void Augmented_batches_keep_shape_are_seeded_and_differ_from_plain_ones()
    {
        using var data = SyntheticData.Create(new SyntheticOptions(Channels: 3, Height: 32, Width: 32, Classes: 10, TrainCount: 64, Seed: 2));
        using var plain = new DataLoader(data, 32, seed: 1);
        using var aug1 = new DataLoader(data, 32, seed: 1, augment: true);
        using var aug2 = new DataLoader(data, 32, seed: 1, augment: true);
        using var scope = new DisposeScope();
        var p = plain.Epoch(0).First();
        var a = aug1.Epoch(0).First();
        var a2 = aug2.Epoch(0).First();
        Assert.Equal([32L, 3, 32, 32], a.Inputs.Shape);
        Assert.True(a.Inputs.Equal(a2.Inputs));
        Assert.True(a.Targets.Equal(p.Targets)); // augmentation does not change the order
        Assert.False(a.Inputs.Equal(p.Inputs));
        Assert.False(a.Inputs.Equal(aug1.Epoch(1).First().Inputs));
    }

    [Fact]
    public void Validation_split_is_seeded_disjoint_and_complete()
    {
        using var data = Indexed(100, classes: 5);
        var (train, validation) = data.SplitValidation(0.2, seed: 11);
        using var t = train;
        using var v = validation;
        Assert.Equal(80, t.Count);
        Assert.Equal(20, v.Count);
        Assert.Equal(DatasetSplit.Validation, v.Split);
        var tid = t.Images.Flatten(1).Select(1, 0).To(DType.Int64).ToArray<long>();
        var vid = v.Images.Flatten(1).Select(1, 0).To(DType.Int64).ToArray<long>();
        Assert.Empty(tid.Intersect(vid));
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), tid.Concat(vid).Order());
        Assert.Equal(vid.Select(i => i % 5), v.LabelArray());

        var (t2, v2) = data.SplitValidation(20, seed: 11);
        var (t3, v3) = data.SplitValidation(20, seed: 12);
        using (t2) using (v2) using (t3) using (v3)
        {
            Assert.True(v2.Images.Equal(v.Images));
            Assert.False(v3.Images.Equal(v.Images));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => data.SplitValidation(0, seed: 1));
    }
}

public class AugmentationTests
{
    // Reference: crop from the zero-padded image at (r, c), then flip horizontally when asked.
    static float[] Reference(float[] x, int b, int ch, int h, int w, int pad, long[] rows, long[] cols, long[] flips)
    {
        var y = new float[x.Length];
        for (var n = 0; n < b; n++)
            for (var c = 0; c < ch; c++)
                for (var i = 0; i < h; i++)
                    for (var j = 0; j < w; j++)
                    {
                        var jj = flips[n] != 0 ? w - 1 - j : j;
                        var si = rows[n] + i - pad;
                        var sj = cols[n] + jj - pad;
                        var v = si >= 0 && si < h && sj >= 0 && sj < w ? x[((n * ch + c) * h + si) * w + sj] : 0f;
                        y[((n * ch + c) * h + i) * w + j] = v;
                    }
        return y;
    }

    [Fact]
    public void Known_image_crop_and_flip()
    {
        using var scope = new DisposeScope();
        // 1×1×3×3 image 1..9, padding 1: offset (0, 2) shifts the view up-left by... see the expected values
        var x = Libtorch.FromArray(new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, [1, 1, 3, 3]);
        var y = Augmentation.CropFlip(x, 1, Libtorch.FromArray(new long[] { 0 }), Libtorch.FromArray(new long[] { 2 }), Libtorch.FromArray(new long[] { 0 }));
        // padded rows 0..2 (first is zero padding), columns 2..4 (last is zero padding)
        Assert.Equal(new float[] { 0, 0, 0, 2, 3, 0, 5, 6, 0 }, y.ToArray<float>());
        var flipped = Augmentation.CropFlip(x, 1, Libtorch.FromArray(new long[] { 1 }), Libtorch.FromArray(new long[] { 1 }), Libtorch.FromArray(new long[] { 1 }));
        Assert.Equal(new float[] { 3, 2, 1, 6, 5, 4, 9, 8, 7 }, flipped.ToArray<float>());
        var centre = Augmentation.CropFlip(x, 1, Libtorch.FromArray(new long[] { 1 }), Libtorch.FromArray(new long[] { 1 }), Libtorch.FromArray(new long[] { 0 }));
        Assert.True(centre.Equal(x));
    }

    [Fact]
    public void Batched_crop_flip_matches_a_per_sample_reference()
    {
        using var scope = new DisposeScope();
        using var g = new Generator(5);
        const int b = 16, c = 3, h = 8, w = 8, pad = 4;
        var x = Libtorch.Rand([b, c, h, w], g);
        var rows = Libtorch.RandInt(0, 2 * pad + 1, [b], g);
        var cols = Libtorch.RandInt(0, 2 * pad + 1, [b], g);
        var flips = Libtorch.RandInt(0, 2, [b], g);
        var y = Augmentation.CropFlip(x, pad, rows, cols, flips);
        var expected = Reference(x.ToArray<float>(), b, c, h, w, pad, rows.ToArray<long>(), cols.ToArray<long>(), flips.ToArray<long>());
        Assert.Equal(expected, y.ToArray<float>());
    }

    [Fact]
    public void Random_crop_flip_really_crops_and_flips_uint8()
    {
        using var scope = new DisposeScope();
        using var g = new Generator(9);
        // 64 copies of an image whose columns are 1..32: a flip reverses a row, a crop shifts it and brings in zero padding
        var row = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        var pixels = Enumerable.Repeat(row, 64 * 3 * 32).SelectMany(r => r).ToArray();
        var x = Libtorch.FromArray(pixels, [64, 3, 32, 32]);
        var y = Augmentation.RandomCropFlip(x, 4, flip: true, g);
        Assert.Equal([64L, 3, 32, 32], y.Shape);
        Assert.Equal(DType.UInt8, y.DType);
        var v = y.ToArray<byte>();
        int flipped = 0, shifted = 0, padded = 0;
        for (var n = 0; n < 64; n++)
        {
            // a row away from the vertical padding (rows 4..27 are never padding)
            var r = v.AsSpan(((n * 3) * 32 + 16) * 32, 32).ToArray();
            var nz = r.Where(p => p != 0).ToArray();
            var increasing = nz.Zip(nz.Skip(1)).All(t => t.Second == t.First + 1);
            var decreasing = nz.Zip(nz.Skip(1)).All(t => t.Second == t.First - 1);
            Assert.True(increasing || decreasing, "a cropped row is a contiguous run of columns");
            if (decreasing && nz.Length > 1) flipped++;
            if (!r.SequenceEqual(row) && !r.SequenceEqual(row.Reverse())) shifted++;
            if (nz.Length < 32) padded++;
        }
        Assert.InRange(flipped, 16, 48);
        Assert.True(shifted > 32, $"{shifted} of 64 shifted");
        Assert.True(padded > 32, $"{padded} of 64 show padding");
    }
}

public class ScoringSubsetTests
{
    [Fact]
    public void Exactly_n_per_class_deterministic_per_seed()
    {
        using var data = SyntheticData.Create(new SyntheticOptions(Height: 4, Width: 4, Classes: 5, TrainCount: 200, Seed: 3));
        var a = ScoringSubset.SelectIndices(data, 7, seed: 1);
        Assert.Equal(a, ScoringSubset.SelectIndices(data, 7, seed: 1));
        Assert.NotEqual(a, ScoringSubset.SelectIndices(data, 7, seed: 2));
        Assert.Equal(35, a.Distinct().Count());
        var labels = data.LabelArray();
        Assert.All(a.GroupBy(i => labels[i]), grp => Assert.Equal(7, grp.Count()));
        Assert.Equal(5, a.Select(i => labels[i]).Distinct().Count());
    }

    [Fact]
    public void Batches_hold_the_subset_and_outlive_scopes()
    {
        using var data = SyntheticData.Create(new SyntheticOptions(Height: 4, Width: 4, Classes: 3, TrainCount: 60, Seed: 4));
        BatchSet set;
        using (new DisposeScope())
            set = ScoringSubset.Create(data, perClass: 4, seed: 9, batchSize: 5);
        using (set)
        {
            Assert.Equal(3, set.Count); // 12 samples: 5 + 5 + 2
            Assert.Equal([5L, 5, 2], set.Select(b => b.Inputs.Size(0)));
            Assert.False(set[0].Inputs.IsDisposed);
            var targets = set.SelectMany(b => b.Targets.ToArray<long>()).ToArray();
            Assert.All(targets.GroupBy(t => t), g => Assert.Equal(4, g.Count()));
            Assert.Equal(set.Indices.Select(i => data.LabelArray()[i]), targets);
            // inputs are the chosen samples (synthetic data is already normalized: mean 0, std 1)
            using var scope = new DisposeScope();
            var expected = data.Images.IndexSelect(0, Libtorch.FromArray(set.Indices.Take(5).ToArray()));
            Assert.True(set[0].Inputs.AllClose(expected));
        }
        Assert.True(set[0].Inputs.IsDisposed);
    }

    [Fact]
    public void Too_few_samples_of_a_class_is_an_error()
    {
        using var data = SyntheticData.Create(new SyntheticOptions(Height: 2, Width: 2, Classes: 4, TrainCount: 10));
        var e = Assert.Throws<DatasetException>(() => ScoringSubset.SelectIndices(data, 3, seed: 0));
        Assert.Contains("3 samples per class", e.Message);
    }
}

public class SyntheticDataTests
{
    [Fact]
    public void Seeded_balanced_and_shaped_as_asked()
    {
        var o = new SyntheticOptions(Channels: 3, Height: 5, Width: 6, Classes: 4, TrainCount: 42, TestCount: 10, Seed: 1);
        using var a = SyntheticData.Create(o);
        using var b = SyntheticData.Create(o);
        using var c = SyntheticData.Create(o with { Seed = 2 });
        using var test = SyntheticData.Create(o, DatasetSplit.Test);
        Assert.Equal([42L, 3, 5, 6], a.Images.Shape);
        Assert.Equal(10, test.Count);
        Assert.True(a.Images.Equal(b.Images));
        Assert.True(a.Labels.Equal(b.Labels));
        Assert.False(a.Images.Equal(c.Images));
        Assert.Equal([11L, 11, 10, 10], a.ClassCounts());
        Assert.Equal("synthetic", DatasetRegistry.Load("synthetic", synthetic: o).Name);
    }

    [Fact]
    public void A_nearest_class_mean_classifier_learns_it()
    {
        var o = new SyntheticOptions(Channels: 1, Height: 8, Width: 8, Classes: 5, TrainCount: 300, TestCount: 200, Noise: 1.0, Seed: 6);
        using var train = SyntheticData.Create(o);
        using var test = SyntheticData.Create(o, DatasetSplit.Test);
        var d = 64;
        var x = train.Images.ToArray<float>();
        var y = train.LabelArray();
        var means = new double[5, d];
        var counts = new int[5];
        for (var i = 0; i < y.Length; i++)
        {
            counts[y[i]]++;
            for (var k = 0; k < d; k++) means[y[i], k] += x[i * d + k];
        }
        var tx = test.Images.ToArray<float>();
        var ty = test.LabelArray();
        var correct = 0;
        for (var i = 0; i < ty.Length; i++)
        {
            var best = Enumerable.Range(0, 5).MinBy(c =>
            {
                double s = 0;
                for (var k = 0; k < d; k++) { var diff = tx[i * d + k] - means[c, k] / counts[c]; s += diff * diff; }
                return s;
            });
            if (best == ty[i]) correct++;
        }
        Assert.True(correct > 0.9 * ty.Length, $"{correct}/{ty.Length} correct");
    }
}
