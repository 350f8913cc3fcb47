/// A tiny float64 MLP implementing IModelView, and exact oracles (Hessian built column by
/// column from unit-vector HVPs) for testing criteria and estimators.
module Pai.Tests.TinyNet

open System.Collections.Generic
open Pai
open Pai.Torch

/// x -> W2·relu(W1·x + b1) (+ b2 unless biasFree). Weights are the prunable tensors.
type TinyMlp(sizes: int list, seed: uint64, biasFree: bool, dtype: DType) =
    let gen = new Generator(seed)

    let layers =
        sizes
        |> List.pairwise
        |> List.mapi (fun i (fanIn, fanOut) ->
            let w =
                (Libtorch.Randn([| int64 fanOut; int64 fanIn |], gen, dtype)
                 * (1.0 / sqrt (float fanIn)))
                    .DetachFromScope()

            w.RequiresGrad <- true

            let b =
                if biasFree then
                    None
                else
                    let b = (Libtorch.Randn([| int64 fanOut |], gen, dtype) * 0.1).DetachFromScope()
                    b.RequiresGrad <- true
                    Some b

            $"fc{i + 1}", w, b)

    let mutable training = false

    new(sizes, seed) = new TinyMlp(sizes, seed, false, DType.Float64)

    member _.Layers = layers

    interface IModelView with
        member _.Name = "tiny-mlp"

        member _.Prunable =
            [| for name, w, _ in layers -> KeyValuePair($"{name}.weight", w) |] :> IReadOnlyList<_>

        member _.Parameters =
            [|
                for name, w, b in layers do
                    yield KeyValuePair($"{name}.weight", w)

                    match b with
                    | Some b -> yield KeyValuePair($"{name}.bias", b)
                    | None -> ()
            |]
            :> IReadOnlyList<_>

        member this.Forward(x: Tensor) =
            let struct (logits, _) = (this :> IModelView).ForwardWithFeatures x
            logits

        member _.ClassifierWeightName = (let name, _, _ = List.last layers in $"{name}.weight")

        member _.ForwardWithFeatures(x: Tensor) =
            let hidden, (_, w, b) =
                List.splitAt (layers.Length - 1) layers |> fun (h, l) -> h, List.head l

            let h =
                hidden
                |> List.fold
                    (fun (h: Tensor) (_, w, b) -> Functional.Relu(Functional.Linear(h.Flatten(1L), w, Option.toObj b)))
                    x
                |> fun h -> h.Flatten(1L)

            struct (Functional.Linear(h, w, Option.toObj b), h)

        member _.ForwardCapturing(x: Tensor) =
            let captures = List<LayerCapture>()

            let logits =
                layers
                |> List.mapi (fun i l -> i, l)
                |> List.fold
                    (fun (h: Tensor) (i, (name, w, b)) ->
                        let input = h.Flatten(1L)
                        let z = Functional.Linear(input, w, Option.toObj b)

                        captures.Add
                            {
                                WeightName = $"{name}.weight"
                                Kind = LayerKind.Linear
                                Input = input
                                Output = z
                            }

                        if i < layers.Length - 1 then Functional.Relu z else z)
                    x

            struct (logits, captures :> IReadOnlyList<_>)

        member _.IsPiecewiseLinear = true

        member _.Training
            with get () = training
            and set v = training <- v

        member _.Device = Device.Cpu

        member _.CopyAs(dt: DType) =
            let copy = new TinyMlp(sizes, seed, biasFree, dt)

            using (Libtorch.NoGrad()) (fun _ ->
                for (_, w, b), (_, w2, b2) in List.zip layers copy.Layers do
                    w2.Copy_(w) |> ignore

                    match b, b2 with
                    | Some b, Some b2 -> b2.Copy_(b) |> ignore
                    | _ -> ())

            copy :> IModelView

        member _.Dispose() =
            for _, w, b in layers do
                w.Dispose()
                b |> Option.iter (fun b -> b.Dispose())

            gen.Dispose()

/// A seeded batch of n samples with `inputs` features and targets in [0, classes).
let batch (seed: uint64) (n: int) (inputs: int) (classes: int) (dtype: DType) : Batch =
    use gen = new Generator(seed)

    {
        Inputs = Libtorch.Randn([| int64 n; int64 inputs |], gen, dtype).DetachFromScope()
        Targets = Libtorch.RandInt(0L, int64 classes, [| int64 n |], gen).DetachFromScope()
    }

/// Splits a batch into batches of one sample.
let singles (b: Batch) : Batch list =
    [
        for i in 0L .. b.Targets.NumEl - 1L ->
            {
                Inputs = b.Inputs.Narrow(0L, i, 1L).DetachFromScope()
                Targets = b.Targets.Narrow(0L, i, 1L).DetachFromScope()
            }
    ]

let context (model: IModelView) (batches: Batch list) (seed: uint64) : ScoringContext =
    {
        Model = model
        Batches = batches
        InputShape = [ (model.Prunable.[0].Value.Shape.[1]) ]
        Seed = seed
        Curvature = CurvatureOptions.Default
        Mask = None
    }

/// Frees every tensor a pruning run hands back (mask, last scores, stored statistics).
let disposeResult (r: PruneResult) =
    Mask.dispose r.Mask
    Scores.dispose r.Scores

    for _, v in r.Statistics do
        for t in v.Layers do
            t.Dispose()

/// All prunable weights flattened into one float[] (layer order, row-major).
let flatWeights (model: IModelView) =
    [|
        for kv in model.Prunable do
            yield! Pai.Tensors.toFloats kv.Value
    |]

let flatOf (ts: Tensor list) =
    [|
        for t in ts do
            yield! Pai.Tensors.toFloats t
    |]

/// The exact Hessian of the mean scoring loss w.r.t. the prunable weights (temperature T),
/// built column by column from unit-vector HVPs: an n×n array.
let exactHessian (model: IModelView) (temperature: float) (batches: Batch list) : float[,] =
    let ps = [ for kv in model.Prunable -> kv.Value ]
    let sizes = ps |> List.map (fun p -> int p.NumEl)
    let n = List.sum sizes
    let h = Array2D.zeroCreate n n

    for j in 0 .. n - 1 do
        use _scope = new DisposeScope()
        let e = Array.zeroCreate<float> n
        e.[j] <- 1.0
        let mutable offset = 0

        let vs =
            [
                for p, size in List.zip ps sizes do
                    let part = e.[offset .. offset + size - 1]
                    offset <- offset + size
                    Libtorch.FromArray<float>(part, p.Shape).To(p.DType)
            ]

        let col = Estimators.hessianVectorProduct model temperature batches vs |> flatOf

        for i in 0 .. n - 1 do
            h.[i, j] <- col.[i]

    h
