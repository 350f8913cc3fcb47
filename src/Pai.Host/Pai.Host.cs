using System.Globalization;
using System.Reflection;
using Microsoft.FSharp.Collections;
using Pai.Host.Reports;

namespace Pai.Host;

/// <summary>Where Pai looks for a data set and whether it is there.</summary>
/// <param name="Name">Data set name (as given to --dataset).</param>
/// <param name="Location">Directory searched.</param>
/// <param name="Found">True when the expected files are present.</param>
/// <param name="HowToGet">What to do when it is missing.</param>
public sealed record DatasetLocation(string Name, string Location, bool Found, string HowToGet);

/// <summary>Facts about this installation, as <c>pai info</c> prints them.</summary>
/// <param name="PaiVersion">Version of the Pai assemblies.</param>
/// <param name="LibtorchVersion">libtorch version the shim was compiled against.</param>
/// <param name="Threads">Intra-op threads libtorch uses.</param>
/// <param name="Blas">The BLAS library actually mapped into the process, with its own thread pool's size where it has one (OpenBLAS).</param>
/// <param name="NativeLibrary">Where libpai_torch.so was loaded from.</param>
/// <param name="CudaDevices">Visible CUDA devices (0 with Debian's CPU-only libtorch).</param>
/// <param name="Parallel">libtorch's description of its parallel backend.</param>
/// <param name="Datasets">Known data sets and where they are looked for.</param>
/// <param name="CudaVersion">CUDA runtime version of libtorch, e.g. "12.4" (null: built without CUDA).</param>
/// <param name="CudnnVersion">cuDNN version, e.g. "9.1.0" (null: none).</param>
/// <param name="LibtorchPackage">The Debian package of the loaded libtorch and its version, e.g. ("libtorch1.13", "1.13.1+dfsg-4") (null: not from a package, or no dpkg).</param>
/// <param name="ThreadsChosen">Why <paramref name="Threads"/>, e.g. "2 cores, load 8.9: 1 available" (null: not configured by <see cref="PaiHost.ConfigureThreads"/>).</param>
/// <param name="WaitPolicy">How idle OpenMP and OpenBLAS threads wait (see <see cref="Libtorch.WaitPolicy"/>).</param>
public sealed record InstallationInfo(
    string PaiVersion, string LibtorchVersion, int Threads, string Blas, string NativeLibrary,
    int CudaDevices, string Parallel, IReadOnlyList<DatasetLocation> Datasets, string? CudaVersion = null, string? CudnnVersion = null,
    (string Name, string Version)? LibtorchPackage = null, string? ThreadsChosen = null, string WaitPolicy = "")
{
    /// <summary>The thread count with why, as `pai info` prints it: "1 (2 cores, load 8.9: 1 available)".</summary>
    public string ThreadsLine => ThreadsChosen is null ? Threads.ToString(CultureInfo.InvariantCulture) : $"{Threads} ({ThreadsChosen})";

    /// <summary>
    /// The installed libtorch: its package's version where a package installed it, with the
    /// compiled-in version beside it (Debian's 1.13.1 says 1.13.0 in its headers); else the compiled-in version.
    /// </summary>
    public string Libtorch => LibtorchPackage is { } package
        ? $"{package.Version} (Debian package {package.Name}; compiled-in TORCH_VERSION {LibtorchVersion})"
        : LibtorchVersion;

    /// <summary>One line on CUDA: versions and devices, or why there is none.</summary>
    public string Cuda => CudaVersion is null
        ? "none: this libtorch is CPU-only (README, \"GPUs\": build against PyTorch's CUDA libtorch)"
        : $"CUDA {CudaVersion}, cuDNN {CudnnVersion ?? "none"}, {CudaDevices} device(s){(CudaDevices > 0 ? ": " + string.Join(", ", Enumerable.Range(0, CudaDevices).Select(i => $"cuda:{i}")) : "")}";
}

