using System.Diagnostics;

namespace Pai.Host.Training;

/// <summary>Whether masked layers train with the sparse kernels (an execution setting: results agree to float rounding).</summary>
public enum SparseKernelMode
{
    /// <summary>Dense layers with masked weights and gradients.</summary>
    Off,
    /// <summary>Every masked Linear and Conv2d the kernels support (CPU, float32/float64, one group, no dilation).</summary>
    On,
    /// <summary>Those of them where a short calibration on the layer's shapes measured the sparse kernels faster.</summary>
    Auto,
}

/// <summary>How one masked layer trains: with the sparse kernels or dense, and how much faster the sparse kernels measured.</summary>
/// <param name="Name">The layer, e.g. "fc1".</param>
/// <param name="Sparse">Whether it runs the sparse kernels.</param>
/// <param name="Speedup">
/// The calibration's dense step time over its fastest sparse variant's on this layer's shapes
/// (above 1: sparse measured faster); null where dense was not timed (<c>--sparse-kernels on</c>).
/// </param>
public sealed record LayerKernel(string Name, bool Sparse, double? Speedup);

/// <summary>The kernels of a run's masked layers, in model order.</summary>
/// <param name="Layers">Every calibrated masked layer, sparse or dense, with its measured speedup.</param>
public sealed record SparseLayerChoices(IReadOnlyList<LayerKernel> Layers)
{
    /// <summary>No masked layer (or none chosen yet): every layer dense.</summary>
    public static SparseLayerChoices None { get; } = new([]);

    /// <summary>The names of the layers that run sparse (e.g. "fc1"); empty when all run dense.</summary>
    public IReadOnlyList<string> Sparse { get; } = Layers.Where(l => l.Sparse).Select(l => l.Name).ToList();
}

/// <summary>
/// The masked layers of one training run that hold their weights sparse: each trains its value
/// vector instead of its dense weight, and the dense weight gets the values back (zeros
/// elsewhere) when the run ends, so checkpoints stay dense weights plus a mask.
/// </summary>
internal sealed class SparseLayers : IDisposable
{
    readonly List<(string Name, WeightLayer Layer, SparseWeight Sparse)> layers = new();

    SparseLayers() { }

    /// <summary>The masked layers' kernels and measured speedups.</summary>
    public SparseLayerChoices Choices { get; private set; } = SparseLayerChoices.None;

    /// <summary>The dense weights the sparse layers stand in for (the trainer no longer masks them).</summary>
    public IEnumerable<Tensor> Weights => layers.Select(l => l.Layer.Weight);

