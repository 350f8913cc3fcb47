
namespace Pai.Host.Data;

/// <summary>Static facts about a registered data set.</summary>
/// <param name="Name">Canonical name ("fashion-mnist", "mnist", "cifar10", "cifar100", "tinyimagenet", "imagenet", "synthetic").</param>
/// <param name="Classes">Number of classes.</param>
/// <param name="Channels">Channels of one input.</param>
/// <param name="Height">Height of one input.</param>
/// <param name="Width">Width of one input.</param>
/// <param name="Mean">Per-channel normalization mean (of pixels scaled to [0, 1]).</param>
/// <param name="Std">Per-channel normalization standard deviation.</param>
/// <param name="DefaultDirectory">Where it is looked for when no directory is given (null: a directory is required).</param>
/// <param name="HowToGet">How a user obtains the files and lays them out.</param>
public sealed record DatasetInfo(
    string Name, int Classes, int Channels, int Height, int Width,
    IReadOnlyList<double> Mean, IReadOnlyList<double> Std, string? DefaultDirectory, string HowToGet);

/// <summary>
/// Looks up data sets by name and loads them: Fashion-MNIST (Debian's dataset-fashion-mnist, the
/// default), MNIST (IDX files in a user's directory), CIFAR-10 and CIFAR-100 (binary versions in a
/// user's directory), Tiny ImageNet (JPEG folders, decoded into memory), ImageNet (JPEG folders,
/// streamed by an <see cref="ImageFolderLoader"/>) and the synthetic set.
/// </summary>
public static class DatasetRegistry
{
    /// <summary>Debian's dataset-fashion-mnist location: the embedded default data.</summary>
    public const string FashionMnistDirectory = "/usr/share/datasets/fashion-mnist";

