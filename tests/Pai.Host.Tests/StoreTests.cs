using System.Diagnostics;
using Microsoft.Data.Sqlite;
using Pai.Host.Runs;
using Xunit.Abstractions;

namespace Pai.Host.Tests;

public sealed class StoreTests(ITestOutputHelper output)
{
    static readonly RunConfig Snip90 = new() { Model = "vgg16", Dataset = "cifar10", Criterion = "snip", Sparsity = 0.9, Seed = 1 };

    static readonly PruneSummary Prune = new("snip",
        [new LayerDensityRecord("conv1", 12, 100), new LayerDensityRecord("fc", 0, 50)], ["fc"], 1, 0.08);

    static EpochMetrics Epoch(int e) => new(e, 2.0 / e, 0.3 * e, 0.1 / e, 1.5 / e, 0.25 * e, e == 1 ? null : 0.9, 1.25 * e);

    // ---- keys ----

    // Keys were computed once (sha256 of the literal, first 16 hex digits, cross-checked with
    // Python's hashlib) and pinned: any change of canonicalization changes them and fails here,
    // which would orphan every stored run.
    [Fact]
    public void Default_config_has_empty_canonical_json_and_a_pinned_key()
    {
        Assert.Equal("{}", new RunConfig().CanonicalJson());
        Assert.Equal("44136fa355b3678a", new RunConfig().Key);
    }

    [Fact]
    public void Snip_90_config_has_pinned_canonical_json_and_key()
    {
        Assert.Equal("""{"criterion":"snip","dataset":"cifar10","model":"vgg16","seed":1,"sparsity":0.9}""", Snip90.CanonicalJson());
        Assert.Equal("05abc347bce7a912", Snip90.Key);
    }

    [Fact]
    public void Multistep_hts_config_has_pinned_canonical_json_and_key()
    {
        var config = new RunConfig
        {
            Criterion = "hts", Sparsity = 0.98, WarmupBatches = 391, Schedule = "multistep", Milestones = [30, 60],
            LearningRate = 0.1, Epochs = 10, // equal to the defaults: omitted
        };
        Assert.Equal("""{"criterion":"hts","milestones":[30,60],"schedule":"multistep","sparsity":0.98,"warmup_batches":391}""",
            config.CanonicalJson());
        Assert.Equal("51038f657a5e02ff", config.Key);
    }

    [Fact]
    public void Fields_set_to_their_defaults_do_not_change_the_key()
    {
        var explicitDefaults = Snip90 with
        {
            Scope = "global", Epochs = 10, BatchSize = 128, Optimizer = "sgd", Momentum = 0.9, WeightDecay = 5e-4,
            Milestones = [], Rounds = null, DataDirectory = null, HutchinsonTemperature = 200,
        };
        Assert.Equal(Snip90.CanonicalJson(), explicitDefaults.CanonicalJson());
        Assert.Equal(Snip90.Key, explicitDefaults.Key);
        Assert.NotEqual(Snip90.Key, (Snip90 with { Epochs = 11 }).Key);
        Assert.NotEqual(Snip90.Key, (Snip90 with { Seed = 2 }).Key);
    }

    [Fact]
    public void Config_read_back_from_canonical_json_has_the_same_key()
    {
        var config = Snip90 with { Milestones = [5, 7], Nesterov = true, MaxBatchesPerEpoch = 20 };
        var back = RunConfig.FromJson(config.CanonicalJson());
        Assert.Equal(config.Key, back.Key);
        Assert.Equal([5, 7], back.Milestones);
        Assert.True(back.Nesterov);
        Assert.Equal(20, back.MaxBatchesPerEpoch);
    }

    // ---- contents ----

