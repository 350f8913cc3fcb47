namespace Pai.Torch;

/// <summary>
/// A thread-static scope that owns every tensor created on this thread while it is the innermost
/// open scope, and frees them when it closes (docs/architecture.md §3). Native memory is invisible to the
/// GC, so loops must run inside scopes; a result that should outlive the scope is moved out with
/// <see cref="Tensor.MoveToOuterScope"/> or <see cref="Tensor.DetachFromScope"/>.
/// Scopes nest and must be closed innermost first (use <c>using</c>).
/// </summary>
public sealed class DisposeScope : IDisposable
{
    [ThreadStatic] static DisposeScope? current;

    readonly DisposeScope? parent;
    readonly List<Tensor> owned = new();
    bool closed;

    /// <summary>Opens a scope that becomes the innermost one on this thread.</summary>
    public DisposeScope()
    {
        parent = current;
        current = this;
    }

    /// <summary>The innermost open scope on this thread, or null.</summary>
    public static DisposeScope? Current => current;

    /// <summary>The scope this one is nested in, or null.</summary>
    public DisposeScope? Parent => parent;

    /// <summary>Number of live tensors this scope will free when it closes.</summary>
    public int OwnedCount => owned.Count(t => t.Scope == this && !t.IsDisposed);

    internal void Adopt(Tensor t)
    {
        if (closed) throw new ObjectDisposedException(nameof(DisposeScope), "this dispose scope is already closed");
        owned.Add(t);
        t.Scope = this;
    }

    /// <summary>Frees every tensor still owned by this scope.</summary>
    public void Dispose()
    {
        if (closed) return;
        if (current != this)
            throw new InvalidOperationException("dispose scopes must be closed innermost first; a nested scope is still open");
        closed = true;
        current = parent;
        foreach (var t in owned)
            if (t.Scope == this) t.Dispose();
        owned.Clear();
    }
}
