using System.Diagnostics;
using Pai.Host.Distributed;

namespace Pai.Host.Tests;

/// <summary>
/// Data-parallel training on c10d (Gloo over loopback): two Pai.DistWorker processes as ranks,
/// against one process doing the same work.
/// </summary>
public class DistributedTests
{
    [Fact]
    public void The_shim_has_gloo()
    {
        Assert.True(ProcessGroup.HasGloo, "libpai_torch was built without Gloo: is libgloo-dev installed?");
    }

    [Fact]
    public void Allreduce_broadcast_and_barrier_work_across_two_processes()
    {
        var outputs = RunRanks(2, ["collectives"], TimeSpan.FromSeconds(60));
        foreach (var (code, output, err) in outputs)
        {
            Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
            Assert.Contains("sum 3,30", output);    // (1 + 2), (10 + 20)
            Assert.Contains("min 5", output);       // min(5, 6)
            Assert.Contains("max 6", output);
            Assert.Contains("broadcast 100,200,300 True,False", output); // rank 0's values, bools included
            Assert.Contains("barrier ok", output);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Two_ranks_at_batch_b_train_like_one_process_at_batch_2b(bool masked)
    {
        using var dir = new TempDirectory();
        const int steps = 4, globalBatch = 32;
        var flag = masked ? "1" : "0";
        var single = RunRanks(1, ["train", flag, $"{steps}", $"{globalBatch}", dir.File("single.safetensors")], TimeSpan.FromSeconds(60))[0];
        Assert.True(single.Code == 0, $"exit {single.Code}\n{single.Out}\n{single.Err}");
        var ranks = RunRanks(2, ["train", flag, $"{steps}", $"{globalBatch}", dir.File("two.safetensors")], TimeSpan.FromSeconds(60));
        foreach (var r in ranks) Assert.True(r.Code == 0, $"exit {r.Code}\n{r.Out}\n{r.Err}");

        // Every rank starts from rank 0's weights (and mask), which are the single process's.
        Assert.Equal(Line(single.Out, "init "), Line(ranks[0].Out, "init "));
        Assert.Equal(Line(ranks[0].Out, "init "), Line(ranks[1].Out, "init "));
        if (masked)
        {
            Assert.Equal(Line(single.Out, "mask "), Line(ranks[0].Out, "mask "));
            Assert.Equal(Line(ranks[0].Out, "mask "), Line(ranks[1].Out, "mask "));
        }
        // Pruned weights are exactly zero on every rank after training.
        Assert.All(ranks.Append(single), r => Assert.Equal("0", Line(r.Out, "pruned-nonzero ")));

        using var scope = new DisposeScope();
        using var a = Safetensors.Load(dir.File("single.safetensors"));
        using var b = Safetensors.Load(dir.File("two.safetensors"));
        foreach (var name in a.Names.ToList())
        {
            var x = a.Take(name);
            var y = b.Take(name);
            var scale = x.Abs().Max().Item();
            var diff = (x - y).Abs().Max().Item();
            Assert.True(diff <= 1e-5 * Math.Max(scale, 1e-3), $"{name}: the two runs differ by {diff:G3} (weights up to {scale:G3})");
        }
    }

    [Theory]
    [InlineData(1)] // a worker: rank 0 sees its heartbeat stop
    [InlineData(0)] // rank 0, which hosts the store: the other sees the store go
    public async Task Killing_a_rank_stops_the_other_naming_the_lost_rank_within_the_timeout(int killed)
    {
        const double heartbeat = 4;
        var port = LocalLauncher.FreePort();
        var workers = Enumerable.Range(0, 2).Select(r => StartRank(r, 2, port, ["loop"], heartbeat)).ToList();
        try
        {
            foreach (var w in workers)
            {
                var line = await w.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
                Assert.Equal("joined", line);
            }
            var survivor = workers[1 - killed];
            var watch = Stopwatch.StartNew();
            workers[killed].Kill();
            var err = survivor.StandardError.ReadToEndAsync();
            Assert.True(survivor.WaitForExit(TimeSpan.FromSeconds(heartbeat + 15)), $"rank {1 - killed} still running {heartbeat + 15} s after rank {killed} was killed");
            survivor.WaitForExit();
            Assert.NotEqual(0, survivor.ExitCode);
            var message = await err;
            Assert.Contains($"lost rank {killed}", message);
            Assert.True(watch.Elapsed.TotalSeconds < heartbeat + 15, $"took {watch.Elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            foreach (var w in workers)
            {
                if (!w.HasExited) w.Kill();
                w.Dispose();
            }
        }
    }

    [Fact]
    public void Gradient_buckets_send_only_kept_entries_and_put_them_back_in_place()
    {
        // A group of one rank in this process: the average is the identity, so what comes back
        // shows whether packing and unpacking put every entry where it was.
        var env = new DistributedEnvironment(0, 1, 0, "127.0.0.1", LocalLauncher.FreePort()) { Timeout = TimeSpan.FromSeconds(30) };
        using var parallel = DataParallel.Join(env);
        using var scope = new DisposeScope();
        using var g = new Generator(11);
        var masked = Libtorch.Randn([6, 5], g).RequiresGrad_();
        var dense = Libtorch.Randn([7], g).RequiresGrad_();
        var keep = Libtorch.Rand([6, 5], g).Gt(0.6);
        (masked.Sum() * 3 + (dense * dense).Sum()).Backward();
        masked.Grad!.Mul_(keep.To(DType.Float32)); // the trainer zeroes pruned gradients first
        var before = (masked.Grad!.Clone(), dense.Grad!.Clone());
        // 16-byte buckets: one parameter per bucket.
        using var buckets = parallel.Buckets([(masked, keep), (dense, null)], bucketBytes: 16);
        Assert.Equal(2, buckets.Count);
        Assert.Equal(keep.CountNonZero() + 7, buckets.Elements);
        buckets.Average();
        Assert.True(masked.Grad!.Equal(before.Item1));
        Assert.True(dense.Grad!.Equal(before.Item2));
        Assert.Equal(0, masked.Grad!.MaskedSelect(keep.LogicalNot()).CountNonZero());
        parallel.Finish();
    }

    [Fact]
    public void Sharded_loaders_split_each_batch_of_the_single_process_order()
    {
        using var scope = new DisposeScope();
        using var data = SyntheticData.Create(new SyntheticOptions(TrainCount: 101, TestCount: 10));
        using var single = new DataLoader(data, 8, seed: 5);
        using var r0 = new DataLoader(data, 4, seed: 5, rank: 0, worldSize: 2);
        using var r1 = new DataLoader(data, 4, seed: 5, rank: 1, worldSize: 2);
        Assert.Equal(r0.BatchCount, r1.BatchCount); // equal step counts, or the collectives would deadlock
        Assert.Equal(50, r0.SampleCount);           // 101 / 2: the odd sample is left out
        for (var epoch = 0; epoch < 2; epoch++)
        {
            var order = single.Order(epoch);
            var a = r0.Order(epoch);
            var b = r1.Order(epoch);
            for (var batch = 0; batch < 12; batch++)
            {
                var expected = order.Skip(batch * 8).Take(8).Order();
                var got = a.Skip(batch * 4).Take(4).Concat(b.Skip(batch * 4).Take(4)).Order();
                Assert.Equal(expected, got);
            }
        }
        using var one = new DataLoader(data, 8, seed: 5, rank: 0, worldSize: 1);
        Assert.Equal(single.Order(1), one.Order(1));
    }

    [Fact]
    public void The_environment_is_read_as_torchrun_sets_it_and_bad_values_are_named()
    {
        Dictionary<string, string?> vars = new() { ["RANK"] = "1", ["WORLD_SIZE"] = "4", ["MASTER_ADDR"] = "10.0.0.1", ["MASTER_PORT"] = "29500", ["PAI_DIST_HEARTBEAT_TIMEOUT"] = "7" };
        var env = DistributedEnvironment.FromVariables(k => vars.GetValueOrDefault(k))!;
        Assert.Equal((1, 4, 1, "10.0.0.1", 29500), (env.Rank, env.WorldSize, env.LocalRank, env.MasterAddress, env.MasterPort));
        Assert.Equal(TimeSpan.FromSeconds(7), env.HeartbeatTimeout);
        Assert.Null(DistributedEnvironment.FromVariables(_ => null));
        vars["RANK"] = "4";
        Assert.Contains("RANK=4", Assert.Throws<ArgumentException>(() => DistributedEnvironment.FromVariables(k => vars.GetValueOrDefault(k))).Message);
        vars["RANK"] = "0";
        vars.Remove("MASTER_ADDR");
        Assert.Contains("MASTER_ADDR", Assert.Throws<ArgumentException>(() => DistributedEnvironment.FromVariables(k => vars.GetValueOrDefault(k))).Message);
    }

    [Fact]
    public async Task Pai_run_with_nproc_2_records_one_finished_run_written_by_rank_0()
    {
        using var dir = new TempDirectory();
        var pai = Path.Combine(AppContext.BaseDirectory, "pai.dll");
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "exec", pai, "run", "-m", "lenet5", "-d", "synthetic", "-c", "magnitude", "-s", "0.9", "--epochs", "1", "--max-batches", "3",
                     "--batch-size", "32", "--lr", "0.01", "--threads", "2", "--nproc", "2", "--results", dir.Path })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(120)), "pai run --nproc 2 did not finish in 120 s");
        p.WaitForExit();
        var (stdout, stderr) = (await output, await err);
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{stdout}\n{stderr}");
        Assert.Contains("on 2 ranks", stdout);