    [Fact]
    public void Store_round_trips_a_run_through_its_life()
    {
        using var dir = new TempDirectory();
        var before = DateTimeOffset.UtcNow.AddSeconds(-1);
        using (var store = new SqliteRunStore(dir.Path))
        {
            var dense = new RunConfig { Seed = 3 };
            Assert.Equal(Snip90.Key, store.Register(Snip90));
            Assert.Equal(dense.Key, store.Register(dense));
            Assert.Equal(Snip90.Key, store.Register(Snip90 with { Epochs = 10 })); // same experiment: no second row

            Assert.Null(store.Get("0123456789abcdef"));
            var pending = store.Get(Snip90.Key)!;
            Assert.Equal(RunStatus.Pending, pending.Status);
            Assert.Equal(Snip90.CanonicalJson(), pending.Config.CanonicalJson());
            Assert.Equal(0, pending.Attempts);
            Assert.Null(pending.Owner);
            Assert.Empty(pending.Epochs);

            Assert.True(store.TryClaim(Snip90.Key));
            Assert.False(store.TryClaim(Snip90.Key)); // held by this store already
            store.RecordPrune(Snip90.Key, Prune, new Dictionary<string, double> { ["warmup"] = 0.5, ["scoring"] = 2.5 });
            store.RecordEpoch(Snip90.Key, Epoch(1));
            store.RecordEpoch(Snip90.Key, Epoch(2));
            var running = store.Get(Snip90.Key)!;
            Assert.Equal(RunStatus.Running, running.Status);
            Assert.Equal(Environment.ProcessId, running.Owner!.ProcessId);
            Assert.Equal(Environment.MachineName, running.Owner.Host);
            Assert.Equal([Epoch(1), Epoch(2)], running.Epochs);

            store.Finish(Snip90.Key, new RunRecord
            {
                Key = Snip90.Key, Config = Snip90, FinalTop1 = 0.91, FinalTop5 = 0.995, FinalLoss = 0.31,
                Epochs = [Epoch(2) with { TrainLoss = 99 }, Epoch(3)], // epoch 2 is recorded already and stays
                PhaseSeconds = new Dictionary<string, double> { ["training"] = 40, ["scoring"] = 3 },
                Seeds = new Dictionary<string, ulong> { ["init"] = 1, ["data"] = ulong.MaxValue },
                PaiVersion = "9.9.9", LibtorchVersion = "1.13.1",
            });
        }

        using (var store = new SqliteRunStore(dir.Path)) // what was stored survives reopening
        {
            var run = store.Get(Snip90.Key)!;
            Assert.Equal(RunStatus.Finished, run.Status);
            Assert.Equal([Epoch(1), Epoch(2), Epoch(3)], run.Epochs);
            Assert.Equal(0.91, run.FinalTop1);
            Assert.Equal(0.995, run.FinalTop5);
            Assert.Equal(0.31, run.FinalLoss);
            Assert.Equal(new Dictionary<string, double> { ["warmup"] = 0.5, ["scoring"] = 3, ["training"] = 40 },
                run.PhaseSeconds);
            Assert.Equal(new Dictionary<string, ulong> { ["init"] = 1, ["data"] = ulong.MaxValue }, run.Seeds);
            Assert.Equal(Prune.Criterion, run.Prune!.Criterion);
            Assert.Equal(Prune.Layers, run.Prune.Layers);
            Assert.Equal(Prune.Collapsed, run.Prune.Collapsed);
            Assert.Equal(Prune.Density, run.Prune.Density);
            Assert.Equal("9.9.9", run.PaiVersion);
            Assert.Equal("1.13.1", run.LibtorchVersion);
            Assert.Null(run.Error);
            Assert.Equal(1, run.Attempts);
            Assert.InRange(run.Started!.Value, before, run.Finished!.Value);
            Assert.InRange(run.Finished.Value, run.Started.Value, DateTimeOffset.UtcNow.AddSeconds(1));
            Assert.False(store.TryClaim(Snip90.Key));
            Assert.False(store.TryClaim(Snip90.Key, retryFailed: true)); // finished runs are never claimed again

            var all = store.All();
            Assert.Equal([Snip90.Key, new RunConfig { Seed = 3 }.Key], all.Select(r => r.Key));
            Assert.Equal([RunStatus.Finished, RunStatus.Pending], all.Select(r => r.Status));
            Assert.Equal(run.Epochs, all[0].Epochs);
            Assert.Empty(all[1].Epochs);
        }
    }

