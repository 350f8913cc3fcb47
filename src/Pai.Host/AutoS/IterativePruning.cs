using System.Text.Json;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.Reports;

namespace Pai.Host.AutoS;

/// <summary>
/// Iterative pruning after training, lottery-ticket style: train, prune a fraction of the remaining
/// weights by global magnitude (or SNIP on the trained weights), then either rewind the survivors
/// to θ₀ (iterative rewind pruning, IRP: the labels of AutoS) or keep training from the trained
/// weights (iterative magnitude pruning, IMP: the accuracy PaI tries to reach without its cost).
/// </summary>
/// <param name="Run">Model, data, seed, scoring subset and training budget of every round.
/// <see cref="RunConfig.Criterion"/> is what ranks trained weights: one of <c>Registry.trainedRankings</c>.</param>
/// <param name="Rounds">Pruning rounds R (the network is trained R + 1 times: at densities (1 − p)^0 … (1 − p)^R).</param>
/// <param name="PruneFraction">Fraction p of the remaining weights pruned per round.</param>
/// <param name="Rewind">Rewind to θ₀ after each round (IRP) or continue from the trained weights (IMP).</param>
public sealed record IterativePruningSpec(RunConfig Run, int Rounds = 5, double PruneFraction = 0.2, bool Rewind = true)
{
    /// <summary>Throws an ArgumentException naming the bad setting.</summary>
    public void Validate()
    {
        if (Rounds < 1) throw new ArgumentException($"iterative pruning needs at least 1 round, got {Rounds}");
        if (!(PruneFraction > 0 && PruneFraction < 1)) throw new ArgumentException($"the prune fraction must lie in (0, 1), got {PruneFraction}");
        if (!Registry.trainedRankings.Contains(Run.Criterion))
            throw new ArgumentException($"iterative pruning ranks trained weights by {string.Join(" or ", Registry.trainedRankings)}, not '{Run.Criterion}'");
        RunPlan.Validate(Run);
    }

    /// <summary>What a resumed run must agree on: everything but the number of rounds (more rounds extend a finished run).</summary>
    public string Identity() => JsonSerializer.Serialize(new { run = Run.CanonicalJson(), fraction = PruneFraction, rewind = Rewind });

    /// <summary>Density of the network trained in round <paramref name="round"/> (0-based).</summary>
    public double DensityAt(int round) => Math.Pow(1 - PruneFraction, round);
}

/// <summary>One trained network of an iterative-pruning run.</summary>
/// <param name="Round">0-based round (round 0 trains the dense network).</param>
/// <param name="Density">Fraction of prunable weights kept while it trained.</param>
/// <param name="TestTop1">Test accuracy after training.</param>
/// <param name="TestLoss">Test loss after training.</param>
/// <param name="Seconds">Wall time of the round.</param>
public sealed record PruningRound(int Round, double Density, double TestTop1, double TestLoss, double Seconds);

/// <summary>The outcome of an iterative-pruning run.</summary>
/// <param name="Rounds">Every trained network, in order.</param>
/// <param name="LabelsPath">The labels file (IRP only; null for IMP).</param>
/// <param name="MaskPath">The final mask (density (1 − p)^R).</param>
/// <param name="RecordPath">The run record (JSON).</param>
public sealed record IterativePruningResult(IReadOnlyList<PruningRound> Rounds, string? LabelsPath, string MaskPath, string RecordPath);

/// <summary>
/// Runs IRP or IMP into a directory, resumably: after every round the whole state (θ₀, current
/// weights, mask, survival counts, history) is written atomically to <c>state.safetensors</c>, and a
/// run started again in the same directory continues after the last finished round. Same seed,
/// same results, bit for bit. IRP writes <c>labels.safetensors</c>: per weight the number of rounds
/// it survived (round 0 counted, so 1 … R + 1) min-max scaled to [0, 1] (<c>label/NAME</c>), the raw
/// counts (<c>count/NAME</c>) and θ₀ (<c>theta0/NAME</c>), with the run in its metadata.
/// </summary>
public static class IterativePruning
{
    /// <summary>Metadata "format" of a labels file.</summary>
    public const string LabelsFormat = "pai-autos-labels";
    /// <summary>Metadata "format" of an iterative-pruning state file.</summary>
    public const string StateFormat = "pai-iterative-pruning-state";