/// <summary>A pruned model: the model after pruning (BN warm-up, the reinit ablation), its mask and report, and the data it was scored on.</summary>
public sealed class PruneOutcome(RunPlan plan, DataCache data, Model model, PrunedModel pruned) : IDisposable
{
    /// <summary>The run's plan (its configuration as <see cref="RunPlan.Of"/> settled it).</summary>
    public RunPlan Plan { get; } = plan;
    /// <summary>The settled configuration.</summary>
    public RunConfig Config => Plan.Config;
    /// <summary>The model the mask was made for.</summary>
    public Model Model { get; } = model;
    /// <summary>The mask.</summary>
    public Mask Mask => pruned.Mask;
    /// <summary>Per-layer densities, collapse, timings, curvature diagnostics.</summary>
    public PruneReport Report => pruned.Report!;

    /// <summary>Writes the mask (safetensors, readable from PyTorch) with the run's configuration as metadata.</summary>
    public void SaveMask(string path) => Safetensors.Save(Path.GetFullPath(path), Mask.Layers.Select(l => (l.Item1, l.Item2)),
        new Dictionary<string, string> { ["config"] = Config.CanonicalJson(), ["model"] = Model.Name });

    /// <summary>Frees the mask, the model and the data.</summary>
    public void Dispose()
    {
        MaskModule.dispose(pruned.Mask);
        Model.Dispose();
        data.Dispose();
    }
}

/// <summary>A trained model and its per-epoch results.</summary>
public sealed class TrainOutcome : IDisposable
{
    readonly DataCache data;
    readonly DisposeScope scope;

    internal TrainOutcome(DataCache data, DisposeScope scope, Model model, Dictionary<string, Tensor>? mask, IReadOnlyList<EpochResult> epochs)
    {
        this.data = data;
        this.scope = scope;
        Model = model;
        Mask = mask;
        Epochs = epochs;
    }

    /// <summary>The trained model.</summary>
    public Model Model { get; }
    /// <summary>The mask it was trained with (null: dense).</summary>
    public IReadOnlyDictionary<string, Tensor>? Mask { get; }
    /// <summary>Every epoch's results; the last one's test metrics are the run's.</summary>
    public IReadOnlyList<EpochResult> Epochs { get; }

    /// <summary>
    /// Writes weights, buffers and the mask (as "mask/NAME") to a safetensors checkpoint; a masked
    /// one says in its metadata which layers trained on the sparse kernels ("sparse_layers", e.g. "conv2,fc1").
    /// </summary>
    public void SaveCheckpoint(string path, RunConfig config)
    {
        var tensors = Model.State();
        var metadata = new Dictionary<string, string> { ["config"] = config.CanonicalJson() };
        if (Mask is not null)
        {
            tensors = tensors.Concat(Mask.Select(k => ("mask/" + k.Key, k.Value)));
            metadata["sparse_layers"] = string.Join(",", Epochs[^1].SparseLayers.Sparse);
        }
        Safetensors.Save(Path.GetFullPath(path), tensors, metadata);
    }

    /// <summary>Frees the model, the mask and the data.</summary>
    public void Dispose()
    {
        Model.Dispose();
        scope.Dispose();
        data.Dispose();
    }
}

/// <summary>
/// The host facade: the entry points the CLI and the fsi pipelines call — prune, train, run, sweep,
/// estimate, report — each taking the one run description, <see cref="RunConfig"/>.
/// </summary>
public static class PaiHost
{
    /// <summary>
    /// Settles and checks a configuration (<see cref="RunPlan.Of"/>) and returns it in canonical
    /// form; throws ArgumentException naming the problem.
    /// </summary>
    public static RunConfig Configure(RunConfig config) => RunPlan.Of(config).Config;

    /// <summary>
    /// Scores a freshly initialized model and selects its mask. With <paramref name="scoresPath"/>
    /// the per-weight scores are written there, with <paramref name="initPath"/> θ₀ (PyTorch
    /// state_dict names, buffers included) and the scoring data in scoring order (tensors "inputs"
    /// and "targets"), so the scores can be recomputed with other code.
    /// </summary>
    public static PruneOutcome Prune(RunConfig config, Action<string>? log = null, string? scoresPath = null, string? initPath = null)
    {
        var plan = RunPlan.Of(config);
        if (plan.IsDense) throw new ArgumentException("pruning needs a criterion (-c snip, say) and a sparsity (-s 0.9)");
        var data = new DataCache();
        Model? model = null;
        try
        {
            var train = data.For(plan.Config);
            model = Runner.CreateModel(plan, train);
            if (initPath is not null) SaveInit(initPath, plan.Config, model, train);
            return new PruneOutcome(plan, data, model, Runner.Prune(plan, model, train, null, log ?? (_ => { }), scoresPath));
        }
        catch
        {
            model?.Dispose();
            data.Dispose();
            throw;
        }
    }

