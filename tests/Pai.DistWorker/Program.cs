// A rank of DistributedTests, placed by torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT); without them it is a single process (AllocatorTests runs it so). Lines on stdout
// are read by the test.
//   collectives          allreduce (sum, min, max), broadcast and barrier on small tensors;
//                        prints "sum …", "min …", "max …", "broadcast …", "barrier ok"
//   train MASKED K BATCH OUT
//                        lenet5 on synthetic data, K SGD steps (momentum, weight decay) at a global
//                        batch of BATCH, masked at 90% by a seeded random mask drawn on rank 0 when
//                        MASKED is 1; prints "init HASH", "mask HASH", "pruned-nonzero N" (weights
//                        at pruned positions that are not exactly zero), and rank 0 writes the
//                        final weights to OUT (safetensors)
//   loop                 joins, prints "joined", then allreduces forever (the test kills a rank)
//   allocate MB COUNT    allocates, zero-fills and frees a tensor of MB megabytes COUNT times on
//                        the process's main thread; prints "main-thread true|false" and
//                        "faults F1 F2 …", the minor page faults of the process during each
//                        allocation
//   release COUNT        on the main thread, COUNT tensors of 1 MB (heap-sized) at once, each followed
//                        by a small one that stays alive, then frees the large ones; prints "rss B K R",
//                        the resident bytes before, after the frees and after Libtorch.ReleaseFreeMemory
//   keep STEPS           inside Libtorch.KeepFreedBlocks, STEPS times: tensors of 4, 1, 5, 2 and 3 MB
//                        alive at once, then freed in that order; prints "kept K1 K2 …",
//                        Libtorch.CpuCacheBytes after each step's frees; then "retaken K" after a 3 MB
//                        tensor is allocated again, "large K" after an 80 MB one is allocated and freed,
//                        "nested K" after a nested scope closed, "closed K" after the scope closed,
//                        "outside K" after a step outside any scope, "released K" after a step in a new
//                        scope and Libtorch.ReleaseFreeMemory
using System.Globalization;
using Pai.Host.Distributed;

