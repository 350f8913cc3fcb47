using System.Diagnostics;
using Microsoft.FSharp.Collections;
using Pai.Host.AutoS;
using Pai.Host.Distributed;

namespace Pai.Host.Runs;

/// <summary>
/// The one route of a run: <see cref="CreateModel"/> → <see cref="Prune"/> → <see cref="Train"/> →
/// <see cref="RunStoreWrites.Record"/>, each step reading a <see cref="RunPlan"/>. <c>pai run</c>, sweeps,
/// workers, data-parallel runs, the record pipeline, <c>pai prune</c>, <c>pai train</c> and IMP/IRP
/// all go through these steps (docs/architecture.md §2).
/// </summary>
public static class Runner
{
    /// <summary>Builds the model a run trains (initialized with the run's seed).</summary>
    public static Model CreateModel(RunPlan plan, RunData data) => ModelZoo.Create(plan.Config.Model, new ModelOptions
    {
        Device = plan.Device,
        InputShape = data.InputShape,
        Classes = data.Classes,
        Seed = plan.Config.Seed,
        DenseClassifier = plan.Config.DenseClassifier,
    });

    /// <summary>What a run logs when it asks for BN warm-up on a model without batch norm (a sweep says it once).</summary>
    public static string NoBatchNormNote(string model) => $"{model} has no batch norm: BN warm-up does nothing and is skipped";

