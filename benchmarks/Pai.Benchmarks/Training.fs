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

/// Default timed steps per model (lenet5 steps are ~10x cheaper than resnet20's).
let defaultSteps model =
    match model with
    | "lenet5" -> 200
    | _ -> 30

let defaultWarmup model =
    match model with
    | "lenet5" -> 20
    | _ -> 5

/// The data set a model trains on here: Fashion-MNIST for lenet5, CIFAR-shaped synthetic uint8 otherwise.
let dataFor (args: Args) (model: string) =
    match model with
    | "lenet5"
    | "lenet300" -> DatasetRegistry.FashionMnist(DatasetSplit.Train)
    | _ -> cifarLike (args.Int("cifar-count", 50000)) 0UL

/// One Pai configuration in this (fresh) process: warm-up steps, then `steps` timed steps, all
/// inside one Trainer.Train call; prints a JSON line with images/s and VmHWM.
let worker (args: Args) =
    let model = args.Str("model", "lenet5")
    let threads = args.Int("threads", Environment.ProcessorCount)
    let batch = args.Int("batch", 128)
    let warmup = max 1 (args.Int("warmup", defaultWarmup model))
    let steps = args.Int("steps", defaultSteps model)
    let sparsity = args.Float("sparsity", 0.0)
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
        if sparsity > 0.0 then
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
            // Dense masked, as the PyTorch side trains (the sparse kernels have their own benchmark).
            SparseKernels = SparseKernelMode.Off
        )

    let watch = Stopwatch.StartNew()
    let mutable t0 = nan
    let mutable t1 = nan
    let mutable c0 = nan
    let mutable c1 = nan

    let progress =
        Action<TrainProgress>(fun p ->
            if isNull (box p.Finished) then
                let step = (p.Epoch - 1) * perEpoch + p.Batch

                if step = warmup then
                    t0 <- watch.Elapsed.TotalSeconds
                    c0 <- cpuSeconds ()
                elif step = total then
                    t1 <- watch.Elapsed.TotalSeconds
                    c1 <- cpuSeconds ())

    let epoch =
        Func<int, IEnumerable<Batch>>(fun e -> loader.Epoch e |> Seq.truncate (total - e * perEpoch))

    let maskArg: IReadOnlyDictionary<string, Tensor> | null =
        match mask with
        | Some d -> d
        | None -> null

    Trainer.Train(net, maskArg, epoch, null, options, progress) |> ignore

    mask
    |> Option.iter (fun d ->
        for t in d.Values do
            t.Dispose())

    let seconds = t1 - t0
    let imgs = float (steps * batch) / seconds

    printfn
        "{\"side\":\"pai\",\"model\":\"%s\",\"img_s\":%s,\"seconds\":%s,\"cpu_seconds\":%s,\"peak_rss_mb\":%s,\"threads\":%d}"
        model
        (imgs.ToString("R", inv))
        (seconds.ToString("R", inv))
        ((c1 - c0).ToString("R", inv))
        ((peakRssMb ()).ToString("R", inv))
        Libtorch.NumThreads

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

/// Interleaves fresh Pai and PyTorch processes (A/B, then B/A) per model and repeat; prints medians.
let run (args: Args) =
    let models = args.List("models", [ "lenet5"; "resnet20" ])
    let repeats = args.Int("repeats", 5)
    let threads = args.Int("threads", Environment.ProcessorCount)
    let batch = args.Int("batch", 128)
    let sparsity = args.Float("sparsity", 0.0)
    let exe, exeArgs = selfCommand ()
    let script = IO.Path.Combine(benchmarksDir (), "torch_training.py")

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
            let steps = args.Int("steps", defaultSteps m)
            let warmup = args.Int("warmup", defaultWarmup m)

            let common =
                [
                    "--model"
                    m
                    "--threads"
                    string threads
                    "--batch"
                    string batch
                    "--steps"
                    string steps
                    "--warmup"
                    string warmup
                    "--sparsity"
                    sparsity.ToString("R", inv)
                    "--cifar-count"
                    string (args.Int("cifar-count", 50000))
                ]

            let pai () =
                runForJson exe (exeArgs @ [ "training-worker" ] @ common)

            let torch () =
                runForJson
                    (python args)
                    ([
                        script
                        "--oracles"
                        oraclesDir ()
                        "--fashion-mnist"
                        DatasetRegistry.FashionMnistDirectory
                     ]
                     @ common)

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
