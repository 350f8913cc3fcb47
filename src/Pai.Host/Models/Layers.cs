
namespace Pai.Host.Models;

// Layers as modules over Functional ops. Conv and linear weights are prunable; biases and
// normalization parameters are not (docs/architecture.md §4). Forward never disposes its input or
// intermediates: callers run forward passes inside a DisposeScope.

/// <summary>
/// A layer with a prunable weight [out, …] and an optional bias [out] (registered in that order, as
/// "weight" and "bias"), which can run the sparse kernels once training has chosen the kept weights.
/// </summary>
public abstract class WeightLayer : Module, IInitializable
{
    /// <summary>Registers a zero weight of <paramref name="weightShape"/> and, if asked, a zero bias [out].</summary>
    /// <param name="weightShape">The weight's shape; its first dimension is the output size.</param>
    /// <param name="bias">Whether to add a bias.</param>
    /// <param name="dtype">Parameter element type.</param>
    /// <param name="device">Parameter device (default CPU).</param>
    /// <param name="prunable">Whether the weight is registered as prunable.</param>
    private protected WeightLayer(long[] weightShape, bool bias, DType dtype, Device? device, bool prunable)
    {
        Weight = RegisterParameter("weight", Libtorch.Zeros(weightShape, dtype, device), prunable);
        Bias = bias ? RegisterParameter("bias", Libtorch.Zeros([weightShape[0]], dtype, device)) : null;
    }

    /// <summary>The weight [out, …].</summary>
    public Tensor Weight { get; }
    /// <summary>The bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>The kept weights while this layer runs the sparse kernels (training chose them), else null.</summary>
    public SparseWeight? Sparse { get; internal set; }

    /// <summary>Weight from the scheme, bias zero.</summary>
    public void ResetParameters(WeightInit scheme, Generator generator)
    {
        Initialization.FillWeight(Weight, scheme, generator);
        if (Bias is not null) Initialization.FillConstant(Bias, 0);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        Sparse?.Dispose();
        Sparse = null;
        base.Dispose();
    }
}

/// <summary>Fully connected layer y = x·Wᵀ + b over the last dimension. Weight [out, in] is prunable.</summary>
public sealed class Linear : WeightLayer
{
    /// <summary>A linear layer with zero parameters until initialized.</summary>
    /// <param name="inFeatures">Size of the input's last dimension.</param>
    /// <param name="outFeatures">Size of the output's last dimension.</param>
    /// <param name="bias">Whether to add a bias.</param>
    /// <param name="dtype">Parameter element type.</param>
    /// <param name="device">Parameter device (default CPU).</param>
    /// <param name="prunable">Whether the weight is registered as prunable (default true).</param>
    public Linear(long inFeatures, long outFeatures, bool bias = true, DType dtype = DType.Float32, Device? device = null, bool prunable = true)
        : base(WeightShape(inFeatures, outFeatures), bias, dtype, device, prunable)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    // Checked before the base constructor allocates anything.
    static long[] WeightShape(long inFeatures, long outFeatures)
    {
        if (inFeatures < 1 || outFeatures < 1)
            throw new ArgumentOutOfRangeException(nameof(inFeatures), $"a linear layer needs positive sizes, got {inFeatures} → {outFeatures}");
        return [outFeatures, inFeatures];
    }

    /// <summary>Input features.</summary>
    public long InFeatures { get; }
    /// <summary>Output features.</summary>
    public long OutFeatures { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        var y = Sparse is { } s ? Functional.SparseLinear(x, s.Values, s.Pattern, Bias, s.BatchInnermost) : Functional.Linear(x, Weight, Bias);
        LayerRecorder.Record(this, LayerKind.Linear, x, y);
        if (FlopCounter.IsActive)
            FlopCounter.Record(this, y.NumEl / y.Size(0) * InFeatures);
        return y;
    }
}

