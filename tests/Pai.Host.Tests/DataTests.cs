using System.IO.Compression;

namespace Pai.Host.Tests;

public class IdxFormatTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Images_and_labels_round_trip(bool gzip)
    {
        using var dir = new TempDirectory();
        var pixels = Bytes.Random(5 * 3 * 4, seed: 1);
        var labels = new byte[] { 3, 1, 4, 1, 5 };
        IdxFormat.WriteImages(dir.File("img"), pixels, 5, 3, 4, gzip);
        IdxFormat.WriteLabels(dir.File("lab"), labels, gzip);

        Assert.Equal(gzip, IdxFormat.IsGzip(dir.File("img")));
        var images = IdxFormat.ReadImages(dir.File("img"));
        Assert.Equal((5, 3, 4), (images.Count, images.Rows, images.Columns));
        Assert.Equal(pixels, images.Pixels);
        Assert.Equal(labels, IdxFormat.ReadLabels(dir.File("lab")));
    }

    [Fact]
    public void Gzip_is_detected_by_content_not_by_name()
    {
        using var dir = new TempDirectory();
        var pixels = Bytes.Random(2 * 2 * 2, seed: 2);
        IdxFormat.WriteImages(dir.File("plain-name"), pixels, 2, 2, 2, gzip: true);
        IdxFormat.WriteImages(dir.File("raw.gz"), pixels, 2, 2, 2, gzip: false);
        Assert.Equal(pixels, IdxFormat.ReadImages(dir.File("plain-name")).Pixels);
        Assert.Equal(pixels, IdxFormat.ReadImages(dir.File("raw.gz")).Pixels);
    }

    [Fact]
    public void Truncated_raw_image_file_names_file_count_and_record_size()
    {
        using var dir = new TempDirectory();
        var path = dir.File("train-images-idx3-ubyte");
        IdxFormat.WriteImages(path, Bytes.Random(5 * 3 * 4, 3), 5, 3, 4);
        var e = Bytes.TruncatedFileError<DatasetException>(path, ..^7, p => IdxFormat.ReadImages(p, "HOW-TO-GET"));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("5 images of 3x4", e.Message);
        Assert.Contains("12 bytes each", e.Message);
        Assert.Contains("HOW-TO-GET", e.Message);
        Assert.Equal(path, e.File);
    }

    [Fact]
    public void Truncated_gzip_file_is_rejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("train-images-idx3-ubyte.gz");
        IdxFormat.WriteImages(path, Bytes.Random(50 * 28 * 28, 4), 50, 28, 28, gzip: true);
        var e = Bytes.TruncatedFileError<DatasetException>(path, ..(int)(new FileInfo(path).Length / 2), p => IdxFormat.ReadImages(p));
        Assert.True(e.Message.Contains("truncated") || e.Message.Contains("corrupt"), e.Message);
    }

    [Fact]
    public void Corrupt_gzip_stream_is_rejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("labels.gz");
        IdxFormat.WriteLabels(path, Bytes.Random(5000, 5, 10), gzip: true);
        var bytes = File.ReadAllBytes(path);
        for (var i = 20; i < bytes.Length - 20; i += 7) bytes[i] ^= 0x5a;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<DatasetException>(() => IdxFormat.ReadLabels(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Wrong_magic_number_says_what_was_expected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("swapped");
        IdxFormat.WriteLabels(path, [1, 2, 3]);
        var e = Assert.Throws<DatasetException>(() => IdxFormat.ReadImages(path));
        Assert.Contains("magic number 2049", e.Message);
        Assert.Contains("2051", e.Message);
        Assert.Contains("label file", e.Message);

        IdxFormat.WriteImages(path, new byte[4], 1, 2, 2);
        e = Assert.Throws<DatasetException>(() => IdxFormat.ReadLabels(path));
        Assert.Contains("magic number 2051", e.Message);
        Assert.Contains("2049", e.Message);
    }

    [Fact]
    public void Short_header_extra_bytes_and_missing_files_are_rejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("short");
        File.WriteAllBytes(path, [0, 0, 8, 3, 0, 0]);
        Assert.Contains("16-byte header", Assert.Throws<DatasetException>(() => IdxFormat.ReadImages(path)).Message);

        IdxFormat.WriteLabels(path, [1, 2, 3]);
        File.AppendAllText(path, "x");
        Assert.Contains("longer than its header announces: 3 labels", Assert.Throws<DatasetException>(() => IdxFormat.ReadLabels(path)).Message);

        var missing = dir.File("nope");
        var e = Assert.Throws<DatasetException>(() => IdxFormat.ReadLabels(missing, "install it"));
        Assert.Contains("not found", e.Message);
        Assert.Contains(missing, e.Message);
        Assert.Contains("install it", e.Message);
    }

    [Fact]
    public void Absurd_dimensions_are_rejected()
    {
        using var dir = new TempDirectory();
        var path = dir.File("absurd");
        File.WriteAllBytes(path, [0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1]);
        Assert.Contains("corrupt IDX image header", Assert.Throws<DatasetException>(() => IdxFormat.ReadImages(path)).Message);
    }
}

