namespace Pai.Host.Runs;

/// <summary>Loaded data sets shared by the runs of one process (a sweep loads each once).</summary>
public sealed class DataCache : IDisposable
{
    readonly Dictionary<(string, string?, DatasetSplit), Dataset> sets = new();
    readonly Dictionary<string, (ImageFolder Train, ImageFolder Test)> folders = new();

    /// <summary>The split of a data set, loaded on first use.</summary>
    public Dataset Get(string name, string? directory, DatasetSplit split, bool skipBadImages = false)
    {
        var key = (DatasetRegistry.Canonical(name), directory, split);
        if (!sets.TryGetValue(key, out var d))
        {
            d = name == "synthetic" ? SyntheticData.Create(null, split) : DatasetRegistry.Load(key.Item1, split, directory, skipBadImages: skipBadImages);
            sets[key] = d;
        }
        return d;
    }

    /// <summary>
    /// What a run of <paramref name="c"/> reads: its data set in memory (each split loaded on first use)
    /// or, for ImageNet, streamed from its JPEG folders (the folders indexed on first use).
    /// </summary>
    public RunData For(RunConfig c)
    {
        var name = DatasetRegistry.Canonical(c.Dataset);
        if (name != "imagenet")
            return RunData.InMemory(Get(name, c.DataDirectory, DatasetSplit.Train, c.SkipBadImages), () => Get(name, c.DataDirectory, DatasetSplit.Test, c.SkipBadImages));
        if (!folders.TryGetValue(c.DataDirectory ?? "", out var f))
            folders[c.DataDirectory ?? ""] = f = (DatasetRegistry.OpenImageFolder(name, DatasetSplit.Train, c.DataDirectory),
                DatasetRegistry.OpenImageFolder(name, DatasetSplit.Test, c.DataDirectory));
        return RunData.Streamed(DatasetRegistry.Info(name), f.Train, f.Test, c.SkipBadImages);
    }

    /// <summary>Frees every loaded data set.</summary>
    public void Dispose()
    {
        foreach (var d in sets.Values) d.Dispose();
        sets.Clear();
    }
}
