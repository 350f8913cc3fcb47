using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>
/// A seeded random generator (libtorch's CPU mt19937 generator). Random tensors for any
/// device are drawn on the CPU with it and then moved, so a seed gives the same values everywhere.
/// </summary>
public sealed class Generator : IDisposable
{
    readonly GeneratorHandle handle;

    /// <summary>A generator seeded with <paramref name="seed"/>.</summary>
    public Generator(ulong seed)
    {
        var p = pai_generator_new(seed);
        if (p == IntPtr.Zero) ThrowIfError();
        handle = new GeneratorHandle(p);
        Seed = seed;
    }

    /// <summary>The seed it was created with.</summary>
    public ulong Seed { get; }

    /// <summary>The raw pointer (zero when null); a disposed generator throws instead of passing a freed pointer.</summary>
    internal static IntPtr RawOrZero(Generator? g)
    {
        if (g is null) return IntPtr.Zero;
        if (g.handle.IsClosed) throw new ObjectDisposedException(nameof(Generator), "the generator was already disposed");
        return g.handle.DangerousGetHandle();
    }

    /// <summary>Frees the native generator.</summary>
    public void Dispose() => handle.Dispose();
}
