module Pai.Tests.AutoSTests

open Expecto
open Pai.Tests.Support

open System
open Pai
open Pai.Torch
open Pai.Tests.TinyNet

let private net () =
    new TinyMlp([ 4; 5; 3 ], 7UL, false, DType.Float64)

let private data () =
    singles (batch 11UL 6 4 3 DType.Float64)

let private column (j: int64) (x: Tensor) = Pai.Tensors.toFloats (x.Select(1L, j))

[<Tests>]
let tests =
    testSequenced
    <| testList
        "AutoSTests"
        [
            testCase
                "Features are theta, the mean gradient summed over scoring batches, saliency, the Hutchinson mean and log fan-in"
            <| fun () ->
                use model = net ()
                let batches = data ()
                let ctx = context model batches 3UL
                let features = Features.compute 200.0 Features.extended ctx
                // g₀ over six single-sample batches equals the gradient of the mean loss of one batch of six.
                let whole = batch 11UL 6 4 3 DType.Float64
                let g = Estimators.meanGradient model 1.0 [ whole ]

                let layers = (model :> IModelView).Prunable.Count

                let h =
                    (Hutchinson.estimate
                        model
                        200.0
                        (ProbeBudget.Probes 10)
                        (ProbeScope.blocks layers ProbeScope.Full)
                        3UL
                        batches)
                        .Mean

                for i, (kv, x) in List.indexed (List.zip (List.ofSeq (model :> IModelView).Prunable) features) do
                    let w = Pai.Tensors.toFloats kv.Value
                    let gi = Pai.Tensors.toFloats g.[i]
                    Expect.equal x.Shape ([| int64 w.Length; 5L |]) "x.Shape"
                    Expect.equal x.DType DType.Float32 "x.DType"

                    Expect.equal
                        (column 0L x |> Array.map float32)
                        (Array.map float32 w)
                        "column 0L x |> Array.map float32"

                    for a, b in Array.zip gi (column 1L x) do
                        Expect.floatClose (decimals 6) b a "b"

                    for (a, b), s in Array.zip (Array.zip w gi) (column 2L x) do
                        Expect.floatClose (decimals 6) s (abs (a * b)) "s"

                    Expect.equal
                        (column 3L x |> Array.map float32)
                        (Pai.Tensors.toFloats h.[i] |> Array.map float32)
                        "column 3L x |> Array.map float32"

                    let fanIn = float kv.Value.Shape.[1]

                    (column 4L x)
                    |> Seq.iter ((fun v -> Expect.floatClose (decimals 6) v (Math.Log fanIn) "v"))
            testCase "The learned criterion scores each weight by the predictor's output in the layer's shape"
            <| fun () ->
                use model = net ()
                let ctx = context model (data ()) 0UL
                // A "predictor" that returns |θ| reproduces magnitude pruning exactly.
                let criterion =
                    AutoS.criterion 200.0 Features.standard (fun x -> (x.Select(1L, 0L)).Abs())

                let learned = criterion.Score ctx
                let magnitude = (Registry.find "magnitude").Score ctx

                for (n1, a), (n2, b) in List.zip learned.Layers magnitude.Layers do
                    Expect.equal n2 n1 "n2"
                    Expect.equal a.Shape b.Shape "a.Shape"
                    Expect.isTrue ((use bf = b.To(DType.Float32) in a.Equal bf)) n1

                Expect.equal criterion.Name "autos" "criterion.Name"
                Expect.isTrue criterion.NeedsData "criterion.NeedsData"

                let wrong =
                    AutoS.criterion 200.0 Features.standard (fun x -> x.Select(1L, 0L).Narrow(0L, 0L, 1L))

                throws<InvalidOperationException>(fun () -> wrong.Score ctx |> ignore) |> ignore
            testCase "Feature names parse and unknown or repeated names are errors listing the valid ones"
            <| fun () ->
                Expect.equal
                    (Features.parse (Features.format Features.extended))
                    (Ok Features.extended)
                    "Features.parse (Features.format Features.extended)"

                Expect.equal
                    (Features.parse "grad, theta")
                    (Ok [ Feature.Gradient; Feature.Weight ])
                    "Features.parse \"grad, theta\""

                match Features.parse "theta,hessian" with
                | Error e ->
                    Expect.stringContains
                        e
                        "unknown feature 'hessian'; valid features: theta,grad,saliency,hutch_diag,log_fan_in"
                        "e"
                | Ok _ -> failwith "an unknown feature parsed"

                Expect.isTrue
                    (Result.isError (Features.parse "theta,theta"))
                    "Result.isError (Features.parse \"theta,theta\")"

                Expect.isTrue (Result.isError (Features.parse "")) "Result.isError (Features.parse \"\")"
        ]
