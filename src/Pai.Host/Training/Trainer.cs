using System.Diagnostics;
using System.Globalization;
using Pai.Host.Distributed;

namespace Pai.Host.Training;

/// <summary>
/// The one masked training loop. Pruned weights are exactly zero before the first step and
/// after every step: the mask is applied to the weights at the start, to the gradients before
/// each update (so momentum and Adam moments stay zero there) and to the weights after it (so
/// weight decay cannot revive them). In a data-parallel run every rank calls it with its shard of
/// the data: weights and buffers start from rank 0's, masks are checked to be identical, gradients
/// are averaged over the ranks between backward and the optimizer step, and metrics are summed.
/// </summary>
public static class Trainer
{
    /// <summary>
    /// Trains <paramref name="model"/>. <paramref name="mask"/> maps prunable parameter names to
    /// keep-masks (bool or 0/1, shaped like the weight); null trains densely.
    /// <paramref name="trainEpoch"/> yields the batches of a 0-based epoch (seeded shuffling is the
    /// caller's); <paramref name="test"/> yields test batches (evaluated after every epoch when given).
    /// With <paramref name="parallel"/>, both yield this rank's shard, and the results are the whole run's.
    /// </summary>
    public static IReadOnlyList<EpochResult> Train(
        Module model,
        IReadOnlyDictionary<string, Tensor>? mask,
        Func<int, IEnumerable<Pai.Batch>> trainEpoch,
        Func<IEnumerable<Pai.Batch>>? test,
        TrainOptions options,
        Action<TrainProgress>? progress = null,
        int? batchesPerEpoch = null,
        DataParallel? parallel = null)
    {
        options.Validate();
        var named = model.NamedParameters().ToList();
        var parameters = named.Select(p => p.Tensor).ToList();
        using var masks = new MaskSet(named, mask);
        masks.ApplyToWeights();
        if (parallel is not null)
        {
            parallel.BroadcastFromRoot(parameters.Concat(model.NamedBuffers().Select(b => b.Tensor)));
            parallel.CheckIdentical("masks", masks.Named);
        }
        using var buckets = parallel?.Buckets(parameters.Select(p => (p, masks.KeepOf(p))).ToList());

        // Which masked layers run the sparse kernels is chosen at the first batch (auto measures on
        // its shapes), so the optimizer, which trains their value vectors instead of their dense
        // weights, starts there too. Data-parallel runs stay dense (their buckets hold dense weights).
        SparseLayers? sparse = null;
        IOptimizer? optimizer = null;
        IDisposable? keeping = null;
        var trainable = parameters;
        var results = new List<EpochResult>();
        long steps = 0; // over all epochs, for the warm-up
        try
        {
        for (var epoch = 0; epoch < options.Epochs; epoch++)
        {
            var lr = options.LearningRateAt(epoch);
            var watch = Stopwatch.StartNew();
            model.Training = true;
            double lossSum = 0;
            long correct = 0, seen = 0;
            var batch = 0;
            // The enumerator advances inside the step's scope, so that a batch the enumeration
            // creates (DataLoader batches are made lazily) is freed with its step instead of
            // waiting for the GC's finalizers; batches the caller owns are not touched.
            using var batches = trainEpoch(epoch).GetEnumerator();
            while (options.MaxBatchesPerEpoch is not { } max || batch < max)
            {
                using (var step = new DisposeScope())
                {
                    if (!batches.MoveNext()) break;
                    var b = batches.Current;
                    if (optimizer is null)
                    {
                        if (mask is not null && parallel is null && options.SparseKernels != SparseKernelMode.Off)
                        {
                            sparse = SparseLayers.Choose(model, masks.KeepOf, b.Inputs, options.SparseKernels);
                            masks.Release(sparse.Weights);
                            trainable = sparse.Trainable(parameters);
                        }
                        optimizer = CreateOptimizer(trainable, options);
                        // Every step allocates the same sizes: from here on (not during the
                        // calibration's one-off sizes) its freed blocks are kept for the next step.
                        keeping = Libtorch.KeepFreedBlocks();
                    }
                    foreach (var p in trainable) p.ClearGrad();
                    Tensor logits, loss;
                    using (new DisposeScope())
                    {
                        logits = model.Forward(b.Inputs).MoveToOuterScope();
                        loss = Functional.CrossEntropy(logits, b.Targets, Reduction.Mean, options.LabelSmoothing).MoveToOuterScope();
                    }
                    // A diverged run must stop, not record chance-level accuracy as a result.
                    var lossValue = loss.Item();
                    if (!double.IsFinite(lossValue))
                        throw new TrainingDivergedException(
                            $"training diverged: the loss became {lossValue} at epoch {epoch + 1}, batch {batch + 1}; " +
                            $"lower the learning rate (now {lr:G4}) or add batch norm / warm-up");
                    // Our handles on the activations are gone: the graph alone keeps what backward
                    // needs and frees each saved tensor as soon as backward has used it, as in
                    // PyTorch, so backward's buffers reuse that memory instead of fresh pages.
                    loss.Backward();
                    masks.ApplyToGradients();
                    buckets?.Average();
                    optimizer!.Step(options.WarmedUp(lr, steps++));
                    masks.ApplyToWeights();

                    var n = b.Targets.NumEl;
                    lossSum += lossValue * n;
                    using (Libtorch.NoGrad())
                        correct += logits.ArgMax(1).Eq(b.Targets).CountNonZero();
                    seen += n;
                }
                batch++;
                progress?.Invoke(new TrainProgress(epoch + 1, options.Epochs, batch, batchesPerEpoch, lossSum / seen, null)
                    { SparseLayers = sparse?.Choices ?? SparseLayerChoices.None });
            }
            foreach (var p in trainable) p.ClearGrad();
            if (parallel is not null)
            {
                var totals = parallel.Sum(lossSum, correct, seen);
                (lossSum, correct, seen) = (totals[0], (long)totals[1], (long)totals[2]);
                // Each rank's BN running statistics saw only its shard: rank 0's are kept, as in DDP.
                parallel.BroadcastFromRoot(model.NamedBuffers().Select(b => b.Tensor));
            }
            if (seen == 0) throw new InvalidOperationException($"epoch {epoch + 1} produced no training batch: the training set is empty");
            var trainSeconds = watch.Elapsed.TotalSeconds;
            var evaluation = test is null ? null : Evaluate(model, test());
            if (evaluation is not null && parallel is not null)
            {
                var t = parallel.Sum(evaluation.Loss * evaluation.Samples, evaluation.Top1 * evaluation.Samples, evaluation.Top5 * evaluation.Samples, evaluation.Samples);
                evaluation = new EvalResult(t[0] / t[3], t[1] / t[3], t[2] / t[3], (long)t[3]);
            }
            var result = new EpochResult(epoch + 1, lossSum / seen, (double)correct / seen, lr, evaluation,
                watch.Elapsed.TotalSeconds, seen / trainSeconds) { SparseLayers = sparse?.Choices ?? SparseLayerChoices.None };
            results.Add(result);
            progress?.Invoke(new TrainProgress(epoch + 1, options.Epochs, batch, batchesPerEpoch, result.TrainLoss, result)
                { SparseLayers = result.SparseLayers });
        }
        }
        finally
        {
            optimizer?.Dispose();
            // The dense weights get the trained values back (zeros elsewhere), whatever happened.
            sparse?.Dispose();
            keeping?.Dispose();
        }
        model.Training = false;
        return results;
    }

