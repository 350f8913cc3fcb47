/// Training throughput and peak RSS, Pai (Trainer.Train over a DataLoader) against a plain
/// PyTorch loop (benchmarks/torch_training.py), each configuration in its own fresh process.
module Pai.Benchmarks.Training

open System
open System.Collections.Generic
open System.Diagnostics
open System.Text.Json
open Pai
open Pai.Torch
open Pai.Host.Data
open Pai.Host.Models
open Pai.Host.Training
open Pai.Benchmarks.Common

/// Default timed steps per model (lenet5 steps are ~10x cheaper than resnet20's; lenet300's take a
/// few milliseconds, so 30 after 5 would time only a process's first, slower steps, and 400 after
/// 50 stay inside one epoch of Fashion-MNIST, 468 batches of 128).
let defaultSteps model =
    match model with
    | "lenet5" -> 200
    | "lenet300" -> 400
    | _ -> 30

let defaultWarmup model =
    match model with
    | "lenet5" -> 20
    | "lenet300" -> 50
    | _ -> 5

/// The data set a model trains on here: Fashion-MNIST for lenet5, CIFAR-shaped synthetic uint8 otherwise.
let dataFor (args: Args) (model: string) =
    match model with
    | "lenet5"
    | "lenet300" -> DatasetRegistry.FashionMnist(DatasetSplit.Train)
    | _ -> cifarLike (args.Int("cifar-count", 50000)) 0UL

