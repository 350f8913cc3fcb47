using System.Buffers.Binary;
using System.IO.Compression;

namespace Pai.Host.Data;

/// <summary>Images read from an IDX file: <see cref="Count"/> images of <see cref="Rows"/>×<see cref="Columns"/> unsigned bytes, row-major.</summary>
/// <param name="Count">Number of images.</param>
/// <param name="Rows">Image height.</param>
/// <param name="Columns">Image width.</param>
/// <param name="Pixels">Count·Rows·Columns bytes, image after image.</param>
public sealed record IdxImages(int Count, int Rows, int Columns, byte[] Pixels);

/// <summary>
/// The IDX format of MNIST and Fashion-MNIST, gzipped or raw (detected by the gzip magic bytes, not
/// the file name). Images: big-endian magic 2051 (0x00000803: unsigned bytes, 3 dimensions), count,
/// rows, columns, then the pixels. Labels: magic 2049 (0x00000801), count, then one byte per label.
/// </summary>
public static class IdxFormat
{
    /// <summary>Magic number of an IDX file of unsigned-byte images (3 dimensions).</summary>
    public const int ImagesMagic = 0x00000803;
    /// <summary>Magic number of an IDX file of unsigned-byte labels (1 dimension).</summary>
    public const int LabelsMagic = 0x00000801;

    // Larger sizes than these mean a corrupt header, not a real data set.
    const int MaxSide = 1 << 16;

