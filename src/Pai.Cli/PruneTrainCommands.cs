using System.CommandLine;
using Pai.Host.Checkpoints;
using Pai.Host.Data;
using Pai.Host.Models;
using Pai.Host.Runs;
using Pai.Host.Training;
using Pai.Torch;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai prune` and `pai train`: single steps that write files, without the results store.</summary>
internal static class PruneTrainCommands
{
    internal static readonly Option<string> Criterion = new("--criterion", "-c") { Description = "pruning criterion (see `pai list criteria`)", Required = true };
    internal static readonly Option<double> Sparsity = new("--sparsity", "-s") { Description = "fraction of prunable weights removed, in [0, 1)", Required = true };

    internal static Command Prune(ConfigOptions o)
    {
        var output = new Option<string>("--out", "-o") { Description = "mask file to write (safetensors)", DefaultValueFactory = _ => "mask.safetensors" };
        var cmd = new Command("prune", "Score a freshly initialized model with a criterion and write the mask (safetensors); prints per-layer density.");
        cmd.Options.Add(Criterion);
        cmd.Options.Add(Sparsity);
        o.AddPruning(cmd);
        cmd.Options.Add(output);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = Experiment.ConfigurePredictor(o.Read(p, p.GetValue(Criterion)!, p.GetValue(Sparsity)));
            Experiment.Validate(config);
            using var data = new DataCache();
            var train = data.Get(config.Dataset, config.DataDirectory, DatasetSplit.Train, config.SkipBadImages);
            using var model = Experiment.CreateModel(config, train);
            var result = Experiment.Prune(config, model, train, null, Console.WriteLine);
            try
            {
                var path = Path.GetFullPath(p.GetValue(output)!);
                Safetensors.Save(path, result.Mask.Layers.Select(l => (l.Item1, l.Item2)),
                    new Dictionary<string, string> { ["config"] = config.CanonicalJson(), ["model"] = model.Name });
                Cli.DensityTable(result.Report);
                AnsiConsole.MarkupLine($"mask written to [bold]{Markup.Escape(path)}[/]");
            }
            finally
            {
                MaskModule.dispose(result.Mask);
            }
            return 0;
        }));
        return cmd;
    }

    internal static Command Train(ConfigOptions o)
    {
        var mask = new Option<string?>("--mask") { Description = "mask file from `pai prune` (omit to train densely)" };
        var output = new Option<string?>("--out", "-o") { Description = "checkpoint to write (safetensors): weights, buffers and mask" };
        var cmd = new Command("train", "Train a model, densely or with a mask from `pai prune`.");
        o.AddPruning(cmd);
        o.AddTraining(cmd);
        cmd.Options.Add(mask);
        cmd.Options.Add(output);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = o.Read(p, "dense", 0);
            Experiment.Validate(config);
            using var data = new DataCache();
            var train = data.Get(config.Dataset, config.DataDirectory, DatasetSplit.Train, config.SkipBadImages);
            var test = data.Get(config.Dataset, config.DataDirectory, DatasetSplit.Test, config.SkipBadImages);
            using var model = Experiment.CreateModel(config, train);
            using var scope = new DisposeScope();
            Dictionary<string, Tensor>? keep = null;
            if (p.GetValue(mask) is { } maskPath)
            {
                if (!File.Exists(maskPath)) throw new ArgumentException($"mask file '{maskPath}' does not exist; write one with `pai prune … --out {maskPath}`");
                var specs = model.Prunable.Select(w => new TensorSpec(w.Key, DType.Bool, w.Value.Shape));
                var file = Safetensors.Load(maskPath, specs, strict: true);
                keep = model.Prunable.ToDictionary(w => w.Key, w => file.Take(w.Key));
                file.Dispose();
                var kept = keep.Values.Sum(t => t.CountNonZero());
                Console.WriteLine($"mask {maskPath}: {kept:N0} of {model.PrunableCount:N0} prunable weights kept ({(double)kept / model.PrunableCount:P2})");
            }
            using var trainLoader = new DataLoader(train, config.BatchSize, shuffle: true, seed: config.Seed, augment: config.Augment);
            using var testLoader = new DataLoader(test, 1000, shuffle: false);
            var results = ConsoleProgress.Show(progress => Trainer.Train(model, keep, trainLoader.Epoch, () => testLoader.Epoch(0),
                Experiment.TrainOptionsOf(config), t => progress.Training(config, t), trainLoader.BatchCount));
            var last = results[^1].Test!;
            AnsiConsole.MarkupLine($"test top-1 [bold]{last.Top1:P2}[/], top-5 {last.Top5:P2}, loss {last.Loss:F4}");
            if (p.GetValue(output) is { } outPath)
            {
                var tensors = model.Parameters.Select(w => (w.Key, w.Value)).Concat(model.Buffers.Select(b => (b.Key, b.Value)));
                if (keep is not null) tensors = tensors.Concat(keep.Select(k => ("mask/" + k.Key, k.Value)));
                Safetensors.Save(Path.GetFullPath(outPath), tensors, new Dictionary<string, string> { ["config"] = config.CanonicalJson() });
                AnsiConsole.MarkupLine($"checkpoint written to [bold]{Markup.Escape(Path.GetFullPath(outPath))}[/]");
            }
            return 0;
        }));
        return cmd;
    }
}
