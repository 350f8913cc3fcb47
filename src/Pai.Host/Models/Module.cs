
namespace Pai.Host.Models;

/// <summary>
/// A layer or model: named parameters, buffers and sub-modules, a train/eval mode and a forward
/// function over <see cref="Functional"/> ops. A module owns its tensors (they live outside any
/// dispose scope) and frees them when disposed.
/// </summary>
public abstract class Module : IDisposable
{
    readonly List<(string Name, Tensor Tensor, bool Prunable)> parameters = new();
    readonly List<(string Name, Tensor Tensor)> buffers = new();
    readonly List<(string Name, Module Module)> children = new();
    bool training = true;

    /// <summary>Logits (or features) for an input batch.</summary>
    public abstract Tensor Forward(Tensor x);

    /// <summary>Registers a trainable parameter: the module takes ownership and marks it as a leaf requiring gradients.</summary>
    protected Tensor RegisterParameter(string name, Tensor tensor, bool prunable = false)
    {
        var leaf = tensor.DetachFromScope();
        leaf.RequiresGrad = true;
        parameters.Add((name, leaf, prunable));
        return leaf;
    }

    /// <summary>Registers a buffer (running statistics, …): owned, no gradients.</summary>
    protected Tensor RegisterBuffer(string name, Tensor tensor)
    {
        var b = tensor.DetachFromScope();
        buffers.Add((name, b));
        return b;
    }

    /// <summary>Registers a sub-module whose parameters are named "name.…".</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        children.Add((name, module));
        return module;
    }

    /// <summary>Every parameter, recursively, with dotted names in registration order.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedParameters() =>
        NamedParametersWithFlags().Select(p => (p.Name, p.Tensor));

    /// <summary>The parameters registered as prunable (conv and linear weights), recursively.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedPrunable() =>
        NamedParametersWithFlags().Where(p => p.Prunable).Select(p => (p.Name, p.Tensor));

    IEnumerable<(string Name, Tensor Tensor, bool Prunable)> NamedParametersWithFlags()
    {
        foreach (var p in parameters) yield return p;
        foreach (var (childName, child) in children)
            foreach (var (n, t, pr) in child.NamedParametersWithFlags())
                yield return ($"{childName}.{n}", t, pr);
    }

    /// <summary>Every buffer, recursively, with dotted names.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedBuffers()
    {
        foreach (var b in buffers) yield return b;
        foreach (var (childName, child) in children)
            foreach (var (n, t) in child.NamedBuffers())
                yield return ($"{childName}.{n}", t);
    }

    /// <summary>Direct sub-modules.</summary>
    public IEnumerable<(string Name, Module Module)> Children => children;

    /// <summary>Train mode (batch statistics, dropout) or eval mode; set recursively.</summary>
    public bool Training
    {
        get => training;
        set
        {
            training = value;
            foreach (var (_, c) in children) c.Training = value;
        }
    }

    /// <summary>Number of scalar parameters.</summary>
    public long ParameterCount => NamedParameters().Sum(p => p.Tensor.NumEl);

    /// <summary>Frees every parameter and buffer, recursively.</summary>
    public virtual void Dispose()
    {
        foreach (var (_, t, _) in parameters) t.Dispose();
        foreach (var (_, t) in buffers) t.Dispose();
        foreach (var (_, c) in children) c.Dispose();
        GC.SuppressFinalize(this);
    }
}
