using Microsoft.FSharp.Collections;

namespace Pai.Host.Runs;

/// <summary>
/// The sanity checks of Frankle et al. (2021) and Su et al. (2020), docs/architecture.md §5b. "invert" keeps
/// the lowest scores by negating the criterion's formula (ties as usual; never 1/s) and lives in
/// <see cref="Runner.Prune"/>; shuffle and reinit change a mask or the weights it is applied to.
/// </summary>
public static class Ablations
{
    /// <summary>The valid ablation names ("none" first).</summary>
    public static IReadOnlyList<string> Names { get; } = RunSettings.Of(nameof(RunConfig.Ablation)).Declaration.Choices!;

    // Ablation seeds are derived from the run's seed, away from the seeds the run already uses.
    const ulong ShuffleStream = 0x53485546464C45UL; // "SHUFFLE"
    const ulong ReinitStream = 0x5245494E4954UL; // "REINIT"

    /// <summary>
    /// Shuffle: each layer's kept positions permuted at random (seeded), so each layer keeps exactly
    /// its count and the criterion contributes only its per-layer densities. Equal in distribution
    /// to "random at the criterion's layer densities". Disposes the input mask.
    /// </summary>
    public static Mask Shuffle(Mask mask, ulong seed)
    {
        using var generator = new Generator(seed ^ ShuffleStream);
        var layers = new List<Tuple<string, Tensor>>();
        using (var scope = new DisposeScope())
        {
            foreach (var (name, keep) in mask.Layers)
            {
                var flat = keep.Flatten();
                var permutation = Libtorch.RandPerm(flat.NumEl, generator, keep.Device);
                layers.Add(Tuple.Create(name, flat.IndexSelect(0, permutation).Reshape(keep.Shape).DetachFromScope()));
            }
        }
        MaskModule.dispose(mask);
        return new Mask(ListModule.OfSeq(layers));
    }

    /// <summary>What the run's ablation did to its mask, one line for `pai prune` to print under the densities (null: none).</summary>
    public static string? Describe(RunPlan plan) => plan.Ablation switch
    {
        Ablation.Shuffle => $"ablation shuffle: each layer's kept positions permuted (seed {plan.Config.Seed}); each layer keeps its count, so the densities above are the criterion's",
        Ablation.Invert => "ablation invert: the lowest scores kept (the criterion's formula negated)",
        Ablation.Reinit => $"ablation reinit: the mask is the criterion's; `pai train --mask` trains it from fresh initial weights (seed {ReinitSeed(plan.Config.Seed)})",
        _ => null,
    };

    /// <summary>
    /// Whether a mask file was made for the reinit check (its "config" metadata says so): training it
    /// then starts from fresh weights, as the run that made it would have.
    /// </summary>
    public static bool IsReinitMask(IReadOnlyDictionary<string, string> metadata) =>
        metadata.TryGetValue("config", out var json) && TryAblation(json) == "reinit";

    static string? TryAblation(string json)
    {
        try { return System.Text.Json.Nodes.JsonNode.Parse(json)?[RunConfig.JsonName(nameof(RunConfig.Ablation))]?.GetValue<string>(); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException) { return null; } // not Pai's metadata
    }

    /// <summary>The seed of a reinit run's fresh initial weights.</summary>
    public static ulong ReinitSeed(ulong seed) => seed ^ ReinitStream;

    /// <summary>
    /// Reinit: the mask is kept and every parameter and buffer is drawn afresh, as a model
    /// initialized with <see cref="ReinitSeed"/> would have them.
    /// </summary>
    public static void Reinitialize(Model model, ulong seed)
    {
        using var fresh = ModelZoo.Create(model.Name, model.Options with { Seed = ReinitSeed(seed) });
        using var noGrad = Libtorch.NoGrad();
        foreach (var (name, p) in model.Parameters) p.Copy_(fresh.Parameters.Single(q => q.Key == name).Value);
        foreach (var (name, b) in model.Buffers) b.Copy_(fresh.Buffers.Single(q => q.Key == name).Value);
    }
}
