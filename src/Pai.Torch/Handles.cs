using System.Runtime.InteropServices;
using Pai.Torch.Native;

namespace Pai.Torch;

/// <summary>Owns one native at::Tensor*. Its finalizer is only a backstop: dispose scopes free tensors deterministically.</summary>
internal sealed class TensorHandle : SafeHandle
{
    internal TensorHandle(IntPtr handle) : base(IntPtr.Zero, ownsHandle: true) => SetHandle(handle);
    public override bool IsInvalid => handle == IntPtr.Zero;
    protected override bool ReleaseHandle()
    {
        NativeMethods.pai_tensor_dispose(handle);
        return true;
    }
}

/// <summary>Owns one native at::Generator*.</summary>
internal sealed class GeneratorHandle : SafeHandle
{
    internal GeneratorHandle(IntPtr handle) : base(IntPtr.Zero, ownsHandle: true) => SetHandle(handle);
    public override bool IsInvalid => handle == IntPtr.Zero;
    protected override bool ReleaseHandle()
    {
        NativeMethods.pai_generator_dispose(handle);
        return true;
    }
}
