using System.Collections.Concurrent;

namespace Pai.Host.Data;

/// <summary>One image file of an <see cref="ImageFolder"/> and its class.</summary>
/// <param name="File">Full path of the JPEG file.</param>
/// <param name="Label">Class index, 0..classes-1.</param>
public readonly record struct ImageSample(string File, int Label);

/// <summary>
/// The index of an image-folder data set split: its classes (WordNet ids, sorted ordinally, which
/// defines the class order) and its JPEG files with their labels, in a fixed order (class, then
/// file name). Reads two layouts:
/// <list type="bullet">
/// <item>Tiny ImageNet's official one: wnids.txt, train/&lt;wnid&gt;/images/*.JPEG,
/// val/images/*.JPEG labelled by val/val_annotations.txt (the test split is val).</item>
/// <item>ImageNet as torchvision's ImageFolder reads it: train/&lt;wnid&gt;/*.JPEG and
/// val/&lt;wnid&gt;/*.JPEG (the test split is val; its class folders must match train's).</item>
/// </list>
/// A missing file or folder, an unknown class or an empty split is a <see cref="DatasetException"/>
/// that names the path.
/// </summary>
public sealed class ImageFolder
{
    ImageFolder(string name, DatasetSplit split, string root, IReadOnlyList<string> classes, IReadOnlyList<ImageSample> samples)
    {
        Name = name;
        Split = split;
        Root = root;
        Classes = classes;
        Samples = samples;
    }

    /// <summary>Data set name ("tinyimagenet" or "imagenet").</summary>
    public string Name { get; }
    /// <summary>Train or test (the val folder).</summary>
    public DatasetSplit Split { get; }
    /// <summary>The data set's root directory.</summary>
    public string Root { get; }
    /// <summary>Class names (WordNet ids) in class-index order (sorted ordinally).</summary>
    public IReadOnlyList<string> Classes { get; }
    /// <summary>The split's images and labels.</summary>
    public IReadOnlyList<ImageSample> Samples { get; }

    /// <summary>The samples at <paramref name="indices"/>, in that order, with the same classes.</summary>
    public ImageFolder Subset(IReadOnlyList<long> indices) =>
        new(Name, Split, Root, Classes, indices.Select(i => Samples[(int)i]).ToArray());

    static bool IsJpeg(string path)
    {
        var ext = Path.GetExtension(path);
        return ext.Equals(".jpeg", StringComparison.OrdinalIgnoreCase) || ext.Equals(".jpg", StringComparison.OrdinalIgnoreCase);
    }

    static string[] Jpegs(string directory) =>
        Directory.EnumerateFiles(directory).Where(IsJpeg).Order(StringComparer.Ordinal).ToArray();

    static string RequireFolder(string path, string name, string howToGet)
    {
        if (!Directory.Exists(path))
            throw new DatasetException($"{name}: folder {path} not found. {howToGet}", path);
        return path;
    }

    /// <summary>Tiny ImageNet (tiny-imagenet-200) in its official layout.</summary>
    /// <param name="directory">The tiny-imagenet-200 directory (holding wnids.txt) or its parent.</param>
    /// <param name="split">Train (train/) or test (val/).</param>
    /// <param name="howToGet">How to obtain the data, appended to errors.</param>
    public static ImageFolder TinyImageNet(string directory, DatasetSplit split, string howToGet)
    {
        const string name = "tinyimagenet";
        var root = File.Exists(Path.Combine(directory, "wnids.txt")) ? directory : Path.Combine(directory, "tiny-imagenet-200");
        var wnidsFile = Path.Combine(root, "wnids.txt");
        if (!File.Exists(wnidsFile))
            throw new DatasetException($"{name}: wnids.txt not found in {directory} (nor in its tiny-imagenet-200/ subfolder). {howToGet}", wnidsFile);
        var wnids = File.ReadAllLines(wnidsFile).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (wnids.Length == 0) throw new DatasetException($"{name}: {wnidsFile} lists no classes. {howToGet}", wnidsFile);
        var duplicate = wnids.GroupBy(w => w).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new DatasetException($"{name}: {wnidsFile} lists class {duplicate.Key} twice. {howToGet}", wnidsFile);
        var classes = wnids.Order(StringComparer.Ordinal).ToArray();
        var index = classes.Select((w, i) => (w, i)).ToDictionary(p => p.w, p => p.i);
        var samples = new List<ImageSample>();
        if (split == DatasetSplit.Train)
        {
            var train = RequireFolder(Path.Combine(root, "train"), name, howToGet);
            foreach (var wnid in classes)
            {
                var images = Path.Combine(train, wnid, "images");
                if (!Directory.Exists(images))
                    throw new DatasetException($"{name}: class folder {images} not found (wnids.txt lists {wnid}). {howToGet}", images);
                var files = Jpegs(images);
                if (files.Length == 0) throw new DatasetException($"{name}: class folder {images} holds no JPEG files. {howToGet}", images);
                samples.AddRange(files.Select(f => new ImageSample(f, index[wnid])));
            }
        }
        else if (split == DatasetSplit.Test)
        {
            var val = RequireFolder(Path.Combine(root, "val"), name, howToGet);
            var annotations = Path.Combine(val, "val_annotations.txt");
            if (!File.Exists(annotations))
                throw new DatasetException($"{name}: {annotations} not found; it labels the images in val/images. {howToGet}", annotations);
            var images = RequireFolder(Path.Combine(val, "images"), name, howToGet);
            var lineNumber = 0;
            foreach (var line in File.ReadLines(annotations))
            {
                lineNumber++;
                if (line.Trim().Length == 0) continue;
                var fields = line.Split('\t');
                if (fields.Length < 2)
                    throw new DatasetException($"{name}: {annotations} line {lineNumber} is not 'FILE<tab>WNID…': '{line}'. {howToGet}", annotations);
                if (!index.TryGetValue(fields[1].Trim(), out var label))
                    throw new DatasetException($"{name}: {annotations} line {lineNumber} labels {fields[0]} with {fields[1]}, which wnids.txt does not list. {howToGet}", annotations);
                samples.Add(new ImageSample(Path.Combine(images, fields[0].Trim()), label));
            }
            samples.Sort((a, b) => a.Label != b.Label ? a.Label.CompareTo(b.Label) : string.CompareOrdinal(a.File, b.File));
        }
        else throw SplitError(nameof(split));
        if (samples.Count == 0)
            throw new DatasetException($"{name}: the {SplitFolder(split)} split of {root} holds no images. {howToGet}", Path.Combine(root, SplitFolder(split)));
        return new ImageFolder(name, split, root, classes, samples);
    }

