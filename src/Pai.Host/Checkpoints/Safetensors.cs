using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

[assembly: InternalsVisibleTo("Pai.Host.Tests")]

namespace Pai.Host.Checkpoints;

/// <summary>A checkpoint file is missing, malformed, or does not match what the caller expects.</summary>
public sealed class CheckpointException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="path">The checkpoint file.</param>
    /// <param name="message">What is wrong (the path is prefixed).</param>
    /// <param name="inner">The underlying error, if any.</param>
    public CheckpointException(string path, string message, Exception? inner = null) : base($"{path}: {message}", inner)
    {
        Path = path;
    }

    /// <summary>The checkpoint file.</summary>
    public string Path { get; }
}

/// <summary>The name, dtype and shape a tensor is expected to have.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Sizes of the dimensions.</param>
public sealed record TensorSpec(string Name, DType DType, IReadOnlyList<long> Shape)
{
    /// <summary>The spec of an existing tensor.</summary>
    public static TensorSpec Of(string name, Tensor tensor) => new(name, tensor.DType, tensor.Shape);
}

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Sizes of the dimensions.</param>
/// <param name="Begin">Start of the data, in bytes from the start of the data section.</param>
/// <param name="End">End (exclusive) of the data, in bytes from the start of the data section.</param>
public sealed record SafetensorsEntry(string Name, DType DType, IReadOnlyList<long> Shape, long Begin, long End);

/// <summary>A parsed and validated safetensors header.</summary>
/// <param name="Entries">Tensor entries in data order.</param>
/// <param name="Metadata">The "__metadata__" strings (empty when absent).</param>
/// <param name="DataStart">File offset of the data section (8 + header length).</param>
public sealed record SafetensorsHeader(IReadOnlyList<SafetensorsEntry> Entries, IReadOnlyDictionary<string, string> Metadata, long DataStart)
{
    /// <summary>The entry named <paramref name="name"/>, or null.</summary>
    public SafetensorsEntry? Find(string name) => Entries.FirstOrDefault(e => e.Name == name);
}

/// <summary>Tensors loaded from a file. They are owned by this object (outside every dispose scope) and freed by <see cref="Dispose"/>; detach one from it with <see cref="Take"/>.</summary>
public sealed class TensorFile : IDisposable
{
    readonly List<(string Name, Tensor Tensor)> tensors;
    readonly Dictionary<string, Tensor> byName;

    internal TensorFile(List<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        this.tensors = tensors;
        byName = tensors.ToDictionary(t => t.Name, t => t.Tensor);
        Metadata = metadata;
    }

    /// <summary>The tensors in file order.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Tensors => tensors;

    /// <summary>The "__metadata__" strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in file order.</summary>
    public IEnumerable<string> Names => tensors.Select(t => t.Name);

    /// <summary>The tensor named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message lists the names present.</exception>
    public Tensor this[string name] =>
        byName.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"no tensor '{name}' in the file; it holds {string.Join(", ", Names)}");

    /// <summary>Whether a tensor of that name was loaded.</summary>
    public bool Contains(string name) => byName.ContainsKey(name);

    /// <summary>Removes a tensor from this file's ownership: the caller now owns (and disposes) it.</summary>
    public Tensor Take(string name)
    {
        var t = this[name];
        byName.Remove(name);
        tensors.RemoveAll(p => p.Name == name);
        return t;
    }

    /// <summary>Frees every tensor still owned.</summary>
    public void Dispose()
    {
        foreach (var (_, t) in tensors) t.Dispose();
    }
}

/// <summary>
/// Reads and writes named tensors (weights, buffers, masks) in the safetensors format, which
/// PyTorch users read without Pai: an 8-byte little-endian header length N, N bytes of JSON
/// (<c>{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}</c>,
/// padded with spaces to a multiple of 8), then the little-endian data. Supported dtypes: F32, F64,
/// I64, I32, U8, BOOL. Writes are atomic (<see cref="OutputFile.WriteAtomically"/>), so a crash leaves
/// either the old or the new file.
/// </summary>
public static class Safetensors
{
    /// <summary>The key of the optional string-to-string metadata object in the header.</summary>
    public const string MetadataKey = "__metadata__";

