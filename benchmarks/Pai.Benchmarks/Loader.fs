/// The image-folder loader (decode + augment + batch) against the same pipeline in PIL + numpy
/// (benchmarks/pil_loader.py), and whether a resnet18 training step at 224 waits for it.
module Pai.Benchmarks.Loader

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open Pai
open Pai.Torch
open Pai.Host.Data
open Pai.Host.Models
open Pai.Host.Training
open Pai.Benchmarks.Common

/// A generated ImageNet-layout folder of `count` side×side JPEGs (quality 90) in `classes` class
/// folders: gradients plus seeded per-pixel noise, so the files have photo-like entropy. Reused
/// when it already exists.
let generate (root: string) (count: int) (side: int) (classes: int) =
    let marker = Path.Combine(root, "complete")

    if not (File.Exists marker) then
        let rng = Random(17)

        for i in 0 .. count - 1 do
            let folder = Path.Combine(root, "train", sprintf "n%08d" (i % classes))
            Directory.CreateDirectory folder |> ignore
            let pixels = Array.zeroCreate<byte>(side * side * 3)

            for y in 0 .. side - 1 do
                for x in 0 .. side - 1 do
                    let o = (y * side + x) * 3
                    let noise () = rng.Next(-24, 25)
                    pixels.[o] <- byte (Math.Clamp(255 * x / side + noise (), 0, 255))
                    pixels.[o + 1] <- byte (Math.Clamp(255 * y / side + noise (), 0, 255))
                    pixels.[o + 2] <- byte (Math.Clamp(((x + y + i * 7) % 97) * 2 + noise (), 0, 255))

            File.WriteAllBytes(
                Path.Combine(folder, sprintf "img%05d.JPEG" i),
                Jpeg.Encode(RgbImage(side, side, pixels), 90)
            )

        File.WriteAllText(marker, "")

    Path.Combine(root, "train")

/// Images/s of one ImageFolderLoader epoch (drop-last batches), batches copied into tensors and freed.
/// The ImageNet training pipeline (random-resized crop + flip, drop-last batches) over `folder`.
let private trainLoader (folder: ImageFolder) (batch: int) (size: int) (threads: int) (seed: uint64) =
    let info = DatasetRegistry.Info "imagenet"

    new ImageFolderLoader(
        folder,
        batch,
        ImagePipeline.Train,
        info.Mean,
        info.Std,
        size = size,
        seed = seed,
        dropLast = true,
        threads = threads
    )

let paiEpoch (folder: ImageFolder) (batch: int) (size: int) (threads: int) (epoch: int) =
    let loader = trainLoader folder batch size threads 0UL

    let watch = Stopwatch.StartNew()
    let mutable images = 0

    for b in loader.Epoch epoch do
        images <- images + int b.Targets.NumEl
        b.Inputs.Dispose()
        b.Targets.Dispose()

    float images / watch.Elapsed.TotalSeconds

/// resnet18 (ImageNet stem) trained by Trainer.Train on the loader's batches: seconds each step
/// waited for its batch against seconds of the step itself (the first step is a warm-up).
let starvation (folder: ImageFolder) (batch: int) (size: int) (threads: int) (steps: int) =
    let loader = trainLoader folder batch size threads 1UL

    use net =
        ModelZoo.Create(
            "resnet18",
            ModelOptions(InputShape = InputShape(3, size, size), Classes = folder.Classes.Count)
        )

    let waits = List<float>()
    let stepTimes = List<float>()

    let timed (e: int) : IEnumerable<Batch> =
        seq {
            use it = (loader.Epoch e).GetEnumerator()
            let watch = Stopwatch()
            let mutable go = true
            let mutable last = nan

            while go do
                if not (Double.IsNaN last) then
                    stepTimes.Add(Stopwatch.GetElapsedTime(int64 last).TotalSeconds)

                watch.Restart()
                go <- it.MoveNext()

                if go then
                    waits.Add watch.Elapsed.TotalSeconds
                    last <- float (Stopwatch.GetTimestamp())
                    yield it.Current
        }

    let options =
        TrainOptions(
            Epochs = 1,
            Optimizer = OptimizerKind.Sgd,
            LearningRate = 0.01,
            Momentum = 0.9,
            WeightDecay = 5e-4,
            Schedule = LrSchedule.Constant,
            MaxBatchesPerEpoch = Nullable steps
        )

    Trainer.Train(net, null, Func<int, IEnumerable<Batch>>(fun e -> timed e |> Seq.truncate steps), null, options)
    |> ignore
    // Steps after the first (warm-up); the last step's time is taken when the sequence is asked again.
    let w = waits |> Seq.skip 1 |> Seq.toArray
    let s = stepTimes |> Seq.skip 1 |> Seq.toArray
    Array.average w, (if s.Length > 0 then Array.average s else nan)

let run (args: Args) =
    let count = args.Int("images", 512)
    let side = args.Int("side", 224)
    let size = args.Int("size", 224)
    let threads = args.Int("threads", 2)
    let batch = args.Int("batch", 64)
    let repeats = args.Int("repeats", 3)
    let steps = args.Int("steps", 4)

    let root =
        args.Str("folder", Path.Combine(Path.GetTempPath(), sprintf "pai-loader-bench-%d-%d" side count))

    Libtorch.SetNumThreads threads
    printfn "load average at start: %s" (loadAverage ())
    let trainDir = generate root count side 8
    let folder = ImageFolder.ImageNet(root, DatasetSplit.Train, "")

    printfn
        "%d JPEGs %dx%d in %s (%.1f MB); batch %d, output %d, %d threads"
        folder.Samples.Count
        side
        side
        trainDir
        (float (
            Directory.EnumerateFiles(trainDir, "*.JPEG", SearchOption.AllDirectories)
            |> Seq.sumBy (fun f -> FileInfo(f).Length)
         )
         / 1e6)
        batch
        size
        threads

    paiEpoch folder batch size threads 99 |> ignore // warm-up: JIT, page cache
    let script = Path.Combine(benchmarksDir (), "pil_loader.py")

    let pil () =
        let j =
            runForJson
                (python args)
                [
                    script
                    trainDir
                    "--threads"
                    string threads
                    "--batch"
                    string batch
                    "--size"
                    string size
                ]

        j.GetProperty("img_s").GetDouble()

    let pai = List<float>()
    let pilRates = List<float>()

    for r in 0 .. repeats - 1 do
        if r % 2 = 0 then
            pai.Add(paiEpoch folder batch size threads r)
            pilRates.Add(pil ())
        else
            pilRates.Add(pil ())
            pai.Add(paiEpoch folder batch size threads r)

        printfn
            "repeat %d: pai %s img/s, pil %s img/s (load %s)"
            (r + 1)
            (f1 pai.[r])
            (f1 pilRates.[r])
            (loadAverage ())

    printTable
        [ "loader"; "pai img/s"; "pil img/s"; "ratio (>=1.0)" ]
        [
            [
                sprintf "train %d threads" threads
                f1 (median pai)
                f1 (median pilRates)
                f2 (median pai / median pilRates)
            ]
        ]

    if steps > 1 then
        let wait, step = starvation folder batch size threads steps
        let loaderPerBatch = float batch / median pai

        printfn
            "resnet18 %dx%d batch %d: step %s s, wait for the batch %s s per step; loader alone %s s per batch (%s)"
            size
            size
            batch
            (secs step)
            (secs wait)
            (secs loaderPerBatch)
            (if loaderPerBatch < step then "not starved" else "STARVED")

    printfn "load average at end: %s" (loadAverage ())
    0
