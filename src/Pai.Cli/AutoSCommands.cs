using System.CommandLine;
using System.Globalization;
using Pai.Host.AutoS;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai autos label|fit` (the learned criterion) and `pai imp` (iterative magnitude pruning).</summary>
internal static class AutoSCommands
{
    internal static Command AutoS()
    {
        var cmd = new Command("autos", "AutoS, a learned PaI criterion: label weights by iterative rewind pruning, fit a predictor, then prune any model with --criterion autos " +
            "--predictor FILE.");
        cmd.Subcommands.Add(Iterative(rewind: true));
        cmd.Subcommands.Add(Fit());
        return cmd;
    }

    internal static Command Imp() => Iterative(rewind: false);

    // `pai autos label` (IRP, rewind to θ₀) and `pai imp` (no rewind): the same loop.
    static Command Iterative(bool rewind)
    {
        var rounds = new Option<int>("--rounds") { Description = "pruning rounds R (R + 1 trainings)", DefaultValueFactory = _ => 5 };
        var fraction = new Option<double>("--prune-fraction") { Description = "fraction of the remaining weights pruned per round", DefaultValueFactory = _ => 0.2 };
        var by = new Option<string>("--prune-by") { Description = $"rank trained weights by " +
            $"{string.Join(" or ", Registry.trainedRankings)}", DefaultValueFactory = _ => Registry.trainedRankings.Head };
        by.AcceptOnlyFromAmong([.. Registry.trainedRankings]);
        var output = new Option<string>("--out", "-o") { Description = "output directory (state, mask, record; labels for IRP); running again " +
            "resumes", DefaultValueFactory = _ => rewind ? "autos-labels" : "imp" };
        var cmd = rewind
            ? new Command("label", "Iterative rewind pruning (IRP): train, prune 20% of the remaining weights, rewind to θ₀, R rounds; " +
                "writes labels.safetensors (rounds each weight survived, round 0 counted, min-max scaled). Resumable per round. " +
                "Training budget per round: the short one shown below (1 epoch of at most 200 batches), unless --epochs, --max-batches or --lr say otherwise.")
            : new Command("imp", "Iterative magnitude pruning (IMP): train, prune 20% of the remaining weights, keep training, R rounds; " +
                "prints the accuracy at every density (what PaI tries to reach without the cost) and writes the final mask. Resumable per round; a short budget per round (1 " +
                    "epoch of at most 200 batches) unless told otherwise.");
        foreach (var opt in new Option[] { rounds, fraction, by, output }) cmd.Options.Add(opt);
        // Data and training, and the scoring subset (SNIP ranking and the AutoS features read it).
        var o = new ConfigOptions(cmd, s => (s.Declaration.Group & (SettingGroup.Data | SettingGroup.Training)) != 0
            || s.Property.Name is nameof(RunConfig.SamplesPerClass) or nameof(RunConfig.ScoringBatchSize), RunCommands.RoundBudget);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var run = Pai.Host.PaiHost.Configure(o.Read(p) with { Criterion = p.GetValue(by)! });
            var spec = new IterativePruningSpec(run, p.GetValue(rounds), p.GetValue(fraction), rewind);
            spec.Validate();
            var directory = Path.GetFullPath(p.GetValue(output)!);
            Cli.CheckWritable(directory, "--out", folder: true);
            using var data = new DataCache();
            var train = data.Get(run.Dataset, run.DataDirectory, DatasetSplit.Train, run.SkipBadImages);
            var test = data.Get(run.Dataset, run.DataDirectory, DatasetSplit.Test, run.SkipBadImages);
            var last = DateTime.UtcNow;
            var result = IterativePruning.Run(spec, train, test, directory, Console.WriteLine, t =>
            {
                if (DateTime.UtcNow - last < TimeSpan.FromSeconds(15) || t.Finished is not null) return;
                last = DateTime.UtcNow;
                Console.WriteLine($"  epoch {t.Epoch}/{t.Epochs} batch {t.Batch}/{t.BatchesPerEpoch} loss {t.Loss:F4}");
            });
            var table = new Table().Border(TableBorder.Rounded).Title(Markup.Escape($"{(rewind ? "IRP" : "IMP")}: {run.Model} on {run.Dataset}, pruning by {run.Criterion}"));
            table.AddColumns("round", "density", "test top-1", "seconds");
            foreach (var r in result.Rounds)
                table.AddRow(r.Round.ToString(CultureInfo.InvariantCulture), r.Density.ToString("P2"), r.TestTop1.ToString("P2"), r.Seconds.ToString("F1"));
            AnsiConsole.Write(table);
            if (result.LabelsPath is { } labels) AnsiConsole.MarkupLine($"labels written to [bold]{Markup.Escape(labels)}[/]");
            AnsiConsole.MarkupLine($"final mask {Markup.Escape(result.MaskPath)}, record {Markup.Escape(result.RecordPath)}");
            return 0;
        }));
        return cmd;
    }

    static Command Fit()
    {
        var labels = new Option<string>("--labels", "-l") { Description = "labels file from `pai autos label`", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "predictor file to write (safetensors)", DefaultValueFactory = _ => "predictor.safetensors" };
        var architecture = new Option<string>("--architecture") { Description = "mlp (default, cheap) or resnet18 (the paper's: one ResNet-18 forward per weight, for small " +
            "subsets on a CPU)", DefaultValueFactory = _ => "mlp" };
        architecture.AcceptOnlyFromAmong([.. PredictorNetwork.Architectures]);
        var extra = new Option<bool>("--extra-features") { Description = "also read |θ₀·g₀|, the Hutchinson diagonal and ln(fan-in), besides θ₀ and g₀" };
        var epochs = new Option<int>("--epochs", "-e") { Description = "passes over the training weights", DefaultValueFactory = _ => new FitOptions().Epochs };
        var batch = new Option<int>("--batch-size") { Description = "weights per Adam step", DefaultValueFactory = _ => new FitOptions().BatchSize };
        var lr = new Option<double>("--lr") { Description = "Adam learning rate", DefaultValueFactory = _ => new FitOptions().LearningRate };
        var heldOut = new Option<string?>("--validation-layers") { Description = "comma-separated layers held out for validation (default: every fourth layer from the second)" };
        var maxWeights = new Option<int?>("--max-weights") { Description = "train (and validate) on a seeded subset of at most this many weights" };
        var seed = new Option<ulong>("--seed") { Description = "seed of initialization, subset and batch order" };
        var dataDir = new Option<string?>("--data") { Description = "directory of the labels' data set (for g₀), when not its usual location" };
        var cmd = new Command("fit", "Train a predictor of IRP labels from each weight's features at initialization (θ₀, g₀), MSE and Adam, holding out whole layers for " +
            "validation.");
        foreach (var opt in new Option[] { labels, output, architecture, extra, epochs, batch, lr, heldOut, maxWeights, seed, dataDir }) cmd.Options.Add(opt);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var options = new FitOptions
            {
                Architecture = p.GetValue(architecture)!,
                Epochs = p.GetValue(epochs),
                BatchSize = p.GetValue(batch),
                LearningRate = p.GetValue(lr),
                Seed = p.GetValue(seed),
                ValidationLayers = p.GetValue(heldOut)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                MaxWeights = p.GetValue(maxWeights),
            };
            options.Validate();
            var path = Path.GetFullPath(p.GetValue(output)!);
            Cli.CheckWritable(path, "--out");
            var features = p.GetValue(extra) ? Features.extended : Features.standard;
            using var file = LabelFile.Load(Path.GetFullPath(p.GetValue(labels)!));
            using var data = new DataCache();
            var train = data.Get(file.Config.Dataset, p.GetValue(dataDir) ?? file.Config.DataDirectory, DatasetSplit.Train, file.Config.SkipBadImages);
            Console.WriteLine($"features {Features.format(features)} of {file.Config.Model} on {file.Config.Dataset} (seed {file.Config.Seed})");
            var samples = file.Samples([.. features], train);
            try
            {
                var (predictor, report) = PredictorFitting.Fit(samples, [.. features], options, Console.WriteLine);
                using (predictor)
                {
                    var metadata = report.ToMetadata();
                    metadata["labels"] = file.Path;
                    metadata["labels_model"] = file.Config.Model;
                    metadata["labels_dataset"] = file.Config.Dataset;
                    metadata["labels_rounds"] = file.Metadata.GetValueOrDefault("rounds") ?? "";
                    metadata["epochs"] = options.Epochs.ToString(CultureInfo.InvariantCulture);
                    metadata["learning_rate"] = options.LearningRate.ToString("R", CultureInfo.InvariantCulture);
                    metadata["seed"] = options.Seed.ToString(CultureInfo.InvariantCulture);
                    predictor.Save(path, metadata);
                    AnsiConsole.MarkupLine($"predictor written to [bold]{Markup.Escape(path)}[/] (use: --criterion autos --predictor {Markup.Escape(path)})");
                }
            }
            finally
            {
                foreach (var s in samples)
                {
                    s.Features.Dispose();
                    s.Labels.Dispose();
                }
            }
            return 0;
        }));
        return cmd;
    }
}
