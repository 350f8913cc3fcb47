module Pai.Tests.AutoSTests

open System
open Xunit
open Pai
open Pai.Torch
open Pai.Tests.TinyNet

let private net () =
    new TinyMlp([ 4; 5; 3 ], 7UL, false, DType.Float64)

let private data () =
    singles (batch 11UL 6 4 3 DType.Float64)

let private column (j: int64) (x: Tensor) = Pai.Tensors.toFloats (x.Select(1L, j))

[<Fact>]
let ``Features are theta, the mean gradient summed over scoring batches, saliency, the Hutchinson mean and log fan-in``
    ()
    =
    use model = net ()
    let batches = data ()
    let ctx = context model batches 3UL
    let features = Features.compute 200.0 Features.extended ctx
    // g₀ over six single-sample batches equals the gradient of the mean loss of one batch of six.
    let whole = batch 11UL 6 4 3 DType.Float64
    let g = Estimators.meanGradient model 1.0 [ whole ]

    let layers = (model :> IModelView).Prunable.Count

    let h =
        (Hutchinson.estimate model 200.0 (ProbeBudget.Probes 10) (ProbeScope.blocks layers ProbeScope.Full) 3UL batches)
            .Mean

    for i, (kv, x) in List.indexed (List.zip (List.ofSeq (model :> IModelView).Prunable) features) do
        let w = Pai.Tensors.toFloats kv.Value
        let gi = Pai.Tensors.toFloats g.[i]
        Assert.Equal<int64[]>([| int64 w.Length; 5L |], x.Shape)
        Assert.Equal(DType.Float32, x.DType)
        Assert.Equal<float32[]>(Array.map float32 w, column 0L x |> Array.map float32)

        for a, b in Array.zip gi (column 1L x) do
            Assert.Equal(a, b, 6)

        for (a, b), s in Array.zip (Array.zip w gi) (column 2L x) do
            Assert.Equal(abs (a * b), s, 6)

        Assert.Equal<float32[]>(Pai.Tensors.toFloats h.[i] |> Array.map float32, column 3L x |> Array.map float32)
        let fanIn = float kv.Value.Shape.[1]
        Assert.All(column 4L x, (fun v -> Assert.Equal(Math.Log fanIn, v, 6)))

[<Fact>]
let ``The learned criterion scores each weight by the predictor's output in the layer's shape`` () =
    use model = net ()
    let ctx = context model (data ()) 0UL
    // A "predictor" that returns |θ| reproduces magnitude pruning exactly.
    let criterion =
        AutoS.criterion 200.0 Features.standard (fun x -> (x.Select(1L, 0L)).Abs())

    let learned = criterion.Score ctx
    let magnitude = (Registry.find "magnitude").Score ctx

    for (n1, a), (n2, b) in List.zip learned.Layers magnitude.Layers do
        Assert.Equal(n1, n2)
        Assert.Equal<int64[]>(b.Shape, a.Shape)
        Assert.True((use bf = b.To(DType.Float32) in a.Equal bf), n1)

    Assert.Equal("autos", criterion.Name)
    Assert.True(criterion.NeedsData)

    let wrong =
        AutoS.criterion 200.0 Features.standard (fun x -> x.Select(1L, 0L).Narrow(0L, 0L, 1L))

    Assert.Throws<InvalidOperationException>(fun () -> wrong.Score ctx |> ignore)
    |> ignore

[<Fact>]
let ``Feature names parse and unknown or repeated names are errors listing the valid ones`` () =
    Assert.Equal(Ok Features.extended, Features.parse (Features.format Features.extended))
    Assert.Equal(Ok [ Feature.Gradient; Feature.Weight ], Features.parse "grad, theta")

    match Features.parse "theta,hessian" with
    | Error e ->
        Assert.Contains("unknown feature 'hessian'; valid features: theta,grad,saliency,hutch_diag,log_fan_in", e)
    | Ok _ -> failwith "an unknown feature parsed"

    Assert.True(Result.isError (Features.parse "theta,theta"))
    Assert.True(Result.isError (Features.parse ""))
