/// Scoring time per criterion, Pai's Criteria against the same computation written in PyTorch
/// (benchmarks/torch_scoring.py, a long-lived worker fed the same weights and scoring batches).
module Pai.Benchmarks.Scoring

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text
open Pai
open Pai.Torch
open Pai.Host.Data
open Pai.Host.Models
open Pai.Benchmarks.Common

/// A benchmarked computation: runs once and returns its result flattened (for the cross-check).
type private Job =
    {
        Name: string
        /// Runs the computation, frees its result, and returns nothing (the timed call).
        Run: unit -> unit
        /// Runs it once and returns the result as one flat float32 array (prunable order).
        Result: unit -> float32[]
    }

let private flatten (layers: (string * Tensor) list) =
    use scope = new DisposeScope()

    layers
    |> List.map (fun (_, t) -> t.To(DType.Float32).Flatten().ToArray<float32>())
    |> Array.concat

let private criterionJob (name: string) (c: Criterion) (ctx: ScoringContext) =
    {
        Name = name
        Run = fun () -> c.Score ctx |> Scores.dispose
        Result =
            fun () ->
                let s = c.Score ctx

                try
                    flatten s.Layers
                finally
                    Scores.dispose s
    }

let private synflowPruneJob (rounds: int) (sparsity: float) (ctx: ScoringContext) =
    let spec =
        { PruneSpec.Default with
            Sparsity = sparsity
            Rounds = rounds
            Curvature = ctx.Curvature
            Seed = ctx.Seed
        }

    // The timed work includes freeing everything but the mask (the last scores, which the
    // pipeline hands back; synflow stores no statistics).
    let prune () =
        let r =
            Pruning.prune spec (Registry.find "synflow") ctx.Model ctx.InputShape ctx.Batches Seq.empty [] ignore

        Scores.dispose r.Scores

        for _, v in r.Statistics do
            for t in v.Layers do
                t.Dispose()

        r.Mask

    {
        Name = $"synflow_x%d{rounds}"
        Run = fun () -> prune () |> Mask.dispose
        Result =
            fun () ->
                let m = prune ()

                try
                    flatten m.Layers
                finally
                    Mask.dispose m
    }

/// The criteria this benchmark knows, in the order it runs them.
let allCriteria =
    [
        "random"
        "magnitude"
        "snip"
        "grasp"
        "synflow"
        "synflow_x100"
        "fisher_obd"
        "hutch_obd"
        "hts"
    ]

let private job (args: Args) (ctx: ScoringContext) (name: string) =
    match name with
    | "synflow_x100" -> synflowPruneJob (args.Int("synflow-rounds", 100)) (args.Float("synflow-sparsity", 0.99)) ctx
    | _ ->
        match Registry.resolve Temperatures.Default name with
        | Ok c -> criterionJob name c ctx
        | Error e -> failwith e

/// Writes the model's parameters and buffers, the prunable names and the scoring batches as raw
/// little-endian files with a manifest, for the PyTorch worker to load.
let private export (dir: string) (model: Model) (batches: Batch list) (batchSize: int) =
    let manifest = StringBuilder()
    let mutable index = 0

    let write (kind: string) (name: string) (t: Tensor) =
        use scope = new DisposeScope()
        let d = t.Detach()

        let bytes, dtype =
            match d.DType with
            | DType.Int64 -> MemoryMarshal.AsBytes(ReadOnlySpan(d.ToArray<int64>())).ToArray(), "int64"
            | _ -> MemoryMarshal.AsBytes(ReadOnlySpan(d.To(DType.Float32).ToArray<float32>())).ToArray(), "float32"

        File.WriteAllBytes(Path.Combine(dir, $"%d{index}.bin"), bytes)

        manifest.Append($"%s{kind} %s{name} %d{index} %s{dtype} %s{String.Join(' ', d.Shape)}\n")
        |> ignore

        index <- index + 1

    for kv in model.Parameters do
        write "param" kv.Key kv.Value

    for kv in model.Buffers do
        write "buffer" kv.Key kv.Value

    use scope = new DisposeScope()
    write "inputs" "inputs" (Libtorch.Cat(batches |> List.map (fun b -> b.Inputs) |> List.toArray, 0L))
    write "targets" "targets" (Libtorch.Cat(batches |> List.map (fun b -> b.Targets) |> List.toArray, 0L))

    for kv in model.Prunable do
        manifest.Append($"prunable %s{kv.Key}\n") |> ignore

    let s = model.InputShape

    manifest.Append($"spec %s{model.Name} %d{s.Channels} %d{s.Height} %d{s.Width} %d{model.Classes} %d{batchSize}\n")
    |> ignore

    File.WriteAllText(Path.Combine(dir, "manifest.txt"), manifest.ToString())

