using System.Runtime.CompilerServices;
using Pai.Torch.Native;
using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>
/// A libtorch tensor. Every operation returns a new tensor, owned by the innermost open
/// <see cref="DisposeScope"/> (or by the caller when none is open); inputs are never consumed.
/// </summary>
public sealed unsafe partial class Tensor : IDisposable
{
    readonly TensorHandle handle;

    internal Tensor(IntPtr ptr)
    {
        handle = new TensorHandle(ptr);
        DisposeScope.Current?.Adopt(this);
    }

    /// <summary>Wraps a native result: throws the pending libtorch error when null.</summary>
    internal static Tensor Wrap(IntPtr ptr)
    {
        if (ptr == IntPtr.Zero)
        {
            ThrowIfError();
            throw new TorchException("libtorch returned an undefined tensor");
        }
        return new Tensor(ptr);
    }

    /// <summary>Wraps a native result that may legitimately be undefined (null).</summary>
    internal static Tensor? WrapOptional(IntPtr ptr)
    {
        if (ptr == IntPtr.Zero)
        {
            ThrowIfError();
            return null;
        }
        return new Tensor(ptr);
    }

    internal TensorHandle Handle => handle;

    /// <summary>
    /// The raw pointer of an optional tensor (zero when null). Pair with GC.KeepAlive. A disposed
    /// tensor throws here: its pointer is freed, and passing it on would be a use after free
    /// (SafeHandle marshalling only guards the required, TensorHandle-typed arguments).
    /// </summary>
    internal static IntPtr RawOrZero(Tensor? t)
    {
        if (t is null) return IntPtr.Zero;
        if (t.handle.IsClosed) throw new ObjectDisposedException(nameof(Tensor), "an optional tensor argument was already disposed");
        return t.handle.DangerousGetHandle();
    }

    internal DisposeScope? Scope { get; set; }

    /// <summary>True once the native tensor has been freed.</summary>
    public bool IsDisposed => handle.IsClosed;

    /// <summary>Frees the native tensor now.</summary>
    public void Dispose() => handle.Dispose();

    /// <summary>Moves this tensor from its scope to the enclosing scope (or to the caller when there is none).</summary>
    public Tensor MoveToOuterScope()
    {
        var outer = Scope?.Parent;
        Scope = null;
        outer?.Adopt(this);
        return this;
    }

    /// <summary>Takes this tensor out of every scope: the caller now owns it and must dispose it.</summary>
    public Tensor DetachFromScope()
    {
        Scope = null;
        return this;
    }

    // ---- properties ----------------------------------------------------------------------

    /// <summary>Number of dimensions.</summary>
    public int Dim
    {
        get
        {
            var d = pai_tensor_dim(handle);
            if (d < 0) ThrowIfError();
            return d;
        }
    }

    /// <summary>The sizes of all dimensions.</summary>
    public long[] Shape
    {
        get
        {
            var shape = new long[Dim];
            fixed (long* p = shape) Check(pai_tensor_shape(handle, p, shape.Length));
            return shape;
        }
    }

    /// <summary>Size of dimension <paramref name="dim"/> (negative counts from the end).</summary>
    public long Size(int dim)
    {
        var shape = Shape;
        var d = dim < 0 ? dim + shape.Length : dim;
        if (d < 0 || d >= shape.Length)
            throw new ArgumentOutOfRangeException(nameof(dim), $"dimension {dim} out of range for a {shape.Length}-d tensor");
        return shape[d];
    }

    /// <summary>Number of elements.</summary>
    public long NumEl
    {
        get
        {
            var n = pai_tensor_numel(handle);
            if (n < 0) ThrowIfError();
            return n;
        }
    }

    /// <summary>Element type.</summary>
    public DType DType => DTypes.FromNative(pai_tensor_dtype(handle));

    /// <summary>Device the tensor lives on.</summary>
    public Device Device => new((DeviceType)pai_tensor_device_type(handle), pai_tensor_device_index(handle));

    /// <summary>True when the elements are laid out contiguously in row-major order.</summary>
    public bool IsContiguous => pai_tensor_is_contiguous(handle) != 0;

    /// <inheritdoc/>
    public override string ToString() =>
        IsDisposed ? "Tensor(disposed)" : $"Tensor[{string.Join("x", Shape)}, {DType}, {Device}]";

    // ---- copying out ---------------------------------------------------------------------