    /// <summary>
    /// The line a run log shows about the sparse kernels, with each layer's measured speedup where
    /// it was timed, e.g. "sparse kernels (auto): conv2 1.8×, fc1 2.4×; dense: conv1 (0.8×)".
    /// </summary>
    public static string DescribeSparseLayers(SparseKernelMode mode, SparseLayerChoices layers)
    {
        static string Speedup(LayerKernel l, string format) => l.Speedup is { } s ? string.Format(CultureInfo.InvariantCulture, format, s) : "";
        var sparse = string.Join(", ", layers.Layers.Where(l => l.Sparse).Select(l => l.Name + Speedup(l, " {0:0.0#}×")));
        var dense = string.Join(", ", layers.Layers.Where(l => !l.Sparse).Select(l => l.Name + Speedup(l, " ({0:0.0#}×)")));
        return $"sparse kernels ({mode.ToString().ToLowerInvariant()}): " + (sparse.Length > 0
            ? sparse + (dense.Length > 0 ? "; dense: " + dense : "")
            : mode == SparseKernelMode.Auto ? "no masked layer measured faster sparse; all run dense" + (dense.Length > 0 ? ": " + dense : "")
            : "no masked layer they support; all run dense");
    }

    /// <summary>Loss, top-1 and top-5 accuracy in eval mode without gradients.</summary>
    public static EvalResult Evaluate(Module model, IEnumerable<Pai.Batch> batches)
    {
        var was = model.Training;
        model.Training = false;
        using var _ = Libtorch.NoGrad();
        double lossSum = 0;
        long top1 = 0, top5 = 0, n = 0;
        try
        {
            using var e = batches.GetEnumerator();
            while (true)
            {
                // Advanced inside the scope: a batch the enumeration creates is freed with it.
                using var scope = new DisposeScope();
                if (!e.MoveNext()) break;
                var b = e.Current;
                var logits = model.Forward(b.Inputs);
                var count = b.Targets.NumEl;
                lossSum += Functional.CrossEntropy(logits, b.Targets, Reduction.Sum).Item();
                var k = Math.Min(5, logits.Size(1));
                var (_, best) = logits.TopK(k, 1);
                var hits = best.Eq(b.Targets.Unsqueeze(1));
                top1 += hits.Narrow(1, 0, 1).CountNonZero();
                top5 += hits.CountNonZero();
                n += count;
            }
        }
        finally
        {
            model.Training = was;
        }
        if (n == 0) throw new InvalidOperationException("the evaluation set is empty");
        return new EvalResult(lossSum / n, (double)top1 / n, (double)top5 / n, n);
    }

