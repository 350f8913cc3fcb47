using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>torch.autograd.grad and the products built on it.</summary>
public static unsafe class Autograd
{
    /// <summary>
    /// Gradients of <paramref name="outputs"/> with respect to <paramref name="inputs"/>
    /// (torch.autograd.grad). <paramref name="gradOutputs"/> may be null for scalar outputs.
    /// <paramref name="retainGraph"/> defaults to <paramref name="createGraph"/>. An input the
    /// outputs do not depend on gives null when <paramref name="allowUnused"/>, an error otherwise.
    /// </summary>
    public static Tensor?[] Grad(IReadOnlyList<Tensor> outputs, IReadOnlyList<Tensor> inputs,
        IReadOnlyList<Tensor?>? gradOutputs = null, bool? retainGraph = null, bool createGraph = false, bool allowUnused = false)
    {
        if (gradOutputs is not null && gradOutputs.Count != outputs.Count)
            throw new ArgumentException($"{gradOutputs.Count} grad outputs given for {outputs.Count} outputs");
        var outs = Libtorch.Raw(outputs);
        var ins = Libtorch.Raw(inputs);
        var gouts = gradOutputs is null ? null : Libtorch.Raw(gradOutputs);
        var results = new IntPtr[ins.Length];
        int status;
        fixed (IntPtr* o = outs)
        fixed (IntPtr* i = ins)
        fixed (IntPtr* g = gouts)
        fixed (IntPtr* r = results)
        {
            status = pai_autograd_grad(o, outs.Length, i, ins.Length, gouts is null ? null : g,
                retainGraph is null ? 2 : retainGraph.Value ? 1 : 0, createGraph ? (byte)1 : (byte)0,
                allowUnused ? (byte)1 : (byte)0, r);
        }
        GC.KeepAlive(outputs);
        GC.KeepAlive(inputs);
        GC.KeepAlive(gradOutputs);
        Check(status);
        var grads = new Tensor?[results.Length];
        for (var k = 0; k < results.Length; k++)
            grads[k] = results[k] == IntPtr.Zero ? null : new Tensor(results[k]);
        return grads;
    }

    /// <summary>Gradient of a scalar with respect to each input (zeros for inputs it does not depend on).</summary>
    public static Tensor[] Grad(Tensor output, IReadOnlyList<Tensor> inputs, bool createGraph = false, bool? retainGraph = null)
    {
        var grads = Grad([output], inputs, null, retainGraph, createGraph, allowUnused: true);
        var result = new Tensor[grads.Length];
        for (var k = 0; k < grads.Length; k++)
            result[k] = grads[k] ?? Libtorch.Zeros(inputs[k].Shape, inputs[k].DType, inputs[k].Device);
        return result;
    }

    /// <summary>
    /// Hessian-vector products H·v of a scalar by double backward: the gradient (with a graph) is
    /// contracted with <paramref name="vectors"/> and differentiated again. One vector per input.
    /// Works whatever the caller's grad mode (the contraction must be recorded, so gradient
    /// recording is on inside, as in torch.autograd.functional.hvp); the caller's mode is restored.
    /// </summary>
    public static Tensor[] HessianVectorProduct(Tensor output, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> vectors, bool retainGraph = false)
    {
        if (vectors.Count != inputs.Count)
            throw new ArgumentException($"{vectors.Count} vectors given for {inputs.Count} inputs: HVP needs one vector per input");
        using var gradMode = Libtorch.EnableGrad();
        using var scope = new DisposeScope();
        var grads = Grad(output, inputs, createGraph: true, retainGraph: true);
        Tensor? dot = null;
        for (var k = 0; k < grads.Length; k++)
        {
            if (!grads[k].RequiresGrad) continue; // the gradient does not depend on the inputs: H·v is zero there
            using var p = grads[k] * vectors[k];
            var s = p.Sum();
            dot = dot is null ? s : dot + s;
        }
        var result = new Tensor[inputs.Count];
        if (dot is null)
        {
            for (var k = 0; k < result.Length; k++) result[k] = Libtorch.Zeros(inputs[k].Shape, inputs[k].DType, inputs[k].Device).MoveToOuterScope();
            return result;
        }
        var hv = Grad(dot, inputs, createGraph: false, retainGraph: retainGraph);
        for (var k = 0; k < result.Length; k++) result[k] = hv[k].MoveToOuterScope();
        return result;
    }
}