    /// <summary>Copies the elements out (row-major) as <typeparamref name="T"/>, which must match the dtype.</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        var dtype = DType;
        if (sizeof(T) != dtype.ElementSize() || !Matches<T>(dtype))
            throw new ArgumentException($"ToArray<{typeof(T).Name}> does not match the tensor's dtype {dtype}; convert with To(DType) first");
        var result = new T[NumEl];
        fixed (T* p = result) Check(pai_tensor_copy_to(handle, p, (long)result.Length * sizeof(T)));
        return result;
    }

    internal static bool Matches<T>(DType d) where T : unmanaged =>
        d switch
        {
            DType.Float32 => typeof(T) == typeof(float),
            DType.Float64 => typeof(T) == typeof(double),
            DType.Int64 => typeof(T) == typeof(long),
            DType.Int32 => typeof(T) == typeof(int),
            DType.UInt8 => typeof(T) == typeof(byte),
            DType.Bool => typeof(T) == typeof(bool),
            _ => false,
        };

    /// <summary>The single element as a double.</summary>
    public double Item()
    {
        var v = pai_tensor_item_double(handle);
        ThrowIfError();
        return v;
    }

    /// <summary>The single element as a long.</summary>
    public long ItemLong()
    {
        var v = pai_tensor_item_long(handle);
        ThrowIfError();
        return v;
    }

    // ---- conversion ----------------------------------------------------------------------

    /// <summary>Converts to another dtype (a copy unless it already has it).</summary>
    public Tensor To(DType dtype) => Wrap(pai_to_dtype(handle, (int)dtype));
    /// <summary>Moves to a device.</summary>
    public Tensor To(Device device) => Wrap(pai_to_device(handle, (int)device.Type, device.Index));
    /// <summary>A copy with its own storage.</summary>
    public Tensor Clone() => Wrap(pai_clone(handle));
    /// <summary>A contiguous tensor with the same values.</summary>
    public Tensor Contiguous() => Wrap(pai_contiguous(handle));
    /// <summary>A second handle to the same tensor (same storage, same autograd identity).</summary>
    public Tensor Alias() => Wrap(pai_alias(handle));

    // ---- shape ---------------------------------------------------------------------------

    /// <summary>A view with another shape (-1 infers one size).</summary>
    public Tensor View(params long[] shape) { fixed (long* p = shape) return Wrap(pai_view(handle, p, shape.Length)); }
    /// <summary>Reshape (a view when possible).</summary>
    public Tensor Reshape(params long[] shape) { fixed (long* p = shape) return Wrap(pai_reshape(handle, p, shape.Length)); }
    /// <summary>Broadcast view to a larger shape.</summary>
    public Tensor Expand(params long[] shape) { fixed (long* p = shape) return Wrap(pai_expand(handle, p, shape.Length)); }
    /// <summary>Reorders dimensions.</summary>
    public Tensor Permute(params long[] dims) { fixed (long* p = dims) return Wrap(pai_permute(handle, p, dims.Length)); }
    /// <summary>Swaps two dimensions.</summary>
    public Tensor Transpose(long a, long b) => Wrap(pai_transpose(handle, a, b));
    /// <summary>Flattens dimensions start..end into one.</summary>
    public Tensor Flatten(long start = 0, long end = -1) => Wrap(pai_flatten(handle, start, end));
    /// <summary>Inserts a dimension of size one.</summary>
    public Tensor Unsqueeze(long dim) => Wrap(pai_unsqueeze(handle, dim));
    /// <summary>Removes a dimension of size one.</summary>
    public Tensor Squeeze(long dim) => Wrap(pai_squeeze(handle, dim));
    /// <summary>The slice [start, start+length) of a dimension (a view).</summary>
    public Tensor Narrow(long dim, long start, long length) => Wrap(pai_narrow(handle, dim, start, length));
    /// <summary>Index <paramref name="index"/> of dimension <paramref name="dim"/>, which is removed (a view).</summary>
    public Tensor Select(long dim, long index) => Wrap(pai_select(handle, dim, index));
    /// <summary>Reverses the order along dimensions.</summary>
    public Tensor Flip(params long[] dims) { fixed (long* p = dims) return Wrap(pai_flip(handle, p, dims.Length)); }
    /// <summary>Entries at <paramref name="index"/> (int64) along a dimension.</summary>
    public Tensor IndexSelect(long dim, Tensor index) => Wrap(pai_index_select(handle, dim, index.handle));
    /// <summary>torch.gather.</summary>
    public Tensor Gather(long dim, Tensor index) => Wrap(pai_gather(handle, dim, index.handle));
    /// <summary>torch.scatter (out of place).</summary>
    public Tensor Scatter(long dim, Tensor index, Tensor src) => Wrap(pai_scatter(handle, dim, index.handle, src.handle));
    /// <summary>The elements where <paramref name="mask"/> is true, as a 1-d tensor.</summary>
    public Tensor MaskedSelect(Tensor mask) => Wrap(pai_masked_select(handle, mask.handle));
    /// <summary>Constant padding of the last dimensions: (left, right, top, bottom, …) as torch.nn.functional.pad.</summary>
    public Tensor Pad(long[] pads, double value = 0)
    {
        fixed (long* p = pads) return Wrap(pai_constant_pad(handle, p, pads.Length, value));
    }

    // ---- autograd ------------------------------------------------------------------------

    /// <summary>Whether autograd records operations on this tensor.</summary>
    public bool RequiresGrad
    {
        get => pai_requires_grad(handle) != 0;
        set => Check(pai_set_requires_grad(handle, value ? (byte)1 : (byte)0));
    }

    /// <summary>Sets <see cref="RequiresGrad"/> and returns this tensor, for chaining.</summary>
    public Tensor RequiresGrad_(bool value = true)
    {
        RequiresGrad = value;
        return this;
    }

    /// <summary>The gradient accumulated by <see cref="Backward"/>, or null.</summary>
    public Tensor? Grad => WrapOptional(pai_grad_of(handle));

    /// <summary>Drops the accumulated gradient.</summary>
    public void ClearGrad() => Check(pai_clear_grad(handle));

    /// <summary>The same values cut from the autograd graph.</summary>
    public Tensor Detach() => Wrap(pai_detach(handle));

    /// <summary>Accumulates gradients of this tensor into the leaves' <see cref="Grad"/>.</summary>
    public void Backward(Tensor? gradOutput = null, bool retainGraph = false, bool createGraph = false)
    {
        Check(pai_backward(handle, RawOrZero(gradOutput), retainGraph ? (byte)1 : (byte)0, createGraph ? (byte)1 : (byte)0));
        GC.KeepAlive(gradOutput);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static byte B(bool b) => b ? (byte)1 : (byte)0;
}
