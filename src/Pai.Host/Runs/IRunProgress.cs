namespace Pai.Host.Runs;

/// <summary>Receives what a running experiment is doing (the CLI draws it).</summary>
public interface IRunProgress
{
    /// <summary>A phase starts: "data", "warmup+scoring", "training".</summary>
    void Phase(RunConfig config, string phase);
    /// <summary>A training batch or epoch finished.</summary>
    void Training(RunConfig config, TrainProgress progress);
    /// <summary>A line worth showing (warnings such as layer collapse).</summary>
    void Log(RunConfig config, string message);
    /// <summary>Where the sweep stands, before each of its runs starts.</summary>
    void Sweep(SweepProgress progress) { }
}
