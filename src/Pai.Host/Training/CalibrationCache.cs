using System.Text.Json;
using System.Text.Json.Nodes;
using Pai.Host.Reports;

namespace Pai.Host.Training;

/// <summary>
/// The sparse kernels' calibration choices kept between runs: one small JSON file,
/// <c>{"version":1,"choices":{KEY:CHOICE}}</c>, in the user's cache folder ($PAI_CACHE_DIR, else
/// $XDG_CACHE_HOME/pai, else ~/.cache/pai). A file that cannot be read or parsed counts as empty
/// (the layers are measured again and the file rewritten); one that cannot be written leaves the
/// choices to this process alone. Writes are atomic, so a reader never sees half a file.
/// </summary>
internal static class CalibrationCache
{
    /// <summary>The environment variable naming the cache folder itself (tests point it at a temporary one).</summary>
    public const string DirectoryVariable = "PAI_CACHE_DIR";

    const int Version = 1;

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

    /// <summary>The stored choice for <paramref name="key"/>, or null.</summary>
    public static string? Read(string key) => Load().GetValueOrDefault(key);

    /// <summary>Stores <paramref name="choice"/> for <paramref name="key"/> beside the choices already in the file.</summary>
    public static void Write(string key, string choice)
    {
        if (FilePath is not { } path) return;
        var choices = Load();
        choices[key] = choice;
        var json = new JsonObject
        {
            ["version"] = Version,
            ["choices"] = new JsonObject(choices.OrderBy(c => c.Key, StringComparer.Ordinal)
                .Select(c => KeyValuePair.Create(c.Key, (JsonNode?)JsonValue.Create(c.Value)))),
        };
        try
        {
            AtomicFile.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only home costs a calibration per process, nothing more.
        }
    }

    static Dictionary<string, string> Load()
    {
        var choices = new Dictionary<string, string>(StringComparer.Ordinal);
        if (FilePath is not { } path) return choices;
        try
        {
            if (!File.Exists(path)) return choices;
            if (JsonNode.Parse(File.ReadAllText(path)) is JsonObject root
                && root["version"] is JsonValue v && v.TryGetValue<int>(out var version) && version == Version
                && root["choices"] is JsonObject stored)
                foreach (var (key, value) in stored)
                    if (value is JsonValue s && s.TryGetValue<string>(out var text)) choices[key] = text;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            // Unreadable or corrupt: measured again, and the next write replaces it.
        }
        return choices;
    }
}
