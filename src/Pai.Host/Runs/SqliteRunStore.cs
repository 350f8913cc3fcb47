using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Data.Sqlite;

namespace Pai.Host.Runs;

/// <summary>How a <see cref="SqliteRunStore"/> shares its database with other processes.</summary>
public sealed record RunStoreOptions
{
    /// <summary>
    /// A run claimed on another host is taken over when its heartbeat is at least this old
    /// (default 15 minutes). Claims on this host are judged by whether their process still exists,
    /// not by this. Owners refresh the heartbeat with every record, with
    /// <see cref="SqliteRunStore.Heartbeat"/>, or in the background with <see cref="SqliteRunStore.KeepAlive"/>.
    /// </summary>
    public TimeSpan StaleAfter { get; init; } = TimeSpan.FromMinutes(15);

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
    public const int SchemaVersion = 1;

    const string Schema = """
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
        """;

    const string RunColumns = """
        key, config, status, attempts, owner_pid, owner_host, heartbeat, started, finished,
        pai_version, libtorch_version, seeds, phase_seconds, prune, final_top1, final_top5, final_loss, error
        """;

    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    readonly SqliteConnection db;
    readonly Lock gate = new();
    readonly RunStoreOptions options;
    readonly int processId = Environment.ProcessId;
    readonly string processStart;
    readonly string token = Guid.NewGuid().ToString("N");
    bool disposed;

