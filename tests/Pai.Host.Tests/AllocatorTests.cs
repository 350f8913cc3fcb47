using System.Diagnostics;
using System.Globalization;
using Pai.Host.Distributed;

namespace Pai.Host.Tests;

/// <summary>
/// The native library's allocator setting: a freed step-sized tensor stays in the heap for the next
/// step instead of going back to the kernel and being faulted in again (PAI_MALLOC_DEFAULTS=1 keeps
/// glibc's defaults).
/// </summary>
public sealed class AllocatorTests
{
    // Above 32 MB, the largest size glibc's adaptive mmap threshold follows (a smaller tensor, once
    // freed, is served from the heap with glibc's defaults too), and below the setting's 64 MB.
    const int Megabytes = 36, Allocations = 32;

    // Measured in a child process whose main thread allocates: in this process the test's thread
    // allocates from a glibc arena of its own, whose freed heaps are unmapped whatever the setting.
    // The heap first grows a few times (libtorch asks for 64-byte-aligned blocks, for which glibc
    // needs a little more than the block freed before; the pieces it trims off sit in its caches
    // of small chunks until those fill), so the typical allocation, the median, is compared.
    [Fact]
    public async Task A_freed_step_sized_tensor_is_reused_instead_of_faulted_in_again()
    {
        var tuned = Allocate(keepGlibcDefaults: false);
        var defaults = Allocate(keepGlibcDefaults: true);
        var (t, d) = (await tuned, await defaults);
        Assert.True(Median(t) * 4 < Median(d),
            $"minor page faults per {Megabytes} MB tensor, median {Median(t)} with the setting against {Median(d)} with glibc's defaults: "
            + $"[{string.Join(" ", t)}] against [{string.Join(" ", d)}]");
    }

    // After a one-off phase (the sparse kernels' calibration), the heap's free pages go back to the
    // kernel on request. In a child process too: in this one, memory that earlier tests freed would
    // serve the allocations, and the managed heap's own returns blur the resident set.
    [Fact]
    public async Task ReleaseFreeMemory_gives_back_the_freed_heap_that_the_setting_keeps()
    {
        var psi = Processes.TestProgram("Pai.DistWorker", ["release", "160"]);
        psi.Environment.Remove("PAI_MALLOC_DEFAULTS");
        psi.Environment.Remove(DistributedEnvironment.WorldSizeVariable);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{output}\n{await err}");
        var rss = output.Trim().Split(' ')[1..].Select(v => long.Parse(v, CultureInfo.InvariantCulture) / (1 << 20)).ToArray();
        var (before, kept, released) = (rss[0], rss[1], rss[2]);
        Assert.True(kept - before > 100, $"after 160 MB were freed the heap kept only {kept - before} MB (resident {before} → {kept} MB)");
        Assert.True(kept - released > 100, $"ReleaseFreeMemory gave back {kept - released} of the {kept - before} MB kept");
    }

    /// <summary>The minor page faults of each allocation of a Pai.DistWorker child on its main thread.</summary>
    static async Task<long[]> Allocate(bool keepGlibcDefaults)
    {
        var psi = Processes.TestProgram("Pai.DistWorker", ["allocate", $"{Megabytes}", $"{Allocations}"]);
        if (keepGlibcDefaults) psi.Environment["PAI_MALLOC_DEFAULTS"] = "1";
        else psi.Environment.Remove("PAI_MALLOC_DEFAULTS");
        psi.Environment.Remove(DistributedEnvironment.WorldSizeVariable);
        // Every method compiled at its first call: no recompilation on the main thread, allocating
        // from the same heap, in the middle of the allocations.
        psi.Environment["DOTNET_TieredCompilation"] = "0";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{output}\n{await err}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("main-thread true", lines[0]);
        var faults = lines[1].Split(' ')[1..].Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(Allocations, faults.Length);
        return faults;
    }

    static long Median(long[] values) => values.Order().ElementAt(values.Length / 2);
}
