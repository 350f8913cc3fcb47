using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>
/// Which weights of a masked layer are kept, in the compressed-row layout the sparse kernels read:
/// the kept weights of a weight [out, in, ...] taken row by row (row-major order, as
/// <c>weight.MaskedSelect(mask)</c> lists them), their row pointers and column indices within the
/// flattened row, and the transpose of that layout for the input gradient. Built once per mask;
/// a layer then trains only its value vector of <see cref="Kept"/> weights.
/// </summary>
public sealed unsafe class SparsePattern : IDisposable
{
    readonly Tensor rowPtr, cols, colPtr, colRows, colPerm, flatIndex;

    SparsePattern(long[] weightShape, Tensor[] parts)
    {
        WeightShape = weightShape;
        (rowPtr, cols, colPtr, colRows, colPerm) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
        Kept = cols.NumEl;
        var width = colPtr.NumEl - 1;
        var starts = rowPtr.ToArray<long>();
        var columns = cols.ToArray<long>();
        var flat = new long[columns.Length];
        for (var o = 0; o + 1 < starts.Length; o++)
            for (var k = starts[o]; k < starts[o + 1]; k++)
                flat[k] = o * width + columns[k];
        flatIndex = Libtorch.FromArray(flat).DetachFromScope();
    }

    /// <summary>The pattern of <paramref name="mask"/> (nonzero = kept), a CPU tensor shaped like the weight.</summary>
    public static SparsePattern FromMask(Tensor mask)
    {
        var raw = stackalloc IntPtr[5];
        Check(pai_sparse_pattern(mask.Handle, raw));
        // The five index tensors belong to the pattern, not to any open scope.
        var parts = new Tensor[5];
        for (var q = 0; q < 5; q++) parts[q] = new Tensor(raw[q]).DetachFromScope();
        return new SparsePattern(mask.Shape, parts);
    }

    /// <summary>The shape of the dense weight, e.g. [out, in] or [out, in, kh, kw].</summary>
    public long[] WeightShape { get; }

    /// <summary>How many weights are kept (the length of the value vector).</summary>
    public long Kept { get; }

    /// <summary>The fraction of the dense weight that is kept.</summary>
    public double Density
    {
        get
        {
            long total = 1;
            foreach (var d in WeightShape) total *= d;
            return total == 0 ? 0.0 : (double)Kept / total;
        }
    }

    /// <summary>The kept entries of a dense weight, in the pattern's order (gradients flow back to the weight).</summary>
    public Tensor Gather(Tensor weight) => weight.Reshape(-1).IndexSelect(0, flatIndex);

    /// <summary>The dense weight holding <paramref name="values"/> at kept positions and exact zeros elsewhere.</summary>
    public Tensor Scatter(Tensor values)
    {
        using var scope = new DisposeScope();
        var zeros = Libtorch.Zeros(WeightShape, values.DType, values.Device).Reshape(-1);
        return zeros.Scatter(0, flatIndex, values).Reshape(WeightShape).MoveToOuterScope();
    }

    /// <summary>
    /// The vector build the kernels run: by default the widest this CPU has
    /// (<see cref="CpuVectorPath"/>). Setting it is process-wide (tests run every build the CPU
    /// can); a build wider than the CPU's is refused.
    /// </summary>
    public static SparseVectorPath VectorPath
    {
        get => (SparseVectorPath)pai_sparse_vector_path();
        set => Check(pai_sparse_set_vector_path((int)value));
    }

    /// <summary>The widest vector build of the kernels this CPU runs.</summary>
    public static SparseVectorPath CpuVectorPath => (SparseVectorPath)pai_sparse_cpu_vector_path();

    /// <summary>
    /// The native kernels' revision, raised whenever a kernel gets faster or slower: a layout
    /// chosen by timing an older revision is timed again.
    /// </summary>
    public static int KernelRevision => pai_sparse_revision();

    internal TensorHandle RowPtr => rowPtr.Handle;
    internal TensorHandle Cols => cols.Handle;
    internal TensorHandle ColPtr => colPtr.Handle;
    internal TensorHandle ColRows => colRows.Handle;
    internal TensorHandle ColPerm => colPerm.Handle;

    /// <summary>Frees the index tensors.</summary>
    public void Dispose()
    {
        rowPtr.Dispose();
        cols.Dispose();
        colPtr.Dispose();
        colRows.Dispose();
        colPerm.Dispose();
        flatIndex.Dispose();
    }
}

/// <summary>The vector instructions a build of the sparse kernels uses (the wider, the faster on dense-enough layers).</summary>
public enum SparseVectorPath
{
    /// <summary>Plain C++ (the compiler's baseline vectors).</summary>
    Portable = 0,
    /// <summary>AVX2 and FMA: 8 floats per vector.</summary>
    Avx2 = 1,
    /// <summary>AVX-512 (F, VL, BW, DQ): 16 floats per vector; the rows layout stays at AVX2.</summary>
    Avx512 = 2,
}

/// <summary>How the sparse convolution lays out its operands; neither is faster everywhere, so measure.</summary>
public enum SparseConvLayout
{
    /// <summary>
    /// Input and gradients transposed to [C, H, W, N]: each kept weight multiplies a batch vector
    /// (a whole output row of them at stride 1). Best for small images and large batches.
    /// </summary>
    BatchInnermost = 0,
    /// <summary>The tensors as they are, [N, C, H, W]: each kept weight multiplies an image row; no transposes. Best for large images.</summary>
    Rows = 1,
}

