using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Layers as functions, activations, losses (native/src/nn.cpp). Optional tensors are IntPtr (null = absent).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern IntPtr pai_linear(TensorHandle x, TensorHandle w, IntPtr b);
    [DllImport(Lib)] internal static extern IntPtr pai_conv2d(TensorHandle x, TensorHandle w, IntPtr b, long* stride, long* padding, long* dilation, long groups);
    [DllImport(Lib)] internal static extern IntPtr pai_max_pool2d(TensorHandle x, long* kernel, long* stride, long* padding, long* dilation, byte ceilMode);
    [DllImport(Lib)] internal static extern IntPtr pai_unfold(TensorHandle x, long* kernel, long* dilation, long* padding, long* stride);
    [DllImport(Lib)] internal static extern IntPtr pai_conv2d_squared_sample_grads(TensorHandle input, TensorHandle gradOutput, long* weightShape, long* stride, long* padding, long* dilation, long groups);
    [DllImport(Lib)] internal static extern IntPtr pai_avg_pool2d(TensorHandle x, long* kernel, long* stride, long* padding, byte ceilMode, byte countIncludePad);
    [DllImport(Lib)] internal static extern IntPtr pai_adaptive_avg_pool2d(TensorHandle x, long* outputSize);
    [DllImport(Lib)] internal static extern IntPtr pai_batch_norm(TensorHandle x, IntPtr weight, IntPtr bias, IntPtr runningMean, IntPtr runningVar, byte training, double momentum, double eps);
    [DllImport(Lib)] internal static extern IntPtr pai_batch_norm_relu(TensorHandle x, IntPtr weight, IntPtr bias, IntPtr runningMean, IntPtr runningVar, byte training, double momentum, double eps);
    [DllImport(Lib)] internal static extern IntPtr pai_layer_norm(TensorHandle x, long* normalizedShape, int n, IntPtr weight, IntPtr bias, double eps);
    [DllImport(Lib)] internal static extern IntPtr pai_dropout(TensorHandle x, double p, byte training, IntPtr gen);
    [DllImport(Lib)] internal static extern IntPtr pai_relu(TensorHandle x);
    [DllImport(Lib)] internal static extern IntPtr pai_gelu(TensorHandle x, int approximate);
    [DllImport(Lib)] internal static extern IntPtr pai_softmax(TensorHandle x, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_log_softmax(TensorHandle x, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_cross_entropy(TensorHandle logits, TensorHandle target, long reduction, double labelSmoothing);
    [DllImport(Lib)] internal static extern IntPtr pai_nll_loss(TensorHandle logProbs, TensorHandle target, long reduction);
    [DllImport(Lib)] internal static extern IntPtr pai_mse_loss(TensorHandle input, TensorHandle target, long reduction);
}
