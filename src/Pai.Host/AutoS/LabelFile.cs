using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Pai.Host.AutoS;

/// <summary>
/// A labels file written by IRP (<see cref="IterativePruning"/>): per prunable layer the scaled
/// labels and θ₀, and the run that produced them. Owns its tensors.
/// </summary>
public sealed class LabelFile : IDisposable
{
    readonly TensorFile file;

    LabelFile(string path, TensorFile file, RunConfig config, IReadOnlyList<string> layers)
    {
        Path = path;
        this.file = file;
        Config = config;
        Layers = layers;
    }

    /// <summary>The file.</summary>
    public string Path { get; }
    /// <summary>Model, data, seed and scoring settings of the IRP run.</summary>
    public RunConfig Config { get; }
    /// <summary>The prunable layers, in the model's order.</summary>
    public IReadOnlyList<string> Layers { get; }
    /// <summary>The file's metadata (rounds, densities, accuracies, …).</summary>
    public IReadOnlyDictionary<string, string> Metadata => file.Metadata;

    /// <summary>Scaled labels of a layer, shaped like its weight.</summary>
    public Tensor Label(string layer) => file["label/" + layer];

    /// <summary>θ₀ of a layer.</summary>
    public Tensor Theta0(string layer) => file["theta0/" + layer];

    /// <summary>Loads a labels file; anything else throws a <see cref="CheckpointException"/> saying how to make one.</summary>
    public static LabelFile Load(string path)
    {
        var header = Safetensors.ReadHeader(path);
        if (header.Metadata.GetValueOrDefault("format") != IterativePruning.LabelsFormat || !header.Metadata.ContainsKey("config"))
            throw new CheckpointException(path, $"is not an AutoS labels file (format '{IterativePruning.LabelsFormat}'); make one with `./pai autos label`");
        var file = Safetensors.Load(path);
        var layers = file.Names.Where(n => n.StartsWith("label/")).Select(n => n["label/".Length..]).ToList();
        return new LabelFile(path, file, RunConfig.FromJson(header.Metadata["config"]), layers);
    }

    /// <summary>
    /// Per-layer features and labels of the labeled model at θ₀, computed the way the autos
    /// criterion computes them when it prunes: the model rebuilt from the run's seed (and checked
    /// against the stored θ₀), BN warm-up when the model has batch norm, then the features on the
    /// run's scoring subset in eval mode. The caller owns the returned tensors.
    /// </summary>
    public IReadOnlyList<LayerSamples> Samples(IReadOnlyList<Feature> features, Dataset train)
    {
        var c = Config;
        using var scope = new DisposeScope();
        using var model = Runner.CreateModel(RunPlan.Stored(c), train);
        foreach (var (name, w) in model.Prunable)
        {
            if (!Layers.Contains(name))
                throw new CheckpointException(Path, $"has no labels for layer '{name}' of {c.Model}");
            if (!w.Equal(Theta0(name)))
                throw new CheckpointException(Path, $"θ₀ of layer '{name}' differs from {c.Model} initialized with seed {c.Seed}: the labels come from another model or Pai version; label again with `./pai autos label`");
        }
        using var scoring = ScoringSubset.Create(train, c.SamplesPerClass, c.Seed, c.ScoringBatchSize, device: model.Device);
        if (model.BatchNorms.Any() && c.WarmupBatches > 0)
        {
            using var loader = new DataLoader(train, c.BatchSize, shuffle: true, seed: c.Seed, device: model.Device);
            BnWarmup.run(model, c.WarmupBatches, loader.Epoch(0));
        }
        model.Training = false;
        var context = new ScoringContext(model, ListModule.OfSeq(scoring), ListModule.OfSeq(model.InputShape.Dimensions),
            c.Seed, RunPlan.CurvatureOf(c), FSharpOption<Mask>.None);
        var columns = PaiAutoS.ComputeFeatures(c.HutchinsonTemperature, features, context);
        return model.Prunable.Select((p, i) => new LayerSamples(p.Key, columns[i].DetachFromScope(), Label(p.Key).Flatten().Clone().DetachFromScope())).ToList();
    }

    /// <summary>Frees the tensors.</summary>
    public void Dispose() => file.Dispose();
}
