namespace Pai.Host.Reports;

/// <summary>
/// The order of the criteria in tables and legends and one fixed colour per criterion, the same in
/// every report. Both come from the criterion registry (src/Pai/Pai.Registry.fs).
/// </summary>
public static class CriterionColours
{
    /// <summary>The colour of the dense baseline.</summary>
    public const string DenseColour = "#222222";

    // Colours for criteria the registry does not know (user formulas), chosen by a hash of the
    // name so that each keeps its colour; none is a registry colour.
    static readonly string[] Spare = ["#4e79a7", "#f28e2b", "#59a14f", "#edc948", "#76b7b2", "#b07aa1", "#ff9da7", "#9c755f"];

    /// <summary>The criteria in the registry's order (<see cref="Registry.names"/>).</summary>
    public static IReadOnlyList<string> KnownCriteria { get; } = [.. Registry.names];

    /// <summary>Sort rank of a criterion: its index in the registry, unknown ones after them.</summary>
    public static int Rank(string criterion)
    {
        ArgumentNullException.ThrowIfNull(criterion);
        return Registry.order(criterion);
    }

    /// <summary>The fixed colour ("#rrggbb") of a criterion: the registry's, <see cref="DenseColour"/> for "dense".</summary>
    public static string CriterionColour(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (ReportTables.IsDense(name)) return DenseColour;
        if (KnownCriteria.Contains(name)) return Registry.colour(name);
        var hash = 17u;
        foreach (var ch in name) hash = unchecked(hash * 31 + ch); // stable across processes, unlike string.GetHashCode
        return Spare[hash % (uint)Spare.Length];
    }

    /// <summary>Known criteria in the registry's order, then others by name, dense last.</summary>
    public static List<string> Order(IEnumerable<string> criteria) =>
        criteria.Distinct(StringComparer.Ordinal)
            .OrderBy(c => ReportTables.IsDense(c) ? 1 : 0)
            .ThenBy(Rank)
            .ThenBy(c => c, StringComparer.Ordinal)
            .ToList();
}
