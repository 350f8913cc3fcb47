/// Per-layer forward + backward time of the sparse kernels against the dense masked layer that
/// training runs today (dense product, gradient multiplied by the mask), on the layer shapes of
/// lenet5, lenet300, resnet20 and vgg11 at random-uniform and SNIP-like per-layer densities, with each
/// mask's multiply-add limit (dense multiply-adds over kept ones) as the yardstick.
module Pai.Benchmarks.SparseKernels

open System
open System.Diagnostics
open Pai.Torch
open Pai.Benchmarks.Common

type private F = Functional

type private Shape =
    | Conv of inC: int64 * outC: int64 * kernel: int64 * side: int64 * stride: int * padding: int
    | Dense of inF: int64 * outF: int64

/// A layer of a model: its shape and whether its input needs a gradient (not for the first layer).
type private Layer =
    {
        Name: string
        Shape: Shape
        InputGrad: bool
    }

/// A model's layers in order: the first one's input is the data, which needs no gradient.
let private chain (layers: (string * Shape) list) =
    layers
    |> List.mapi (fun i (name, shape) ->
        {
            Name = name
            Shape = shape
            InputGrad = i > 0
        })

let private models =
    [
        "lenet5",
        chain
            [
                "conv1", Conv(1L, 20L, 5L, 28L, 1, 0)
                "conv2", Conv(20L, 50L, 5L, 12L, 1, 0)
                "fc1", Dense(800L, 500L)
                "fc2", Dense(500L, 10L)
            ]
        "lenet300", chain [ "fc1", Dense(784L, 300L); "fc2", Dense(300L, 100L); "fc3", Dense(100L, 10L) ]
        // One convolution of each shape resnet20 and vgg11 have on CIFAR-10 (3×3, padding 1).
        "resnet20",
        chain
            [
                "conv1", Conv(3L, 16L, 3L, 32L, 1, 1)
                "stage1", Conv(16L, 16L, 3L, 32L, 1, 1)
                "stage2-down", Conv(16L, 32L, 3L, 32L, 2, 1)
                "stage2", Conv(32L, 32L, 3L, 16L, 1, 1)
                "stage3-down", Conv(32L, 64L, 3L, 16L, 2, 1)
                "stage3", Conv(64L, 64L, 3L, 8L, 1, 1)
            ]
        "vgg11",
        chain
            [
                "conv1", Conv(3L, 64L, 3L, 32L, 1, 1)
                "conv2", Conv(64L, 128L, 3L, 16L, 1, 1)
                "conv3", Conv(128L, 256L, 3L, 8L, 1, 1)
                "conv4", Conv(256L, 256L, 3L, 8L, 1, 1)
                "conv5", Conv(256L, 512L, 3L, 4L, 1, 1)
                "conv6", Conv(512L, 512L, 3L, 4L, 1, 1)
                "conv7", Conv(512L, 512L, 3L, 2L, 1, 1)
            ]
    ]

/// Per-layer densities of each pattern. SNIP at 98%: lenet5 as measured on Fashion-MNIST (early and
/// last layers kept far denser than 2%), lenet300 from `pai prune -c snip -s 0.98 -d synthetic`,
/// resnet20 and vgg11 from `sparse-training`'s masks.
let private patterns =
    [
        "uniform-90", (fun (_: string) (layers: Layer list) -> layers |> List.map (fun _ -> 0.10))
        "uniform-98", (fun _ layers -> layers |> List.map (fun _ -> 0.02))
        "uniform-99.5", (fun _ layers -> layers |> List.map (fun _ -> 0.005))
        "snip-98",
        (fun model _ ->
            match model with
            | "lenet5" -> [ 0.65; 0.129; 0.0098; 0.228 ]
            | "lenet300" -> [ 0.0069; 0.1067; 0.495 ]
            // resnet20: each stage's layers averaged; its last stage keeps (almost) nothing
            | "resnet20" -> [ 0.669; 0.245; 0.0881; 0.0118; 0.0005; 0.0 ]
            | "vgg11" -> [ 0.8756; 0.4679; 0.1883; 0.0759; 0.0193; 0.0024; 0.0033 ]
            | _ -> [])
    ]

let private weightShape =
    function
    | Conv(c, o, k, _, _, _) -> [| o; c; k; k |]
    | Dense(i, o) -> [| o; i |]