    [Fact]
    public void Failed_runs_are_claimed_again_only_when_retrying_and_start_from_scratch()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var key = store.Register(Snip90);
        Assert.True(store.TryClaim(key));
        store.RecordPrune(key, Prune, new Dictionary<string, double> { ["scoring"] = 1 });
        store.RecordEpoch(key, Epoch(1));
        store.Fail(key, "out of memory");
        var failed = store.Get(key)!;
        Assert.Equal(RunStatus.Failed, failed.Status);
        Assert.Equal("out of memory", failed.Error);
        Assert.NotNull(failed.Finished);

        Assert.False(store.TryClaim(key));
        Assert.True(store.TryClaim(key, retryFailed: true));
        var retried = store.Get(key)!;
        Assert.Equal(RunStatus.Running, retried.Status);
        Assert.Null(retried.Error);
        Assert.Null(retried.Prune);
        Assert.Null(retried.Finished);
        Assert.Empty(retried.Epochs);
        Assert.Empty(retried.PhaseSeconds);
        Assert.Equal(2, retried.Attempts);
    }

    [Fact]
    public void Recording_an_epoch_twice_is_refused_and_keeps_the_first()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var key = store.Register(Snip90);
        Assert.True(store.TryClaim(key));
        store.RecordEpoch(key, Epoch(1));
        var e = Assert.Throws<RunStoreException>(() => store.RecordEpoch(key, Epoch(1) with { TrainLoss = 7 }));
        Assert.Contains("epoch 1", e.Message);
        Assert.Equal([Epoch(1)], store.Get(key)!.Epochs);
    }

    [Fact]
    public void Nan_metrics_are_stored()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var key = store.Register(Snip90);
        Assert.True(store.TryClaim(key));
        store.RecordEpoch(key, new EpochMetrics(1, double.NaN, 0.1, 0.1, double.NaN, null, null, 1));
        var epoch = Assert.Single(store.Get(key)!.Epochs);
        Assert.True(double.IsNaN(epoch.TrainLoss));
        Assert.Null(epoch.TestLoss); // SQLite keeps NaN as NULL
        Assert.Equal(0.1, epoch.TrainTop1);
    }

    // ---- ownership ----

    [Fact]
    public void Only_the_owner_writes_to_a_run()
    {
        using var dir = new TempDirectory();
        using var owner = new SqliteRunStore(dir.Path);
        using var other = new SqliteRunStore(dir.Path); // same process, different owner
        var key = owner.Register(Snip90);
        Assert.Throws<RunStoreException>(() => owner.TryClaim("0000000000000000"));
        Assert.Throws<RunClaimLostException>(() => owner.RecordEpoch(key, Epoch(1))); // not claimed yet

        Assert.True(owner.TryClaim(key));
        Assert.False(other.TryClaim(key)); // its owner (this process) is alive
        Assert.Throws<RunClaimLostException>(() => other.RecordEpoch(key, Epoch(1)));
        Assert.Throws<RunClaimLostException>(() => other.RecordPrune(key, Prune, new Dictionary<string, double>()));
        Assert.Throws<RunClaimLostException>(() => other.Heartbeat(key));
        Assert.Throws<RunClaimLostException>(() => other.Fail(key, "no"));
        Assert.Throws<RunClaimLostException>(() => other.Finish(key, new RunRecord { Key = key, Config = Snip90 }));
        owner.RecordEpoch(key, Epoch(1));
        var run = owner.Get(key)!;
        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal([Epoch(1)], run.Epochs);
        Assert.Null(run.Error);
    }

    [Fact]
    public void A_stale_claim_from_another_host_is_taken_over_and_its_owner_refused()
    {
        using var dir = new TempDirectory();
        using var away = new SqliteRunStore(dir.Path, new RunStoreOptions { HostName = "elsewhere" });
        using var here = new SqliteRunStore(dir.Path, new RunStoreOptions { StaleAfter = TimeSpan.FromHours(1) });
        var key = away.Register(Snip90);
        Assert.True(away.TryClaim(key));
        away.RecordEpoch(key, Epoch(1));
        away.RecordEpoch(key, Epoch(2));
        Assert.False(here.TryClaim(key)); // fresh heartbeat

        SetColumn(dir, key, "heartbeat", DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds());
        away.Heartbeat(key); // the owner shows it is alive again
        Assert.False(here.TryClaim(key));

        SetColumn(dir, key, "heartbeat", DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds());
        Assert.True(here.TryClaim(key));
        var taken = here.Get(key)!;
        Assert.Empty(taken.Epochs); // the earlier attempt's partial epochs are gone
        Assert.Equal(2, taken.Attempts);
        Assert.Equal(Environment.MachineName, taken.Owner!.Host);

        var lost = Assert.Throws<RunClaimLostException>(() => away.RecordEpoch(key, Epoch(3)));
        Assert.Equal(key, lost.Key);
        Assert.Contains("taken over", lost.Message);
        Assert.Throws<RunClaimLostException>(() => away.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.1 }));
        Assert.Throws<RunClaimLostException>(() => away.Fail(key, "late"));
        Assert.Throws<RunClaimLostException>(() => away.Heartbeat(key));

        here.RecordEpoch(key, Epoch(1));
        here.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.9 });
        var done = here.Get(key)!;
        Assert.Equal(RunStatus.Finished, done.Status);
        Assert.Equal(0.9, done.FinalTop1);
        Assert.Equal([Epoch(1)], done.Epochs);
        Assert.Null(done.Error);
    }

    [Fact]
    public void Keep_alive_refreshes_the_heartbeat_in_the_background()
    {
        using var dir = new TempDirectory();
        using var away = new SqliteRunStore(dir.Path, new RunStoreOptions { HostName = "elsewhere" });
        using var here = new SqliteRunStore(dir.Path, new RunStoreOptions { StaleAfter = TimeSpan.FromHours(1) });
        var key = away.Register(Snip90);
        Assert.True(away.TryClaim(key));
        var old = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds());
        SetColumn(dir, key, "heartbeat", old.ToUnixTimeMilliseconds());
        using (away.KeepAlive(key, TimeSpan.FromMilliseconds(50)))
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (here.Get(key)!.Owner!.Heartbeat == old && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Assert.InRange(here.Get(key)!.Owner!.Heartbeat, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddSeconds(1));
            Assert.False(here.TryClaim(key));
        }
    }

    [Fact]
    public void A_claim_whose_process_id_was_reused_is_taken_over()
    {
        using var dir = new TempDirectory();
        using var first = new SqliteRunStore(dir.Path);
        using var second = new SqliteRunStore(dir.Path);
        var key = first.Register(Snip90);
        Assert.True(first.TryClaim(key));
        Assert.False(second.TryClaim(key));
        // Same host and a live process with the owner's id, but not the process that claimed it.
        SetColumn(dir, key, "owner_start", "another-boot:12345");
        Assert.True(second.TryClaim(key));
        Assert.Throws<RunClaimLostException>(() => first.RecordEpoch(key, Epoch(1)));
    }

    [Fact]
    public void Closing_a_store_returns_its_unfinished_claims_to_pending()
    {
        using var dir = new TempDirectory();
        string key;
        using (var store = new SqliteRunStore(dir.Path))
        {
            key = store.Register(Snip90);
            var finished = store.Register(Snip90 with { Seed = 2 });
            Assert.True(store.TryClaim(key));
            store.RecordEpoch(key, Epoch(1));
            Assert.True(store.TryClaim(finished));
            store.Finish(finished, new RunRecord { Key = finished, Config = Snip90 });
        }
        using var again = new SqliteRunStore(dir.Path);
        Assert.Equal([RunStatus.Pending, RunStatus.Finished], again.All().Select(r => r.Status));
        Assert.True(again.TryClaim(key));
        Assert.Empty(again.Get(key)!.Epochs);
    }

    // ---- several processes ----

    [Fact]
    public void Processes_sharing_a_store_never_run_a_configuration_twice()
    {
        const int runs = 40, workers = 4, epochs = 3;
        using var dir = new TempDirectory();
        var stopwatch = Stopwatch.StartNew();
        var children = Enumerable.Range(0, workers)
            .Select(_ => Worker.Start("sweep", dir.Path, runs.ToString(), epochs.ToString())).ToList();
        try
        {
            foreach (var child in children) Assert.Equal("ready", child.ReadLine());
            foreach (var child in children) child.Process.StandardInput.WriteLine("go"); // all start together
            var claims = children.Select(child => child.ReadToEnd()).ToList();
            foreach (var child in children) Assert.Equal(0, child.WaitForExit());

            var claimed = claims.SelectMany(lines => lines.Where(l => l.StartsWith("claimed ")).Select(l => l[8..])).ToList();
            output.WriteLine($"claims per worker: {string.Join(", ", claims.Select(c => c.Count(l => l.StartsWith("claimed "))))}; {stopwatch.Elapsed.TotalSeconds:0.0} s");
            Assert.All(claims, c => Assert.Equal("done", c[^1]));
            Assert.Equal(runs, claimed.Count); // claim counts sum to N
            Assert.Equal(runs, claimed.Distinct().Count()); // and no key was claimed twice

            using var store = new SqliteRunStore(dir.Path);
            var all = store.All();
            Assert.Equal(runs, all.Count);
            Assert.Equal(claimed.Order(), all.Select(r => r.Key).Order());
            Assert.All(all, run =>
            {
                Assert.Equal(RunStatus.Finished, run.Status);
                Assert.Equal(1, run.Attempts);
                Assert.Equal(Enumerable.Range(1, epochs), run.Epochs.Select(e => e.Epoch));
                Assert.Equal((ulong)run.Owner!.ProcessId, run.Seeds["init"]); // finished by the process that claimed it
            });
        }
        finally
        {
            foreach (var child in children) child.Dispose();
        }
    }

    [Fact]
    public void A_run_of_a_killed_process_is_taken_over_and_restarts_from_scratch()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var key = store.Register(Snip90);
        using (var child = Worker.Start("hang", dir.Path, Snip90.CanonicalJson(), "2"))
        {
            Assert.Equal("recorded", child.ReadLine());
            var claimedThere = store.Get(key)!;
            Assert.Equal(RunStatus.Running, claimedThere.Status);
            Assert.Equal(child.Process.Id, claimedThere.Owner!.ProcessId);
            Assert.Equal([1, 2], claimedThere.Epochs.Select(e => e.Epoch));
            Assert.NotNull(claimedThere.Prune);
            Assert.False(store.TryClaim(key)); // its owner is alive

            child.Process.Kill(); // SIGKILL: no chance to clean up
            child.Process.WaitForExit();
        }

        Assert.True(store.TryClaim(key));
        var restarted = store.Get(key)!;
        Assert.Equal(RunStatus.Running, restarted.Status);
        Assert.Equal(Environment.ProcessId, restarted.Owner!.ProcessId);
        Assert.Empty(restarted.Epochs);
        Assert.Null(restarted.Prune);
        Assert.Equal(2, restarted.Attempts);

        for (var e = 1; e <= 3; e++) store.RecordEpoch(key, Epoch(e));
        store.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.8 });
        var finished = store.Get(key)!;
        Assert.Equal(RunStatus.Finished, finished.Status);
        Assert.Equal([Epoch(1), Epoch(2), Epoch(3)], finished.Epochs);
        Assert.False(store.TryClaim(key));
        Assert.False(store.TryClaim(key, retryFailed: true));
    }

    // ---- the database file ----

    [Fact]
    public void Opening_creates_the_directory_layout_in_wal_mode_with_a_schema_version()
    {
        using var dir = new TempDirectory();
        var results = dir.File("nested", "results");
        using (var store = new SqliteRunStore(results))
        {
            Assert.Equal(results, store.Directory);
            Assert.Equal(Path.Combine(results, "pai.db"), store.DatabasePath);
            Assert.Equal(Path.Combine(results, "masks", "05abc347bce7a912.safetensors"), store.MaskPath(Snip90.Key));
            Assert.Equal(Path.Combine(results, "checkpoints", "05abc347bce7a912.safetensors"), store.CheckpointPath(Snip90.Key));
            Assert.Equal(Path.Combine(results, "scores", "snip-abc.safetensors"), store.ScoreCachePath("snip-abc"));
            Assert.Throws<ArgumentException>(() => store.MaskPath("../escape"));
            Assert.Throws<ArgumentException>(() => store.ScoreCachePath(""));
            foreach (var sub in new[] { "masks", "checkpoints", "scores" })
                Assert.True(Directory.Exists(Path.Combine(results, sub)), sub);
        }
        using var connection = Open(Path.Combine(results, "pai.db"));
        Assert.Equal("wal", Query(connection, "PRAGMA journal_mode"));
        Assert.Equal(1L, Query(connection, "PRAGMA user_version"));
    }

    [Fact]
    public void A_corrupt_database_gives_an_error_naming_the_file_and_the_fix()
    {
        using var dir = new TempDirectory();
        var path = dir.File("pai.db");
        File.WriteAllBytes(path, [.. Enumerable.Repeat("not a database, just text. "u8.ToArray(), 200).SelectMany(b => b)]);
        var e = Assert.Throws<RunStoreException>(() => new SqliteRunStore(dir.Path));
        Assert.Contains(path, e.Message);
        Assert.Contains("choose another --results directory", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(27 * 200, new FileInfo(path).Length); // left untouched
    }

    [Fact]
    public void A_database_from_a_newer_pai_or_another_program_is_refused()
    {
        using var dir = new TempDirectory();
        using (new SqliteRunStore(dir.Path)) { }
        using (var connection = Open(dir.File("pai.db"))) Query(connection, "PRAGMA user_version = 7");
        var newer = Assert.Throws<RunStoreException>(() => new SqliteRunStore(dir.Path));
        Assert.Contains("schema version 7", newer.Message);
        Assert.Contains(dir.File("pai.db"), newer.Message);
        Assert.Contains("--results", newer.Message);

        using var foreign = new TempDirectory();
        using (var connection = Open(foreign.File("pai.db"))) Query(connection, "CREATE TABLE photos (id INTEGER)");
        var other = Assert.Throws<RunStoreException>(() => new SqliteRunStore(foreign.Path));
        Assert.Contains("not a Pai results store", other.Message);
        Assert.Contains("photos", other.Message);
    }

    // ---- helpers ----

    static SqliteConnection Open(string path)
    {
        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        return connection;
    }

    static object? Query(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteScalar();
    }

    // Edits a run's row behind the store's back, as a process elsewhere (or time) would.
    static void SetColumn(TempDirectory dir, string key, string column, object value)
    {
        using var connection = Open(dir.File("pai.db"));
        using var command = connection.CreateCommand();
        command.CommandText = $"UPDATE runs SET {column} = $value WHERE key = $key";
        command.Parameters.AddWithValue("$value", value);
        command.Parameters.AddWithValue("$key", key);
        Assert.Equal(1, command.ExecuteNonQuery());
    }

    /// <summary>A Pai.StoreWorker child process with redirected standard streams.</summary>
    sealed class Worker : IDisposable
    {
        public required Process Process { get; init; }
        readonly System.Text.StringBuilder stderr = new();

        public static Worker Start(params string[] args)
        {
            var dll = Path.Combine(AppContext.BaseDirectory, "Pai.StoreWorker.dll");
            Assert.True(File.Exists(dll), $"{dll} is missing: the test project references tests/Pai.StoreWorker");
            var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(dll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            var worker = new Worker { Process = Process.Start(psi)! };
            worker.Process.ErrorDataReceived += (_, e) => { lock (worker.stderr) worker.stderr.AppendLine(e.Data); };
            worker.Process.BeginErrorReadLine();
            return worker;
        }

        public string? ReadLine()
        {
            var read = Process.StandardOutput.ReadLineAsync();
            Assert.True(read.Wait(TimeSpan.FromSeconds(60)), $"worker {Process.Id} said nothing for 60 s; stderr: {Stderr}");
            return read.Result ?? $"(end of output; stderr: {Stderr})";
        }

        public List<string> ReadToEnd()
        {
            var read = Process.StandardOutput.ReadToEndAsync();
            Assert.True(read.Wait(TimeSpan.FromSeconds(120)), $"worker {Process.Id} did not finish in 120 s; stderr: {Stderr}");
            return [.. read.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
        }

        public int WaitForExit()
        {
            Assert.True(Process.WaitForExit(TimeSpan.FromSeconds(60)), $"worker {Process.Id} did not exit");
            Process.WaitForExit(); // flush the stderr reader
            Assert.True(Process.ExitCode == 0, $"worker {Process.Id} exited with {Process.ExitCode}; stderr: {Stderr}");
            return Process.ExitCode;
        }

        string Stderr { get { lock (stderr) return stderr.ToString(); } }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }
}
