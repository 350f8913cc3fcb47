using System.Globalization;

namespace Pai.Host.AutoS;

/// <summary>One layer's training samples for a predictor: raw features [n, F] and labels [n] (owned by the caller).</summary>
/// <param name="Name">The layer (weight) name.</param>
/// <param name="Features">Features of its weights, one row per weight.</param>
/// <param name="Labels">Label of each weight, in [0, 1].</param>
public sealed record LayerSamples(string Name, Tensor Features, Tensor Labels);

/// <summary>How to train a predictor.</summary>
public sealed record FitOptions
{
    /// <summary>"mlp" (default) or "resnet18" (the paper's; one ResNet-18 forward per weight).</summary>
    public string Architecture { get; init; } = "mlp";
    /// <summary>Passes over the training weights (the paper: 10).</summary>
    public int Epochs { get; init; } = 10;
    /// <summary>Weights per Adam step.</summary>
    public int BatchSize { get; init; } = 1024;
    /// <summary>Adam learning rate.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>Seed of initialization, subsampling and batch order.</summary>
    public ulong Seed { get; init; }
    /// <summary>
    /// Whole layers held out for validation (never trained on). Null: every fourth layer starting
    /// with the second (index 1, 5, 9, …), so a network of two or more layers always has one.
    /// </summary>
    public IReadOnlyList<string>? ValidationLayers { get; init; }
    /// <summary>Use at most this many training weights and this many validation weights (a seeded subset); null: all.</summary>
    public int? MaxWeights { get; init; }

    /// <summary>Throws an ArgumentException naming the bad option.</summary>
    public void Validate()
    {
        if (!PredictorNetwork.Architectures.Contains(Architecture))
            throw new ArgumentException($"unknown predictor architecture '{Architecture}'; valid: {string.Join(", ", PredictorNetwork.Architectures)}");
        if (Epochs < 1) throw new ArgumentException($"epochs must be at least 1, got {Epochs}");
        if (BatchSize < 1) throw new ArgumentException($"the batch size must be at least 1, got {BatchSize}");
        if (!(LearningRate > 0)) throw new ArgumentException($"the learning rate must be positive, got {LearningRate}");
        if (MaxWeights is < 1) throw new ArgumentException($"max weights must be at least 1, got {MaxWeights}");
    }
}

