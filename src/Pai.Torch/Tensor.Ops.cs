using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

// Arithmetic, math, comparisons, reductions, sorting and in-place updates.
public sealed unsafe partial class Tensor
{
    /// <summary>Elementwise sum (broadcasting).</summary>
    public static Tensor operator +(Tensor a, Tensor b) => Wrap(pai_add(a.handle, b.handle));
    /// <summary>Elementwise difference (broadcasting).</summary>
    public static Tensor operator -(Tensor a, Tensor b) => Wrap(pai_sub(a.handle, b.handle));
    /// <summary>Elementwise product (broadcasting).</summary>
    public static Tensor operator *(Tensor a, Tensor b) => Wrap(pai_mul(a.handle, b.handle));
    /// <summary>Elementwise quotient (broadcasting).</summary>
    public static Tensor operator /(Tensor a, Tensor b) => Wrap(pai_div(a.handle, b.handle));
    /// <summary>Negation.</summary>
    public static Tensor operator -(Tensor a) => Wrap(pai_neg(a.handle));
    /// <summary>Adds a scalar.</summary>
    public static Tensor operator +(Tensor a, double s) => Wrap(pai_add_scalar(a.handle, s));
    /// <summary>Adds a scalar.</summary>
    public static Tensor operator +(double s, Tensor a) => Wrap(pai_add_scalar(a.handle, s));
    /// <summary>Subtracts a scalar.</summary>
    public static Tensor operator -(Tensor a, double s) => Wrap(pai_sub_scalar(a.handle, s));
    /// <summary>Scalar minus tensor.</summary>
    public static Tensor operator -(double s, Tensor a) => Wrap(pai_rsub_scalar(a.handle, s));
    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(Tensor a, double s) => Wrap(pai_mul_scalar(a.handle, s));
    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(double s, Tensor a) => Wrap(pai_mul_scalar(a.handle, s));
    /// <summary>Divides by a scalar.</summary>
    public static Tensor operator /(Tensor a, double s) => Wrap(pai_div_scalar(a.handle, s));
    /// <summary>Scalar divided by tensor.</summary>
    public static Tensor operator /(double s, Tensor a) => Wrap(pai_rdiv_scalar(a.handle, s));

    /// <summary>Elementwise power.</summary>
    public Tensor Pow(Tensor exponent) => Wrap(pai_pow(handle, exponent.handle));
    /// <summary>Elementwise power.</summary>
    public Tensor Pow(double exponent) => Wrap(pai_pow_scalar(handle, exponent));
    /// <summary>Elementwise maximum.</summary>
    public Tensor Maximum(Tensor other) => Wrap(pai_maximum(handle, other.handle));
    /// <summary>Elementwise minimum.</summary>
    public Tensor Minimum(Tensor other) => Wrap(pai_minimum(handle, other.handle));
    /// <summary>Matrix product with torch.matmul's broadcasting rules.</summary>
    public Tensor MatMul(Tensor other) => Wrap(pai_matmul(handle, other.handle));

    /// <summary>Negation.</summary>
    public Tensor Neg() => Wrap(pai_neg(handle));
    /// <summary>Absolute value.</summary>
    public Tensor Abs() => Wrap(pai_abs(handle));
    /// <summary>Sign (-1, 0, 1).</summary>
    public Tensor Sign() => Wrap(pai_sign(handle));
    /// <summary>Square root.</summary>
    public Tensor Sqrt() => Wrap(pai_sqrt(handle));
    /// <summary>Exponential.</summary>
    public Tensor Exp() => Wrap(pai_exp(handle));
    /// <summary>Natural logarithm.</summary>
    public Tensor Log() => Wrap(pai_log(handle));
    /// <summary>Square.</summary>
    public Tensor Square() => Wrap(pai_square(handle));
    /// <summary>True where the element is neither infinite nor NaN.</summary>
    public Tensor IsFinite() => Wrap(pai_isfinite(handle));
    /// <summary>Logical not.</summary>
    public Tensor LogicalNot() => Wrap(pai_logical_not(handle));
    /// <summary>Logical and.</summary>
    public Tensor LogicalAnd(Tensor other) => Wrap(pai_logical_and(handle, other.handle));
    /// <summary>Logical or.</summary>
    public Tensor LogicalOr(Tensor other) => Wrap(pai_logical_or(handle, other.handle));
    /// <summary>Clamps into [min, max]; a null bound leaves that side open.</summary>
    public Tensor Clamp(double? min = null, double? max = null) =>
        Wrap(pai_clamp(handle, min ?? double.NaN, max ?? double.NaN));
    /// <summary>Elementwise choice: a where cond, else b.</summary>
    public static Tensor Where(Tensor cond, Tensor a, Tensor b) => Wrap(pai_where(cond.handle, a.handle, b.handle));

