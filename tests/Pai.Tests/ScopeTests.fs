/// Dispose scopes (DESIGN.md §3.5): tensors made inside a scope are freed when it closes,
/// results moved out survive, scopes nest per thread and must close innermost first.
module Pai.Tests.ScopeTests

open System
open Xunit
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support

type F = Functional

[<Fact>]
let ``tensors made inside a scope, by any kind of call, are freed when it closes`` () =
    let made = Collections.Generic.List<Tensor>()
    let x0 = Libtorch.Ones([| 2L; 3L |], DType.Float64)

    do
        use scope = new DisposeScope()
        Assert.Same(scope, DisposeScope.Current)
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

        Assert.True(made |> Seq.forall (fun t -> not t.IsDisposed))
        Assert.Equal(made.Count + 2, scope.OwnedCount) // and x.Exp() and its product

    Assert.All(made, fun t -> Assert.True(t.IsDisposed))
    Assert.Null DisposeScope.Current
    // a tensor made with no scope open belongs to the caller and is untouched
    Assert.False x0.IsDisposed
    x0.Dispose()

[<Fact>]
let ``MoveToOuterScope hands a result to the enclosing scope, or to the caller at the top`` () =
    use outer = new DisposeScope()
    let mutable temp = Unchecked.defaultof<Tensor>
    let mutable result = Unchecked.defaultof<Tensor>

    do
        use inner = new DisposeScope()
        Assert.Same(outer, inner.Parent)
        temp <- Libtorch.Ones([| 2L |])
        result <- (temp * 3.0).MoveToOuterScope()

    Assert.True temp.IsDisposed
    Assert.False result.IsDisposed
    Assert.Equal<float32[]>([| 3.0f; 3.0f |], result.ToArray<float32>())
    Assert.Equal(1, outer.OwnedCount)

    // moved out of the outermost scope: nobody frees it but the caller
    let escaped = result.MoveToOuterScope()
    Assert.Same(result, escaped)
    Assert.Equal(0, outer.OwnedCount)
    outer.Dispose()
    Assert.False escaped.IsDisposed
    escaped.Dispose()
    Assert.True escaped.IsDisposed

[<Fact>]
let ``DetachFromScope takes a tensor out of every scope`` () =
    let mutable kept = Unchecked.defaultof<Tensor>

    do
        use _outer = new DisposeScope()
        use _inner = new DisposeScope()
        kept <- Libtorch.Full([| 2L |], 5.0).DetachFromScope()

    Assert.False kept.IsDisposed
    Assert.Equal<float32[]>([| 5.0f; 5.0f |], kept.ToArray<float32>())
    kept.Dispose()

[<Fact>]
let ``nested scopes free their own tensors at their own close`` () =
    use a = new DisposeScope()
    let ta = Libtorch.Ones([| 1L |])
    let b = new DisposeScope()
    let tb = Libtorch.Ones([| 1L |])
    let c = new DisposeScope()
    let tc = Libtorch.Ones([| 1L |])
    Assert.Same(c, DisposeScope.Current)
    Assert.Same(b, c.Parent)
    Assert.Same(a, b.Parent)
    Assert.Null a.Parent
    c.Dispose()
    Assert.True tc.IsDisposed
    Assert.False tb.IsDisposed
    Assert.Same(b, DisposeScope.Current)
    // a tensor made after the inner scope closed belongs to the next one out
    let tb2 = Libtorch.Ones([| 1L |])
    b.Dispose()
    Assert.True tb.IsDisposed
    Assert.True tb2.IsDisposed
    Assert.False ta.IsDisposed
    // closing twice is harmless
    b.Dispose()
    Assert.Same(a, DisposeScope.Current)

