using System.Diagnostics;
using Microsoft.Data.Sqlite;
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
        // The device is where a run computes, not what it is: the key ignores it, the record keeps it.
        Assert.Equal("44136fa355b3678a", new RunConfig { Device = "cpu" }.Key);
        Assert.Contains("\"device\":\"cpu\"", new RunConfig { Device = "cpu" }.CanonicalJson());
        Assert.Equal(Device.Cpu, RunPlan.DeviceOf(new RunConfig().Device)); // Debian's libtorch sees no GPU
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

    // Common behaviour of both stores is in StoreContractTests; these are the SQLite store's own.

    // ---- ownership by process ----

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
            Assert.Equal(Path.Combine(results, "scores", "snip-abc.safetensors"), store.StatisticPath("snip-abc"));
            Assert.Throws<ArgumentException>(() => store.MaskPath("../escape"));
            Assert.Throws<ArgumentException>(() => store.StatisticPath(""));
            foreach (var sub in new[] { "masks", "checkpoints", "scores" })
                Assert.True(Directory.Exists(Path.Combine(results, sub)), sub);
        }
        using var connection = Open(Path.Combine(results, "pai.db"));
        Assert.Equal("wal", Query(connection, "PRAGMA journal_mode"));
        Assert.Equal((long)SqliteRunStore.SchemaVersion, Query(connection, "PRAGMA user_version"));
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
    public void An_existing_store_is_only_opened_never_created()
    {
        using var dir = new TempDirectory();
        var existing = new RunStoreOptions { Existing = true };
        // No database: refused, and no folder or file is created.
        var missing = Assert.Throws<RunStoreException>(() => new SqliteRunStore(dir.File("results"), existing));
        Assert.Contains("no results store in", missing.Message);
        Assert.False(Directory.Exists(dir.File("results")));
        // An empty file (as `touch pai.db` leaves) is refused byte for byte as it was, with no WAL beside it.
        var empty = dir.File("pai.db");
        File.WriteAllBytes(empty, []);
        var e = Assert.Throws<RunStoreException>(() => new SqliteRunStore(dir.Path, existing));
        Assert.Contains($"{empty} holds no Pai results store (it is empty)", e.Message);
        Assert.Equal(0, new FileInfo(empty).Length);
        Assert.Equal(["pai.db"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
        // A store that exists opens as always.
        File.Delete(empty);
        using (var created = new SqliteRunStore(dir.Path)) created.Register(Snip90);
        using var store = new SqliteRunStore(dir.Path, existing);
        Assert.Single(store.All());
    }

    [Theory]
    [InlineData("connect_timeout=abc", "connect_timeout=abc in the --store URL is not a whole number from 0 to 1024 seconds")]
    [InlineData("connect_timeout=99999999999", "connect_timeout=99999999999 in the --store URL is not a whole number from 0 to 1024 seconds")]
    [InlineData("connect_timeout=-1", "connect_timeout=-1 in the --store URL is not a whole number from 0 to 1024 seconds")]
    [InlineData("connect_timeout=1025", "connect_timeout=1025 in the --store URL is not a whole number from 0 to 1024 seconds")]
    [InlineData("port=0", "port=0 in the --store URL is not a whole number from 1 to 65535")]
    [InlineData("port=http", "port=http in the --store URL is not a whole number from 1 to 65535")]
    [InlineData("sslmode=always", "sslmode=always in the --store URL is not one of disable")]
    [InlineData("colour=blue", "the --store URL parameter 'colour' is not supported")]
    [InlineData("verbose", "'verbose' in the --store URL is not name=value")]
    public void A_malformed_store_url_is_bad_input_naming_the_parameter_and_its_range(string parameter, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => PostgresUrl.Parse($"postgresql://ann:secret@db.example/x?{parameter}"));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain("secret", e.Message);
        Assert.Equal(3, PostgresUrl.Parse("postgresql://db.example/x?connect_timeout=3").Settings.Timeout);
        Assert.Equal(10, PostgresUrl.Parse("postgresql://db.example/x").Settings.Timeout);
    }

    [Fact]
    public void A_database_of_another_program_is_refused()
    {
        using var foreign = new TempDirectory();
        using (var connection = Open(foreign.File("pai.db"))) Query(connection, "CREATE TABLE photos (id INTEGER)");
        var other = Assert.Throws<RunStoreException>(() => new SqliteRunStore(foreign.Path));
        Assert.Contains("not a Pai results store", other.Message);
        Assert.Contains("photos", other.Message);
    }

    [Fact]
    public void A_version_1_store_is_refused_until_migrated_and_keeps_its_runs()
    {
        using var dir = new TempDirectory();
        using (var connection = Open(dir.File("pai.db")))
        {
            // The schema of version 1, as Pai wrote it before sweeps and fencing tokens.
            Query(connection, """
                CREATE TABLE runs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, config TEXT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'finished', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0, owner_pid INTEGER, owner_host TEXT, owner_token TEXT, owner_start TEXT,
                    heartbeat INTEGER, registered INTEGER NOT NULL, started INTEGER, finished INTEGER, pai_version TEXT,
                    libtorch_version TEXT, seeds TEXT, phase_seconds TEXT, prune TEXT, final_top1 REAL, final_top5 REAL,
                    final_loss REAL, error TEXT);
                CREATE INDEX runs_status ON runs (status);
                CREATE TABLE epochs (run_key TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE, epoch INTEGER NOT NULL,
                    train_loss REAL, train_top1 REAL, learning_rate REAL, test_loss REAL, test_top1 REAL, test_top5 REAL, seconds REAL,
                    PRIMARY KEY (run_key, epoch)) WITHOUT ROWID;
                PRAGMA user_version = 1;
                """);
            Query(connection, $"INSERT INTO runs (key, config, status, registered, final_top1) VALUES ('{Snip90.Key}', '{Snip90.CanonicalJson()}', 'finished', 0, 0.75)");
            Query(connection, $"INSERT INTO runs (key, config, registered) VALUES ('{(Snip90 with { Seed = 2 }).Key}', '{(Snip90 with { Seed = 2 }).CanonicalJson()}', 1)");
        }
        var refused = Assert.Throws<RunStoreException>(() => new SqliteRunStore(dir.Path));
        Assert.Contains("schema version 1", refused.Message);
        Assert.Contains($"schema version {SqliteRunStore.SchemaVersion}", refused.Message);
        Assert.Contains($"pai status --results {dir.Path} --migrate", refused.Message);

        using (new SqliteRunStore(dir.Path, new RunStoreOptions { Migrate = true })) { }
        using var store = new SqliteRunStore(dir.Path);
        Assert.Equal(0.75, store.Get(Snip90.Key)!.FinalTop1);
        store.RegisterAll([Snip90, Snip90 with { Seed = 2 }], "old");
        Assert.Equal((Snip90 with { Seed = 2 }).Key, store.ClaimNext("old"));
        Assert.Null(store.ClaimNext("old"));
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
            var worker = new Worker { Process = Process.Start(Processes.TestProgram("Pai.StoreWorker", args, input: true))! };
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
