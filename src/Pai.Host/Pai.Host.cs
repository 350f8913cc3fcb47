using System.Reflection;
using Pai.Torch;

namespace Pai.Host;

/// <summary>Where Pai looks for a data set and whether it is there.</summary>
/// <param name="Name">Data set name (as given to --dataset).</param>
/// <param name="Location">Directory searched.</param>
/// <param name="Found">True when the expected files are present.</param>
/// <param name="HowToGet">What to do when it is missing.</param>
public sealed record DatasetLocation(string Name, string Location, bool Found, string HowToGet);

/// <summary>Facts about this installation, as <c>pai info</c> prints them.</summary>
/// <param name="PaiVersion">Version of the Pai assemblies.</param>
/// <param name="LibtorchVersion">libtorch version the shim was compiled against.</param>
/// <param name="Threads">Intra-op threads libtorch uses.</param>
/// <param name="Blas">The BLAS library actually mapped into the process.</param>
/// <param name="NativeLibrary">Where libpai_torch.so was loaded from.</param>
/// <param name="CudaDevices">Visible CUDA devices (0 with Debian's CPU-only libtorch).</param>
/// <param name="Parallel">libtorch's description of its parallel backend.</param>
/// <param name="Datasets">Known data sets and where they are looked for.</param>
public sealed record InstallationInfo(
    string PaiVersion, string LibtorchVersion, int Threads, string Blas, string NativeLibrary,
    int CudaDevices, string Parallel, IReadOnlyList<DatasetLocation> Datasets);

/// <summary>The host facade: the entry points the CLI and scripts call.</summary>
public static class PaiHost
{
    /// <summary>Version of the Pai assemblies.</summary>
    public static string Version =>
        typeof(PaiHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion?.Split('+')[0] ?? "unknown";

    /// <summary>Sets libtorch's thread count; null or 0 means every core.</summary>
    public static void ConfigureThreads(int? threads)
    {
        Libtorch.SetNumThreads(threads is null or 0 ? Environment.ProcessorCount : threads.Value);
    }

    /// <summary>Collects versions, threads, native library, BLAS and data set locations.</summary>
    public static InstallationInfo Describe()
    {
        return new InstallationInfo(
            Version,
            Libtorch.Version,
            Libtorch.NumThreads,
            BlasAfterWarmup(),
            Libtorch.NativeLibraryPath,
            Libtorch.CudaDeviceCount,
            Libtorch.ParallelInfo.Trim(),
            Data.DatasetRegistry.Names.Select(name => Data.DatasetRegistry.Locate(name)).ToList());
    }

    // libblas.so.3 is loaded lazily by libtorch on the first matrix product, so run one first.
    static string BlasAfterWarmup()
    {
        using var scope = new DisposeScope();
        using (Libtorch.NoGrad())
        {
            var a = Libtorch.Ones([8, 8]);
            _ = a.MatMul(a);
        }
        return Libtorch.ActiveBlas;
    }
}