/// One Pai configuration in this (fresh) process: warm-up steps, then `steps` timed steps, all
/// inside one Trainer.Train call, then (--eval-batches E) E evaluation batches inside the same call,
/// so that sparse layers evaluate on their kernels; prints a JSON line with images/s, ms per step
/// and per evaluation batch, the layers that ran sparse and VmHWM. The mask is a file
/// (--mask-file, e.g. SNIP's from `sparse-training`) or random at --sparsity; --kernels off|on|auto.
let worker (args: Args) =
    let model = args.Str("model", "lenet5")
    let threads = args.Int("threads", Environment.ProcessorCount)
    let batch = args.Int("batch", 128)
    let warmup = max 1 (args.Int("warmup", defaultWarmup model))
    let steps = args.Int("steps", defaultSteps model)
    let sparsity = args.Float("sparsity", 0.0)
    let maskFile = args.Str("mask-file", "")
    let evalBatches = args.Int("eval-batches", 0)

    let kernels =
        match args.Str("kernels", "off") with
        | "on" -> SparseKernelMode.On
        | "auto" -> SparseKernelMode.Auto
        | _ -> SparseKernelMode.Off

    Libtorch.SetNumThreads threads

    use data = dataFor args model
    let shape = InputShape(data.Channels, data.Height, data.Width)

    use net =
        ModelZoo.Create(model, ModelOptions(InputShape = shape, Classes = data.NumClasses, Seed = 0UL))

    use loader =
        new DataLoader(data, batch, shuffle = true, seed = 0UL, dropLast = true)

    let perEpoch = loader.BatchCount
    let total = warmup + steps
    let epochs = (total + perEpoch - 1) / perEpoch

    // Pruned training applies the mask to weights and gradients every step: optional.
    let mask =
        if maskFile <> "" then
            let specs =
                net.Prunable
                |> Seq.map (fun kv -> Pai.Host.Checkpoints.TensorSpec(kv.Key, DType.Bool, kv.Value.Shape))

            use file = Pai.Host.Checkpoints.Safetensors.Load(maskFile, specs, strict = true)
            let d = Dictionary<string, Tensor>()

            for kv in net.Prunable do
                d.[kv.Key] <- file.Take(kv.Key).DetachFromScope()

            Some d
        elif sparsity > 0.0 then
            use gen = new Generator(1UL)
            let d = Dictionary<string, Tensor>()

            for kv in net.Prunable do
                use u = Libtorch.Rand(kv.Value.Shape, gen)
                d.[kv.Key] <- u.Ge(sparsity).DetachFromScope()

            Some d
        else
            None

    let options =
        TrainOptions(
            Epochs = epochs,
            Optimizer = OptimizerKind.Sgd,
            LearningRate = 0.01,
            Momentum = 0.9,
            WeightDecay = 5e-4,
            Schedule = LrSchedule.Constant,
            // Dense masked by default, as the PyTorch side trains.
            SparseKernels = kernels
        )

    let watch = Stopwatch.StartNew()
    let mutable t0 = nan
    let mutable t1 = nan
    let mutable c0 = nan
    let mutable c1 = nan
    let mutable t2 = nan
    let mutable sparseLayers = 0

    let progress =
        Action<TrainProgress>(fun p ->
            if isNull (box p.Finished) then
                let step = (p.Epoch - 1) * perEpoch + p.Batch

                if step = warmup then
                    t0 <- watch.Elapsed.TotalSeconds
                    c0 <- cpuSeconds ()
                elif step = total then
                    t1 <- watch.Elapsed.TotalSeconds
                    c1 <- cpuSeconds ()
                    sparseLayers <- p.SparseLayers.Sparse.Count
            elif Double.IsNaN t2 then
                t2 <- watch.Elapsed.TotalSeconds)

    let epoch =
        Func<int, IEnumerable<Batch>>(fun e -> loader.Epoch e |> Seq.truncate (total - e * perEpoch))

    let maskArg: IReadOnlyDictionary<string, Tensor> | null =
        match mask with
        | Some d -> d
        | None -> null

    use evalLoader = new DataLoader(data, batch, shuffle = false, dropLast = true)
    // The batches of the last evaluation, which the data set may hold fewer of than asked for.
    let evaluated = ref 0

    let test: Func<IEnumerable<Batch>> | null =
        if evalBatches > 0 then
            Func<IEnumerable<Batch>>(fun () ->
                evaluated.Value <- 0

                evalLoader.Epoch 0
                |> Seq.truncate evalBatches
                |> Seq.map (fun b ->
                    evaluated.Value <- evaluated.Value + 1
                    b))
        else
            null

    // The process's peak so far (start-up: data, model, mask), then a fresh peak for the training
    // alone, counted above what the process holds when it starts: the training's working set.
    let startupPeak = peakRssMb ()
    resetPeakRss ()
    let before = rssMb ()
    Trainer.Train(net, maskArg, epoch, test, options, progress) |> ignore
    let trainingPeak = peakRssMb ()

    mask
    |> Option.iter (fun d ->
        for t in d.Values do
            t.Dispose())

    let seconds = t1 - t0
    let imgs = float (steps * batch) / seconds

    // The epoch's last report comes after its evaluation: the time since the last step is evaluation.
    let evalMs =
        if evaluated.Value > 0 then
            (t2 - t1) * 1000.0 / float evaluated.Value
        else
            0.0

    printfn
        "{\"side\":\"pai\",\"model\":\"%s\",\"img_s\":%s,\"seconds\":%s,\"cpu_seconds\":%s,\"peak_rss_mb\":%s,\"training_rss_mb\":%s,\"threads\":%d,\"step_ms\":%s,\"eval_ms\":%s,\"sparse_layers\":%d}"
        model
        (imgs.ToString("R", inv))
        (seconds.ToString("R", inv))
        ((c1 - c0).ToString("R", inv))
        ((max startupPeak trainingPeak).ToString("R", inv))
        ((trainingPeak - before).ToString("R", inv))
        Libtorch.NumThreads
        ((seconds * 1000.0 / float steps).ToString("R", inv))
        (evalMs.ToString("R", inv))
        sparseLayers

    0

type private Sample =
    {
        ImgS: float
        CpuImgS: float
        RssMb: float
    }