        using var store = new SqliteRunStore(dir.Path);
        var run = Assert.Single(store.All());
        Assert.Equal(RunStatus.Finished, run.Status);
        Assert.Equal(32, run.Config.BatchSize); // the global batch: --nproc is not part of the run
        Assert.Single(run.Epochs);
        Assert.True(File.Exists(store.MaskPath(run.Key)));
        Assert.True(File.Exists(store.CheckpointPath(run.Key)));
    }

    static string Line(string output, string prefix) =>
        output.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal))?[prefix.Length..]
        ?? throw new Xunit.Sdk.XunitException($"no line starting with '{prefix}' in:\n{output}");

    static Process StartRank(int rank, int world, int port, string[] args, double heartbeat = 30)
    {
        var psi = Processes.TestProgram("Pai.DistWorker", args);
        if (world > 1)
        {
            var env = new DistributedEnvironment(rank, world, rank, "127.0.0.1", port)
            { Timeout = TimeSpan.FromSeconds(60), HeartbeatTimeout = TimeSpan.FromSeconds(heartbeat) };
            foreach (var (k, v) in env.Variables()) psi.Environment[k] = v;
        }
        else psi.Environment.Remove(DistributedEnvironment.WorldSizeVariable);
        return Process.Start(psi)!;
    }

    static List<(int Code, string Out, string Err)> RunRanks(int world, string[] args, TimeSpan limit)
    {
        var port = LocalLauncher.FreePort();
        var ranks = Enumerable.Range(0, world).Select(r => StartRank(r, world, port, args)).ToList();
        try
        {
            var reads = ranks.Select(p => (Out: p.StandardOutput.ReadToEndAsync(), Err: p.StandardError.ReadToEndAsync())).ToList();
            foreach (var p in ranks) Assert.True(p.WaitForExit(limit), $"a rank did not finish within {limit.TotalSeconds} s");
            return ranks.Select((p, i) => { p.WaitForExit(); return (p.ExitCode, reads[i].Out.Result, reads[i].Err.Result); }).ToList();
        }
        finally
        {
            foreach (var p in ranks)
            {
                if (!p.HasExited) p.Kill();
                p.Dispose();
            }
        }
    }
}
