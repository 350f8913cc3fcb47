using System.Text.Json;
using System.Text.Json.Nodes;
using Pai.Host.Runs;
using Pai.Host.Training;
using Pai.Host.Models;
using Pai.Torch;

namespace Pai.Host.Tests;

/// <summary>
/// The sparse kernels' calibration cache as pai sweep's workers use it: several writers at once,
/// a bounded file, and files that are corrupt or of an older version.
/// </summary>
public class CalibrationCacheTests
{
    static JsonObject Entries(string path) => JsonNode.Parse(File.ReadAllText(path))!["entries"]!.AsObject();

    // Without the lock each writer's read → add → replace drops whatever the others wrote in between.
    [Fact]
    public void Concurrent_writers_merge_so_every_entry_ends_up_in_the_file()
    {
        using var dir = new TempDirectory();
        var path = dir.File("cache", "sparse-kernels.json");
        const int writers = 4, each = 25;
        using var start = new Barrier(writers);
        var threads = Enumerable.Range(0, writers).Select(w => new Thread(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < each; i++)
                Assert.True(CalibrationCache.Write(path, $"w{w}|{i}", new CalibrationEntry("BatchInnermost", 1.5 + i)));
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        var entries = Entries(path);
        Assert.Equal(writers * each, entries.Count);
        for (var w = 0; w < writers; w++)
            for (var i = 0; i < each; i++)
                Assert.Equal(new CalibrationEntry("BatchInnermost", 1.5 + i), CalibrationCache.Read(path, $"w{w}|{i}"));
    }

    [Fact]
    public async Task A_writer_waits_for_the_lock_another_holds()
    {
        using var dir = new TempDirectory();
        var path = dir.File("sparse-kernels.json");
        Task<bool> writing;
        using (new FileStream(path + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            writing = Task.Run(() => CalibrationCache.Write(path, "k", new CalibrationEntry("dense", 0.7)));
            await Task.Delay(300);
            Assert.False(writing.IsCompleted, "the write went ahead under another's lock");
            Assert.False(File.Exists(path));
        }
        Assert.True(await writing.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(new CalibrationEntry("dense", 0.7), CalibrationCache.Read(path, "k"));
    }

    [Fact]
    public void The_file_keeps_the_latest_entries_up_to_its_cap()
    {
        using var dir = new TempDirectory();
        var path = dir.File("sparse-kernels.json");
        var full = new JsonObject(Enumerable.Range(0, CalibrationCache.MaxEntries).Select(i =>
            KeyValuePair.Create($"k{i}", (JsonNode?)new JsonObject { ["choice"] = "dense", ["speedup"] = 0.5, ["order"] = i })));
        File.WriteAllText(path, new JsonObject { ["version"] = 2, ["entries"] = full }.ToJsonString());

        Assert.True(CalibrationCache.Write(path, "new", new CalibrationEntry("Rows", 2.0)));
        Assert.True(CalibrationCache.Write(path, "newer", new CalibrationEntry("Rows", 3.0)));

        Assert.Equal(CalibrationCache.MaxEntries, Entries(path).Count);
        Assert.Null(CalibrationCache.Read(path, "k0")); // the two oldest-written made room
        Assert.Null(CalibrationCache.Read(path, "k1"));
        Assert.Equal(new CalibrationEntry("dense", 0.5), CalibrationCache.Read(path, "k2"));
        Assert.Equal(new CalibrationEntry("Rows", 2.0), CalibrationCache.Read(path, "new"));
        Assert.Equal(new CalibrationEntry("Rows", 3.0), CalibrationCache.Read(path, "newer"));

        // Rewriting a key makes it the newest: it outlives entries written after it first was.
        Assert.True(CalibrationCache.Write(path, "k2", new CalibrationEntry("dense", 0.6)));
        Assert.True(CalibrationCache.Write(path, "another", new CalibrationEntry("dense", 0.9)));
        Assert.Equal(new CalibrationEntry("dense", 0.6), CalibrationCache.Read(path, "k2"));
        Assert.Null(CalibrationCache.Read(path, "k3"));
    }

    // Corrupt, foreign or old files count as empty (the layers are measured again) and the next
    // write replaces them with a valid file: nothing throws.
    [Theory]
    [InlineData("{\"version\": 2, \"entries\": {\"linear|")]
    [InlineData("not json at all")]
    [InlineData("[1, 2, 3]")]
    [InlineData("{\"version\": 2, \"entries\": [\"k\"]}")]
    [InlineData("{\"version\": 2, \"entries\": {\"k\": [\"dense\"], \"j\": {\"choice\": 5}}}")]
    [InlineData("{\"version\": 2, \"entries\": {\"k\": {\"choice\": \"dense\"}, \"k\": {\"choice\": \"Rows\"}}}")]
    [InlineData("{\"version\": 1, \"choices\": {\"k\": \"dense\"}}")]
    public void A_corrupt_or_old_cache_file_is_ignored_and_replaced(string content)
    {
        using var dir = new TempDirectory();
        var path = dir.File("sparse-kernels.json");
        File.WriteAllText(path, content);

        Assert.Null(CalibrationCache.Read(path, "k"));
        Assert.True(CalibrationCache.Write(path, "fresh", new CalibrationEntry("BatchInnermost", 1.25)));
        Assert.Equal(new CalibrationEntry("BatchInnermost", 1.25), CalibrationCache.Read(path, "fresh"));
        Assert.Equal(["fresh"], Entries(path).Select(e => e.Key));
    }

    // A layout timed on an older library is no guide once its kernels changed speed.
    [Fact]
    public void A_choice_is_keyed_by_the_kernels_revision_the_layers_geometry_and_batch_innermost_passing()
    {
        using var scope = new DisposeScope();
        using var conv = new Conv2d(3, 4, 3, stride: 1, padding: 1, bias: false);
        using var strided = new Conv2d(3, 4, 3, stride: 2, padding: 1, bias: false);
        long[] input = [8, 3, 16, 16];
        string Key(Module layer, int revision) =>
            SparseLayers.Calibration.Key(layer, conv.Weight, input, 20, false, true, revision);

        Assert.Equal(Key(conv, SparsePattern.KernelRevision), Key(conv, SparsePattern.KernelRevision));
        Assert.NotEqual(Key(conv, SparsePattern.KernelRevision), Key(conv, SparsePattern.KernelRevision - 1));
        Assert.NotEqual(Key(conv, 2), Key(strided, 2));
        // timed without the transposes back that a model passing activations on batch-innermost skips
        Assert.NotEqual(Key(conv, 2), SparseLayers.Calibration.Key(conv, conv.Weight, input, 20, false, true, 2, batchInnermost: true));
        Assert.True(SparsePattern.KernelRevision >= 2, "the revision that introduced register-blocked kernels");
    }

    [Fact]
    public void The_progress_line_gives_each_layers_measured_speedup()
    {
        var auto = new SparseLayerChoices([new("conv1", false, 0.8), new("conv2", true, 1.8), new("fc1", true, 2.4), new("fc2", false, 0.95)]);
        Assert.Equal("sparse kernels (auto): conv2 1.8×, fc1 2.4×; dense: conv1 (0.8×), fc2 (0.95×)",
            Trainer.DescribeSparseLayers(SparseKernelMode.Auto, auto));
        Assert.Equal(["conv2", "fc1"], auto.Sparse); // the layers that run sparse

        var allDense = new SparseLayerChoices([new("fc1", false, 0.5)]);
        Assert.Equal("sparse kernels (auto): no masked layer measured faster sparse; all run dense: fc1 (0.5×)",
            Trainer.DescribeSparseLayers(SparseKernelMode.Auto, allDense));

        // on times no dense step: names only.
        var on = new SparseLayerChoices([new("fc1", true, null), new("fc2", true, null)]);
        Assert.Equal("sparse kernels (on): fc1, fc2", Trainer.DescribeSparseLayers(SparseKernelMode.On, on));
        Assert.Equal("sparse kernels (on): no masked layer they support; all run dense",
            Trainer.DescribeSparseLayers(SparseKernelMode.On, SparseLayerChoices.None));
    }

    [Fact]
    public void The_record_gives_each_layers_kernel_and_speedup_and_old_records_still_load()
    {
        var summary = new PruneSummary("snip", [new("conv1.weight", 10, 20), new("fc1.weight", 5, 50), new("fc2.weight", 1, 2)], [], 1, 0.2);
        var kernels = new SparseLayerChoices([new("conv1", false, 0.8), new("fc1", true, 2.5)]);
        Assert.Equal([new("conv1.weight", 10, 20, Kernel: "dense", Speedup: 0.8), new("fc1.weight", 5, 50, Kernel: "sparse", Speedup: 2.5),
            new LayerDensityRecord("fc2.weight", 1, 2, Kernel: "dense")], summary.WithKernels(kernels).Layers);

        // A record stored before kernels and speedups were: both null.
        var old = JsonSerializer.Deserialize<PruneSummary>(
            """{"criterion":"snip","layers":[{"name":"fc1.weight","kept":5,"total":50}],"collapsed":[],"rounds":1,"density":0.1}""", RunRows.Json)!;
        Assert.Equal(new LayerDensityRecord("fc1.weight", 5, 50), Assert.Single(old.Layers));
        var stored = JsonSerializer.Deserialize<PruneSummary>(JsonSerializer.Serialize(summary.WithKernels(kernels), RunRows.Json), RunRows.Json)!;
        Assert.Equal(summary.WithKernels(kernels).Layers, stored.Layers);
    }
}