    const string IdxFiles = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not)";

    static readonly DatasetInfo[] infos =
    [
        new("fashion-mnist", 10, 1, 28, 28, [0.2860], [0.3530], FashionMnistDirectory,
            "Fashion-MNIST ships with Debian: `apt-get install dataset-fashion-mnist` puts the IDX files in " + FashionMnistDirectory +
            ". Or download " + IdxFiles + " from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into one directory and pass it as the data directory."),
        new("mnist", 10, 1, 28, 28, [0.1307], [0.3081], null,
            "Download the MNIST files " + IdxFiles + " from https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror of http://yann.lecun.com/exdb/mnist/) " +
            "into one directory and pass it as the data directory (its raw/ or MNIST/raw/ subfolder, torchvision's layout, is also searched)."),
        new("cifar10", 10, 3, 32, 32, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], null,
            "Download the binary version https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (not the python version), unpack it with " +
            "`tar xzf cifar-10-binary.tar.gz` and pass the directory that holds data_batch_1.bin … data_batch_5.bin and test_batch.bin, or its parent holding cifar-10-batches-bin/."),
        new("cifar100", 100, 3, 32, 32, [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762], null,
            "Download the binary version https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (not the python version), unpack it with " +
            "`tar xzf cifar-100-binary.tar.gz` and pass the directory that holds train.bin and test.bin, or its parent holding cifar-100-binary/."),
        // Normalization: SynFlow's Tiny ImageNet statistics; ImageNet's are torchvision's standard ones.
        new("tinyimagenet", 200, 3, 64, 64, [0.480, 0.448, 0.397], [0.276, 0.269, 0.282], null,
            "Download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unpack it with `unzip tiny-imagenet-200.zip` and pass the tiny-imagenet-200 directory " +
            "(holding wnids.txt, train/<wnid>/images/*.JPEG, val/images/ and val/val_annotations.txt) or its parent."),
        new("imagenet", 1000, 3, 224, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], null,
            "Obtain ILSVRC-2012 (ImageNet-1k) from https://image-net.org, unpack the training images into train/<wnid>/*.JPEG and sort the validation images " +
            "into val/<wnid>/*.JPEG with the validation labels (the layout torchvision's ImageFolder reads), and pass the directory holding train/ and val/."),
        new(SyntheticData.Name, 10, 1, 28, 28, [0.0], [1.0], null,
            "The synthetic data set is generated in memory; it needs no files."),
    ];

    /// <summary>The canonical names of the registered data sets.</summary>
    public static IReadOnlyList<string> Names { get; } = infos.Select(i => i.Name).ToArray();

    /// <summary>The canonical name for <paramref name="name"/> (case, '-' and '_' are ignored: "CIFAR-10" is "cifar10").</summary>
    /// <exception cref="DatasetException">Unknown name; the message lists the valid ones.</exception>
    public static string Canonical(string name)
    {
        var key = Key(name);
        foreach (var n in Names)
            if (Key(n) == key) return n;
        if (key is "fmnist" or "fashion") return "fashion-mnist";
        throw new DatasetException($"unknown data set '{name}'; valid names: {string.Join(", ", Names)}");
    }

    static string Key(string s) => new(s.Trim().ToLowerInvariant().Where(ch => ch is not ('-' or '_' or ' ')).ToArray());

    /// <summary>Facts about a data set: classes, input shape, normalization, where it is found.</summary>
    /// <exception cref="DatasetException">Unknown name.</exception>
    public static DatasetInfo Info(string name)
    {
        var canonical = Canonical(name);
        return infos.First(i => i.Name == canonical);
    }

    /// <summary>Loads a data set by name.</summary>
    /// <param name="name">"fashion-mnist", "mnist", "cifar10", "cifar100", "tinyimagenet" or "synthetic" ("imagenet" is streamed: see <see cref="OpenImageFolder"/>).</param>
    /// <param name="split">Train or test (validation: use <see cref="Dataset.SplitValidation(double, ulong)"/> on the training set).</param>
    /// <param name="directory">Where the files are; Fashion-MNIST defaults to Debian's directory, MNIST and CIFAR need one.</param>
    /// <param name="synthetic">Options of the synthetic data set (ignored by the others).</param>
    /// <param name="skipBadImages">Image folders: leave undecodable images out (counted on stderr and in <see cref="Dataset.SkippedFiles"/>) instead of failing.</param>
    /// <exception cref="DatasetException">Unknown name, missing directory, missing/corrupt files, or imagenet (stream it with <see cref="OpenImageFolder"/>).</exception>
    public static Dataset Load(string name, DatasetSplit split = DatasetSplit.Train, string? directory = null, SyntheticOptions? synthetic = null, bool skipBadImages = false) =>
        Canonical(name) switch
        {
            "fashion-mnist" => FashionMnist(split, directory),
            "mnist" => Mnist(split, directory),
            "cifar10" => Cifar10(split, directory),
            "cifar100" => Cifar100(split, directory),
            "tinyimagenet" => TinyImageNet(split, directory, skipBadImages),
            "imagenet" => throw new DatasetException(
                "imagenet does not fit in memory: it is streamed from its JPEG folders (prune, train, run, sweep and estimate read it so); " +
                "`pai autos` and `pai imp` need a data set in memory: use tinyimagenet there."),
            _ => SyntheticData.Create(synthetic, split),
        };

    /// <summary>
    /// Tiny ImageNet from its official layout, decoded into memory (the decoded-image cache: 1.2 GB
    /// for the 100000 training images) by parallel threads. Class order = sorted wnids; test = val.
    /// </summary>
    /// <param name="split">Train (100000 images) or test (the 10000 val images).</param>
    /// <param name="directory">The tiny-imagenet-200 directory or its parent.</param>
    /// <param name="skipBadImages">Leave undecodable images out (counted) instead of failing.</param>
    public static Dataset TinyImageNet(DatasetSplit split, string? directory, bool skipBadImages = false)
    {
        var info = Info("tinyimagenet");
        var folder = ImageFolder.TinyImageNet(RequireDirectory(info, directory), split, info.HowToGet);
        var data = folder.LoadInMemory(info.Height, info.Mean, info.Std, skipBadImages);
        ReportSkipped(info, split, data.SkippedFiles);
        return data;
    }

    /// <summary>
    /// The index of an image-folder data set (tinyimagenet or imagenet) for an <see cref="ImageFolderLoader"/>:
    /// classes (sorted wnids) and files with labels; no image is decoded yet.
    /// </summary>
    /// <param name="name">"tinyimagenet" or "imagenet".</param>
    /// <param name="split">Train or test (the val folder).</param>
    /// <param name="directory">The data set's directory.</param>
    /// <exception cref="DatasetException">Not an image-folder data set, or a missing folder, class or split.</exception>
    public static ImageFolder OpenImageFolder(string name, DatasetSplit split, string? directory)
    {
        var info = Info(name);
        var dir = RequireDirectory(info, directory);
        return info.Name switch
        {
            "tinyimagenet" => ImageFolder.TinyImageNet(dir, split, info.HowToGet),
            "imagenet" => ImageFolder.ImageNet(dir, split, info.HowToGet),
            _ => throw new DatasetException($"{info.Name} is not an image-folder data set; image folders: tinyimagenet, imagenet"),
        };
    }

    static void ReportSkipped(DatasetInfo info, DatasetSplit split, IReadOnlyList<string> skipped)
    {
        if (skipped.Count > 0)
            Console.Error.WriteLine($"pai: {info.Name} {split.ToString().ToLowerInvariant()}: skipped {skipped.Count} undecodable image(s) (--skip-bad-images), e.g. {skipped[0]}");
    }

    /// <summary>Fashion-MNIST from <paramref name="directory"/> or Debian's dataset-fashion-mnist directory.</summary>
    /// <param name="split">Train (60000) or test (10000).</param>
    /// <param name="directory">Directory of the IDX files (default <see cref="FashionMnistDirectory"/>).</param>
    public static Dataset FashionMnist(DatasetSplit split = DatasetSplit.Train, string? directory = null) =>
        LoadIdx(Info("fashion-mnist"), split, directory ?? FashionMnistDirectory);

    /// <summary>MNIST from a user's directory of IDX files.</summary>
    /// <param name="split">Train (60000) or test (10000).</param>
    /// <param name="directory">Directory of the IDX files.</param>
    public static Dataset Mnist(DatasetSplit split, string? directory) =>
        LoadIdx(Info("mnist"), split, RequireDirectory(Info("mnist"), directory));

    /// <summary>CIFAR-10 (binary version) from a user's directory.</summary>
    /// <param name="split">Train (data_batch_1..5.bin) or test (test_batch.bin).</param>
    /// <param name="directory">The cifar-10-batches-bin directory or its parent.</param>
    public static Dataset Cifar10(DatasetSplit split, string? directory)
    {
        var info = Info("cifar10");
        var dir = FindDirectory(RequireDirectory(info, directory), ["cifar-10-batches-bin"], "test_batch.bin");
        var files = Cifar10Files(split).Select(f => Path.Combine(dir, f)).ToArray();
        RequireFiles(info, dir, files);
        var parts = files.Select(f => CifarFormat.ReadCifar10(f, info.HowToGet)).ToList();
        return FromCifar(info, split, parts);
    }

    /// <summary>CIFAR-100 (binary version, fine labels) from a user's directory.</summary>
    /// <param name="split">Train (train.bin) or test (test.bin).</param>
    /// <param name="directory">The cifar-100-binary directory or its parent.</param>
    public static Dataset Cifar100(DatasetSplit split, string? directory)
    {
        var info = Info("cifar100");
        var dir = FindDirectory(RequireDirectory(info, directory), ["cifar-100-binary"], "test.bin");
        var file = Path.Combine(dir, SplitName(split, "train.bin", "test.bin"));
        RequireFiles(info, dir, [file]);
        return FromCifar(info, split, [CifarFormat.ReadCifar100(file, info.HowToGet)]);
    }

    /// <summary>Whether a data set's files are present, and where they were looked for.</summary>
    /// <param name="name">Data set name.</param>
    /// <param name="directory">The directory a load would be given (null: the default, if any).</param>
    public static DatasetLocation Locate(string name, string? directory = null)
    {
        var info = Info(name);
        if (info.Name == SyntheticData.Name) return new DatasetLocation(info.Name, "(generated)", true, info.HowToGet);
        var dir = directory ?? info.DefaultDirectory;
        if (dir is null) return new DatasetLocation(info.Name, "(no directory given)", false, info.HowToGet);
        if (info.Name == "imagenet")
            return new DatasetLocation(info.Name, dir, Directory.Exists(Path.Combine(dir, "train")) && Directory.Exists(Path.Combine(dir, "val")), info.HowToGet);
        string[] needed = info.Name switch
        {
            "cifar10" => Cifar10Files(DatasetSplit.Train).Append("test_batch.bin").Select(f => Path.Combine(FindDirectory(dir, ["cifar-10-batches-bin"], "test_batch.bin"), f)).ToArray(),
            "cifar100" => new[] { "train.bin", "test.bin" }.Select(f => Path.Combine(FindDirectory(dir, ["cifar-100-binary"], "test.bin"), f)).ToArray(),
            "tinyimagenet" => [Path.Combine(FindDirectory(dir, ["tiny-imagenet-200"], "wnids.txt"), "wnids.txt"), Path.Combine(FindDirectory(dir, ["tiny-imagenet-200"], "wnids.txt"), "val", "val_annotations.txt")],
            _ => IdxNames(DatasetSplit.Train).Concat(IdxNames(DatasetSplit.Test)).Select(f => FindIdx(dir, f)).ToArray(),
        };
        return new DatasetLocation(info.Name, dir, needed.All(File.Exists), info.HowToGet);
    }

    // ---- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------

    static readonly string[] IdxSubfolders = ["raw", Path.Combine("MNIST", "raw"), Path.Combine("FashionMNIST", "raw")];

    static string[] IdxNames(DatasetSplit split)
    {
        var prefix = SplitName(split, "train", "t10k");
        return [$"{prefix}-images-idx3-ubyte", $"{prefix}-labels-idx1-ubyte"];
    }

    // The path of an IDX file: name or name.gz, in the directory or a known subfolder (the first that exists).
    static string FindIdx(string directory, string name)
    {
        foreach (var dir in IdxSubfolders.Select(s => Path.Combine(directory, s)).Prepend(directory))
            foreach (var file in new[] { name, name + ".gz" })
            {
                var path = Path.Combine(dir, file);
                if (File.Exists(path)) return path;
            }
        return Path.Combine(directory, name + ".gz");
    }

    static Dataset LoadIdx(DatasetInfo info, DatasetSplit split, string directory)
    {
        if (!Directory.Exists(directory))
            throw new DatasetException($"{info.Name}: directory {directory} not found; expected {IdxFiles} there. {info.HowToGet}", directory);
        var names = IdxNames(split);
        var imagesPath = FindIdx(directory, names[0]);
        var labelsPath = FindIdx(directory, names[1]);
        foreach (var (path, name) in new[] { (imagesPath, names[0]), (labelsPath, names[1]) })
            if (!File.Exists(path))
                throw new DatasetException(
                    $"{info.Name}: {name} (or {name}.gz) not found in {directory} (also searched {string.Join(", ", IdxSubfolders)}). {info.HowToGet}", path);
        var images = IdxFormat.ReadImages(imagesPath, info.HowToGet);
        var labels = IdxFormat.ReadLabels(labelsPath, info.HowToGet);
        if (images.Count != labels.Length)
            throw new DatasetException(
                $"{info.Name}: {imagesPath} holds {images.Count} images but {labelsPath} holds {labels.Length} labels; the two files must come from the same release. {info.HowToGet}", labelsPath);
        for (var i = 0; i < labels.Length; i++)
            if (labels[i] >= info.Classes)
                throw new DatasetException($"{labelsPath}: label {labels[i]} of sample {i} is outside 0..{info.Classes - 1}; the file is corrupt. {info.HowToGet}", labelsPath);
        return Build(info, split, images.Pixels, labels, images.Count, 1, images.Rows, images.Columns);
    }

    // ---- CIFAR ------------------------------------------------------------------------------

    static string[] Cifar10Files(DatasetSplit split) =>
        SplitName(split, "train", "test") == "test" ? ["test_batch.bin"] : Enumerable.Range(1, 5).Select(i => $"data_batch_{i}.bin").ToArray();

    static Dataset FromCifar(DatasetInfo info, DatasetSplit split, List<CifarRecords> parts)
    {
        var count = parts.Sum(p => (long)p.Count);
        if (count * CifarFormat.PixelBytes > Array.MaxLength)
            throw new DatasetException($"{info.Name}: {count} images do not fit in one array");
        byte[] pixels, labels;
        if (parts.Count == 1)
        {
            pixels = parts[0].Pixels;
            labels = parts[0].Labels;
        }
        else
        {
            pixels = new byte[count * CifarFormat.PixelBytes];
            labels = new byte[count];
            long at = 0;
            foreach (var p in parts)
            {
                Buffer.BlockCopy(p.Pixels, 0, pixels, (int)(at * CifarFormat.PixelBytes), p.Pixels.Length);
                Buffer.BlockCopy(p.Labels, 0, labels, (int)at, p.Labels.Length);
                at += p.Count;
            }
        }
        return Build(info, split, pixels, labels, (int)count, 3, 32, 32);
    }

    // A directory holding marker, or its subfolder that does (the tarballs unpack into a subfolder).
    static string FindDirectory(string directory, string[] subfolders, string marker)
    {
        if (File.Exists(Path.Combine(directory, marker))) return directory;
        foreach (var s in subfolders)
        {
            var d = Path.Combine(directory, s);
            if (File.Exists(Path.Combine(d, marker))) return d;
        }
        return directory;
    }

    static void RequireFiles(DatasetInfo info, string directory, string[] files)
    {
        var missing = files.Where(f => !File.Exists(f)).Select(Path.GetFileName).ToList();
        if (missing.Count > 0)
            throw new DatasetException($"{info.Name}: {string.Join(", ", missing)} not found in {directory}. {info.HowToGet}", Path.Combine(directory, missing[0]!));
    }

    // ---- shared -----------------------------------------------------------------------------

    static string RequireDirectory(DatasetInfo info, string? directory)
    {
        if (string.IsNullOrWhiteSpace(directory))
            throw new DatasetException($"{info.Name} needs a data directory. {info.HowToGet}");
        if (!Directory.Exists(directory))
            throw new DatasetException($"{info.Name}: directory {directory} not found. {info.HowToGet}", directory);
        return directory;
    }

    static string SplitName(DatasetSplit split, string train, string test) => split switch
    {
        DatasetSplit.Train => train,
        DatasetSplit.Test => test,
        _ => throw new ArgumentException("data sets are loaded as train or test; split a validation set off the training set with Dataset.SplitValidation", nameof(split)),
    };

    static Dataset Build(DatasetInfo info, DatasetSplit split, byte[] pixels, byte[] labels, int count, int channels, int height, int width)
    {
        using var scope = new DisposeScope();
        var images = Libtorch.FromArray(pixels, [count, channels, height, width]);
        var labels64 = new long[count];
        for (var i = 0; i < count; i++) labels64[i] = labels[i];
        var labelTensor = Libtorch.FromArray(labels64);
        return new Dataset(info.Name, split, images, labelTensor, info.Classes, info.Mean, info.Std);
    }
}