let private readFloats (path: string) =
    MemoryMarshal.Cast<byte, float32>(ReadOnlySpan(File.ReadAllBytes path)).ToArray()

/// max |pai − torch| / max |torch| (0 when both are all zero).
let private relativeDifference (a: float32[]) (b: float32[]) =
    if a.Length <> b.Length then
        nan
    else
        let mutable diff = 0.0
        let mutable scale = 0.0

        for i in 0 .. a.Length - 1 do
            diff <- max diff (abs (float a.[i] - float b.[i]))
            scale <- max scale (abs (float b.[i]))

        if scale = 0.0 then diff else diff / scale

/// Wall and CPU seconds per call.
let private measure (f: unit -> unit) (iterations: int) =
    let c0 = cpuSeconds ()
    let w = Stopwatch.StartNew()

    for _ in 1..iterations do
        f ()

    w.Elapsed.TotalSeconds / float iterations, (cpuSeconds () - c0) / float iterations

let private time f iterations = fst (measure f iterations)

/// Median wall seconds and CPU seconds of Pai (a) and PyTorch (b) over `repeats`, alternating
/// A/B and B/A so that drifting load hits both sides alike. Each side returns (wall, cpu).
let private interleaved repeats (a: unit -> float * float) (b: unit -> float * float) =
    let pai, paiCpu, torch, torchCpu =
        ResizeArray(), ResizeArray(), ResizeArray(), ResizeArray()

    let runA () =
        let wall, cpu = a ()
        pai.Add wall
        paiCpu.Add cpu

    let runB () =
        let wall, cpu = b ()
        torch.Add wall
        torchCpu.Add cpu

    for r in 1..repeats do
        if r % 2 = 1 then
            runA ()
            runB ()
        else
            runB ()
            runA ()

    median pai, median torch, median paiCpu / median torchCpu

/// The PyTorch side's answer to `run ...`: (wall, cpu) seconds.
let private torchSeconds (answer: Text.Json.JsonElement) =
    answer.GetProperty("seconds").GetDouble(), answer.GetProperty("cpu_seconds").GetDouble()

/// An option of name=count pairs, e.g. --samples hutch_obd=10,hts=10.
let private counts (args: Args) (option: string) =
    args.List(option, [])
    |> List.map (fun kv ->
        match kv.Split('=') with
        | [| k; v |] -> k, int v
        | _ -> failwithf "--%s takes name=count pairs, got '%s'" option kv)
    |> Map.ofList

/// The benchmark's data and freshly initialized network (seed 0, eval mode) for a model name:
/// Fashion-MNIST for the LeNets, a CIFAR-shaped synthetic set otherwise.
let private dataAndNet (m: string) =
    let data =
        match m with
        | "lenet5"
        | "lenet300" -> DatasetRegistry.FashionMnist(DatasetSplit.Train)
        | _ -> cifarLike 2000 0UL

    let shape = InputShape(data.Channels, data.Height, data.Width)

    let net =
        ModelZoo.Create(m, ModelOptions(InputShape = shape, Classes = data.NumClasses, Seed = 0UL))

    net.Training <- false
    data, net, shape

/// The long-lived PyTorch worker (torch_scoring.py) over the exported weights and batches in `dir`.
let private torchWorker (args: Args) dir threads probes (extra: string list) =
    new LineWorker(
        python args,
        [
            Path.Combine(benchmarksDir (), "torch_scoring.py")
            "--dir"
            dir
            "--threads"
            string threads
            "--oracles"
            oraclesDir ()
            "--probes"
            string probes
        ]
        @ extra
    )

