using System.Runtime.InteropServices;
using Pai.Torch.Native;
using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>Tensor factories and the libtorch runtime: version, threads, seeds, devices.</summary>
public static unsafe class Libtorch
{
    static Libtorch()
    {
        // Debian's libtorch starts with one intra-op thread; Pai's default is every core.
        SetNumThreads(Environment.ProcessorCount);
    }

    // ---- runtime -------------------------------------------------------------------------

    /// <summary>The libtorch version compiled into the shim (from torch/version.h).</summary>
    public static string Version => Marshal.PtrToStringUTF8(pai_torch_version()) ?? "unknown";

    /// <summary>Where libpai_torch.so was loaded from.</summary>
    public static string NativeLibraryPath
    {
        get
        {
            _ = Version; // forces the load
            return NativeLibraryLoader.LoadedFrom ?? "(not loaded)";
        }
    }

    /// <summary>
    /// Returns freed CPU memory to the operating system: the blocks the native allocator keeps for
    /// the next training step's reuse (<see cref="CpuCacheBytes"/>) and the heap's free pages. Call
    /// this after a one-off phase (such as the sparse kernels' calibration) so that its temporaries
    /// do not stay resident under what follows.
    /// </summary>
    public static void ReleaseFreeMemory() => pai_release_free_memory();

    /// <summary>
    /// Bytes of freed CPU tensor memory the native allocator keeps for reuse (<see cref="KeepFreedBlocks"/>).
    /// </summary>
    public static long CpuCacheBytes => pai_cpu_cache_bytes();

    /// <summary>
    /// Until the returned scope (and every other one open) is disposed, freed CPU tensor blocks of
    /// 256 KB to 64 MB are kept by size and handed out again to the next request of that size, up
    /// to <c>PAI_CPU_CACHE_MB</c> (default 1024, the oldest given back first; 0 turns keeping off,
    /// and so does <c>PAI_MALLOC_DEFAULTS=1</c>). For a loop that allocates the same sizes in every
    /// iteration, such as a training step: from the second iteration on, it runs in memory already
    /// resident, and its peak does not depend on the order of its sizes. Closing the last scope gives
    /// the kept blocks back.
    /// </summary>
    public static IDisposable KeepFreedBlocks()
    {
        pai_cpu_keep_begin();
        return new FreedBlockKeeping();
    }

