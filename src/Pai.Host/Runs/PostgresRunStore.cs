using System.Collections.Concurrent;
using System.Data;
using System.Globalization;
using System.Text.Json;
using Npgsql;

namespace Pai.Host.Runs;

/// <summary>
/// The results store in a PostgreSQL database, shared by workers on any number of machines. The
/// database holds everything the report needs (configs, states, metrics, prune reports); masks,
/// checkpoints and cached scores go to an artifact directory that every worker and the report can
/// read (a shared file system when workers run on several machines).
/// </summary>
/// <remarks>
/// Claims: the next run of a sweep is taken with <c>SELECT … FOR UPDATE SKIP LOCKED</c>, so
/// concurrent workers never wait on each other and never get the same run. Leases: a claim holds
/// the run until <see cref="RunStoreOptions.StaleAfter"/> after its last renewal, timed by the
/// database server's clock (workers' clocks may disagree); after that any worker may take it over.
/// Fencing: each claim draws a new token from a sequence; every write locks the run's row and
/// checks that the token is still the one this store drew, so a stale worker's late write (after a
/// pause or a lost network) is refused with <see cref="RunClaimLostException"/> and changes nothing.
/// Connections are opened per operation (no pool), so a restarted server is picked up at once; an
/// unreachable server gives <see cref="RunStoreUnavailableException"/>.
/// </remarks>
public sealed class PostgresRunStore : IRunStore
{
    /// <summary>The schema version this code writes (table <c>pai_meta</c>).</summary>
    public const int SchemaVersion = 1;

    // Migrations[i] takes the schema from version i to version i + 1; an empty database gets all of them.
    // Table names carry a pai_ prefix so the database can be shared with other applications.
    static readonly string[] Migrations =
    [
        """
        CREATE TABLE pai_meta (schema_version integer NOT NULL);
        INSERT INTO pai_meta VALUES (0);
        CREATE SEQUENCE pai_fences;
        CREATE TABLE pai_runs (
            id bigserial PRIMARY KEY,
            key text NOT NULL UNIQUE,
            config text NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'finished', 'failed')),
            attempts integer NOT NULL DEFAULT 0,
            fence bigint,
            owner_pid integer,
            owner_host text,
            owner_token text,
            heartbeat timestamptz,
            lease_expires timestamptz,
            registered timestamptz NOT NULL DEFAULT now(),
            started timestamptz,
            finished timestamptz,
            pai_version text,
            libtorch_version text,
            seeds text,
            phase_seconds text,
            prune text,
            final_top1 double precision,
            final_top5 double precision,
            final_loss double precision,
            error text
        );
        CREATE INDEX pai_runs_status ON pai_runs (status);
        CREATE TABLE pai_epochs (
            run_key text NOT NULL REFERENCES pai_runs (key) ON DELETE CASCADE,
            epoch integer NOT NULL,
            train_loss double precision,
            train_top1 double precision,
            learning_rate double precision,
            test_loss double precision,
            test_top1 double precision,
            test_top5 double precision,
            seconds double precision,
            PRIMARY KEY (run_key, epoch)
        );
        CREATE TABLE pai_sweep_runs (
            sweep text NOT NULL,
            run_key text NOT NULL REFERENCES pai_runs (key) ON DELETE CASCADE,
            position integer NOT NULL,
            PRIMARY KEY (sweep, run_key)
        );
        CREATE INDEX pai_sweep_runs_key ON pai_sweep_runs (run_key);
        """,
    ];

    // The columns a claim resets: an earlier attempt's partial results are cleared.
    const string ClaimSet = """
        status = 'running', attempts = attempts + 1, fence = nextval('pai_fences'),
        owner_pid = @pid, owner_host = @host, owner_token = @token,
        heartbeat = now(), lease_expires = now() + @lease, started = now(), finished = NULL,
        pai_version = @pai, libtorch_version = NULL, seeds = NULL, phase_seconds = NULL,
        prune = NULL, final_top1 = NULL, final_top5 = NULL, final_loss = NULL, error = NULL
        """;