    // The reference implementation's header limit; larger means a corrupt length field.
    const long MaxHeaderBytes = 100_000_000;

    /// <summary>Test hook: called after each tensor's data is written to the temporary file.</summary>
    internal static Action<string>? AfterTensorWritten;

    /// <summary>The safetensors dtype code of a Pai dtype ("F32", "F64", "I64", "I32", "U8", "BOOL").</summary>
    public static string DTypeCode(DType dtype) => dtype switch
    {
        DType.Float32 => "F32",
        DType.Float64 => "F64",
        DType.Int64 => "I64",
        DType.Int32 => "I32",
        DType.UInt8 => "U8",
        DType.Bool => "BOOL",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no safetensors code for this dtype"),
    };

    /// <summary>The Pai dtype of a safetensors dtype code, or null when Pai does not support it.</summary>
    public static DType? ParseDType(string code) => code switch
    {
        "F32" => DType.Float32,
        "F64" => DType.Float64,
        "I64" => DType.Int64,
        "I32" => DType.Int32,
        "U8" => DType.UInt8,
        "BOOL" => DType.Bool,
        _ => null,
    };

    // ---- writing ------------------------------------------------------------------------------

    /// <summary>
    /// Writes named tensors (any device; copied to the CPU) and optional metadata to
    /// <paramref name="path"/>, atomically replacing any existing file. Tensors are laid out by
    /// decreasing element size (then in the given order) so every tensor's data is aligned.
    /// </summary>
    /// <param name="path">Destination file.</param>
    /// <param name="tensors">Names (unique, non-empty, not "__metadata__") and tensors.</param>
    /// <param name="metadata">Optional strings stored under "__metadata__".</param>
    /// <exception cref="ArgumentException">A name is empty, repeated or reserved, or a tensor is disposed.</exception>
    public static void Save(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        RequireLittleEndian();
        var items = tensors.Select(p => (Name: p.Name, Tensor: p.Tensor)).ToList();
        var seen = new HashSet<string>();
        foreach (var (name, t) in items)
        {
            if (string.IsNullOrEmpty(name)) throw new ArgumentException("tensor names must not be empty", nameof(tensors));
            if (name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved for metadata and cannot name a tensor", nameof(tensors));
            if (!seen.Add(name)) throw new ArgumentException($"tensor name '{name}' appears twice", nameof(tensors));
            if (t is null || t.IsDisposed) throw new ArgumentException($"tensor '{name}' is null or already disposed", nameof(tensors));
        }
        // Stable sort by element size, largest first: every tensor then starts aligned to its element size.
        var ordered = items.Select((p, i) => (p.Name, p.Tensor, DType: p.Tensor.DType, Shape: p.Tensor.Shape, Index: i))
            .OrderByDescending(p => p.DType.ElementSize()).ThenBy(p => p.Index).ToList();

        var header = new MemoryStream();
        long offset = 0;
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            foreach (var p in ordered)
            {
                var bytes = NumEl(p.Shape) * p.DType.ElementSize();
                json.WriteStartObject(p.Name);
                json.WriteString("dtype", DTypeCode(p.DType));
                json.WriteStartArray("shape");
                foreach (var s in p.Shape) json.WriteNumberValue(s);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');

        OutputFile.WriteAtomically(path, f =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            f.Write(len);
            header.Position = 0;
            header.CopyTo(f);
            foreach (var p in ordered)
            {
                WriteData(f, p.Tensor, p.DType);
                AfterTensorWritten?.Invoke(p.Name);
            }
        });
    }

    static void WriteData(Stream f, Tensor t, DType dtype)
    {
        if (!HasRawBytes(dtype)) throw new NotSupportedException($"dtype {dtype} cannot be saved");
        f.Write(RawBytes(t));
    }

    /// <summary>Whether <see cref="RawBytes"/> reads tensors of <paramref name="dtype"/>.</summary>
    internal static bool HasRawBytes(DType dtype) =>
        dtype is DType.Float32 or DType.Float64 or DType.Int64 or DType.Int32 or DType.UInt8 or DType.Bool;

    /// <summary>A CPU tensor's elements as the raw (little-endian) bytes a file stores; see <see cref="HasRawBytes"/>.</summary>
    internal static ReadOnlySpan<byte> RawBytes(Tensor t) => t.DType switch
    {
        DType.Float32 => MemoryMarshal.AsBytes(t.ToArray<float>().AsSpan()),
        DType.Float64 => MemoryMarshal.AsBytes(t.ToArray<double>().AsSpan()),
        DType.Int64 => MemoryMarshal.AsBytes(t.ToArray<long>().AsSpan()),
        DType.Int32 => MemoryMarshal.AsBytes(t.ToArray<int>().AsSpan()),
        DType.UInt8 => t.ToArray<byte>(),
        DType.Bool => MemoryMarshal.AsBytes(t.ToArray<bool>().AsSpan()),
        _ => throw new NotSupportedException($"dtype {t.DType} has no raw byte layout here"),
    };

    static long NumEl(IReadOnlyList<long> shape)
    {
        long n = 1;
        foreach (var s in shape) n = checked(n * s);
        return n;
    }

    // ---- reading ------------------------------------------------------------------------------

    /// <summary>Reads and validates the header: length, JSON, dtypes, shapes, and offsets (within the file, consistent with dtype×shape, contiguous without overlap).</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="CheckpointException">Missing file or invalid header; the message names the tensor at fault.</exception>
    public static SafetensorsHeader ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new CheckpointException(path, "checkpoint file not found");
        using var f = File.OpenRead(path);
        return ReadHeader(path, f);
    }

