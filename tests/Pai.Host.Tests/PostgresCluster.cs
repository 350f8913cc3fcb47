using System.Diagnostics;
using Npgsql;

namespace Pai.Host.Tests;

/// <summary>
/// A throwaway PostgreSQL cluster from Debian's <c>postgresql</c> package: initdb into a temporary
/// directory as an unprivileged user (initdb refuses root), a server listening only on a Unix
/// socket in that directory, stopped and deleted on dispose. Shared by the tests of the
/// "postgres" collection; each test gets a fresh database from <see cref="NewDatabase"/>.
/// </summary>
public sealed class PostgresCluster : IDisposable
{
    const string User = "pai";
    readonly string bin;
    readonly string? runAs;
    int databases;

    /// <summary>Creates and starts the cluster; fails (never skips) when PostgreSQL is not installed.</summary>
    public PostgresCluster()
    {
        bin = FindBin();
        runAs = Environment.UserName == "root" ? "postgres" : null;
        Root = Path.Combine(Path.GetTempPath(), "pai-pg-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        if (runAs is not null) Run("chown", [$"{runAs}:", Root]);
        Run(Path.Combine(bin, "initdb"), ["-D", DataDirectory, "-U", User, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], asServer: true);
        Start();
    }

    /// <summary>The temporary directory (data directory, socket, log).</summary>
    public string Root { get; }

    string DataDirectory => Path.Combine(Root, "data");

    /// <summary>The server's log file.</summary>
    public string LogFile => Path.Combine(Root, "server.log");

    /// <summary>The URL of a database of this cluster.</summary>
    public string Url(string database) => $"postgresql:///{database}?host={Root}&user={User}";

    /// <summary>Starts the server (again); waits until it accepts connections.</summary>
    public void Start() => Run(Path.Combine(bin, "pg_ctl"),
        ["-D", DataDirectory, "-l", LogFile, "-w", "-t", "60", "-o",
         $"-k {Root} -c listen_addresses='' -c port=5432 -c fsync=off -c full_page_writes=off -c max_connections=100",
         "start"], asServer: true);

    /// <summary>
    /// Stops the server at once (like a crash or a lost network: clients see their connections
    /// drop). Committed transactions survive it (fsync is off, which only matters if the machine
    /// itself crashes; synchronous_commit stays on).
    /// </summary>
    public void Stop() => Run(Path.Combine(bin, "pg_ctl"), ["-D", DataDirectory, "-w", "-m", "immediate", "stop"], asServer: true);

    /// <summary>A new empty database; returns its URL.</summary>
    public string NewDatabase()
    {
        var name = $"pai_test_{Interlocked.Increment(ref databases)}_{Guid.NewGuid().ToString("N")[..8]}";
        Execute("postgres", $"CREATE DATABASE {name}");
        return Url(name);
    }

    /// <summary>Runs SQL on a database of this cluster (as the test, behind the store's back).</summary>
    public object? Execute(string databaseOrUrl, string sql)
    {
        var database = databaseOrUrl.StartsWith("postgresql://") ? databaseOrUrl[14..databaseOrUrl.IndexOf('?')] : databaseOrUrl;
        using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder
        {
            Host = Root, Username = User, Database = database, Pooling = false,
        }.ToString());
        connection.Open();
        using var command = new NpgsqlCommand(sql, connection);
        var value = command.ExecuteScalar();
        return value is DBNull ? null : value;
    }

    /// <summary>Stops the server and deletes its directory.</summary>
    public void Dispose()
    {
        try { Stop(); } catch (InvalidOperationException) { } // already stopped
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }

    static string FindBin()
    {
        var versions = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Where(d => File.Exists(Path.Combine(d, "bin", "pg_ctl")))
                .OrderByDescending(d => int.TryParse(Path.GetFileName(d), out var v) ? v : 0).ToList()
            : [];
        Assert.True(versions.Count > 0,
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): the build's `scripts/bootstrap.sh --tests` installs Debian's postgresql package");
        return Path.Combine(versions[0], "bin");
    }

    void Run(string program, string[] args, bool asServer = false)
    {
        var psi = new ProcessStartInfo(asServer && runAs is not null ? "runuser" : program)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        if (asServer && runAs is not null)
            foreach (var a in new[] { "-u", runAs, "--", program }) psi.ArgumentList.Add(a);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{Path.GetFileName(program)} {string.Join(' ', args)} exited with {p.ExitCode}: {output}{err.Result}" +
                (File.Exists(LogFile) ? $"\nserver log:\n{File.ReadAllText(LogFile)}" : ""));
    }
}

/// <summary>The tests that share one throwaway cluster (run one after another).</summary>
[CollectionDefinition("postgres")]
public sealed class PostgresCollection : ICollectionFixture<PostgresCluster>;
