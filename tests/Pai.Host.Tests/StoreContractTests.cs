using Microsoft.Data.Sqlite;

namespace Pai.Host.Tests;

/// <summary>
/// What every run store promises, run against each implementation: <see cref="SqliteStoreContractTests"/>
/// and <see cref="PostgresStoreContractTests"/>. Each test works on a fresh store; <see cref="Open"/>
/// opens another handle on the same store, as another worker would.
/// </summary>
public abstract class StoreContractTests : IDisposable
{
    protected static readonly RunConfig Snip90 = new() { Model = "vgg16", Dataset = "cifar10", Criterion = "snip", Sparsity = 0.9, Seed = 1 };

    static readonly PruneSummary Prune = new("snip",
        [new LayerDensityRecord("conv1", 12, 100), new LayerDensityRecord("fc", 0, 50)], ["fc"], 1, 0.08);

    static EpochMetrics Epoch(int e) => new(e, 2.0 / e, 0.3 * e, 0.1 / e, 1.5 / e, 0.25 * e, e == 1 ? null : 0.9, 1.25 * e);

    static RunConfig Config(int i) => new() { Criterion = "snip", Sparsity = 0.5, Seed = (ulong)i, Epochs = 3 };

    readonly List<IRunStore> opened = [];

    /// <summary>A handle on this test's store (another worker, unless it is the first).</summary>
    protected abstract IRunStore OpenStore(RunStoreOptions options);

    /// <summary>Makes the lease of the run's holder look expired, behind the store's back (as time passing would).</summary>
    protected abstract void ExpireLease(string key);

    /// <summary>Sets the stored schema version behind the store's back.</summary>
    protected abstract void SetSchemaVersion(int version);

    /// <summary>The schema version this Pai writes for the store.</summary>
    protected abstract int CurrentSchemaVersion { get; }

    IRunStore Open(RunStoreOptions? options = null)
    {
        var store = OpenStore(options ?? new RunStoreOptions());
        opened.Add(store);
        return store;
    }

    public virtual void Dispose()
    {
        foreach (var store in opened) store.Dispose();
    }

    [Fact]
    public void A_run_goes_through_its_life_and_survives_reopening()
    {
        var before = DateTimeOffset.UtcNow.AddSeconds(-1);
        using (var store = OpenStore(new RunStoreOptions()))
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

            Assert.True(store.TryClaim(Snip90.Key));
            Assert.False(store.TryClaim(Snip90.Key)); // held by this store already
            store.RecordPrune(Snip90.Key, Prune, new Dictionary<string, double> { ["warmup"] = 0.5, ["scoring"] = 2.5 });
            store.RecordEpoch(Snip90.Key, Epoch(1));
            store.RecordEpoch(Snip90.Key, Epoch(2));
            var running = store.Get(Snip90.Key)!;
            Assert.Equal(RunStatus.Running, running.Status);
            Assert.Equal(Environment.ProcessId, running.Owner!.ProcessId);
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

        var again = Open();
        var run = again.Get(Snip90.Key)!;
        Assert.Equal(RunStatus.Finished, run.Status);
        Assert.Equal([Epoch(1), Epoch(2), Epoch(3)], run.Epochs);
        Assert.Equal((0.91, 0.995, 0.31), (run.FinalTop1, run.FinalTop5, run.FinalLoss));
        Assert.Equal(new Dictionary<string, double> { ["warmup"] = 0.5, ["scoring"] = 3, ["training"] = 40 }, run.PhaseSeconds);
        Assert.Equal(new Dictionary<string, ulong> { ["init"] = 1, ["data"] = ulong.MaxValue }, run.Seeds);
        Assert.Equal(Prune.Layers, run.Prune!.Layers);
        Assert.Equal(Prune.Collapsed, run.Prune.Collapsed);
        Assert.Equal(("9.9.9", "1.13.1"), (run.PaiVersion, run.LibtorchVersion));
        Assert.Null(run.Error);
        Assert.Equal(1, run.Attempts);
        Assert.InRange(run.Started!.Value, before, run.Finished!.Value);
        Assert.InRange(run.Finished.Value, run.Started.Value, DateTimeOffset.UtcNow.AddSeconds(1));
        Assert.False(again.TryClaim(Snip90.Key, retryFailed: true)); // finished runs are never claimed again

        var all = again.All();
        Assert.Equal([Snip90.Key, new RunConfig { Seed = 3 }.Key], all.Select(r => r.Key));
        Assert.Equal([RunStatus.Finished, RunStatus.Pending], all.Select(r => r.Status));
        Assert.Equal(run.Epochs, all[0].Epochs);
        Assert.Equal(all[1].Key, again.ClaimNext()); // the pending one, not the finished
        Assert.Null(again.ClaimNext());
    }