public static unsafe partial class Functional
{
    /// <summary>
    /// x·Wᵀ + b with W sparse: the weight of <paramref name="pattern"/> holding <paramref name="values"/>
    /// (1-d, <see cref="SparsePattern.Kept"/> long) at its kept positions. The same result as
    /// <c>Linear(x, pattern.Scatter(values), bias)</c>, computed by the sparse kernels on the CPU;
    /// gradients flow to x and to the values (at kept positions only). No second derivative.
    /// With <paramref name="batchInnermost"/> (a 2-d x) the result is the kernels' own [out, batch]
    /// memory behind a transposed view: no copy back, and a next sparse layer reads it in place
    /// (see <see cref="SparseConv2d"/>).
    /// </summary>
    public static Tensor SparseLinear(Tensor x, Tensor values, SparsePattern pattern, Tensor? bias = null, bool batchInnermost = false)
    {
        if (pattern.WeightShape.Length != 2)
            throw new ArgumentException($"a sparse linear weight is [out, in], the pattern's is [{string.Join(", ", pattern.WeightShape)}]", nameof(pattern));
        var r = pai_sparse_linear(x.Handle, values.Handle, pattern.RowPtr, pattern.Cols, pattern.ColPtr, pattern.ColRows, pattern.ColPerm, Tensor.RawOrZero(bias), batchInnermost ? (byte)1 : (byte)0);
        GC.KeepAlive(bias);
        GC.KeepAlive(pattern);
        return Tensor.Wrap(r);
    }

    /// <summary>
    /// 2-d convolution (dilation 1, one group) with a sparse weight [out, in, kh, kw]: the same result as
    /// <c>Conv2d(x, pattern.Scatter(values), bias, stride, padding)</c>, computed by the sparse kernels
    /// on the CPU; gradients flow to x and to the values (at kept positions only). No second derivative.
    /// With <paramref name="batchInnermost"/> (and the batch-innermost layout) the result is the
    /// kernels' own [O, Ho, Wo, N] memory behind a permuted view: no copy back. Elementwise ops,
    /// max pooling and flattening keep that storage, and a sparse layer whose input arrives stored
    /// so reads it without a copy (and returns its input gradient stored so); other ops may copy it.
    /// </summary>
    public static Tensor SparseConv2d(Tensor x, Tensor values, SparsePattern pattern, Tensor? bias = null, int stride = 1, int padding = 0,
        SparseConvLayout layout = SparseConvLayout.BatchInnermost, bool batchInnermost = false)
    {
        var shape = ConvWeightShape(pattern);
        long* k = stackalloc long[] { shape[2], shape[3] };
        long* s = stackalloc long[] { stride, stride };
        long* p = stackalloc long[] { padding, padding };
        var r = pai_sparse_conv2d(x.Handle, values.Handle, pattern.RowPtr, pattern.Cols, pattern.ColPtr, pattern.ColRows, pattern.ColPerm, k, s, p, (int)layout, Tensor.RawOrZero(bias), batchInnermost ? (byte)1 : (byte)0);
        GC.KeepAlive(bias);
        GC.KeepAlive(pattern);
        return Tensor.Wrap(r);
    }

    /// <summary>
    /// <c>MaxPool2d(SparseConv2d(x, values, pattern, bias, stride, padding, BatchInnermost, true), pool)</c>
    /// (windows pool × pool, stride pool, no padding) in one pass, for evaluation: the output rows
    /// under each row of windows are pooled as they are computed, so the unpooled output is never
    /// written out. The same values, stored batch-innermost. It computes no gradient: where one is
    /// needed (grad mode on and x, the values or the bias requiring it) it throws; use the two ops.
    /// </summary>
    public static Tensor SparseConv2dMaxPool(Tensor x, Tensor values, SparsePattern pattern, Tensor? bias, int stride, int padding, int pool)
    {
        var shape = ConvWeightShape(pattern);
        long* k = stackalloc long[] { shape[2], shape[3] };
        long* s = stackalloc long[] { stride, stride };
        long* p = stackalloc long[] { padding, padding };
        var r = pai_sparse_conv2d_max_pool(x.Handle, values.Handle, pattern.RowPtr, pattern.Cols, pattern.ColPtr, pattern.ColRows, pattern.ColPerm, k, s, p, Tensor.RawOrZero(bias), pool);
        GC.KeepAlive(bias);
        GC.KeepAlive(pattern);
        return Tensor.Wrap(r);
    }

    // [out, in, kh, kw], or the error that names the pattern's shape.
    static long[] ConvWeightShape(SparsePattern pattern)
    {
        var shape = pattern.WeightShape;
        if (shape.Length != 4)
            throw new ArgumentException($"a sparse conv2d weight is [out, in, kh, kw], the pattern's is [{string.Join(", ", shape)}]", nameof(pattern));
        return shape;
    }

    /// <summary>
    /// <paramref name="x"/> stored as <paramref name="like"/> (same shape) is: batch-innermost when
    /// <paramref name="like"/> is (an activation a sparse layer passed on), channels-last when it
    /// is (see <see cref="ChannelsLast"/>), else contiguous; a
    /// differentiable copy by the sparse kernels' transposes, or x itself when it is stored so
    /// already. For an elementwise op of the two, such as a residual sum: over two storages it
    /// walks one tensor with a large stride.
    /// </summary>
    public static Tensor StoredLike(Tensor x, Tensor like) => Tensor.Wrap(pai_stored_like(x.Handle, like.Handle));

    /// <summary>
    /// A float32 CPU image batch [N, C, H, W] stored channels-last ([N, H, W, C] in memory; a
    /// differentiable copy, or x itself when it is stored so already); any other tensor as it is.
    /// A convolution runs in its input's storage, and batch norm, ReLU, max pooling and residual
    /// sums keep it, so a model whose dense convolutions are faster channels-last converts its
    /// input once.
    /// </summary>
    public static Tensor ChannelsLast(Tensor x) => Tensor.Wrap(pai_channels_last(x.Handle));
}
