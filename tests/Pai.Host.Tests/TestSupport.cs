using System.Diagnostics;

namespace Pai.Host.Tests;

/// <summary>A fresh temporary directory, deleted on dispose.</summary>
sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pai-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

static class Python
{
    /// <summary>Debian's interpreter, which has python3-torch (a pyenv shim may come first on PATH).</summary>
    public const string Interpreter = "/usr/bin/python3";

    /// <summary>Runs an inline script with arguments; returns stdout, failing the test on a non-zero exit.</summary>
    public static string Run(string script, params string[] args)
    {
        var psi = new ProcessStartInfo(Interpreter)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"python failed ({p.ExitCode}): {stderr.Result}");
        return stdout;
    }
}

static class Bytes
{
    /// <summary>Deterministic pseudo-random bytes.</summary>
    public static byte[] Random(int n, int seed, int max = 256)
    {
        var r = new System.Random(seed);
        var b = new byte[n];
        for (var i = 0; i < n; i++) b[i] = (byte)r.Next(max);
        return b;
    }
}