/// <summary>2-d convolution. Weight [out, in/groups, k, k] is prunable.</summary>
public sealed class Conv2d : WeightLayer
{
    /// <summary>A square-kernel convolution with zero parameters until initialized.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="kernelSize">Kernel height and width.</param>
    /// <param name="stride">Stride.</param>
    /// <param name="padding">Zero padding on every side.</param>
    /// <param name="dilation">Kernel dilation.</param>
    /// <param name="groups">Channel groups (both channel counts must divide by it).</param>
    /// <param name="bias">Whether to add a bias.</param>
    /// <param name="dtype">Parameter element type.</param>
    /// <param name="device">Parameter device (default CPU).</param>
    /// <param name="prunable">Whether the weight is registered as prunable (default true).</param>
    public Conv2d(long inChannels, long outChannels, int kernelSize, int stride = 1, int padding = 0, int dilation = 1, int groups = 1,
        bool bias = true, DType dtype = DType.Float32, Device? device = null, bool prunable = true)
        : base(WeightShape(inChannels, outChannels, kernelSize, stride, padding, dilation, groups), bias, dtype, device, prunable)
    {
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        Stride = stride;
        Padding = padding;
        Dilation = dilation;
        Groups = groups;
    }

    // Checked before the base constructor allocates anything.
    static long[] WeightShape(long inChannels, long outChannels, int kernelSize, int stride, int padding, int dilation, int groups)
    {
        if (inChannels < 1 || outChannels < 1 || kernelSize < 1 || stride < 1 || padding < 0 || dilation < 1 || groups < 1)
            throw new ArgumentOutOfRangeException(nameof(inChannels),
                $"invalid convolution: {inChannels}→{outChannels}, kernel {kernelSize}, stride {stride}, padding {padding}, dilation {dilation}, groups {groups}");
        if (inChannels % groups != 0 || outChannels % groups != 0)
            throw new ArgumentException($"groups ({groups}) must divide both channel counts ({inChannels} in, {outChannels} out)", nameof(groups));
        return [outChannels, inChannels / groups, kernelSize, kernelSize];
    }

    /// <summary>Input channels.</summary>
    public long InChannels { get; }
    /// <summary>Output channels.</summary>
    public long OutChannels { get; }
    /// <summary>Kernel height and width.</summary>
    public int KernelSize { get; }
    /// <summary>Stride.</summary>
    public int Stride { get; }
    /// <summary>Zero padding on every side.</summary>
    public int Padding { get; }
    /// <summary>Kernel dilation.</summary>
    public int Dilation { get; }
    /// <summary>Channel groups.</summary>
    public int Groups { get; }

    /// <summary>Whether the sparse kernels can run this convolution (one group, no dilation).</summary>
    public bool SparseCapable => Groups == 1 && Dilation == 1;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        var y = Sparse is { } s
            ? Functional.SparseConv2d(x, s.Values, s.Pattern, Bias, Stride, Padding, s.Layout, s.BatchInnermost)
            : Functional.Conv2d(x, Weight, Bias, Stride, Padding, Dilation, Groups);
        if (LayerRecorder.IsActive)
            LayerRecorder.Record(this, LayerKind.NewConv2d(Stride, Padding, Dilation, Groups), x, y);
        if (FlopCounter.IsActive)
            FlopCounter.Record(this, y.NumEl / y.Size(0) * (InChannels / Groups) * KernelSize * KernelSize);
        return y;
    }

    /// <summary>
    /// Max pooling of <see cref="Forward"/>'s output by <paramref name="pool"/> × <paramref name="pool"/>
    /// windows, stride <paramref name="pool"/>. Where nothing needs the unpooled output (no gradient,
    /// no layer recording or counting) and the layer runs the batch-innermost sparse kernels, in one
    /// pass that never writes the unpooled output out (the same values).
    /// </summary>
    public Tensor ForwardMaxPool(Tensor x, int pool)
    {
        var needsGrad = Libtorch.IsGradEnabled && (x.RequiresGrad || Sparse?.Values.RequiresGrad == true || Bias?.RequiresGrad == true);
        // A window that does not fit goes the two ops' way, to their error.
        bool Fits(long size) => (size + 2 * Padding - KernelSize) / Stride + 1 >= pool;
        if (Sparse is { Layout: SparseConvLayout.BatchInnermost, BatchInnermost: true } s && !needsGrad
            && !LayerRecorder.IsActive && !FlopCounter.IsActive && x.Dim == 4 && Fits(x.Size(2)) && Fits(x.Size(3)))
            return Functional.SparseConv2dMaxPool(x, s.Values, s.Pattern, Bias, Stride, Padding, pool);
        return Functional.MaxPool2d(Forward(x), pool);
    }
}