    [Fact]
    public void Failed_runs_are_claimed_again_only_when_retrying_or_requeued_and_start_from_scratch()
    {
        var store = Open();
        var key = store.RegisterAll([Snip90], "s")[0];
        Assert.Equal(key, store.ClaimNext("s"));
        store.RecordPrune(key, Prune, new Dictionary<string, double> { ["scoring"] = 1 });
        store.RecordEpoch(key, Epoch(1));
        store.Fail(key, "out of memory");
        var failed = store.Get(key)!;
        Assert.Equal((RunStatus.Failed, "out of memory"), (failed.Status, failed.Error));
        Assert.NotNull(failed.Finished);

        Assert.False(store.TryClaim(key));
        Assert.Null(store.ClaimNext("s")); // workers do not retry failed runs
        store.RegisterAll([Snip90], "s", requeueFailed: true); // defining the sweep again does
        Assert.Equal(RunStatus.Pending, store.Get(key)!.Status);
        Assert.True(store.TryClaim(key, retryFailed: true));
        var retried = store.Get(key)!;
        Assert.Equal(RunStatus.Running, retried.Status);
        Assert.Null(retried.Error);
        Assert.Null(retried.Prune);
        Assert.Empty(retried.Epochs);
        Assert.Empty(retried.PhaseSeconds);
        Assert.Equal(2, retried.Attempts);
    }

    [Fact]
    public void Recording_an_epoch_twice_is_refused_and_nan_is_kept_as_missing()
    {
        var store = Open();
        var key = store.Register(Snip90);
        Assert.True(store.TryClaim(key));
        store.RecordEpoch(key, new EpochMetrics(1, double.NaN, 0.1, 0.1, double.NaN, null, null, 1));
        var e = Assert.Throws<RunStoreException>(() => store.RecordEpoch(key, Epoch(1) with { TrainLoss = 7 }));
        Assert.Contains("epoch 1", e.Message);
        var epoch = Assert.Single(store.Get(key)!.Epochs);
        Assert.True(double.IsNaN(epoch.TrainLoss));
        Assert.Null(epoch.TestLoss);
        Assert.Equal(0.1, epoch.TrainTop1);
    }