/// Runs `f` on a fresh temporary directory named after `prefix`, deleted afterwards.
let private inTempDirectory (prefix: string) (f: string -> unit) =
    let dir = Directory.CreateTempSubdirectory(prefix).FullName

    try
        f dir
    finally
        try
            Directory.Delete(dir, true)
        with _ ->
            ()

/// The closing tables, one per model, after the medians line.
let private printTables repeats (title: string -> string) (header: string list) tables =
    printfn ""
    printfn "medians over %d repeats; load average at end: %s" repeats (loadAverage ())

    for (m: string), rows in tables do
        printfn ""
        printfn "%s" (title m)
        printTable header rows

/// Pai and PyTorch per criterion and model, A/B then B/A per repeat; prints medians.
let run (args: Args) =
    let models = args.List("models", [ "lenet5"; "resnet20" ])
    let criteria = args.List("criteria", allCriteria)
    let repeats = args.Int("repeats", 3)
    let threads = args.Int("threads", Environment.ProcessorCount)
    let perClass = args.Int("per-class", 10)
    let batchSize = args.Int("scoring-batch", 1)
    let probes = args.Int("probes", 10)
    let minSeconds = args.Float("min-seconds", 0.5)
    Libtorch.SetNumThreads threads

    printfn
        "scoring benchmark: models %s, %d samples per class at batch %d, %d probes, threads %d, %d repeats (A/B interleaved)"
        (String.Join(",", models))
        perClass
        batchSize
        probes
        threads
        repeats

    printfn "load average at start: %s (%d cores)" (loadAverage ()) Environment.ProcessorCount
    let tables = ResizeArray()

    for m in models do
        let data, net, shape = dataAndNet m
        use data = data
        use net = net
        use batches = ScoringSubset.Create(data, perClass, 0UL, batchSize)
        let batchList = List.ofSeq batches

        inTempDirectory "pai-bench-scoring-" (fun dir ->
            export dir net batchList batchSize

            let ctx =
                {
                    Model = net
                    Batches = batchList
                    InputShape = [ int64 shape.Channels; int64 shape.Height; int64 shape.Width ]
                    Seed = 0UL
                    Curvature =
                        { CurvatureOptions.Default with
                            Probes = probes
                        }
                    Mask = None
                }

            use worker =
                torchWorker
                    args
                    dir
                    threads
                    probes
                    [
                        "--synflow-rounds"
                        string (args.Int("synflow-rounds", 100))
                        "--synflow-sparsity"
                        (args.Float("synflow-sparsity", 0.99)).ToString("R", inv)
                    ]

            printfn "%s: %d scoring batches, %d prunable weights" m batchList.Length net.PrunableCount
            let rows = ResizeArray()

            // --criterion-batches hutch_obd=10,hts=10: score those criteria on the first K scoring
            // batches only (both sides), for criteria too slow to repeat on all of them.
            let limits = counts args "criterion-batches"

            for name in criteria do
                let limit =
                    limits
                    |> Map.tryFind name
                    |> Option.defaultValue batchList.Length
                    |> min batchList.Length

                let ctx =
                    { ctx with
                        Batches = List.truncate limit batchList
                    }

                let j = job args ctx name

                let label =
                    if limit < batchList.Length then
                        $"%s{name} (%d{limit} batches)"
                    else
                        name
                // Warm-up and cross-check: both sides compute once on the same weights and data.
                let w = Stopwatch.StartNew()
                let mine = j.Result()
                let warm = w.Elapsed.TotalSeconds
                let path = Path.Combine(dir, $"scores-%s{name}.bin")
                worker.Ask($"dump %s{name} %s{path} %d{limit}") |> ignore
                let check = relativeDifference mine (readFloats path)
                // Cheap criteria are repeated inside one measurement so that it lasts about minSeconds
                // (calibrated on a second, warm call).
                let once = if warm >= minSeconds then warm else time j.Run 1
                let iterations = max 1 (min 1000 (int (ceil (minSeconds / max once 1e-6))))

                let p, t, cpuRatio =
                    interleaved repeats (fun () -> measure j.Run iterations) (fun () ->
                        torchSeconds (worker.Ask($"run %s{name} %d{iterations} %d{limit}")))

                printfn
                    "  %-13s Pai %s s  PyTorch %s s  ratio %s  CPU-time ratio %s  (%d call(s) per measurement; max rel. diff %.1e; load %s)"
                    label
                    (secs p)
                    (secs t)
                    (f2 (p / t))
                    (f2 cpuRatio)
                    iterations
                    check
                    (loadAverage ())

                rows.Add
                    [
                        label
                        secs p
                        secs t
                        f2 (p / t) + (if p / t <= 1.0 then "" else " (>1.0)")
                        f2 cpuRatio
                        check.ToString("0.0e0", inv)
                    ]

            tables.Add((m, List.ofSeq rows)))

    printTables
        repeats
        id
        [
            "criterion"
            "Pai s"
            "PyTorch s"
            "ratio (<=1.0)"
            "CPU-time ratio"
            "max rel. diff"
        ]
        tables

    0