let private read (j: JsonElement) =
    let imgs = j.GetProperty("img_s").GetDouble()

    {
        ImgS = imgs
        // images per CPU-second (user + system of all threads): less sensitive to other load
        CpuImgS =
            imgs * j.GetProperty("seconds").GetDouble()
            / j.GetProperty("cpu_seconds").GetDouble()
        RssMb = j.GetProperty("peak_rss_mb").GetDouble()
    }

/// The options both sides' workers take for model `m`, followed by `mask` (how it is masked).
let private workerArgs (args: Args) (m: string) (threads: int) (batch: int) (mask: string list) =
    [
        "--model"
        m
        "--threads"
        string threads
        "--batch"
        string batch
        "--steps"
        string (args.Int("steps", defaultSteps m))
        "--warmup"
        string (args.Int("warmup", defaultWarmup m))
        "--cifar-count"
        string (args.Int("cifar-count", 50000))
    ]
    @ mask

/// One PyTorch worker (benchmarks/torch_training.py) with these options: its JSON line.
let private torchWorker (args: Args) (options: string list) =
    runForJson
        (python args)
        ([
            IO.Path.Combine(benchmarksDir (), "torch_training.py")
            "--oracles"
            oraclesDir ()
            "--fashion-mnist"
            DatasetRegistry.FashionMnistDirectory
         ]
         @ options)

/// Interleaves fresh Pai and PyTorch processes (A/B, then B/A) per model and repeat; prints medians.
let run (args: Args) =
    let models = args.List("models", [ "lenet5"; "resnet20" ])
    let repeats = args.Int("repeats", 5)
    let threads = args.Int("threads", Environment.ProcessorCount)
    let batch = args.Int("batch", 128)
    let sparsity = args.Float("sparsity", 0.0)
    let exe, exeArgs = selfCommand ()

    printfn
        "training benchmark: models %s, batch %d, threads %d, %d repeats (A/B interleaved), sparsity %g"
        (String.Join(",", models))
        batch
        threads
        repeats
        sparsity

    printfn "load average at start: %s (%d cores)" (loadAverage ()) Environment.ProcessorCount

    let results = Dictionary<string * string, ResizeArray<Sample>>()

    for r in 1..repeats do
        for m in models do
            let common =
                workerArgs args m threads batch [ "--sparsity"; sparsity.ToString("R", inv) ]

            let pai () =
                runForJson exe (exeArgs @ [ "training-worker" ] @ common)

            let torch () = torchWorker args common

            let order =
                if r % 2 = 1 then
                    [ "pai", pai; "pytorch", torch ]
                else
                    [ "pytorch", torch; "pai", pai ]

            for side, f in order do
                let s = read (f ())

                if not (results.ContainsKey((m, side))) then
                    results.[(m, side)] <- ResizeArray()

                results.[(m, side)].Add s

                printfn
                    "  repeat %d %-8s %-7s %8.1f img/s  %8.1f img/CPU-s  peak RSS %7.1f MB  (load %s)"
                    r
                    m
                    side
                    s.ImgS
                    s.CpuImgS
                    s.RssMb
                    (loadAverage ())

    printfn ""
    printfn "medians over %d repeats; load average at end: %s" repeats (loadAverage ())

    let rows =
        [
            for m in models ->
                let p = results.[(m, "pai")]
                let t = results.[(m, "pytorch")]

                let pi, ti =
                    median (p |> Seq.map (fun s -> s.ImgS)), median (t |> Seq.map (fun s -> s.ImgS))

                let pr, tr =
                    median (p |> Seq.map (fun s -> s.RssMb)), median (t |> Seq.map (fun s -> s.RssMb))

                let pc, tc =
                    median (p |> Seq.map (fun s -> s.CpuImgS)), median (t |> Seq.map (fun s -> s.CpuImgS))

                [
                    m
                    f1 pi
                    f1 ti
                    f2 (pi / ti) + (if pi / ti >= 1.0 then "" else " (<1.0)")
                    f1 pr
                    f1 tr
                    f2 (pr / tr) + (if pr / tr <= 1.1 then "" else " (>1.1)")
                    f2 (pc / tc)
                ]
        ]

    printTable
        [
            "model"
            "Pai img/s"
            "PyTorch img/s"
            "ratio (>=1.0)"
            "Pai RSS MB"
            "PyTorch RSS MB"
            "ratio (<=1.1)"
            "img/CPU-s ratio"
        ]
        rows

    0

