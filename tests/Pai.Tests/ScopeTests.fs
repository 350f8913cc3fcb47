/// Dispose scopes (docs/architecture.md §3): tensors made inside a scope are freed when it closes,
/// results moved out survive, scopes nest per thread and must close innermost first.
module Pai.Tests.ScopeTests

open Expecto

open System
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support


/// What happens to one tensor made at a level of nesting.
type private Fate =
    | Stay
    | MoveOut
    | Detach

[<Tests>]
let tests =
    testSequenced
    <| testList
        "ScopeTests"
        [
            testCase "tensors made inside a scope, by any kind of call, are freed when it closes"
            <| fun () ->
                let made = Collections.Generic.List<Tensor>()
                let x0 = Libtorch.Ones([| 2L; 3L |], DType.Float64)

                do
                    use scope = new DisposeScope()
                    Expect.isTrue (obj.ReferenceEquals(scope, DisposeScope.Current)) "same object: DisposeScope.Current"
                    let x = x0.Alias().RequiresGrad_()
                    let loss = (x.Exp() * 2.0).Sum()
                    let struct (mx, imx) = x.Max(1L)
                    let struct (sv, si) = x.Sort()
                    let gs = Autograd.Grad(loss, [| x |], createGraph = true)
                    loss.Backward(retainGraph = true)
                    let accumulated = nonNull x.Grad

                    made.AddRange
                        [
                            x
                            loss
                            mx
                            imx
                            sv
                            si
                            gs.[0]
                            accumulated
                            Libtorch.Randn([| 3L |])
                            F.Relu x
                        ]

                    Expect.isTrue
                        (made |> Seq.forall (fun t -> not t.IsDisposed))
                        "made |> Seq.forall (fun t -> not t.IsDisposed)"

                    Expect.equal scope.OwnedCount (made.Count + 2) "scope.OwnedCount" // and x.Exp() and its product

                made |> Seq.iter (fun t -> Expect.isTrue t.IsDisposed "t.IsDisposed")
                Expect.isNull DisposeScope.Current "DisposeScope.Current"
                // a tensor made with no scope open belongs to the caller and is untouched
                Expect.isFalse x0.IsDisposed "x0.IsDisposed"
                x0.Dispose()
            testCase "MoveToOuterScope hands a result to the enclosing scope, or to the caller at the top"
            <| fun () ->
                use outer = new DisposeScope()
                let mutable temp = Unchecked.defaultof<Tensor>
                let mutable result = Unchecked.defaultof<Tensor>

                do
                    use inner = new DisposeScope()
                    Expect.isTrue (obj.ReferenceEquals(outer, inner.Parent)) "same object: inner.Parent"
                    temp <- Libtorch.Ones([| 2L |])
                    result <- (temp * 3.0).MoveToOuterScope()

                Expect.isTrue temp.IsDisposed "temp.IsDisposed"
                Expect.isFalse result.IsDisposed "result.IsDisposed"
                Expect.equal (result.ToArray<float32>()) ([| 3.0f; 3.0f |]) "result.ToArray<float32>()"
                Expect.equal outer.OwnedCount 1 "outer.OwnedCount"

                // moved out of the outermost scope: nobody frees it but the caller
                let escaped = result.MoveToOuterScope()
                Expect.isTrue (obj.ReferenceEquals(result, escaped)) "same object: escaped"
                Expect.equal outer.OwnedCount 0 "outer.OwnedCount"
                outer.Dispose()
                Expect.isFalse escaped.IsDisposed "escaped.IsDisposed"
                escaped.Dispose()
                Expect.isTrue escaped.IsDisposed "escaped.IsDisposed"
            testCase "DetachFromScope takes a tensor out of every scope"
            <| fun () ->
                let mutable kept = Unchecked.defaultof<Tensor>

                do
                    use _outer = new DisposeScope()
                    use _inner = new DisposeScope()
                    kept <- Libtorch.Full([| 2L |], 5.0).DetachFromScope()

                Expect.isFalse kept.IsDisposed "kept.IsDisposed"
                Expect.equal (kept.ToArray<float32>()) ([| 5.0f; 5.0f |]) "kept.ToArray<float32>()"
                kept.Dispose()
            testCase "nested scopes free their own tensors at their own close"
            <| fun () ->
                use a = new DisposeScope()
                let ta = Libtorch.Ones([| 1L |])
                let b = new DisposeScope()
                let tb = Libtorch.Ones([| 1L |])
                let c = new DisposeScope()
                let tc = Libtorch.Ones([| 1L |])
                Expect.isTrue (obj.ReferenceEquals(c, DisposeScope.Current)) "same object: DisposeScope.Current"
                Expect.isTrue (obj.ReferenceEquals(b, c.Parent)) "same object: c.Parent"
                Expect.isTrue (obj.ReferenceEquals(a, b.Parent)) "same object: b.Parent"
                Expect.isNull a.Parent "a.Parent"
                c.Dispose()
                Expect.isTrue tc.IsDisposed "tc.IsDisposed"
                Expect.isFalse tb.IsDisposed "tb.IsDisposed"
                Expect.isTrue (obj.ReferenceEquals(b, DisposeScope.Current)) "same object: DisposeScope.Current"
                // a tensor made after the inner scope closed belongs to the next one out
                let tb2 = Libtorch.Ones([| 1L |])
                b.Dispose()
                Expect.isTrue tb.IsDisposed "tb.IsDisposed"
                Expect.isTrue tb2.IsDisposed "tb2.IsDisposed"
                Expect.isFalse ta.IsDisposed "ta.IsDisposed"
                // closing twice is harmless
                b.Dispose()
                Expect.isTrue (obj.ReferenceEquals(a, DisposeScope.Current)) "same object: DisposeScope.Current"
            testCase "closing a scope while a nested one is open throws and changes nothing"
            <| fun () ->
                let outer = new DisposeScope()
                let t = Libtorch.Ones([| 1L |])
                let inner = new DisposeScope()
                let e = throws<InvalidOperationException>(fun () -> outer.Dispose())
                Expect.stringContains e.Message "innermost first" "e.Message"
                Expect.isTrue (obj.ReferenceEquals(inner, DisposeScope.Current)) "same object: DisposeScope.Current"
                Expect.isFalse t.IsDisposed "t.IsDisposed"
                // in order, both close
                inner.Dispose()
                outer.Dispose()
                Expect.isTrue t.IsDisposed "t.IsDisposed"
                Expect.isNull DisposeScope.Current "DisposeScope.Current"
            testCase "a tensor disposed by hand inside a scope is not freed twice"
            <| fun () ->
                do
                    use scope = new DisposeScope()
                    let t = Libtorch.Ones([| 4L |])
                    let u = t * 2.0
                    t.Dispose()
                    Expect.equal scope.OwnedCount 1 "scope.OwnedCount"
                    Expect.equal (u.Sum().Item()) 8.0 "u.Sum().Item()"

                // the process is fine: allocate and compute again
                inScope (fun () ->
                    Expect.equal (Libtorch.Ones([| 4L |]).Sum().Item()) 4.0 "Libtorch.Ones([| 4L |]).Sum().Item()")
            testCase "an exception inside a scope still frees its tensors"
            <| fun () ->
                let mutable t = Unchecked.defaultof<Tensor>

                let run () =
                    use _scope = new DisposeScope()
                    t <- Libtorch.Ones([| 2L; 3L |])
                    t.MatMul(t) |> ignore

                throws<TorchException> run |> ignore
                Expect.isTrue t.IsDisposed "t.IsDisposed"
                Expect.isNull DisposeScope.Current "DisposeScope.Current"
            testCase "scopes are per thread"
            <| fun () ->
                use scope = new DisposeScope()
                let before = scope.OwnedCount

                let other =
                    onOtherThread (fun () ->
                        Expect.isNull DisposeScope.Current "DisposeScope.Current"
                        Libtorch.Ones([| 2L |]))

                Expect.equal scope.OwnedCount before "scope.OwnedCount"
                scope.Dispose()
                Expect.isFalse other.IsDisposed "other.IsDisposed"
                other.Dispose()
            testCase "Pai.Tensors.scoped and scopedList move their results out and free the rest"
            <| fun () ->
                use outer = new DisposeScope()
                let mutable inside = Unchecked.defaultof<Tensor>

                let r =
                    Pai.Tensors.scoped (fun () ->
                        inside <- Libtorch.Ones([| 3L |])
                        inside * 2.0)

                Expect.isTrue inside.IsDisposed "inside.IsDisposed"
                Expect.equal (r.ToArray<float32>()) ([| 2.0f; 2.0f; 2.0f |]) "r.ToArray<float32>()"

                let rs =
                    Pai.Tensors.scopedList (fun () ->
                        inside <- Libtorch.Ones([| 2L |])
                        [ inside + 1.0; inside - 1.0 ])

                Expect.isTrue inside.IsDisposed "inside.IsDisposed"
                Expect.equal (rs.[0].ToArray<float32>()) ([| 2.0f; 2.0f |]) "rs.[0].ToArray<float32>()"
                Expect.equal (rs.[1].ToArray<float32>()) ([| 0.0f; 0.0f |]) "rs.[1].ToArray<float32>()"
                Expect.equal outer.OwnedCount 3 "outer.OwnedCount"
                outer.Dispose()

                Expect.isTrue
                    (r.IsDisposed && rs.[0].IsDisposed && rs.[1].IsDisposed)
                    "r.IsDisposed && rs.[0].IsDisposed && rs.[1].IsDisposed"
            (
             // model: a tensor made at level L is owned by L (Stay), L−1 (MoveOut; nobody when L = 0)
             // or nobody (Detach); closing level L frees exactly the tensors owned by L
             let cases =
                 gen {
                     let! depth = Gen.choose (1, 5)

                     let! levels =
                         Gen.listOfLength depth (Gen.listOf (Gen.elements [ Stay; MoveOut; Detach ]) |> Gen.resize 5)

                     return levels
                 }

             property "random nestings: each tensor is freed exactly when its owner closes" 100 cases (fun levels ->
                 let depth = levels.Length
                 let scopes = Collections.Generic.List<DisposeScope>()
                 let tensors = Collections.Generic.List<Tensor * int option>()

                 levels
                 |> List.iteri (fun level fates ->
                     scopes.Add(new DisposeScope())

                     for fate in fates do
                         let t = Libtorch.Zeros([| 1L |])

                         match fate with
                         | Stay -> tensors.Add(t, Some level)
                         | MoveOut ->
                             t.MoveToOuterScope() |> ignore
                             tensors.Add(t, (if level = 0 then None else Some(level - 1)))
                         | Detach ->
                             t.DetachFromScope() |> ignore
                             tensors.Add(t, None))

                 for level in depth - 1 .. -1 .. 0 do
                     let expected = tensors |> Seq.filter (fun (_, o) -> o = Some level) |> Seq.length
                     Expect.equal (scopes.[level].OwnedCount) expected "scopes.[level].OwnedCount"
                     scopes.[level].Dispose()

                     for t, owner in tensors do
                         let freed =
                             match owner with
                             | Some o -> o >= level
                             | None -> false

                         Expect.equal t.IsDisposed freed "t.IsDisposed"

                 Expect.isNull DisposeScope.Current "DisposeScope.Current"

                 for t, owner in tensors do
                     if owner.IsNone then
                         t.Dispose()))
        ]
