namespace Pai.Host.Runs;

/// <summary>
/// Progress as plain lines, for logs, CI and scripts: one line per phase, finished epoch and log
/// message, and one every 30 s within a long epoch, so long work is never silent. The CLI prints
/// these when its output is not a terminal; the pipeline scripts print them always.
/// </summary>
/// <param name="write">Where a line goes.</param>
/// <param name="warn">Where a warning line goes (default: <paramref name="write"/>).</param>
public sealed class LineProgress(Action<string> write, Action<string>? warn = null) : IRunProgress
{
    static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);
    DateTime lastLine = DateTime.MinValue;

    /// <summary>Replaces the runs' labels (e.g. "lenet5 with mask.safetensors" for `pai train --mask`).</summary>
    public string? Label { get; set; }

    /// <summary>The label lines start with: <see cref="Label"/>, or the run's own.</summary>
    public string LabelOf(RunConfig config) => Label ?? config.Label;

    /// <inheritdoc/>
    public void Phase(RunConfig config, string phase) => write($"  {LabelOf(config)}: {phase}");

    /// <inheritdoc/>
    public void Training(RunConfig config, TrainProgress p)
    {
        if (p.Finished is { } e)
            write($"  {LabelOf(config)}: epoch {e.Epoch}/{p.Epochs} loss {e.TrainLoss:F4} test top-1 {e.Test?.Top1:P2} ({e.Seconds:F1} s, {e.ImagesPerSecond:F0} img/s)");
        else if (DateTime.UtcNow - lastLine > Interval)
        {
            lastLine = DateTime.UtcNow;
            write($"  {LabelOf(config)}: epoch {p.Epoch} batch {p.Batch}/{p.BatchesPerEpoch} loss {p.Loss:F4}");
        }
    }

    /// <inheritdoc/>
    public void Sweep(SweepProgress progress) => write($"sweep: {progress}");

    /// <inheritdoc/>
    public void Log(RunConfig config, string message) =>
        (message.StartsWith("warning") ? warn ?? write : write)($"  {LabelOf(config)}: {message}");
}
