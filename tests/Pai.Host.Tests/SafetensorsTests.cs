using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace Pai.Host.Tests;

public class SafetensorsTests
{
    /// <summary>Named tensors owned by a test, disposed with the list.</summary>
    sealed class OwnedTensors : List<(string Name, Tensor Tensor)>, IDisposable
    {
        public void Dispose()
        {
            foreach (var (_, t) in this) t.Dispose();
        }
    }

    // One tensor of every supported dtype, including a scalar and an empty tensor.
    static OwnedTensors EveryDType()
    {
        using var g = new Generator(3);
        return
        [
            ("layer.weight", Libtorch.Randn([3, 4], g).DetachFromScope()),
            ("f64", (Libtorch.Randn([5], g, DType.Float64) * 1e10).DetachFromScope()),
            ("i64", Libtorch.FromArray(new long[] { long.MinValue, -1, 0, 1L << 40, long.MaxValue, 7 }, [2, 3]).DetachFromScope()),
            ("i32", Libtorch.FromArray(new[] { int.MinValue, -5, 0, int.MaxValue }, [2, 1, 2]).DetachFromScope()),
            ("u8", Libtorch.FromArray(new byte[] { 0, 1, 127, 128, 255 }).DetachFromScope()),
            ("mask", Libtorch.FromArray(new[] { true, false, false, true, true, false }, [3, 2]).DetachFromScope()),
            ("scalar", Libtorch.Scalar(2.5).DetachFromScope()),
            ("empty", Libtorch.Zeros([0, 3]).DetachFromScope()),
        ];
    }

