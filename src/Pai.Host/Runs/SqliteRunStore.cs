using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Data.Sqlite;

namespace Pai.Host.Runs;

/// <summary>How a run store shares its database with other processes.</summary>
public sealed record RunStoreOptions
{
    /// <summary>
    /// The lease: a claimed run is taken over when its holder has not renewed it for this long
    /// (default 15 minutes). <see cref="SqliteRunStore"/> applies it to claims made on other hosts
    /// (claims on this host are judged by whether their process still exists);
    /// <see cref="PostgresRunStore"/> applies it to every claim, by the database server's clock.
    /// Holders renew it with every record, with <see cref="IRunStore.Heartbeat"/>, or in the
    /// background with <see cref="IRunStore.KeepAlive"/>.
    /// </summary>
    public TimeSpan StaleAfter { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// Upgrade a store written with an older schema version in place (default false: such a store is
    /// refused with an error naming both versions and this fix). Stop workers of the older Pai first.
    /// </summary>
    public bool Migrate { get; init; }

    /// <summary>
    /// Open only a store that exists already (for status, reports and workers): no directory,
    /// database or schema is created, and a missing database, or one that holds no Pai store (an
    /// empty file, say), is refused and left as it is (default false: a missing store is created).
    /// </summary>
    public bool Existing { get; init; }

    /// <summary>How long a statement waits for another process's write to finish (default 60 s).</summary>
    public TimeSpan BusyTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The name this process's claims carry as their host (default: the machine name). Processes
    /// that share a host name judge each other's claims by process id, so give containers that
    /// share one store but not one process table distinct names.
    /// </summary>
    public string HostName { get; init; } = Environment.MachineName;
}

/// <summary>
/// The results store as one SQLite database (<c>pai.db</c>, WAL mode) in a results directory, with
/// the files that belong to runs beside it (<c>masks/</c>, <c>checkpoints/</c>, <c>scores/</c>).
/// Several processes, on one host or sharing the directory, can open it at once: claims are taken
/// in <c>BEGIN IMMEDIATE</c> transactions, so exactly one process gets each run.
/// </summary>
/// <remarks>
/// Ownership: each opened store is an owner identified by process id, host name, the process's
/// start time (so a reused process id is not mistaken for the owner) and a random token (so two
/// stores in one process are different owners). Every write to a run checks that this store still
/// owns it and throws <see cref="RunClaimLostException"/> otherwise. A Running run is taken over
/// by <see cref="TryClaim"/> when its owner is gone: on the same host when no process with its id
/// and start time exists, on another host when its heartbeat is older than
/// <see cref="RunStoreOptions.StaleAfter"/>. A takeover deletes the earlier attempt's epochs.
/// One store object may be used from several threads (calls are serialized).
/// </remarks>
public sealed class SqliteRunStore : IRunStore
{
    /// <summary>The results directory used when none is given: <c>pai-results</c> under the working directory.</summary>
    public const string DefaultDirectory = "pai-results";

    /// <summary>The database's file name inside the results directory.</summary>
    public const string DatabaseFileName = "pai.db";

    /// <summary>The schema version this code writes (SQLite <c>PRAGMA user_version</c>).</summary>
    public const int SchemaVersion = 2;

