using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Tensor lifetime, creation, properties, copies, shape operations (native/src/tensor.cpp).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern void pai_tensor_dispose(IntPtr t);
    [DllImport(Lib)] internal static extern IntPtr pai_tensor_from_data(void* data, long* shape, int ndim, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_zeros(long* shape, int ndim, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_ones(long* shape, int ndim, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_empty(long* shape, int ndim, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_full(long* shape, int ndim, double value, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_arange(double start, double end, double step, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_randn(long* shape, int ndim, IntPtr gen, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_rand(long* shape, int ndim, IntPtr gen, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_randint(long low, long high, long* shape, int ndim, IntPtr gen, int dtype, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_randperm(long n, IntPtr gen, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_bernoulli(TensorHandle p, IntPtr gen);
    [DllImport(Lib)] internal static extern IntPtr pai_randn_like(TensorHandle t, IntPtr gen);
    [DllImport(Lib)] internal static extern IntPtr pai_rand_like(TensorHandle t, IntPtr gen);

    [DllImport(Lib)] internal static extern int pai_tensor_dim(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_tensor_shape(TensorHandle t, long* shape, int capacity);
    [DllImport(Lib)] internal static extern long pai_tensor_numel(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_tensor_dtype(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_tensor_device_type(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_tensor_device_index(TensorHandle t);
    [DllImport(Lib)] internal static extern byte pai_tensor_is_contiguous(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_tensor_copy_to(TensorHandle t, void* dst, long nbytes);
    [DllImport(Lib)] internal static extern double pai_tensor_item_double(TensorHandle t);
    [DllImport(Lib)] internal static extern long pai_tensor_item_long(TensorHandle t);

    [DllImport(Lib)] internal static extern IntPtr pai_to_dtype(TensorHandle t, int dtype);
    [DllImport(Lib)] internal static extern IntPtr pai_to_device(TensorHandle t, int deviceType, int deviceIndex);
    [DllImport(Lib)] internal static extern IntPtr pai_clone(TensorHandle t);
    [DllImport(Lib)] internal static extern IntPtr pai_contiguous(TensorHandle t);
    [DllImport(Lib)] internal static extern IntPtr pai_alias(TensorHandle t);

    [DllImport(Lib)] internal static extern IntPtr pai_view(TensorHandle t, long* shape, int n);
    [DllImport(Lib)] internal static extern IntPtr pai_reshape(TensorHandle t, long* shape, int n);
    [DllImport(Lib)] internal static extern IntPtr pai_expand(TensorHandle t, long* shape, int n);
    [DllImport(Lib)] internal static extern IntPtr pai_permute(TensorHandle t, long* dims, int n);
    [DllImport(Lib)] internal static extern IntPtr pai_transpose(TensorHandle t, long a, long b);
    [DllImport(Lib)] internal static extern IntPtr pai_flatten(TensorHandle t, long start, long end);
    [DllImport(Lib)] internal static extern IntPtr pai_unsqueeze(TensorHandle t, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_squeeze(TensorHandle t, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_narrow(TensorHandle t, long dim, long start, long length);
    [DllImport(Lib)] internal static extern IntPtr pai_select(TensorHandle t, long dim, long index);
    [DllImport(Lib)] internal static extern IntPtr pai_flip(TensorHandle t, long* dims, int n);
    [DllImport(Lib)] internal static extern IntPtr pai_cat(IntPtr* ts, int n, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_stack(IntPtr* ts, int n, long dim);
    [DllImport(Lib)] internal static extern IntPtr pai_index_select(TensorHandle t, long dim, TensorHandle index);
    [DllImport(Lib)] internal static extern IntPtr pai_gather(TensorHandle t, long dim, TensorHandle index);
    [DllImport(Lib)] internal static extern IntPtr pai_scatter(TensorHandle t, long dim, TensorHandle index, TensorHandle src);
    [DllImport(Lib)] internal static extern IntPtr pai_masked_select(TensorHandle t, TensorHandle mask);
    [DllImport(Lib)] internal static extern IntPtr pai_constant_pad(TensorHandle t, long* pads, int n, double value);
}
