/// Errors at the native boundary: libtorch's errors in forward, backward and second-order
/// gradients arrive as managed TorchExceptions carrying libtorch's text, the process keeps
/// working, and misuse on the managed side (disposed tensors, wrong element types) is caught
/// before it reaches native code.
module Pai.Tests.ErrorTests

open Expecto

open System
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support


/// Asserts that f raises a TorchException whose message contains libtorch's text.
let private torchError (expected: string) (f: unit -> unit) =
    let e = throws<TorchException> f
    Expect.stringContains e.Message expected "e.Message"

/// A small computation that must succeed after an error: forward, backward and a stale-error
/// check (Item and Equal read the thread's pending error even on success).
let private stillWorks () =
    inScope (fun () ->
        let x = (f64 [| 3L |] [| 1.0; 2.0; 3.0 |]).RequiresGrad_()
        let loss = (x * x).Sum()
        Expect.equal (loss.Item()) 14.0 "loss.Item()"
        let g = Pai.Tensors.grad [ x ] loss
        Expect.equal (values g.[0]) ([| 2.0; 4.0; 6.0 |]) "values g.[0]"
        Expect.isTrue (g.[0].Equal(x * 2.0)) "g.[0].Equal(x * 2.0)")

// ---- forward ---------------------------------------------------------------------------------

// ---- backward and second order ---------------------------------------------------------------

// ---- managed-side misuse ---------------------------------------------------------------------

