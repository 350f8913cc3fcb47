using System.Data.Common;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Pai.Host.Runs;

/// <summary>How both run stores lay out a run's row and its artifact files.</summary>
static class RunRows
{
    /// <summary>JSON of the stored seeds, phase seconds and prune reports.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The run columns <see cref="ReadRun"/> reads, in order.</summary>
    public const string RunColumns = """
        key, config, status, attempts, owner_pid, owner_host, heartbeat, started, finished,
        pai_version, libtorch_version, seeds, phase_seconds, prune, final_top1, final_top5, final_loss, error
        """;

    /// <summary>The epoch columns <see cref="ReadEpochs"/> reads, in order.</summary>
    public const string EpochColumns = "run_key, epoch, train_loss, train_top1, learning_rate, test_loss, test_top1, test_top5, seconds";

    /// <summary>Epochs by run key from a reader over <see cref="EpochColumns"/>.</summary>
    public static Dictionary<string, List<EpochMetrics>> ReadEpochs(DbDataReader r)
    {
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

    /// <summary>One run from a reader over <see cref="RunColumns"/>; <paramref name="time"/> reads a time column.</summary>
    public static RunRecord ReadRun(DbDataReader r, Dictionary<string, List<EpochMetrics>> epochs, Func<DbDataReader, int, DateTimeOffset> time)
    {
        var key = r.GetString(0);
        string? Text(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        DateTimeOffset? Time(int i) => r.IsDBNull(i) ? null : time(r, i);
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

    static double Real(DbDataReader r, int i) => r.IsDBNull(i) ? double.NaN : r.GetDouble(i);
    static double? NullableReal(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetDouble(i);

    /// <summary>A stored status.</summary>
    public static RunStatus ParseStatus(string status) => status switch
    {
        "pending" => RunStatus.Pending,
        "running" => RunStatus.Running,
        "finished" => RunStatus.Finished,
        "failed" => RunStatus.Failed,
        _ => throw new RunStoreException($"unknown run status '{status}' in the results database"),
    };

    /// <summary>Stored phase seconds (JSON or null) with <paramref name="phases"/> merged in (a phase given again is replaced).</summary>
    public static string MergePhases(string? stored, IReadOnlyDictionary<string, double> phases)
    {
        var merged = stored is null
            ? new SortedDictionary<string, double>(StringComparer.Ordinal)
            : new SortedDictionary<string, double>(JsonSerializer.Deserialize<Dictionary<string, double>>(stored, Json)!, StringComparer.Ordinal);
        foreach (var (phase, seconds) in phases) merged[phase] = seconds;
        return JsonSerializer.Serialize(merged, Json);
    }

    /// <summary>The artifact folders every store creates in its directory.</summary>
    public static readonly string[] ArtifactFolders = ["masks", "checkpoints", "scores"];

    /// <summary>Creates the artifact directory and its folders, or explains which option to change.</summary>
    public static string CreateArtifactDirectory(string directory, string option)
    {
        var full = Path.GetFullPath(directory);
        try
        {
            foreach (var sub in ArtifactFolders) System.IO.Directory.CreateDirectory(Path.Combine(full, sub));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RunStoreException($"cannot create the results directory {full}: {e.Message}. Choose another {option} directory.", e);
        }
        return full;
    }

    /// <summary>The path of an artifact file: <c>DIRECTORY/FOLDER/NAME.EXT</c>, refusing names that could leave the folder.</summary>
    public static string ArtifactPath(string directory, string folder, string name, string extension)
    {
        if (string.IsNullOrEmpty(name) || name[0] == '.' || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw new ArgumentException($"'{name}' is not a valid key for a file name (letters, digits, '-', '_', '.')", nameof(name));
        return Path.Combine(directory, folder, name + extension);
    }
}