    /// <summary>ImageNet (ILSVRC-2012) in torchvision's ImageFolder layout: train/&lt;wnid&gt;/*.JPEG, val/&lt;wnid&gt;/*.JPEG.</summary>
    /// <param name="directory">The directory holding train/ and val/.</param>
    /// <param name="split">Train (train/) or test (val/).</param>
    /// <param name="howToGet">How to obtain the data, appended to errors.</param>
    public static ImageFolder ImageNet(string directory, DatasetSplit split, string howToGet)
    {
        const string name = "imagenet";
        var train = RequireFolder(Path.Combine(directory, "train"), name, howToGet);
        // The classes are train's class folders; val must have the same ones (torchvision's
        // ImageFolder would silently renumber a val split with a missing class).
        var classes = Directory.EnumerateDirectories(train).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        if (classes.Length == 0)
            throw new DatasetException($"{name}: {train} holds no class folders; expected train/<wnid>/*.JPEG. {howToGet}", train);
        var folder = Path.Combine(directory, SplitFolder(split));
        if (split == DatasetSplit.Test)
        {
            RequireFolder(folder, name, howToGet);
            if (!Directory.EnumerateDirectories(folder).Any() && Directory.EnumerateFiles(folder).Any(IsJpeg))
                throw new DatasetException($"{name}: {folder} holds images directly; sort them into val/<wnid>/ class folders (torchvision's layout) with the validation labels. {howToGet}", folder);
            var extra = Directory.EnumerateDirectories(folder).Select(Path.GetFileName).Except(classes).Order(StringComparer.Ordinal).FirstOrDefault();
            if (extra is not null)
                throw new DatasetException($"{name}: class folder {Path.Combine(folder, extra)} has no counterpart in {train}; train and val must have the same class folders. {howToGet}", Path.Combine(folder, extra));
        }
        var samples = new List<ImageSample>();
        for (var label = 0; label < classes.Length; label++)
        {
            var classFolder = Path.Combine(folder, classes[label]!);
            if (!Directory.Exists(classFolder))
                throw new DatasetException($"{name}: class folder {classFolder} not found ({train} has class {classes[label]}); train and val must have the same class folders. {howToGet}", classFolder);
            var files = Jpegs(classFolder);
            if (files.Length == 0) throw new DatasetException($"{name}: class folder {classFolder} holds no JPEG files. {howToGet}", classFolder);
            foreach (var f in files) samples.Add(new ImageSample(f, label));
        }
        return new ImageFolder(name, split, directory, classes!, samples);
    }

