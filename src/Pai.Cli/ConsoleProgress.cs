using Spectre.Console;

namespace Pai.Cli;

/// <summary>
/// Shows what runs are doing: a live progress bar per epoch on a terminal, plain lines otherwise
/// (logs, CI), so long work is never silent.
/// </summary>
internal sealed class ConsoleProgress(ProgressContext? live) : IRunProgress
{
    readonly LineProgress lines = new(Console.WriteLine, line => Cli.ColourLine("yellow", line));

    /// <summary>Replaces the runs' labels (e.g. "lenet5 with mask.safetensors" for `pai train --mask`).</summary>
    public string? Label { get => lines.Label; set => lines.Label = value; }

    ProgressTask? epochTask;

    public void Phase(RunConfig config, string phase)
    {
        if (live is null) lines.Phase(config, phase);
        else if (phase == "training") epochTask = null;
    }

    public void Training(RunConfig config, TrainProgress p)
    {
        if (live is null)
        {
            lines.Training(config, p);
            return;
        }
        if (epochTask is null || p.Batch == 1)
        {
            epochTask?.StopTask();
            epochTask = live.AddTask(Markup.Escape($"{lines.LabelOf(config)} epoch {p.Epoch}/{p.Epochs}"), maxValue: p.BatchesPerEpoch ?? 1);
        }
        epochTask.Value = p.Batch;
        if (p.Finished is { } f)
        {
            epochTask.Description = Markup.Escape($"{lines.LabelOf(config)} epoch {f.Epoch}/{p.Epochs}: test top-1 {f.Test?.Top1:P2}");
            epochTask.StopTask();
            epochTask = null;
        }
    }

    ProgressTask? sweepTask;

    public void Sweep(SweepProgress p)
    {
        if (live is null)
        {
            lines.Sweep(p);
            return;
        }
        sweepTask ??= live.AddTask("sweep", maxValue: Math.Max(1, p.Done + p.Left));
        sweepTask.MaxValue = Math.Max(1, p.Done + p.Left);
        sweepTask.Value = p.Done;
        sweepTask.Description = Markup.Escape($"sweep: {p}");
    }

    public void Log(RunConfig config, string message) => lines.Log(config, message);

    /// <summary>Runs work with live bars on an interactive terminal, plain lines otherwise.</summary>
    public static T Show<T>(Func<IRunProgress, T> work, string? label = null)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsOutputRedirected)
            return work(new ConsoleProgress(null) { Label = label });
        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx => result = work(new ConsoleProgress(ctx) { Label = label }));
        return result;
    }
}