    /// <summary>Runs (or resumes) the spec in <paramref name="directory"/>; log receives progress lines.</summary>
    public static IterativePruningResult Run(IterativePruningSpec spec, Dataset train, Dataset test, string directory,
        Action<string>? log = null, Action<TrainProgress>? training = null)
    {
        spec.Validate();
        log ??= _ => { };
        Directory.CreateDirectory(directory);
        var statePath = Path.Combine(directory, "state.safetensors");
        var plan = RunPlan.Stored(spec.Run);
        var c = plan.Config;
        using var model = Runner.CreateModel(plan, train);
        using var initial = model.Copy();
        var mask = model.Prunable.ToDictionary(p => p.Key, p => Libtorch.Ones(p.Value.Shape, DType.Bool).DetachFromScope());
        var counts = model.Prunable.ToDictionary(p => p.Key, p => Libtorch.Ones(p.Value.Shape, DType.Float32).DetachFromScope());
        var history = new List<PruningRound>();
        var prunings = 0;
        try
        {
            using var scoring = ScoringSubset.Create(train, c.SamplesPerClass, c.Seed, c.ScoringBatchSize, device: model.Device);
            if (File.Exists(statePath))
            {
                prunings = Resume(statePath, spec, model, initial, mask, counts, history);
                log($"resuming {statePath}: {history.Count} round(s) done");
                // A run that asked for fewer rounds stopped without pruning after its last training; more rounds follow now.
                if (prunings < history.Count && history.Count <= spec.Rounds)
                {
                    PruneRound(spec, model, scoring, mask, counts, spec.DensityAt(history.Count));
                    SaveState(statePath, spec, model, initial, mask, counts, history, ++prunings);
                }
            }
            var data = RunData.InMemory(train, () => test);
            var kind = spec.Rewind ? "IRP" : "IMP";
            for (var round = history.Count; round <= spec.Rounds; round++)
            {
                var watch = System.Diagnostics.Stopwatch.StartNew();
                var density = spec.DensityAt(round);
                log($"{kind} round {round}/{spec.Rounds}: training at density {density:P2}");
                if (spec.Rewind) model.LoadStateFrom(initial);
                // Every round sees its own epochs of the same seeded data order.
                var epochs = Runner.TrainModel(plan, model, mask, data, log, training, firstEpoch: round * plan.Train.Epochs);
                var top1 = epochs[^1].Test!.Top1;
                if (round < spec.Rounds)
                {
                    PruneRound(spec, model, scoring, mask, counts, spec.DensityAt(round + 1));
                    prunings++;
                }
                history.Add(new PruningRound(round, density, top1, epochs[^1].Test!.Loss, watch.Elapsed.TotalSeconds));
                SaveState(statePath, spec, model, initial, mask, counts, history, prunings);
                log($"{kind} round {round}/{spec.Rounds}: density {density:P2}, test top-1 {top1:P2} ({watch.Elapsed.TotalSeconds:F1} s)");
            }
            return WriteOutputs(directory, spec, initial, mask, counts, history);
        }
        finally
        {
            foreach (var t in mask.Values) t.Dispose();
            foreach (var t in counts.Values) t.Dispose();
        }
    }

    // Ranks the trained weights (pruned ones stay pruned), keeps the top `density` globally, counts survivors.
    static void PruneRound(IterativePruningSpec spec, Model model, BatchSet scoring, Dictionary<string, Tensor> mask,
        Dictionary<string, Tensor> counts, double density)
    {
        using var scope = new DisposeScope();
        var previous = new Mask(ListModule.OfSeq(mask.Select(k => Tuple.Create(k.Key, k.Value))));
        var criterion = Registry.find(spec.Run.Criterion);
        var context = new ScoringContext(model, ListModule.OfSeq(scoring), ListModule.OfSeq(model.InputShape.Dimensions),
            spec.Run.Seed, CurvatureOptions.Default, FSharpOption<Mask>.Some(previous));
        var scores = criterion.Score(context);
        Mask next;
        try
        {
            next = Selection.select(Ranking.Global, density, false, FSharpOption<Mask>.Some(previous), scores);
        }
        finally
        {
            ScoresModule.dispose(scores);
        }
        foreach (var (name, keep) in next.Layers.Select(l => (l.Item1, l.Item2)))
        {
            using (var kept = keep.To(DType.Float32)) counts[name].Add_(kept);
            mask[name].Copy_(keep);
            keep.Dispose();
        }
    }

