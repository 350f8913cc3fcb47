using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

/// <summary>
/// Resolves libpai_torch.so explicitly and loudly (docs/architecture.md §3): next to this assembly, then
/// next to the application, then PAI_NATIVE_LIB, then the system search path. A failure names
/// what is missing and how to get it instead of a bare DllNotFoundException.
/// </summary>
internal static class NativeLibraryLoader
{
    internal const string LibraryName = "pai_torch";
    const string FileName = "libpai_torch.so";

    /// <summary>Where the native library was loaded from, once it has been.</summary>
    internal static string? LoadedFrom { get; private set; }

#pragma warning disable CA2255 // a library must register its resolver before its first P/Invoke
    [ModuleInitializer]
    internal static void Register() =>
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraryLoader).Assembly, Resolve);
#pragma warning restore CA2255

    /// <summary>
    /// The wait settings Pai gives libtorch's thread pools unless the user set them: idle OpenMP
    /// (libgomp) threads sleep instead of spinning, and OpenBLAS's sleep after 2⁴ cycles instead of
    /// yielding in a loop for 2²⁸ (about 0.1 s). On a machine whose cores other processes already
    /// take, spinning threads compete with the ones doing the work (measured in benchmarks/README.md,
    /// "threads under load"); on an idle machine waking a sleeping thread costs microseconds.
    /// </summary>
    internal static readonly (string Name, string Value)[] WaitDefaults = [("OMP_WAIT_POLICY", "PASSIVE"), ("OPENBLAS_THREAD_TIMEOUT", "4")];

    /// <summary>Which of <see cref="WaitDefaults"/> Pai set (the others were the user's, or unset).</summary>
    internal static IReadOnlySet<string> WaitSetByPai => waitSetByPai;
    static readonly HashSet<string> waitSetByPai = [];
    static bool waitPrepared;

    [DllImport("libc", EntryPoint = "getenv")] static extern IntPtr CGetenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport("libc", EntryPoint = "setenv")] static extern int CSetenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    // libgomp and OpenBLAS read these from the C environment once, when the shim loads them, and on
    // Linux Environment.SetEnvironmentVariable changes only .NET's copy: so libc's setenv, now.
    static void PreferPassiveWaiting()
    {
        lock (waitSetByPai)
        {
            if (waitPrepared || !OperatingSystem.IsLinux()) return;
            waitPrepared = true;
            foreach (var (name, value) in WaitDefaults)
                if (CGetenv(name) == IntPtr.Zero && CSetenv(name, value, 0) == 0)
                    waitSetByPai.Add(name);
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != LibraryName) return IntPtr.Zero;
        PreferPassiveWaiting();
        var tried = new List<string>();
        foreach (var candidate in Candidates())
        {
            tried.Add(candidate);
            if (!File.Exists(candidate)) continue;
            try
            {
                var handle = NativeLibrary.Load(candidate);
                LoadedFrom = Path.GetFullPath(candidate);
                return handle;
            }
            catch (DllNotFoundException e)
            {
                throw new DllNotFoundException(
                    $"Found {candidate} but could not load it: {e.Message}\n" +
                    "Usually libtorch itself is missing: install it with `apt-get install libtorch-dev " +
                    "libopenblas0-pthread` (or set LIBTORCH to another libtorch and rebuild).", e);
            }
        }
        if (NativeLibrary.TryLoad(FileName, out var system))
        {
            LoadedFrom = FileName + " (system search path)";
            return system;
        }
        throw new DllNotFoundException(
            $"{FileName} (Pai's native shim over libtorch) was not found. Looked in:\n  " +
            string.Join("\n  ", tried) +
            "\nBuild it with `dotnet build` from the repository root (it needs cmake and libtorch-dev), " +
            "or point PAI_NATIVE_LIB at an existing copy.");
    }

    static IEnumerable<string> Candidates()
    {
        var assemblyDir = Path.GetDirectoryName(typeof(NativeLibraryLoader).Assembly.Location);
        if (!string.IsNullOrEmpty(assemblyDir)) yield return Path.Combine(assemblyDir, FileName);
        yield return Path.Combine(AppContext.BaseDirectory, FileName);
        var overridePath = Environment.GetEnvironmentVariable("PAI_NATIVE_LIB");
        if (!string.IsNullOrEmpty(overridePath)) yield return overridePath;
    }
}
