using System.Globalization;
using Npgsql;

namespace Pai.Host.Runs;

/// <summary>Opens the run store a user names: an SQLite results directory or a PostgreSQL URL.</summary>
public static class RunStores
{
    /// <summary>True when <paramref name="store"/> is a PostgreSQL URL (<c>postgresql://</c> or <c>postgres://</c>).</summary>
    public static bool IsPostgres(string? store) =>
        store is not null && (store.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || store.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Opens <paramref name="store"/> when given (a PostgreSQL URL; artifacts in
    /// <paramref name="artifacts"/>, default <paramref name="results"/>), otherwise the SQLite store
    /// in <paramref name="results"/> (artifacts beside its database; a different
    /// <paramref name="artifacts"/> is refused, since SQLite keeps them together).
    /// </summary>
    public static IRunStore Open(string? store, string results, string? artifacts = null, RunStoreOptions? options = null)
    {
        if (store is null)
        {
            if (artifacts is not null && Path.GetFullPath(artifacts) != Path.GetFullPath(results))
                throw new ArgumentException("--artifacts applies to a --store database; the SQLite store keeps its artifacts in its --results directory");
            return new SqliteRunStore(results, options);
        }
        if (!IsPostgres(store))
            throw new ArgumentException($"--store takes a PostgreSQL URL (postgresql://user@host:port/database); got '{store}'. For the SQLite store use --results DIR.");
        return new PostgresRunStore(store, artifacts ?? results, options);
    }
}

/// <summary>Reads <c>postgresql://</c> URLs (libpq's form) into Npgsql settings.</summary>
public static class PostgresUrl
{
    /// <summary>
    /// Parses <c>postgresql://[user[:password]@][host][:port][/database][?name=value&amp;…]</c>. The host
    /// may be a percent-encoded socket directory, or given as <c>?host=/dir</c>; the query also takes
    /// port, user, password, dbname, sslmode, application_name and connect_timeout. Returns the settings and
    /// the URL without its password (for messages). A malformed URL is bad input: ArgumentException
    /// naming the part and what it takes (never the password).
    /// </summary>
    public static (NpgsqlConnectionStringBuilder Settings, string Shown) Parse(string url)
    {
        var scheme = url.IndexOf("://", StringComparison.Ordinal);
        if (scheme < 0 || !RunStores.IsPostgres(url))
            throw new ArgumentException($"'{url}' is not a PostgreSQL URL: write postgresql://user@host:port/database");
        var rest = url[(scheme + 3)..];
        // An unreachable server is reported after 10 s unless the URL's connect_timeout says otherwise.
        var b = new NpgsqlConnectionStringBuilder { Timeout = 10 };
        string? query = null;
        var q = rest.IndexOf('?');
        if (q >= 0) (rest, query) = (rest[..q], rest[(q + 1)..]);
        var slash = rest.IndexOf('/');
        var authority = slash >= 0 ? rest[..slash] : rest;
        if (slash >= 0 && rest.Length > slash + 1) b.Database = Uri.UnescapeDataString(rest[(slash + 1)..]);
        var shownAuthority = authority;
        var at = authority.LastIndexOf('@');
        if (at >= 0)
        {
            var user = authority[..at];
            var colon = user.IndexOf(':');
            b.Username = Uri.UnescapeDataString(colon >= 0 ? user[..colon] : user);
            if (colon >= 0)
            {
                b.Password = Uri.UnescapeDataString(user[(colon + 1)..]);
                shownAuthority = $"{user[..colon]}:***@{authority[(at + 1)..]}";
            }
            authority = authority[(at + 1)..];
        }
        if (authority.Length > 0)
        {
            var portAt = authority.StartsWith('[') ? authority.IndexOf("]:", StringComparison.Ordinal) + 1 : authority.LastIndexOf(':');
            if (portAt > 0)
            {
                b.Port = Integer("port", authority[(portAt + 1)..], 1, 65535);
                authority = authority[..portAt];
            }
            b.Host = Uri.UnescapeDataString(authority.Trim('[', ']'));
        }
        var shownQuery = new List<string>();
        foreach (var pair in (query ?? "").Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"'{pair}' in the --store URL is not name=value");
            var (name, value) = (pair[..eq], Uri.UnescapeDataString(pair[(eq + 1)..]));
            switch (name)
            {
                case "host": b.Host = value; break;
                case "port": b.Port = Integer("port", value, 1, 65535); break;
                case "user": b.Username = value; break;
                case "password": b.Password = value; break;
                case "dbname": b.Database = value; break;
                case "application_name": b.ApplicationName = value; break;
                case "connect_timeout": b.Timeout = Integer("connect_timeout", value, 0, MaxTimeout, " seconds (0 waits without limit)"); break;
                case "sslmode":
                    b.SslMode = Enum.TryParse<SslMode>(value.Replace("-", ""), ignoreCase: true, out var mode)
                        ? mode : throw new ArgumentException($"sslmode={value} in the --store URL is not one of disable, allow, prefer, require, verify-ca, verify-full");
                    break;
                default:
                    throw new ArgumentException($"the --store URL parameter '{name}' is not supported (use host, port, user, password, dbname, sslmode, application_name, connect_timeout)");
            }
            shownQuery.Add(name == "password" ? "password=***" : pair);
        }
        if (string.IsNullOrEmpty(b.Host)) b.Host = "localhost";
        var shown = $"{url[..(scheme + 3)]}{shownAuthority}{(slash >= 0 ? rest[slash..] : "")}{(shownQuery.Count > 0 ? "?" + string.Join('&', shownQuery) : "")}";
        return (b, shown);
    }

    // Npgsql's limit on the connection timeout.
    const int MaxTimeout = 1024;

    // A whole-number part of the URL in [min, max], or an error naming it and its range.
    static int Integer(string name, string text, int min, int max, string unit = "") =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
            ? n : throw new ArgumentException($"{name}={text} in the --store URL is not a whole number from {min} to {max}{unit}");
}