    // Migrations[i] takes the schema from version i to version i + 1; an empty file gets all of them.
    static readonly string[] Migrations =
    [
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            config TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'finished', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            owner_pid INTEGER,
            owner_host TEXT,
            owner_token TEXT,
            owner_start TEXT,
            heartbeat INTEGER,
            registered INTEGER NOT NULL,
            started INTEGER,
            finished INTEGER,
            pai_version TEXT,
            libtorch_version TEXT,
            seeds TEXT,
            phase_seconds TEXT,
            prune TEXT,
            final_top1 REAL,
            final_top5 REAL,
            final_loss REAL,
            error TEXT
        );
        CREATE INDEX runs_status ON runs (status);
        CREATE TABLE epochs (
            run_key TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE,
            epoch INTEGER NOT NULL,
            train_loss REAL,
            train_top1 REAL,
            learning_rate REAL,
            test_loss REAL,
            test_top1 REAL,
            test_top5 REAL,
            seconds REAL,
            PRIMARY KEY (run_key, epoch)
        ) WITHOUT ROWID;
        """,
        // 2: named sweeps (workers claim the next run of a sweep) and fencing tokens.
        """
        ALTER TABLE runs ADD COLUMN fence INTEGER;
        CREATE TABLE sweep_runs (
            sweep TEXT NOT NULL,
            run_key TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            PRIMARY KEY (sweep, run_key)
        ) WITHOUT ROWID;
        CREATE INDEX sweep_runs_key ON sweep_runs (run_key);
        """,
    ];

    readonly SqliteConnection db;
    readonly Lock gate = new();
    readonly RunStoreOptions options;
    readonly int processId = Environment.ProcessId;
    readonly string processStart;
    readonly string token = Guid.NewGuid().ToString("N");
    // The fencing token of each run this store holds: a claim's writes carry it, a takeover replaces it.
    readonly Dictionary<string, long> held = [];
    bool disposed;

    /// <summary>
    /// Opens the store in <paramref name="directory"/> (default <see cref="DefaultDirectory"/>),
    /// creating the directory, its subfolders and the schema when they are missing (unless
    /// <see cref="RunStoreOptions.Existing"/>). Throws <see cref="RunStoreException"/> naming the
    /// path and the fix when the database is damaged, not a Pai store, or from a newer Pai.
    /// </summary>
    public SqliteRunStore(string? directory = null, RunStoreOptions? options = null)
    {
        this.options = options ?? new RunStoreOptions();
        Directory = Path.GetFullPath(directory ?? DefaultDirectory);
        DatabasePath = Path.Combine(Directory, DatabaseFileName);
        processStart = ProcessIdentity.StartStamp(processId)
            ?? throw new RunStoreException($"cannot read this process's start time (process {processId})");
        if (this.options.Existing && !File.Exists(DatabasePath))
            throw new RunStoreException($"no results store in {Directory} (no {DatabaseFileName}). Choose the --results directory of an existing store.");
        if (!this.options.Existing) RunRows.CreateArtifactDirectory(Directory, "--results");

        db = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = this.options.Existing ? SqliteOpenMode.ReadWrite : SqliteOpenMode.ReadWriteCreate,
            Pooling = false, // a pooled connection would keep the file open after Dispose
            DefaultTimeout = (int)Math.Ceiling(this.options.BusyTimeout.TotalSeconds),
        }.ToString());
        try
        {
            Translate(() =>
            {
                db.Open();
                Execute($"PRAGMA busy_timeout = {(long)this.options.BusyTimeout.TotalMilliseconds}");
                // Reading the header first: a file that is not a database fails here, before any change.
                var found = Convert.ToInt32(Scalar("PRAGMA user_version"), CultureInfo.InvariantCulture);
                CheckVersion(found);
                if (found == 0 && this.options.Existing)
                {
                    RequireEmpty(); // a database of something else is named as such
                    throw new RunStoreException(
                        $"{DatabasePath} holds no Pai results store (it is empty). Choose the --results directory of an existing store, " +
                        "or move the file away and run `./pai sweep` or `./pai run` to create a store there.");
                }
                Scalar("PRAGMA journal_mode = WAL");
                Execute("PRAGMA foreign_keys = ON");
                Execute("PRAGMA synchronous = NORMAL");
                InTransaction(immediate: true, () =>
                {
                    var version = Convert.ToInt32(Scalar("PRAGMA user_version"), CultureInfo.InvariantCulture);
                    CheckVersion(version);
                    if (version == 0) RequireEmpty();
                    for (var v = version; v < SchemaVersion; v++) Execute(Migrations[v]);
                    if (version < SchemaVersion) Execute($"PRAGMA user_version = {SchemaVersion}");
                    return 0;
                });
                return 0;
            });
            // An existing store gets back an artifact folder someone removed, once it proved to be a store.
            if (this.options.Existing) RunRows.CreateArtifactDirectory(Directory, "--results");
        }
        catch
        {
            db.Dispose();
            throw;
        }
    }

    /// <summary>The results directory (absolute).</summary>
    public string Directory { get; }

    /// <summary>The database file (<c>pai.db</c> in <see cref="Directory"/>).</summary>
    public string DatabasePath { get; }

    /// <inheritdoc/>
    public RunStoreOptions Options => options;

    /// <inheritdoc/>
    public string Location => $"--results {Directory}";

    /// <inheritdoc/>
    public string MaskPath(string key) => FileBeside("masks", key, ".safetensors");

    /// <inheritdoc/>
    public string CheckpointPath(string key) => FileBeside("checkpoints", key, ".safetensors");

    /// <inheritdoc/>
    public string StatisticPath(string cacheKey) => FileBeside("scores", cacheKey, ".safetensors");

    /// <inheritdoc/>
    public string Register(RunConfig config) => RegisterAll([config])[0];

    /// <inheritdoc/>
    public IReadOnlyList<string> RegisterAll(IEnumerable<RunConfig> configs, string? sweep = null, bool requeueFailed = false)
    {
        var list = configs.ToList();
        return Write(() =>
        {
            var keys = new List<string>(list.Count);
            var next = Convert.ToInt64(Scalar("SELECT coalesce(max(position), -1) + 1 FROM sweep_runs WHERE sweep = $sweep",
                ("$sweep", sweep ?? "")), CultureInfo.InvariantCulture);
            foreach (var config in list)
            {
                var key = config.Key;
                Execute("""
                    INSERT INTO runs (key, config, registered) VALUES ($key, $config, $now)
                    ON CONFLICT (key) DO NOTHING
                    """, ("$key", key), ("$config", config.CanonicalJson()), ("$now", NowMs()));
                if (sweep is not null)
                    next += Execute("INSERT INTO sweep_runs (sweep, run_key, position) VALUES ($sweep, $key, $position) ON CONFLICT DO NOTHING",
                        ("$sweep", sweep), ("$key", key), ("$position", next));
                if (requeueFailed)
                    Execute("""
                        UPDATE runs SET status = 'pending', owner_pid = NULL, owner_host = NULL, owner_token = NULL,
                            owner_start = NULL, heartbeat = NULL
                        WHERE key = $key AND status = 'failed'
                        """, ("$key", key));
                keys.Add(key);
            }
            return keys;
        });
    }

    /// <inheritdoc/>
    /// <remarks>
    /// A run this store already holds is not claimed again (false). An unknown key throws
    /// <see cref="RunStoreException"/>. A successful claim clears the epochs, prune report,
    /// metrics and error of any earlier attempt and counts one more attempt.
    /// </remarks>
    public bool TryClaim(string key, bool retryFailed = false) => Write(() =>
    {
        var run = ReadOwnership(key);
        var claimable = run.Status switch
        {
            RunStatus.Pending => true,
            RunStatus.Failed => retryFailed,
            RunStatus.Running => OwnerIsGone(key, run),
            _ => false,
        };
        if (!claimable) return false;
        Claim(key);
        return true;
    });

    /// <inheritdoc/>
    public string? ClaimNext(string? sweep = null, IReadOnlyCollection<string>? among = null) => Write(() =>
    {
        using var command = sweep is null
            ? Command("SELECT key FROM runs WHERE status IN ('pending', 'running') ORDER BY id")
            : Command("""
                SELECT r.key FROM sweep_runs s JOIN runs r ON r.key = s.run_key
                WHERE s.sweep = $sweep AND r.status IN ('pending', 'running') ORDER BY s.position
                """, ("$sweep", sweep));
        var candidates = new List<string>();
        using (var r = command.ExecuteReader())
            while (r.Read()) candidates.Add(r.GetString(0));
        foreach (var key in among is null ? candidates : candidates.Where(among.Contains))
        {
            var run = ReadOwnership(key);
            if (run.Status == RunStatus.Pending || (run.Status == RunStatus.Running && OwnerIsGone(key, run)))
            {
                Claim(key);
                return key;
            }
        }
        return null;
    });

    void Claim(string key)
    {
        Execute("DELETE FROM epochs WHERE run_key = $key", ("$key", key));
        var now = NowMs();
        var fence = Convert.ToInt64(Scalar("SELECT coalesce(max(fence), 0) + 1 FROM runs"), CultureInfo.InvariantCulture);
        Execute("""
            UPDATE runs SET status = 'running', attempts = attempts + 1, fence = $fence,
                owner_pid = $pid, owner_host = $host, owner_token = $token, owner_start = $start,
                heartbeat = $now, started = $now, finished = NULL,
                pai_version = $pai, libtorch_version = NULL, seeds = NULL, phase_seconds = NULL,
                prune = NULL, final_top1 = NULL, final_top5 = NULL, final_loss = NULL, error = NULL
            WHERE key = $key
            """, ("$key", key), ("$fence", fence), ("$pid", processId), ("$host", options.HostName), ("$token", token),
            ("$start", processStart), ("$now", now), ("$pai", PaiHost.Version));
        held[key] = fence;
    }

    /// <inheritdoc/>
    public void Heartbeat(string key) => Write(() =>
    {
        RequireOwner(key);
        Execute("UPDATE runs SET heartbeat = $now WHERE key = $key", ("$key", key), ("$now", NowMs()));
        return 0;
    });

    /// <inheritdoc/>
    public IDisposable KeepAlive(string key, TimeSpan? interval = null) => RunLease.KeepAlive(this, options.StaleAfter, key, interval);

    /// <inheritdoc/>
    /// <remarks>
    /// Throws <see cref="RunClaimLostException"/> unless this store holds the run, and
    /// <see cref="RunStoreException"/> when the epoch is already recorded (nothing is overwritten).
    /// NaN metrics are stored as missing and read back as NaN (or null for test metrics).
    /// </remarks>
    public void RecordEpoch(string key, EpochMetrics metrics) => Write(() =>
    {
        RequireOwner(key);
        if (InsertEpoch(key, metrics) == 0)
            throw new RunStoreException($"epoch {metrics.Epoch} of run {key} is already recorded in {DatabasePath}");
        Execute("UPDATE runs SET heartbeat = $now WHERE key = $key", ("$key", key), ("$now", NowMs()));
        return 0;
    });

    /// <inheritdoc/>
    /// <remarks>Phase seconds are merged into those already stored (a phase given again is replaced).</remarks>
    public void RecordPrune(string key, PruneSummary prune, IReadOnlyDictionary<string, double> phaseSeconds) => Write(() =>
    {
        RequireOwner(key);
        var phases = MergePhases(key, phaseSeconds);
        Execute("UPDATE runs SET prune = $prune, phase_seconds = $phases, heartbeat = $now WHERE key = $key",
            ("$key", key), ("$prune", JsonSerializer.Serialize(prune, RunRows.Json)), ("$phases", phases), ("$now", NowMs()));
        return 0;
    });

    /// <inheritdoc/>
    /// <remarks>
    /// Stores the final metrics, seeds and versions of <paramref name="final"/>; its phase seconds
    /// are merged into those recorded; its prune report, when given, replaces the recorded one; its
    /// epochs not yet recorded are added (recorded epochs are kept). Its key, config, status,
    /// times, owner and error are ignored: the store sets them.
    /// </remarks>
    public void Finish(string key, RunRecord final) => Write(() =>
    {
        RequireOwner(key);
        foreach (var epoch in final.Epochs) InsertEpoch(key, epoch);
        var now = NowMs();
        Execute("""
            UPDATE runs SET status = 'finished', finished = $now, heartbeat = $now, error = NULL,
                final_top1 = $top1, final_top5 = $top5, final_loss = $loss,
                seeds = coalesce($seeds, seeds), phase_seconds = $phases, prune = coalesce($prune, prune),
                pai_version = coalesce($pai, pai_version), libtorch_version = coalesce($libtorch, libtorch_version)
            WHERE key = $key
            """, ("$key", key), ("$now", now), ("$top1", final.FinalTop1), ("$top5", final.FinalTop5),
            ("$loss", final.FinalLoss),
            ("$seeds", final.Seeds.Count > 0 ? JsonSerializer.Serialize(final.Seeds, RunRows.Json) : null),
            ("$phases", MergePhases(key, final.PhaseSeconds)),
            ("$prune", final.Prune is null ? null : JsonSerializer.Serialize(final.Prune, RunRows.Json)),
            ("$pai", final.PaiVersion), ("$libtorch", final.LibtorchVersion));
        return 0;
    });

    /// <inheritdoc/>
    /// <remarks>Throws <see cref="RunClaimLostException"/> unless this store holds the run.</remarks>
    public void Fail(string key, string error) => Write(() =>
    {
        RequireOwner(key);
        var now = NowMs();
        Execute("UPDATE runs SET status = 'failed', error = $error, finished = $now, heartbeat = $now WHERE key = $key",
            ("$key", key), ("$error", error), ("$now", now));
        return 0;
    });

    /// <inheritdoc/>
    public RunRecord? Get(string key) => Read(() =>
    {
        var epochs = ReadEpochs("WHERE run_key = $key", ("$key", key));
        using var command = Command($"SELECT {RunRows.RunColumns} FROM runs WHERE key = $key", ("$key", key));
        using var reader = command.ExecuteReader();
        return reader.Read() ? ReadRun(reader, epochs) : null;
    });

    /// <inheritdoc/>
    public IReadOnlyList<RunRecord> All() => Read(() =>
    {
        var epochs = ReadEpochs("");
        using var command = Command($"SELECT {RunRows.RunColumns} FROM runs ORDER BY id");
        using var reader = command.ExecuteReader();
        var runs = new List<RunRecord>();
        while (reader.Read()) runs.Add(ReadRun(reader, epochs));
        return runs;
    });

    /// <inheritdoc/>
    public IReadOnlyList<SweepStatus> Status() => Read(() =>
    {
        var now = NowMs();
        using var command = Command("""
            SELECT coalesce(s.sweep, ''), r.key, r.config, r.status, r.owner_pid, r.owner_host, r.heartbeat, r.attempts
            FROM runs r LEFT JOIN sweep_runs s ON s.run_key = r.key
            ORDER BY coalesce(s.sweep, ''), coalesce(s.position, r.id)
            """);
        using var r = command.ExecuteReader();
        var rows = new List<RunStatusRow>();
        while (r.Read())
            rows.Add(new RunStatusRow(r.GetString(0), r.GetString(1), r.GetString(2), ParseStatus(r.GetString(3)),
                r.IsDBNull(4) ? null : r.GetInt32(4), r.IsDBNull(5) ? null : r.GetString(5),
                r.IsDBNull(6) ? null : DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(6)),
                r.IsDBNull(6) ? null : TimeSpan.FromMilliseconds(now - r.GetInt64(6)), r.GetInt32(7)));
        return RunStatusRow.Summarize(rows);
    });

    /// <summary>
    /// Closes the database. Runs this store still holds (claimed, neither finished nor failed) go
    /// back to Pending, so another process picks them up at once instead of judging them abandoned.
    /// </summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (disposed) return;
            try
            {
                Execute("""
                    UPDATE runs SET status = 'pending', owner_pid = NULL, owner_host = NULL,
                        owner_token = NULL, owner_start = NULL, heartbeat = NULL
                    WHERE status = 'running' AND owner_token = $token
                    """, ("$token", token));
            }
            catch (SqliteException) { } // closing must not fail; the claim then looks abandoned to others
            held.Clear();
            disposed = true;
            db.Dispose();
        }
    }

    // ---- ownership ----

    sealed record Ownership(RunStatus Status, int? Pid, string? Host, string? Token, string? Start, long? Heartbeat, long? Fence);

    Ownership ReadOwnership(string key)
    {
        using var command = Command(
            "SELECT status, owner_pid, owner_host, owner_token, owner_start, heartbeat, fence FROM runs WHERE key = $key",
            ("$key", key));
        using var r = command.ExecuteReader();
        if (!r.Read())
            throw new RunStoreException($"run {key} is not in the store {DatabasePath}: register its configuration first");
        return new Ownership(ParseStatus(r.GetString(0)),
            r.IsDBNull(1) ? null : r.GetInt32(1), r.IsDBNull(2) ? null : r.GetString(2),
            r.IsDBNull(3) ? null : r.GetString(3), r.IsDBNull(4) ? null : r.GetString(4),
            r.IsDBNull(5) ? null : r.GetInt64(5), r.IsDBNull(6) ? null : r.GetInt64(6));
    }

    bool Holds(string key, Ownership run) =>
        run.Status == RunStatus.Running && run.Token == token && held.TryGetValue(key, out var fence) && run.Fence == fence;

    bool OwnerIsGone(string key, Ownership run)
    {
        if (Holds(key, run)) return false;
        if (run.Host == options.HostName && run.Token != token)
            return run.Pid is not { } pid || ProcessIdentity.StartStamp(pid) != run.Start;
        return run.Heartbeat is not { } beat || NowMs() - beat >= (long)options.StaleAfter.TotalMilliseconds;
    }

    void RequireOwner(string key)
    {
        var run = ReadOwnership(key);
        if (Holds(key, run)) return;
        held.TryGetValue(key, out var mine);
        throw new RunClaimLostException(key, RunLease.LostMessage(key, run.Status, held.ContainsKey(key) ? mine : null, run.Fence,
            $"process {run.Pid} on {run.Host}"));
    }

    // ---- schema ----

    void CheckVersion(int version)
    {
        if (version < 0)
            throw new RunStoreException(
                $"{DatabasePath} is not a Pai results database (user_version {version}). Choose another --results directory.");
        RunLease.CheckSchema(DatabasePath, Location, version == 0 ? null : version, SchemaVersion, options.Migrate);
    }

    void RequireEmpty()
    {
        using var command = Command("SELECT group_concat(name, ', ') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'");
        if (command.ExecuteScalar() is string tables && tables.Length > 0)
            throw new RunStoreException(
                $"{DatabasePath} is an SQLite database but not a Pai results store (it holds {tables}). " +
                "Choose another --results directory.");
    }

    // ---- rows ----

    // Returns 0 when the epoch is already recorded (nothing is overwritten).
    int InsertEpoch(string key, EpochMetrics m) => Execute("""
        INSERT INTO epochs (run_key, epoch, train_loss, train_top1, learning_rate, test_loss, test_top1, test_top5, seconds)
        VALUES ($key, $epoch, $trainLoss, $trainTop1, $lr, $testLoss, $testTop1, $testTop5, $seconds)
        ON CONFLICT (run_key, epoch) DO NOTHING
        """, ("$key", key), ("$epoch", m.Epoch), ("$trainLoss", m.TrainLoss), ("$trainTop1", m.TrainTop1),
        ("$lr", m.LearningRate), ("$testLoss", m.TestLoss), ("$testTop1", m.TestTop1), ("$testTop5", m.TestTop5),
        ("$seconds", m.Seconds));

    string MergePhases(string key, IReadOnlyDictionary<string, double> phases) =>
        RunRows.MergePhases(Scalar("SELECT phase_seconds FROM runs WHERE key = $key", ("$key", key)) as string, phases);

    Dictionary<string, List<EpochMetrics>> ReadEpochs(string where, params (string Name, object? Value)[] args)
    {
        using var command = Command($"SELECT {RunRows.EpochColumns} FROM epochs {where} ORDER BY run_key, epoch", args);
        using var r = command.ExecuteReader();
        return RunRows.ReadEpochs(r);
    }

    static RunRecord ReadRun(SqliteDataReader r, Dictionary<string, List<EpochMetrics>> epochs) =>
        RunRows.ReadRun(r, epochs, (reader, i) => DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(i)));

    static RunStatus ParseStatus(string status) => RunRows.ParseStatus(status);

    string FileBeside(string folder, string name, string extension) => RunRows.ArtifactPath(Directory, folder, name, extension);

    // ---- SQL plumbing ----

    static long NowMs() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    SqliteCommand Command(string sql, params (string Name, object? Value)[] args)
    {
        var command = db.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in args)
            // SQLite has no NaN (Microsoft.Data.Sqlite refuses it): a diverged loss is stored as missing.
            command.Parameters.AddWithValue(name, value is null or double.NaN ? DBNull.Value : value);
        return command;
    }

    int Execute(string sql, params (string Name, object? Value)[] args)
    {
        using var command = Command(sql, args);
        return command.ExecuteNonQuery();
    }

    object? Scalar(string sql, params (string Name, object? Value)[] args)
    {
        using var command = Command(sql, args);
        var value = command.ExecuteScalar();
        return value is DBNull ? null : value;
    }

    // Writes take the database's write lock up front (BEGIN IMMEDIATE): a read that later upgrades
    // to a write can fail with SQLITE_BUSY at once in WAL mode, without waiting.
    T Write<T>(Func<T> body) => Locked(() => InTransaction(immediate: true, body));

    // Reads run in one (deferred) transaction so that a run and its epochs come from one snapshot.
    T Read<T>(Func<T> body) => Locked(() => InTransaction(immediate: false, body));

    T Locked<T>(Func<T> body)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            return Translate(body);
        }
    }

    T InTransaction<T>(bool immediate, Func<T> body)
    {
        Execute(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
        try
        {
            var result = body();
            Execute("COMMIT");
            return result;
        }
        catch
        {
            try { Execute("ROLLBACK"); } catch (SqliteException) { }
            throw;
        }
    }

    T Translate<T>(Func<T> body)
    {
        try
        {
            return body();
        }
        catch (SqliteException e) when (e.SqliteErrorCode is 11 or 26) // SQLITE_CORRUPT, SQLITE_NOTADB
        {
            throw new RunStoreException(
                $"The results database {DatabasePath} cannot be read: {e.Message} It is damaged or not a Pai " +
                $"results store. Choose another --results directory, or move {DatabasePath} away to start an empty store.", e);
        }
        catch (SqliteException e) when (e.SqliteErrorCode is 8 or 14) // SQLITE_READONLY, SQLITE_CANTOPEN
        {
            throw new RunStoreException(
                $"The results database {DatabasePath} cannot be opened for writing: {e.Message} " +
                "Check its permissions, or choose another --results directory.", e);
        }
        catch (SqliteException e) when (e.SqliteErrorCode is 5 or 6) // SQLITE_BUSY, SQLITE_LOCKED
        {
            throw new RunStoreException(
                $"The results database {DatabasePath} stayed locked by another process for more than " +
                $"{options.BusyTimeout.TotalSeconds:0} s: {e.Message} Try again, or raise the busy timeout.", e);
        }
    }
}

/// <summary>Identifies a process across id reuse: its start time, as the operating system reports it.</summary>
static class ProcessIdentity
{
    static readonly string BootId = ReadBootId();

    /// <summary>
    /// A string that differs between two processes that had the same id at different times
    /// (Linux: boot id and start time in clock ticks from /proc/PID/stat); null when no process
    /// with this id exists (or it is a zombie).
    /// </summary>
    public static string? StartStamp(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            string stat;
            try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
            // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
            // Fields after it start at field 3 (state); the start time is field 22.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // A zombie ('Z') has exited and only waits for its parent to read its status.
            return fields.Length > 19 && fields[0] != "Z" ? $"{BootId}:{fields[19]}" : null;
        }
        try
        {
            using var process = Process.GetProcessById(pid);
            return process.StartTime.ToUniversalTime().Ticks.ToString(CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    static string ReadBootId()
    {
        try { return File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return "unknown-boot"; }
    }
}