    /// <summary>Elementwise ==.</summary>
    public Tensor Eq(Tensor o) => Wrap(pai_eq(handle, o.handle));
    /// <summary>Elementwise !=.</summary>
    public Tensor Ne(Tensor o) => Wrap(pai_ne(handle, o.handle));
    /// <summary>Elementwise &lt;.</summary>
    public Tensor Lt(Tensor o) => Wrap(pai_lt(handle, o.handle));
    /// <summary>Elementwise &lt;=.</summary>
    public Tensor Le(Tensor o) => Wrap(pai_le(handle, o.handle));
    /// <summary>Elementwise &gt;.</summary>
    public Tensor Gt(Tensor o) => Wrap(pai_gt(handle, o.handle));
    /// <summary>Elementwise &gt;=.</summary>
    public Tensor Ge(Tensor o) => Wrap(pai_ge(handle, o.handle));
    /// <summary>Elementwise == scalar.</summary>
    public Tensor Eq(double s) => Wrap(pai_eq_scalar(handle, s));
    /// <summary>Elementwise != scalar.</summary>
    public Tensor Ne(double s) => Wrap(pai_ne_scalar(handle, s));
    /// <summary>Elementwise &lt; scalar.</summary>
    public Tensor Lt(double s) => Wrap(pai_lt_scalar(handle, s));
    /// <summary>Elementwise &lt;= scalar.</summary>
    public Tensor Le(double s) => Wrap(pai_le_scalar(handle, s));
    /// <summary>Elementwise &gt; scalar.</summary>
    public Tensor Gt(double s) => Wrap(pai_gt_scalar(handle, s));
    /// <summary>Elementwise &gt;= scalar.</summary>
    public Tensor Ge(double s) => Wrap(pai_ge_scalar(handle, s));
    /// <summary>Same shape and exactly the same values.</summary>
    public bool Equal(Tensor o)
    {
        var r = pai_equal(handle, o.handle);
        ThrowIfError();
        return r != 0;
    }
    /// <summary>|a - b| &lt;= atol + rtol |b| everywhere.</summary>
    public bool AllClose(Tensor o, double rtol = 1e-5, double atol = 1e-8)
    {
        var r = pai_allclose(handle, o.handle, rtol, atol);
        ThrowIfError();
        return r != 0;
    }

    // ---- reductions (no dims: over all elements) -------------------------------------------

    /// <summary>Sum over <paramref name="dims"/> (all when empty).</summary>
    public Tensor Sum(long[]? dims = null, bool keepDim = false) { fixed (long* p = dims) return Wrap(pai_sum(handle, p, dims?.Length ?? 0, B(keepDim))); }
    /// <summary>Sum over one dimension.</summary>
    public Tensor Sum(long dim, bool keepDim = false) => Sum([dim], keepDim);
    /// <summary>Mean over <paramref name="dims"/> (all when empty).</summary>
    public Tensor Mean(long[]? dims = null, bool keepDim = false) { fixed (long* p = dims) return Wrap(pai_mean(handle, p, dims?.Length ?? 0, B(keepDim))); }
    /// <summary>Mean over one dimension.</summary>
    public Tensor Mean(long dim, bool keepDim = false) => Mean([dim], keepDim);
    /// <summary>Variance over <paramref name="dims"/> (all when empty).</summary>
    public Tensor Var(long[]? dims = null, bool unbiased = true, bool keepDim = false) { fixed (long* p = dims) return Wrap(pai_var(handle, p, dims?.Length ?? 0, B(unbiased), B(keepDim))); }
    /// <summary>p-norm over <paramref name="dims"/> (all when empty).</summary>
    public Tensor Norm(double p = 2, long[]? dims = null, bool keepDim = false) { fixed (long* d = dims) return Wrap(pai_norm(handle, p, d, dims?.Length ?? 0, B(keepDim))); }
    /// <summary>Largest element.</summary>
    public Tensor Max() => Wrap(pai_max_all(handle));
    /// <summary>Smallest element.</summary>
    public Tensor Min() => Wrap(pai_min_all(handle));
    /// <summary>Largest values and their indices along a dimension.</summary>
    public (Tensor Values, Tensor Indices) Max(long dim, bool keepDim = false)
    {
        var v = pai_max_dim(handle, dim, B(keepDim), out var i);
        return (Wrap(v), Wrap(i));
    }
    /// <summary>Smallest values and their indices along a dimension.</summary>
    public (Tensor Values, Tensor Indices) Min(long dim, bool keepDim = false)
    {
        var v = pai_min_dim(handle, dim, B(keepDim), out var i);
        return (Wrap(v), Wrap(i));
    }
    /// <summary>Index of the largest element along a dimension.</summary>
    public Tensor ArgMax(long dim, bool keepDim = false) => Wrap(pai_argmax(handle, dim, B(keepDim)));
    /// <summary>Flat index of the largest element.</summary>
    public Tensor ArgMax() => Wrap(pai_argmax_all(handle));
    /// <summary>Number of non-zero elements.</summary>
    public long CountNonZero() { using var c = Wrap(pai_count_nonzero(handle)); return c.ItemLong(); }

