
namespace Pai.Host.Training;

/// <summary>An optimizer over a fixed list of parameters; its state lives outside dispose scopes.</summary>
internal interface IOptimizer : IDisposable
{
    /// <summary>
    /// One update with the parameters' current gradients (already masked). The gradients are
    /// scratch space afterwards (the trainer clears them before the next backward).
    /// </summary>
    void Step(double learningRate);
}

/// <summary>
/// SGD with PyTorch's semantics and arithmetic: d = g + wd·θ; buf = μ·buf + d;
/// d = nesterov ? d + μ·buf : buf; θ -= lr·d. The same four kernels per parameter as
/// torch.optim.SGD (adds with alpha, so the roundings match), computed in place: d overwrites the
/// gradient instead of allocating a weight-sized temporary per parameter and step.
/// </summary>
internal sealed class Sgd(IReadOnlyList<Tensor> parameters, double momentum, bool nesterov, double weightDecay) : IOptimizer
{
    readonly Tensor?[] buffers = new Tensor?[parameters.Count];

    public void Step(double lr)
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        for (var i = 0; i < parameters.Count; i++)
        {
            var p = parameters[i];
            var d = p.Grad;
            if (d is null) continue;
            if (weightDecay != 0) d.Add_(p, weightDecay);
            if (momentum != 0)
            {
                if (buffers[i] is null) buffers[i] = d.Clone().DetachFromScope();
                else buffers[i]!.Mul_(momentum).Add_(d);
                d = nesterov ? d.Add_(buffers[i]!, momentum) : buffers[i]!;
            }
            p.Add_(d, -lr);
        }
    }

    public void Dispose()
    {
        foreach (var b in buffers) b?.Dispose();
    }
}

/// <summary>AdamW (Loshchilov and Hutter): θ ← θ(1 − lr·wd), then the bias-corrected Adam step.</summary>
internal sealed class AdamW(IReadOnlyList<Tensor> parameters, double beta1, double beta2, double eps, double weightDecay) : IOptimizer
{
    readonly Tensor?[] m = new Tensor?[parameters.Count];
    readonly Tensor?[] v = new Tensor?[parameters.Count];
    int t;

    public void Step(double lr)
    {
        t++;
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var bc1 = 1 - Math.Pow(beta1, t);
        var bc2 = 1 - Math.Pow(beta2, t);
        for (var i = 0; i < parameters.Count; i++)
        {
            var p = parameters[i];
            var g = p.Grad;
            if (g is null) continue;
            m[i] ??= Libtorch.Zeros(p.Shape, p.DType, p.Device).DetachFromScope();
            v[i] ??= Libtorch.Zeros(p.Shape, p.DType, p.Device).DetachFromScope();
            if (weightDecay != 0) p.Mul_(1 - lr * weightDecay);
            m[i]!.Mul_(beta1).Add_(g, 1 - beta1);
            v[i]!.Mul_(beta2).AddCMul_(g, g, 1 - beta2);
            var denom = (v[i]!.Sqrt() / Math.Sqrt(bc2)).Add_(eps);
            p.AddCDiv_(m[i]!, denom, -lr / bc1);
        }
    }

    public void Dispose()
    {
        foreach (var x in m) x?.Dispose();
        foreach (var x in v) x?.Dispose();
    }
}