public class CifarFormatTests
{
    [Fact]
    public void Cifar10_records_round_trip()
    {
        using var dir = new TempDirectory();
        var labels = new byte[] { 0, 9, 5 };
        var pixels = Bytes.Random(3 * 3072, 6);
        CifarFormat.WriteCifar10(dir.File("b.bin"), labels, pixels);
        Assert.Equal(3 * 3073, new FileInfo(dir.File("b.bin")).Length);
        var r = CifarFormat.ReadCifar10(dir.File("b.bin"));
        Assert.Equal(3, r.Count);
        Assert.Equal(labels, r.Labels);
        Assert.Equal(pixels, r.Pixels);
    }

    [Fact]
    public void Cifar100_keeps_fine_labels()
    {
        using var dir = new TempDirectory();
        var coarse = new byte[] { 19, 0, 7 };
        var fine = new byte[] { 99, 42, 3 };
        var pixels = Bytes.Random(3 * 3072, 7);
        CifarFormat.WriteCifar100(dir.File("t.bin"), coarse, fine, pixels);
        Assert.Equal(3 * 3074, new FileInfo(dir.File("t.bin")).Length);
        var r = CifarFormat.ReadCifar100(dir.File("t.bin"));
        Assert.Equal(fine, r.Labels);
        Assert.Equal(pixels, r.Pixels);
    }

    [Fact]
    public void Truncated_cifar_file_names_the_record_size()
    {
        using var dir = new TempDirectory();
        var path = dir.File("data_batch_1.bin");
        CifarFormat.WriteCifar10(path, [1, 2], Bytes.Random(2 * 3072, 8));
        var e = Bytes.TruncatedFileError<DatasetException>(path, ..^100, p => CifarFormat.ReadCifar10(p, "GET-IT"));
        Assert.Contains("3073-byte records", e.Message);
        Assert.Contains("10000 records per file", e.Message);
        Assert.Contains("GET-IT", e.Message);

        var p100 = dir.File("train.bin");
        CifarFormat.WriteCifar100(p100, [1], [2], Bytes.Random(3072, 9));
        File.AppendAllText(p100, "z");
        Assert.Contains("3074-byte records", Assert.Throws<DatasetException>(() => CifarFormat.ReadCifar100(p100)).Message);
    }

    [Fact]
    public void Out_of_range_labels_mean_a_corrupt_or_wrong_file()
    {
        using var dir = new TempDirectory();
        var path = dir.File("x.bin");
        CifarFormat.WriteCifar10(path, [3, 10], Bytes.Random(2 * 3072, 10));
        var e = Assert.Throws<DatasetException>(() => CifarFormat.ReadCifar10(path));
        Assert.Contains("record 1 has label 10, expected 0..9", e.Message);

        CifarFormat.WriteCifar100(path, [20], [5], Bytes.Random(3072, 11));
        Assert.Contains("coarse label 20", Assert.Throws<DatasetException>(() => CifarFormat.ReadCifar100(path)).Message);
    }
}

