using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Arithmetic, math, comparisons, reductions, sorting, in-place updates (native/src/ops.cpp).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern IntPtr pai_add(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_sub(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_mul(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_div(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_pow(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_maximum(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_minimum(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_matmul(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_add_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_sub_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_rsub_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_mul_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_div_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_rdiv_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_pow_scalar(TensorHandle a, double s);

    [DllImport(Lib)] internal static extern IntPtr pai_neg(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_abs(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_sign(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_sqrt(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_exp(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_log(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_square(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_isfinite(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_logical_not(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_logical_and(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_logical_or(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_clamp(TensorHandle a, double lo, double hi);
    [DllImport(Lib)] internal static extern IntPtr pai_where(TensorHandle cond, TensorHandle a, TensorHandle b);

    [DllImport(Lib)] internal static extern IntPtr pai_eq(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_ne(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_lt(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_le(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_gt(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_ge(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern IntPtr pai_eq_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_ne_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_lt_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_le_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_gt_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern IntPtr pai_ge_scalar(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern byte pai_equal(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern byte pai_allclose(TensorHandle a, TensorHandle b, double rtol, double atol);

    [DllImport(Lib)] internal static extern IntPtr pai_sum(TensorHandle a, long* dims, int n, byte keepdim);
    [DllImport(Lib)] internal static extern IntPtr pai_mean(TensorHandle a, long* dims, int n, byte keepdim);
    [DllImport(Lib)] internal static extern IntPtr pai_var(TensorHandle a, long* dims, int n, byte unbiased, byte keepdim);
    [DllImport(Lib)] internal static extern IntPtr pai_norm(TensorHandle a, double p, long* dims, int n, byte keepdim);
    [DllImport(Lib)] internal static extern IntPtr pai_max_all(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_min_all(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_max_dim(TensorHandle a, long dim, byte keepdim, out IntPtr indices);
    [DllImport(Lib)] internal static extern IntPtr pai_min_dim(TensorHandle a, long dim, byte keepdim, out IntPtr indices);
    [DllImport(Lib)] internal static extern IntPtr pai_argmax(TensorHandle a, long dim, byte keepdim);
    [DllImport(Lib)] internal static extern IntPtr pai_argmax_all(TensorHandle a);
    [DllImport(Lib)] internal static extern IntPtr pai_count_nonzero(TensorHandle a);

    [DllImport(Lib)] internal static extern IntPtr pai_sort(TensorHandle a, long dim, byte descending, byte stable, out IntPtr indices);
    [DllImport(Lib)] internal static extern IntPtr pai_argsort(TensorHandle a, long dim, byte descending, byte stable);
    [DllImport(Lib)] internal static extern IntPtr pai_topk(TensorHandle a, long k, long dim, byte largest, byte sorted, out IntPtr indices);
    [DllImport(Lib)] internal static extern IntPtr pai_kthvalue(TensorHandle a, long k, long dim, byte keepdim, out IntPtr indices);

    [DllImport(Lib)] internal static extern int pai_add_(TensorHandle a, TensorHandle b, double alpha);
    [DllImport(Lib)] internal static extern int pai_add_scalar_(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern int pai_mul_(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern int pai_mul_scalar_(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern int pai_div_(TensorHandle a, TensorHandle b);
    [DllImport(Lib)] internal static extern int pai_addcmul_(TensorHandle a, TensorHandle t1, TensorHandle t2, double value);
    [DllImport(Lib)] internal static extern int pai_addcdiv_(TensorHandle a, TensorHandle t1, TensorHandle t2, double value);
    [DllImport(Lib)] internal static extern int pai_zero_(TensorHandle a);
    [DllImport(Lib)] internal static extern int pai_fill_(TensorHandle a, double s);
    [DllImport(Lib)] internal static extern int pai_copy_(TensorHandle a, TensorHandle src);
    [DllImport(Lib)] internal static extern int pai_masked_fill_(TensorHandle a, TensorHandle mask, double value);
    [DllImport(Lib)] internal static extern int pai_sqrt_(TensorHandle a);
    [DllImport(Lib)] internal static extern int pai_abs_(TensorHandle a);
    [DllImport(Lib)] internal static extern int pai_clamp_min_(TensorHandle a, double lo);
    [DllImport(Lib)] internal static extern int pai_normal_(TensorHandle a, double mean, double std, IntPtr gen);
    [DllImport(Lib)] internal static extern int pai_uniform_(TensorHandle a, double from, double to, IntPtr gen);
}
