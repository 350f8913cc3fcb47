using System.Globalization;
using System.Security.Cryptography;

namespace Pai.Host.AutoS;

/// <summary>
/// A trained AutoS predictor: the feature set it reads, the feature normalization (mean and std of
/// the training features, stored with it so any model is normalized the same way) and the network.
/// File format (safetensors): <c>feature_mean</c> and <c>feature_std</c> [F], the network's
/// parameters and buffers as <c>net/NAME</c>, and metadata <c>format</c> = pai-autos-predictor,
/// <c>format_version</c>, <c>architecture</c>, <c>features</c> plus how it was trained.
/// </summary>
public sealed class Predictor : IDisposable
{
    /// <summary>Metadata "format" of a predictor file.</summary>
    public const string Format = "pai-autos-predictor";
    /// <summary>The format version this Pai writes and reads.</summary>
    public const int FormatVersion = 1;

    const string Refit = "train a predictor with `./pai autos fit --labels LABELS --out FILE` and pass that file";

    /// <summary>Wraps a network with its features and normalization; the predictor owns all three.</summary>
    public Predictor(string architecture, IReadOnlyList<Feature> features, Tensor mean, Tensor std, PredictorNetwork network,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        Architecture = architecture;
        Features = features;
        Mean = mean.DetachFromScope();
        Std = std.DetachFromScope();
        Network = network;
        Metadata = metadata ?? new Dictionary<string, string>();
    }

    /// <summary>"mlp" or "resnet18".</summary>
    public string Architecture { get; }
    /// <summary>The features, in column order.</summary>
    public IReadOnlyList<Feature> Features { get; }
    /// <summary>Mean of each feature over the training weights [F].</summary>
    public Tensor Mean { get; }
    /// <summary>Standard deviation of each feature over the training weights [F] (1 where it was 0).</summary>
    public Tensor Std { get; }
    /// <summary>The trained network.</summary>
    public PredictorNetwork Network { get; }
    /// <summary>How it was trained (labels, validation metrics), as stored in the file.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Predicted labels [n] for raw (unnormalized) features [n, F], in eval mode without gradients, in batches.</summary>
    public Tensor Predict(Tensor features)
    {
        if (features.Dim != 2 || features.Size(1) != Features.Count)
            throw new ArgumentException($"the predictor reads {Features.Count} features ({FeatureNames}), got a tensor {features}");
        using var _ = Libtorch.NoGrad();
        var was = Network.Training;
        Network.Training = false;
        try
        {
            var n = features.Size(0);
            var parts = new List<Tensor>();
            using (var scope = new DisposeScope())
            {
                for (long start = 0; start < n; start += Network.PredictionBatchSize)
                {
                    using var step = new DisposeScope();
                    var x = (features.Narrow(0, start, Math.Min(Network.PredictionBatchSize, n - start)) - Mean) / Std;
                    parts.Add(Network.Forward(x).MoveToOuterScope());
                }
                return (parts.Count == 0 ? Libtorch.Zeros([0]) : Libtorch.Cat(parts, 0)).MoveToOuterScope();
            }
        }
        finally
        {
            Network.Training = was;
        }
    }

    /// <summary>
    /// The criterion "autos": score = predicted label of each weight's features (keep the highest);
    /// a Hessian-diagonal feature is taken at <paramref name="hessianTemperature"/>.
    /// </summary>
    public Criterion Criterion(double hessianTemperature) => PaiAutoS.Criterion(hessianTemperature, Features, Predict);

    /// <summary>Comma-separated feature names.</summary>
    public string FeatureNames => Pai.Features.format(Microsoft.FSharp.Collections.ListModule.OfSeq(Features));

    /// <summary>Writes the predictor atomically with <paramref name="metadata"/> added to its format fields.</summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var all = new Dictionary<string, string>(metadata ?? Metadata)
        {
            ["format"] = Format,
            ["format_version"] = FormatVersion.ToString(CultureInfo.InvariantCulture),
            ["architecture"] = Architecture,
            ["features"] = FeatureNames,
        };
        Safetensors.Save(path, Tensors(), all);
    }

    IEnumerable<(string, Tensor)> Tensors() =>
        new[] { ("feature_mean", Mean), ("feature_std", Std) }
            .Concat(Network.NamedParameters().Concat(Network.NamedBuffers()).Select(p => ("net/" + p.Name, p.Tensor)));

    /// <summary>
    /// Loads a predictor file. A file that is not a predictor, has another format version, names
    /// features this Pai does not compute or holds tensors that do not fit its architecture and
    /// feature count throws a <see cref="CheckpointException"/> naming the file and the fix.
    /// </summary>
    public static Predictor Load(string path)
    {
        SafetensorsHeader header;
        try
        {
            header = Safetensors.ReadHeader(path);
        }
        catch (CheckpointException e)
        {
            throw new CheckpointException(path, $"cannot be read as an AutoS predictor ({e.Message[(path.Length + 2)..]}); {Refit}", e);
        }
        var m = header.Metadata;
        if (m.GetValueOrDefault("format") != Format)
            throw new CheckpointException(path, $"is not an AutoS predictor (its metadata has no format '{Format}': a mask, a checkpoint or a labels file?); {Refit}");
        if (m.GetValueOrDefault("format_version") != FormatVersion.ToString(CultureInfo.InvariantCulture))
            throw new CheckpointException(path, $"is an AutoS predictor of format version {m.GetValueOrDefault("format_version") ?? "(none)"}, but this Pai reads version {FormatVersion}; {Refit}");
        var features = Pai.Features.parse(m.GetValueOrDefault("features") ?? "");
        if (features.IsError)
            throw new CheckpointException(path, $"has a feature set this Pai does not compute ({features.ErrorValue}); {Refit}");
        var architecture = m.GetValueOrDefault("architecture") ?? "";
        if (!PredictorNetwork.Architectures.Contains(architecture))
            throw new CheckpointException(path, $"has predictor architecture '{architecture}', which this Pai does not know (valid: {string.Join(", ", PredictorNetwork.Architectures)}); {Refit}");
        var f = features.ResultValue.Length;
        var network = PredictorNetwork.Create(architecture, f, 0);
        using var scope = new DisposeScope();
        var mean = Libtorch.Zeros([f]);
        var std = Libtorch.Ones([f]);
        var predictor = new Predictor(architecture, features.ResultValue.ToList(), mean, std, network, m);
        try
        {
            Safetensors.LoadInto(path, predictor.Tensors(), strict: true);
        }
        catch (CheckpointException e)
        {
            predictor.Dispose();
            throw new CheckpointException(path,
                $"does not fit a {architecture} predictor of the {f} features it declares ({predictor.FeatureNames}): {e.Message[(path.Length + 2)..]}; {Refit}", e);
        }
        return predictor;
    }

    /// <summary>The first 16 hex digits of the SHA-256 of the file's bytes: part of the run key of runs that use it.</summary>
    public static string ContentHash(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"predictor file '{path}' not found; {Refit}", path);
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f))[..16];
    }

    /// <summary>Frees the network and the normalization tensors.</summary>
    public void Dispose()
    {
        Network.Dispose();
        Mean.Dispose();
        Std.Dispose();
    }
}