    sealed class FreedBlockKeeping : IDisposable
    {
        int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0) pai_cpu_keep_end();
        }
    }

    /// <summary>Intra-op threads libtorch uses.</summary>
    public static int NumThreads
    {
        get
        {
            var n = pai_get_num_threads();
            if (n < 0) ThrowIfError();
            return n;
        }
    }

    /// <summary>Sets the intra-op thread count (must be at least 1).</summary>
    public static void SetNumThreads(int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "the thread count must be at least 1");
        Check(pai_set_num_threads(n));
    }

    /// <summary>
    /// Threads of OpenBLAS's own pool, which Debian's libtorch runs its matrix products on and
    /// <see cref="SetNumThreads"/> sizes too; 0 when this process has no OpenBLAS loaded (another
    /// BLAS behind libblas.so.3).
    /// </summary>
    public static int BlasThreads
    {
        get
        {
            _ = Version; // forces the load
            return pai_blas_num_threads();
        }
    }

    /// <summary>
    /// How idle pool threads wait, as the native side reads its environment: each of OpenMP's and
    /// OpenBLAS's settings with its value and whose it is, e.g. "OMP_WAIT_POLICY=PASSIVE (Pai's
    /// default), OPENBLAS_THREAD_TIMEOUT=4 (Pai's default)"; a value the user set is theirs ("yours").
    /// </summary>
    public static string WaitPolicy
    {
        get
        {
            _ = Version; // forces the load, which sets Pai's defaults
            return string.Join(", ", NativeLibraryLoader.WaitDefaults.Select(d =>
                Marshal.PtrToStringUTF8(pai_getenv(d.Name)) is { } value
                    ? $"{d.Name}={value} ({(NativeLibraryLoader.WaitSetByPai.Contains(d.Name) ? "Pai's default" : "yours")})"
                    : $"{d.Name} unset"));
        }
    }

    /// <summary>Inter-op threads libtorch uses.</summary>
    public static int NumInteropThreads => pai_get_num_interop_threads();

    /// <summary>libtorch's own description of its parallel backend (OpenMP, MKL, …).</summary>
    public static string ParallelInfo => Marshal.PtrToStringUTF8(pai_parallel_info()) ?? "";

    /// <summary>Seeds libtorch's global generator (prefer explicit <see cref="Generator"/>s).</summary>
    public static void ManualSeed(ulong seed) => Check(pai_manual_seed(seed));

    /// <summary>True when this libtorch build has CUDA and sees a GPU.</summary>
    public static bool CudaIsAvailable => pai_cuda_is_available() != 0;

    /// <summary>Number of visible CUDA devices.</summary>
    public static int CudaDeviceCount => pai_cuda_device_count();

    /// <summary>The CUDA runtime version libtorch was built with, as "12.4" (null without CUDA).</summary>
    public static string? CudaVersion => CudaVersionText(pai_cuda_runtime_version());

    /// <summary>The cuDNN version libtorch uses, as "9.1.0" (null without cuDNN).</summary>
    public static string? CudnnVersion => CudnnVersionText(pai_cudnn_version());

    /// <summary>CUDART's integer version (1000·major + 10·minor, e.g. 12040) as "12.4"; null for 0.</summary>
    public static string? CudaVersionText(long v) => v > 0 ? $"{v / 1000}.{v % 1000 / 10}" : null;

    /// <summary>cuDNN's integer version as "major.minor.patch" (10000·major + 100·minor + patch from 9.0, 1000·major + 100·minor + patch before); null for 0.</summary>
    public static string? CudnnVersionText(long v) =>
        v <= 0 ? null : v >= 90000 ? $"{v / 10000}.{v % 10000 / 100}.{v % 100}" : $"{v / 1000}.{v % 1000 / 100}.{v % 100}";

    /// <summary>
    /// The BLAS library libtorch's matrix products actually call, read from this process's memory
    /// map (so it reflects Debian's libblas.so.3 alternative as resolved at load time).
    /// </summary>
    public static string ActiveBlas
    {
        get
        {
            foreach (var path in MappedLibraries())
            {
                var name = Path.GetFileName(path);
                if (name.StartsWith("libblas.so") || name.StartsWith("libopenblas") || name.StartsWith("libmkl_rt") || name.StartsWith("libblis"))
                {
                    var kind = path.Contains("openblas") ? "OpenBLAS" : path.Contains("blis") ? "BLIS" : path.Contains("mkl") ? "MKL"
                        : path.Contains("/blas/") ? "reference BLAS (slow: apt-get install libopenblas0-pthread)" : "unknown BLAS";
                    return $"{kind} ({path})";
                }
            }
            return "no BLAS library mapped";
        }
    }

    /// <summary>The file of libtorch's own library (libtorch_cpu) this process loaded; null when it cannot be read.</summary>
    public static string? LoadedLibrary => MappedLibraries().FirstOrDefault(p => Path.GetFileName(p).StartsWith("libtorch_cpu.so"));

    // The files mapped into this process (libtorch loaded first), from /proc/self/maps; none where it is unreadable.
    static List<string> MappedLibraries()
    {
        _ = Version;
        try
        {
            return File.ReadLines("/proc/self/maps").Select(line => line.IndexOf('/') is var i and >= 0 ? line[i..] : null)
                .OfType<string>().Distinct().ToList();
        }
        catch (IOException) { return []; }
    }

    // ---- factories -------------------------------------------------------------------------

    /// <summary>A tensor with a copy of <paramref name="data"/> in the given shape.</summary>
    public static Tensor FromArray<T>(ReadOnlySpan<T> data, long[] shape, Device? device = null) where T : unmanaged
    {
        var dtype = DTypeOf<T>();
        long n = 1;
        foreach (var s in shape) n *= s;
        if (n != data.Length)
            throw new ArgumentException($"{data.Length} values do not fill shape [{string.Join(", ", shape)}] ({n} elements)");
        var d = device ?? Device.Cpu;
        fixed (T* p = data)
        fixed (long* s = shape)
            return Tensor.Wrap(pai_tensor_from_data(p, s, shape.Length, (int)dtype, (int)d.Type, d.Index));
    }

    /// <summary>A tensor with a copy of <paramref name="data"/> in the given shape.</summary>
    public static Tensor FromArray<T>(T[] data, long[] shape, Device? device = null) where T : unmanaged =>
        FromArray((ReadOnlySpan<T>)data, shape, device);

    /// <summary>A 1-d tensor with a copy of <paramref name="data"/>.</summary>
    public static Tensor FromArray<T>(T[] data, Device? device = null) where T : unmanaged =>
        FromArray((ReadOnlySpan<T>)data, [data.LongLength], device);

    /// <summary>A 0-d tensor holding one value.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32, Device? device = null) => Full([], value, dtype, device);

    /// <summary>The dtype matching a .NET element type.</summary>
    public static DType DTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? DType.Float32
        : typeof(T) == typeof(double) ? DType.Float64
        : typeof(T) == typeof(long) ? DType.Int64
        : typeof(T) == typeof(int) ? DType.Int32
        : typeof(T) == typeof(byte) ? DType.UInt8
        : typeof(T) == typeof(bool) ? DType.Bool
        : throw new NotSupportedException($"no tensor dtype for {typeof(T).Name}");

    delegate IntPtr ShapeFactory(long* shape, int ndim, int dtype, int deviceType, int deviceIndex);

    static Tensor Make(ShapeFactory f, long[] shape, DType dtype, Device? device)
    {
        var d = device ?? Device.Cpu;
        fixed (long* s = shape) return Tensor.Wrap(f(s, shape.Length, (int)dtype, (int)d.Type, d.Index));
    }

    /// <summary>Zeros.</summary>
    public static Tensor Zeros(long[] shape, DType dtype = DType.Float32, Device? device = null) => Make(pai_zeros, shape, dtype, device);
    /// <summary>Ones.</summary>
    public static Tensor Ones(long[] shape, DType dtype = DType.Float32, Device? device = null) => Make(pai_ones, shape, dtype, device);
    /// <summary>Uninitialized memory.</summary>
    public static Tensor Empty(long[] shape, DType dtype = DType.Float32, Device? device = null) => Make(pai_empty, shape, dtype, device);

    /// <summary>Every element equal to <paramref name="value"/>.</summary>
    public static Tensor Full(long[] shape, double value, DType dtype = DType.Float32, Device? device = null)
    {
        var d = device ?? Device.Cpu;
        fixed (long* s = shape) return Tensor.Wrap(pai_full(s, shape.Length, value, (int)dtype, (int)d.Type, d.Index));
    }

    /// <summary>start, start+step, … below end.</summary>
    public static Tensor Arange(double start, double end, double step = 1, DType dtype = DType.Int64, Device? device = null)
    {
        var d = device ?? Device.Cpu;
        return Tensor.Wrap(pai_arange(start, end, step, (int)dtype, (int)d.Type, d.Index));
    }

    /// <summary>Standard normal draws.</summary>
    public static Tensor Randn(long[] shape, Generator? generator = null, DType dtype = DType.Float32, Device? device = null) =>
        Draw(normal: true, shape, generator, dtype, device);

    /// <summary>Uniform draws in [0, 1).</summary>
    public static Tensor Rand(long[] shape, Generator? generator = null, DType dtype = DType.Float32, Device? device = null) =>
        Draw(normal: false, shape, generator, dtype, device);

    static Tensor Draw(bool normal, long[] shape, Generator? generator, DType dtype, Device? device)
    {
        var d = device ?? Device.Cpu;
        fixed (long* s = shape)
        {
            var g = Generator.RawOrZero(generator);
            var r = normal
                ? pai_randn(s, shape.Length, g, (int)dtype, (int)d.Type, d.Index)
                : pai_rand(s, shape.Length, g, (int)dtype, (int)d.Type, d.Index);
            GC.KeepAlive(generator);
            return Tensor.Wrap(r);
        }
    }

    /// <summary>Integers drawn uniformly from [low, high).</summary>
    public static Tensor RandInt(long low, long high, long[] shape, Generator? generator = null, DType dtype = DType.Int64, Device? device = null)
    {
        var d = device ?? Device.Cpu;
        fixed (long* s = shape)
        {
            var r = pai_randint(low, high, s, shape.Length, Generator.RawOrZero(generator), (int)dtype, (int)d.Type, d.Index);
            GC.KeepAlive(generator);
            return Tensor.Wrap(r);
        }
    }

    /// <summary>A random permutation of 0..n-1 (int64).</summary>
    public static Tensor RandPerm(long n, Generator? generator = null, Device? device = null)
    {
        var d = device ?? Device.Cpu;
        var r = pai_randperm(n, Generator.RawOrZero(generator), (int)d.Type, d.Index);
        GC.KeepAlive(generator);
        return Tensor.Wrap(r);
    }

    /// <summary>Elementwise Bernoulli draws with probabilities <paramref name="p"/>.</summary>
    public static Tensor Bernoulli(Tensor p, Generator? generator = null)
    {
        var r = pai_bernoulli(p.Handle, Generator.RawOrZero(generator));
        GC.KeepAlive(generator);
        return Tensor.Wrap(r);
    }

    /// <summary>Standard normal draws shaped like <paramref name="t"/>.</summary>
    public static Tensor RandnLike(Tensor t, Generator? generator = null)
    {
        var r = pai_randn_like(t.Handle, Generator.RawOrZero(generator));
        GC.KeepAlive(generator);
        return Tensor.Wrap(r);
    }

    /// <summary>Rademacher (±1 with equal probability) draws shaped like <paramref name="t"/>, in its dtype.</summary>
    public static Tensor RademacherLike(Tensor t, Generator? generator = null)
    {
        var r = pai_rand_like(t.Handle, Generator.RawOrZero(generator));
        GC.KeepAlive(generator);
        using var u = Tensor.Wrap(r);
        using var positive = u.Ge(0.5);
        using var plus = Full([], 1.0, t.DType, t.Device);
        using var minus = Full([], -1.0, t.DType, t.Device);
        return Tensor.Where(positive, plus, minus);
    }

    /// <summary>Concatenates along an existing dimension.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, long dim = 0) => Join(tensors, dim, stack: false);

    /// <summary>Stacks along a new dimension.</summary>
    public static Tensor Stack(IReadOnlyList<Tensor> tensors, long dim = 0) => Join(tensors, dim, stack: true);

    static Tensor Join(IReadOnlyList<Tensor> tensors, long dim, bool stack)
    {
        var ptrs = Raw(tensors);
        fixed (IntPtr* p = ptrs)
        {
            var r = stack ? pai_stack(p, ptrs.Length, dim) : pai_cat(p, ptrs.Length, dim);
            GC.KeepAlive(tensors);
            return Tensor.Wrap(r);
        }
    }

    internal static IntPtr[] Raw(IReadOnlyList<Tensor?> tensors)
    {
        var ptrs = new IntPtr[tensors.Count];
        for (var i = 0; i < ptrs.Length; i++)
        {
            var t = tensors[i];
            if (t is { IsDisposed: true }) throw new ObjectDisposedException(nameof(Tensor), $"tensor {i} of the list was already disposed");
            ptrs[i] = Tensor.RawOrZero(t);
        }
        return ptrs;
    }

    // ---- grad mode -------------------------------------------------------------------------

    /// <summary>Whether autograd records operations on this thread.</summary>
    public static bool IsGradEnabled => pai_grad_enabled() != 0;

    /// <summary>Disables gradient recording on this thread until disposed (then restores the previous mode).</summary>
    public static IDisposable NoGrad() => new GradModeGuard(false);

    /// <summary>Enables gradient recording on this thread until disposed (then restores the previous mode).</summary>
    public static IDisposable EnableGrad() => new GradModeGuard(true);

    sealed class GradModeGuard : IDisposable
    {
        readonly bool previous;
        bool done;
        public GradModeGuard(bool enabled)
        {
            previous = IsGradEnabled;
            pai_set_grad_enabled(enabled ? (byte)1 : (byte)0);
        }
        public void Dispose()
        {
            if (done) return;
            done = true;
            pai_set_grad_enabled(previous ? (byte)1 : (byte)0);
        }
    }
}
