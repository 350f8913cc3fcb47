namespace Pai.Host.Reports;

/// <summary>
/// The order of the criteria in tables and legends and one fixed colour per criterion, the same in
/// every report. Both come from the criterion registry's order, read in one place
/// (<see cref="RegistryOrder"/>).
/// </summary>
public static class CriterionColours
{
    /// <summary>The colour of the dense baseline.</summary>
    public const string DenseColour = "#222222";

    /// <summary>
    /// Distinct colours: the registry's criteria take them in order; a criterion the registry does
    /// not list takes one of the rest chosen by a hash of its name, so it too keeps its colour.
    /// </summary>
    static readonly string[] Palette =
    [
        "#9c755f", "#76b7b2", "#edc948", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#ff9da7", "#17becf",
        "#bcbd22", "#8c564b", "#e15759", "#1f3a93", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f", "#aec7e8",
    ];

    /// <summary>The criterion names in the registry's order: the one place that says where the order comes from.</summary>
    static string[] RegistryOrder() => [.. Pai.PaiPruning.CriterionFormulas.Select(c => c.Item1)];

    static readonly Lazy<string[]> Known = new(RegistryOrder);

    /// <summary>The criteria in the registry's order.</summary>
    public static IReadOnlyList<string> KnownCriteria => Known.Value;

    /// <summary>Sort rank of a criterion: its index in the registry, unknown ones after them.</summary>
    public static int Rank(string criterion)
    {
        ArgumentNullException.ThrowIfNull(criterion);
        var i = Array.IndexOf(Known.Value, criterion);
        return i >= 0 ? i : Known.Value.Length;
    }

    /// <summary>The fixed colour ("#rrggbb") of a criterion ("dense": <see cref="DenseColour"/>).</summary>
    public static string CriterionColour(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (ReportTables.IsDense(name)) return DenseColour;
        var known = Known.Value;
        var rank = Array.IndexOf(known, name);
        if (rank >= 0) return Palette[rank % Palette.Length];
        var rest = Math.Max(1, Palette.Length - known.Length);
        var hash = 17u;
        foreach (var ch in name) hash = unchecked(hash * 31 + ch); // stable across processes, unlike string.GetHashCode
        return Palette[(Math.Min(known.Length, Palette.Length - 1) + (int)(hash % (uint)rest)) % Palette.Length];
    }

    /// <summary>Known criteria in the registry's order, then others by name, dense last.</summary>
    public static List<string> Order(IEnumerable<string> criteria) =>
        criteria.Distinct(StringComparer.Ordinal)
            .OrderBy(c => ReportTables.IsDense(c) ? 1 : 0)
            .ThenBy(Rank)
            .ThenBy(c => c, StringComparer.Ordinal)
            .ToList();
}