/// <summary>
/// Batch normalization over the channels of [N, C, H, W]. Train mode normalizes with the batch
/// statistics and updates the running statistics (running = (1 − m)·running + m·batch, with the
/// unbiased batch variance, as PyTorch); eval mode normalizes with the running statistics.
/// Weight and bias are trainable, not prunable; running_mean and running_var are buffers.
/// </summary>
public sealed class BatchNorm2d : Module, IInitializable
{
    /// <summary>Batch normalization of <paramref name="features"/> channels: weight 1, bias 0, running mean 0, running variance 1.</summary>
    /// <param name="features">Channels.</param>
    /// <param name="eps">Added to the variance for stability.</param>
    /// <param name="momentum">Running-statistics momentum; null for a cumulative average.</param>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Device (default CPU).</param>
    public BatchNorm2d(long features, double eps = 1e-5, double? momentum = 0.1, DType dtype = DType.Float32, Device? device = null)
    {
        Features = features;
        Eps = eps;
        Momentum = momentum;
        Weight = RegisterParameter("weight", Libtorch.Ones([features], dtype, device));
        Bias = RegisterParameter("bias", Libtorch.Zeros([features], dtype, device));
        RunningMean = RegisterBuffer("running_mean", Libtorch.Zeros([features], dtype, device));
        RunningVar = RegisterBuffer("running_var", Libtorch.Ones([features], dtype, device));
    }

    /// <summary>Channels.</summary>
    public long Features { get; }
    /// <summary>Added to the variance for stability (default 1e-5).</summary>
    public double Eps { get; set; }
    /// <summary>
    /// Running-statistics momentum (default 0.1). Null gives a cumulative moving average over
    /// every train-mode batch since <see cref="ResetRunningStats"/> (PyTorch's momentum=None),
    /// which is what a BN warm-up that should describe the whole data wants.
    /// </summary>
    public double? Momentum { get; set; }
    /// <summary>Train-mode batches seen since the running statistics were reset.</summary>
    public long BatchesTracked { get; set; }
    /// <summary>Scale γ [C].</summary>
    public Tensor Weight { get; }
    /// <summary>Shift β [C].</summary>
    public Tensor Bias { get; }
    /// <summary>Running mean [C] (buffer).</summary>
    public Tensor RunningMean { get; }
    /// <summary>Running (unbiased) variance [C] (buffer).</summary>
    public Tensor RunningVar { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Normalize(x, relu: false);

    /// <summary>
    /// ReLU of <see cref="Forward"/>, the same values and gradients: on an activation a sparse layer
    /// passed on batch-innermost, one pass forward and backward instead of two.
    /// </summary>
    public Tensor ForwardRelu(Tensor x) => Normalize(x, relu: true);

    Tensor Normalize(Tensor x, bool relu)
    {
        if (x.Dim != 4)
            throw new ArgumentException($"BatchNorm2d expects [N, C, H, W], got {x}");
        var momentum = 0.0;
        if (Training)
        {
            BatchesTracked++;
            momentum = Momentum ?? 1.0 / BatchesTracked;
        }
        return relu
            ? Functional.BatchNormRelu(x, RunningMean, RunningVar, Weight, Bias, Training, momentum, Eps)
            : Functional.BatchNorm(x, RunningMean, RunningVar, Weight, Bias, Training, momentum, Eps);
    }

    /// <summary>Running mean 0, running variance 1, batch count 0.</summary>
    public void ResetRunningStats()
    {
        using var _ = Libtorch.NoGrad();
        RunningMean.Zero_();
        RunningVar.Fill_(1);
        BatchesTracked = 0;
    }

    /// <summary>Weight 1, bias 0 and fresh running statistics (the generator is not used).</summary>
    public void ResetParameters(WeightInit scheme, Generator generator)
    {
        Initialization.FillConstant(Weight, 1);
        Initialization.FillConstant(Bias, 0);
        ResetRunningStats();
    }
}

/// <summary>Layer normalization over the last dimension; weight and bias are trainable, not prunable.</summary>
public sealed class LayerNorm : Module, IInitializable
{
    /// <summary>Layer normalization of a last dimension of size <paramref name="features"/>: weight 1, bias 0.</summary>
    /// <param name="features">Size of the normalized (last) dimension.</param>
    /// <param name="eps">Added to the variance (default 1e-5, as torch.nn.LayerNorm).</param>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Device (default CPU).</param>
    public LayerNorm(long features, double eps = 1e-5, DType dtype = DType.Float32, Device? device = null)
    {
        Features = features;
        Eps = eps;
        Weight = RegisterParameter("weight", Libtorch.Ones([features], dtype, device));
        Bias = RegisterParameter("bias", Libtorch.Zeros([features], dtype, device));
    }

