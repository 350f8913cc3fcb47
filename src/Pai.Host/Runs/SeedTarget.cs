using System.Globalization;
using Pai.Host.Reports;

namespace Pai.Host.Runs;

/// <summary>
/// Seeds where they are needed: a sweep adds seeds to the cells whose 95% interval of the mean
/// top-1 is wider than ±<paramref name="HalfWidth"/> accuracy points, until it is narrower or the
/// cell has <paramref name="MaxSeeds"/> seeds (<c>pai sweep --target-ci W --max-seeds K</c>).
/// </summary>
/// <param name="HalfWidth">The widest acceptable half-width of a cell's interval, in accuracy points (1 is ±1 pp of top-1).</param>
/// <param name="MaxSeeds">The most seeds a cell gets, the given ones included.</param>
public sealed record SeedTarget(double HalfWidth, int MaxSeeds)
{
    /// <summary>The most seeds a cell gets when only the target is given.</summary>
    public const int DefaultMaxSeeds = 10;

    /// <summary>True when a cell's interval half-width (a fraction of top-1; null for fewer than two finished seeds) is wider than the target.</summary>
    public bool IsWide(double? halfWidth) => halfWidth is not { } h || h * 100 > HalfWidth;

    /// <summary>The half-width as written in messages, e.g. "0.5".</summary>
    public string Points => HalfWidth.ToString("0.###", CultureInfo.InvariantCulture);
}

/// <summary>
/// One cell of a sweep's grid (a configuration but for its seed) as the store holds it.
/// </summary>
/// <param name="Config">The cell's first configuration in the grid.</param>
/// <param name="Seeds">Its seeds the sweep knows: the given ones and those added so far (registered, whatever their status).</param>
/// <param name="Top1">Final top-1 of its finished runs.</param>
/// <param name="HalfWidth">Half-width of the 95% t-interval of the mean top-1 over <paramref name="Top1"/> (a fraction; null for fewer than two).</param>
/// <param name="NextSeed">The first seed the sweep may add that it lacks (null: it has all it may get).</param>
public sealed record SeedCell(RunConfig Config, IReadOnlyList<ulong> Seeds, IReadOnlyList<double> Top1, double? HalfWidth, ulong? NextSeed);

/// <summary>
/// Which seeds a sweep with a <see cref="SeedTarget"/> adds. The added seeds follow the highest
/// given one (max + 1, max + 2, …) and go out in rounds: a round gives one seed to every cell that
/// still needs it (interval wider than the target, fewer seeds than the limit), and every such cell
/// gets seed s before any cell gets s + 1. So each cell's seeds are the given ones plus a prefix of
/// the same sequence, and any two cells share all the seeds of the one with fewer: the report's
/// paired tests pair them all. The dense baseline is a cell like any other.
/// </summary>
public static class SeedRounds
{
    /// <summary>The cell a configuration belongs to: its key with the seed left out.</summary>
    public static string CellKey(RunConfig c) => (c with { Seed = 0 }).Key;

    /// <summary>
    /// The seeds the target may add to <paramref name="grid"/>, in order; throws ArgumentException
    /// naming the option when the target is out of range.
    /// </summary>
    public static IReadOnlyList<ulong> ExtraSeeds(IReadOnlyList<RunConfig> grid, SeedTarget target)
    {
        ArgumentNullException.ThrowIfNull(grid);
        ArgumentNullException.ThrowIfNull(target);
        if (!(double.IsFinite(target.HalfWidth) && target.HalfWidth > 0))
            throw new ArgumentException($"--target-ci must be a positive number of accuracy points (1 for ±1 pp), got {target.HalfWidth.ToString(CultureInfo.InvariantCulture)}");
        if (grid.Count == 0) return [];
        var given = grid.Select(c => c.Seed).Distinct().ToList();
        if (target.MaxSeeds < given.Count)
            throw new ArgumentException($"--max-seeds {target.MaxSeeds} is fewer than the {given.Count} seeds given by --seeds: raise --max-seeds to at least {given.Count}");
        var (first, count) = (given.Max(), (ulong)(target.MaxSeeds - given.Count));
        if (count > 0 && first > ulong.MaxValue - count)
            throw new ArgumentException($"--seeds: seed {first} leaves no room for the {count} seeds --max-seeds {target.MaxSeeds} may add after it; give smaller seeds");
        return Enumerable.Range(1, (int)count).Select(i => first + (ulong)i).ToList();
    }

    /// <summary>
    /// The cells of <paramref name="grid"/> in grid order, with the seeds the store knows for each:
    /// the given ones and the added ones <paramref name="get"/> finds (by run key).
    /// </summary>
    public static IReadOnlyList<SeedCell> Cells(IReadOnlyList<RunConfig> grid, SeedTarget target, Func<string, RunRecord?> get)
    {
        ArgumentNullException.ThrowIfNull(get);
        var extra = ExtraSeeds(grid, target);
        var cells = new List<SeedCell>();
        foreach (var cell in grid.GroupBy(CellKey))
        {
            var first = cell.First();
            var present = cell.Select(c => c.Seed).Distinct().ToList();
            present.AddRange(extra.Where(s => !present.Contains(s) && get((first with { Seed = s }).Key) is not null));
            var top1 = present.Select(s => get((first with { Seed = s }).Key))
                .Where(r => r is { Status: RunStatus.Finished, FinalTop1: not null }).Select(r => r!.FinalTop1!.Value).ToList();
            ulong? next = present.Count >= target.MaxSeeds ? null : extra.Cast<ulong?>().FirstOrDefault(s => !present.Contains(s!.Value));
            cells.Add(new SeedCell(first, present, top1, SeedStatistics.ConfidenceHalfWidth(top1), next));
        }
        return cells;
    }

    /// <summary>
    /// Every run the sweep knows: <paramref name="grid"/>, then the added seeds the store holds in the
    /// order they were added (by seed, cells in grid order), so that running the same sweep again
    /// finishes the added runs that are not finished.
    /// </summary>
    public static IReadOnlyList<RunConfig> Known(IReadOnlyList<RunConfig> grid, SeedTarget target, Func<string, RunRecord?> get)
    {
        var given = grid.Select(c => c.Key).ToHashSet();
        var added = Cells(grid, target, get).SelectMany(c => c.Seeds.Select(s => c.Config with { Seed = s })).Where(c => !given.Contains(c.Key));
        return grid.Concat(added.OrderBy(c => c.Seed)).ToList(); // a stable sort: cells keep grid order within a seed
    }

    /// <summary>
    /// The next round: the lowest seed some cell still needs (wider than the target, below the
    /// limit), for every such cell that lacks it, in grid order. Empty when no cell needs one.
    /// </summary>
    public static IReadOnlyList<RunConfig> NextRound(IReadOnlyList<RunConfig> grid, SeedTarget target, Func<string, RunRecord?> get)
    {
        var needy = Cells(grid, target, get).Where(c => c.NextSeed is not null && target.IsWide(c.HalfWidth)).ToList();
        if (needy.Count == 0) return [];
        var seed = needy.Min(c => c.NextSeed!.Value);
        return needy.Where(c => c.NextSeed == seed).Select(c => c.Config with { Seed = seed }).ToList();
    }
}