/// Input shape and dense multiply-adds of one forward pass.
let private inputAndMadds (batch: int64) =
    function
    | Conv(c, o, k, side, stride, padding) ->
        let out = (side + 2L * int64 padding - k) / int64 stride + 1L
        [| batch; c; side; side |], float (batch * o * out * out * c * k * k)
    | Dense(i, o) -> [| batch; i |], float (batch * i * o)

/// One layer at one density, ready to run either way.
type private Bench(layer: Layer, density: float, batch: int64, seed: uint64, forwardOnly: bool) =
    let g = new Generator(seed)
    let wShape = weightShape layer.Shape
    let inShape, madds = inputAndMadds batch layer.Shape
    let weight = Libtorch.Randn(wShape, g).DetachFromScope()
    let mask = Libtorch.Rand(wShape, g).Lt(density).To(DType.Float32).DetachFromScope()
    let pattern = SparsePattern.FromMask(mask)
    let values = pattern.Gather(weight).DetachFromScope()
    let bias = Libtorch.Randn([| wShape.[0] |], g).DetachFromScope()
    let input = Libtorch.Randn(inShape, g).DetachFromScope()

    let gradOutput =
        (match layer.Shape with
         | Conv(_, _, _, _, stride, padding) -> F.Conv2d(input, weight, bias, stride, padding)
         | Dense _ -> F.Linear(input, weight, bias))
            .DetachFromScope()

    /// One forward + backward (or, evaluating, one forward without gradients): dense masked (None)
    /// or sparse in a convolution layout.
    let step (sparse: SparseConvLayout option) =
        use _ = new DisposeScope()
        use _: IDisposable | null = if forwardOnly then Libtorch.NoGrad() else null

        let x =
            if layer.InputGrad then
                input.Detach().RequiresGrad_()
            else
                input

        let w = (if sparse.IsSome then values else weight).Detach().RequiresGrad_()
        let b = bias.Detach().RequiresGrad_()

        let y =
            match layer.Shape, sparse with
            | Conv(_, _, _, _, s, p), Some layout -> F.SparseConv2d(x, w, pattern, b, s, p, layout)
            | Conv(_, _, _, _, s, p), None -> F.Conv2d(x, w, b, s, p)
            | Dense _, Some _ -> F.SparseLinear(x, w, pattern, b)
            | Dense _, None -> F.Linear(x, w, b)

        if not forwardOnly then
            let leaves = if layer.InputGrad then [| x; w; b |] else [| w; b |]
            let grads = Autograd.Grad([| y |], leaves, [| gradOutput |])
            // What the masked training loop does with a dense weight's gradient.
            if sparse.IsNone then
                (nonNull grads.[grads.Length - 2]).Mul_(mask) |> ignore

    member _.Kept = pattern.Kept
    member _.Density = float pattern.Kept / float mask.NumEl
    member _.Madds = madds

    /// Seconds per step (forward + backward, or forward), timed over enough iterations to take ~40 ms.
    member _.Time(sparse: SparseConvLayout option, iterations: int) =
        let cpu0 = cpuSeconds ()
        let watch = Stopwatch.StartNew()

        for _ in 1..iterations do
            step sparse

        watch.Elapsed.TotalSeconds / float iterations, (cpuSeconds () - cpu0) / float iterations

    /// The variants to time: dense masked, then each sparse layout that applies.
    member _.Variants =
        match layer.Shape with
        | Conv _ -> [ None; Some SparseConvLayout.BatchInnermost; Some SparseConvLayout.Rows ]
        | Dense _ -> [ None; Some SparseConvLayout.BatchInnermost ]

    member this.Calibrate() =
        let once =
            this.Variants
            |> List.map (fun v ->
                step v
                fst (this.Time(v, 1)))
            |> List.max

        max 1 (int (0.04 / max once 1e-6))

    interface IDisposable with
        member _.Dispose() =
            for t in [ weight; mask; values; bias; input; gradOutput ] do
                t.Dispose()

            pattern.Dispose()
            g.Dispose()

