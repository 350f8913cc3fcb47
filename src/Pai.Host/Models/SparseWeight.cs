
namespace Pai.Host.Models;

/// <summary>
/// A masked layer's weight as the sparse kernels hold it: the pattern of kept positions and the
/// trainable vector of kept values (a leaf requiring gradients; the optimizer sees only it, so its
/// state exists only for kept weights and pruned weights are zero by construction).
/// </summary>
public sealed class SparseWeight : IDisposable
{
    /// <summary>Takes the kept entries of <paramref name="weight"/> (pruned ones must already be zero).</summary>
    internal SparseWeight(Tensor weight, Tensor mask, SparseConvLayout layout, bool batchInnermost = false)
    {
        Pattern = SparsePattern.FromMask(mask);
        using (var scope = new DisposeScope())
        using (Libtorch.NoGrad())
            Values = Pattern.Gather(weight).Contiguous().DetachFromScope();
        Values.RequiresGrad = true;
        Layout = layout;
        BatchInnermost = batchInnermost;
    }

    /// <summary>The kept positions.</summary>
    public SparsePattern Pattern { get; }

    /// <summary>The kept weights in the pattern's order: the layer's trainable parameter while sparse.</summary>
    public Tensor Values { get; }

    /// <summary>The convolution layout the calibration chose (unused by linear layers).</summary>
    public SparseConvLayout Layout { get; }

    /// <summary>Whether the layer passes its output on stored batch-innermost (<see cref="Model.PassesBatchInnermost"/>).</summary>
    public bool BatchInnermost { get; }

    /// <summary>Writes the values into the dense <paramref name="weight"/>, with exact zeros at pruned positions.</summary>
    internal void WriteBack(Tensor weight)
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        weight.Copy_(Pattern.Scatter(Values));
    }

    /// <summary>Frees the values and the pattern.</summary>
    public void Dispose()
    {
        Values.Dispose();
        Pattern.Dispose();
    }
}