public class DatasetRegistryTests
{
    static void WriteIdxSet(string dir, string prefix, byte[] pixels, byte[] labels, int rows, int cols, bool gzip)
    {
        var ext = gzip ? ".gz" : "";
        IdxFormat.WriteImages(Path.Combine(dir, $"{prefix}-images-idx3-ubyte{ext}"), pixels, labels.Length, rows, cols, gzip);
        IdxFormat.WriteLabels(Path.Combine(dir, $"{prefix}-labels-idx1-ubyte{ext}"), labels, gzip);
    }

    [Fact]
    public void Mnist_loads_from_a_user_directory_gzipped_or_not()
    {
        using var dir = new TempDirectory();
        var trainPixels = Bytes.Random(12 * 28 * 28, 12);
        var trainLabels = Bytes.Random(12, 13, 10);
        var testPixels = Bytes.Random(4 * 28 * 28, 14);
        var testLabels = new byte[] { 0, 9, 8, 7 };
        WriteIdxSet(dir.Path, "train", trainPixels, trainLabels, 28, 28, gzip: true);
        WriteIdxSet(dir.Path, "t10k", testPixels, testLabels, 28, 28, gzip: false);

        using var train = DatasetRegistry.Load("MNIST", DatasetSplit.Train, dir.Path);
        using var test = DatasetRegistry.Load("mnist", DatasetSplit.Test, dir.Path);
        Assert.Equal("mnist", train.Name);
        Assert.Equal(12, train.Count);
        Assert.Equal([12L, 1, 28, 28], train.Images.Shape);
        Assert.Equal(DType.UInt8, train.Images.DType);
        Assert.Equal(trainPixels, train.Images.ToArray<byte>());
        Assert.Equal(trainLabels.Select(b => (long)b).ToArray(), train.LabelArray());
        Assert.Equal(testLabels.Select(b => (long)b).ToArray(), test.LabelArray());
        Assert.Equal(DatasetSplit.Test, test.Split);
        Assert.Equal([0.1307], train.Mean);
        Assert.Equal([0.3081], train.Std);
        Assert.Equal([1L, 28, 28], train.InputShape);
        Assert.True(DatasetRegistry.Locate("mnist", dir.Path).Found);
    }

    [Fact]
    public void Torchvision_raw_subfolder_is_searched()
    {
        using var dir = new TempDirectory();
        var raw = Directory.CreateDirectory(dir.File("MNIST", "raw")).FullName;
        WriteIdxSet(raw, "t10k", Bytes.Random(2 * 4, 15), [1, 2], 2, 2, gzip: false);
        using var test = DatasetRegistry.Mnist(DatasetSplit.Test, dir.Path);
        Assert.Equal([1L, 2], test.LabelArray());
    }