// ---- sparse-training: whole training steps and evaluation on SNIP masks, kernels on/auto/off ------

/// SNIP's mask (|θ·∂L/∂θ| on one training batch at the initialization the workers train from,
/// ranked globally) at `sparsity`, written to `path`; returns the multiply-add limit (the model's
/// dense multiply-adds over those left, forward and backward alike).
let private snipMask (args: Args) (model: string) (batch: int) (sparsity: float) (path: string) =
    use scope = new DisposeScope()
    use data = dataFor args model
    let shape = InputShape(data.Channels, data.Height, data.Width)

    use net =
        ModelZoo.Create(model, ModelOptions(InputShape = shape, Classes = data.NumClasses, Seed = 0UL))

    use loader = new DataLoader(data, batch, shuffle = true, seed = 0UL)
    let b = loader.Epoch 0 |> Seq.head
    net.Training <- true
    (Functional.CrossEntropy(net.Forward(b.Inputs), b.Targets)).Backward()
    let weights = net.Prunable |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq

    let scores =
        weights
        |> List.map (fun (_, w) -> (w.Detach() * (nonNull w.Grad).Detach()).Abs().Reshape(-1L))

    let all = Libtorch.Cat(scores)
    let keep = max 1L (int64 (Math.Round(float all.NumEl * (1.0 - sparsity))))
    let struct (top, _) = all.TopK(keep)
    let threshold: Tensor = top.Min()

    let masks =
        List.map2 (fun (name, w: Tensor) (s: Tensor) -> name, s.Ge(threshold).Reshape(w.Shape)) weights scores

    Pai.Host.Checkpoints.Safetensors.Save(path, masks |> Seq.map (fun (n, t) -> struct (n, t)))

    let layers =
        masks
        |> List.map (fun (name, m: Tensor) -> Pai.Host.Runs.LayerDensityRecord(name, m.CountNonZero(), m.NumEl))

    let summary =
        Pai.Host.Runs.PruneSummary("snip", layers, [], 1, 1.0 - sparsity).WithFlops(net.LayerFlops())

    1.0 / summary.RemainingFlopsFraction.Value

type private StepSample =
    {
        StepMs: float
        EvalMs: float
        RssMb: float
        /// Peak RSS while training, above the RSS at its start.
        TrainingRssMb: float
        SparseLayers: int
    }

