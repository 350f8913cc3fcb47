using System.Runtime.InteropServices;
using Pai.Torch.Native;
using static Pai.Torch.Native.NativeMethods;

namespace Pai.Torch;

/// <summary>Owns one native c10d store.</summary>
internal sealed class StoreHandle(IntPtr handle) : NativeHandle(handle)
{
    protected override void Free(IntPtr h) => pai_dist_store_dispose(h);
}

/// <summary>Owns one native c10d process group.</summary>
internal sealed class GroupHandle(IntPtr handle) : NativeHandle(handle)
{
    protected override void Free(IntPtr h) => pai_dist_group_dispose(h);
}

/// <summary>
/// libtorch's c10d TCPStore: the key-value rendezvous of a process group. One process (rank 0)
/// runs the server; every process, the server's included, is a client of it.
/// </summary>
public sealed class TcpStore : IDisposable
{
    internal readonly StoreHandle Handle;

    /// <summary>Connects to (or, with <paramref name="isServer"/>, starts) the store at host:port.</summary>
    /// <param name="host">Address of the server (MASTER_ADDR).</param>
    /// <param name="port">Its port (MASTER_PORT).</param>
    /// <param name="isServer">Start the server here (rank 0).</param>
    /// <param name="worldSize">Processes that will join; the server waits for all of them when <paramref name="waitForWorkers"/>.</param>
    /// <param name="timeout">How long to wait for the server, the workers, and each store operation.</param>
    /// <param name="waitForWorkers">Count this client as one of the world's workers and wait for all of them (false for extra connections).</param>
    public TcpStore(string host, int port, bool isServer, int worldSize, TimeSpan timeout, bool waitForWorkers = true)
    {
        var p = pai_dist_store_new(host, port, isServer ? (byte)1 : (byte)0, worldSize, waitForWorkers ? (byte)1 : (byte)0,
            (long)timeout.TotalMilliseconds);
        if (p == IntPtr.Zero) ThrowIfError();
        Handle = new StoreHandle(p);
        Host = host;
        Port = port;
    }

    /// <summary>The server's address.</summary>
    public string Host { get; }
    /// <summary>The server's port.</summary>
    public int Port { get; }

    /// <summary>Atomically adds <paramref name="delta"/> to the counter <paramref name="key"/> and returns its new value (0 reads it).</summary>
    public long Add(string key, long delta)
    {
        var v = pai_dist_store_add(Handle, key, delta);
        if (v == -1) ThrowIfError();
        return v;
    }

    /// <summary>Closes the connection (and the server, on the process that runs it).</summary>
    public void Dispose() => Handle.Dispose();
}

/// <summary>How <see cref="ProcessGroup.AllReduce_"/> combines the ranks' tensors.</summary>
public enum ReduceOp
{
    /// <summary>Element-wise sum.</summary>
    Sum = 0,
    /// <summary>Element-wise minimum.</summary>
    Min = 1,
    /// <summary>Element-wise maximum.</summary>
    Max = 2,
}

/// <summary>
/// A c10d process group (Gloo on CPU, NCCL for CUDA tensors when the shim was built with it).
/// Collectives work in place and block until done; a lost peer or the group's timeout surfaces as
/// a <see cref="TorchException"/> from the call that hit it.
/// </summary>
public sealed unsafe class ProcessGroup : IDisposable
{
    readonly GroupHandle handle;

    ProcessGroup(IntPtr p, TimeSpan timeout)
    {
        if (p == IntPtr.Zero) ThrowIfError();
        handle = new GroupHandle(p);
        Rank = pai_dist_group_rank(handle);
        Size = pai_dist_group_size(handle);
        Timeout = timeout;
    }

    /// <summary>Whether this shim was built with the Gloo backend.</summary>
    public static bool HasGloo => pai_dist_has_gloo() != 0;

    /// <summary>Whether this shim was built with the NCCL backend (CUDA libtorch with NCCL headers).</summary>
    public static bool HasNccl => pai_dist_has_nccl() != 0;

    /// <summary>
    /// A Gloo group of <paramref name="size"/> ranks meeting in <paramref name="store"/>.
    /// <paramref name="interfaceName"/> binds Gloo to a network interface (as GLOO_SOCKET_IFNAME does);
    /// otherwise <paramref name="hostname"/> (an address of this machine), otherwise the machine's host name.
    /// </summary>
    public static ProcessGroup Gloo(TcpStore store, int rank, int size, TimeSpan timeout, string? hostname = null, string? interfaceName = null)
    {
        var p = pai_dist_gloo_new(store.Handle, rank, size, (long)timeout.TotalMilliseconds, hostname, interfaceName);
        GC.KeepAlive(store);
        return new ProcessGroup(p, timeout);
    }

    /// <summary>An NCCL group (CUDA tensors); throws when the shim was built without NCCL.</summary>
    public static ProcessGroup Nccl(TcpStore store, int rank, int size, TimeSpan timeout)
    {
        var p = pai_dist_nccl_new(store.Handle, rank, size, (long)timeout.TotalMilliseconds);
        GC.KeepAlive(store);
        return new ProcessGroup(p, timeout);
    }

    /// <summary>This process's rank, 0 … Size − 1.</summary>
    public int Rank { get; }
    /// <summary>Number of ranks.</summary>
    public int Size { get; }
    /// <summary>How long a collective waits for the other ranks before failing.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>Reduces each tensor over all ranks, in place (each one separately; contiguous, same shapes and dtypes everywhere).</summary>
    public void AllReduce_(IReadOnlyList<Tensor> tensors, ReduceOp op = ReduceOp.Sum)
    {
        var raw = Libtorch.Raw(tensors);
        fixed (IntPtr* p = raw) Check(pai_dist_allreduce_(handle, p, raw.Length, (int)op));
        GC.KeepAlive(tensors);
    }

    /// <summary>Overwrites each tensor with rank <paramref name="root"/>'s copy, in place.</summary>
    public void Broadcast_(IReadOnlyList<Tensor> tensors, int root = 0)
    {
        var raw = Libtorch.Raw(tensors);
        fixed (IntPtr* p = raw) Check(pai_dist_broadcast_(handle, p, raw.Length, root));
        GC.KeepAlive(tensors);
    }

    /// <summary>Returns when every rank has called it.</summary>
    public void Barrier() => Check(pai_dist_barrier(handle));

    /// <summary>Leaves the group (frees the native group).</summary>
    public void Dispose() => handle.Dispose();
}
