using System.CommandLine;
using Pai.Host.Runs;

namespace Pai.Cli;

/// <summary>The options that describe one experiment, shared by prune, train, run and sweep.</summary>
internal sealed class ConfigOptions
{
    static readonly RunConfig D = new();

    public readonly Option<string> Model = new("--model", "-m") { Description = "model: lenet300, lenet5, vgg11/16/19, resnet20/32/56, resnet18, vit-tiny", DefaultValueFactory = _ => D.Model };
    public readonly Option<string> Dataset = new("--dataset", "-d") { Description = "data set: fashion-mnist (default, ships with Debian), mnist, cifar10, cifar100, tinyimagenet, imagenet, synthetic", DefaultValueFactory = _ => D.Dataset };
    public readonly Option<string?> Data = new("--data") { Description = "directory of the data set files (default: its usual location)" };
    public readonly Option<bool> SkipBadImages = new("--skip-bad-images") { Description = "tinyimagenet, imagenet: leave corrupt or truncated JPEGs out (the count is printed) instead of stopping with an error naming the file" };
    public readonly Option<string> Scope = new("--scope") { Description = "rank weights globally or per layer", DefaultValueFactory = _ => D.Scope };
    public readonly Option<int?> Rounds = new("--rounds") { Description = "pruning rounds (default: the criterion's, 100 for synflow)" };
    public readonly Option<int> Warmup = new("--warmup") { Description = "BN warm-up batches before scoring (0 = off; skipped for models without batch norm)", DefaultValueFactory = _ => D.WarmupBatches };
    public readonly Option<int> SamplesPerClass = new("--samples-per-class") { Description = "scoring samples per class", DefaultValueFactory = _ => D.SamplesPerClass };
    public readonly Option<int> ScoringBatch = new("--scoring-batch") { Description = "scoring batch size", DefaultValueFactory = _ => D.ScoringBatchSize };
    public readonly Option<int> Probes = new("--probes") { Description = "Hutchinson probes per scoring batch", DefaultValueFactory = _ => D.Probes };
    public readonly Option<string> ProbeScope = new("--probe-scope") { Description = "Hutchinson probe blocks: the whole network (full), one layer at a time (layer), or groups of layer indices such as 0+1,2,3", DefaultValueFactory = _ => D.ProbeScope };
    public readonly Option<int?> HvpBudget = new("--hvp-budget") { Description = "Hutchinson HVPs over all scoring batches, split evenly: each probe block gets budget / (batches × blocks) probes (default: --probes per batch); the cap of --adaptive-target" };
    public readonly Option<double?> AdaptiveTarget = new("--adaptive-target") { Description = "adaptive Hutchinson: probe in chunks until every layer's median relative SE is at most this (needs --hvp-budget)" };
    public readonly Option<bool> ExactLastLayer = new("--exact-last-layer") { Description = "Hutchinson criteria: the classifier's Hessian diagonal in closed form, p(1−p)·h²/T² (pair it with --probe-scope layer: ranked globally against full-probing noise, the exact classifier loses its weights, see docs/curvature-study.md)" };
    public readonly Option<int> ExactLayerSize = new("--exact-layer-size") { Description = "Hutchinson criteria: layers with at most this many weights get their exact diagonal from unit-vector HVPs (0 = off)", DefaultValueFactory = _ => D.ExactLayerSize };
    public readonly Option<double> HutchTemperature = new("--hutch-temperature") { Description = "temperature T of the Hutchinson criteria (logits / T)", DefaultValueFactory = _ => D.HutchinsonTemperature };
    public readonly Option<double> GraspTemperature = new("--grasp-temperature") { Description = "temperature T of GraSP", DefaultValueFactory = _ => D.GraspTemperature };
    public readonly Option<bool> KeepOne = new("--keep-one-per-layer") { Description = "never prune a layer completely (prevents layer collapse)" };
    public readonly Option<bool> DenseClassifier = new("--dense-classifier") { Description = "keep the last layer dense" };
    public readonly Option<string?> Predictor = new("--predictor") { Description = "AutoS predictor file (criterion autos)" };
    public readonly Option<ulong> Seed = new("--seed") { Description = "seed of initialization, scoring subset, probes and data order", DefaultValueFactory = _ => D.Seed };
    public readonly Option<int> Epochs = new("--epochs", "-e") { Description = "training epochs", DefaultValueFactory = _ => D.Epochs };
    public readonly Option<int> BatchSize = new("--batch-size") { Description = "training batch size", DefaultValueFactory = _ => D.BatchSize };
    public readonly Option<string> Optimizer = new("--optimizer") { Description = "sgd or adamw", DefaultValueFactory = _ => D.Optimizer };
    public readonly Option<double> Lr = new("--lr") { Description = "base learning rate", DefaultValueFactory = _ => D.LearningRate };
    public readonly Option<double> Momentum = new("--momentum") { Description = "SGD momentum", DefaultValueFactory = _ => D.Momentum };
    public readonly Option<bool> Nesterov = new("--nesterov") { Description = "Nesterov momentum" };
    public readonly Option<double> WeightDecay = new("--weight-decay") { Description = "weight decay", DefaultValueFactory = _ => D.WeightDecay };
    public readonly Option<string> Schedule = new("--schedule") { Description = "cosine, multistep or constant", DefaultValueFactory = _ => D.Schedule };
    public readonly Option<int[]> Milestones = new("--milestones") { Description = "multistep milestone epochs", AllowMultipleArgumentsPerToken = true };
    public readonly Option<double> Gamma = new("--gamma") { Description = "multistep factor at each milestone", DefaultValueFactory = _ => D.Gamma };
    public readonly Option<double> LabelSmoothing = new("--label-smoothing") { Description = "label smoothing", DefaultValueFactory = _ => D.LabelSmoothing };
    public readonly Option<int?> MaxBatches = new("--max-batches") { Description = "stop each epoch after this many batches (short budgets)" };
    public readonly Option<bool> Augment = new("--augment") { Description = "CIFAR augmentation: random crop (padding 4) and horizontal flip" };

