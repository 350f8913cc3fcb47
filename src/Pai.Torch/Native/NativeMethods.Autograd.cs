using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// Autograd (native/src/autograd.cpp).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern int pai_set_requires_grad(TensorHandle t, byte value);
    [DllImport(Lib)] internal static extern byte pai_requires_grad(TensorHandle t);
    [DllImport(Lib)] internal static extern IntPtr pai_grad_of(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_clear_grad(TensorHandle t);
    [DllImport(Lib)] internal static extern IntPtr pai_detach(TensorHandle t);
    [DllImport(Lib)] internal static extern int pai_backward(TensorHandle output, IntPtr gradOutput, byte retainGraph, byte createGraph);
    [DllImport(Lib)] internal static extern int pai_autograd_grad(IntPtr* outputs, int nOutputs, IntPtr* inputs, int nInputs, IntPtr* gradOutputs, int retainGraph, byte createGraph, byte allowUnused, IntPtr* results);
    [DllImport(Lib)] internal static extern byte pai_grad_enabled();
    [DllImport(Lib)] internal static extern void pai_set_grad_enabled(byte enabled);
}
