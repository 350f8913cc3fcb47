/// Semantics of the autograd API itself: retain_graph defaults, grad_outputs (with null
/// entries), several outputs, create_graph through Backward, and grad mode around HVPs.
module Pai.Tests.AutogradTests

open Expecto

open Pai.Torch
open Pai.Tests.Support

[<Tests>]
let tests =
    testSequenced
    <| testList
        "AutogradTests"
        [
            testCase "retainGraph defaults to createGraph: a second grad needs it"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                    let y = (x.Exp() * x).Sum()
                    let first = Autograd.Grad([| y |], [| x |])
                    let e = throws<TorchException>(fun () -> Autograd.Grad([| y |], [| x |]) |> ignore)
                    Expect.stringContains e.Message "Trying to backward through the graph a second time" "e.Message"

                    let z = (x.Exp() * x).Sum()
                    let a = Autograd.Grad([| z |], [| x |], retainGraph = true)
                    let b = Autograd.Grad([| z |], [| x |])
                    Expect.equal (values (nonNull a.[0])) (values (nonNull first.[0])) "values (nonNull a.[0])"
                    Expect.equal (values (nonNull b.[0])) (values (nonNull a.[0])) "values (nonNull b.[0])"
                    // d/dx (x eˣ) = (1 + x) eˣ
                    assertClose "x eˣ" 1e-14 0.0 [| 2.0 * exp 1.0; 3.0 * exp 2.0 |] (values (nonNull b.[0])))
            testCase "several outputs with grad_outputs, a null entry meaning ones for a scalar"
            <| fun () ->
                inScope (fun () ->
                    let a = (f64 [| 3L |] [| 1.0; 2.0; 3.0 |]).RequiresGrad_()
                    let b = (f64 [| 2L |] [| -1.0; 4.0 |]).RequiresGrad_()
                    let s = (a * a).Sum() // scalar: its grad_output may be left null
                    let v = b * 3.0 // vector: needs an explicit grad_output
                    let gv = f64 [| 2L |] [| 10.0; 100.0 |]
                    let grads = Autograd.Grad([| s; v |], [| a; b |], [| (null: Tensor | null); gv |])
                    Expect.equal (values (nonNull grads.[0])) ([| 2.0; 4.0; 6.0 |]) "values (nonNull grads.[0])"
                    Expect.equal (values (nonNull grads.[1])) ([| 30.0; 300.0 |]) "values (nonNull grads.[1])"
                    // a count mismatch is caught before libtorch
                    throws<System.ArgumentException>(fun () -> Autograd.Grad([| s; v |], [| a |], [| gv |]) |> ignore)
                    |> ignore)
            testCase "backward with createGraph leaves a differentiable .grad"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 1.0; -2.0 |]).RequiresGrad_()
                    (x.Pow 3.0).Sum().Backward(createGraph = true)
                    let g = nonNull x.Grad
                    Expect.isTrue g.RequiresGrad "g.RequiresGrad"
                    Expect.equal (values g) ([| 3.0; 12.0 |]) "values g"
                    // d/dx Σ 3x² = 6x
                    let h = Autograd.Grad(g.Sum(), [| x |])
                    Expect.equal (values h.[0]) ([| 6.0; -12.0 |]) "values h.[0]"
                    x.ClearGrad())
            testCase "gradients flow to non-leaf inputs and through views"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L; 2L |] [| 1.0; 2.0; 3.0; 4.0 |]).RequiresGrad_()
                    let mid = x * 2.0 // not a leaf
                    let loss = (mid.Transpose(0L, 1L).Narrow(0L, 0L, 1L).Square()).Sum()
                    let grads = Autograd.Grad(loss, [| mid; x |])
                    // loss = Σ over column 0 of mid²: ∂/∂mid = 2·mid there, ∂/∂x = 8x there
                    Expect.equal (values grads.[0]) ([| 4.0; 0.0; 12.0; 0.0 |]) "values grads.[0]"
                    Expect.equal (values grads.[1]) ([| 8.0; 0.0; 24.0; 0.0 |]) "values grads.[1]")
            testCase "hvp works when the caller has gradients switched off"
            <| fun () ->
                // criteria score under no-grad; a Hessian-vector product must still record its own graph
                inScope (fun () ->
                    let x = (f64 [| 3L |] [| 1.0; 2.0; -1.0 |]).RequiresGrad_()
                    let v = f64 [| 3L |] [| 1.0; 1.0; 1.0 |]
                    let loss = (x.Pow 3.0).Sum()
                    // H = diag(6x)
                    let hv = Pai.Tensors.noGrad (fun () -> Pai.Tensors.hvpOf false [ x ] [ v ] loss)
                    Expect.equal (values hv.[0]) ([| 6.0; 12.0; -6.0 |]) "values hv.[0]"
                    Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled")
            testCase "a first-order grad with createGraph is differentiable under no-grad too"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 2.0; 3.0 |]).RequiresGrad_()
                    let loss = (x.Pow 3.0).Sum()

                    let g =
                        Pai.Tensors.noGrad (fun () -> (Autograd.Grad(loss, [| x |], createGraph = true)).[0])

                    Expect.isTrue g.RequiresGrad "g.RequiresGrad"
                    Expect.equal (values g) ([| 12.0; 27.0 |]) "values g"
                    // d/dx Σ 3x² = 6x
                    Expect.equal
                        (values (Autograd.Grad(g.Sum(), [| x |])).[0])
                        ([| 12.0; 18.0 |])
                        "values (Autograd.Grad(g.Sum(), [| x |])).[0]")
        ]