    /// <summary>Size of the normalized dimension.</summary>
    public long Features { get; }
    /// <summary>Added to the variance for stability.</summary>
    public double Eps { get; }
    /// <summary>Scale [features].</summary>
    public Tensor Weight { get; }
    /// <summary>Shift [features].</summary>
    public Tensor Bias { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.LayerNorm(x, [Features], Weight, Bias, Eps);

    /// <summary>Weight 1, bias 0 (the generator is not used).</summary>
    public void ResetParameters(WeightInit scheme, Generator generator)
    {
        Initialization.FillConstant(Weight, 1);
        Initialization.FillConstant(Bias, 0);
    }
}

/// <summary>Modules applied one after another; they are named "0", "1", … as in torch.nn.Sequential.</summary>
public sealed class Sequential : Module
{
    readonly List<Module> layers = new();

    /// <summary>A sequence of <paramref name="layers"/>.</summary>
    public Sequential(params Module[] layers)
    {
        foreach (var l in layers) Add(l);
    }

    /// <summary>Appends a layer and returns this sequence.</summary>
    public Sequential Add(Module layer)
    {
        RegisterModule(layers.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), layer);
        layers.Add(layer);
        return this;
    }

    /// <summary>Number of layers.</summary>
    public int Count => layers.Count;

    /// <summary>The layer at <paramref name="index"/>.</summary>
    public Module this[int index] => layers[index];

    /// <inheritdoc/>
    /// <remarks>
    /// A <see cref="BatchNorm2d"/> followed by a <see cref="Relu"/> runs as <see cref="BatchNorm2d.ForwardRelu"/>.
    /// Each intermediate output's handle is freed as soon as the next layer has run (what the autograd
    /// graph needs, it holds itself), so in evaluation they do not add up over the pass.
    /// </remarks>
    public override Tensor Forward(Tensor x)
    {
        var y = x;
        for (var i = 0; i < layers.Count; i++)
        {
            Tensor next;
            if (layers[i] is BatchNorm2d bn && i + 1 < layers.Count && layers[i + 1] is Relu)
            {
                next = bn.ForwardRelu(y);
                i++;  // the ReLU ran with it
            }
            else
                next = layers[i].Forward(y);
            if (!ReferenceEquals(y, x) && !ReferenceEquals(y, next)) y.Dispose();
            y = next;
        }
        return ReferenceEquals(y, x) ? x.Alias() : y;
    }
}

/// <summary>max(x, 0).</summary>
public sealed class Relu : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.Relu(x);
}

/// <summary>GELU (exact, erf-based, as torch.nn.GELU()).</summary>
public sealed class Gelu : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.Gelu(x);
}

/// <summary>The input unchanged (a new handle to it).</summary>
public sealed class Identity : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => x.Alias();
}

/// <summary>Flattens dimensions from <see cref="StartDim"/> on (default 1: [N, …] → [N, features]).</summary>
public sealed class Flatten : Module
{
    /// <summary>Flattens dimensions <paramref name="startDim"/>..last.</summary>
    public Flatten(long startDim = 1) => StartDim = startDim;
    /// <summary>First dimension flattened.</summary>
    public long StartDim { get; }
    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => x.Flatten(StartDim);
}

/// <summary>
/// 2-d max pooling (stride defaults to the kernel). With <see cref="SkipWhenTooSmall"/> the layer
/// is the identity when the input's height or width is smaller than the kernel, so that deep
/// pooling stacks still work on small images (VGG on 28×28 reaches 1×1 before its last pool).
/// </summary>
public sealed class MaxPool2d : Module
{
    /// <summary>Max pooling with a square kernel.</summary>
    /// <param name="kernel">Kernel size.</param>
    /// <param name="stride">Stride (default: the kernel size).</param>
    /// <param name="padding">Implicit negative-infinity padding.</param>
    /// <param name="skipWhenTooSmall">Pass inputs smaller than the kernel through unchanged.</param>
    public MaxPool2d(int kernel, int? stride = null, int padding = 0, bool skipWhenTooSmall = false)
    {
        Kernel = kernel;
        Stride = stride ?? kernel;
        Padding = padding;
        SkipWhenTooSmall = skipWhenTooSmall;
    }