    [Fact]
    public void Every_dtype_round_trips_with_metadata()
    {
        using var dir = new TempDirectory();
        var path = dir.File("all.safetensors");
        using var tensors = EveryDType();
        Safetensors.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["criterion"] = "snip ✓" });
        var length = BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path).AsSpan(0, 8));
        Assert.Equal(0UL, length % 8);

        using var loaded = Safetensors.Load(path);
        Assert.Equal(tensors.Select(t => t.Name).Order(), loaded.Names.Order());
        foreach (var (name, t) in tensors)
        {
            var back = loaded[name];
            Assert.Equal(t.DType, back.DType);
            Assert.Equal(t.Shape, back.Shape);
            Assert.True(t.Equal(back), name);
        }
        Assert.Equal("snip ✓", loaded.Metadata["criterion"]);
        Assert.Equal("pt", loaded.Metadata["format"]);

        // laid out by decreasing element size, so every tensor is aligned to its element size
        var header = Safetensors.ReadHeader(path);
        Assert.All(header.Entries, e => Assert.Equal(0, (header.DataStart + e.Begin) % e.DType.ElementSize()));
    }

    [Fact]
    public void Pytorch_reads_our_file_by_hand()
    {
        using var dir = new TempDirectory();
        var path = dir.File("ours.safetensors");
        using var tensors = EveryDType();
        Safetensors.Save(path, tensors, new Dictionary<string, string> { ["pai"] = "1" });
        var output = Python.Run("""
            import json, struct, sys, torch
            raw = open(sys.argv[1], 'rb').read()
            (n,) = struct.unpack('<Q', raw[:8])
            header = json.loads(raw[8:8 + n].decode('utf-8'))
            data = bytearray(raw[8 + n:])
            dtypes = {'F32': torch.float32, 'F64': torch.float64, 'I64': torch.int64, 'I32': torch.int32, 'U8': torch.uint8, 'BOOL': torch.bool}
            out = {'__metadata__': header.pop('__metadata__', {})}
            for name, e in header.items():
                b, end = e['data_offsets']
                dt = dtypes[e['dtype']]
                if end > b:
                    t = torch.frombuffer(data, dtype=dt, count=(end - b) // torch.empty((), dtype=dt).element_size(), offset=b).reshape(e['shape'])
                else:
                    t = torch.empty(e['shape'], dtype=dt)
                vals = t.flatten().tolist()
                out[name] = {'dtype': str(t.dtype), 'shape': list(t.shape), 'values': [repr(v) for v in vals]}
            print(json.dumps(out))
            """, path);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("1", root.GetProperty("__metadata__").GetProperty("pai").GetString());
        foreach (var (name, t) in tensors)
        {
            var e = root.GetProperty(name);
            Assert.Equal(t.Shape, e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()));
            Assert.Equal("torch." + t.DType switch
            {
                DType.Float32 => "float32", DType.Float64 => "float64", DType.Int64 => "int64",
                DType.Int32 => "int32", DType.UInt8 => "uint8", _ => "bool",
            }, e.GetProperty("dtype").GetString());
            var got = e.GetProperty("values").EnumerateArray().Select(x => x.GetString()!).ToArray();
            // Python's repr of a float is the shortest round-tripping decimal, as is .NET's "R"
            string[] expected = t.DType switch
            {
                DType.Float32 => t.ToArray<float>().Select(v => ((double)v).ToString("R")).ToArray(),
                DType.Float64 => t.ToArray<double>().Select(v => v.ToString("R")).ToArray(),
                DType.Int64 => t.ToArray<long>().Select(v => v.ToString()).ToArray(),
                DType.Int32 => t.ToArray<int>().Select(v => v.ToString()).ToArray(),
                DType.UInt8 => t.ToArray<byte>().Select(v => v.ToString()).ToArray(),
                _ => t.ToArray<bool>().Select(v => v ? "True" : "False").ToArray(),
            };
            Assert.Equal(expected.Select(Canon), got.Select(Canon));
        }
    }

    // Python writes 1e+20 where .NET writes 1E+20: compare numbers by value, others as text.
    static string Canon(string s) =>
        (s.Contains('.') || s.Contains('e') || s.Contains('E')) && double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var d)
            ? d.ToString("R", System.Globalization.CultureInfo.InvariantCulture) : s;

    [Fact]
    public void We_read_a_file_pytorch_wrote_by_hand()
    {
        using var dir = new TempDirectory();
        var path = dir.File("theirs.safetensors");
        Python.Run("""
            import json, struct, sys, torch
            tensors = {
                'conv.weight': torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) * 0.5 - 3,
                'bn.running_var': torch.tensor([1.5, 2.25, 1e-300], dtype=torch.float64),
                'bn.num_batches_tracked': torch.tensor(1 << 40, dtype=torch.int64),
                'idx': torch.tensor([[-7, 8], [9, -10]], dtype=torch.int32),
                'pixels': torch.tensor([0, 200, 255], dtype=torch.uint8),
                'mask': torch.tensor([[True, False, True]]),
            }
            header, blobs, off = {'__metadata__': {'format': 'pt', 'writer': 'python'}}, [], 0
            for name, t in tensors.items():
                b = t.contiguous().view(torch.uint8).flatten().tolist() if t.dim() > 0 else t.reshape(1).view(torch.uint8).tolist()
                b = bytes(b)
                code = {torch.float32: 'F32', torch.float64: 'F64', torch.int64: 'I64', torch.int32: 'I32', torch.uint8: 'U8', torch.bool: 'BOOL'}[t.dtype]
                header[name] = {'dtype': code, 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
                blobs.append(b); off += len(b)
            h = json.dumps(header, sort_keys=True).encode('utf-8')   # not padded: padding is optional
            with open(sys.argv[1], 'wb') as f:
                f.write(struct.pack('<Q', len(h))); f.write(h); f.write(b''.join(blobs))
            """, path);
        using var file = Safetensors.Load(path);
        Assert.Equal("python", file.Metadata["writer"]);
        var w = file["conv.weight"];
        Assert.Equal([2L, 3, 2, 2], w.Shape);
        Assert.Equal(Enumerable.Range(0, 24).Select(i => i * 0.5f - 3), w.ToArray<float>());
        Assert.Equal([1.5, 2.25, 1e-300], file["bn.running_var"].ToArray<double>());
        Assert.Empty(file["bn.num_batches_tracked"].Shape);
        Assert.Equal(1L << 40, file["bn.num_batches_tracked"].ItemLong());
        Assert.Equal([-7, 8, 9, -10], file["idx"].ToArray<int>());
        Assert.Equal(new byte[] { 0, 200, 255 }, file["pixels"].ToArray<byte>());
        Assert.Equal([true, false, true], file["mask"].ToArray<bool>());
        Assert.Equal([1L, 3], file["mask"].Shape);
    }

    [Fact]
    public void A_failing_write_leaves_the_old_file_intact()
    {
        using var dir = new TempDirectory();
        var path = dir.File("model.safetensors");
        using var scope = new DisposeScope();
        var old = Libtorch.Full([4], 1.0);
        Safetensors.Save(path, [("w", old)]);
        var before = File.ReadAllBytes(path);

        Safetensors.AfterTensorWritten = name => throw new IOException($"disk full after {name}");
        try
        {
            var e = Assert.Throws<IOException>(() => Safetensors.Save(path, [("w", Libtorch.Full([1000], 2.0)), ("b", Libtorch.Full([10], 3.0))]));
            Assert.Contains("disk full", e.Message);
        }
        finally
        {
            Safetensors.AfterTensorWritten = null;
        }
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["model.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));

        // and a successful write replaces it
        Safetensors.Save(path, [("w", Libtorch.Full([2], 5.0))]);
        using var loaded = Safetensors.Load(path);
        Assert.Equal([5f, 5f], loaded["w"].ToArray<float>());
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Bad_names_are_rejected_before_writing()
    {
        using var dir = new TempDirectory();
        using var scope = new DisposeScope();
        var t = Libtorch.Zeros([1]);
        Assert.Throws<ArgumentException>(() => Safetensors.Save(dir.File("x"), [("a", t), ("a", t)]));
        Assert.Throws<ArgumentException>(() => Safetensors.Save(dir.File("x"), [("__metadata__", t)]));
        Assert.Throws<ArgumentException>(() => Safetensors.Save(dir.File("x"), [("", t)]));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    // A file with a hand-written header (padded to 8) and the given data bytes.
    static void WriteRaw(string path, string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
        File.WriteAllBytes(path, [.. len, .. h, .. data]);
    }

    [Fact]
    public void Corrupt_files_are_rejected_with_the_tensor_named()
    {
        using var dir = new TempDirectory();
        var p = dir.File("bad.safetensors");
        string Err(Action a) => Assert.Throws<CheckpointException>(a).Message;

        WriteRaw(p, """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""", new byte[12]);
        var m = Err(() => Safetensors.Load(p));
        Assert.Contains("'w'", m);
        Assert.Contains("run past the 12 bytes", m);

        WriteRaw(p, """{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}""", new byte[16]);
        m = Err(() => Safetensors.Load(p));
        Assert.Contains("'w'", m);
        Assert.Contains("needs 24", m);

        WriteRaw(p, """{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}""", new byte[4]);
        Assert.Contains("dtype F16", Err(() => Safetensors.Load(p)));

        WriteRaw(p, """{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}""", new byte[6]);
        Assert.Contains("overlap", Err(() => Safetensors.Load(p)));

        WriteRaw(p, """{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}""", new byte[9]);
        Assert.Contains("cover 4 bytes", Err(() => Safetensors.Load(p)));

        WriteRaw(p, """{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]""", new byte[4]);
        Assert.Contains("not valid JSON", Err(() => Safetensors.Load(p)));

        WriteRaw(p, """{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}""", [1, 7]);
        Assert.Contains("byte value 7", Err(() => Safetensors.Load(p)));

        File.WriteAllBytes(p, [200, 0, 0, 0, 0, 0, 0, 0, (byte)'{']);
        Assert.Contains("truncated", Err(() => Safetensors.Load(p)));

        File.WriteAllBytes(p, [1, 2, 3]);
        Assert.Contains("shorter than the 8-byte header", Err(() => Safetensors.Load(p)));

        Assert.Contains("not found", Err(() => Safetensors.Load(dir.File("absent"))));
    }

    [Fact]
    public void A_truncated_real_file_is_rejected()
    {
        using var dir = new TempDirectory();
        var p = dir.File("t.safetensors");
        using (var tensors = EveryDType()) Safetensors.Save(p, tensors);
        var e = Bytes.TruncatedFileError<CheckpointException>(p, ..^3, f => Safetensors.Load(f));
        Assert.Contains("bytes", e.Message);
        Assert.Equal(p, e.Path);
    }

    [Fact]
    public void Expected_tensors_are_checked_by_name_shape_and_dtype()
    {
        using var dir = new TempDirectory();
        var p = dir.File("m.safetensors");
        using var scope = new DisposeScope();
        Safetensors.Save(p, [("fc.weight", Libtorch.Zeros([10, 100])), ("fc.bias", Libtorch.Zeros([10])), ("extra", Libtorch.Zeros([1]))]);

        var m = Assert.Throws<CheckpointException>(() => Safetensors.Load(p,
        [
            new TensorSpec("fc.weight", DType.Float32, [100, 300]),
            new TensorSpec("fc.bias", DType.Float64, [10]),
            new TensorSpec("fc2.weight", DType.Float32, [3]),
        ])).Message;
        Assert.Contains("'fc.weight' is F32 [10, 100] in the file but F32 [100, 300] is expected", m);
        Assert.Contains("'fc.bias' is F32 [10] in the file but F64 [10] is expected", m);
        Assert.Contains("'fc2.weight' is missing", m);
        Assert.Contains("unexpected tensor 'extra'", m);

        using var ok = Safetensors.Load(p, [new TensorSpec("fc.bias", DType.Float32, [10])], strict: false);
        Assert.True(ok.Contains("extra"));
    }

    [Fact]
    public void Load_into_restores_parameters_in_place_or_changes_nothing()
    {
        using var dir = new TempDirectory();
        var p = dir.File("params.safetensors");
        using var scope = new DisposeScope();
        using var g = new Generator(1);
        var savedW = Libtorch.Randn([3, 2], g);
        var savedMask = Libtorch.FromArray(new[] { true, false, true });
        Safetensors.Save(p, [("w", savedW), ("mask", savedMask)], new Dictionary<string, string> { ["epoch"] = "3" });

        var w = Libtorch.Zeros([3, 2]).RequiresGrad_(); // a leaf parameter: in-place copy needs no-grad
        var mask = Libtorch.Zeros([3], DType.Bool);
        var meta = Safetensors.LoadInto(p, [("w", w), ("mask", mask)]);
        Assert.Equal("3", meta["epoch"]);
        Assert.True(w.Equal(savedW));
        Assert.True(mask.Equal(savedMask));
        Assert.True(w.RequiresGrad);

        var wrong = Libtorch.Zeros([2, 3]);
        var untouched = Libtorch.Zeros([3], DType.Bool);
        var e = Assert.Throws<CheckpointException>(() => Safetensors.LoadInto(p, [("mask", untouched), ("w", wrong)]));
        Assert.Contains("'w' is F32 [3, 2] in the file but F32 [2, 3] is expected", e.Message);
        Assert.Equal(0, untouched.CountNonZero());
        Assert.Equal(0, wrong.CountNonZero());
    }
}
