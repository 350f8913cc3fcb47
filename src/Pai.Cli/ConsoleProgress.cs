using Spectre.Console;

namespace Pai.Cli;

/// <summary>
/// Shows what runs are doing: a live progress bar per epoch on a terminal, plain lines otherwise
/// (logs, CI), so long work is never silent.
/// </summary>
internal sealed class ConsoleProgress(ProgressContext? live) : IRunProgress
{
    /// <summary>Replaces the runs' labels (e.g. "lenet5 with mask.safetensors" for `pai train --mask`).</summary>
    public string? Label { get; set; }

    string LabelOf(RunConfig config) => Label ?? config.Label;

    ProgressTask? epochTask;
    DateTime lastLine = DateTime.MinValue;

    public void Phase(RunConfig config, string phase)
    {
        if (live is null) Console.WriteLine($"  {LabelOf(config)}: {phase}");
        else if (phase == "training") epochTask = null;
    }

    public void Training(RunConfig config, TrainProgress p)
    {
        if (live is not null)
        {
            if (epochTask is null || p.Batch == 1)
            {
                epochTask?.StopTask();
                epochTask = live.AddTask(Markup.Escape($"{LabelOf(config)} epoch {p.Epoch}/{p.Epochs}"), maxValue: p.BatchesPerEpoch ?? 1);
            }
            epochTask.Value = p.Batch;
            if (p.Finished is { } f)
            {
                epochTask.Description = Markup.Escape($"{LabelOf(config)} epoch {f.Epoch}/{p.Epochs}: test top-1 {f.Test?.Top1:P2}");
                epochTask.StopTask();
                epochTask = null;
            }
            return;
        }
        if (p.Finished is { } e)
            Console.WriteLine($"  {LabelOf(config)}: epoch {e.Epoch}/{p.Epochs} loss {e.TrainLoss:F4} test top-1 {e.Test?.Top1:P2} ({e.Seconds:F1} s, {e.ImagesPerSecond:F0} img/s)");
        else if (DateTime.UtcNow - lastLine > TimeSpan.FromSeconds(30))
        {
            lastLine = DateTime.UtcNow;
            Console.WriteLine($"  {LabelOf(config)}: epoch {p.Epoch} batch {p.Batch}/{p.BatchesPerEpoch} loss {p.Loss:F4}");
        }
    }

    ProgressTask? sweepTask;

    public void Sweep(SweepProgress p)
    {
        if (live is null)
        {
            Console.WriteLine($"sweep: {p}");
            return;
        }
        sweepTask ??= live.AddTask("sweep", maxValue: Math.Max(1, p.Done + p.Left));
        sweepTask.MaxValue = Math.Max(1, p.Done + p.Left);
        sweepTask.Value = p.Done;
        sweepTask.Description = Markup.Escape($"sweep: {p}");
    }

    public void Log(RunConfig config, string message)
    {
        var line = $"  {LabelOf(config)}: {message}";
        if (message.StartsWith("warning")) AnsiConsole.MarkupLine($"[yellow]{Markup.Escape(line)}[/]");
        else Console.WriteLine(line);
    }

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