// ---- exact curvature and batched per-sample statistics (issue 12) ------------------------------

/// The criteria `exact-scoring` compares: Pai's name, the worker's name for the paper's algorithm.
let exactCriteria =
    [
        "fisher_obd", "fisher_obd"
        "hutch_obd", "hutch_obd"
        "hts", "hts_t200"
        "snip", "snip"
        "grasp", "grasp"
    ]

/// The scoring samples of `batches` as batches of at most `size` (one large eval-mode batch by default).
let private rebatch (size: int) (batches: Batch list) : Batch list =
    use _scope = new DisposeScope()

    let inputs =
        Libtorch.Cat(batches |> List.map (fun b -> b.Inputs) |> List.toArray, 0L)

    let targets =
        Libtorch.Cat(batches |> List.map (fun b -> b.Targets) |> List.toArray, 0L)

    let n = targets.NumEl

    [
        for start in 0L .. int64 size .. n - 1L ->
            let k = min (int64 size) (n - start)

            {
                Inputs = inputs.Narrow(0L, start, k).Contiguous().DetachFromScope()
                Targets = targets.Narrow(0L, start, k).Contiguous().DetachFromScope()
            }
    ]

/// Pai's batched and exact estimators behind each criterion, on `batches` (eval mode), merged
/// first as a run's statistics merge them (Estimators.mergeBatches) when `merge` is set.
let private exactScores (merge: bool) (model: IModelView) (batches: Batch list) (name: string) : Tensor list =
    use _scope = new DisposeScope()
    let batches = if merge then Estimators.mergeBatches batches else batches
    let ws = [ for kv in model.Prunable -> kv.Value.Detach() ]
    let half (w: Tensor) (d: Tensor) = w.Square() * d * 0.5

    let result =
        match name with
        | "fisher_obd" -> List.map2 half ws (PerSample.fisherDiagonal model batches)
        | "hutch_obd" -> List.map2 half ws (PerSample.exactHessianDiagonal model 200.0 batches)
        | "hts" ->
            let g = Estimators.meanGradient model 200.0 batches
            let h = PerSample.exactHessianDiagonal model 200.0 batches
            List.map3 (fun (w: Tensor) (gi: Tensor) hi -> (w * gi + half w hi).Abs()) ws g h
        | "snip" ->
            List.map2 (fun (w: Tensor) (g: Tensor) -> (w * g).Abs()) ws (Estimators.meanGradient model 1.0 batches)
        | "grasp" ->
            List.map2 (fun (w: Tensor) (hg: Tensor) -> w * hg) ws (Estimators.hessianGradient model 200.0 batches)
        | _ -> failwithf "exact-scoring knows %A, not '%s'" (List.map fst exactCriteria) name

    result |> List.map (fun t -> t.MoveToOuterScope())

// The tensors' values as float32, concatenated in order, to a file (readFloats reads it back):
// one layer's array at a time, so the measured process holds no copy of the whole score.
let private writeFloats (path: string) (ts: Tensor list) =
    use out = File.Create path

    for t in ts do
        use _scope = new DisposeScope()
        out.Write(MemoryMarshal.AsBytes(ReadOnlySpan(t.Detach().To(DType.Float32).Flatten().ToArray<float32>())))

