using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Errors, version, threads, seeds, generators, devices (native/src/runtime.cpp); the CPU allocator
// (native/src/allocator.cpp).
internal static partial class NativeMethods
{
    const string Lib = NativeLibraryLoader.LibraryName;

    [DllImport(Lib)] internal static extern IntPtr pai_last_error();
    [DllImport(Lib)] internal static extern void pai_clear_error();
    [DllImport(Lib)] internal static extern IntPtr pai_torch_version();
    [DllImport(Lib)] internal static extern int pai_get_num_threads();
    [DllImport(Lib)] internal static extern int pai_set_num_threads(int n);
    [DllImport(Lib)] internal static extern int pai_get_num_interop_threads();
    [DllImport(Lib)] internal static extern int pai_blas_num_threads();
    [DllImport(Lib)] internal static extern void pai_release_free_memory();
    [DllImport(Lib)] internal static extern long pai_cpu_cache_bytes();
    [DllImport(Lib)] internal static extern void pai_cpu_keep_begin();
    [DllImport(Lib)] internal static extern void pai_cpu_keep_end();
    [DllImport(Lib)] internal static extern IntPtr pai_parallel_info();
    [DllImport(Lib)] internal static extern IntPtr pai_getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport(Lib)] internal static extern int pai_manual_seed(ulong seed);
    [DllImport(Lib)] internal static extern byte pai_cuda_is_available();
    [DllImport(Lib)] internal static extern int pai_cuda_device_count();
    [DllImport(Lib)] internal static extern long pai_cuda_runtime_version();
    [DllImport(Lib)] internal static extern long pai_cudnn_version();
    [DllImport(Lib)] internal static extern IntPtr pai_generator_new(ulong seed);
    [DllImport(Lib)] internal static extern void pai_generator_dispose(IntPtr g);
    [DllImport(Lib)] internal static extern ulong pai_generator_initial_seed(GeneratorHandle g);

    /// <summary>Throws the pending native error, if any, as a <see cref="TorchException"/>.</summary>
    internal static void ThrowIfError()
    {
        var p = pai_last_error();
        if (p == IntPtr.Zero) return;
        var message = Marshal.PtrToStringUTF8(p) ?? "unknown native error";
        pai_clear_error();
        throw new TorchException(message);
    }

    /// <summary>Checks a status code (0 ok, -1 error) from an in-place or void call.</summary>
    internal static void Check(int status)
    {
        if (status != 0) ThrowIfError();
    }
}
