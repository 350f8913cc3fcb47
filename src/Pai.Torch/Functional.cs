using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>How a loss reduces over the batch (libtorch's at::Reduction codes).</summary>
public enum Reduction
{
    /// <summary>One loss per sample.</summary>
    None = 0,
    /// <summary>Mean over the batch.</summary>
    Mean = 1,
    /// <summary>Sum over the batch.</summary>
    Sum = 2,
}

/// <summary>Layers as pure functions (torch.nn.functional): models are managed code over these.</summary>
public static unsafe partial class Functional
{
    /// <summary>x·wᵀ + b.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        var r = pai_linear(x.Handle, weight.Handle, Tensor.RawOrZero(bias));
        GC.KeepAlive(bias);
        return Tensor.Wrap(r);
    }

    /// <summary>2-d convolution; weight is [out, in/groups, kh, kw].</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias = null, int stride = 1, int padding = 0, int dilation = 1, int groups = 1) =>
        Conv2d(x, weight, bias, (stride, stride), (padding, padding), (dilation, dilation), groups);

    /// <summary>2-d convolution with per-axis stride, padding and dilation.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, (int H, int W) stride, (int H, int W) padding, (int H, int W) dilation, int groups = 1)
    {
        long* s = stackalloc long[] { stride.H, stride.W };
        long* p = stackalloc long[] { padding.H, padding.W };
        long* d = stackalloc long[] { dilation.H, dilation.W };
        var r = pai_conv2d(x.Handle, weight.Handle, Tensor.RawOrZero(bias), s, p, d, groups);
        GC.KeepAlive(bias);
        return Tensor.Wrap(r);
    }

    /// <summary>
    /// Sliding blocks of [N, C, H, W] as columns [N, C·kh·kw, L] (torch.nn.functional.unfold, im2col):
    /// column l is the patch that output position l of a convolution with the same kernel,
    /// dilation, padding and stride multiplies, so conv2d(x, w) = w.view(out, −1) · unfold(x) per
    /// sample (groups = 1). Row order: channel, then kernel row, then kernel column.
    /// </summary>
    public static Tensor Unfold(Tensor x, (int H, int W) kernel, (int H, int W) dilation, (int H, int W) padding, (int H, int W) stride)
    {
        long* k = stackalloc long[] { kernel.H, kernel.W };
        long* d = stackalloc long[] { dilation.H, dilation.W };
        long* p = stackalloc long[] { padding.H, padding.W };
        long* s = stackalloc long[] { stride.H, stride.W };
        return Tensor.Wrap(pai_unfold(x.Handle, k, d, p, s));
    }

    /// <summary>
    /// Σᵢ Σₖ Gᵢₖ∘Gᵢₖ over the samples of a 2-d convolution with weight shape <paramref name="weightShape"/>
    /// and K output-gradient vectors stacked along the channels of <paramref name="gradOutput"/>
    /// ([N, K·out, H', W'], vector-major): Gᵢₖ is the weight gradient of sample i alone for vector k,
    /// from its input (row i of <paramref name="input"/>). One batch-1 weight-gradient convolution per
    /// sample for all K vectors, squared and summed natively, so no per-sample tensor larger than K
    /// weights exists. No gradient flows through the result.
    /// </summary>
    public static Tensor Conv2dSquaredSampleGradients(Tensor input, Tensor gradOutput, long[] weightShape, (int H, int W) stride, (int H, int W) padding, (int H, int W) dilation, int groups)
    {
        if (weightShape.Length != 4)
            throw new ArgumentException($"a conv2d weight shape has 4 dimensions [out, in/groups, kh, kw], got {weightShape.Length}", nameof(weightShape));
        long* s = stackalloc long[] { stride.H, stride.W };
        long* p = stackalloc long[] { padding.H, padding.W };
        long* d = stackalloc long[] { dilation.H, dilation.W };
        fixed (long* w = weightShape)
            return Tensor.Wrap(pai_conv2d_squared_sample_grads(input.Handle, gradOutput.Handle, w, s, p, d, groups));
    }

    /// <summary>2-d max pooling (stride defaults to the kernel size).</summary>
    public static Tensor MaxPool2d(Tensor x, int kernel, int? stride = null, int padding = 0, int dilation = 1, bool ceilMode = false)
    {
        var st = stride ?? kernel;
        long* k = stackalloc long[] { kernel, kernel };
        long* s = stackalloc long[] { st, st };
        long* p = stackalloc long[] { padding, padding };
        long* d = stackalloc long[] { dilation, dilation };
        return Tensor.Wrap(pai_max_pool2d(x.Handle, k, s, p, d, ceilMode ? (byte)1 : (byte)0));
    }

    /// <summary>2-d average pooling (stride defaults to the kernel size).</summary>
    public static Tensor AvgPool2d(Tensor x, int kernel, int? stride = null, int padding = 0, bool ceilMode = false, bool countIncludePad = true)
    {
        var st = stride ?? kernel;
        long* k = stackalloc long[] { kernel, kernel };
        long* s = stackalloc long[] { st, st };
        long* p = stackalloc long[] { padding, padding };
        return Tensor.Wrap(pai_avg_pool2d(x.Handle, k, s, p, ceilMode ? (byte)1 : (byte)0, countIncludePad ? (byte)1 : (byte)0));
    }

    /// <summary>Adaptive average pooling to an output size.</summary>
    public static Tensor AdaptiveAvgPool2d(Tensor x, int outH, int outW)
    {
        long* o = stackalloc long[] { outH, outW };
        return Tensor.Wrap(pai_adaptive_avg_pool2d(x.Handle, o));
    }

    /// <summary>
    /// Batch normalization. In training mode batch statistics are used and the running statistics
    /// (when given) are updated in place: running = (1 − momentum)·running + momentum·batch.
    /// </summary>
    public static Tensor BatchNorm(Tensor x, Tensor? runningMean, Tensor? runningVar, Tensor? weight = null, Tensor? bias = null,
        bool training = false, double momentum = 0.1, double eps = 1e-5) =>
        BatchNorm(x, runningMean, runningVar, weight, bias, training, momentum, eps, relu: false);

    /// <summary>
    /// <see cref="Relu"/> of <see cref="BatchNorm(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)"/>, the same
    /// values and gradients. An activation stored batch-innermost (a sparse layer's output) is normalized
    /// and rectified in one pass, and the backward pass needs no separate ReLU pass either.
    /// </summary>
    public static Tensor BatchNormRelu(Tensor x, Tensor? runningMean, Tensor? runningVar, Tensor? weight = null, Tensor? bias = null,
        bool training = false, double momentum = 0.1, double eps = 1e-5) =>
        BatchNorm(x, runningMean, runningVar, weight, bias, training, momentum, eps, relu: true);

    static Tensor BatchNorm(Tensor x, Tensor? runningMean, Tensor? runningVar, Tensor? weight, Tensor? bias,
        bool training, double momentum, double eps, bool relu)
    {
        var (w, b, rm, rv) = (Tensor.RawOrZero(weight), Tensor.RawOrZero(bias), Tensor.RawOrZero(runningMean), Tensor.RawOrZero(runningVar));
        var t = training ? (byte)1 : (byte)0;
        var r = relu ? pai_batch_norm_relu(x.Handle, w, b, rm, rv, t, momentum, eps) : pai_batch_norm(x.Handle, w, b, rm, rv, t, momentum, eps);
        GC.KeepAlive(weight);
        GC.KeepAlive(bias);
        GC.KeepAlive(runningMean);
        GC.KeepAlive(runningVar);
        return Tensor.Wrap(r);
    }

    /// <summary>Layer normalization over the trailing <paramref name="normalizedShape"/>.</summary>
    public static Tensor LayerNorm(Tensor x, long[] normalizedShape, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5)
    {
        fixed (long* s = normalizedShape)
        {
            var r = pai_layer_norm(x.Handle, s, normalizedShape.Length, Tensor.RawOrZero(weight), Tensor.RawOrZero(bias), eps);
            GC.KeepAlive(weight);
            GC.KeepAlive(bias);
            return Tensor.Wrap(r);
        }
    }

    /// <summary>Inverted dropout with a seeded generator; the identity when not training.</summary>
    public static Tensor Dropout(Tensor x, double p, bool training, Generator? generator = null)
    {
        var r = pai_dropout(x.Handle, p, training ? (byte)1 : (byte)0, Generator.RawOrZero(generator));
        GC.KeepAlive(generator);
        return Tensor.Wrap(r);
    }

    /// <summary>max(x, 0).</summary>
    public static Tensor Relu(Tensor x) => Tensor.Wrap(pai_relu(x.Handle));
    /// <summary>GELU, exact (erf) or with the tanh approximation.</summary>
    public static Tensor Gelu(Tensor x, bool tanhApproximation = false) => Tensor.Wrap(pai_gelu(x.Handle, tanhApproximation ? 1 : 0));
    /// <summary>Softmax along a dimension.</summary>
    public static Tensor Softmax(Tensor x, long dim) => Tensor.Wrap(pai_softmax(x.Handle, dim));
    /// <summary>Log-softmax along a dimension.</summary>
    public static Tensor LogSoftmax(Tensor x, long dim) => Tensor.Wrap(pai_log_softmax(x.Handle, dim));

    /// <summary>Cross-entropy of logits [N, C] against int64 class targets [N], with optional label smoothing.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, Reduction reduction = Reduction.Mean, double labelSmoothing = 0) =>
        Tensor.Wrap(pai_cross_entropy(logits.Handle, target.Handle, (long)reduction, labelSmoothing));

    /// <summary>Negative log-likelihood of log-probabilities [N, C] against int64 targets [N].</summary>
    public static Tensor NllLoss(Tensor logProbs, Tensor target, Reduction reduction = Reduction.Mean) =>
        Tensor.Wrap(pai_nll_loss(logProbs.Handle, target.Handle, (long)reduction));

    /// <summary>Mean squared error.</summary>
    public static Tensor MseLoss(Tensor input, Tensor target, Reduction reduction = Reduction.Mean) =>
        Tensor.Wrap(pai_mse_loss(input.Handle, target.Handle, (long)reduction));
}
