using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Sparse kernels for masked layers (native/src/sparse.cpp). Optional tensors are IntPtr (null = absent).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern int pai_sparse_pattern(TensorHandle mask, IntPtr* results);
    [DllImport(Lib)] internal static extern IntPtr pai_sparse_linear(TensorHandle x, TensorHandle values, TensorHandle rowPtr, TensorHandle cols, TensorHandle colPtr, TensorHandle colRows, TensorHandle colPerm, IntPtr bias, byte batchInnermost);
    [DllImport(Lib)] internal static extern IntPtr pai_sparse_conv2d(TensorHandle x, TensorHandle values, TensorHandle rowPtr, TensorHandle cols, TensorHandle colPtr, TensorHandle colRows, TensorHandle colPerm, long* kernel, long* stride, long* padding, int layout, IntPtr bias, byte batchInnermost);
    [DllImport(Lib)] internal static extern IntPtr pai_sparse_conv2d_max_pool(TensorHandle x, TensorHandle values, TensorHandle rowPtr, TensorHandle cols, TensorHandle colPtr, TensorHandle colRows, TensorHandle colPerm, long* kernel, long* stride, long* padding, IntPtr bias, long pool);
    [DllImport(Lib)] internal static extern IntPtr pai_stored_like(TensorHandle x, TensorHandle like);
    [DllImport(Lib)] internal static extern IntPtr pai_channels_last(TensorHandle x);
    [DllImport(Lib)] internal static extern int pai_sparse_vector_path();
    [DllImport(Lib)] internal static extern int pai_sparse_cpu_vector_path();
    [DllImport(Lib)] internal static extern int pai_sparse_revision();
    [DllImport(Lib)] internal static extern int pai_sparse_set_vector_path(int path);
}