Libtorch.SetNumThreads(1);
var env = DistributedEnvironment.FromEnvironment();
try
{
    using var parallel = env is null ? null : DataParallel.Join(env, onLost: m => { Console.Error.WriteLine(m); Environment.Exit(75); });
    switch (args[0])
    {
        case "collectives":
            Collectives(parallel!);
            break;
        case "train":
            Train(parallel, args[1] == "1", int.Parse(args[2], CultureInfo.InvariantCulture), int.Parse(args[3], CultureInfo.InvariantCulture), args[4]);
            break;
        case "allocate":
            Allocate(int.Parse(args[1], CultureInfo.InvariantCulture), int.Parse(args[2], CultureInfo.InvariantCulture));
            break;
        case "release":
            Release(int.Parse(args[1], CultureInfo.InvariantCulture));
            break;
        case "keep":
            Keep(int.Parse(args[1], CultureInfo.InvariantCulture));
            break;
        case "loop":
            Console.WriteLine("joined");
            while (true)
            {
                parallel!.Sum(1.0);
                Thread.Sleep(50);
            }
        default:
            Console.Error.WriteLine($"unknown command {args[0]}");
            return 2;
    }
    parallel?.Finish();
    return 0;
}
catch (DistributedException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

static void Collectives(DataParallel parallel)
{
    using var scope = new DisposeScope();
    var r = parallel.Rank;
    var sum = Libtorch.FromArray(new float[] { r + 1, 10 * (r + 1) }, [2]);
    var lo = Libtorch.FromArray(new long[] { r + 5 }, [1]);
    var hi = lo.Clone();
    var group = parallel.Group;
    group.AllReduce_([sum]);
    group.AllReduce_([lo], ReduceOp.Min);
    group.AllReduce_([hi], ReduceOp.Max);
    Console.WriteLine("sum " + string.Join(",", sum.ToArray<float>()));
    Console.WriteLine("min " + lo.ToArray<long>()[0]);
    Console.WriteLine("max " + hi.ToArray<long>()[0]);
    var b = Libtorch.FromArray(new double[] { 100 + r, 200 + r, 300 + r }, [3]);
    var flags = Libtorch.FromArray(new[] { r == 0, r != 0 }, [2]);
    parallel.BroadcastFromRoot([b, flags]);
    Console.WriteLine("broadcast " + string.Join(",", b.ToArray<double>()) + " " + string.Join(",", flags.ToArray<bool>()));
    parallel.Barrier();
    Console.WriteLine("barrier ok");
}

static void Train(DataParallel? parallel, bool masked, int steps, int globalBatch, string output)
{
    using var scope = new DisposeScope();
    using var train = SyntheticData.Create(new SyntheticOptions(TrainCount: 512, TestCount: 64));
    // A different seed on every rank: the broadcast from rank 0 must make them equal.
    var seed = (ulong)(parallel?.Rank ?? 0) + 7;
    using var model = ModelZoo.Create("lenet5", new ModelOptions { InputShape = new InputShape(1, 28, 28), Classes = 10, Seed = seed });
    Dictionary<string, Tensor>? mask = null;
    if (masked)
    {
        using var g = new Generator(seed + 100);
        mask = model.Prunable.ToDictionary(p => p.Key, p => Libtorch.Rand(p.Value.Shape, g).Gt(0.9).DetachFromScope());
        parallel?.BroadcastFromRoot(mask.Values);
    }
    var ranks = parallel?.Size ?? 1;
    using var loader = new DataLoader(train, globalBatch / ranks, shuffle: true, seed: 3, rank: parallel?.Rank ?? 0, worldSize: ranks);
    var options = new TrainOptions
    {
        Epochs = 1, LearningRate = 0.05, Momentum = 0.9, WeightDecay = 5e-4, Schedule = LrSchedule.Constant, MaxBatchesPerEpoch = steps,
    };
    // The trainer broadcasts rank 0's weights first; hash them as it will see them.
    if (parallel is not null) parallel.BroadcastFromRoot(model.NamedParameters().Select(p => p.Tensor));
    Console.WriteLine("init " + Convert.ToHexString(DataParallel.Fingerprint(model.NamedParameters())));
    if (mask is not null) Console.WriteLine("mask " + Convert.ToHexString(DataParallel.Fingerprint(mask.Select(m => (m.Key, m.Value)))));
    Trainer.Train(model, mask, loader.Epoch, null, options, parallel: parallel);
    long nonzero = 0;
    if (mask is not null)
        foreach (var (name, keep) in mask)
            nonzero += model.NamedParameters().First(p => p.Name == name).Tensor.MaskedSelect(keep.LogicalNot()).CountNonZero();
    Console.WriteLine($"pruned-nonzero {nonzero}");
    if (parallel is null || parallel.IsRoot)
        Safetensors.Save(output, model.NamedParameters().Select(p => (p.Name, p.Tensor)), new Dictionary<string, string>());
    Console.WriteLine("done");
}

static void Allocate(int megabytes, int count)
{
    // The main thread allocates from glibc's main arena, the one the native library's allocator
    // setting is about (other threads' arenas unmap freed heaps whatever the setting).
    var thread = File.ResolveLinkTarget("/proc/thread-self", returnFinalTarget: false)!.ToString();
    Console.WriteLine($"main-thread {(thread == $"/proc/{Environment.ProcessId}/task/{Environment.ProcessId}" ? "true" : "false")}");
    var faults = new long[count];
    for (var i = 0; i < count; i++)
    {
        var before = MinorFaults();
        using (Libtorch.Zeros([megabytes * (1L << 20) / sizeof(float)])) { }
        faults[i] = MinorFaults() - before;
    }
    Console.WriteLine("faults " + string.Join(" ", faults));
}

static void Release(int count)
{
    var before = Resident();
    var (large, pins) = (new List<Tensor>(), new List<Tensor>());
    for (var i = 0; i < count; i++)
    {
        // written, so that its pages are resident; the small tensor after it stays alive, so the
        // freed block lies between live ones (glibc gives back a free heap top by itself)
        large.Add(Libtorch.Ones([(1L << 20) / sizeof(float)]));
        pins.Add(Libtorch.Ones([16]));
    }
    foreach (var t in large) t.Dispose();
    var kept = Resident();
    Libtorch.ReleaseFreeMemory();
    Console.WriteLine($"rss {before} {kept} {Resident()}");
    foreach (var p in pins) p.Dispose();
}

static void Keep(int steps)
{
    static void Step()
    {
        var step = new[] { 4, 1, 5, 2, 3 }.Select(mb => Libtorch.Ones([mb * (1L << 20) / sizeof(float)])).ToList();
        foreach (var t in step) t.Dispose();
    }
    var kept = new long[steps];
    using (Libtorch.KeepFreedBlocks())
    {
        for (var i = 0; i < steps; i++)
        {
            Step();
            kept[i] = Libtorch.CpuCacheBytes;
        }
        Console.WriteLine("kept " + string.Join(" ", kept));
        using (Libtorch.Ones([3 * (1L << 20) / sizeof(float)]))
            Console.WriteLine($"retaken {Libtorch.CpuCacheBytes}");
        using (Libtorch.Ones([80 * (1L << 20) / sizeof(float)])) { }
        Console.WriteLine($"large {Libtorch.CpuCacheBytes}");
        using (Libtorch.KeepFreedBlocks()) { }
        Console.WriteLine($"nested {Libtorch.CpuCacheBytes}");
    }
    Console.WriteLine($"closed {Libtorch.CpuCacheBytes}");
    Step();
    Console.WriteLine($"outside {Libtorch.CpuCacheBytes}");
    using (Libtorch.KeepFreedBlocks())
    {
        Step();
        Libtorch.ReleaseFreeMemory();
        Console.WriteLine($"released {Libtorch.CpuCacheBytes}");
    }
}

// VmRSS of this process in bytes.
static long Resident() =>
    long.Parse(File.ReadAllLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))[6..].Trim().Split(' ')[0],
        CultureInfo.InvariantCulture) * 1024;

// Minor page faults of this process so far: field 10 of /proc/self/stat, counted after the
// command name, which is in parentheses and may hold spaces.
static long MinorFaults()
{
    var stat = File.ReadAllText("/proc/self/stat");
    return long.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[7], CultureInfo.InvariantCulture);
}
