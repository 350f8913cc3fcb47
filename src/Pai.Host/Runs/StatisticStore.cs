using System.Text.Json;
using Microsoft.FSharp.Collections;

namespace Pai.Host.Runs;

/// <summary>
/// The statistics of a run's first scoring round, kept in a results store by what they depend on
/// (the data and scoring settings, not the criterion, sparsity or training), so a sweep computes
/// each statistic of one initialization once: hutch_obd and hts share one Hessian diagonal, snip
/// and grad_norm one gradient.
/// </summary>
public static class StatisticStore
{
    /// <summary>
    /// Bumped whenever a statistic's values or what a stored statistic file holds change, so that
    /// a results store written by an older Pai recomputes instead of reading stale values
    /// (version 3: statistics instead of criterion scores, keyed by the data and scoring settings;
    /// version 4: batch-independent statistics read merged scoring batches, equal to float rounding).
    /// </summary>
    public const int Version = 4;

    /// <summary>The cache key of one statistic of a run: its data and scoring settings and the statistic's name.</summary>
    public static string CacheKey(RunConfig c, string statistic) =>
        $"v{Version}-{c.StatisticsKey}-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(statistic)))[..12];

    // Stored statistics keep their estimators' diagnostics, so every sparsity of a sweep records the achieved error.
    const string DiagnosticsKey = "curvature";
    const string StatisticKey = "statistic";

    /// <summary>The criterion's statistics the store holds for this run's settings; a damaged file is reported, deleted and left to be recomputed.</summary>
    public static List<Tuple<string, StatisticValue>> Load(IRunStore store, RunConfig c, Criterion criterion, Model model, Action<string> log)
    {
        var known = new List<Tuple<string, StatisticValue>>();
        foreach (var statistic in Criteria.storedStatistics(criterion))
        {
            var path = store.StatisticPath(CacheKey(c, statistic.Name));
            if (!File.Exists(path)) continue;
            try
            {
                using var file = Safetensors.Load(path, model.Prunable.Select(p => new TensorSpec(p.Key, DType.Float32, p.Value.Shape)), strict: true);
                if (!file.Metadata.TryGetValue(StatisticKey, out var stored) || stored != statistic.Name)
                    throw new CheckpointException(path, $"holds '{stored}', not the statistic '{statistic.Name}'");
                var layers = model.Prunable.Select(p => file.Take(p.Key)).ToList();
                var diagnostics = file.Metadata.TryGetValue(DiagnosticsKey, out var json)
                    ? JsonSerializer.Deserialize<List<CurvatureRecord>>(json)!.Select(r => r.ToDiagnostics())
                    : [];
                known.Add(Tuple.Create(statistic.Name, new StatisticValue(ListModule.OfSeq(layers), ListModule.OfSeq(diagnostics))));
            }
            catch (Exception e) when (e is CheckpointException or IOException or InvalidDataException or JsonException)
            {
                log($"warning: stored statistic {statistic.Name} is damaged ({e.Message}); recomputing it and replacing {path}");
                File.Delete(path);
            }
        }
        return known;
    }

    /// <summary>Stores one statistic (float32, with its estimator's diagnostics) for the runs that share this run's settings.</summary>
    public static void Save(IRunStore store, RunConfig c, string name, StatisticValue value, IEnumerable<string> layerNames)
    {
        using var scope = new DisposeScope();
        var metadata = new Dictionary<string, string>
        {
            [StatisticKey] = name,
            [DiagnosticsKey] = JsonSerializer.Serialize(value.Diagnostics.Select(CurvatureRecord.Of).ToList()),
        };
        Safetensors.Save(store.StatisticPath(CacheKey(c, name)), layerNames.Zip(value.Layers).Select(x => (x.First, x.Second.To(DType.Float32))), metadata);
    }
}
