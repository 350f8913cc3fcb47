using System.CommandLine;
using Pai.Host;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>`pai prune` and `pai train`: single steps that write files, without the results store.</summary>
internal static class PruneTrainCommands
{
    internal static Command Prune()
    {
        var output = new Option<string>("--out", "-o") { Description = "mask file to write (safetensors)", DefaultValueFactory = _ => "mask.safetensors" };
        var scores = new Option<string?>("--save-scores") { Description = "also write the per-weight scores (safetensors, one tensor per layer)" };
        var init = new Option<string?>("--save-init") { Description = "also write θ₀ (PyTorch state_dict names) and the scoring data in scoring order (tensors inputs, " +
            "targets), to recompute the scores with other code" };
        var cmd = new Command("prune", "Score a freshly initialized model with a criterion (a name or a formula over statistics) and write the mask (safetensors); prints " +
            "per-layer density.");
        var o = new ConfigOptions(cmd, SettingGroup.Data | SettingGroup.Scoring | SettingGroup.Pruning);
        cmd.Options.Add(output);
        cmd.Options.Add(scores);
        cmd.Options.Add(init);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = Cli.CriterionAndSparsity(p, o, o.Read(p), required: true);
            var path = Path.GetFullPath(p.GetValue(output)!);
            var outputs = Cli.Outputs(("--out", path), ("--save-scores", p.GetValue(scores)), ("--save-init", p.GetValue(init)));
            outputs.Write(() =>
            {
                using var pruned = PaiHost.Prune(config, Console.WriteLine, outputs.Staged(p.GetValue(scores)), outputs.Staged(p.GetValue(init)));
                pruned.SaveMask(outputs.Staged(path)!);
                Cli.DensityTable(pruned.Report);
                if (Ablations.Describe(pruned.Plan) is { } ablation) Console.WriteLine(ablation);
            });
            AnsiConsole.MarkupLine($"mask written to [bold]{Markup.Escape(path)}[/]");
            return 0;
        }));
        return cmd;
    }

    internal static Command Train()
    {
        var mask = new Option<string?>("--mask") { Description = "mask file from `pai prune` (omit to train densely); one made with --ablation reinit trains from fresh initial " +
            "weights" };
        var output = new Option<string?>("--out", "-o") { Description = "checkpoint to write (safetensors): weights, buffers and mask" };
        var cmd = new Command("train", "Train a model, densely or with a mask from `pai prune` (the same model and seed the mask was made for).");
        var o = new ConfigOptions(cmd, SettingGroup.Data | SettingGroup.Training);
        cmd.Options.Add(mask);
        cmd.Options.Add(output);
        cmd.SetAction(p => Cli.Guard(p, () =>
        {
            var config = o.Read(p);
            if (p.GetValue(output) is { } outPath) Cli.CheckWritable(Path.GetFullPath(outPath), "--out");
            var label = p.GetValue(mask) is { } m ? $"{config.Model} with {Path.GetFileName(m)} seed {config.Seed}" : null;
            using var trained = ConsoleProgress.Show(progress =>
                PaiHost.Train(config, p.GetValue(mask), t => progress.Training(config, t), Console.WriteLine), label);
            var last = trained.Epochs[^1].Test!;
            AnsiConsole.MarkupLine($"test top-1 [bold]{last.Top1:P2}[/], top-5 {last.Top5:P2}, loss {last.Loss:F4}");
            if (p.GetValue(output) is { } checkpoint)
            {
                trained.SaveCheckpoint(checkpoint, config);
                AnsiConsole.MarkupLine($"checkpoint written to [bold]{Markup.Escape(Path.GetFullPath(checkpoint))}[/]");
            }
            return 0;
        }));
        return cmd;
    }
}
