
namespace Pai.Host.Models;

/// <summary>
/// LeNet-300-100: the image flattened to C·H·W values, FC C·H·W→300, ReLU, FC 300→100, ReLU,
/// FC 100→classes. Layers fc1, fc2, fc3 (the classifier).
/// </summary>
public sealed class LeNet300 : Model
{
    readonly Linear fc1, fc2, fc3;

    /// <summary>LeNet-300-100 for <paramref name="options"/>, initialized.</summary>
    public LeNet300(ModelOptions options) : this(options, initialize: true) { }

    LeNet300(ModelOptions options, bool initialize) : base("lenet300", options)
    {
        var (dt, dev) = (options.DType, options.Device);
        fc1 = RegisterModule("fc1", new Linear(options.InputShape.NumEl, 300, dtype: dt, device: dev));
        fc2 = RegisterModule("fc2", new Linear(300, 100, dtype: dt, device: dev));
        fc3 = RegisterClassifier("fc3", new Linear(100, options.Classes, dtype: dt, device: dev));
        if (initialize) Initialize(options.Init, options.Seed);
    }

    /// <inheritdoc/>
    protected override Tensor Logits(Tensor inputs)
    {
        RequireImageSize(inputs);
        var h = Functional.Relu(fc1.Forward(inputs.Flatten(1)));
        h = Functional.Relu(fc2.Forward(h));
        return fc3.Forward(h);
    }

    /// <summary>True: ReLU, pooling, eval-mode batch norm; the logits are linear in each weight taken alone.</summary>
    public override bool IsPiecewiseLinear => true;

    /// <summary>True: ReLU, pooling and flattening between the layers keep batch-innermost activations.</summary>
    public override bool PassesBatchInnermost => true;

    /// <inheritdoc/>
    protected override Model CreateLike(ModelOptions options) => new LeNet300(options, initialize: false);
}

/// <summary>
/// LeNet-5-Caffe (the variant SNIP prunes): conv 20@5×5, max-pool 2, conv 50@5×5, max-pool 2,
/// FC 50·h·w→500 (800 for 28×28 inputs), ReLU, FC 500→classes. As in Caffe's LeNet there is no
/// nonlinearity after the convolutions. Layers conv1, conv2, fc1, fc2 (the classifier).
/// </summary>
public sealed class LeNet5 : Model
{
    readonly Conv2d conv1, conv2;
    readonly Linear fc1, fc2;

    /// <summary>LeNet-5-Caffe for <paramref name="options"/> (images at least 16×16), initialized.</summary>
    public LeNet5(ModelOptions options) : this(options, initialize: true) { }

    LeNet5(ModelOptions options, bool initialize) : base("lenet5", options)
    {
        var (dt, dev) = (options.DType, options.Device);
        // Valid 5×5 convolutions and floor-mode 2×2 pools: s → (s − 4) / 2 → ((s − 4) / 2 − 4) / 2.
        static int After(int s) => ((s - 4) / 2 - 4) / 2;
        int h = After(options.InputShape.Height), w = After(options.InputShape.Width);
        if (options.InputShape.Height < 16 || options.InputShape.Width < 16)
            throw new ArgumentException($"lenet5 needs images of at least 16x16, got {options.InputShape}", nameof(options));
        conv1 = RegisterModule("conv1", new Conv2d(options.InputShape.Channels, 20, 5, dtype: dt, device: dev));
        conv2 = RegisterModule("conv2", new Conv2d(20, 50, 5, dtype: dt, device: dev));
        fc1 = RegisterModule("fc1", new Linear(50L * h * w, 500, dtype: dt, device: dev));
        fc2 = RegisterClassifier("fc2", new Linear(500, options.Classes, dtype: dt, device: dev));
        if (initialize) Initialize(options.Init, options.Seed);
    }

    /// <inheritdoc/>
    protected override Tensor Logits(Tensor inputs)
    {
        RequireImageSize(inputs);
        var h = conv1.ForwardMaxPool(inputs, 2);
        h = conv2.ForwardMaxPool(h, 2);
        h = Functional.Relu(fc1.Forward(h.Flatten(1)));
        return fc2.Forward(h);
    }

    /// <summary>True: ReLU, pooling, eval-mode batch norm; the logits are linear in each weight taken alone.</summary>
    public override bool IsPiecewiseLinear => true;

    /// <summary>True: ReLU, pooling and flattening between the layers keep batch-innermost activations.</summary>
    public override bool PassesBatchInnermost => true;

    /// <inheritdoc/>
    protected override Model CreateLike(ModelOptions options) => new LeNet5(options, initialize: false);
}