[<Tests>]
let tests =
    testSequenced
    <| testList
        "ErrorTests"
        [
            testCase "matmul with mismatched shapes raises libtorch's message and the process goes on"
            <| fun () ->
                inScope (fun () ->
                    let a = Libtorch.Ones([| 2L; 3L |])
                    let b = Libtorch.Ones([| 4L; 5L |])

                    torchError "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)" (fun () ->
                        a.MatMul b |> ignore)
                    // the same tensors are still usable
                    Expect.equal
                        (a.MatMul(a.Transpose(0L, 1L)).Shape)
                        ([| 2L; 2L |])
                        "a.MatMul(a.Transpose(0L, 1L)).Shape")

                stillWorks ()
            testCase "any matmul with mismatched inner sizes raises a TorchException"
            <| fun () ->
                let cases =
                    gen {
                        let! n = Gen.choose (1, 5)
                        let! k = Gen.choose (1, 5)
                        let! k2 = Gen.choose (1, 5) |> Gen.filter (fun j -> j <> k)
                        let! m = Gen.choose (1, 5)
                        return n, k, k2, m
                    }

                check 30 cases (fun (n, k, k2, m) ->
                    inScope (fun () ->
                        let a = Libtorch.Zeros([| int64 n; int64 k |])
                        let b = Libtorch.Zeros([| int64 k2; int64 m |])
                        torchError (sprintf "(%dx%d and %dx%d)" n k k2 m) (fun () -> a.MatMul b |> ignore)))

                stillWorks ()
            testCase "other forward errors carry libtorch's text"
            <| fun () ->
                inScope (fun () ->
                    let x = Libtorch.Ones([| 2L; 3L |])
                    torchError "a Tensor with 6 elements cannot be converted to Scalar" (fun () -> x.Item() |> ignore)
                    torchError "view size is not compatible" (fun () -> x.Transpose(0L, 1L).View(6L) |> ignore)

                    torchError "INDICES element is out of DATA bounds, id=7 axis_dim=3" (fun () ->
                        x.IndexSelect(1L, i64 [| 1L |] [| 7L |]) |> ignore)

                    torchError "Target 5 is out of bounds" (fun () ->
                        F.CrossEntropy(x, i64 [| 2L |] [| 0L; 5L |]) |> ignore)

                    torchError "Expected 3D (unbatched) or 4D (batched) input" (fun () ->
                        F.Conv2d(x, Libtorch.Ones([| 1L; 1L; 1L; 1L |])) |> ignore)

                    torchError "The size of tensor a (3) must match the size of tensor b (4)" (fun () ->
                        (x + Libtorch.Ones([| 4L |])) |> ignore)

                    torchError "negative dimension -1" (fun () -> Libtorch.Zeros([| 2L; -1L |]) |> ignore)
                    torchError "expected a non-empty list of Tensors" (fun () -> Libtorch.Cat([||]) |> ignore)
                    torchError "normalized_shape" (fun () -> F.LayerNorm(x, [| 4L |]) |> ignore))

                stillWorks ()
            testCase "backward with a wrong-shaped grad_output raises libtorch's message"
            <| fun () ->
                inScope (fun () ->
                    let x = (Libtorch.Ones([| 3L |], DType.Float64)).RequiresGrad_()
                    let y = x * 2.0

                    torchError
                        "invalid gradient at index 0 - got [4] but expected shape compatible with [3]"
                        (fun () -> y.Backward(Libtorch.Ones([| 4L |], DType.Float64)))
                    // backward of a non-scalar without grad_output
                    torchError "grad can be implicitly created only for scalar outputs" (fun () -> y.Backward())
                    // a correct backward on the same graph still works
                    y.Backward(Libtorch.Ones([| 3L |], DType.Float64))
                    Expect.equal (values (nonNull x.Grad)) ([| 2.0; 2.0; 2.0 |]) "values (nonNull x.Grad)")

                stillWorks ()
            testCase "backward twice through a freed graph raises libtorch's message"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                    let y = (x.Exp() * x).Sum()
                    y.Backward()
                    torchError "Trying to backward through the graph a second time" (fun () -> y.Backward()))

                stillWorks ()
            testCase "errors in a second-order gradient are managed exceptions"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 3L |] [| 1.0; -1.0; 2.0 |]).RequiresGrad_()
                    let z = f64 [| 3L |] [| 1.0; 1.0; 1.0 |] // does not require grad
                    let loss = (x.Pow 3.0).Sum()
                    let g = (Autograd.Grad(loss, [| x |], createGraph = true)).[0]
                    Expect.isTrue g.RequiresGrad "g.RequiresGrad"

                    // differentiating with respect to a tensor that does not require grad
                    torchError "One of the differentiated Tensors does not require grad" (fun () ->
                        Autograd.Grad([| g.Sum() |], [| z |]) |> ignore)
                    // grad_outputs of the wrong shape for the first-order gradient
                    torchError
                        "invalid gradient at index 0 - got [2] but expected shape compatible with [3]"
                        (fun () ->
                            Autograd.Grad(
                                [| g |],
                                [| x |],
                                [| Libtorch.Ones([| 2L |], DType.Float64) |],
                                retainGraph = true
                            )
                            |> ignore)
                    // an output that does not require grad
                    torchError "does not require grad and does not have a grad_fn" (fun () ->
                        Autograd.Grad([| z.Sum() |], [| x |]) |> ignore)
                    // an input the second-order output does not reach, without allowUnused
                    let w = (f64 [| 1L |] [| 3.0 |]).RequiresGrad_()

                    torchError "appears to not have been used in the graph" (fun () ->
                        Autograd.Grad([| g.Sum() |], [| x; w |], retainGraph = true) |> ignore)

                    // after all that, the same second-order graph still gives the right answer: d²/dx² Σx³ = 6x
                    let h = Autograd.Grad([| g.Sum() |], [| x |])
                    Expect.equal (values (nonNull h.[0])) ([| 6.0; -6.0; 12.0 |]) "values (nonNull h.[0])")

                stillWorks ()
            testCase "an error on another thread stays on that thread"
            <| fun () ->
                let message =
                    onOtherThread (fun () ->
                        try
                            inScope (fun () ->
                                Libtorch.Ones([| 2L; 3L |]).MatMul(Libtorch.Ones([| 2L; 3L |])) |> ignore)

                            "no error"
                        with :? TorchException as e ->
                            e.Message)

                Expect.stringContains message "cannot be multiplied" "message"
                stillWorks ()
            testCase "a disposed tensor gives ObjectDisposedException, not a crash"
            <| fun () ->
                use scope = new DisposeScope()
                let x = Libtorch.Ones([| 2L; 2L |])
                let w = Libtorch.Ones([| 3L; 2L |])
                let dead = Libtorch.Ones([| 3L |])
                dead.Dispose()
                Expect.isTrue dead.IsDisposed "dead.IsDisposed"
                Expect.equal (dead.ToString()) "Tensor(disposed)" "dead.ToString()"

                let disposed (f: unit -> unit) =
                    throws<ObjectDisposedException> f |> ignore

                disposed (fun () -> dead.Sum() |> ignore)
                disposed (fun () -> dead.ToArray<float32>() |> ignore)
                disposed (fun () -> dead.Shape |> ignore)
                disposed (fun () -> dead.Item() |> ignore)
                disposed (fun () -> (dead + dead) |> ignore)
                disposed (fun () -> (x + dead) |> ignore)
                disposed (fun () -> dead.RequiresGrad <- true)
                // optional tensor arguments (bias, running statistics, grad_output) too
                disposed (fun () -> F.Linear(x, w, dead) |> ignore)
                disposed (fun () -> F.BatchNorm(Libtorch.Ones([| 2L; 3L |]), dead, dead) |> ignore)
                disposed (fun () -> (Libtorch.Ones([| 3L |]).RequiresGrad_() * 2.0).Backward(dead))
                // lists
                disposed (fun () -> Libtorch.Cat([| x; dead |]) |> ignore)
                disposed (fun () -> Autograd.Grad([| x.Sum() |], [| dead |]) |> ignore)
                // disposing twice is harmless, and so is the scope freeing an already-disposed tensor
                dead.Dispose()
                Expect.equal (F.Linear(x, w).Shape) ([| 2L; 3L |]) "F.Linear(x, w).Shape"
            testCase "a disposed generator gives ObjectDisposedException, not a crash"
            <| fun () ->
                inScope (fun () ->
                    let g = new Generator(3UL)
                    g.Dispose()

                    throws<ObjectDisposedException>(fun () -> Libtorch.Randn([| 2L |], g) |> ignore)
                    |> ignore

                    throws<ObjectDisposedException>(fun () -> Libtorch.Ones([| 2L |]).Normal_(generator = g) |> ignore)
                    |> ignore

                    throws<ObjectDisposedException>(fun () ->
                        F.Dropout(Libtorch.Ones([| 2L |]), 0.5, true, g) |> ignore)
                    |> ignore)
            testCase "ToArray with the wrong element type gives ArgumentException"
            <| fun () ->
                inScope (fun () ->
                    let wrong (t: Tensor) (f: Tensor -> unit) =
                        let e = throws<ArgumentException>(fun () -> f t)
                        Expect.stringContains e.Message (string t.DType) "e.Message"

                    wrong (Libtorch.Ones([| 2L |], DType.Float32)) (fun t -> t.ToArray<float>() |> ignore)
                    wrong (Libtorch.Ones([| 2L |], DType.Float64)) (fun t -> t.ToArray<float32>() |> ignore)
                    wrong (Libtorch.Ones([| 2L |], DType.Float64)) (fun t -> t.ToArray<int64>() |> ignore)
                    wrong (Libtorch.Ones([| 2L |], DType.Int64)) (fun t -> t.ToArray<int>() |> ignore)
                    wrong (Libtorch.Ones([| 2L |], DType.Bool)) (fun t -> t.ToArray<byte>() |> ignore)
                    wrong (Libtorch.Ones([| 2L |], DType.UInt8)) (fun t -> t.ToArray<bool>() |> ignore)
                    // and FromArray with values that do not fill the shape
                    throws<ArgumentException>(fun () -> f64 [| 2L; 2L |] [| 1.0; 2.0; 3.0 |] |> ignore)
                    |> ignore)
        ]