    static SafetensorsHeader ReadHeader(string path, FileStream f)
    {
        var fileLength = f.Length;
        if (fileLength < 8)
            throw new CheckpointException(path, $"not a safetensors file: {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> len = stackalloc byte[8];
        f.ReadExactly(len);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointException(path, $"not a safetensors file: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)headerLength > fileLength - 8)
            throw new CheckpointException(path, $"truncated: the header length is {headerLength} bytes but only {fileLength - 8} bytes follow the length field");
        var headerBytes = new byte[headerLength];
        f.ReadExactly(headerBytes);
        var dataStart = 8 + (long)headerLength;
        var dataLength = fileLength - dataStart;

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, $"the header is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(path, $"the header must be a JSON object, found {doc.RootElement.ValueKind}");
            var metadata = new Dictionary<string, string>();
            var entries = new List<SafetensorsEntry>();
            var names = new HashSet<string>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!names.Add(prop.Name))
                    throw new CheckpointException(path, $"the header names '{prop.Name}' twice");
                if (prop.Name == MetadataKey)
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new CheckpointException(path, $"'{MetadataKey}' must be an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new CheckpointException(path, $"metadata '{m.Name}' must be a string, found {m.Value.ValueKind}");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(path, prop, dataLength));
            }
            // The data section is the tensors back to back, with no gap, overlap or trailing bytes.
            var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            long expectedBegin = 0;
            SafetensorsEntry? previous = null;
            foreach (var e in sorted)
            {
                if (e.Begin < expectedBegin)
                    throw new CheckpointException(path, $"tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap tensor '{previous!.Name}' [{previous.Begin}, {previous.End}]");
                if (e.Begin > expectedBegin)
                    throw new CheckpointException(path, $"tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] leave a gap after byte {expectedBegin} of the data");
                expectedBegin = e.End;
                previous = e;
            }
            if (expectedBegin != dataLength)
                throw new CheckpointException(path, $"the tensors cover {expectedBegin} bytes of data but the file holds {dataLength} bytes after the header (file length {fileLength}); the file is corrupt");
            return new SafetensorsHeader(sorted, metadata, dataStart);
        }
    }