let run (args: Args) =
    let threads = args.Int("threads", 1)
    let repeats = max 5 (args.Int("repeats", 5))
    let batch = int64 (args.Int("batch", 128))

    let forwardOnly = args.Choice("pass", [ "training"; "forward" ]) = "forward"
    let only = args.List("models", [ "lenet5"; "lenet300" ])
    let onlyPatterns = args.List("patterns", patterns |> List.map fst)
    Libtorch.SetNumThreads threads

    printfn
        "sparse kernels vs dense masked, %s per layer: batch %d, %d thread(s), median of %d interleaved repeats"
        (if forwardOnly then
             "forward without gradients (evaluation)"
         else
             "forward + backward")
        batch
        threads
        repeats

    printfn
        "kernels: %s; load average before: %s"
        (match SparsePattern.VectorPath with
         | SparseVectorPath.Avx512 -> "AVX-512 (rows layout: AVX2/FMA)"
         | SparseVectorPath.Avx2 -> "AVX2/FMA"
         | _ -> "portable")
        (loadAverage ())

    let summary = Collections.Generic.List<string list>()

    for model, layers in models |> List.filter (fun (m, _) -> List.contains m only) do
        for name, densities in
            patterns
            |> List.filter (fun (p, d) -> List.contains p onlyPatterns && not (List.isEmpty (d model layers))) do
            let rows = Collections.Generic.List<string list>()
            let mutable dense, sparse, best, denseMadds, keptMadds = 0.0, 0.0, 0.0, 0.0, 0.0

            for layer, density in List.zip layers (densities model layers) do
                use bench = new Bench(layer, density, batch, 7UL, forwardOnly)
                let iterations = bench.Calibrate()
                let variants = bench.Variants
                let wall = variants |> List.map (fun v -> v, ResizeArray<float>()) |> dict
                let cpu = variants |> List.map (fun v -> v, ResizeArray<float>()) |> dict

                for r in 1..repeats do
                    // Interleaved, rotating which variant goes first.
                    let k = r % variants.Length
                    let order = List.skip k variants @ List.take k variants

                    for v in order do
                        let w, c = bench.Time(v, iterations)
                        wall.[v].Add w
                        cpu.[v].Add c

                let dm = median wall.[None]

                let layout, sm =
                    variants
                    |> List.tail
                    |> List.map (fun v -> v, median wall.[v])
                    |> List.minBy snd

                let layoutName =
                    match layer.Shape, layout with
                    | Conv _, Some SparseConvLayout.Rows -> "rows"
                    | Conv _, _ -> "batch"
                    | Dense _, _ -> "batch"

                dense <- dense + dm
                sparse <- sparse + sm
                best <- best + min dm sm
                denseMadds <- denseMadds + bench.Madds
                keptMadds <- keptMadds + bench.Madds * bench.Density

                rows.Add
                    [
                        layer.Name
                        sprintf "%.2f %%" (100.0 * bench.Density)
                        (if bench.Density > 0.0 then
                             f1 (1.0 / bench.Density)
                         else
                             "none kept")
                        f3 (1e3 * dm)
                        f3 (1e3 * sm)
                        layoutName
                        // the other layout's time, to see what the choice is worth
                        (variants
                         |> List.tail
                         |> List.filter (fun v -> v <> layout)
                         |> List.map (fun v -> f3 (1e3 * median wall.[v]))
                         |> function
                             | [] -> "-"
                             | t :: _ -> t)
                        f2 (dm / sm)
                        f2 (median cpu.[None] / median cpu.[layout])
                    ]

            printfn ""
            printfn "%s, %s" model name

            printTable
                [
                    "layer"
                    "density"
                    "limit"
                    "dense ms"
                    "sparse ms"
                    "layout"
                    "other ms"
                    "speedup"
                    "cpu ratio"
                ]
                (List.ofSeq rows)

            summary.Add
                [
                    model
                    name
                    f1 (denseMadds / keptMadds)
                    f3 (1e3 * dense)
                    f3 (1e3 * sparse)
                    f2 (dense / sparse)
                    f2 (dense / best)
                ]

    printfn ""
    printfn "per model (limit: dense multiply-adds / kept ones; best: each layer the faster way)"

    printTable
        [
            "model"
            "pattern"
            "limit"
            "dense ms"
            "sparse ms"
            "speedup"
            "best speedup"
        ]
        (List.ofSeq summary)

    printfn "load average after: %s" (loadAverage ())
    0