    static void SaveInit(string path, RunConfig c, Model model, RunData train)
    {
        using var scope = new DisposeScope();
        using var scoring = train.Scoring(c.SamplesPerClass, c.Seed, c.ScoringBatchSize, model.Device);
        var inputs = Libtorch.Cat(scoring.Select(b => b.Inputs).ToArray());
        var targets = Libtorch.Cat(scoring.Select(b => b.Targets).ToArray());
        var tensors = model.State()
            .Append(("inputs", inputs)).Append(("targets", targets));
        Safetensors.Save(Path.GetFullPath(path), tensors, new Dictionary<string, string>
        {
            ["config"] = c.CanonicalJson(),
            ["model"] = model.Name,
            ["scoring_batch_size"] = c.ScoringBatchSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["note"] = "weights at initialization, before any BN warm-up; inputs and targets in scoring order",
        });
    }

    /// <summary>
    /// Trains a freshly initialized model, densely or with a mask file from <see cref="PruneOutcome.SaveMask"/>;
    /// a mask made for the reinit check (<c>pai prune --ablation reinit</c>) trains from fresh initial weights.
    /// </summary>
    public static TrainOutcome Train(RunConfig config, string? maskPath = null, Action<TrainProgress>? progress = null, Action<string>? log = null)
    {
        var plan = RunPlan.Of(config);
        var c = plan.Config;
        var data = new DataCache();
        var scope = new DisposeScope();
        Model? model = null;
        try
        {
            var runData = data.For(c);
            model = Runner.CreateModel(plan, runData);
            Dictionary<string, Tensor>? keep = null;
            if (maskPath is not null)
            {
                if (!File.Exists(maskPath)) throw new ArgumentException($"mask file '{maskPath}' does not exist; write one with `./pai prune … --out {maskPath}`");
                var specs = model.Prunable.Select(w => new TensorSpec(w.Key, DType.Bool, w.Value.Shape));
                using (var file = Safetensors.Load(maskPath, specs, strict: true))
                {
                    keep = model.Prunable.ToDictionary(w => w.Key, w => file.Take(w.Key));
                    if (Ablations.IsReinitMask(file.Metadata))
                    {
                        Ablations.Reinitialize(model, c.Seed);
                        log?.Invoke($"mask {maskPath} was made for the reinit check: training from fresh initial weights (seed {Ablations.ReinitSeed(c.Seed)})");
                    }
                }
                var kept = keep.Values.Sum(t => t.CountNonZero());
                log?.Invoke($"mask {maskPath}: {kept:N0} of {model.PrunableCount:N0} prunable weights kept ({(double)kept / model.PrunableCount:P2})");
                if (kept == 0) throw new ArgumentException($"mask file '{maskPath}' keeps no weight: the network is disconnected and cannot learn; prune at a lower sparsity");
            }
            var epochs = Runner.TrainModel(plan, model, keep, runData, log, progress);
            return new TrainOutcome(data, scope, model, keep, epochs);
        }
        catch
        {
            model?.Dispose();
            scope.Dispose();
            data.Dispose();
            throw;
        }
    }

    /// <summary>Prunes then trains one configuration, recorded in the store (a finished run is not repeated).</summary>
    public static SweepSummary Run(RunConfig config, IRunStore store, IRunProgress? progress = null, Action<string>? log = null) =>
        Sweep([config], store, "run", progress, log);

    /// <summary>
    /// Defines the sweep <paramref name="name"/> in the store and works on every configuration not yet
    /// finished; resumable, and safe with other workers on the same store.
    /// </summary>
    public static SweepSummary Sweep(IReadOnlyList<RunConfig> configs, IRunStore store, string name = "main", IRunProgress? progress = null, Action<string>? log = null) =>
        Runs.Sweep.Execute(store, name, configs.Select(Configure).ToList(), progress, log);

    /// <summary>Mask stability and curvature error across probe seeds (see <see cref="Estimation"/>).</summary>
    public static EstimateReport Estimate(RunConfig config, EstimateOptions options) => Estimation.Run(RunPlan.Of(config), options);