[<Fact>]
let ``closing a scope while a nested one is open throws and changes nothing`` () =
    let outer = new DisposeScope()
    let t = Libtorch.Ones([| 1L |])
    let inner = new DisposeScope()
    let e = throws<InvalidOperationException>(fun () -> outer.Dispose())
    Assert.Contains("innermost first", e.Message)
    Assert.Same(inner, DisposeScope.Current)
    Assert.False t.IsDisposed
    // in order, both close
    inner.Dispose()
    outer.Dispose()
    Assert.True t.IsDisposed
    Assert.Null DisposeScope.Current

[<Fact>]
let ``a tensor disposed by hand inside a scope is not freed twice`` () =
    do
        use scope = new DisposeScope()
        let t = Libtorch.Ones([| 4L |])
        let u = t * 2.0
        t.Dispose()
        Assert.Equal(1, scope.OwnedCount)
        Assert.Equal(8.0, u.Sum().Item())

    // the process is fine: allocate and compute again
    inScope (fun () -> Assert.Equal(4.0, Libtorch.Ones([| 4L |]).Sum().Item()))

[<Fact>]
let ``an exception inside a scope still frees its tensors`` () =
    let mutable t = Unchecked.defaultof<Tensor>

    let run () =
        use _scope = new DisposeScope()
        t <- Libtorch.Ones([| 2L; 3L |])
        t.MatMul(t) |> ignore

    throws<TorchException> run |> ignore
    Assert.True t.IsDisposed
    Assert.Null DisposeScope.Current

[<Fact>]
let ``scopes are per thread`` () =
    use scope = new DisposeScope()
    let before = scope.OwnedCount

    let other =
        onOtherThread (fun () ->
            Assert.Null DisposeScope.Current
            Libtorch.Ones([| 2L |]))

    Assert.Equal(before, scope.OwnedCount)
    scope.Dispose()
    Assert.False other.IsDisposed
    other.Dispose()

[<Fact>]
let ``Pai.Tensors.scoped and scopedList move their results out and free the rest`` () =
    use outer = new DisposeScope()
    let mutable inside = Unchecked.defaultof<Tensor>

    let r =
        Pai.Tensors.scoped (fun () ->
            inside <- Libtorch.Ones([| 3L |])
            inside * 2.0)

    Assert.True inside.IsDisposed
    Assert.Equal<float32[]>([| 2.0f; 2.0f; 2.0f |], r.ToArray<float32>())

    let rs =
        Pai.Tensors.scopedList (fun () ->
            inside <- Libtorch.Ones([| 2L |])
            [ inside + 1.0; inside - 1.0 ])

    Assert.True inside.IsDisposed
    Assert.Equal<float32[]>([| 2.0f; 2.0f |], rs.[0].ToArray<float32>())
    Assert.Equal<float32[]>([| 0.0f; 0.0f |], rs.[1].ToArray<float32>())
    Assert.Equal(3, outer.OwnedCount)
    outer.Dispose()
    Assert.True(r.IsDisposed && rs.[0].IsDisposed && rs.[1].IsDisposed)

/// What happens to one tensor made at a level of nesting.
type private Fate =
    | Stay
    | MoveOut
    | Detach

[<Fact>]
let ``random nestings: each tensor is freed exactly when its owner closes`` () =
    // model: a tensor made at level L is owned by L (Stay), L−1 (MoveOut; nobody when L = 0)
    // or nobody (Detach); closing level L frees exactly the tensors owned by L
    let cases =
        gen {
            let! depth = Gen.choose (1, 5)

            let! levels =
                Gen.listOfLength depth (Gen.listOf (Gen.elements [ Stay; MoveOut; Detach ]) |> Gen.resize 5)

            return levels
        }

    check 100 cases (fun levels ->
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
            Assert.Equal(expected, scopes.[level].OwnedCount)
            scopes.[level].Dispose()

            for t, owner in tensors do
                let freed =
                    match owner with
                    | Some o -> o >= level
                    | None -> false

                Assert.Equal(freed, t.IsDisposed)

        Assert.Null DisposeScope.Current

        for t, owner in tensors do
            if owner.IsNone then
                t.Dispose())
