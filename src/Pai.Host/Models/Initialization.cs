
namespace Pai.Host.Models;

/// <summary>A layer that can (re)draw its own parameters; <see cref="Model.Initialize"/> visits these in order.</summary>
public interface IInitializable
{
    /// <summary>Redraws the parameters with <paramref name="scheme"/>, consuming <paramref name="generator"/>.</summary>
    void ResetParameters(WeightInit scheme, Generator generator);
}

/// <summary>
/// Fills tensors in place with initial values. Values are drawn on the CPU from the given
/// generator (then moved), so one seed gives the same weights on every device.
/// </summary>
public static class Initialization
{
    /// <summary>TensorFlow's correction: the standard deviation of N(0,1) truncated to [−2, 2].</summary>
    public const double TruncatedNormalStd = 0.87962566103423978;

    /// <summary>
    /// The fan-in of a weight as PyTorch computes it: size(1) times the receptive field
    /// (in_features for [out, in]; in_channels/groups·kh·kw for [out, in/groups, kh, kw]).
    /// </summary>
    public static long FanIn(Tensor weight)
    {
        var shape = weight.Shape;
        if (shape.Length < 2)
            throw new ArgumentException($"fan-in needs a weight with at least 2 dimensions, got [{string.Join(", ", shape)}]");
        long fan = 1;
        for (var i = 1; i < shape.Length; i++) fan *= shape[i];
        return fan;
    }

    /// <summary>Fills a conv or linear weight with <paramref name="scheme"/> (see <see cref="WeightInit"/>).</summary>
    public static void FillWeight(Tensor weight, WeightInit scheme, Generator generator)
    {
        var fanIn = FanIn(weight);
        switch (scheme)
        {
            case WeightInit.KaimingNormal:
                FillNormal(weight, Math.Sqrt(2.0 / fanIn), generator);
                break;
            case WeightInit.VarianceScaling:
                FillTruncatedNormal(weight, Math.Sqrt(1.0 / fanIn) / TruncatedNormalStd, generator);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(scheme), scheme, "unknown weight initialization");
        }
    }

    /// <summary>Fills with N(0, std²).</summary>
    public static void FillNormal(Tensor t, double std, Generator generator)
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var z = Libtorch.Randn(t.Shape, generator, t.DType, t.Device);
        t.Copy_(z * std);
    }

    /// <summary>
    /// Fills with std·z where z is a standard normal truncated to [−2, 2] (TensorFlow's
    /// truncated_normal): out-of-range draws are redrawn from the generator until none is left.
    /// </summary>
    public static void FillTruncatedNormal(Tensor t, double std, Generator generator)
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var shape = t.Shape;
        var z = Libtorch.Randn(shape, generator, t.DType, t.Device);
        while (true)
        {
            var outside = z.Abs().Gt(2.0);
            if (outside.CountNonZero() == 0) break;
            var fresh = Libtorch.Randn(shape, generator, t.DType, t.Device);
            z = Tensor.Where(outside, fresh, z);
        }
        t.Copy_(z * std);
    }

    /// <summary>Sets every element to <paramref name="value"/> (for biases and norm parameters).</summary>
    public static void FillConstant(Tensor t, double value)
    {
        using var _ = Libtorch.NoGrad();
        t.Fill_(value);
    }
}