    /// <summary>
    /// Decodes every image into memory (in parallel) as a uint8 <see cref="Data.Dataset"/> of
    /// side × side RGB images: the decoded-image cache of small data sets such as Tiny ImageNet
    /// (100000 × 64×64×3 bytes = 1.2 GB). Images of another size are resized (antialiased bilinear).
    /// </summary>
    /// <param name="side">Height and width of the stored images (64 for Tiny ImageNet).</param>
    /// <param name="mean">Per-channel normalization mean of the data set.</param>
    /// <param name="std">Per-channel normalization standard deviation.</param>
    /// <param name="skipBadImages">Leave undecodable images out (listed in <see cref="Dataset.SkippedFiles"/>) instead of failing.</param>
    /// <param name="threads">Decoding threads (default: every core).</param>
    /// <exception cref="DatasetException">An image cannot be read or decoded (and <paramref name="skipBadImages"/> is off), or every image was bad.</exception>
    public Dataset LoadInMemory(int side, IReadOnlyList<double> mean, IReadOnlyList<double> std, bool skipBadImages = false, int threads = 0)
    {
        var plane = 3 * side * side;
        // The count comes from the folder (Tiny ImageNet's val split: from val_annotations.txt's
        // lines); past one array the cache cannot be allocated, and sample offsets would overflow.
        if ((long)Samples.Count * plane > Array.MaxLength)
            throw new DatasetException(
                $"{Name}: the {SplitFolder(Split)} split lists {Samples.Count} images, {(long)Samples.Count * plane} bytes decoded at {side}×{side}, " +
                $"more than one in-memory array holds ({Array.MaxLength} bytes); check that {Root} holds the data set and nothing else", Path.Combine(Root, SplitFolder(Split)));
        var pixels = new byte[Samples.Count * plane];
        var bad = new ConcurrentDictionary<int, string>();
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount };
        try
        {
            Parallel.For(0, Samples.Count, options, () => new float[plane], (i, _, scratch) =>
            {
                var file = Samples[i].File;
                try
                {
                    var image = Jpeg.Decode(ReadImage(file), file);
                    var target = pixels.AsSpan(i * plane, plane);
                    if (image.Width == side && image.Height == side)
                        for (int y = 0, o = 0; y < side * side; y++, o += 3) // HWC → CHW
                        {
                            target[y] = image.Pixels[o];
                            target[side * side + y] = image.Pixels[o + 1];
                            target[2 * side * side + y] = image.Pixels[o + 2];
                        }
                    else
                    {
                        ImageTransforms.ResampleNormalized(image, new CropBox(0, 0, image.Width, image.Height), side, side, false, [0.0, 0.0, 0.0], Raw, scratch);
                        for (var j = 0; j < plane; j++) target[j] = (byte)scratch[j];
                    }
                }
                catch (DatasetException e) when (skipBadImages && e.File == file)
                {
                    bad[i] = e.Message;
                }
                return scratch;
            }, _ => { });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            // Report the first bad file in sample order, whichever thread met it first.
            throw e.InnerExceptions.OfType<DatasetException>().OrderBy(d => d.File, StringComparer.Ordinal).FirstOrDefault() ?? e.InnerExceptions[0];
        }
        var keep = Enumerable.Range(0, Samples.Count).Where(i => !bad.ContainsKey(i)).ToArray();
        if (keep.Length == 0)
            throw NoneDecoded(Samples.Count, bad.Keys.Min(), bad[bad.Keys.Min()]);
        var labels = keep.Select(i => (long)Samples[i].Label).ToArray();
        if (keep.Length < Samples.Count)
        {
            var kept = new byte[(long)keep.Length * plane];
            for (var j = 0; j < keep.Length; j++) Array.Copy(pixels, (long)keep[j] * plane, kept, (long)j * plane, plane);
            pixels = kept;
        }
        using var scope = new DisposeScope();
        var images = Libtorch.FromArray(pixels, [keep.Length, 3, side, side]);
        return new Dataset(Name, Split, images, Libtorch.FromArray(labels), Classes.Count, mean, std)
        {
            SkippedFiles = bad.OrderBy(p => p.Key).Select(p => Samples[p.Key].File).ToArray(),
        };
    }

    /// <summary>
    /// The error for a split of which every image read was skipped as undecodable (--skip-bad-images):
    /// training or scoring on nothing would only fail later, with a misleading cause (a NaN loss).
    /// </summary>
    /// <param name="read">How many images were read.</param>
    /// <param name="first">The first of them, in sample order.</param>
    /// <param name="reason">Why it could not be decoded (its skip message).</param>
    internal DatasetException NoneDecoded(long read, int first, string reason) =>
        new($"{Name}: none of the {read} images read from the {SplitFolder(Split)} split could be decoded (--skip-bad-images skipped every one); first: {reason}", Samples[first].File);

    static readonly double[] Raw = [1 / 255.0, 1 / 255.0, 1 / 255.0]; // std that leaves pixels at 0..255

    /// <summary>The bytes of an image file; an unreadable file is a <see cref="DatasetException"/> naming it.</summary>
    internal static byte[] ReadImage(string file)
    {
        try
        {
            return File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DatasetException($"{file}: cannot read the image: {e.Message}. Replace or delete the file, or pass --skip-bad-images to continue without it.", file, e);
        }
    }

    static string SplitFolder(DatasetSplit split) => split switch
    {
        DatasetSplit.Train => "train",
        DatasetSplit.Test => "val",
        _ => throw SplitError(nameof(split)),
    };

    static ArgumentException SplitError(string param) =>
        new("image folders are loaded as train or test (val/); split a validation set off the training set", param);
}