    /// <summary>
    /// Opens the store in <paramref name="directory"/> (default <see cref="DefaultDirectory"/>),
    /// creating the directory, its subfolders and the schema when they are missing.
    /// Throws <see cref="RunStoreException"/> naming the path and the fix when the database is
    /// damaged, not a Pai store, or from a newer Pai.
    /// </summary>
    public SqliteRunStore(string? directory = null, RunStoreOptions? options = null)
    {
        this.options = options ?? new RunStoreOptions();
        Directory = Path.GetFullPath(directory ?? DefaultDirectory);
        DatabasePath = Path.Combine(Directory, DatabaseFileName);
        processStart = ProcessIdentity.StartStamp(processId)
            ?? throw new RunStoreException($"cannot read this process's start time (process {processId})");
        try
        {
            foreach (var sub in new[] { "masks", "checkpoints", "scores" })
                System.IO.Directory.CreateDirectory(Path.Combine(Directory, sub));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RunStoreException(
                $"cannot create the results directory {Directory}: {e.Message}. Choose another --results directory.", e);
        }

        db = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
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
                CheckVersion(Convert.ToInt32(Scalar("PRAGMA user_version"), CultureInfo.InvariantCulture));
                Scalar("PRAGMA journal_mode = WAL");
                Execute("PRAGMA foreign_keys = ON");
                Execute("PRAGMA synchronous = NORMAL");
                InTransaction(immediate: true, () =>
                {
                    var version = Convert.ToInt32(Scalar("PRAGMA user_version"), CultureInfo.InvariantCulture);
                    CheckVersion(version);
                    if (version == 0) CreateSchema();
                    return 0;
                });
                return 0;
            });
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

    /// <summary>The options this store was opened with.</summary>
    public RunStoreOptions Options => options;

    /// <inheritdoc/>
    public string MaskPath(string key) => FileBeside("masks", key, ".safetensors");

    /// <inheritdoc/>
    public string CheckpointPath(string key) => FileBeside("checkpoints", key, ".safetensors");

    /// <inheritdoc/>
    public string ScoreCachePath(string cacheKey) => FileBeside("scores", cacheKey, ".safetensors");

    /// <inheritdoc/>
    public string Register(RunConfig config) => RegisterAll([config])[0];

    /// <summary>
    /// Adds every config as Pending unless the store already knows its key, in one transaction
    /// (much faster than one <see cref="Register"/> per config for a sweep). Returns the keys in order.
    /// </summary>
    public IReadOnlyList<string> RegisterAll(IEnumerable<RunConfig> configs)
    {
        var list = configs.ToList();
        return Write(() =>
        {
            var keys = new List<string>(list.Count);
            foreach (var config in list)
            {
                var key = config.Key;
                Execute("""
                    INSERT INTO runs (key, config, registered) VALUES ($key, $config, $now)
                    ON CONFLICT (key) DO NOTHING
                    """, ("$key", key), ("$config", config.CanonicalJson()), ("$now", NowMs()));
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
            RunStatus.Running => OwnerIsGone(run),
            _ => false,
        };
        if (!claimable) return false;
        Execute("DELETE FROM epochs WHERE run_key = $key", ("$key", key));
        var now = NowMs();
        Execute("""
            UPDATE runs SET status = 'running', attempts = attempts + 1,
                owner_pid = $pid, owner_host = $host, owner_token = $token, owner_start = $start,
                heartbeat = $now, started = $now, finished = NULL,
                pai_version = $pai, libtorch_version = NULL, seeds = NULL, phase_seconds = NULL,
                prune = NULL, final_top1 = NULL, final_top5 = NULL, final_loss = NULL, error = NULL
            WHERE key = $key
            """, ("$key", key), ("$pid", processId), ("$host", options.HostName), ("$token", token),
            ("$start", processStart), ("$now", now), ("$pai", PaiHost.Version));
        return true;
    });

    /// <inheritdoc/>
    public void Heartbeat(string key) => Write(() =>
    {
        RequireOwner(key);
        Execute("UPDATE runs SET heartbeat = $now WHERE key = $key", ("$key", key), ("$now", NowMs()));
        return 0;
    });

    /// <summary>
    /// Refreshes the heartbeat of a claimed run in the background every <paramref name="interval"/>
    /// (default: a quarter of <see cref="RunStoreOptions.StaleAfter"/>) until disposed, for phases
    /// that record nothing for a long time. A lost claim is not reported here: the next record,
    /// <see cref="Finish"/> or <see cref="Fail"/> throws <see cref="RunClaimLostException"/>.
    /// </summary>
    public IDisposable KeepAlive(string key, TimeSpan? interval = null)
    {
        var period = interval ?? TimeSpan.FromTicks(Math.Max(options.StaleAfter.Ticks / 4, TimeSpan.TicksPerSecond));
        return new Timer(_ =>
        {
            // An exception escaping a timer callback would end the process; the claim's loss surfaces at the next write.
            try { Heartbeat(key); } catch (Exception) { }
        }, null, period, period);
    }

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
            ("$key", key), ("$prune", JsonSerializer.Serialize(prune, Json)), ("$phases", phases), ("$now", NowMs()));
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
            ("$seeds", final.Seeds.Count > 0 ? JsonSerializer.Serialize(final.Seeds, Json) : null),
            ("$phases", MergePhases(key, final.PhaseSeconds)),
            ("$prune", final.Prune is null ? null : JsonSerializer.Serialize(final.Prune, Json)),
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
        using var command = Command($"SELECT {RunColumns} FROM runs WHERE key = $key", ("$key", key));
        using var reader = command.ExecuteReader();
        return reader.Read() ? ReadRun(reader, epochs) : null;
    });

    /// <inheritdoc/>
    public IReadOnlyList<RunRecord> All() => Read(() =>
    {
        var epochs = ReadEpochs("");
        using var command = Command($"SELECT {RunColumns} FROM runs ORDER BY id");
        using var reader = command.ExecuteReader();
        var runs = new List<RunRecord>();
        while (reader.Read()) runs.Add(ReadRun(reader, epochs));
        return runs;
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
            disposed = true;
            db.Dispose();
        }
    }

    // ---- ownership ----

    sealed record Ownership(RunStatus Status, int? Pid, string? Host, string? Token, string? Start, long? Heartbeat);

    Ownership ReadOwnership(string key)
    {
        using var command = Command(
            "SELECT status, owner_pid, owner_host, owner_token, owner_start, heartbeat FROM runs WHERE key = $key",
            ("$key", key));
        using var r = command.ExecuteReader();
        if (!r.Read())
            throw new RunStoreException($"run {key} is not in the store {DatabasePath}: register its configuration first");
        return new Ownership(ParseStatus(r.GetString(0)),
            r.IsDBNull(1) ? null : r.GetInt32(1), r.IsDBNull(2) ? null : r.GetString(2),
            r.IsDBNull(3) ? null : r.GetString(3), r.IsDBNull(4) ? null : r.GetString(4),
            r.IsDBNull(5) ? null : r.GetInt64(5));
    }

    bool OwnerIsGone(Ownership run)
    {
        if (run.Token == token) return false; // this store holds it
        if (run.Host == options.HostName)
            return run.Pid is not { } pid || ProcessIdentity.StartStamp(pid) != run.Start;
        return run.Heartbeat is not { } beat || NowMs() - beat >= (long)options.StaleAfter.TotalMilliseconds;
    }

    void RequireOwner(string key)
    {
        var run = ReadOwnership(key);
        if (run.Status == RunStatus.Running && run.Token == token) return;
        var mine = run.Token == token;
        var holder = $"process {run.Pid} on {run.Host}";
        throw new RunClaimLostException(key, run.Status switch
        {
            RunStatus.Running =>
                $"run {key} was taken over by {holder} (this process's claim looked abandoned); stop working on it",
            RunStatus.Pending => $"run {key} is not claimed by this process: claim it with TryClaim first",
            RunStatus.Finished => mine
                ? $"run {key} is already finished"
                : $"run {key} was taken over and finished by {holder}; stop working on it",
            _ => mine
                ? $"run {key} has already failed"
                : $"run {key} was taken over by {holder} and failed there; stop working on it",
        });
    }

    // ---- schema ----

    void CheckVersion(int version)
    {
        if (version > SchemaVersion)
            throw new RunStoreException(
                $"The results database {DatabasePath} has schema version {version}, newer than this Pai " +
                $"({PaiHost.Version}, schema version {SchemaVersion}) can read. Use the newer Pai that wrote it, " +
                "or choose another --results directory.");
        if (version < 0)
            throw new RunStoreException(
                $"{DatabasePath} is not a Pai results database (user_version {version}). Choose another --results directory.");
    }

    void CreateSchema()
    {
        using (var command = Command("SELECT group_concat(name, ', ') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
            if (command.ExecuteScalar() is string tables && tables.Length > 0)
                throw new RunStoreException(
                    $"{DatabasePath} is an SQLite database but not a Pai results store (it holds {tables}). " +
                    "Choose another --results directory.");
        Execute(Schema);
        Execute($"PRAGMA user_version = {SchemaVersion}");
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

    string MergePhases(string key, IReadOnlyDictionary<string, double> phases)
    {
        var stored = Scalar("SELECT phase_seconds FROM runs WHERE key = $key", ("$key", key)) as string;
        var merged = stored is null
            ? new SortedDictionary<string, double>(StringComparer.Ordinal)
            : new SortedDictionary<string, double>(
                JsonSerializer.Deserialize<Dictionary<string, double>>(stored, Json)!, StringComparer.Ordinal);
        foreach (var (phase, seconds) in phases) merged[phase] = seconds;
        return JsonSerializer.Serialize(merged, Json);
    }

    Dictionary<string, List<EpochMetrics>> ReadEpochs(string where, params (string Name, object? Value)[] args)
    {
        using var command = Command($"""
            SELECT run_key, epoch, train_loss, train_top1, learning_rate, test_loss, test_top1, test_top5, seconds
            FROM epochs {where} ORDER BY run_key, epoch
            """, args);
        using var r = command.ExecuteReader();
        var byRun = new Dictionary<string, List<EpochMetrics>>();
        while (r.Read())
        {
            var key = r.GetString(0);
            if (!byRun.TryGetValue(key, out var list)) byRun[key] = list = [];
            list.Add(new EpochMetrics(r.GetInt32(1), Real(r, 2), Real(r, 3), Real(r, 4),
                NullableReal(r, 5), NullableReal(r, 6), NullableReal(r, 7), Real(r, 8)));
        }
        return byRun;
    }

    static RunRecord ReadRun(SqliteDataReader r, Dictionary<string, List<EpochMetrics>> epochs)
    {
        var key = r.GetString(0);
        string? Text(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        DateTimeOffset? Time(int i) => r.IsDBNull(i) ? null : DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(i));
        T? FromJson<T>(int i) where T : class => Text(i) is { } json ? JsonSerializer.Deserialize<T>(json, Json) : null;
        return new RunRecord
        {
            Key = key,
            Config = RunConfig.FromJson(r.GetString(1)),
            Status = ParseStatus(r.GetString(2)),
            Attempts = r.GetInt32(3),
            Owner = r.IsDBNull(4) ? null : new RunOwner(r.GetInt32(4), r.GetString(5), Time(6) ?? default),
            Started = Time(7),
            Finished = Time(8),
            PaiVersion = Text(9),
            LibtorchVersion = Text(10),
            Seeds = FromJson<Dictionary<string, ulong>>(11) ?? new Dictionary<string, ulong>(),
            PhaseSeconds = FromJson<Dictionary<string, double>>(12) ?? new Dictionary<string, double>(),
            Prune = FromJson<PruneSummary>(13),
            FinalTop1 = NullableReal(r, 14),
            FinalTop5 = NullableReal(r, 15),
            FinalLoss = NullableReal(r, 16),
            Error = Text(17),
            Epochs = epochs.TryGetValue(key, out var list) ? list : [],
        };
    }

    static double Real(SqliteDataReader r, int i) => r.IsDBNull(i) ? double.NaN : r.GetDouble(i);
    static double? NullableReal(SqliteDataReader r, int i) => r.IsDBNull(i) ? null : r.GetDouble(i);

    static RunStatus ParseStatus(string status) => status switch
    {
        "pending" => RunStatus.Pending,
        "running" => RunStatus.Running,
        "finished" => RunStatus.Finished,
        "failed" => RunStatus.Failed,
        _ => throw new RunStoreException($"unknown run status '{status}' in the results database"),
    };

    string FileBeside(string folder, string name, string extension)
    {
        if (string.IsNullOrEmpty(name) || name[0] == '.' || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw new ArgumentException($"'{name}' is not a valid key for a file name (letters, digits, '-', '_', '.')", nameof(name));
        return Path.Combine(Directory, folder, name + extension);
    }

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