    /// <summary>The parameters to train: <paramref name="parameters"/> with each sparse layer's weight replaced by its values.</summary>
    public List<Tensor> Trainable(IEnumerable<Tensor> parameters)
    {
        var swap = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var l in layers) swap.Add(l.Layer.Weight, l.Sparse.Values);
        return parameters.Select(p => swap.TryGetValue(p, out var v) ? v : p).ToList();
    }

    /// <summary>
    /// Chooses which masked layers of <paramref name="model"/> run sparse for a batch like
    /// <paramref name="inputs"/> and switches them over. <paramref name="keepOf"/> gives a weight's
    /// mask (null: not masked); pruned weights must already be zero. CUDA stays dense.
    /// </summary>
    public static SparseLayers Choose(Module model, Func<Tensor, Tensor?> keepOf, Tensor inputs, SparseKernelMode mode)
    {
        var chosen = new SparseLayers();
        if (mode == SparseKernelMode.Off || inputs.Device.Type != DeviceType.Cpu) return chosen;
        var candidates = Walk(model, "")
            .Where(m => m.Layer is WeightLayer w && Supported(w) && keepOf(w.Weight) is not null && w.Weight.DType is DType.Float32 or DType.Float64)
            .Select(m => (m.Name, Layer: (WeightLayer)m.Layer))
            .ToList();
        if (candidates.Count == 0) return chosen;
        var inputShapes = InputShapes(model, inputs);
        var batchInnermost = model is Model { PassesBatchInnermost: true };
        var kernels = new List<LayerKernel>();
        foreach (var (name, layer) in candidates)
        {
            if (!inputShapes.TryGetValue(layer, out var seen)) continue;
            var keep = keepOf(layer.Weight)!;
            var (choice, speedup) = Calibration.Choose(layer, layer.Weight, keep, seen.Shape, seen.First, includeDense: mode == SparseKernelMode.Auto, batchInnermost);
            kernels.Add(new LayerKernel(name, choice is not null, speedup));
            if (choice is not { } layout) continue;
            layer.Sparse = new SparseWeight(layer.Weight, keep, layout, batchInnermost);
            chosen.layers.Add((name, layer, layer.Sparse));
        }
        chosen.Choices = new SparseLayerChoices(kernels);
        // The shape pass and the calibration freed their tensors into the heap, which keeps freed
        // memory for reuse; left there, they fragment it under the training step's allocations and
        // raise its peak above the dense run's.
        Libtorch.ReleaseFreeMemory();
        return chosen;
    }

    // Linear layers, and convolutions of the shapes the kernels cover.
    static bool Supported(WeightLayer layer) => layer is not Conv2d c || c.SparseCapable;

    static IEnumerable<(string Name, Module Layer)> Walk(Module m, string prefix)
    {
        foreach (var (n, child) in m.Children)
        {
            var name = prefix.Length == 0 ? n : $"{prefix}.{n}";
            yield return (name, child);
            foreach (var x in Walk(child, name)) yield return x;
        }
    }

    /// <summary>
    /// The input shape of every conv and linear layer in one forward pass (eval mode, no gradients:
    /// nothing changes, not even batch-norm statistics), and whether it is the first such layer (its
    /// input is the data, which needs no gradient).
    /// </summary>
    static Dictionary<Module, (long[] Shape, bool First)> InputShapes(Module model, Tensor inputs)
    {
        var was = model.Training;
        model.Training = false;
        try
        {
            using var scope = new DisposeScope();
            using var _ = Libtorch.NoGrad();
            var (_, records) = LayerRecorder.Collect(() => model.Forward(inputs));
            var shapes = new Dictionary<Module, (long[], bool)>(ReferenceEqualityComparer.Instance);
            for (var i = 0; i < records.Count; i++)
                shapes.TryAdd(records[i].Layer, (records[i].Input.Shape, i == 0));
            return shapes;
        }
        finally
        {
            model.Training = was;
        }
    }

    /// <summary>Writes every sparse layer's values back into its dense weight and switches it back to dense.</summary>
    public void Dispose()
    {
        foreach (var (_, layer, sparse) in layers)
        {
            sparse.WriteBack(layer.Weight);
            layer.Sparse = null;
            sparse.Dispose();
        }
        layers.Clear();
    }

    /// <summary>
    /// Times one training step of a layer (forward and backward) dense and in each sparse variant
    /// on random data of the layer's shapes, and keeps the fastest, with its speedup over dense,
    /// per layer kind, shapes, kept count, dtype, thread count, vector path and whether the model
    /// passes activations on batch-innermost: for the rest of the
    /// process and in a file under the user's cache folder (<see cref="CalibrationCache"/>). The
    /// variants round differently, so a timing-based choice made anew could differ between two
    /// runs; reading it back makes a rerun on the same machine choose alike and give bit-identical
    /// weights.
    /// </summary>
    internal static class Calibration
    {
        static readonly Dictionary<string, (SparseConvLayout? Choice, double? Speedup)> Chosen = new();
        static readonly object Gate = new();

        /// <summary>
        /// The sparse layout to run, or null for dense (only when <paramref name="includeDense"/>),
        /// and the measured speedup (null when dense was not timed). With <paramref name="batchInnermost"/>
        /// every variant is timed as such a model runs it: the input stored batch-innermost (but the
        /// first layer's), the output and its gradient too (a dense layer's converted to it and back).
        /// </summary>
        public static (SparseConvLayout? Choice, double? Speedup) Choose(Module layer, Tensor weight, Tensor keep, long[] inputShape, bool first, bool includeDense,
            bool batchInnermost = false)
        {
            long kept;
            using (var scope = new DisposeScope()) kept = keep.CountNonZero();
            var key = Key(layer, weight, inputShape, kept, first, includeDense, SparsePattern.KernelRevision, batchInnermost);
            // One calibration at a time: two measuring side by side would time each other.
            lock (Gate)
            {
                if (Chosen.TryGetValue(key, out var known)) return known;
                (SparseConvLayout? Choice, double? Speedup) result;
                if (CalibrationCache.Read(key) is { } stored && Valid(stored.Choice, layer, includeDense))
                    result = (Parse(stored.Choice), stored.Speedup);
                else
                {
                    result = Measure(layer, weight, keep, inputShape, first, includeDense, batchInnermost);
                    CalibrationCache.Write(key, new CalibrationEntry(result.Choice?.ToString() ?? Dense, result.Speedup));
                }
                Chosen[key] = result;
                return result;
            }
        }

        const string Dense = "dense";

        // Which way Measure times the variants: a change that can change choices makes them measured anew.
        const int TimingRevision = 2;

        /// <summary>What a choice depends on: the layer's kind and shapes, the kept count, dtype, threads, vector path, mode, the kernels' and the timing's revisions and batch-innermost passing.</summary>
        internal static string Key(Module layer, Tensor weight, long[] inputShape, long kept, bool first, bool includeDense, int revision,
            bool batchInnermost = false)
        {
            var geometry = layer is Conv2d c ? $"conv s{c.Stride} p{c.Padding}" : "linear";
            return string.Join('|', geometry, string.Join('x', weight.Shape), string.Join('x', inputShape), kept, first,
                weight.DType, Libtorch.NumThreads, SparsePattern.VectorPath.ToString().ToLowerInvariant(), includeDense ? "auto" : "on",
                $"kernels r{revision}", $"timing t{TimingRevision}") + (batchInnermost ? "|passes batch-innermost" : "");
        }

        // A stored choice this layer can run in this mode (a hand-edited or foreign entry is measured anew).
        static bool Valid(string stored, Module layer, bool includeDense) =>
            stored == Dense ? includeDense
            : Enum.TryParse<SparseConvLayout>(stored, out var layout) && Enum.IsDefined(layout)
              && (layout == SparseConvLayout.BatchInnermost || layer is Conv2d);

        static SparseConvLayout? Parse(string stored) => stored == Dense ? null : Enum.Parse<SparseConvLayout>(stored);

        static (SparseConvLayout? Choice, double? Speedup) Measure(Module layer, Tensor weight, Tensor keep, long[] inputShape, bool first, bool includeDense,
            bool batchInnermost)
        {
            var variants = new List<SparseConvLayout?>();
            if (includeDense) variants.Add(null);
            variants.Add(SparseConvLayout.BatchInnermost);
            if (layer is Conv2d) variants.Add(SparseConvLayout.Rows);
            if (variants.Count == 1) return (variants[0], null);

            using var scope = new DisposeScope();
            using var g = new Generator(0);
            using var pattern = SparsePattern.FromMask(keep);
            var x = Libtorch.Randn(inputShape, g, weight.DType);
            // In a model that passes activations on batch-innermost, a layer after others that run
            // sparse gets its input stored so: the sparse variants read it in place, the dense one
            // converts it. Timed that way, as most layers of such a model run sparse.
            if (batchInnermost && !first) x = BatchInnermost(x);
            Tensor w;
            using (Libtorch.NoGrad()) w = weight.Detach().Clone();
            var values = pattern.Gather(w);
            var conv = layer as Conv2d;
            Tensor? gradOutput = null, gradDense = null, gradSparse = null;

            double Step(SparseConvLayout? variant)
            {
                var watch = Stopwatch.StartNew();
                using var step = new DisposeScope();
                var xi = first ? x : x.Detach().RequiresGrad_();
                var wi = (variant is null ? w : values).Detach().RequiresGrad_();
                var y = (conv, variant) switch
                {
                    (null, null) => Functional.Linear(xi, wi),
                    (null, _) => Functional.SparseLinear(xi, wi, pattern, null, batchInnermost),
                    (_, null) => Functional.Conv2d(xi, wi, null, conv.Stride, conv.Padding),
                    (_, { } layout) => Functional.SparseConv2d(xi, wi, pattern, null, conv.Stride, conv.Padding, layout, batchInnermost),
                };
                // There the sparse layers after a dense one read its output batch-innermost: the
                // conversion there and its gradient's back are the dense choice's cost, timed with it.
                if (variant is null && batchInnermost) y = BatchInnermost(y);
                gradOutput ??= Libtorch.RandnLike(y, g).MoveToOuterScope();
                // An output stored batch-innermost (sparse, passed on so) or channels-last (a dense
                // convolution of a channels-last input) gets its gradient stored the same way, as
                // the ops after the layer keep it; copied once, outside the timing. The sparse
                // outputs share one storage.
                var grad = y.IsContiguous ? gradOutput
                    : variant is null ? gradDense ??= Functional.StoredLike(gradOutput, y).MoveToOuterScope()
                    : gradSparse ??= Functional.StoredLike(gradOutput, y).MoveToOuterScope();
                var grads = Autograd.Grad([y], first ? [wi] : [xi, wi], [grad]);
                // A dense masked layer also masks its gradient every step.
                if (variant is null) grads[^1]!.Mul_(keep);
                return watch.Elapsed.TotalSeconds;
            }

            foreach (var v in variants) Step(v); // warm-up (allocations, first-touch)
            var times = variants.ToDictionary(v => v?.ToString() ?? "dense", _ => new List<double>());
            for (var round = 0; round < 3; round++)
                foreach (var v in variants)
                    times[v?.ToString() ?? "dense"].Add(Step(v));
            double MedianOf(SparseConvLayout? v) => Median(times[v?.ToString() ?? "dense"]);
            var best = variants.MinBy(MedianOf);
            var fastestSparse = variants.Where(v => v is not null).Min(MedianOf);
            return (best, includeDense ? MedianOf(null) / Math.Max(fastestSparse, 1e-9) : null);
        }

        // The same values stored batch-innermost ([…, N] in memory).
        static Tensor BatchInnermost(Tensor t) =>
            t.Dim == 4 ? t.Permute(1, 2, 3, 0).Contiguous().Permute(3, 0, 1, 2) : t.Transpose(0, 1).Contiguous().Transpose(0, 1);

        static double Median(List<double> xs)
        {
            var s = xs.Order().ToList();
            return s[s.Count / 2];
        }
    }
}
