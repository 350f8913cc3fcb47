namespace Pai.Host.Data;

/// <summary>Records read from a CIFAR binary file: one label and 3×32×32 pixel bytes (channel-major: R, G, B planes) per image.</summary>
/// <param name="Count">Number of records.</param>
/// <param name="Labels">One class label per record (the fine label for CIFAR-100).</param>
/// <param name="Pixels">Count·3072 bytes in [C, H, W] order, record after record.</param>
public sealed record CifarRecords(int Count, byte[] Labels, byte[] Pixels);

/// <summary>
/// The binary ("python-free") versions of CIFAR-10 and CIFAR-100. A CIFAR-10 record is 1 label byte
/// and 3072 pixel bytes; a CIFAR-100 record is 2 label bytes (coarse, fine) and 3072 pixel bytes.
/// Files hold whole records only.
/// </summary>
public static class CifarFormat
{
    /// <summary>Pixel bytes per image: 3 channels of 32×32.</summary>
    public const int PixelBytes = 3 * 32 * 32;

    /// <summary>Reads a CIFAR-10 batch file (data_batch_N.bin or test_batch.bin): labels 0..9.</summary>
    /// <param name="path">The file.</param>
    /// <param name="howToGet">Appended to error messages: how the user obtains the data.</param>
    /// <exception cref="DatasetException">The file is missing, not whole records, or holds a label out of range.</exception>
    public static CifarRecords ReadCifar10(string path, string? howToGet = null) =>
        Read(path, labelBytes: 1, coarseClasses: 0, classes: 10, "CIFAR-10", "1 label byte + 3072 pixel bytes", "10000 records per file", howToGet);

    /// <summary>Reads a CIFAR-100 file (train.bin or test.bin), keeping the fine labels 0..99.</summary>
    /// <param name="path">The file.</param>
    /// <param name="howToGet">Appended to error messages: how the user obtains the data.</param>
    /// <exception cref="DatasetException">The file is missing, not whole records, or holds a label out of range.</exception>
    public static CifarRecords ReadCifar100(string path, string? howToGet = null) =>
        Read(path, labelBytes: 2, coarseClasses: 20, classes: 100, "CIFAR-100", "2 label bytes (coarse, fine) + 3072 pixel bytes", "50000 records in train.bin, 10000 in test.bin", howToGet);

    /// <summary>Writes a CIFAR-10 binary file.</summary>
    /// <param name="path">Destination (overwritten).</param>
    /// <param name="labels">One label per record.</param>
    /// <param name="pixels">labels.Length·3072 bytes in [C, H, W] order.</param>
    public static void WriteCifar10(string path, ReadOnlySpan<byte> labels, ReadOnlySpan<byte> pixels) =>
        Write(path, [], labels, pixels);

    /// <summary>Writes a CIFAR-100 binary file.</summary>
    /// <param name="path">Destination (overwritten).</param>
    /// <param name="coarse">Coarse (superclass) label per record.</param>
    /// <param name="fine">Fine label per record.</param>
    /// <param name="pixels">fine.Length·3072 bytes in [C, H, W] order.</param>
    public static void WriteCifar100(string path, ReadOnlySpan<byte> coarse, ReadOnlySpan<byte> fine, ReadOnlySpan<byte> pixels)
    {
        if (coarse.Length != fine.Length) throw new ArgumentException($"{coarse.Length} coarse labels but {fine.Length} fine labels");
        Write(path, coarse, fine, pixels);
    }

    static void Write(string path, ReadOnlySpan<byte> coarse, ReadOnlySpan<byte> labels, ReadOnlySpan<byte> pixels)
    {
        if ((long)labels.Length * PixelBytes != pixels.Length)
            throw new ArgumentException($"{pixels.Length} pixel bytes do not make {labels.Length} images of 3x32x32");
        using var f = new BufferedStream(File.Create(path), 1 << 16);
        for (var i = 0; i < labels.Length; i++)
        {
            if (!coarse.IsEmpty) f.WriteByte(coarse[i]);
            f.WriteByte(labels[i]);
            f.Write(pixels.Slice(i * PixelBytes, PixelBytes));
        }
    }

    static CifarRecords Read(string path, int labelBytes, int coarseClasses, int classes, string name, string recordText, string countText, string? howToGet)
    {
        if (!File.Exists(path))
            throw Fail(path, $"{name} binary file not found", howToGet);
        var record = labelBytes + PixelBytes;
        byte[] bytes;
        try
        {
            var length = new FileInfo(path).Length;
            if (length == 0 || length % record != 0)
                throw Fail(path, $"truncated or not a {name} binary file: {length} bytes is not a whole number of {record}-byte records ({recordText}; {countText})", howToGet);
            if (length > Array.MaxLength)
                throw Fail(path, $"{length} bytes is too large for a {name} file ({countText})", howToGet);
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            throw Fail(path, $"cannot read {name} file: {e.Message}", howToGet, e);
        }
        var count = bytes.Length / record;
        var labels = new byte[count];
        var pixels = new byte[(long)count * PixelBytes];
        for (var i = 0; i < count; i++)
        {
            var at = i * record;
            if (coarseClasses > 0 && bytes[at] >= coarseClasses)
                throw Fail(path, $"corrupt {name} file: record {i} has coarse label {bytes[at]}, expected 0..{coarseClasses - 1} ({recordText})", howToGet);
            var label = bytes[at + labelBytes - 1];
            if (label >= classes)
                throw Fail(path, $"corrupt {name} file: record {i} has label {label}, expected 0..{classes - 1} ({recordText})", howToGet);
            labels[i] = label;
            Buffer.BlockCopy(bytes, at + labelBytes, pixels, i * PixelBytes, PixelBytes);
        }
        return new CifarRecords(count, labels, pixels);
    }

    static DatasetException Fail(string path, string what, string? howToGet, Exception? inner = null) =>
        new($"{path}: {what}.{(howToGet is null ? "" : " " + howToGet)}", path, inner);
}