    // Renews the lease of the run whose row the statement touches.
    const string Renew = "heartbeat = now(), lease_expires = now() + @lease";

    readonly NpgsqlDataSource source;
    readonly RunStoreOptions options;
    readonly string token = Guid.NewGuid().ToString("N");
    readonly int processId = Environment.ProcessId;
    readonly ConcurrentDictionary<string, long> held = new();
    bool disposed;

    /// <summary>
    /// Opens the store at <paramref name="url"/> (<c>postgresql://[user[:password]@]host[:port]/database</c>,
    /// or a Unix socket as <c>postgresql:///database?host=/socket/dir</c>) with artifacts in
    /// <paramref name="artifactDirectory"/>, creating the schema in an empty database. Throws
    /// <see cref="RunStoreUnavailableException"/> when the server cannot be reached,
    /// <see cref="ArgumentException"/> for a malformed URL and <see cref="RunStoreException"/> for a
    /// schema of another version.
    /// </summary>
    public PostgresRunStore(string url, string artifactDirectory, RunStoreOptions? options = null)
    {
        this.options = options ?? new RunStoreOptions();
        var (builder, shown) = PostgresUrl.Parse(url);
        Url = shown;
        builder.Pooling = false; // a fresh connection per operation: nothing stale after a server restart
        builder.CommandTimeout = (int)Math.Ceiling(this.options.BusyTimeout.TotalSeconds);
        source = NpgsqlDataSource.Create(builder);
        try
        {
            Transact(IsolationLevel.ReadCommitted, s =>
            {
                // One opener migrates at a time; the others then see the finished schema.
                s.Execute("SELECT pg_advisory_xact_lock(7423010013)");
                int? found = s.Scalar("SELECT to_regclass('pai_meta') IS NOT NULL") is true
                    ? Convert.ToInt32(s.Scalar("SELECT schema_version FROM pai_meta"), CultureInfo.InvariantCulture)
                    : null;
                RunLease.CheckSchema(Url, Location, found, SchemaVersion, this.options.Migrate);
                if (found is null && this.options.Existing)
                    throw new RunStoreException($"The database {Url} holds no Pai store yet. Choose the --store of an existing store, or run `./pai sweep --store URL` to create one there.");
                var version = found ?? 0;
                if (found is null && s.Scalar("SELECT to_regclass('pai_runs') IS NOT NULL") is true)
                    throw new RunStoreException($"The database {Url} holds a pai_runs table but no pai_meta: it is not a Pai store. Choose another --store database.");
                for (var v = version; v < SchemaVersion; v++) s.Execute(Migrations[v]);
                if (version < SchemaVersion) s.Execute("UPDATE pai_meta SET schema_version = @v", ("v", SchemaVersion));
                return 0;
            });
            // Only once the database proved to hold (or now holds) a store: a refused URL leaves no folder behind.
            Directory = RunRows.CreateArtifactDirectory(artifactDirectory, "--artifacts");
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    /// <summary>The database URL without its password.</summary>
    public string Url { get; }

    /// <inheritdoc/>
    public string Directory { get; }

    /// <inheritdoc/>
    public string Location => $"--store {Url}";

    /// <inheritdoc/>
    public RunStoreOptions Options => options;

    /// <inheritdoc/>
    public string MaskPath(string key) => RunRows.ArtifactPath(Directory, "masks", key, ".safetensors");

    /// <inheritdoc/>
    public string CheckpointPath(string key) => RunRows.ArtifactPath(Directory, "checkpoints", key, ".safetensors");

    /// <inheritdoc/>
    public string StatisticPath(string cacheKey) => RunRows.ArtifactPath(Directory, "scores", cacheKey, ".safetensors");

    /// <inheritdoc/>
    public string Register(RunConfig config) => RegisterAll([config])[0];

    /// <inheritdoc/>
    public IReadOnlyList<string> RegisterAll(IEnumerable<RunConfig> configs, string? sweep = null, bool requeueFailed = false)
    {
        var list = configs.ToList();
        return Transact(IsolationLevel.ReadCommitted, s =>
        {
            if (sweep is not null) s.Execute("SELECT pg_advisory_xact_lock(hashtext(@sweep))", ("sweep", "pai sweep " + sweep));
            var next = sweep is null ? 0 : Convert.ToInt32(s.Scalar(
                "SELECT coalesce(max(position), -1) + 1 FROM pai_sweep_runs WHERE sweep = @sweep", ("sweep", sweep)), CultureInfo.InvariantCulture);
            var keys = new List<string>(list.Count);
            foreach (var config in list)
            {
                var key = config.Key;
                s.Execute("INSERT INTO pai_runs (key, config) VALUES (@key, @config) ON CONFLICT (key) DO NOTHING",
                    ("key", key), ("config", config.CanonicalJson()));
                if (sweep is not null)
                    next += s.Execute("INSERT INTO pai_sweep_runs (sweep, run_key, position) VALUES (@sweep, @key, @position) ON CONFLICT DO NOTHING",
                        ("sweep", sweep), ("key", key), ("position", next));
                if (requeueFailed)
                    s.Execute("""
                        UPDATE pai_runs SET status = 'pending', owner_pid = NULL, owner_host = NULL, owner_token = NULL,
                            heartbeat = NULL, lease_expires = NULL
                        WHERE key = @key AND status = 'failed'
                        """, ("key", key));
                keys.Add(key);
            }
            return keys;
        });
    }

    /// <inheritdoc/>
    public bool TryClaim(string key, bool retryFailed = false) => Transact(IsolationLevel.ReadCommitted, s =>
    {
        var row = s.Row(key, forUpdate: true);
        var claimable = row.Status switch
        {
            RunStatus.Pending => true,
            RunStatus.Failed => retryFailed,
            RunStatus.Running => !Holds(key, row) && row.LeaseExpired,
            _ => false,
        };
        if (!claimable) return false;
        held[key] = Claim(s, key);
        return true;
    });

    /// <inheritdoc/>
    public string? ClaimNext(string? sweep = null, IReadOnlyCollection<string>? among = null) => Transact(IsolationLevel.ReadCommitted, s =>
    {
        // Locked rows are skipped, not waited for: concurrent workers get different runs at once.
        var claimable = "(r.status = 'pending' OR (r.status = 'running' AND r.lease_expires < now()))" +
                        (among is null ? "" : " AND r.key = ANY(@among)");
        (string, object?)[] args = among is null ? [("sweep", sweep)] : [("sweep", sweep), ("among", among.ToArray())];
        var key = sweep is null
            ? s.Scalar($"SELECT r.key FROM pai_runs r WHERE {claimable} ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED", args[1..]) as string
            : s.Scalar($"""
                SELECT r.key FROM pai_sweep_runs w JOIN pai_runs r ON r.key = w.run_key
                WHERE w.sweep = @sweep AND {claimable} ORDER BY w.position LIMIT 1 FOR UPDATE OF r SKIP LOCKED
                """, args) as string;
        if (key is null) return null;
        held[key] = Claim(s, key);
        return key;
    });

    long Claim(Session s, string key)
    {
        s.Execute("DELETE FROM pai_epochs WHERE run_key = @key", ("key", key));
        return Convert.ToInt64(s.Scalar($"UPDATE pai_runs SET {ClaimSet} WHERE key = @key RETURNING fence",
            ("key", key), ("pid", processId), ("host", options.HostName), ("token", token),
            ("lease", options.StaleAfter), ("pai", PaiHost.Version)), CultureInfo.InvariantCulture);
    }

    /// <inheritdoc/>
    public void Heartbeat(string key) => Write(key, s =>
        s.Execute($"UPDATE pai_runs SET {Renew} WHERE key = @key", ("key", key), ("lease", options.StaleAfter)));

    /// <inheritdoc/>
    public IDisposable KeepAlive(string key, TimeSpan? interval = null) => RunLease.KeepAlive(this, options.StaleAfter, key, interval);

    /// <inheritdoc/>
    /// <remarks>An epoch recorded already is refused with <see cref="RunStoreException"/> (nothing is overwritten).</remarks>
    public void RecordEpoch(string key, EpochMetrics metrics) => Write(key, s =>
    {
        if (InsertEpoch(s, key, metrics) == 0)
            throw new RunStoreException($"epoch {metrics.Epoch} of run {key} is already recorded in {Url}");
        s.Execute($"UPDATE pai_runs SET {Renew} WHERE key = @key", ("key", key), ("lease", options.StaleAfter));
    });

    /// <inheritdoc/>
    public void RecordPrune(string key, PruneSummary prune, IReadOnlyDictionary<string, double> phaseSeconds) => Write(key, s =>
        s.Execute($"UPDATE pai_runs SET prune = @prune, phase_seconds = @phases, {Renew} WHERE key = @key",
            ("key", key), ("prune", JsonSerializer.Serialize(prune, RunRows.Json)), ("phases", MergePhases(s, key, phaseSeconds)),
            ("lease", options.StaleAfter)));

    /// <inheritdoc/>
    /// <remarks>The same merge rules as <see cref="SqliteRunStore.Finish"/>.</remarks>
    public void Finish(string key, RunRecord final) => Write(key, s =>
    {
        foreach (var epoch in final.Epochs) InsertEpoch(s, key, epoch);
        s.Execute("""
            UPDATE pai_runs SET status = 'finished', finished = now(), heartbeat = now(), lease_expires = NULL, error = NULL,
                final_top1 = @top1, final_top5 = @top5, final_loss = @loss,
                seeds = coalesce(@seeds, seeds), phase_seconds = @phases, prune = coalesce(@prune, prune),
                pai_version = coalesce(@pai, pai_version), libtorch_version = coalesce(@libtorch, libtorch_version)
            WHERE key = @key
            """, ("key", key), ("top1", final.FinalTop1), ("top5", final.FinalTop5), ("loss", final.FinalLoss),
            ("seeds", Text(final.Seeds.Count > 0 ? JsonSerializer.Serialize(final.Seeds, RunRows.Json) : null)),
            ("phases", MergePhases(s, key, final.PhaseSeconds)),
            ("prune", Text(final.Prune is null ? null : JsonSerializer.Serialize(final.Prune, RunRows.Json))),
            ("pai", Text(final.PaiVersion)), ("libtorch", Text(final.LibtorchVersion)));
    });

    /// <inheritdoc/>
    public void Fail(string key, string error) => Write(key, s =>
        s.Execute("UPDATE pai_runs SET status = 'failed', error = @error, finished = now(), heartbeat = now(), lease_expires = NULL WHERE key = @key",
            ("key", key), ("error", error)));

    /// <inheritdoc/>
    public RunRecord? Get(string key) => Transact(IsolationLevel.RepeatableRead, s =>
    {
        var epochs = s.Epochs("WHERE run_key = @key", ("key", key));
        using var command = s.Command($"SELECT {RunRows.RunColumns} FROM pai_runs WHERE key = @key", ("key", key));
        using var reader = command.ExecuteReader();
        return reader.Read() ? ReadRun(reader, epochs) : null;
    });

    /// <inheritdoc/>
    public IReadOnlyList<RunRecord> All() => Transact(IsolationLevel.RepeatableRead, s =>
    {
        var epochs = s.Epochs("");
        using var command = s.Command($"SELECT {RunRows.RunColumns} FROM pai_runs ORDER BY id");
        using var reader = command.ExecuteReader();
        var runs = new List<RunRecord>();
        while (reader.Read()) runs.Add(ReadRun(reader, epochs));
        return runs;
    });

    /// <inheritdoc/>
    public IReadOnlyList<SweepStatus> Status() => Transact(IsolationLevel.RepeatableRead, s =>
    {
        using var command = s.Command("""
            SELECT coalesce(w.sweep, ''), r.key, r.config, r.status, r.owner_pid, r.owner_host, r.heartbeat,
                extract(epoch FROM now() - r.heartbeat)::float8, r.attempts
            FROM pai_runs r LEFT JOIN pai_sweep_runs w ON w.run_key = r.key
            ORDER BY coalesce(w.sweep, ''), coalesce(w.position, r.id)
            """);
        using var r = command.ExecuteReader();
        var rows = new List<RunStatusRow>();
        while (r.Read())
            rows.Add(new RunStatusRow(r.GetString(0), r.GetString(1), r.GetString(2), RunRows.ParseStatus(r.GetString(3)),
                r.IsDBNull(4) ? null : r.GetInt32(4), r.IsDBNull(5) ? null : r.GetString(5),
                r.IsDBNull(6) ? null : Time(r, 6), r.IsDBNull(7) ? null : TimeSpan.FromSeconds(r.GetDouble(7)), r.GetInt32(8)));
        return RunStatusRow.Summarize(rows);
    });

    /// <summary>
    /// Returns the runs this store still holds to Pending, so other workers take them at once
    /// instead of waiting for their leases to expire (when the database is unreachable they are
    /// reclaimed after the lease), and closes the store.
    /// </summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        if (!held.IsEmpty)
        {
            try
            {
                Transact(IsolationLevel.ReadCommitted, s => s.Execute("""
                    UPDATE pai_runs SET status = 'pending', owner_pid = NULL, owner_host = NULL, owner_token = NULL,
                        heartbeat = NULL, lease_expires = NULL
                    WHERE status = 'running' AND owner_token = @token
                    """, ("token", token)), disposing: true);
            }
            catch (RunStoreException) { } // closing must not fail; the leases then expire
        }
        held.Clear();
        source.Dispose();
    }

    // ---- fencing ----

    bool Holds(string key, RunRow row) =>
        row.Status == RunStatus.Running && held.TryGetValue(key, out var fence) && row.Fence == fence;

    // Locks the run's row, checks this store's fencing token, then writes, all in one transaction.
    void Write(string key, Action<Session> body) => Transact(IsolationLevel.ReadCommitted, s =>
    {
        var row = s.Row(key, forUpdate: true);
        if (!Holds(key, row))
            throw new RunClaimLostException(key, RunLease.LostMessage(key, row.Status, held.TryGetValue(key, out var mine) ? mine : null,
                row.Fence, $"process {row.Pid} on {row.Host}"));
        body(s);
        return 0;
    });

    // ---- rows ----

    static int InsertEpoch(Session s, string key, EpochMetrics m) => s.Execute("""
        INSERT INTO pai_epochs (run_key, epoch, train_loss, train_top1, learning_rate, test_loss, test_top1, test_top5, seconds)
        VALUES (@key, @epoch, @trainLoss, @trainTop1, @lr, @testLoss, @testTop1, @testTop5, @seconds)
        ON CONFLICT (run_key, epoch) DO NOTHING
        """, ("key", key), ("epoch", m.Epoch), ("trainLoss", m.TrainLoss), ("trainTop1", m.TrainTop1),
        ("lr", m.LearningRate), ("testLoss", m.TestLoss), ("testTop1", m.TestTop1), ("testTop5", m.TestTop5),
        ("seconds", m.Seconds));

    static string MergePhases(Session s, string key, IReadOnlyDictionary<string, double> phases) =>
        RunRows.MergePhases(s.Scalar("SELECT phase_seconds FROM pai_runs WHERE key = @key", ("key", key)) as string, phases);

    static RunRecord ReadRun(NpgsqlDataReader r, Dictionary<string, List<EpochMetrics>> epochs) => RunRows.ReadRun(r, epochs, Time);

    static DateTimeOffset Time(System.Data.Common.DbDataReader r, int i) =>
        new(DateTime.SpecifyKind(r.GetDateTime(i), DateTimeKind.Utc));

    // A text parameter that may be null (typed, so PostgreSQL need not infer it).
    static NpgsqlParameter Text(string? value) => new() { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text, Value = (object?)value ?? DBNull.Value };

    sealed record RunRow(RunStatus Status, long? Fence, int? Pid, string? Host, bool LeaseExpired);

    // ---- SQL plumbing ----

    T Transact<T>(IsolationLevel isolation, Func<Session, T> body, bool disposing = false)
    {
        if (!disposing) ObjectDisposedException.ThrowIf(disposed, this);
        try
        {
            using var connection = source.OpenConnection();
            using var transaction = connection.BeginTransaction(isolation);
            var result = body(new Session(this, connection, transaction));
            transaction.Commit();
            return result;
        }
        catch (PostgresException e) when (!IsUnavailable(e))
        {
            throw new RunStoreException($"The run store {Url} refused a statement: {e.MessageText} ({e.SqlState}).", e);
        }
        catch (NpgsqlException e)
        {
            throw new RunStoreUnavailableException(
                $"The run store {Url} cannot be reached: {e.Message}{(e.InnerException is { } inner ? $" ({inner.Message})" : "")}. " +
                "Check that the PostgreSQL server is running and reachable, then start the worker again: finished runs are kept, " +
                "and runs held by this worker are taken over when their lease expires.", e);
        }
    }

    // Connection-class errors and the server shutting down mean "try again later", not a bad statement.
    static bool IsUnavailable(PostgresException e) =>
        e.SqlState.StartsWith("08", StringComparison.Ordinal) || e.SqlState.StartsWith("57P", StringComparison.Ordinal);

    sealed class Session(PostgresRunStore store, NpgsqlConnection connection, NpgsqlTransaction transaction)
    {
        public NpgsqlCommand Command(string sql, params (string Name, object? Value)[] args)
        {
            var command = new NpgsqlCommand(sql, connection, transaction);
            foreach (var (name, value) in args)
            {
                if (value is NpgsqlParameter p)
                {
                    p.ParameterName = name;
                    command.Parameters.Add(p);
                }
                // NaN is stored as missing, as in SQLite, so both stores read back the same.
                else command.Parameters.AddWithValue(name, value is null or double.NaN ? DBNull.Value : value);
            }
            return command;
        }

        public int Execute(string sql, params (string Name, object? Value)[] args)
        {
            using var command = Command(sql, args);
            return command.ExecuteNonQuery();
        }

        public object? Scalar(string sql, params (string Name, object? Value)[] args)
        {
            using var command = Command(sql, args);
            var value = command.ExecuteScalar();
            return value is DBNull ? null : value;
        }

        public RunRow Row(string key, bool forUpdate = false)
        {
            using var command = Command($"""
                SELECT status, fence, owner_pid, owner_host, coalesce(lease_expires < now(), true)
                FROM pai_runs WHERE key = @key {(forUpdate ? "FOR UPDATE" : "")}
                """, ("key", key));
            using var r = command.ExecuteReader();
            if (!r.Read())
                throw new RunStoreException($"run {key} is not in the store {store.Url}: register its configuration first");
            return new RunRow(RunRows.ParseStatus(r.GetString(0)), r.IsDBNull(1) ? null : r.GetInt64(1),
                r.IsDBNull(2) ? null : r.GetInt32(2), r.IsDBNull(3) ? null : r.GetString(3), r.GetBoolean(4));
        }

        public Dictionary<string, List<EpochMetrics>> Epochs(string where, params (string Name, object? Value)[] args)
        {
            using var command = Command($"SELECT {RunRows.EpochColumns} FROM pai_epochs {where} ORDER BY run_key, epoch", args);
            using var r = command.ExecuteReader();
            return RunRows.ReadEpochs(r);
        }
    }
}
