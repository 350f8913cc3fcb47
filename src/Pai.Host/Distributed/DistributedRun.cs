
namespace Pai.Host.Distributed;

/// <summary>
/// One run across the ranks of a data-parallel group: rank 0 owns the results store (it registers
/// and claims the run and records everything), the others only compute. The mask is computed once,
/// on rank 0, and broadcast; initial weights and buffers come from rank 0 as well.
/// </summary>
public static class DistributedRun
{
    /// <summary>What rank 0 decided about the run, shared with every rank.</summary>
    enum Decision { Run = 1, Finished = 2, Claimed = 3 }

    /// <summary>
    /// Executes <paramref name="config"/> on every rank and ends the run (<see cref="DataParallel.Finish"/>). <paramref name="store"/> is rank 0's (the
    /// other ranks pass null and write nothing). Returns the run's record on rank 0 (null elsewhere,
    /// and on rank 0 when the run was finished earlier or is running in another process; log says which).
    /// </summary>
    public static RunRecord? Execute(RunConfig config, IRunStore? store, DataParallel parallel, IRunProgress? progress = null, Action<string>? log = null)
    {
        if (parallel.IsRoot != store is not null)
            throw new ArgumentException(parallel.IsRoot ? "rank 0 needs the results store" : $"rank {parallel.Rank} must not write the results store: pass null");
        var plan = RunPlan.Stored(config);
        var decision = Decision.Run;
        if (store is not null)
        {
            store.Register(config);
            if (store.Get(config.Key)?.Status == RunStatus.Finished) decision = Decision.Finished;
            else if (!store.TryClaim(config.Key, retryFailed: true)) decision = Decision.Claimed;
        }
        // Rank 0 contributes its decision, the others 0: the sum is rank 0's.
        decision = (Decision)(int)parallel.Sum(store is null ? 0 : (double)decision)[0];
        switch (decision)
        {
            case Decision.Finished:
                log?.Invoke($"{config.Label}: finished earlier (run {config.Key})");
                parallel.Finish();
                return null;
            case Decision.Claimed:
                log?.Invoke($"{config.Label}: running in another process, skipped");
                parallel.Finish();
                return null;
        }
        log?.Invoke($"{config.Label} (run {config.Key}) on {parallel.Size} ranks");
        using var data = new DataCache();
        var record = Runner.Run(plan, store, data, progress, parallel);
        parallel.Finish();
        return store is null ? null : record;
    }

    /// <summary>
    /// The training batch each rank takes: the run's batch size is the global batch (so that the
    /// number of processes does not change the experiment, nor its key), split evenly over the ranks.
    /// </summary>
    public static int BatchPerRank(RunConfig c, DataParallel? parallel)
    {
        var ranks = parallel?.Size ?? 1;
        if (c.BatchSize % ranks != 0)
            throw new ArgumentException($"the batch size {c.BatchSize} is the global batch and must divide evenly over {ranks} ranks; pick a multiple of {ranks}");
        return c.BatchSize / ranks;
    }

    /// <summary>
    /// On a rank other than 0: receives the mask rank 0 computed for <paramref name="model"/>
    /// (the caller disposes it). Pairs with rank 0's broadcast of its mask's layers, in
    /// <see cref="Model.Prunable"/> order.
    /// </summary>
    public static Mask ReceiveMask(DataParallel parallel, Model model)
    {
        var layers = model.Prunable
            .Select(p => Tuple.Create(p.Key, Libtorch.Zeros(p.Value.Shape, DType.Bool, p.Value.Device).DetachFromScope()))
            .ToList();
        parallel.BroadcastFromRoot(layers.Select(l => l.Item2));
        return new Mask(Microsoft.FSharp.Collections.ListModule.OfSeq(layers));
    }
}