    [Fact]
    public void Only_the_holder_writes_to_a_run()
    {
        var owner = Open();
        var other = Open();
        var key = owner.Register(Snip90);
        Assert.Throws<RunStoreException>(() => owner.TryClaim("0000000000000000"));
        Assert.Throws<RunClaimLostException>(() => owner.RecordEpoch(key, Epoch(1))); // not claimed yet

        Assert.True(owner.TryClaim(key));
        Assert.False(other.TryClaim(key)); // its lease is fresh
        Assert.Null(other.ClaimNext());
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
    public void An_expired_lease_is_taken_over_and_the_stale_holders_late_writes_are_fenced_off()
    {
        var stale = Open();
        var fresh = Open();
        var key = stale.RegisterAll([Snip90], "s")[0];
        Assert.Equal(key, stale.ClaimNext("s"));
        stale.RecordEpoch(key, Epoch(1));
        stale.RecordEpoch(key, Epoch(2));
        Assert.Null(fresh.ClaimNext("s")); // lease still valid

        ExpireLease(key);
        stale.Heartbeat(key); // the holder renews in time: nothing to take over
        Assert.Null(fresh.ClaimNext("s"));

        ExpireLease(key);
        Assert.Equal(key, fresh.ClaimNext("s"));
        var taken = fresh.Get(key)!;
        Assert.Empty(taken.Epochs); // the earlier attempt's partial epochs are gone
        Assert.Equal(2, taken.Attempts);

        var refused = Assert.Throws<RunClaimLostException>(() => stale.RecordEpoch(key, Epoch(3)));
        Assert.Equal(key, refused.Key);
        Assert.Contains("fencing token", refused.Message);
        Assert.Contains("taken over", refused.Message);
        Assert.Throws<RunClaimLostException>(() => stale.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.1 }));
        Assert.Throws<RunClaimLostException>(() => stale.Fail(key, "late"));
        Assert.Throws<RunClaimLostException>(() => stale.Heartbeat(key));
        Assert.Empty(fresh.Get(key)!.Epochs); // none of the late writes landed