    /// <summary>Reads an image file (gzipped or raw) and checks magic number, dimensions and length.</summary>
    /// <param name="path">The file.</param>
    /// <param name="howToGet">Appended to error messages: how the user obtains the data.</param>
    /// <exception cref="DatasetException">The file is missing, truncated, too long or not an IDX image file.</exception>
    public static IdxImages ReadImages(string path, string? howToGet = null)
    {
        using var stream = Open(path, "IDX image", howToGet);
        var header = ReadHeader(stream, path, "image", ImagesMagic, "3 dimensions", "count, rows, columns", 16, howToGet);
        var count = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
        var rows = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(8));
        var cols = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(12));
        if (count < 0 || rows <= 0 || cols <= 0 || rows > MaxSide || cols > MaxSide || (long)count * rows * cols > Array.MaxLength)
            throw Fail(path, $"corrupt IDX image header: count {count}, rows {rows}, columns {cols} (expected a non-negative count and sides between 1 and {MaxSide})", howToGet);
        var record = (long)rows * cols;
        var pixels = new byte[count * record];
        var got = ReadFully(stream, pixels, path, howToGet);
        if (got < pixels.Length)
            throw Fail(path, $"truncated IDX image file: the header announces {count} images of {rows}x{cols} ({record} bytes each, {16 + pixels.LongLength} bytes in all) but the file holds {16 + got} bytes (room for {got / record} images)", howToGet);
        ExpectEnd(stream, path, $"{count} images of {rows}x{cols} ({record} bytes each, {16 + pixels.LongLength} bytes in all)", howToGet);
        return new IdxImages(count, rows, cols, pixels);
    }

    /// <summary>Reads a label file (gzipped or raw) and checks magic number and length.</summary>
    /// <param name="path">The file.</param>
    /// <param name="howToGet">Appended to error messages: how the user obtains the data.</param>
    /// <exception cref="DatasetException">The file is missing, truncated, too long or not an IDX label file.</exception>
    public static byte[] ReadLabels(string path, string? howToGet = null)
    {
        using var stream = Open(path, "IDX label", howToGet);
        var header = ReadHeader(stream, path, "label", LabelsMagic, "1 dimension", "count", 8, howToGet);
        var count = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
        if (count < 0)
            throw Fail(path, $"corrupt IDX label header: count {count}", howToGet);
        var labels = new byte[count];
        var got = ReadFully(stream, labels, path, howToGet);
        if (got < labels.Length)
            throw Fail(path, $"truncated IDX label file: the header announces {count} labels (1 byte each, {8L + count} bytes in all) but the file holds {8 + got} bytes", howToGet);
        ExpectEnd(stream, path, $"{count} labels (1 byte each, {8L + count} bytes in all)", howToGet);
        return labels;
    }

    /// <summary>Writes an IDX image file (magic 2051), gzipped when <paramref name="gzip"/> is set.</summary>
    /// <param name="path">Destination (overwritten).</param>
    /// <param name="pixels">count·rows·columns bytes, image after image.</param>
    /// <param name="count">Number of images.</param>
    /// <param name="rows">Image height.</param>
    /// <param name="columns">Image width.</param>
    /// <param name="gzip">Compress with gzip.</param>
    public static void WriteImages(string path, ReadOnlySpan<byte> pixels, int count, int rows, int columns, bool gzip = false)
    {
        if ((long)count * rows * columns != pixels.Length)
            throw new ArgumentException($"{pixels.Length} pixel bytes do not make {count} images of {rows}x{columns}");
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteInt32BigEndian(header, ImagesMagic);
        BinaryPrimitives.WriteInt32BigEndian(header[4..], count);
        BinaryPrimitives.WriteInt32BigEndian(header[8..], rows);
        BinaryPrimitives.WriteInt32BigEndian(header[12..], columns);
        Write(path, header, pixels, gzip);
    }

    /// <summary>Writes an IDX label file (magic 2049), gzipped when <paramref name="gzip"/> is set.</summary>
    /// <param name="path">Destination (overwritten).</param>
    /// <param name="labels">One byte per label.</param>
    /// <param name="gzip">Compress with gzip.</param>
    public static void WriteLabels(string path, ReadOnlySpan<byte> labels, bool gzip = false)
    {
        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(header, LabelsMagic);
        BinaryPrimitives.WriteInt32BigEndian(header[4..], labels.Length);
        Write(path, header, labels, gzip);
    }

    /// <summary>True when the file starts with the gzip magic bytes 1f 8b.</summary>
    public static bool IsGzip(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[2];
        return f.ReadAtLeast(magic, 2, throwOnEndOfStream: false) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    }

    static void Write(string path, ReadOnlySpan<byte> header, ReadOnlySpan<byte> body, bool gzip)
    {
        using var file = File.Create(path);
        using Stream s = gzip ? new GZipStream(file, CompressionLevel.Fastest) : file;
        s.Write(header);
        s.Write(body);
    }

    static Stream Open(string path, string kind, string? howToGet)
    {
        if (!File.Exists(path))
            throw Fail(path, $"{kind} file not found", howToGet);
        try
        {
            return IsGzip(path)
                ? new GZipStream(new BufferedStream(File.OpenRead(path), 1 << 16), CompressionMode.Decompress)
                : new BufferedStream(File.OpenRead(path), 1 << 16);
        }
        catch (IOException e)
        {
            throw Fail(path, $"cannot open {kind} file: {e.Message}", howToGet, e);
        }
    }

    // Reads until the buffer is full or the stream ends; a broken gzip stream becomes a DatasetException.
    /// <summary>
    /// The <paramref name="size"/>-byte header of an IDX <paramref name="kind"/> file, checked for the
    /// magic number first (a wrong file type is the more useful message than its length), then for its length.
    /// </summary>
    static byte[] ReadHeader(Stream stream, string path, string kind, int expected, string dimensions, string fields, int size, string? howToGet)
    {
        var header = new byte[size];
        var got = ReadFully(stream, header, path, howToGet);
        var magic = got >= 4 ? BinaryPrimitives.ReadInt32BigEndian(header) : expected;
        if (magic != expected)
            throw Fail(path, $"not an IDX {kind} file: magic number {magic} (0x{magic:x8}) where {expected} (0x{expected:x8}: unsigned bytes, {dimensions}) was expected{Hint(magic)}", howToGet);
        if (got < size)
            throw Fail(path, $"truncated IDX {kind} file: {got} bytes, shorter than the {size}-byte header (magic {expected}, {fields})", howToGet);
        return header;
    }

    static int ReadFully(Stream s, byte[] buffer, string path, string? howToGet)
    {
        try
        {
            return s.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw Fail(path, $"corrupt or truncated gzip data: {e.Message}", howToGet, e);
        }
    }

    static void ExpectEnd(Stream s, string path, string expected, string? howToGet)
    {
        var extra = new byte[1];
        if (ReadFully(s, extra, path, howToGet) != 0)
            throw Fail(path, $"file is longer than its header announces: {expected}; it may be corrupt or a different format", howToGet);
    }

    // Little-endian readers of the big-endian header see byte-swapped magic numbers.
    static string Hint(int magic) =>
        magic == BinaryPrimitives.ReverseEndianness(ImagesMagic) || magic == BinaryPrimitives.ReverseEndianness(LabelsMagic)
            ? " (the bytes are swapped: the file was written little-endian)"
            : magic == LabelsMagic ? " (this is a label file)"
            : magic == ImagesMagic ? " (this is an image file)"
            : "";

    static DatasetException Fail(string path, string what, string? howToGet, Exception? inner = null) =>
        new($"{path}: {what}.{(howToGet is null ? "" : " " + howToGet)}", path, inner);
}
