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
    }
}
