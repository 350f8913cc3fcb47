using System.Globalization;
using System.Security.Cryptography;

namespace Pai.Host.Distributed;

/// <summary>A data-parallel run stopped: a rank was lost, or the ranks disagree.</summary>
public sealed class DistributedException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>
/// This process's membership in a data-parallel run, on libtorch's c10d: the TCPStore rendezvous
/// (hosted by rank 0), a Gloo process group (NCCL for CUDA models), and what the trainer needs —
/// broadcast from rank 0, averaged gradients, summed metrics, a hash check that every rank holds
/// the same tensors. A heartbeat over the store watches the other ranks: a rank that stops (killed,
/// crashed, its machine gone) is named, and this process stops within the heartbeat timeout
/// instead of hanging in a collective.
/// </summary>
public sealed class DataParallel : IDisposable
{
    readonly TcpStore store;
    readonly TcpStore heartbeatStore;
    readonly ProcessGroup group;
    readonly Thread heartbeat;
    readonly CancellationTokenSource stop = new();
    readonly Action<string> onLost;
    string? lost;                       // set once by the heartbeat thread
    readonly ManualResetEventSlim lostSignal = new(false);
    int failureReported;                // 1 once the main thread reports the loss itself

    static readonly TimeSpan HeartbeatInterval = TimeSpan.FromMilliseconds(500);
    const string HeartbeatKey = "pai/heartbeat/";

    DataParallel(DistributedEnvironment env, TcpStore store, TcpStore heartbeatStore, ProcessGroup group, Action<string> onLost)
    {
        Environment = env;
        this.store = store;
        this.heartbeatStore = heartbeatStore;
        this.group = group;
        this.onLost = onLost;
        heartbeat = new Thread(Watch) { IsBackground = true, Name = $"pai-heartbeat-{env.Rank}" };
        heartbeat.Start();
    }

    /// <summary>
    /// Joins the run described by <paramref name="env"/>: rank 0 starts the store, every rank
    /// connects, and the process group is formed (Gloo, or NCCL when <paramref name="cuda"/>).
    /// <paramref name="onLost"/> is called from the heartbeat thread when another rank is lost and
    /// this process is not already failing because of it (default: print the message and exit with
    /// code 75); tests pass their own.
    /// </summary>
    public static DataParallel Join(DistributedEnvironment env, bool cuda = false, Action<string>? onLost = null)
    {
        if (!cuda && !ProcessGroup.HasGloo)
            throw new DistributedException("this libpai_torch was built without Gloo (c10d): on Debian install libgloo-dev and rebuild (dotnet build)");
        TcpStore? store = null, beats = null;
        ProcessGroup? group = null;
        try
        {
            store = new TcpStore(env.MasterAddress, env.MasterPort, env.IsRoot, env.WorldSize, env.Timeout);
            beats = new TcpStore(env.MasterAddress, env.MasterPort, isServer: false, env.WorldSize, env.Timeout, waitForWorkers: false);
            beats.Add(HeartbeatKey + env.Rank.ToString(CultureInfo.InvariantCulture), 1);
            var ifname = System.Environment.GetEnvironmentVariable("GLOO_SOCKET_IFNAME");
            group = cuda
                ? ProcessGroup.Nccl(store, env.Rank, env.WorldSize, env.Timeout)
                : ProcessGroup.Gloo(store, env.Rank, env.WorldSize, env.Timeout,
                    hostname: IsLoopback(env.MasterAddress) ? env.MasterAddress : null, interfaceName: ifname);
            return new DataParallel(env, store, beats, group, onLost ?? ExitWith);
        }
        catch (TorchException e)
        {
            group?.Dispose();
            beats?.Dispose();
            store?.Dispose();
            throw new DistributedException(
                $"rank {env.Rank} of {env.WorldSize} could not join the run at {env.MasterAddress}:{env.MasterPort} within {env.Timeout.TotalSeconds:0.#} s: {e.Message}" +
                (env.IsRoot ? " (is the port free?)" : " (is rank 0 running, and the address and port right?)"), e);
        }
    }

    static bool IsLoopback(string address) => address is "127.0.0.1" or "localhost" or "::1";

    static void ExitWith(string message)
    {
        Console.Error.WriteLine($"pai: {message}");
        System.Environment.Exit(75);
    }

    /// <summary>Where this process sits in the run.</summary>
    public DistributedEnvironment Environment { get; }
    /// <summary>This process's rank.</summary>
    public int Rank => group.Rank;
    /// <summary>Number of ranks.</summary>
    public int Size => group.Size;
    /// <summary>Whether this is rank 0 (the one that writes results).</summary>
    public bool IsRoot => Rank == 0;
    /// <summary>The c10d process group, for collectives beyond the trainer's.</summary>
    public ProcessGroup Group => group;

