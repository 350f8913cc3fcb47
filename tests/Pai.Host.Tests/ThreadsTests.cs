using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Pai.Host.Tests;

/// <summary>Threads on a busy machine: the default thread count follows the free cores, idle pool threads sleep.</summary>
public sealed class ThreadsTests
{
    [Theory]
    [InlineData(2, 8.9, 1)]   // the issue's machine: load 9 on 2 cores
    [InlineData(2, 0.3, 2)]   // idle: every core
    [InlineData(2, 0.5, 1)]   // half a core busy rounds to one
    [InlineData(2, 1.4, 1)]
    [InlineData(16, 3.5, 12)]
    [InlineData(1, 0.0, 1)]
    [InlineData(4, 1e300, 1)] // never fewer than one thread
    [InlineData(4, -1.0, 4)]  // nonsense load: every core
    [InlineData(4, double.NaN, 4)]
    public void Available_threads_are_the_cores_less_the_load_rounded_and_at_least_one(int cores, double load, int expected) =>
        Assert.Equal(expected, PaiHost.AvailableThreads(cores, load));

    [Fact]
    public void Info_shows_the_default_thread_count_with_the_cores_and_load_it_came_from()
    {
        var (code, output, err) = Pai(null, "info");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        var m = Regex.Match(output, @"threads\s+│ (\d+) \((\d+) cores, load ([\d.]+): (\d+) available\)");
        Assert.True(m.Success, output);
        var (threads, cores, load) = (int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value), double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture));
        Assert.Equal(Environment.ProcessorCount, cores);
        Assert.Equal(PaiHost.AvailableThreads(cores, load), threads);
        Assert.Equal(threads, int.Parse(m.Groups[4].Value));
    }

    [Fact]
    public void An_explicit_thread_count_is_used_as_given_whatever_the_load()
    {
        var (code, output, err) = Pai(null, "info", "--threads", "2");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Matches(@"threads\s+│ 2 \(--threads 2, as given\)", output);
        Assert.Matches(@"OpenBLAS .*, 2 threads", output);
    }

    // libgomp prints the settings it parsed at load with OMP_DISPLAY_ENV=VERBOSE: a spin count of
    // 0 is the passive policy (its default without OMP_WAIT_POLICY is 300000 spins).
    [Fact]
    public void Idle_openmp_threads_wait_passively_unless_the_user_says_otherwise()
    {
        var (code, output, err) = Pai(new() { ["COLUMNS"] = "200", ["OMP_WAIT_POLICY"] = null, ["OPENBLAS_THREAD_TIMEOUT"] = null, ["OMP_DISPLAY_ENV"] = "VERBOSE" }, "info");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Contains("OMP_WAIT_POLICY=PASSIVE (Pai's default), OPENBLAS_THREAD_TIMEOUT=4 (Pai's default)", output);
        Assert.Contains("GOMP_SPINCOUNT = '0'", err);

        (code, output, err) = Pai(new() { ["COLUMNS"] = "200", ["OMP_WAIT_POLICY"] = "active", ["OPENBLAS_THREAD_TIMEOUT"] = "10", ["OMP_DISPLAY_ENV"] = "VERBOSE" }, "info");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Contains("OMP_WAIT_POLICY=active (yours), OPENBLAS_THREAD_TIMEOUT=10 (yours)", output);
        Assert.Contains("OMP_WAIT_POLICY = 'ACTIVE'", err);
        Assert.DoesNotContain("GOMP_SPINCOUNT = '0'", err);
    }

    // `pai` as a child process with some environment variables set (a value) or removed (null),
    // its tables 200 columns wide so that no line the tests read wraps.
    static (int Code, string Out, string Err) Pai(Dictionary<string, string?>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["COLUMNS"] = "200";
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pai.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? [])
            if (value is null) psi.Environment.Remove(name);
            else psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }
}