    // ---- sorting -------------------------------------------------------------------------

    /// <summary>Sorted values and indices; stable keeps equal elements in position order.</summary>
    public (Tensor Values, Tensor Indices) Sort(long dim = -1, bool descending = false, bool stable = true)
    {
        var v = pai_sort(handle, dim, B(descending), B(stable), out var i);
        return (Wrap(v), Wrap(i));
    }
    /// <summary>Indices that sort the tensor; stable keeps equal elements in position order.</summary>
    public Tensor ArgSort(long dim = -1, bool descending = false, bool stable = true) =>
        Wrap(pai_argsort(handle, dim, B(descending), B(stable)));
    /// <summary>The k largest (or smallest) values and their indices.</summary>
    public (Tensor Values, Tensor Indices) TopK(long k, long dim = -1, bool largest = true, bool sorted = true)
    {
        var v = pai_topk(handle, k, dim, B(largest), B(sorted), out var i);
        return (Wrap(v), Wrap(i));
    }
    /// <summary>The k-th smallest value (1-based) and its index.</summary>
    public (Tensor Values, Tensor Indices) KthValue(long k, long dim = -1, bool keepDim = false)
    {
        var v = pai_kthvalue(handle, k, dim, B(keepDim), out var i);
        return (Wrap(v), Wrap(i));
    }

    // ---- in-place (return this) ------------------------------------------------------------

    /// <summary>this += alpha · other.</summary>
    public Tensor Add_(Tensor other, double alpha = 1) { Check(pai_add_(handle, other.handle, alpha)); return this; }
    /// <summary>this += s.</summary>
    public Tensor Add_(double s) { Check(pai_add_scalar_(handle, s)); return this; }
    /// <summary>this *= other.</summary>
    public Tensor Mul_(Tensor other) { Check(pai_mul_(handle, other.handle)); return this; }
    /// <summary>this *= s.</summary>
    public Tensor Mul_(double s) { Check(pai_mul_scalar_(handle, s)); return this; }
    /// <summary>this /= other.</summary>
    public Tensor Div_(Tensor other) { Check(pai_div_(handle, other.handle)); return this; }
    /// <summary>this += value · t1 · t2.</summary>
    public Tensor AddCMul_(Tensor t1, Tensor t2, double value = 1) { Check(pai_addcmul_(handle, t1.handle, t2.handle, value)); return this; }
    /// <summary>this += value · t1 / t2.</summary>
    public Tensor AddCDiv_(Tensor t1, Tensor t2, double value = 1) { Check(pai_addcdiv_(handle, t1.handle, t2.handle, value)); return this; }
    /// <summary>Sets every element to zero.</summary>
    public Tensor Zero_() { Check(pai_zero_(handle)); return this; }
    /// <summary>Sets every element to s.</summary>
    public Tensor Fill_(double s) { Check(pai_fill_(handle, s)); return this; }
    /// <summary>Copies src's values into this tensor (broadcasting).</summary>
    public Tensor Copy_(Tensor src) { Check(pai_copy_(handle, src.handle)); return this; }
    /// <summary>Sets elements where mask is true to value.</summary>
    public Tensor MaskedFill_(Tensor mask, double value) { Check(pai_masked_fill_(handle, mask.handle, value)); return this; }
    /// <summary>In-place square root.</summary>
    public Tensor Sqrt_() { Check(pai_sqrt_(handle)); return this; }
    /// <summary>In-place absolute value.</summary>
    public Tensor Abs_() { Check(pai_abs_(handle)); return this; }
    /// <summary>In-place lower clamp.</summary>
    public Tensor ClampMin_(double min) { Check(pai_clamp_min_(handle, min)); return this; }
    /// <summary>Fills with N(mean, std²) draws from a generator (null: the global one).</summary>
    public Tensor Normal_(double mean = 0, double std = 1, Generator? generator = null)
    {
        Check(pai_normal_(handle, mean, std, Generator.RawOrZero(generator)));
        GC.KeepAlive(generator);
        return this;
    }
    /// <summary>Fills with U(from, to) draws from a generator (null: the global one).</summary>
    public Tensor Uniform_(double from = 0, double to = 1, Generator? generator = null)
    {
        Check(pai_uniform_(handle, from, to, Generator.RawOrZero(generator)));
        GC.KeepAlive(generator);
        return this;
    }
}
