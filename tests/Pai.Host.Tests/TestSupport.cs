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

static class Processes
{
    /// <summary>Start info for <paramref name="program"/> with standard output and error redirected (and input where asked).</summary>
    public static ProcessStartInfo Redirected(string program, IEnumerable<string> args, bool input = false)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = input,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>
    /// Start info for a helper program the test project builds next to the tests (e.g. "Pai.StoreWorker"),
    /// run by the same dotnet host as the tests, with redirected streams.
    /// </summary>
    public static ProcessStartInfo TestProgram(string name, IEnumerable<string> args, bool input = false)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, name + ".dll");
        Assert.True(File.Exists(dll), $"{dll} is missing: the test project references tests/{name}");
        return Redirected(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", ["exec", dll, .. args], input);
    }
}

static class Python
{
    /// <summary>Debian's interpreter, which has python3-torch (a pyenv shim may come first on PATH).</summary>
    public const string Interpreter = "/usr/bin/python3";

    /// <summary>Runs an inline script with arguments; returns stdout, failing the test on a non-zero exit.</summary>
    public static string Run(string script, params string[] args)
    {
        using var p = Process.Start(Processes.Redirected(Interpreter, ["-c", script, .. args]))!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"python failed ({p.ExitCode}): {stderr.Result}");
        return stdout;
    }
}

static class Bytes
{
    /// <summary>Rewrites <paramref name="path"/> with only the bytes in <paramref name="keep"/> (a truncated file).</summary>
    public static void Truncate(string path, Range keep) => File.WriteAllBytes(path, File.ReadAllBytes(path)[keep]);

    /// <summary>
    /// Cuts <paramref name="path"/> to <paramref name="keep"/> and returns what <paramref name="read"/> then
    /// throws, checking that the message names the file.
    /// </summary>
    public static TException TruncatedFileError<TException>(string path, Range keep, Action<string> read) where TException : Exception
    {
        Truncate(path, keep);
        var e = Assert.Throws<TException>(() => read(path));
        Assert.Contains(path, e.Message);
        return e;
    }

    /// <summary>Deterministic pseudo-random bytes.</summary>
    public static byte[] Random(int n, int seed, int max = 256)
    {
        var r = new System.Random(seed);
        var b = new byte[n];
        for (var i = 0; i < n; i++) b[i] = (byte)r.Next(max);
        return b;
    }
}