    static void SaveState(string path, IterativePruningSpec spec, Model model, Model initial,
        Dictionary<string, Tensor> mask, Dictionary<string, Tensor> counts, List<PruningRound> history, int prunings)
    {
        Safetensors.Save(path, State(model, initial, mask, counts), new Dictionary<string, string>
        {
            ["format"] = StateFormat,
            ["identity"] = spec.Identity(),
            ["history"] = JsonSerializer.Serialize(history),
            ["prunings"] = prunings.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
    }

    // Everything a resumed run needs, by name: θ₀ and current parameters and buffers, mask, survival counts.
    static IEnumerable<(string, Tensor)> State(Model model, Model initial, Dictionary<string, Tensor> mask, Dictionary<string, Tensor> counts) =>
        Entries("theta0/", initial.Parameters.Concat(initial.Buffers)).Concat(Entries("weights/", model.Parameters.Concat(model.Buffers)))
            .Concat(Entries("mask/", mask)).Concat(Entries("count/", counts));

    static IEnumerable<(string, Tensor)> Entries(string prefix, IEnumerable<KeyValuePair<string, Tensor>> tensors) =>
        tensors.Select(p => (prefix + p.Key, p.Value));

    // Restores the state; returns the number of prunings done.
    static int Resume(string path, IterativePruningSpec spec, Model model, Model initial,
        Dictionary<string, Tensor> mask, Dictionary<string, Tensor> counts, List<PruningRound> history)
    {
        var header = Safetensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue("format", out var format) || format != StateFormat)
            throw new CheckpointException(path, "not an iterative-pruning state file; choose another output directory or delete it");
        if (header.Metadata.GetValueOrDefault("identity") != spec.Identity())
            throw new CheckpointException(path,
                $"holds a run with other settings ({header.Metadata.GetValueOrDefault("identity")}); choose another output directory, or delete it to start over");
        var done = JsonSerializer.Deserialize<List<PruningRound>>(header.Metadata["history"])!;
        if (done.Count > spec.Rounds + 1)
            throw new CheckpointException(path,
                $"holds a run of {done.Count - 1} rounds, more than the {spec.Rounds} asked for; ask for at least {done.Count - 1} or choose another output directory");
        Safetensors.LoadInto(path, State(model, initial, mask, counts), strict: true);
        history.AddRange(done);
        return int.Parse(header.Metadata["prunings"], System.Globalization.CultureInfo.InvariantCulture);
    }

    static IterativePruningResult WriteOutputs(string directory, IterativePruningSpec spec, Model initial,
        Dictionary<string, Tensor> mask, Dictionary<string, Tensor> counts, List<PruningRound> history)
    {
        var c = spec.Run;
        var metadata = new Dictionary<string, string>
        {
            ["model"] = c.Model,
            ["dataset"] = c.Dataset,
            ["rounds"] = spec.Rounds.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["prune_fraction"] = spec.PruneFraction.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            ["prune_by"] = c.Criterion,
            ["rewind"] = spec.Rewind ? "true" : "false",
            ["seed"] = c.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["densities"] = JsonSerializer.Serialize(history.Select(h => h.Density)),
            ["accuracies"] = JsonSerializer.Serialize(history.Select(h => h.TestTop1)),
            ["config"] = c.CanonicalJson(),
        };
        var maskPath = Path.Combine(directory, "mask.safetensors");
        var labelsPath = spec.Rewind ? Path.Combine(directory, "labels.safetensors") : null;
        var recordPath = Path.Combine(directory, "record.json");
        // Mask, labels and record describe one run: all of them are written, or none.
        var outputs = new OutputSet([("mask", maskPath), ("labels", labelsPath), ("record", recordPath)]);
        outputs.Write(() =>
        {
            Safetensors.Save(outputs.Staged(maskPath)!, mask.Select(k => (k.Key, k.Value)), metadata);
            if (labelsPath is not null)
            {
                using var scope = new DisposeScope();
                var (min, max) = (counts.Values.Min(t => t.Min().Item()), counts.Values.Max(t => t.Max().Item()));
                var labels = counts.Select(k => ("label/" + k.Key, (k.Value - min) / Math.Max(max - min, 1))).ToList();
                var theta0 = initial.Prunable.Select(p => ("theta0/" + p.Key, p.Value));
                Safetensors.Save(outputs.Staged(labelsPath)!, labels.Concat(counts.Select(k => ("count/" + k.Key, k.Value))).Concat(theta0),
                    new Dictionary<string, string>(metadata) { ["format"] = LabelsFormat, ["format_version"] = "1" });
            }
            var record = new { kind = spec.Rewind ? "irp" : "imp", metadata, rounds = history };
            AtomicFile.WriteAllText(outputs.Staged(recordPath)!, JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }));
        });
        return new IterativePruningResult(history, labelsPath, maskPath, recordPath);
    }
}