    static SafetensorsEntry ParseEntry(string path, JsonProperty prop, long dataLength)
    {
        var name = prop.Name;
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, $"tensor '{name}': expected an object with dtype, shape and data_offsets, found {v.ValueKind}");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new CheckpointException(path, $"tensor '{name}': missing or non-string \"dtype\"");
        var code = dt.GetString()!;
        var dtype = ParseDType(code)
            ?? throw new CheckpointException(path, $"tensor '{name}': dtype {code} is not supported (Pai reads F32, F64, I64, I32, U8, BOOL)");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new CheckpointException(path, $"tensor '{name}': missing or non-array \"shape\"");
        var shape = new List<long>();
        foreach (var s in sh.EnumerateArray())
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out var size) || size < 0)
                throw new CheckpointException(path, $"tensor '{name}': shape entries must be non-negative integers, found {s.GetRawText()}");
            shape.Add(size);
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new CheckpointException(path, $"tensor '{name}': \"data_offsets\" must be an array [begin, end]");
        var begin = Offset(path, name, off[0]);
        var end = Offset(path, name, off[1]);
        if (end < begin)
            throw new CheckpointException(path, $"tensor '{name}': data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength)
            throw new CheckpointException(path, $"tensor '{name}': data_offsets [{begin}, {end}] run past the {dataLength} bytes of data in the file (truncated?)");
        long expected;
        try
        {
            expected = checked(NumEl(shape) * dtype.ElementSize());
        }
        catch (OverflowException)
        {
            throw new CheckpointException(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        }
        if (end - begin != expected)
            throw new CheckpointException(path, $"tensor '{name}': data_offsets [{begin}, {end}] span {end - begin} bytes but {code} [{string.Join(", ", shape)}] needs {expected}");
        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    static long Offset(string path, string name, JsonElement e) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var v) && v >= 0 ? v
        : throw new CheckpointException(path, $"tensor '{name}': data offsets must be non-negative integers, found {e.GetRawText()}");

    /// <summary>
    /// Loads every tensor of a file as owned CPU tensors. With <paramref name="expected"/>, first
    /// checks that each expected tensor is present with the expected dtype and shape (and, when
    /// <paramref name="strict"/>, that the file holds nothing else), reporting every mismatch at once.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="expected">Tensors that must be present, with their dtype and shape (null: no check).</param>
    /// <param name="strict">With <paramref name="expected"/>: also reject tensors that are not expected.</param>
    /// <exception cref="CheckpointException">Missing or invalid file, or a mismatch with <paramref name="expected"/>.</exception>
    public static TensorFile Load(string path, IEnumerable<TensorSpec>? expected = null, bool strict = true)
    {
        RequireLittleEndian();
        if (!File.Exists(path)) throw new CheckpointException(path, "checkpoint file not found");
        using var f = File.OpenRead(path);
        var header = ReadHeader(path, f);
        if (expected is not null) Check(path, header, expected.ToList(), strict);
        var loaded = new List<(string Name, Tensor Tensor)>();
        try
        {
            foreach (var e in header.Entries)
                loaded.Add((e.Name, ReadTensor(path, f, header, e).DetachFromScope()));
        }
        catch
        {
            foreach (var (_, t) in loaded) t.Dispose();
            throw;
        }
        return new TensorFile(loaded, header.Metadata);
    }

    /// <summary>
    /// Restores tensors in place (a model's parameters and buffers, masks): validates names, dtypes
    /// and shapes against the targets before touching any of them, then copies each value into its
    /// target under no-grad (targets may live on any device).
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="targets">Names and the existing tensors to overwrite.</param>
    /// <param name="strict">Also reject tensors in the file that are not among the targets.</param>
    /// <returns>The file's metadata.</returns>
    /// <exception cref="CheckpointException">Missing or invalid file, or a mismatch; no target was changed.</exception>
    public static IReadOnlyDictionary<string, string> LoadInto(string path, IEnumerable<(string Name, Tensor Target)> targets, bool strict = true)
    {
        RequireLittleEndian();
        var list = targets.ToList();
        if (!File.Exists(path)) throw new CheckpointException(path, "checkpoint file not found");
        using var f = File.OpenRead(path);
        var header = ReadHeader(path, f);
        Check(path, header, list.Select(t => TensorSpec.Of(t.Name, t.Target)).ToList(), strict);
        using (Libtorch.NoGrad())
        {
            foreach (var (name, target) in list)
            {
                using var scope = new DisposeScope();
                var value = ReadTensor(path, f, header, header.Find(name)!);
                target.Copy_(value);
            }
        }
        return header.Metadata;
    }

    static void Check(string path, SafetensorsHeader header, List<TensorSpec> expected, bool strict)
    {
        var problems = new List<string>();
        foreach (var spec in expected)
        {
            var e = header.Find(spec.Name);
            if (e is null)
            {
                problems.Add($"tensor '{spec.Name}' is missing (expected {DTypeCode(spec.DType)} {ShapeText(spec.Shape)})");
                continue;
            }
            if (e.DType != spec.DType || !e.Shape.SequenceEqual(spec.Shape))
                problems.Add($"tensor '{spec.Name}' is {DTypeCode(e.DType)} {ShapeText(e.Shape)} in the file but {DTypeCode(spec.DType)} {ShapeText(spec.Shape)} is expected");
        }
        if (strict)
        {
            var wanted = expected.Select(s => s.Name).ToHashSet();
            foreach (var e in header.Entries)
                if (!wanted.Contains(e.Name))
                    problems.Add($"unexpected tensor '{e.Name}' ({DTypeCode(e.DType)} {ShapeText(e.Shape)})");
        }
        if (problems.Count > 0)
            throw new CheckpointException(path, $"does not match what was expected: {string.Join("; ", problems)}");
    }

    static string ShapeText(IReadOnlyList<long> shape) => $"[{string.Join(", ", shape)}]";

    static Tensor ReadTensor(string path, FileStream f, SafetensorsHeader header, SafetensorsEntry e)
    {
        var length = e.End - e.Begin;
        if (length > Array.MaxLength)
            throw new CheckpointException(path, $"tensor '{e.Name}' has {length} bytes, more than one read can hold");
        var bytes = new byte[length];
        f.Position = header.DataStart + e.Begin;
        try
        {
            f.ReadExactly(bytes);
        }
        catch (EndOfStreamException ex)
        {
            throw new CheckpointException(path, $"tensor '{e.Name}': the file ended while reading its data (truncated while loading?)", ex);
        }
        var shape = e.Shape.ToArray();
        switch (e.DType)
        {
            case DType.Float32: return Libtorch.FromArray(MemoryMarshal.Cast<byte, float>(bytes), shape);
            case DType.Float64: return Libtorch.FromArray(MemoryMarshal.Cast<byte, double>(bytes), shape);
            case DType.Int64: return Libtorch.FromArray(MemoryMarshal.Cast<byte, long>(bytes), shape);
            case DType.Int32: return Libtorch.FromArray(MemoryMarshal.Cast<byte, int>(bytes), shape);
            case DType.UInt8: return Libtorch.FromArray((ReadOnlySpan<byte>)bytes, shape);
            case DType.Bool:
                var bad = Array.FindIndex(bytes, b => b > 1);
                if (bad >= 0)
                    throw new CheckpointException(path, $"tensor '{e.Name}': BOOL element {bad} has byte value {bytes[bad]} (only 0 and 1 are valid)");
                return Libtorch.FromArray(MemoryMarshal.Cast<byte, bool>(bytes), shape);
            default:
                throw new CheckpointException(path, $"tensor '{e.Name}': dtype {e.DType} is not supported");
        }
    }

    static void RequireLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; Pai reads and writes it on little-endian machines only");
    }
}
