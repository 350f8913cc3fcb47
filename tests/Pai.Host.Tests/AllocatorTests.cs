using System.Diagnostics;
using System.Globalization;
using Pai.Host.Distributed;

namespace Pai.Host.Tests;

/// <summary>
/// The native library's CPU allocator: a freed step-sized tensor stays resident for the next step
/// instead of going back to the kernel and being faulted in again, and inside a training loop
/// (Libtorch.KeepFreedBlocks) it is kept by its size up to a limit (PAI_CPU_CACHE_MB;
/// PAI_MALLOC_DEFAULTS=1 keeps glibc's and libtorch's defaults).
/// </summary>
public sealed class AllocatorTests
{
    // Above 32 MB, the largest size glibc's adaptive mmap threshold follows (a smaller tensor, once
    // freed, is served from the heap with glibc's defaults too), and below the setting's 64 MB.
    const int Megabytes = 36, Allocations = 32;

    // Measured in a child process whose main thread allocates: in this process the test's thread
    // allocates from a glibc arena of its own, whose freed heaps are unmapped whatever the setting.
    // With glibc's defaults the heap first grows a few times (libtorch asks for 64-byte-aligned
    // blocks, for which glibc needs a little more than the block freed before), so the typical
    // allocation, the median, is compared.
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
        var (output, _) = await Run(["release", "160"], _ => { });
        var rss = output.Trim().Split(' ')[1..].Select(v => long.Parse(v, CultureInfo.InvariantCulture) / (1 << 20)).ToArray();
        var (before, kept, released) = (rss[0], rss[1], rss[2]);
        Assert.True(kept - before > 100, $"after 160 MB were freed the process kept only {kept - before} MB (resident {before} → {kept} MB)");
        Assert.True(kept - released > 100, $"ReleaseFreeMemory gave back {kept - released} of the {kept - before} MB kept");
    }

    // A block of n MB: the data, a 64-byte header, rounded up to whole pages.
    static long Block(long megabytes) => (megabytes << 20) + 4096;

    [Fact]
    public async Task Freed_blocks_are_kept_by_size_and_handed_out_again_for_that_size()
    {
        var (kept, after, _) = await Keep(limit: null);
        // every step's five blocks, and no more: each step took the previous step's blocks again
        Assert.All(kept, k => Assert.Equal(Block(4) + Block(1) + Block(5) + Block(2) + Block(3), k));
        Assert.Equal(kept[^1] - Block(3), after["retaken"]);
        // 80 MB is above the mmap threshold: glibc unmaps it when freed, so it is not kept
        Assert.Equal(kept[^1], after["large"]);
    }

    [Fact]
    public async Task Blocks_are_kept_only_inside_a_keeping_scope_and_given_back_when_the_last_closes()
    {
        var (kept, after, _) = await Keep(limit: null);
        Assert.Equal(kept[^1], after["nested"]);
        Assert.Equal(0, after["closed"]);
        Assert.Equal(0, after["outside"]);
        Assert.Equal(0, after["released"]);
    }

    [Fact]
    public async Task Beyond_the_limit_the_oldest_kept_block_goes_back_first()
    {
        // 4, 1, 5, 2, 3 MB freed in that order under 8 MB: the 5 pushes out the 4, the 2 the 1, the 3 the 5
        var (kept, _, _) = await Keep(limit: "8");
        Assert.All(kept, k => Assert.Equal(Block(2) + Block(3), k));
    }

    [Theory]
    [InlineData("PAI_CPU_CACHE_MB", "0")]
    [InlineData("PAI_MALLOC_DEFAULTS", "1")]
    public async Task Keeping_can_be_turned_off(string variable, string value)
    {
        var (kept, after, _) = await Keep(limit: null, psi => psi.Environment[variable] = value);
        Assert.All(kept, k => Assert.Equal(0, k));
        Assert.Equal(0, after["retaken"]);
    }

    [Fact]
    public async Task A_limit_that_is_not_a_number_is_named_and_the_default_kept()
    {
        var (kept, _, error) = await Keep(limit: "lots");
        Assert.Contains("PAI_CPU_CACHE_MB=lots is not a whole number of megabytes; using 1024", error);
        Assert.All(kept, k => Assert.Equal(Block(4) + Block(1) + Block(5) + Block(2) + Block(3), k));
    }

    /// <summary>Pai.DistWorker keep 4: the bytes kept after each step, and after what follows the steps.</summary>
    static async Task<(long[] Kept, Dictionary<string, long> After, string Error)> Keep(string? limit, Action<ProcessStartInfo>? setUp = null)
    {
        var (output, error) = await Run(["keep", "4"], psi =>
        {
            if (limit is null) psi.Environment.Remove("PAI_CPU_CACHE_MB");
            else psi.Environment["PAI_CPU_CACHE_MB"] = limit;
            setUp?.Invoke(psi);
        });
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')).ToArray();
        var kept = lines[0][1..].Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(4, kept.Length);
        return (kept, lines[1..].ToDictionary(l => l[0], l => long.Parse(l[1], CultureInfo.InvariantCulture)), error);
    }

    /// <summary>The minor page faults of each allocation of a Pai.DistWorker child on its main thread.</summary>
    static async Task<long[]> Allocate(bool keepGlibcDefaults)
    {
        var (output, _) = await Run(["allocate", $"{Megabytes}", $"{Allocations}"], psi =>
        {
            if (keepGlibcDefaults) psi.Environment["PAI_MALLOC_DEFAULTS"] = "1";
            // Every method compiled at its first call: no recompilation on the main thread, allocating
            // from the same heap, in the middle of the allocations.
            psi.Environment["DOTNET_TieredCompilation"] = "0";
        });
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("main-thread true", lines[0]);
        var faults = lines[1].Split(' ')[1..].Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(Allocations, faults.Length);
        return faults;
    }

    /// <summary>Runs Pai.DistWorker as a single process with the allocator's settings unset, then <paramref name="setUp"/>'s.</summary>
    static async Task<(string Output, string Error)> Run(string[] args, Action<ProcessStartInfo> setUp)
    {
        var psi = Processes.TestProgram("Pai.DistWorker", args);
        psi.Environment.Remove("PAI_MALLOC_DEFAULTS");
        psi.Environment.Remove("PAI_CPU_CACHE_MB");
        psi.Environment.Remove(DistributedEnvironment.WorldSizeVariable);
        setUp(psi);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{output}\n{await err}");
        return (output, await err);
    }

    static long Median(long[] values) => values.Order().ElementAt(values.Length / 2);
}