    public ConfigOptions()
    {
        Scope.AcceptOnlyFromAmong("global", "layer");
        Optimizer.AcceptOnlyFromAmong("sgd", "adamw");
        Schedule.AcceptOnlyFromAmong("cosine", "multistep", "constant");
    }

    /// <summary>Adds the options that choose and prune a model (not training).</summary>
    public void AddPruning(Command c)
    {
        foreach (var o in new Option[] { Model, Dataset, Data, SkipBadImages, Scope, Rounds, Warmup, SamplesPerClass, ScoringBatch, Probes, ProbeScope,
                     HvpBudget, AdaptiveTarget, ExactLastLayer, ExactLayerSize, HutchTemperature, GraspTemperature, KeepOne, DenseClassifier, Predictor, Seed })
            c.Options.Add(o);
    }

    /// <summary>Adds the training options.</summary>
    public void AddTraining(Command c)
    {
        foreach (var o in new Option[] { Epochs, BatchSize, Optimizer, Lr, Momentum, Nesterov, WeightDecay, Schedule, Milestones, Gamma, LabelSmoothing, MaxBatches, Augment })
            c.Options.Add(o);
    }

    /// <summary>The configuration the parsed options describe (criterion and sparsity given separately).</summary>
    public RunConfig Read(ParseResult p, string criterion, double sparsity) => new()
    {
        Model = V(p, Model, D.Model).Trim().ToLowerInvariant(),
        Dataset = V(p, Dataset, D.Dataset).Trim().ToLowerInvariant(),
        DataDirectory = V(p, Data, D.DataDirectory),
        Criterion = criterion,
        Sparsity = sparsity,
        Scope = V(p, Scope, D.Scope),
        Rounds = V(p, Rounds, D.Rounds),
        WarmupBatches = V(p, Warmup, D.WarmupBatches),
        SamplesPerClass = V(p, SamplesPerClass, D.SamplesPerClass),
        ScoringBatchSize = V(p, ScoringBatch, D.ScoringBatchSize),
        Probes = V(p, Probes, D.Probes),
        ProbeScope = V(p, ProbeScope, D.ProbeScope).Trim().ToLowerInvariant(),
        HvpBudget = V(p, HvpBudget, D.HvpBudget),
        AdaptiveTarget = V(p, AdaptiveTarget, D.AdaptiveTarget),
        ExactLastLayer = V(p, ExactLastLayer, D.ExactLastLayer),
        ExactLayerSize = V(p, ExactLayerSize, D.ExactLayerSize),
        HutchinsonTemperature = V(p, HutchTemperature, D.HutchinsonTemperature),
        GraspTemperature = V(p, GraspTemperature, D.GraspTemperature),
        KeepOnePerLayer = V(p, KeepOne, D.KeepOnePerLayer),
        DenseClassifier = V(p, DenseClassifier, D.DenseClassifier),
        Predictor = V(p, Predictor, D.Predictor),
        Seed = V(p, Seed, D.Seed),
        Epochs = V(p, Epochs, D.Epochs),
        BatchSize = V(p, BatchSize, D.BatchSize),
        Optimizer = V(p, Optimizer, D.Optimizer),
        LearningRate = V(p, Lr, D.LearningRate),
        Momentum = V(p, Momentum, D.Momentum),
        Nesterov = V(p, Nesterov, D.Nesterov),
        WeightDecay = V(p, WeightDecay, D.WeightDecay),
        Schedule = V(p, Schedule, D.Schedule),
        Milestones = V(p, Milestones, D.Milestones.ToArray()),
        Gamma = V(p, Gamma, D.Gamma),
        LabelSmoothing = V(p, LabelSmoothing, D.LabelSmoothing),
        MaxBatchesPerEpoch = V(p, MaxBatches, D.MaxBatchesPerEpoch),
        Augment = V(p, Augment, D.Augment),
        SkipBadImages = V(p, SkipBadImages, D.SkipBadImages),
    };

    // An option the command does not have reads as the configuration's default, not as zero.
    static T V<T>(ParseResult p, Option<T> option, T fallback) => p.GetResult(option) is null ? fallback : p.GetValue(option)!;
}
