using Pai.Host;

namespace Pai.Host.Tests;

public class HostInfoTests
{
    [Fact]
    public void Describe_reports_openblas_and_the_loaded_native_library()
    {
        var info = PaiHost.Describe();
        Assert.StartsWith("1.13", info.LibtorchVersion);
        Assert.Contains("OpenBLAS", info.Blas);
        Assert.EndsWith("libpai_torch.so", info.NativeLibrary);
        Assert.True(File.Exists(info.NativeLibrary));
        Assert.Equal(Environment.ProcessorCount, info.Threads);
        Assert.EndsWith(Environment.ProcessorCount == 1 ? ", 1 thread" : $", {Environment.ProcessorCount} threads", info.Blas);
    }

    // Debian's libtorch-dev 1.13.1 says 1.13.0 in its headers: `pai info` names what is installed.
    [Fact]
    public void Info_names_the_libtorch_version_its_package_installed()
    {
        string? installed = null;
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("dpkg-query", ["-W", "-f=${Version}", "libtorch-dev"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = System.Diagnostics.Process.Start(psi)!;
            var version = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            if (p.ExitCode == 0) installed = version;
        }
        catch (System.ComponentModel.Win32Exception) { } // no dpkg: the compiled-in version is all there is
        var (code, output, err) = CliEndToEndTests.Run("info");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Matches($@"libtorch\s+│ {System.Text.RegularExpressions.Regex.Escape(installed ?? Libtorch.Version)}", output);
        if (installed is not null) Assert.Contains($"compiled-in TORCH_VERSION {Libtorch.Version}", output);
    }

    [Fact]
    public void SetNumThreads_sizes_openblas_pool_too()
    {
        var before = Libtorch.NumThreads;
        try
        {
            Libtorch.SetNumThreads(1);
            Assert.Equal(1, Libtorch.BlasThreads);
            Libtorch.SetNumThreads(2);
            Assert.Equal(2, Libtorch.BlasThreads);
        }
        finally
        {
            Libtorch.SetNumThreads(before);
        }
    }

    [Fact]
    public void Cuda_versions_read_as_libtorch_reports_them_and_a_cpu_build_says_it_has_none()
    {
        Assert.Equal("12.4", Libtorch.CudaVersionText(12040));
        Assert.Equal("11.8", Libtorch.CudaVersionText(11080));
        Assert.Null(Libtorch.CudaVersionText(0));
        Assert.Equal("8.9.7", Libtorch.CudnnVersionText(8907));
        Assert.Equal("9.1.0", Libtorch.CudnnVersionText(90100));
        Assert.Null(Libtorch.CudnnVersionText(0));

        var info = PaiHost.Describe(); // Debian's libtorch is CPU-only
        Assert.Null(info.CudaVersion);
        Assert.Equal(0, info.CudaDevices);
        Assert.StartsWith("none: this libtorch is CPU-only", info.Cuda);
        var gpu = info with { CudaVersion = "12.4", CudnnVersion = "9.1.0", CudaDevices = 2 };
        Assert.Equal("CUDA 12.4, cuDNN 9.1.0, 2 device(s): cuda:0, cuda:1", gpu.Cuda);
    }
}