    /// <summary>Kernel size.</summary>
    public int Kernel { get; }
    /// <summary>Stride.</summary>
    public int Stride { get; }
    /// <summary>Padding.</summary>
    public int Padding { get; }
    /// <summary>Whether inputs smaller than the kernel pass through unchanged.</summary>
    public bool SkipWhenTooSmall { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        if (SkipWhenTooSmall && (x.Size(-1) + 2 * Padding < Kernel || x.Size(-2) + 2 * Padding < Kernel))
            return x.Alias();
        return Functional.MaxPool2d(x, Kernel, Stride, Padding);
    }
}

/// <summary>2-d average pooling (stride defaults to the kernel).</summary>
public sealed class AvgPool2d : Module
{
    /// <summary>Average pooling with a square kernel.</summary>
    public AvgPool2d(int kernel, int? stride = null, int padding = 0)
    {
        Kernel = kernel;
        Stride = stride ?? kernel;
        Padding = padding;
    }

    /// <summary>Kernel size.</summary>
    public int Kernel { get; }
    /// <summary>Stride.</summary>
    public int Stride { get; }
    /// <summary>Padding (counted in the average, as PyTorch's default).</summary>
    public int Padding { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.AvgPool2d(x, Kernel, Stride, Padding);
}

/// <summary>Global average pooling: [N, C, H, W] → [N, C] (any H, W ≥ 1).</summary>
public sealed class GlobalAvgPool2d : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.AdaptiveAvgPool2d(x, 1, 1).Flatten(1);
}

/// <summary>
/// Inverted dropout: in train mode each element is zeroed with probability <see cref="P"/> and the
/// rest scaled by 1/(1 − p); in eval mode the identity. Masks come from the layer's own seeded
/// generator, so a run is reproducible.
/// </summary>
public sealed class Dropout : Module
{
    readonly Generator generator;

    /// <summary>Dropout with drop probability <paramref name="p"/> and masks drawn from a generator seeded with <paramref name="seed"/>.</summary>
    public Dropout(double p, ulong seed)
    {
        if (p < 0 || p >= 1) throw new ArgumentOutOfRangeException(nameof(p), p, "the drop probability must be in [0, 1)");
        P = p;
        generator = new Generator(seed);
    }

    /// <summary>Drop probability.</summary>
    public double P { get; }

    /// <summary>Seed of the mask generator.</summary>
    public ulong Seed => generator.Seed;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => Functional.Dropout(x, P, Training, generator);

    /// <summary>Frees the generator too.</summary>
    public override void Dispose()
    {
        generator.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// Collects the dense multiply-adds of conv and linear layers during one forward pass
/// (<see cref="Model.LayerFlops"/>): a thread-static recorder the layers report to when active.
/// </summary>
internal static class FlopCounter
{
    [ThreadStatic] static List<(Module Layer, long MultiplyAdds)>? active;

    public static bool IsActive => active is not null;

    public static void Record(Module layer, long multiplyAdds) => active?.Add((layer, multiplyAdds));

    /// <summary>Runs <paramref name="forward"/> with recording on and returns what the layers reported.</summary>
    public static List<(Module Layer, long MultiplyAdds)> Collect(Action forward)
    {
        var previous = active;
        active = new();
        try
        {
            forward();
            return active;
        }
        finally
        {
            active = previous;
        }
    }
}

/// <summary>
/// Records the input and output of every conv and linear layer during one forward pass
/// (<see cref="Model.ForwardCapturing"/>): a thread-static recorder the layers report to when active,
/// as <see cref="FlopCounter"/>.
/// </summary>
internal static class LayerRecorder
{
    [ThreadStatic] static List<(Module Layer, LayerKind Kind, Tensor Input, Tensor Output)>? active;

    public static bool IsActive => active is not null;

    /// <summary>Records new handles to the layer's input and output: the forward pass may free its own when it is done with them.</summary>
    public static void Record(Module layer, LayerKind kind, Tensor input, Tensor output) => active?.Add((layer, kind, input.Alias(), output.Alias()));

    /// <summary>Runs <paramref name="forward"/> with recording on; returns its result and what the layers reported.</summary>
    public static (T Result, List<(Module Layer, LayerKind Kind, Tensor Input, Tensor Output)> Records) Collect<T>(Func<T> forward)
    {
        var previous = active;
        active = new();
        try
        {
            var result = forward();
            return (result, active);
        }
        finally
        {
            active = previous;
        }
    }
}