    /// <summary>Writes the store's report (tables, CSV, Markdown, charts, HTML) into <paramref name="directory"/> (default: STORE/report).</summary>
    public static ReportFiles Report(IRunStore store, string? directory = null, ReportOptions? options = null) =>
        ReportWriter.Write(store.All(), directory ?? Path.Combine(store.Directory, "report"), options);

    /// <summary>Version of the Pai assemblies.</summary>
    public static string Version =>
        typeof(PaiHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion?.Split('+')[0] ?? "unknown";

    /// <summary>The most intra-op threads accepted: 4 × the cores (more only slows libtorch down; 100,000 hangs creating threads).</summary>
    public static int MaxThreads => 4 * Environment.ProcessorCount;

    /// <summary>
    /// Refuses a count of threads or local processes (<paramref name="option"/>: --threads, --nproc,
    /// --workers) above <see cref="MaxThreads"/>, naming the cores it is judged by and why.
    /// </summary>
    public static void CheckCores(int count, string option, string why)
    {
        if (count > MaxThreads)
            throw new ArgumentException($"{option} {count} is more than {MaxThreads} ({Environment.ProcessorCount} cores × 4): {why}");
    }

    /// <summary>
    /// Sets libtorch's thread count: as given, or for null or 0 <see cref="DefaultThreads"/> (the
    /// cores other processes leave free). Below 0 or more than <see cref="MaxThreads"/> is refused.
    /// </summary>
    public static void ConfigureThreads(int? threads)
    {
        CheckThreads(threads);
        var (n, why) = threads is null or 0 ? DefaultThreads : (threads.Value, $"--threads {threads}, as given");
        Libtorch.SetNumThreads(n);
        ThreadsChosen = why;
    }

    /// <summary>
    /// Refuses a --threads value <see cref="ConfigureThreads"/> would refuse (below 0, more than
    /// <see cref="MaxThreads"/>) without configuring anything: commands that compute nothing check it
    /// and skip the load sample.
    /// </summary>
    public static void CheckThreads(int? threads)
    {
        if (threads < 0)
            throw new ArgumentException($"--threads must be 0 (the cores other processes leave free) or positive, got {threads}");
        if (threads is { } given) CheckCores(given, "--threads", "more threads than cores only slow libtorch down; 0 uses the cores other processes leave free");
    }

    /// <summary>Why libtorch runs with the threads it does, once <see cref="ConfigureThreads"/> has run: "2 cores, load 8.9: 1 available" or "--threads 2, as given".</summary>
    public static string? ThreadsChosen { get; private set; }

    /// <summary>
    /// The threads `--threads 0` means, decided once per process on first use (before Pai starts
    /// working, so its own threads are not counted): <see cref="AvailableThreads"/> of this process's
    /// cores and the load other processes put on them, with why.
    /// </summary>
    public static (int Threads, string Why) DefaultThreads
    {
        get
        {
            Interlocked.Increment(ref defaultThreadsAsked);
            return defaultThreads.Value;
        }
    }

    /// <summary>How often <see cref="DefaultThreads"/> was asked for (the first time costs a load sample): tests check that commands computing nothing never ask.</summary>
    internal static int DefaultThreadsAsked => Volatile.Read(ref defaultThreadsAsked);
    static int defaultThreadsAsked;

    static readonly Lazy<(int, string)> defaultThreads = new(() =>
    {
        var cores = Environment.ProcessorCount;
        if (OtherLoad() is not { } measured) return (cores, $"{cores} cores");
        var load = Math.Round(measured, 1); // as printed, so the line can be checked by hand
        var available = AvailableThreads(cores, load);
        return (available, $"{cores} cores, load {load.ToString("0.0", CultureInfo.InvariantCulture)}: {available} available");
    });

    /// <summary>
    /// The cores left to Pai: <paramref name="cores"/> less the <paramref name="load"/> of other
    /// processes rounded to whole cores, at least 1. Two threads on cores that other work already
    /// fills run slower than one (they wait for each other), so a busy machine gets fewer.
    /// </summary>
    public static int AvailableThreads(int cores, double load)
    {
        var busy = double.IsFinite(load) && load > 0 ? (int)Math.Round(Math.Min(load, cores), MidpointRounding.AwayFromZero) : 0;
        return Math.Max(1, cores - busy);
    }

    /// <summary>
    /// The load other processes put on this process's cores: the smaller of /proc/loadavg's 1-minute
    /// average (which lags a load that just began and still counts a build that just ended) and the
    /// CPU time other processes took over a short window of /proc/stat (what is busy now; the
    /// runnable-task count is no measure, since it counts this process's own start-up threads),
    /// scaled to this process's share of the machine's CPUs (a container's quota, taskset). Null
    /// where /proc cannot be read.
    /// </summary>
    static double? OtherLoad()
    {
        try
        {
            var average = double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
            var machine = File.ReadLines("/proc/stat").Count(l => l.Length > 3 && l.StartsWith("cpu", StringComparison.Ordinal) && char.IsAsciiDigit(l[3]));
            var before = CpuTicks();
            Thread.Sleep(LoadWindow);
            var after = CpuTicks();
            var elapsed = after.Total - before.Total;
            var others = elapsed > 0
                ? Math.Max(0, elapsed - (after.Idle - before.Idle) - (after.Own - before.Own)) * (double)machine / elapsed
                : average;
            var load = Math.Max(0, Math.Min(average, others));
            return machine > Environment.ProcessorCount ? load * Environment.ProcessorCount / machine : load;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or OverflowException)
        {
            return null;
        }
    }

    static readonly TimeSpan LoadWindow = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Clock ticks so far, summed over the machine's CPUs (/proc/stat's first line): all of them, the
    /// idle ones (idle and waiting for I/O), and this process's own (/proc/self/stat's utime + stime).
    /// </summary>
    static (long Total, long Idle, long Own) CpuTicks()
    {
        var cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8)
            .Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray(); // user nice system idle iowait irq softirq steal
        var self = File.ReadAllText("/proc/self/stat");
        var fields = self[(self.LastIndexOf(')') + 2)..].Split(' '); // after "pid (comm) ": state is field 3
        var own = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture); // utime, stime: fields 14, 15
        return (cpu.Sum(), cpu[3] + cpu[4], own);
    }

    /// <summary>Collects versions, threads, native library, BLAS and data set locations.</summary>
    public static InstallationInfo Describe()
    {
        return new InstallationInfo(
            Version,
            Libtorch.Version,
            Libtorch.NumThreads,
            BlasAfterWarmup(),
            Libtorch.NativeLibraryPath,
            Libtorch.CudaDeviceCount,
            Libtorch.ParallelInfo.Trim(),
            Data.DatasetRegistry.Names.Select(name => Data.DatasetRegistry.Locate(name)).ToList(),
            Libtorch.CudaVersion,
            Libtorch.CudnnVersion,
            PackageOf(Libtorch.LoadedLibrary),
            ThreadsChosen,
            Libtorch.WaitPolicy);
    }

    /// <summary>The Debian package that installed a file and its version, from dpkg-query; null without dpkg or package.</summary>
    static (string Name, string Version)? PackageOf(string? path)
    {
        if (path is null) return null;
        // "libtorch1.13:amd64: /usr/lib/…/libtorch_cpu.so.1.13.0"
        var owner = DpkgQuery("-S", path);
        var name = owner?.Split(": ", 2)[0].Split(':')[0];
        return name is { Length: > 0 } && DpkgQuery("-W", "-f=${Version}", name) is { Length: > 0 } version ? (name, version) : null;
    }

    static string? DpkgQuery(params string[] args)
    {
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("dpkg-query") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = System.Diagnostics.Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEndAsync();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? output.Result.Trim() : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; } // no dpkg-query: not a Debian system
    }

    // libblas.so.3 is loaded lazily by libtorch on the first matrix product, so run one first.
    static string BlasAfterWarmup()
    {
        using var scope = new DisposeScope();
        using (Libtorch.NoGrad())
        {
            var a = Libtorch.Ones([8, 8]);
            _ = a.MatMul(a);
        }
        var threads = Libtorch.BlasThreads;
        return threads > 0 ? $"{Libtorch.ActiveBlas}, {threads} thread{(threads == 1 ? "" : "s")}" : Libtorch.ActiveBlas;
    }
}