    static IOptimizer CreateOptimizer(IReadOnlyList<Tensor> parameters, TrainOptions o) => o.Optimizer switch
    {
        OptimizerKind.Sgd => new Sgd(parameters, o.Momentum, o.Nesterov, o.WeightDecay),
        OptimizerKind.AdamW => new AdamW(parameters, o.Beta1, o.Beta2, o.Epsilon, o.WeightDecay),
        _ => throw new ArgumentOutOfRangeException(nameof(o), o.Optimizer, "unknown optimizer"),
    };

    /// <summary>The masked parameters with their masks as 0/1 tensors of the parameter's dtype.</summary>
    sealed class MaskSet : IDisposable
    {
        readonly List<(Tensor Param, Tensor Keep)> pairs = new();
        readonly HashSet<Tensor> released = new(ReferenceEqualityComparer.Instance);

        public MaskSet(List<(string Name, Tensor Tensor)> named, IReadOnlyDictionary<string, Tensor>? mask)
        {
            if (mask is null) return;
            var byName = named.ToDictionary(p => p.Name, p => p.Tensor);
            foreach (var (name, keep) in mask)
            {
                if (!byName.TryGetValue(name, out var p))
                    throw new ArgumentException($"the mask names '{name}', which is not a parameter of this model; valid names: {string.Join(", ", byName.Keys)}");
                if (!keep.Shape.SequenceEqual(p.Shape))
                    throw new ArgumentException($"the mask for '{name}' has shape [{string.Join(", ", keep.Shape)}] but the weight has [{string.Join(", ", p.Shape)}]");
                pairs.Add((p, keep.To(p.DType).To(p.Device).DetachFromScope()));
            }
        }

        /// <summary>The keep-mask of parameter <paramref name="p"/>, null when it is not masked.</summary>
        public Tensor? KeepOf(Tensor p) => pairs.FirstOrDefault(x => ReferenceEquals(x.Param, p)).Keep;

        /// <summary>The masks with their parameters' positions as names (for hashing).</summary>
        public IEnumerable<(string Name, Tensor Tensor)> Named => pairs.Select((x, i) => (i.ToString(System.Globalization.CultureInfo.InvariantCulture), x.Keep));

        /// <summary>Stops masking these weights: sparse layers train their kept values instead, zero elsewhere by construction.</summary>
        public void Release(IEnumerable<Tensor> weights) => released.UnionWith(weights);

        public void ApplyToWeights()
        {
            using var _ = Libtorch.NoGrad();
            foreach (var (p, k) in pairs)
                if (!released.Contains(p)) p.Mul_(k);
        }

        public void ApplyToGradients()
        {
            using var scope = new DisposeScope();
            foreach (var (p, k) in pairs)
                if (!released.Contains(p)) p.Grad?.Mul_(k);
        }

        public void Dispose()
        {
            foreach (var (_, k) in pairs) k.Dispose();
        }
    }
}

/// <summary>Training stopped because the loss stopped being finite.</summary>
public sealed class TrainingDivergedException(string message) : InvalidOperationException(message);