    [Fact]
    public void Image_and_label_counts_must_match()
    {
        using var dir = new TempDirectory();
        IdxFormat.WriteImages(dir.File("train-images-idx3-ubyte"), Bytes.Random(3 * 4, 16), 3, 2, 2);
        IdxFormat.WriteLabels(dir.File("train-labels-idx1-ubyte"), [1, 2]);
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Mnist(DatasetSplit.Train, dir.Path));
        Assert.Contains("holds 3 images", e.Message);
        Assert.Contains("holds 2 labels", e.Message);
        Assert.Contains("train-images-idx3-ubyte", e.Message);
        Assert.Contains("train-labels-idx1-ubyte", e.Message);
    }

    [Fact]
    public void Labels_outside_the_classes_are_rejected()
    {
        using var dir = new TempDirectory();
        WriteIdxSet(dir.Path, "train", Bytes.Random(2 * 4, 17), [1, 10], 2, 2, gzip: false);
        Assert.Contains("label 10 of sample 1", Assert.Throws<DatasetException>(() => DatasetRegistry.Mnist(DatasetSplit.Train, dir.Path)).Message);
    }

    [Fact]
    public void Missing_data_says_how_to_get_it()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Mnist(DatasetSplit.Train, dir.Path));
        Assert.Contains("train-images-idx3-ubyte", e.Message);
        Assert.Contains("https://ossci-datasets.s3.amazonaws.com/mnist/", e.Message);

        e = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("mnist"));
        Assert.Contains("needs a data directory", e.Message);

        e = Assert.Throws<DatasetException>(() => DatasetRegistry.FashionMnist(DatasetSplit.Train, dir.File("absent")));
        Assert.Contains("apt-get install dataset-fashion-mnist", e.Message);

        e = Assert.Throws<DatasetException>(() => DatasetRegistry.Cifar10(DatasetSplit.Train, dir.Path));
        Assert.Contains("data_batch_1.bin", e.Message);
        Assert.Contains("cifar-10-binary.tar.gz", e.Message);

        e = Assert.Throws<DatasetException>(() => DatasetRegistry.Cifar100(DatasetSplit.Test, dir.Path));
        Assert.Contains("test.bin", e.Message);
        Assert.Contains("cifar-100-binary.tar.gz", e.Message);
        Assert.False(DatasetRegistry.Locate("cifar100", dir.Path).Found);
    }

    [Fact]
    public void Unknown_name_lists_the_valid_names()
    {
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("svhn"));
        foreach (var n in new[] { "fashion-mnist", "mnist", "cifar10", "cifar100", "tinyimagenet", "imagenet", "synthetic" })
            Assert.Contains(n, e.Message);
        Assert.Contains("svhn", e.Message);
        Assert.Equal("cifar10", DatasetRegistry.Canonical("CIFAR-10"));
        Assert.Equal("fashion-mnist", DatasetRegistry.Canonical("Fashion_MNIST"));
        Assert.Equal(100, DatasetRegistry.Info("cifar100").Classes);
    }

    [Fact]
    public void Cifar10_loads_all_batches_in_order_from_the_unpacked_subfolder()
    {
        using var dir = new TempDirectory();
        var sub = Directory.CreateDirectory(dir.File("cifar-10-batches-bin")).FullName;
        var allLabels = new List<byte>();
        var allPixels = new List<byte>();
        for (var b = 1; b <= 5; b++)
        {
            var labels = Bytes.Random(3, 100 + b, 10);
            var pixels = Bytes.Random(3 * 3072, 200 + b);
            CifarFormat.WriteCifar10(Path.Combine(sub, $"data_batch_{b}.bin"), labels, pixels);
            allLabels.AddRange(labels);
            allPixels.AddRange(pixels);
        }
        CifarFormat.WriteCifar10(Path.Combine(sub, "test_batch.bin"), [4, 2], Bytes.Random(2 * 3072, 300));

        using var train = DatasetRegistry.Load("cifar10", DatasetSplit.Train, dir.Path);
        Assert.Equal(15, train.Count);
        Assert.Equal([15L, 3, 32, 32], train.Images.Shape);
        Assert.Equal(allLabels.Select(b => (long)b), train.LabelArray());
        Assert.Equal(allPixels.ToArray(), train.Images.ToArray<byte>());
        // channel-major layout: [i, c, h, w] is byte i·3072 + c·1024 + h·32 + w
        using var scope = new DisposeScope();
        Assert.Equal(allPixels[7 * 3072 + 2 * 1024 + 5 * 32 + 17], (byte)train.Images.Select(0, 7).Select(0, 2).Select(0, 5).Select(0, 17).ItemLong());
        Assert.Equal([0.4914, 0.4822, 0.4465], train.Mean);
        using var test = DatasetRegistry.Cifar10(DatasetSplit.Test, sub);
        Assert.Equal([4L, 2], test.LabelArray());
        Assert.True(DatasetRegistry.Locate("cifar10", dir.Path).Found);
    }

    [Fact]
    public void Cifar100_loads_fine_labels()
    {
        using var dir = new TempDirectory();
        var sub = Directory.CreateDirectory(dir.File("cifar-100-binary")).FullName;
        CifarFormat.WriteCifar100(Path.Combine(sub, "train.bin"), [1, 2, 3], [77, 0, 99], Bytes.Random(3 * 3072, 400));
        CifarFormat.WriteCifar100(Path.Combine(sub, "test.bin"), [1], [50], Bytes.Random(3072, 401));
        using var train = DatasetRegistry.Load("cifar100", DatasetSplit.Train, dir.Path);
        Assert.Equal([77L, 0, 99], train.LabelArray());
        Assert.Equal(100, train.NumClasses);
        Assert.Equal([0.2673, 0.2564, 0.2762], train.Std);
    }

    [Fact]
    public void A_corrupt_batch_in_a_data_set_directory_names_the_file()
    {
        using var dir = new TempDirectory();
        for (var b = 1; b <= 5; b++)
            CifarFormat.WriteCifar10(dir.File($"data_batch_{b}.bin"), [1], Bytes.Random(3072, b));
        CifarFormat.WriteCifar10(dir.File("test_batch.bin"), [1], Bytes.Random(3072, 9));
        File.WriteAllBytes(dir.File("data_batch_4.bin"), new byte[3000]);
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Cifar10(DatasetSplit.Train, dir.Path));
        Assert.Contains("data_batch_4.bin", e.Message);
        Assert.Contains("cifar-10-binary.tar.gz", e.Message);
    }
}