/// Pai's batched/exact estimators against the second-order paper's algorithm in PyTorch (per
/// sample, `probes` Hutchinson probes, T = 200; its per-sample Fisher loop; SNIP and GraSP at
/// batch 1), on the same weights and scoring samples; prints time ratios, each estimator's
/// relative error and Spearman against the exact diagonal, and peak RSS.
let runExact (args: Args) =
    let models = args.List("models", [ "lenet5"; "resnet20" ])

    // Each model in a fresh process, as the PyTorch worker is, so that one model's leftovers
    // (lenet5's data set, the heap it grew) do not raise the next one's RSS (by 24 MB on resnet20).
    if models.Length > 1 then
        let exe, exeArgs = selfCommand ()

        let options =
            [
                for kv in args.Raw do
                    if kv.Key <> "models" then
                        yield! [ "--" + kv.Key; kv.Value ]
            ]

        models
        |> List.map (fun m -> runToExit exe (exeArgs @ [ "exact-scoring"; "--models"; m ] @ options))
        |> List.fold max 0
    else
        let criteria = args.List("criteria", List.map fst exactCriteria)
        let repeats = args.Int("repeats", 3)
        let threads = args.Int("threads", Environment.ProcessorCount)
        let perClass = args.Int("per-class", 10)
        // 0: the scoring batches of 1 a run has, merged as its statistics merge them; N: batches of N.
        let paiBatch = args.Int("pai-batch", 0)
        let merge = paiBatch = 0
        let probes = args.Int("probes", 10)
        Libtorch.SetNumThreads threads

        // --samples hutch_obd=10,hts=10: score those criteria on the first K samples (both sides),
        // for the paper's per-sample Hutchinson, which costs minutes per call on resnet20. The
        // accuracy table uses hutch_obd's samples.
        let sampleLimits = counts args "samples"

        let paiBatching =
            if merge then
                $"merged as a run merges them (up to %d{Estimators.MergedSamples} samples and %d{Estimators.MergedInputElements} input elements)"
            else
                $"at batch %d{paiBatch}"

        printfn
            "exact-scoring benchmark: models %s, %d samples per class; PyTorch: the paper's algorithm at batch 1, %d probes, T=200; Pai: batched/exact, %s; threads %d, %d repeats (A/B interleaved)"
            (String.Join(",", models))
            perClass
            probes
            paiBatching
            threads
            repeats

        printfn "load average at start: %s (%d cores)" (loadAverage ()) Environment.ProcessorCount
        let tables = ResizeArray()
        let accuracy = ResizeArray()

        for m in models do
            let data, net, _ = dataAndNet m
            use net = net
            // The data set is freed once the scoring samples are taken: the PyTorch worker, a fresh
            // process per model, holds only those samples, and so does each side's peak RSS below.
            use subset = (use data = data in ScoringSubset.Create(data, perClass, 0UL, 1))
            let all = List.ofSeq subset

            let samplesOf name =
                sampleLimits
                |> Map.tryFind name
                |> Option.defaultValue all.Length
                |> min all.Length

            let batchesOf name =
                let chosen = List.truncate (samplesOf name) all
                if merge then chosen else rebatch paiBatch chosen

            inTempDirectory "pai-bench-exact-" (fun dir ->
                export dir net all 1

                use worker = torchWorker args dir threads probes []

                printfn
                    "%s: %d scoring samples (PyTorch: batches of 1; Pai: %s), %d prunable weights"
                    m
                    all.Length
                    paiBatching
                    net.PrunableCount

                // Peak RSS counts the scoring alone: the export above and the comparisons below are
                // this harness's work (the comparisons' arrays grew Pai's managed heap by 44-57 MB on
                // resnet20), so both sides write their scores to files while it is measured, and the
                // files are compared after.
                resetPeakRss ()
                let paiStartRss = rssMb ()
                let torchStartRss = worker.Ask("rss").GetProperty("max_rss_mb").GetDouble()
                let file name = Path.Combine(dir, name)
                // Each side's scores of a criterion, written while measured and compared after.
                let scores side name = file $"%s{side}-%s{name}.bin"

                // Accuracy of the curvature estimators against the exact diagonal at T = 200 (the
                // Hutchinson criteria's) and T = 1, all on the same samples.
                let accuracySamples = samplesOf "hutch_obd"

                do
                    use _scope = new DisposeScope()
                    let paiBatches = batchesOf "hutch_obd"

                    let paiBatches =
                        if merge then
                            Estimators.mergeBatches paiBatches
                        else
                            paiBatches

                    writeFloats (file "exact200.bin") (PerSample.exactHessianDiagonal net 200.0 paiBatches)
                    writeFloats (file "exact1.bin") (PerSample.exactHessianDiagonal net 1.0 paiBatches)
                    writeFloats (file "fisher.bin") (PerSample.fisherDiagonal net paiBatches)
                    let hdiag = file "hdiag.bin"
                    worker.Ask($"dump hutch_diag %s{hdiag} %d{accuracySamples}") |> ignore

                let timings = ResizeArray()

                for name in criteria do
                    let torchName = exactCriteria |> List.find (fst >> (=) name) |> snd
                    let k = samplesOf name
                    let paiBatches = batchesOf name
                    let label = $"%s{name} (%d{k})"

                    let run () =
                        exactScores merge net paiBatches name |> List.iter (fun t -> t.Dispose())

                    do
                        use _s = new DisposeScope()
                        writeFloats (scores "pai" name) (exactScores merge net paiBatches name)

                    let theirs = scores "torch" name
                    worker.Ask($"dump %s{torchName} %s{theirs} %d{k}") |> ignore

                    let p, t, cpuRatio =
                        interleaved repeats (fun () -> measure run 1) (fun () ->
                            torchSeconds (worker.Ask($"run %s{torchName} 1 %d{k}")))

                    printfn
                        "  %-16s Pai %s s  PyTorch %s s  ratio %s  CPU-time ratio %s  (load %s)"
                        label
                        (secs p)
                        (secs t)
                        (f3 (p / t))
                        (f3 cpuRatio)
                        (loadAverage ())

                    timings.Add((name, label, p, t, cpuRatio))

                let torchRss = worker.Ask("rss").GetProperty("max_rss_mb").GetDouble()
                let paiRss = peakRssMb ()

                let floats name =
                    readFloats (file name) |> Array.map float

                let estimator what (estimate: float[]) (exact: float[]) =
                    [
                        m
                        what
                        (Stability.relativeError estimate exact).ToString("0.000e0", inv)
                        f3 (Stability.spearman estimate exact)
                    ]

                let exact200 = floats "exact200.bin"

                accuracy.Add(
                    estimator
                        $"paper's Hutchinson (%d{probes} probes/sample, %d{accuracySamples} samples), T=200"
                        (floats "hdiag.bin")
                        exact200
                )

                accuracy.Add(estimator "Pai exact (Gauss-Newton identity), T=200" exact200 exact200)

                accuracy.Add(
                    estimator "empirical Fisher vs exact H at T=1" (floats "fisher.bin") (floats "exact1.bin")
                )

                let rows = ResizeArray()

                for name, label, p, t, cpuRatio in timings do
                    let mine = readFloats (scores "pai" name)
                    let theirs = readFloats (scores "torch" name)

                    rows.Add
                        [
                            label
                            secs p
                            secs t
                            f3 (p / t)
                            f3 cpuRatio
                            (relativeDifference mine theirs).ToString("0.0e0", inv)
                            f3 (Stability.spearman (Array.map float theirs) (Array.map float mine))
                        ]

                rows.Add [ "peak RSS MB"; f1 paiRss; f1 torchRss; f3 (paiRss / torchRss); ""; ""; "" ]
                // What each process held before scoring (runtime, libtorch, model, samples): the
                // peak less this is the scoring's own working set.
                rows.Add
                    [
                        "RSS before scoring MB"
                        f1 paiStartRss
                        f1 torchStartRss
                        f3 (paiStartRss / torchStartRss)
                        ""
                        ""
                        ""
                    ]

                tables.Add((m, List.ofSeq rows)))

        printTables
            repeats
            (sprintf "%s (criterion (samples scored))")
            [
                "criterion"
                "Pai s"
                "PyTorch s"
                "time ratio"
                "CPU-time ratio"
                "max rel. diff"
                "Spearman"
            ]
            tables

        printfn ""
        printfn "curvature estimators against the exact diagonal"
        printTable [ "model"; "estimator"; "relative error"; "Spearman" ] (List.ofSeq accuracy)
        0
