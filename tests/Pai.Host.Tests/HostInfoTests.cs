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