/// <summary>How a fit went, measured on the held-out layers.</summary>
/// <param name="TrainingLayers">Layers trained on.</param>
/// <param name="ValidationLayers">Layers held out.</param>
/// <param name="TrainingWeights">Weights trained on.</param>
/// <param name="ValidationWeights">Weights validated on.</param>
/// <param name="EpochLosses">Mean training MSE of every epoch.</param>
/// <param name="ValidationMse">MSE on the held-out layers.</param>
/// <param name="ValidationSpearman">Spearman rank correlation of predictions and labels on the held-out layers (ties get average ranks).</param>
/// <param name="Seconds">Wall time.</param>
public sealed record FitReport(IReadOnlyList<string> TrainingLayers, IReadOnlyList<string> ValidationLayers, long TrainingWeights,
    long ValidationWeights, IReadOnlyList<double> EpochLosses, double ValidationMse, double ValidationSpearman, double Seconds)
{
    /// <summary>The report as predictor-file metadata.</summary>
    public Dictionary<string, string> ToMetadata() => new()
    {
        ["training_layers"] = string.Join(",", TrainingLayers),
        ["validation_layers"] = string.Join(",", ValidationLayers),
        ["training_weights"] = TrainingWeights.ToString(CultureInfo.InvariantCulture),
        ["validation_weights"] = ValidationWeights.ToString(CultureInfo.InvariantCulture),
        ["validation_mse"] = ValidationMse.ToString("R", CultureInfo.InvariantCulture),
        ["validation_spearman"] = ValidationSpearman.ToString("R", CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// Trains a predictor on labeled weights with MSE and Adam, holding out whole layers for
/// validation (the reference code validated on a subset of its training set; a held-out layer
/// measures what transfer needs: weights the predictor has never seen). Features are normalized
/// with the training weights' mean and std, which the predictor keeps.
/// </summary>
public static class PredictorFitting
{
    /// <summary>The layers held out by default: indices 1, 5, 9, … of <paramref name="layers"/>.</summary>
    public static IReadOnlyList<string> DefaultValidationLayers(IReadOnlyList<string> layers) =>
        layers.Where((_, i) => i % 4 == 1).ToList();

    /// <summary>Fits a predictor; log receives one line per epoch. Same inputs and seed, same predictor.</summary>
    public static (Predictor Predictor, FitReport Report) Fit(IReadOnlyList<LayerSamples> layers, IReadOnlyList<Feature> features,
        FitOptions options, Action<string>? log = null)
    {
        options.Validate();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var names = layers.Select(l => l.Name).ToList();
        var heldOut = options.ValidationLayers ?? DefaultValidationLayers(names);
        foreach (var n in heldOut)
            if (!names.Contains(n)) throw new ArgumentException($"validation layer '{n}' is not among the labeled layers: {string.Join(", ", names)}");
        var training = layers.Where(l => !heldOut.Contains(l.Name)).ToList();
        var validation = layers.Where(l => heldOut.Contains(l.Name)).ToList();
        if (training.Count == 0) throw new ArgumentException("every layer is held out for validation: leave at least one to train on");
        if (validation.Count == 0) throw new ArgumentException("no layer is held out for validation: the labels need at least two layers");
        foreach (var l in layers)
            if (l.Features.Dim != 2 || l.Features.Size(1) != features.Count || l.Labels.NumEl != l.Features.Size(0))
                throw new ArgumentException($"layer '{l.Name}': expected features [n, {features.Count}] and n labels, got {l.Features} and {l.Labels}");

        using var scope = new DisposeScope();
        using var generator = new Generator(options.Seed);
        var (x, y) = Gather(training, options.MaxWeights, generator);
        var (vx, vy) = Gather(validation, options.MaxWeights, generator);
        var mean = x.Mean(0);
        // A feature that is constant on the training layers (fan-in of a one-layer set) is centred, not scaled.
        var spread = x.Var([0], unbiased: false).Sqrt();
        var std = Tensor.Where(spread.Gt(0), spread, Libtorch.Ones(spread.Shape));
        var network = PredictorNetwork.Create(options.Architecture, features.Count, options.Seed);
        var predictor = new Predictor(options.Architecture, features, mean, std, network);
        try
        {
            var xn = (x - mean) / std;
            var parameters = network.NamedParameters().Select(p => p.Tensor).ToList();
            using var adam = new AdamW(parameters, 0.9, 0.999, 1e-8, weightDecay: 0);
            var losses = new List<double>();
            var n = xn.Size(0);
            for (var epoch = 1; epoch <= options.Epochs; epoch++)
            {
                network.Training = true;
                using var order = Libtorch.RandPerm(n, generator);
                double sum = 0;
                for (long start = 0; start < n; start += options.BatchSize)
                {
                    using var step = new DisposeScope();
                    var idx = order.Narrow(0, start, Math.Min(options.BatchSize, n - start));
                    foreach (var p in parameters) p.ClearGrad();
                    var loss = Functional.MseLoss(network.Forward(xn.IndexSelect(0, idx)), y.IndexSelect(0, idx));
                    loss.Backward();
                    adam.Step(options.LearningRate);
                    sum += loss.Item() * idx.NumEl;
                }
                foreach (var p in parameters) p.ClearGrad();
                losses.Add(sum / n);
                log?.Invoke($"epoch {epoch}/{options.Epochs}: training MSE {sum / n:F5} ({watch.Elapsed.TotalSeconds:F1} s)");
            }
            var predicted = predictor.Predict(vx);
            var mse = Functional.MseLoss(predicted, vy).Item();
            var spearman = Stability.spearman(predicted.To(DType.Float64).ToArray<double>(), vy.To(DType.Float64).ToArray<double>());
            var report = new FitReport(training.Select(l => l.Name).ToList(), validation.Select(l => l.Name).ToList(), n, vx.Size(0),
                losses, mse, spearman, watch.Elapsed.TotalSeconds);
            log?.Invoke($"held-out layers {string.Join(", ", report.ValidationLayers)}: MSE {mse:F5}, Spearman {spearman:F4}");
            return (predictor, report);
        }
        catch
        {
            predictor.Dispose();
            throw;
        }
    }

    // Rows of the layers stacked, then a seeded subset of at most max rows.
    static (Tensor X, Tensor Y) Gather(List<LayerSamples> layers, int? max, Generator generator)
    {
        var x = Libtorch.Cat(layers.Select(l => l.Features.To(DType.Float32)).ToList(), 0);
        var y = Libtorch.Cat(layers.Select(l => l.Labels.Flatten().To(DType.Float32)).ToList(), 0);
        if (max is not { } m || x.Size(0) <= m) return (x, y);
        var idx = Libtorch.RandPerm(x.Size(0), generator).Narrow(0, 0, m);
        return (x.IndexSelect(0, idx), y.IndexSelect(0, idx));
    }
}