public class FashionMnistTests
{
    const string Dir = DatasetRegistry.FashionMnistDirectory;

    [Fact]
    public void Debian_fashion_mnist_loads_and_matches_python()
    {
        using var train = DatasetRegistry.Load("fashion-mnist");
        using var test = DatasetRegistry.Load("fashion-mnist", DatasetSplit.Test);
        Assert.Equal(60000, train.Count);
        Assert.Equal(10000, test.Count);
        Assert.Equal([60000L, 1, 28, 28], train.Images.Shape);
        Assert.Equal(DType.UInt8, train.Images.DType);
        Assert.Equal([0.2860], train.Mean);
        Assert.Equal([0.3530], train.Std);
        // Fashion-MNIST is balanced: 6000 training and 1000 test images per class (labels 0..9).
        Assert.All(train.ClassCounts(), c => Assert.Equal(6000, c));
        Assert.All(test.ClassCounts(), c => Assert.Equal(1000, c));

        var trainLabels = train.LabelArray();
        var testLabels = test.LabelArray();
        Assert.Equal([9L, 0, 0, 3, 0, 2, 7, 2, 5, 5], trainLabels[..10]);
        Assert.Equal([9L, 2, 1, 1, 6, 1, 4, 6, 5, 7], testLabels[..10]);

        // Python reads the same gz files independently: labels, and pixel sums of a few images.
        var output = Python.Run("""
            import gzip, sys
            d = sys.argv[1]
            lab = gzip.open(d + '/train-labels-idx1-ubyte.gz').read()[8:]
            img = gzip.open(d + '/train-images-idx3-ubyte.gz').read()[16:]
            tl = gzip.open(d + '/t10k-labels-idx1-ubyte.gz').read()[8:]
            print(' '.join(str(x) for x in lab[:20]))
            print(' '.join(str(x) for x in tl[-20:]))
            print(' '.join(str(sum(img[i*784:(i+1)*784])) for i in (0, 1, 59999)))
            """, Dir);
        var lines = output.Trim().Split('\n');
        Assert.Equal(lines[0].Split(' ').Select(long.Parse), trainLabels[..20]);
        Assert.Equal(lines[1].Split(' ').Select(long.Parse), testLabels[^20..]);
        using var scope = new DisposeScope();
        var sums = new[] { 0, 1, 59999 }.Select(i => train.Images.Select(0, i).To(DType.Int64).Sum().ItemLong());
        Assert.Equal(lines[2].Split(' ').Select(long.Parse), sums);
    }
}