    /// <summary>Overwrites the tensors with rank 0's values, in place (bool tensors go as bytes).</summary>
    public void BroadcastFromRoot(IEnumerable<Tensor> tensors)
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var list = tensors.ToList();
        var wire = list.Select(t => t.DType == DType.Bool ? t.To(DType.UInt8) : t.IsContiguous ? t : t.Contiguous()).ToList();
        Collective("broadcast", () => group.Broadcast_(wire, 0));
        for (var i = 0; i < list.Count; i++)
            if (!ReferenceEquals(wire[i], list[i])) list[i].Copy_(list[i].DType == DType.Bool ? wire[i].Ne(0) : wire[i]);
    }

    /// <summary>Sums the values over all ranks (in float64).</summary>
    public double[] Sum(params double[] values)
    {
        using var scope = new DisposeScope();
        var t = Libtorch.FromArray(values, [values.Length]);
        Collective("allreduce", () => group.AllReduce_([t]));
        return t.ToArray<double>();
    }

    /// <summary>Returns when every rank got here.</summary>
    public void Barrier() => Collective("barrier", group.Barrier);

    /// <summary>
    /// The SHA-256 of the named tensors (names, dtypes, shapes and bytes, in order), checked to be
    /// the same on every rank; throws naming <paramref name="what"/> when a rank differs.
    /// </summary>
    public string CheckIdentical(string what, IEnumerable<(string Name, Tensor Tensor)> tensors)
    {
        var hash = Fingerprint(tensors);
        var words = new long[4];
        for (var i = 0; i < 4; i++) words[i] = BitConverter.ToInt64(hash, 8 * i);
        using var scope = new DisposeScope();
        var lo = Libtorch.FromArray(words, [4]);
        var hi = lo.Clone();
        Collective("allreduce", () => group.AllReduce_([lo], ReduceOp.Min));
        Collective("allreduce", () => group.AllReduce_([hi], ReduceOp.Max));
        if (!lo.Equal(hi))
            throw new DistributedException($"the {what} differ between ranks (rank {Rank} has SHA-256 {Convert.ToHexString(hash)}); every rank must start from rank 0's");
        return Convert.ToHexString(hash);
    }

    /// <summary>SHA-256 over names, dtypes, shapes and raw bytes of the tensors (CPU copies).</summary>
    public static byte[] Fingerprint(IEnumerable<(string Name, Tensor Tensor)> tensors)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var scope = new DisposeScope();
        foreach (var (name, tensor) in tensors)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{name}:{tensor.DType}:[{string.Join(",", tensor.Shape)}];"));
            var t = tensor.Device.Type == DeviceType.Cpu ? tensor.Detach() : tensor.Detach().To(Device.Cpu);
            sha.AppendData(Safetensors.RawBytes(Safetensors.HasRawBytes(t.DType) ? t : t.To(DType.Float64)));
        }
        return sha.GetHashAndReset();
    }

    /// <summary>
    /// Gradient averaging for <paramref name="parameters"/> (with their keep-masks; null = dense):
    /// only the kept entries travel, packed into buckets of at most <paramref name="bucketBytes"/>.
    /// </summary>
    public GradientBuckets Buckets(IReadOnlyList<(Tensor Param, Tensor? Keep)> parameters, long bucketBytes = GradientBuckets.DefaultBucketBytes) =>
        new(this, parameters, bucketBytes);

    /// <summary>Sums the flat buckets over all ranks in place.</summary>
    internal void SumInPlace(IReadOnlyList<Tensor> buckets) => Collective("allreduce", () => group.AllReduce_(buckets));

    // A collective that failed because a peer is gone waits for the heartbeat to name it.
    void Collective(string name, Action action)
    {
        if (lost is { } gone) throw new DistributedException(gone);
        try
        {
            action();
        }
        catch (TorchException e)
        {
            Interlocked.Exchange(ref failureReported, 1);
            var named = lostSignal.Wait(Environment.HeartbeatTimeout + HeartbeatInterval * 4) ? lost : null;
            throw new DistributedException(named is null
                ? $"rank {Rank}: {name} failed: {e.Message}"
                : $"{named} ({name} failed: {e.Message})", e);
        }
    }

    // Heartbeat: bump our counter, read the others'; a counter that stands still for the
    // heartbeat timeout, or a store that stops answering (rank 0 hosts it), means a lost rank.
    void Watch()
    {
        var size = Environment.WorldSize;
        var last = new long[size];
        var since = new DateTime[size];
        Array.Fill(since, DateTime.UtcNow);
        var me = HeartbeatKey + Environment.Rank.ToString(CultureInfo.InvariantCulture);
        while (!stop.Token.WaitHandle.WaitOne(HeartbeatInterval))
        {
            string? verdict = null;
            try
            {
                heartbeatStore.Add(me, 1);
                var now = DateTime.UtcNow;
                for (var r = 0; r < size && verdict is null; r++)
                {
                    if (r == Environment.Rank) continue;
                    var beat = heartbeatStore.Add(HeartbeatKey + r.ToString(CultureInfo.InvariantCulture), 0);
                    if (beat != last[r]) (last[r], since[r]) = (beat, now);
                    else if (now - since[r] > Environment.HeartbeatTimeout)
                        verdict = $"rank {Environment.Rank}: lost rank {r} of {size}: no heartbeat for {Environment.HeartbeatTimeout.TotalSeconds:0.#} s (it stopped or its machine is unreachable)";
                }
            }
            catch (TorchException e)
            {
                if (stop.IsCancellationRequested) return;
                verdict = $"rank {Environment.Rank}: lost rank 0 of {size}: the rendezvous store it hosts at {Environment.MasterAddress}:{Environment.MasterPort} stopped answering ({e.Message})";
            }
            if (verdict is null) continue;
            lost = verdict;
            lostSignal.Set();
            // The main thread names the loss itself when a collective failed; otherwise (it is
            // computing, or blocked where no error comes) give it a moment, then stop the process.
            if (stop.Token.WaitHandle.WaitOne(HeartbeatInterval * 4) || Volatile.Read(ref failureReported) == 1) return;
            onLost(verdict);
            return;
        }
    }

    /// <summary>
    /// Ends the run on success: stops the heartbeat and waits until every rank got here, so that
    /// rank 0's store outlives the others' last heartbeat. Every rank calls it once, after its last
    /// collective; a rank that fails skips it (disposing only), and the others then name it.
    /// </summary>
    public void Finish()
    {
        StopHeartbeat();
        Barrier();
    }

    void StopHeartbeat()
    {
        stop.Cancel();
        heartbeat.Join();
    }

    /// <summary>Leaves the run: stops the heartbeat, closes the group and the store (rank 0's server with it).</summary>
    public void Dispose()
    {
        StopHeartbeat();
        group.Dispose();
        heartbeatStore.Dispose();
        store.Dispose();
        stop.Dispose();
        lostSignal.Dispose();
    }
}

