using System.Runtime.InteropServices;
using Pai.Torch.Native;

namespace Pai.Torch;

/// <summary>
/// Owns one native object, freed once by <see cref="Free"/>. Finalizers are only a backstop:
/// dispose scopes and Dispose free native objects deterministically.
/// </summary>
internal abstract class NativeHandle : SafeHandle
{
    protected NativeHandle(IntPtr handle) : base(IntPtr.Zero, ownsHandle: true) => SetHandle(handle);
    public override bool IsInvalid => handle == IntPtr.Zero;
    /// <summary>Frees the native object.</summary>
    protected abstract void Free(IntPtr handle);
    protected override bool ReleaseHandle()
    {
        Free(handle);
        return true;
    }
}

/// <summary>Owns one native at::Tensor*.</summary>
internal sealed class TensorHandle(IntPtr handle) : NativeHandle(handle)
{
    protected override void Free(IntPtr h) => NativeMethods.pai_tensor_dispose(h);
}

/// <summary>Owns one native at::Generator*.</summary>
internal sealed class GeneratorHandle(IntPtr handle) : NativeHandle(handle)
{
    protected override void Free(IntPtr h) => NativeMethods.pai_generator_dispose(h);
}
