using System.Text.Json;
using System.Text.Json.Nodes;
using Pai.Host.Reports;

namespace Pai.Host.Training;

/// <summary>One kept calibration result: the choice ("dense" or a sparse layout) and the measured speedup.</summary>
/// <param name="Choice">"dense", or the <see cref="SparseConvLayout"/> to run.</param>
/// <param name="Speedup">Dense step time over the fastest sparse variant's; null where dense was not timed (<c>on</c>).</param>
internal sealed record CalibrationEntry(string Choice, double? Speedup);

/// <summary>
/// The sparse kernels' calibration results kept between runs: one small JSON file,
/// <c>{"version":2,"entries":{KEY:{"choice":CHOICE,"speedup":S,"order":N}}}</c>, in the user's cache
/// folder ($PAI_CACHE_DIR, else $XDG_CACHE_HOME/pai, else ~/.cache/pai). A file that cannot be read
/// or parsed (or of version 1) counts as empty: the layers are measured again and the file rewritten.
/// <para>
/// Several processes may write at once (pai sweep's workers each calibrate): a write takes an
/// exclusive lock on a ".lock" file beside the cache (an OS lock, released when its process ends,
/// so a crash leaves none behind), re-reads the file, adds its entry to what is there and replaces
/// the file atomically, so no writer drops another's entries and a reader never sees half a file.
/// A writer that cannot get the lock within a few seconds, or cannot write at all, keeps its
/// choice to its own process. The file keeps the <see cref="MaxEntries"/> latest-written entries
/// ("order" counts writes), so machines that see many shapes do not grow it without bound.
/// </para>
/// </summary>
internal static class CalibrationCache
{
    /// <summary>The environment variable naming the cache folder itself (tests point it at a temporary one).</summary>
    public const string DirectoryVariable = "PAI_CACHE_DIR";

    /// <summary>The most entries the file keeps; a write past it drops the oldest-written.</summary>
    public const int MaxEntries = 1000;

    const int Version = 2;
    static readonly TimeSpan LockWait = TimeSpan.FromSeconds(5);

    /// <summary>The cache file, or null when there is no home or cache folder to keep it in.</summary>
    public static string? FilePath
    {
        get
        {
            var dir = Environment.GetEnvironmentVariable(DirectoryVariable) is { Length: > 0 } own ? own
                : Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg && Path.IsPathRooted(xdg) ? Path.Combine(xdg, "pai")
                : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } home ? Path.Combine(home, ".cache", "pai")
                : null;
            return dir is null ? null : Path.Combine(dir, "sparse-kernels.json");
        }
    }

    /// <summary>The stored result for <paramref name="key"/>, or null.</summary>
    public static CalibrationEntry? Read(string key) => FilePath is { } path ? Read(path, key) : null;

    /// <summary>Stores <paramref name="entry"/> for <paramref name="key"/> beside the entries already in the file.</summary>
    public static void Write(string key, CalibrationEntry entry)
    {
        if (FilePath is { } path) Write(path, key, entry);
    }

    /// <summary>The result stored for <paramref name="key"/> in the cache file at <paramref name="path"/>, or null.</summary>
    internal static CalibrationEntry? Read(string path, string key) =>
        Load(path).TryGetValue(key, out var e) ? e.Entry : null;

    /// <summary>
    /// Merges <paramref name="entry"/> into the cache file at <paramref name="path"/> under its lock;
    /// false when the file was left as it was (locked past the wait, or not writable).
    /// </summary>
    internal static bool Write(string path, string key, CalibrationEntry entry)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            using var held = Lock(path + ".lock");
            if (held is null) return false;
            var entries = Load(path);
            var order = entries.Count == 0 ? 0 : entries.Values.Max(e => e.Order) + 1;
            entries[key] = (entry, order);
            var kept = entries.OrderByDescending(e => e.Value.Order).Take(MaxEntries).OrderBy(e => e.Key, StringComparer.Ordinal);
            var json = new JsonObject
            {
                ["version"] = Version,
                ["entries"] = new JsonObject(kept.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)new JsonObject
                {
                    ["choice"] = e.Value.Entry.Choice,
                    ["speedup"] = e.Value.Entry.Speedup,
                    ["order"] = e.Value.Order,
                }))),
            };
            AtomicFile.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only home costs a calibration per process, nothing more.
            return false;
        }
    }

    // The exclusive lock (FileShare.None: an flock on Unix), retried while another writer holds it;
    // null when it stays held past the wait.
    static FileStream? Lock(string lockPath)
    {
        var deadline = DateTime.UtcNow + LockWait;
        while (true)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline && File.Exists(lockPath))
            {
                Thread.Sleep(Random.Shared.Next(5, 25));
            }
            catch (IOException) when (File.Exists(lockPath))
            {
                return null;
            }
        }
    }

    static Dictionary<string, (CalibrationEntry Entry, long Order)> Load(string path)
    {
        var entries = new Dictionary<string, (CalibrationEntry, long)>(StringComparer.Ordinal);
        try
        {
            if (!File.Exists(path)) return entries;
            if (JsonNode.Parse(File.ReadAllText(path)) is JsonObject root
                && root["version"] is JsonValue v && v.TryGetValue<int>(out var version) && version == Version
                && root["entries"] is JsonObject stored)
                foreach (var (key, node) in stored)
                    if (node is JsonObject o && o["choice"] is JsonValue c && c.TryGetValue<string>(out var choice))
                        entries[key] = (new CalibrationEntry(choice, o["speedup"] is JsonValue s && s.TryGetValue<double>(out var x) ? x : null),
                            o["order"] is JsonValue n && n.TryGetValue<long>(out var order) ? order : 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException or ArgumentException)
        {
            // Unreadable or corrupt (a duplicate key throws ArgumentException): measured again, and
            // the next write replaces it.
            entries.Clear();
        }
        return entries;
    }
}