    /// <summary>How often long scoring work reports its progress.</summary>
    public static TimeSpan ScoringProgressInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The pruning half of a run on a freshly initialized <paramref name="model"/>: BN warm-up (the
    /// model keeps the warmed-up statistics, as training starts from them), scoring, the mask (owned
    /// by the caller), its report, summary and phase timings, and the plan's ablation applied to the
    /// mask (shuffle), the criterion (invert) or the model (reinit). With a store, the statistics of
    /// the first round are read from it when an earlier run with the same data and scoring settings
    /// stored them, and stored otherwise (<see cref="StatisticStore"/>). With
    /// <paramref name="scoresPath"/>, the per-weight scores are written there.
    /// </summary>
    public static PrunedModel Prune(RunPlan plan, Model model, RunData data, IRunStore? store, Action<string> log, string? scoresPath = null)
    {
        var c = plan.Config;
        using var predictor = plan.Criterion is PlannedCriterion.Learned learned ? LoadPredictor(learned) : null;
        var criterion = plan.Criterion switch
        {
            PlannedCriterion.Scored s => s.Criterion,
            PlannedCriterion.Learned l => predictor!.Criterion(l.HessianTemperature),
            _ => throw new ArgumentException("pruning needs a criterion (-c snip, say) and a sparsity (-s 0.9)"),
        };
        if (plan.Ablation == Ablation.Invert)
            criterion = new Criterion($"-({criterion.Name})", Expr.NewNegation(criterion.Formula), criterion.DefaultRounds);
        var warmsUp = model.BatchNorms.Any();
        if (c.WarmupBatches > 0 && !warmsUp) log(NoBatchNormNote(model.Name));
        var known = store is null ? [] : StatisticStore.Load(store, c, criterion, model, log);
        PruneResult result;
        using (var scoring = data.Scoring(c.SamplesPerClass, c.Seed, c.ScoringBatchSize, model.Device))
        using (var warmupLoader = data.Train(c.BatchSize, c.Seed, augment: false, model.Device))
        using (ScoringProgress.Install(ProgressLines(log)))
            result = PaiPruning.Prune(plan.PruneSpecFor(criterion, warmsUp), criterion, model, data.InputShape.Dimensions, scoring,
                warmsUp ? warmupLoader.Epoch(0) : [], known, log);
        try
        {
            if (scoresPath is not null)
                using (var scope = new DisposeScope())
                    Safetensors.Save(Path.GetFullPath(scoresPath), result.Scores.Layers.Select(l => (l.Item1, l.Item2.To(DType.Float32))),
                        new Dictionary<string, string> { ["config"] = c.CanonicalJson(), ["criterion"] = criterion.Name, ["formula"] = Formula.render(criterion.Formula) });
            if (store is not null)
                foreach (var (name, value) in result.Statistics)
                    StatisticStore.Save(store, c, name, value, model.Prunable.Select(p => p.Key));
        }
        catch
        {
            MaskModule.dispose(result.Mask);
            throw;
        }
        finally
        {
            foreach (var (_, value) in result.Statistics)
                foreach (var t in value.Layers) t.Dispose();
            ScoresModule.dispose(result.Scores);
        }
        var mask = plan.Ablation == Ablation.Shuffle ? Ablations.Shuffle(result.Mask, c.Seed) : result.Mask;
        if (plan.Ablation == Ablation.Reinit) Ablations.Reinitialize(model, c.Seed);
        var report = result.Report;
        var summary = new PruneSummary(report.Criterion,
            report.Layers.Select(l => new LayerDensityRecord(l.Name, l.Kept, l.Total)).ToList(),
            report.Collapsed.ToList(), report.Rounds, report.Density,
            report.Curvature.Select(CurvatureRecord.Of).ToList()).WithFlops(model.LayerFlops());
        return new PrunedModel(mask, summary, report.Seconds.ToDictionary(p => p.Item1, p => p.Item2), report);
    }

    // Scoring progress as log lines, at most one per interval, with the step's rate and ETA.
    static Action<string, int, int> ProgressLines(Action<string> log)
    {
        var watch = Stopwatch.StartNew();
        var last = TimeSpan.Zero;
        var (step, started) = ("", TimeSpan.Zero);
        return (what, done, total) =>
        {
            if (what != step) (step, started) = (what, watch.Elapsed);
            if (watch.Elapsed - last < ScoringProgressInterval || done >= total) return;
            last = watch.Elapsed;
            var perItem = (watch.Elapsed - started).TotalSeconds / Math.Max(done, 1);
            log($"scoring: {what} {done}/{total} ({100.0 * done / total:F0}%), about {perItem * (total - done):F0} s left in this step");
        };
    }

    // The predictor the run was configured with; a file changed since then would silently be another experiment.
    static Predictor LoadPredictor(PlannedCriterion.Learned learned)
    {
        var hash = Predictor.ContentHash(learned.Predictor);
        if (hash != learned.Hash)
            throw new ArgumentException($"predictor file '{learned.Predictor}' changed since this run was configured (content hash {hash}, configured {learned.Hash}); " +
                                        "configure the run again so that the new predictor is a new run");
        return Predictor.Load(learned.Predictor);
    }

    /// <summary>
    /// Trains <paramref name="model"/> as the plan says (masked when <paramref name="mask"/> is given;
    /// on rank <paramref name="parallel"/>'s shard in a data-parallel run), starting the data order at
    /// epoch <paramref name="firstEpoch"/> (IMP/IRP rounds continue the order). <paramref name="log"/>
    /// hears which layers train on the sparse kernels, <paramref name="progress"/> every batch and epoch.
    /// </summary>
    public static IReadOnlyList<EpochResult> TrainModel(RunPlan plan, Model model, IReadOnlyDictionary<string, Tensor>? mask, RunData data,
        Action<string>? log = null, Action<TrainProgress>? progress = null, DataParallel? parallel = null, int firstEpoch = 0)
    {
        var c = plan.Config;
        using var trainLoader = data.Train(DistributedRun.BatchPerRank(c, parallel), c.Seed, c.Augment, model.Device, parallel?.Rank ?? 0, parallel?.Size ?? 1);
        using var testLoader = data.Test(EvalBatchSize(data), model.Device, parallel?.Rank ?? 0, parallel?.Size ?? 1);
        var options = plan.Train;
        var announced = mask is null || parallel is not null || options.SparseKernels == SparseKernelMode.Off;
        return Trainer.Train(model, mask, e => trainLoader.Epoch(firstEpoch + e), () => testLoader.Epoch(0), options, p =>
        {
            if (!announced) log?.Invoke(Trainer.DescribeSparseLayers(options.SparseKernels, p.SparseLayers));
            announced = true;
            progress?.Invoke(p);
        }, batchesPerEpoch: options.BatchesPerEpoch(trainLoader.BatchCount), parallel: parallel);
    }

    /// <summary>
    /// The training half of a run: trains <paramref name="model"/> (masked when <paramref name="pruned"/>
    /// is given) and returns the finished record, without writing it anywhere. <paramref name="epoch"/>
    /// sees every progress report, with the epoch's metrics when one finished.
    /// </summary>
    public static RunRecord Train(RunPlan plan, Model model, PrunedModel? pruned, RunData data, DateTimeOffset started,
        IRunProgress? progress = null, Action<TrainProgress, EpochMetrics?>? epoch = null, DataParallel? parallel = null)
    {
        var c = plan.Config;
        progress?.Phase(c, "training");
        var phases = new Dictionary<string, double>(pruned?.Phases ?? new Dictionary<string, double>());
        var watch = Stopwatch.StartNew();
        var epochs = TrainModel(plan, model, pruned?.Layers, data, m => progress?.Log(c, m), p =>
        {
            epoch?.Invoke(p, p.Finished is { } e ? MetricsOf(e) : null);
            progress?.Training(c, p);
        }, parallel);
        phases["training"] = watch.Elapsed.TotalSeconds;
        var last = epochs[^1];
        return new RunRecord
        {
            Key = plan.Key,
            Config = c,
            Status = RunStatus.Finished,
            Epochs = epochs.Select(MetricsOf).ToList(),
            FinalTop1 = last.Test?.Top1,
            FinalTop5 = last.Test?.Top5,
            FinalLoss = last.Test?.Loss,
            PhaseSeconds = phases,
            Prune = pruned?.Summary?.WithKernels(last.SparseLayers),
            Seeds = plan.Seeds(),
            PaiVersion = PaiHost.Version,
            LibtorchVersion = Libtorch.Version,
            Started = started,
            Finished = DateTimeOffset.UtcNow,
        };
    }

    /// <summary>
    /// Runs a claimed run to the end and records it in the store: prune report, every epoch as it
    /// ends, then the final metrics, timings, seeds, versions, the mask and a checkpoint
    /// (<see cref="RunStoreWrites.Record"/>). A failure is recorded as Failed and rethrown. In a data-parallel
    /// run (<paramref name="parallel"/>) rank 0 prunes and broadcasts the mask, every rank trains on
    /// its shard, and only rank 0 writes: the other ranks pass a null <paramref name="store"/>.
    /// </summary>
    public static RunRecord Run(RunPlan plan, IRunStore? store, DataCache data, IRunProgress? progress = null, DataParallel? parallel = null)
    {
        if (store is null && parallel is not { IsRoot: false }) throw new ArgumentNullException(nameof(store), "only ranks other than 0 of a data-parallel run go without a results store");
        var (c, key) = (plan.Config, plan.Key);
        var started = DateTimeOffset.UtcNow;
        try
        {
            progress?.Phase(c, "data");
            var runData = data.For(c);
            using var model = CreateModel(plan, runData);
            PrunedModel? pruned = null;
            try
            {
                if (!plan.IsDense && store is null)
                    pruned = new PrunedModel(DistributedRun.ReceiveMask(parallel!, model), null, new Dictionary<string, double>());
                else if (!plan.IsDense && store is not null)
                {
                    progress?.Phase(c, "warmup+scoring");
                    pruned = Prune(plan, model, runData, store, m => progress?.Log(c, m));
                    store.RecordPrune(key, pruned.Summary!, pruned.Phases);
                    parallel?.BroadcastFromRoot(pruned.Mask.Layers.Select(l => l.Item2));
                }
                var record = Train(plan, model, pruned, runData, started, progress, (p, e) =>
                {
                    if (p.Finished is not null) store?.RecordEpoch(key, e!);
                }, parallel);
                store?.Record(record, pruned?.Mask.Layers.Select(l => (l.Item1, l.Item2)), model.State());
                return record;
            }
            finally
            {
                if (pruned is not null) MaskModule.dispose(pruned.Mask);
            }
        }
        catch (Exception e)
        {
            try { store?.Fail(key, e.Message); } catch (Exception) { /* the claim may be gone; the original error matters */ }
            throw;
        }
    }

    /// <summary>Test batch size: 1000 small images, or 100 at ImageNet's 224×224 (0.6 GB of floats a batch).</summary>
    public static int EvalBatchSize(RunData data) => data.InputShape.Height * data.InputShape.Width > 128 * 128 ? 100 : 1000;

    static EpochMetrics MetricsOf(EpochResult e) =>
        new(e.Epoch, e.TrainLoss, e.TrainTop1, e.LearningRate, e.Test?.Loss, e.Test?.Top1, e.Test?.Top5, e.Seconds);
}

/// <summary>
/// A model's mask after the pruning half of a run (<see cref="Runner.Prune"/>): the mask (owned by
/// the holder), its summary and the F# report (both null when received from rank 0), and phase timings.
/// </summary>
public sealed record PrunedModel(Mask Mask, PruneSummary? Summary, IReadOnlyDictionary<string, double> Phases, PruneReport? Report = null)
{
    /// <summary>The mask as a name → tensor dictionary (what the trainer takes).</summary>
    public IReadOnlyDictionary<string, Tensor> Layers { get; } = Mask.Layers.ToDictionary(l => l.Item1, l => l.Item2);
}
