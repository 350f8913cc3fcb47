
namespace Pai.Host.Models;

/// <summary>Dense cost of one conv or linear layer for one input image.</summary>
/// <param name="Name">The layer's weight parameter name (the key it has in <see cref="Model.Prunable"/>).</param>
/// <param name="MultiplyAdds">Multiply-accumulate operations of the layer (bias additions not counted).</param>
public sealed record LayerFlops(string Name, long MultiplyAdds);

/// <summary>
/// A classification network: a <see cref="Module"/> built for one <see cref="ModelOptions"/>
/// (input shape, classes, dtype, device) and the <see cref="IModelView"/> criteria consume.
/// Subclasses register their layers and the classifier in their constructor, then call
/// <see cref="Initialize(WeightInit, ulong)"/>.
/// </summary>
public abstract class Model : Module, IModelView
{
    string? classifierName;
    Linear? classifier;
    IReadOnlyList<KeyValuePair<string, Tensor>>? parameterList, prunableList, bufferList;

    /// <summary>A model named <paramref name="name"/> built for <paramref name="options"/>.</summary>
    protected Model(string name, ModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Classes < 1) throw new ArgumentOutOfRangeException(nameof(options), options.Classes, "a model needs at least one class");
        if (options.InputShape.Channels < 1 || options.InputShape.Height < 1 || options.InputShape.Width < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.InputShape, "input shape sizes must be positive");
        if (!options.DType.IsFloatingPoint())
            throw new ArgumentException($"model parameters must be float32 or float64, not {options.DType}", nameof(options));
        Name = name;
        Options = options;
    }

    /// <summary>Model name (e.g. "lenet5"), as <see cref="ModelZoo.Create"/> knows it.</summary>
    public string Name { get; }

    /// <summary>What the model was built for.</summary>
    public ModelOptions Options { get; }

    /// <summary>Shape of one input image.</summary>
    public InputShape InputShape => Options.InputShape;

    /// <summary>Number of classes (size of the logits).</summary>
    public int Classes => Options.Classes;

    /// <summary>Element type of the parameters.</summary>
    public DType DType => Options.DType;

    /// <summary>The device the parameters live on.</summary>
    public Device Device => Parameters.Count > 0 ? Parameters[0].Value.Device : Options.Device;

    /// <summary>The classifier's weight name (e.g. "fc.weight").</summary>
    public string ClassifierWeightName => classifierName is null
        ? throw new InvalidOperationException($"{GetType().Name} registered no classifier")
        : classifierName + ".weight";

    /// <summary>
    /// The prunable weights in registration order: every conv and linear weight, except the
    /// classifier's when <see cref="ModelOptions.DenseClassifier"/> is set. Live leaf tensors.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> Prunable => prunableList ??=
        NamedPrunable().Where(p => !(Options.DenseClassifier && p.Name == ClassifierWeightName))
            .Select(p => KeyValuePair.Create(p.Name, p.Tensor)).ToList();

    /// <summary>Every trainable parameter (prunable or not) in registration order.</summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> Parameters => parameterList ??=
        NamedParameters().Select(p => KeyValuePair.Create(p.Name, p.Tensor)).ToList();

    /// <summary>Every buffer (BN running statistics) in registration order.</summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> Buffers => bufferList ??=
        NamedBuffers().Select(p => KeyValuePair.Create(p.Name, p.Tensor)).ToList();

    /// <summary>The model's state: every parameter then every buffer, as PyTorch's state_dict names them (what checkpoints hold).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> State() =>
        Parameters.Select(p => (p.Key, p.Value)).Concat(Buffers.Select(b => (b.Key, b.Value)));

    /// <summary>Number of scalars in <see cref="Prunable"/>.</summary>
    public long PrunableCount => Prunable.Sum(p => p.Value.NumEl);

    /// <summary>Every module below this one with its dotted name, depth first in registration order.</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules()
    {
        static IEnumerable<(string, Module)> Walk(string prefix, Module m)
        {
            foreach (var (n, c) in m.Children)
            {
                var name = prefix.Length == 0 ? n : $"{prefix}.{n}";
                yield return (name, c);
                foreach (var d in Walk(name, c)) yield return d;
            }
        }
        return Walk("", this);
    }

    /// <summary>Every batch-norm layer, in order.</summary>
    public IEnumerable<BatchNorm2d> BatchNorms => NamedModules().Select(m => m.Module).OfType<BatchNorm2d>();

    /// <summary>Sets the running-statistics momentum of every batch-norm layer (null: cumulative average).</summary>
    public void SetBatchNormMomentum(double? momentum)
    {
        foreach (var bn in BatchNorms) bn.Momentum = momentum;
    }

    /// <summary>Resets every batch-norm layer's running statistics (mean 0, variance 1).</summary>
    public void ResetBatchNormStats()
    {
        foreach (var bn in BatchNorms) bn.ResetRunningStats();
    }

    /// <summary>Registers the final linear layer (the one <see cref="ModelOptions.DenseClassifier"/> keeps dense).</summary>
    protected Linear RegisterClassifier(string name, Linear classifier)
    {
        if (classifierName is not null) throw new InvalidOperationException($"the classifier is already registered as '{classifierName}'");
        classifierName = name;
        this.classifier = classifier;
        return RegisterModule(name, classifier);
    }

    // ---- forward ----------------------------------------------------------------------------

    /// <summary>Logits [N, classes] for inputs [N, C, H, W] with C = <see cref="InputShape"/>'s channels.</summary>
    public sealed override Tensor Forward(Tensor inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Dim != 4 || inputs.Size(1) != InputShape.Channels)
            throw new ArgumentException($"{Name} expects inputs [N, {InputShape.Channels}, H, W] (built for {InputShape}), got {inputs}", nameof(inputs));
        return Logits(inputs);
    }

    /// <summary>
    /// Logits [N, classes] and the classifier's input features [N, D] for <paramref name="inputs"/>: one forward
    /// pass that records what enters the classifier (the closed-form Hessian diagonal of the
    /// last layer needs it).
    /// </summary>
    public (Tensor, Tensor) ForwardWithFeatures(Tensor inputs)
    {
        var head = classifier ?? throw new InvalidOperationException($"{GetType().Name} registered no classifier");
        var (logits, records) = LayerRecorder.Collect(() => Forward(inputs));
        foreach (var r in records)
            if (ReferenceEquals(r.Layer, head)) return (logits, r.Input);
        throw new InvalidOperationException($"{Name}'s forward pass did not use its classifier");
    }

    /// <summary>
    /// Logits [N, classes] and, for every prunable weight, its layer's input and output in this
    /// forward pass (forward order): what batched per-sample statistics (PerSample) read. Layers
    /// whose weight is not prunable (a dense classifier) are left out. The tensors belong to the
    /// caller's dispose scope, like the logits.
    /// </summary>
    public (Tensor Logits, IReadOnlyList<LayerCapture> Layers) ForwardCapturing(Tensor inputs)
    {
        var prunable = Prunable.Select(p => p.Key).ToHashSet();
        var names = new Dictionary<Module, string>(ReferenceEqualityComparer.Instance);
        foreach (var (n, m) in NamedModules()) names[m] = n + ".weight";
        var (logits, records) = LayerRecorder.Collect(() => Forward(inputs));
        var layers = records
            .Where(r => names.TryGetValue(r.Layer, out var name) && prunable.Contains(name))
            .Select(r => new LayerCapture(names[r.Layer], r.Kind, r.Input, r.Output))
            .ToList();
        return (logits, layers);
    }

    (Tensor, IReadOnlyList<LayerCapture>) IModelView.ForwardCapturing(Tensor inputs) => ForwardCapturing(inputs);

    /// <summary>
    /// True when, in eval mode, the logits are linear in each prunable weight taken alone (ReLU,
    /// pooling, eval-mode batch norm, residual sums, every weight used once), so the exact Hessian
    /// diagonal from the Gauss–Newton identity applies (docs/architecture.md §5). Models declare it; false by default.
    /// </summary>
    public virtual bool IsPiecewiseLinear => false;

    /// <summary>
    /// True when every op between this model's weight layers keeps an activation stored
    /// batch-innermost without a copy (ReLU, max pooling, flattening, bias sums, batch norm, which
    /// the native library computes in that storage, and sums whose operands are matched with
    /// Functional.StoredLike; not layer norm), so its sparse layers pass their outputs on as the
    /// kernels computed them instead of transposing each one back and forth. A dense convolution
    /// converts such an input itself. Models declare it; false by default.
    /// </summary>
    public virtual bool PassesBatchInnermost => false;

    /// <summary>The network itself: inputs already checked to be [N, C, H, W].</summary>
    protected abstract Tensor Logits(Tensor inputs);

    /// <summary>Throws a clear error unless the image size is exactly the one the model was built for.</summary>
    protected void RequireImageSize(Tensor inputs)
    {
        if (inputs.Size(2) != InputShape.Height || inputs.Size(3) != InputShape.Width)
            throw new ArgumentException(
                $"{Name} was built for {InputShape} inputs and cannot take {inputs.Size(1)}x{inputs.Size(2)}x{inputs.Size(3)}: create it with that input shape", nameof(inputs));
    }

    // ---- initialization ---------------------------------------------------------------------

    /// <summary>
    /// (Re)draws every parameter: conv and linear weights with <paramref name="scheme"/>, biases
    /// zero, normalization weight 1 and bias 0, running statistics reset, plus model-specific
    /// parameters (<see cref="InitializeOwnParameters"/>). Layers are visited depth first in
    /// registration order with one generator seeded by <paramref name="seed"/>, so the same seed
    /// gives bit-identical weights.
    /// </summary>
    public void Initialize(WeightInit scheme, ulong seed)
    {
        using var generator = new Generator(seed);
        InitializeOwnParameters(scheme, generator);
        foreach (var (_, m) in NamedModules())
            if (m is IInitializable layer) layer.ResetParameters(scheme, generator);
    }

    /// <summary>Initializes parameters the model registers itself (not through a layer), e.g. ViT's class token. Called first.</summary>
    protected virtual void InitializeOwnParameters(WeightInit scheme, Generator generator) { }

    // ---- copies -----------------------------------------------------------------------------

    /// <summary>
    /// A new model of the same architecture for <paramref name="options"/>, used by copies. It need not be
    /// initialized: every value is overwritten, and drawing initial weights would cost more than the copy.
    /// </summary>
    protected abstract Model CreateLike(ModelOptions options);

    /// <summary>
    /// A deep copy (parameters, buffers, batch-norm settings, train/eval mode) with another dtype
    /// and/or device; the copy owns its own tensors.
    /// </summary>
    public Model Copy(DType? dtype = null, Device? device = null)
    {
        var copy = CreateLike(Options with { DType = dtype ?? DType, Device = device ?? Device });
        try
        {
            copy.LoadStateFrom(this);
            copy.Training = Training;
            return copy;
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }

    /// <summary>A deep copy converted to <paramref name="dtype"/> (float64 for oracles and SynFlow).</summary>
    public Model CopyAs(DType dtype) => Copy(dtype);

    /// <summary>A deep copy on <paramref name="device"/>.</summary>
    public Model CopyTo(Device device) => Copy(device: device);

    IModelView IModelView.CopyAs(DType dtype) => CopyAs(dtype);

    /// <summary>
    /// Copies every parameter and buffer value (and batch-norm settings) from a model of the same
    /// architecture, converting dtype and device; e.g. rewinding to saved initial weights.
    /// </summary>
    public void LoadStateFrom(Model source)
    {
        ArgumentNullException.ThrowIfNull(source);
        CopyTensors(source.Parameters, Parameters, "parameter");
        CopyTensors(source.Buffers, Buffers, "buffer");
        using (var pairs = source.BatchNorms.GetEnumerator())
            foreach (var bn in BatchNorms)
            {
                if (!pairs.MoveNext()) break;
                bn.Momentum = pairs.Current.Momentum;
                bn.Eps = pairs.Current.Eps;
                bn.BatchesTracked = pairs.Current.BatchesTracked;
            }
    }

    static void CopyTensors(IReadOnlyList<KeyValuePair<string, Tensor>> from, IReadOnlyList<KeyValuePair<string, Tensor>> to, string what)
    {
        if (from.Count != to.Count)
            throw new ArgumentException($"the models differ: {from.Count} {what}s against {to.Count}");
        using var _ = Libtorch.NoGrad();
        for (var i = 0; i < to.Count; i++)
        {
            var (name, src) = (from[i].Key, from[i].Value);
            var dst = to[i].Value;
            if (name != to[i].Key || !src.Shape.SequenceEqual(dst.Shape))
                throw new ArgumentException($"the models differ: {what} {name} [{string.Join(", ", src.Shape)}] against {to[i].Key} [{string.Join(", ", dst.Shape)}]");
            dst.Copy_(src);
        }
    }

    // ---- costs ------------------------------------------------------------------------------

    /// <summary>
    /// Dense multiply-adds of every conv and linear layer for one image of <paramref name="input"/>
    /// (default: <see cref="InputShape"/>), in forward order, named by weight. Measured by one
    /// eval-mode forward pass of a zero image without gradients; the mode is restored. Attention's
    /// weight-free products (q·kᵀ, softmax·v) are not included: they are not prunable layers.
    /// Models whose layers are sized by the image (lenet300, lenet5, vit-tiny) accept only their
    /// own input shape; the convolutional ones take any image size.
    /// </summary>
    public IReadOnlyList<LayerFlops> LayerFlops(InputShape? input = null)
    {
        var shape = input ?? InputShape;
        var names = new Dictionary<Module, string>(ReferenceEqualityComparer.Instance);
        foreach (var (n, m) in NamedModules()) names[m] = n + ".weight";
        var wasTraining = Training;
        Training = false;
        try
        {
            var records = FlopCounter.Collect(() =>
            {
                using var scope = new DisposeScope();
                using var _ = Libtorch.NoGrad();
                var x = Libtorch.Zeros(shape.WithBatch(1), DType, Device);
                Forward(x);
            });
            return records.Select(r => new LayerFlops(names[r.Layer], r.MultiplyAdds)).ToList();
        }
        finally
        {
            Training = wasTraining;
        }
    }

    /// <summary>Total dense multiply-adds of conv and linear layers for one image (see <see cref="LayerFlops"/>).</summary>
    public long DenseFlops(InputShape? input = null) => LayerFlops(input).Sum(l => l.MultiplyAdds);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({InputShape}, {Classes} classes, {ParameterCount:N0} parameters, {DType}, {Device})";
}
