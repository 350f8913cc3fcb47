using System.Runtime.InteropServices;

namespace Pai.Torch.Native;

// c10d: TCPStore, process groups, collectives (native/src/distributed.cpp).
internal static unsafe partial class NativeMethods
{
    [DllImport(Lib)] internal static extern IntPtr pai_dist_store_new([MarshalAs(UnmanagedType.LPUTF8Str)] string host, int port,
        byte isServer, int worldSize, byte waitWorkers, long timeoutMs);
    [DllImport(Lib)] internal static extern void pai_dist_store_dispose(IntPtr store);
    [DllImport(Lib)] internal static extern long pai_dist_store_add(StoreHandle store, [MarshalAs(UnmanagedType.LPUTF8Str)] string key, long delta);
    [DllImport(Lib)] internal static extern byte pai_dist_has_gloo();
    [DllImport(Lib)] internal static extern byte pai_dist_has_nccl();
    [DllImport(Lib)] internal static extern IntPtr pai_dist_gloo_new(StoreHandle store, int rank, int size, long timeoutMs,
        [MarshalAs(UnmanagedType.LPUTF8Str)] string? hostname, [MarshalAs(UnmanagedType.LPUTF8Str)] string? interfaceName);
    [DllImport(Lib)] internal static extern IntPtr pai_dist_nccl_new(StoreHandle store, int rank, int size, long timeoutMs);
    [DllImport(Lib)] internal static extern void pai_dist_group_dispose(IntPtr group);
    [DllImport(Lib)] internal static extern int pai_dist_group_rank(GroupHandle group);
    [DllImport(Lib)] internal static extern int pai_dist_group_size(GroupHandle group);
    [DllImport(Lib)] internal static extern int pai_dist_allreduce_(GroupHandle group, IntPtr* tensors, int n, int op);
    [DllImport(Lib)] internal static extern int pai_dist_broadcast_(GroupHandle group, IntPtr* tensors, int n, int root);
    [DllImport(Lib)] internal static extern int pai_dist_barrier(GroupHandle group);
}