        fresh.RecordEpoch(key, Epoch(1));
        fresh.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.9 });
        var done = fresh.Get(key)!;
        Assert.Equal((RunStatus.Finished, 0.9, (string?)null), (done.Status, done.FinalTop1, done.Error));
        Assert.Equal([Epoch(1)], done.Epochs);
        Assert.Throws<RunClaimLostException>(() => stale.Finish(key, new RunRecord { Key = key, Config = Snip90, FinalTop1 = 0.1 }));
        Assert.Equal(0.9, fresh.Get(key)!.FinalTop1);
    }

    [Fact]
    public void Keep_alive_renews_the_lease_in_the_background()
    {
        var holder = Open();
        var other = Open();
        var key = holder.Register(Snip90);
        Assert.True(holder.TryClaim(key));
        ExpireLease(key);
        var expired = other.Get(key)!.Owner!.Heartbeat;
        using (holder.KeepAlive(key, TimeSpan.FromMilliseconds(50)))
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (other.Get(key)!.Owner!.Heartbeat == expired && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Assert.False(other.TryClaim(key));
        }
        Assert.InRange(other.Get(key)!.Owner!.Heartbeat, DateTimeOffset.UtcNow.AddSeconds(-10), DateTimeOffset.UtcNow.AddSeconds(1));
    }

    [Fact]
    public void Concurrent_workers_claim_every_run_of_a_sweep_exactly_once_in_sweep_order()
    {
        const int runs = 24, workers = 4;
        var first = Open();
        var keys = first.RegisterAll(Enumerable.Range(0, runs).Select(Config), "grid");
        first.RegisterAll([new RunConfig { Seed = 99 }], "other");
        Assert.Equal(keys, first.RegisterAll(Enumerable.Range(0, runs).Select(Config).Reverse(), "grid").Reverse()); // defining it again adds nothing
        var stores = Enumerable.Range(0, workers).Select(_ => Open()).ToList();
        var claimed = new List<string>[workers];
        using var go = new Barrier(workers);
        var threads = Enumerable.Range(0, workers).Select(w => new Thread(() =>
        {
            claimed[w] = [];
            go.SignalAndWait();
            while (stores[w].ClaimNext("grid") is { } key)
            {
                claimed[w].Add(key);
                stores[w].Finish(key, new RunRecord { Key = key, Config = Config(0), FinalTop1 = w });
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        var all = claimed.SelectMany(c => c).ToList();
        Assert.Equal(runs, all.Count);
        Assert.Equal(keys.Order(), all.Order()); // each run once, none of the other sweep
        Assert.All(claimed, c => Assert.Equal(c.OrderBy(k => keys.ToList().IndexOf(k)), c)); // each worker took them in sweep order
        var status = first.Status().ToDictionary(s => s.Sweep);
        Assert.Equal((0, 0, runs, 0), (status["grid"].Pending, status["grid"].Running, status["grid"].Finished, status["grid"].Failed));
        Assert.Equal((1, 0), (status["other"].Pending, status["other"].Finished));
        Assert.All(first.All().Where(r => keys.Contains(r.Key)), r => Assert.Equal(1, r.Attempts));
    }

    [Fact]
    public void Status_shows_who_holds_each_running_run()
    {
        var store = Open(new RunStoreOptions { HostName = "node-7" });
        store.RegisterAll([Config(0), Config(1), Config(2)], "s");
        store.Register(new RunConfig { Seed = 5 }); // in no sweep
        var running = store.ClaimNext("s")!;
        var done = store.ClaimNext("s")!;
        store.Finish(done, new RunRecord { Key = done, Config = Config(1) });
        var s = store.Status().Single(x => x.Sweep == "s");
        Assert.Equal((1, 1, 1, 0, 3), (s.Pending, s.Running, s.Finished, s.Failed, s.Total));
        var held = Assert.Single(s.Held);
        Assert.Equal((running, Environment.ProcessId, "node-7", 1), (held.Key, held.Owner.ProcessId, held.Owner.Host, held.Attempts));
        Assert.InRange(held.HeartbeatAge, TimeSpan.FromSeconds(-5), TimeSpan.FromSeconds(30));
        Assert.Equal(1, store.Status().Single(x => x.Sweep == "").Pending);

        // Claims restricted to some keys of the sweep (the grid a `pai sweep` works on).
        Assert.Null(store.ClaimNext("s", among: [done, running]));
        Assert.Equal(Config(2).Key, store.ClaimNext("s", among: [Config(2).Key, new RunConfig { Seed = 5 }.Key]));
        Assert.Null(store.ClaimNext(null, among: [Config(2).Key]));
        Assert.Equal(new RunConfig { Seed = 5 }.Key, store.ClaimNext(null, among: [new RunConfig { Seed = 5 }.Key]));
    }

    [Fact]
    public void Closing_a_store_returns_its_unfinished_claims_to_pending()
    {
        string key;
        using (var store = OpenStore(new RunStoreOptions()))
        {
            key = store.Register(Snip90);
            var finished = store.Register(Snip90 with { Seed = 2 });
            Assert.True(store.TryClaim(key));
            store.RecordEpoch(key, Epoch(1));
            Assert.True(store.TryClaim(finished));
            store.Finish(finished, new RunRecord { Key = finished, Config = Snip90 });
        }
        var again = Open();
        Assert.Equal([RunStatus.Pending, RunStatus.Finished], again.All().Select(r => r.Status));
        Assert.Equal(key, again.ClaimNext());
        Assert.Empty(again.Get(key)!.Epochs);
    }

    [Fact]
    public void A_store_of_another_schema_version_is_refused_naming_both_versions_and_the_fix()
    {
        using (OpenStore(new RunStoreOptions())) { }
        var current = CurrentSchemaVersion;
        SetSchemaVersion(current + 5);
        var newer = Assert.Throws<RunStoreException>(() => Open());
        Assert.Contains($"schema version {current + 5}", newer.Message);
        Assert.Contains($"schema version {current}", newer.Message);
        Assert.Contains("newer Pai", newer.Message);

        SetSchemaVersion(current - 1);
        var older = Assert.Throws<RunStoreException>(() => Open());
        Assert.Contains($"schema version {current - 1}", older.Message);
        Assert.Contains($"schema version {current}", older.Message);
        Assert.Contains("--migrate", older.Message);
    }

    // Top-1 by cell and seed: dense is the same every seed (narrow at once), snip swings between
    // 20% and 80% (wide at every seed count), magnitude settles at 55% (within ±5 pp from 5 seeds).
    static double SeededTop1(RunConfig c) => c.Criterion switch
    {
        "dense" => 0.5,
        "snip" => c.Seed % 2 == 0 ? 0.2 : 0.8,
        _ => c.Seed switch { 0 => 0.5, 1 => 0.6, _ => 0.55 },
    };

    [Fact]
    public void Sweep_with_a_seed_target_adds_seeds_in_rounds_to_wide_cells_resumes_and_then_adds_nothing()
    {
        var grid = new List<RunConfig>();
        foreach (var seed in new ulong[] { 0, 1 })
        {
            grid.Add(RunPlan.Canonical(new RunConfig { Dataset = "synthetic", Seed = seed }));
            foreach (var criterion in new[] { "snip", "magnitude" })
                grid.Add(RunPlan.Canonical(new RunConfig { Dataset = "synthetic", Criterion = criterion, Sparsity = 0.5, Seed = seed }));
        }
        var target = new SeedTarget(5, 6);
        var rounds = new List<List<string>>();
        // A round as workers run it: another handle claims each run of the sweep and records its top-1.
        void RunRound(IReadOnlyList<RunConfig> round)
        {
            rounds.Add(round.Select(c => $"{c.Criterion} {c.Seed}").ToList());
            var worker = Open();
            Sweep.Define(worker, "s", round);
            while (worker.ClaimNext("s") is { } key)
            {
                var c = worker.Get(key)!.Config;
                worker.Finish(key, new RunRecord { Key = key, Config = c, FinalTop1 = SeededTop1(c) });
            }
        }
        var store = Open();
        Assert.Throws<OperationCanceledException>(() => Sweep.InRounds(store, grid, target, round =>
        {
            if (rounds.Count == 2) // killed after defining the third round, before running it
            {
                rounds.Add(["killed"]);
                Sweep.Define(store, "s", round);
                throw new OperationCanceledException();
            }
            RunRound(round);
        }));
        Assert.Equal(8, store.All().Count(r => r.Status == RunStatus.Finished));
        Assert.Equal(2, store.All().Count(r => r.Status == RunStatus.Pending));

        var log = new List<string>();
        Sweep.InRounds(Open(), grid, target, RunRound, log.Add);
        Assert.Equal<IEnumerable<string>>([
            "dense 0", "snip 0", "magnitude 0", "dense 1", "snip 1", "magnitude 1", "snip 2", "magnitude 2", // given, then the first added round
            "killed",
            "dense 0", "snip 0", "magnitude 0", "dense 1", "snip 1", "magnitude 1", "snip 2", "magnitude 2", "snip 3", "magnitude 3", // the rerun finishes the pending seed 3
            "snip 4", "magnitude 4",
            "snip 5", // magnitude is within ±5 pp at 5 seeds
        ], rounds.SelectMany(r => r));
        Assert.Equal(["dense", "snip", "magnitude"], store.All().GroupBy(r => r.Config.Criterion).Select(g => g.Key));
        Assert.Equal([2, 6, 5], store.All().GroupBy(r => r.Config.Criterion).Select(g => g.Count()));
        Assert.All(store.All(), r => Assert.Equal(RunStatus.Finished, r.Status));
        Assert.Contains(log, l => l.StartsWith("seed 5 for 1 cell whose 95% interval is wider than ±5 pp", StringComparison.Ordinal));
        Assert.Equal("seeds: 2 of 3 cells within ±5 pp, 1 still wider at the limit of 6 seeds", log[^1]);

        // The report names the cell that reached the limit still wide.
        var groups = Pai.Host.Reports.ReportTables.Aggregate(store.All());
        Assert.Equal(["snip"], Pai.Host.Reports.ReportFindings.AtSeedLimit(groups, target).Select(g => g.Criterion));

        // The same sweep again: one round of what it holds, nothing added.
        rounds.Clear();
        Sweep.InRounds(Open(), grid, target, RunRound);
        Assert.Single(rounds);
        Assert.Equal(6 + 7, rounds[0].Count);
        Assert.Equal(13, store.All().Count);
    }
}

/// <summary>The contract on the SQLite store. Each handle has its own host name, so claims are judged by their lease as on a cluster.</summary>
public sealed class SqliteStoreContractTests : StoreContractTests
{
    readonly TempDirectory dir = new();
    int handles;

    protected override IRunStore OpenStore(RunStoreOptions options) =>
        new SqliteRunStore(dir.Path, options.HostName == Environment.MachineName ? options with { HostName = $"host-{++handles}" } : options);

    protected override void ExpireLease(string key) =>
        Sql("UPDATE runs SET heartbeat = $old WHERE key = $key", ("$old", DateTimeOffset.UtcNow.AddHours(-1).ToUnixTimeMilliseconds()), ("$key", key));

    protected override void SetSchemaVersion(int version) => Sql($"PRAGMA user_version = {version}");

    protected override int CurrentSchemaVersion => SqliteRunStore.SchemaVersion;

    void Sql(string sql, params (string, object)[] args)
    {
        using var connection = new SqliteConnection($"Data Source={dir.File("pai.db")};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in args) command.Parameters.AddWithValue(name, value);
        command.ExecuteNonQuery();
    }

    public override void Dispose()
    {
        base.Dispose();
        dir.Dispose();
    }
}

/// <summary>The contract on the PostgreSQL store, each test on a fresh database of the throwaway cluster.</summary>
[Collection("postgres")]
public sealed class PostgresStoreContractTests(PostgresCluster cluster) : StoreContractTests
{
    readonly string url = cluster.NewDatabase();
    readonly TempDirectory artifacts = new();

    protected override IRunStore OpenStore(RunStoreOptions options) => new PostgresRunStore(url, artifacts.Path, options);

    protected override void ExpireLease(string key) =>
        cluster.Execute(url, $"UPDATE pai_runs SET lease_expires = now() - interval '1 second' WHERE key = '{key}'");

    protected override void SetSchemaVersion(int version) => cluster.Execute(url, $"UPDATE pai_meta SET schema_version = {version}");

    protected override int CurrentSchemaVersion => PostgresRunStore.SchemaVersion;

    [Fact]
    public void An_unreachable_server_gives_a_clear_error_naming_the_url_and_the_fix()
    {
        var e = Assert.Throws<RunStoreUnavailableException>(() =>
            new PostgresRunStore($"postgresql:///nowhere?host={artifacts.Path}&user=pai", artifacts.Path));
        Assert.Contains("cannot be reached", e.Message);
        Assert.Contains(artifacts.Path, e.Message);
        Assert.Contains("PostgreSQL server is running", e.Message);
    }

    [Theory]
    [InlineData("postgresql://ann:secret@db.example:6543/sweeps?sslmode=require", "db.example", 6543, "sweeps", "ann", "postgresql://ann:***@db.example:6543/sweeps?sslmode=require")]
    [InlineData("postgres:///pai?host=/run/pg&user=bob", "/run/pg", 5432, "pai", "bob", "postgres:///pai?host=/run/pg&user=bob")]
    [InlineData("postgresql://%2Frun%2Fpg/x", "/run/pg", 5432, "x", null, "postgresql://%2Frun%2Fpg/x")]
    public void Urls_are_read_like_libpq_and_shown_without_the_password(string url, string host, int port, string database, string? user, string shown)
    {
        var (b, text) = PostgresUrl.Parse(url);
        Assert.Equal((host, port, database, shown), (b.Host, b.Port, b.Database, text));
        if (user is not null) Assert.Equal(user, b.Username);
        Assert.Throws<ArgumentException>(() => PostgresUrl.Parse(url + (url.Contains('?') ? "&" : "?") + "colour=blue"));
    }

    public override void Dispose()
    {
        base.Dispose();
        artifacts.Dispose();
    }
}
