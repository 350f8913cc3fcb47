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

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != LibraryName) return IntPtr.Zero;
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