/// <summary>
/// Averages gradients across ranks (the data-parallel step): the gradients of the trained
/// parameters — only the kept entries of masked ones — are packed into flat buckets, summed over
/// the ranks, divided by their number and unpacked. Index tensors and buckets are built once.
/// </summary>
public sealed class GradientBuckets : IDisposable
{
    /// <summary>Default bucket size: 25 MiB, as PyTorch's DistributedDataParallel.</summary>
    public const long DefaultBucketBytes = 25L << 20;

    readonly DataParallel parallel;
    readonly List<List<Slot>> buckets = new();

    sealed record Slot(Tensor Param, Tensor? Kept, long Length);

    internal GradientBuckets(DataParallel parallel, IReadOnlyList<(Tensor Param, Tensor? Keep)> parameters, long bucketBytes)
    {
        this.parallel = parallel;
        using var scope = new DisposeScope();
        var current = new List<Slot>();
        long bytes = 0;
        foreach (var (p, keep) in parameters)
        {
            Tensor? kept = null;
            if (keep is not null)
            {
                using var flat = keep.Flatten().To(DType.Bool).To(p.Device);
                kept = Libtorch.Arange(0, p.NumEl, device: p.Device).MaskedSelect(flat).DetachFromScope();
            }
            var slot = new Slot(p, kept, kept?.NumEl ?? p.NumEl);
            if (slot.Length == 0) { kept?.Dispose(); continue; } // a collapsed layer has nothing to send
            var size = slot.Length * 4;
            if (current.Count > 0 && bytes + size > bucketBytes)
            {
                buckets.Add(current);
                (current, bytes) = (new List<Slot>(), 0);
            }
            current.Add(slot);
            bytes += size;
        }
        if (current.Count > 0) buckets.Add(current);
    }

    /// <summary>Number of buckets.</summary>
    public int Count => buckets.Count;

    /// <summary>Entries sent per step (kept entries of masked parameters, all of the others).</summary>
    public long Elements => buckets.Sum(b => b.Sum(s => s.Length));

    /// <summary>Replaces every parameter's gradient by its mean over the ranks.</summary>
    public void Average()
    {
        using var scope = new DisposeScope();
        using var _ = Libtorch.NoGrad();
        var flats = new List<Tensor>(buckets.Count);
        foreach (var bucket in buckets)
        {
            var parts = bucket.Select(s =>
            {
                // A parameter that got no gradient on this rank contributes zeros (the ranks must send the same sizes).
                var g = s.Param.Grad?.Flatten() ?? Libtorch.Zeros([s.Param.NumEl], s.Param.DType, s.Param.Device);
                return s.Kept is null ? g : g.IndexSelect(0, s.Kept);
            }).ToList();
            flats.Add(parts.Count == 1 ? parts[0].Contiguous() : Libtorch.Cat(parts));
        }
        parallel.SumInPlace(flats);
        for (var b = 0; b < buckets.Count; b++)
        {
            var flat = flats[b].Div_(Libtorch.Scalar((double)parallel.Size, flats[b].DType));
            long offset = 0;
            foreach (var s in buckets[b])
            {
                var part = flat.Narrow(0, offset, s.Length);
                offset += s.Length;
                var grad = s.Param.Grad;
                if (grad is null) continue;
                var whole = s.Kept is null ? part : grad.Flatten().Scatter(0, s.Kept, part);
                grad.Copy_(whole.View(s.Param.Shape));
            }
        }
    }

    /// <summary>Frees the index tensors.</summary>
    public void Dispose()
    {
        foreach (var s in buckets.SelectMany(b => b)) s.Kept?.Dispose();
        buckets.Clear();
    }
}