/// For each model and sparsity, SNIP's mask; then per thread count and repeat, fresh processes
/// interleaved in rotating order: Pai with the sparse kernels on, auto and off (dense masked) and
/// PyTorch dense masked on the same mask. Prints medians as speedups beside the multiply-add limit.
let runSparse (args: Args) =
    let models = args.List("models", [ "lenet300"; "lenet5"; "resnet20"; "vgg11" ])

    let sparsities =
        args.List("sparsities", [ "0.9"; "0.98"; "0.995" ]) |> List.map float

    let threadCounts = args.List("threads", [ "1"; "2" ]) |> List.map int
    let repeats = args.Int("repeats", 5)
    let batch = args.Int("batch", 128)
    let evalBatches = args.Int("eval-batches", 20)
    let exe, exeArgs = selfCommand ()

    let dir =
        IO.Path.Combine(IO.Path.GetTempPath(), "pai-sparse-training-" + string Environment.ProcessId)

    IO.Directory.CreateDirectory dir |> ignore

    printfn
        "sparse-training benchmark: SNIP masks, batch %d, SGD momentum 0.9 wd 5e-4, %d evaluation batches, median of %d interleaved repeats"
        batch
        evalBatches
        repeats

    printfn "load average at start: %s (%d cores)" (loadAverage ()) Environment.ProcessorCount
    let variants = [ "on"; "auto"; "off"; "pytorch" ]
    let rows = ResizeArray<string list>()

    try
        for m in models do
            for sparsity in sparsities do
                let mask = IO.Path.Combine(dir, $"{m}-{sparsity}.safetensors")
                let limit = snipMask args m batch sparsity mask

                for threads in threadCounts do
                    let samples = Dictionary<string, ResizeArray<StepSample>>()

                    for r in 1..repeats do
                        let common =
                            workerArgs
                                args
                                m
                                threads
                                batch
                                [ "--mask-file"; mask; "--eval-batches"; string evalBatches ]

                        let order = List.permute (fun i -> (i + r - 1) % variants.Length) variants

                        for v in order do
                            let j =
                                if v = "pytorch" then
                                    torchWorker args common
                                else
                                    runForJson exe (exeArgs @ [ "training-worker"; "--kernels"; v ] @ common)

                            let s =
                                {
                                    StepMs = j.GetProperty("step_ms").GetDouble()
                                    EvalMs = j.GetProperty("eval_ms").GetDouble()
                                    RssMb = j.GetProperty("peak_rss_mb").GetDouble()
                                    TrainingRssMb = j.GetProperty("training_rss_mb").GetDouble()
                                    SparseLayers =
                                        match j.TryGetProperty "sparse_layers" with
                                        | true, n -> n.GetInt32()
                                        | _ -> 0
                                }

                            if not (samples.ContainsKey v) then
                                samples.[v] <- ResizeArray()

                            samples.[v].Add s

                            printfn
                                "  %s %g%% %d thread(s) repeat %d %-7s step %8.2f ms  eval %8.2f ms  peak RSS %7.1f MB, training %6.1f MB  (load %s)"
                                m
                                (sparsity * 100.0)
                                threads
                                r
                                v
                                s.StepMs
                                s.EvalMs
                                s.RssMb
                                s.TrainingRssMb
                                (loadAverage ())

                    let med v (f: StepSample -> float) = median (samples.[v] |> Seq.map f)
                    let step v = med v (fun s -> s.StepMs)
                    let eval v = med v (fun s -> s.EvalMs)
                    let ratio (a: float) (b: float) = f2 (a / b) + "x"

                    rows.Add
                        [
                            m
                            (sparsity * 100.0).ToString("G4", inv) + "%"
                            string threads
                            f1 limit + "x"
                            f2 (step "off")
                            f2 (step "pytorch")
                            ratio (step "off") (step "on")
                            ratio (step "off") (step "auto")
                            ratio (step "pytorch") (step "on")
                            ratio (step "pytorch") (step "auto")
                            ratio (eval "off") (eval "on")
                            ratio (eval "off") (eval "auto")
                            $"""{samples.["auto"].[0].SparseLayers}/{samples.["on"].[0].SparseLayers}"""
                            String.Join(" / ", variants |> List.map (fun v -> f1 (med v (fun s -> s.RssMb))))
                            String.Join(" / ", variants |> List.map (fun v -> f1 (med v (fun s -> s.TrainingRssMb))))
                        ]
    finally
        try
            IO.Directory.Delete(dir, true)
        with :? IO.IOException ->
            ()

    printfn ""
    printfn "medians; speedup = dense time / sparse time; load average at end: %s" (loadAverage ())

    printTable
        [
            "model"
            "sparsity"
            "threads"
            "madd limit"
            "Pai dense step ms"
            "PyTorch step ms"
            "on vs Pai"
            "auto vs Pai"
            "on vs PyTorch"
            "auto vs PyTorch"
            "eval on"
            "eval auto"
            "sparse layers auto/on"
            "peak RSS MB on/auto/off/PyTorch"
            "training RSS MB on/auto/off/PyTorch"
        ]
        (List.ofSeq rows)

    0
