/// Hessian-vector products (Pai.Tensors.hvp, Autograd.HessianVectorProduct) against exact
/// Hessians of closed forms and against finite differences of gradients through a small net.
module Pai.Tests.HvpTests

open Expecto

open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support


/// y = M·x for a row-major n×n matrix.
let private matVec (n: int) (m: float[]) (x: float[]) =
    Array.init n (fun i -> Array.sum (Array.init n (fun j -> m.[i * n + j] * x.[j])))

/// Mᵀ·x for a row-major r×c matrix.
let private matTVec (r: int) (c: int) (m: float[]) (x: float[]) =
    Array.init c (fun j -> Array.sum (Array.init r (fun i -> m.[i * c + j] * x.[i])))

/// M·x for a row-major r×c matrix.
let private matVecRect (r: int) (c: int) (m: float[]) (x: float[]) =
    Array.init r (fun i -> Array.sum (Array.init c (fun j -> m.[i * c + j] * x.[j])))

let private transpose (n: int) (m: float[]) =
    Array.init (n * n) (fun k -> m.[(k % n) * n + k / n])

/// Both HVP entry points, with their names for failure messages.
let private hvpBoth (f: Tensor list -> Tensor) (inputs: Tensor list) (vectors: Tensor list) =
    let viaFSharp = Pai.Tensors.hvp f inputs vectors |> List.map values

    let viaCSharp =
        Autograd.HessianVectorProduct(f inputs, List.toArray inputs, List.toArray vectors)
        |> Array.map values
        |> Array.toList

    [ "Pai.Tensors.hvp", viaFSharp; "Autograd.HessianVectorProduct", viaCSharp ]

/// The n-dimensional Rosenbrock function Σ (1 − xᵢ)² + 100 (xᵢ₊₁ − xᵢ²)².
let private rosenbrock (x: Tensor) =
    let n = x.Size 0
    let head = x.Narrow(0L, 0L, n - 1L)
    let tail = x.Narrow(0L, 1L, n - 1L)
    ((1.0 - head).Square() + 100.0 * (tail - head.Square()).Square()).Sum()

/// Its Hessian, by hand: ∂²/∂xᵢ² = [i < n−1](2 − 400xᵢ₊₁ + 1200xᵢ²) + [i > 0]·200,
/// ∂²/∂xᵢ∂xᵢ₊₁ = −400xᵢ.
let private rosenbrockHessian (x: float[]) =
    let n = x.Length
    let h = Array.zeroCreate (n * n)

    for i in 0 .. n - 1 do
        if i < n - 1 then
            h.[i * n + i] <- h.[i * n + i] + 2.0 - 400.0 * x.[i + 1] + 1200.0 * x.[i] * x.[i]
            h.[i * n + i + 1] <- -400.0 * x.[i]
            h.[(i + 1) * n + i] <- -400.0 * x.[i]

        if i > 0 then
            h.[i * n + i] <- h.[i * n + i] + 200.0

    h

// ---- through a network -----------------------------------------------------------------------

/// A tiny float64 network conv(2→3, 3×3, pad 1) → batch norm (train mode) → relu → linear
/// (48 → 4) → cross-entropy, as a function of its six parameters.
type private TinyNet(seed: uint64) =
    let g = new Generator(seed)

    let randn (shape: int64[]) (scale: float) =
        Libtorch.Randn(shape, g, DType.Float64) * scale

    let x = randn [| 5L; 2L; 4L; 4L |] 1.0
    let y = Libtorch.RandInt(0L, 4L, [| 5L |], g)

    member val Parameters =
        [
            randn [| 3L; 2L; 3L; 3L |] 0.4
            randn [| 3L |] 0.1
            1.0 + randn [| 3L |] 0.1
            randn [| 3L |] 0.1
            randn [| 4L; 48L |] 0.2
            randn [| 4L |] 0.1
        ]

    member _.Loss(ps: Tensor list) =
        let h = F.Conv2d(x, ps.[0], ps.[1], padding = 1)
        let h = F.BatchNorm(h, null, null, ps.[2], ps.[3], training = true)
        let h = F.Relu(h).Flatten(1L)
        F.CrossEntropy(F.Linear(h, ps.[4], ps.[5]), y, labelSmoothing = 0.1)

    /// Random direction, one tensor per parameter.
    member this.Direction() =
        [ for p in this.Parameters -> Libtorch.RandnLike(p, g) ]

    interface System.IDisposable with
        member _.Dispose() = g.Dispose()

/// ∇L at the given parameter values (no graph kept).
let private gradAt (net: TinyNet) (ps: Tensor list) =
    let leaves = ps |> List.map (fun p -> p.Detach().RequiresGrad_())
    Pai.Tensors.grad leaves (net.Loss leaves) |> List.map values

[<Tests>]
let tests =
    testSequenced
    <| testList
        "HvpTests"
        [
            (let cases =
                gen {
                    let! n = Gen.choose (1, 7)
                    let! a = genFloats (n * n) -2.0 2.0
                    let! x = genFloats n -2.0 2.0
                    let! v = genFloats n -2.0 2.0
                    return n, a, x, v
                }

             property "hvp of the quadratic xᵀAx is (A + Aᵀ)v" 40 cases (fun (n, a, x, v) ->
                 inScope (fun () ->
                     let at = f64 [| int64 n; int64 n |] a
                     let xt = (f64 [| int64 n |] x).RequiresGrad_()
                     let vt = f64 [| int64 n |] v
                     let quad (ts: Tensor list) = (ts.[0] * at.MatMul(ts.[0])).Sum()
                     let expected = Array.map2 (+) (matVec n a v) (matVec n (transpose n a) v)

                     for name, result in hvpBoth quad [ xt ] [ vt ] do
                         assertClose name 1e-10 1e-10 expected result.[0])))
            (
             // H = [[A + Aᵀ, B], [Bᵀ, 0]]: H·(u, w) = ((A + Aᵀ)u + Bw, Bᵀu)
             let cases =
                 gen {
                     let! n = Gen.choose (1, 5)
                     let! m = Gen.choose (1, 5)
                     let! a = genFloats (n * n) -2.0 2.0
                     let! b = genFloats (n * m) -2.0 2.0
                     let! x = genFloats n -2.0 2.0
                     let! y = genFloats m -2.0 2.0
                     let! u = genFloats n -2.0 2.0
                     let! w = genFloats m -2.0 2.0
                     return n, m, a, b, (x, y), (u, w)
                 }

             property "hvp of xᵀAx + xᵀBy has the cross blocks B and Bᵀ" 40 cases (fun (n, m, a, b, (x, y), (u, w)) ->
                 inScope (fun () ->
                     let at = f64 [| int64 n; int64 n |] a
                     let bt = f64 [| int64 n; int64 m |] b
                     let xt = (f64 [| int64 n |] x).RequiresGrad_()
                     let yt = (f64 [| int64 m |] y).RequiresGrad_()

                     let f (ts: Tensor list) =
                         (ts.[0] * at.MatMul(ts.[0])).Sum() + (ts.[0] * bt.MatMul(ts.[1])).Sum()

                     let expectedX =
                         Array.map3
                             (fun p q r -> p + q + r)
                             (matVec n a u)
                             (matVec n (transpose n a) u)
                             (matVecRect n m b w)

                     let expectedY = matTVec n m b u

                     for name, result in hvpBoth f [ xt; yt ] [ f64 [| int64 n |] u; f64 [| int64 m |] w ] do
                         assertClose (name + " (x block)") 1e-10 1e-10 expectedX result.[0]
                         assertClose (name + " (y block)") 1e-10 1e-10 expectedY result.[1])))
            (let cases =
                gen {
                    let! n = Gen.choose (2, 8)
                    let! x = genFloats n -2.0 2.0
                    let! v = genFloats n -1.0 1.0
                    return n, x, v
                }

             property "hvp of Rosenbrock matches its exact Hessian" 40 cases (fun (n, x, v) ->
                 inScope (fun () ->
                     let xt = (f64 [| int64 n |] x).RequiresGrad_()
                     let expected = matVec n (rosenbrockHessian x) v

                     for name, result in hvpBoth (fun ts -> rosenbrock ts.[0]) [ xt ] [ f64 [| int64 n |] v ] do
                         assertClose name 1e-12 1e-9 expected result.[0])))
            testCase "hvp of the 2-d Rosenbrock with x and y as separate inputs"
            <| fun () ->
                // f(x, y) = (1 − x)² + 100 (y − x²)²: H = [[2 − 400y + 1200x², −400x], [−400x, 200]]
                inScope (fun () ->
                    for (x, y, u, w) in [ (-1.2, 1.0, 1.0, 0.0); (0.5, -0.3, 0.7, -1.1); (2.0, 3.0, -0.2, 0.9) ] do
                        let xt = (f64 [| 1L |] [| x |]).RequiresGrad_()
                        let yt = (f64 [| 1L |] [| y |]).RequiresGrad_()

                        let f (ts: Tensor list) =
                            ((1.0 - ts.[0]).Square() + 100.0 * (ts.[1] - ts.[0].Square()).Square()).Sum()

                        let hx = (2.0 - 400.0 * y + 1200.0 * x * x) * u - 400.0 * x * w
                        let hy = -400.0 * x * u + 200.0 * w

                        for name, result in hvpBoth f [ xt; yt ] [ f64 [| 1L |] [| u |]; f64 [| 1L |] [| w |] ] do
                            assertClose (name + " x") 1e-12 1e-9 [| hx |] result.[0]
                            assertClose (name + " y") 1e-12 1e-9 [| hy |] result.[1])
            testCase "hvp of a linear function is zero, also for an unused input"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 3L |] [| 1.0; -2.0; 0.5 |]).RequiresGrad_()
                    let unused = (f64 [| 2L |] [| 4.0; 5.0 |]).RequiresGrad_()
                    let v = f64 [| 3L |] [| 1.0; 1.0; 1.0 |]
                    let w = f64 [| 2L |] [| 1.0; 1.0 |]
                    let r = Pai.Tensors.hvp (fun ts -> (ts.[0] * 3.0).Sum()) [ x; unused ] [ v; w ]
                    Expect.equal (values r.[0]) ([| 0.0; 0.0; 0.0 |]) "values r.[0]"
                    Expect.equal (values r.[1]) ([| 0.0; 0.0 |]) "values r.[1]"
                    // a quadratic in x only: the unused block is zero and x's is 2v
                    let q = Pai.Tensors.hvp (fun ts -> ts.[0].Square().Sum()) [ x; unused ] [ v; w ]
                    Expect.equal (values q.[0]) ([| 2.0; 2.0; 2.0 |]) "values q.[0]"
                    Expect.equal (values q.[1]) ([| 0.0; 0.0 |]) "values q.[1]"
                    // one vector per input is required
                    throws<System.ArgumentException>(fun () ->
                        Pai.Tensors.hvp (fun ts -> ts.[0].Sum()) [ x; unused ] [ v ] |> ignore)
                    |> ignore)
            testCase "hvp through conv, train-mode batch norm and cross-entropy matches finite differences of gradients"
            <| fun () ->
                for seed in [ 1UL; 2UL; 3UL ] do
                    inScope (fun () ->
                        use net = new TinyNet(seed)
                        let ps = net.Parameters |> List.map (fun p -> p.Detach().RequiresGrad_())
                        let vs = net.Direction()
                        let h = 1e-6
                        let plus = gradAt net (List.map2 (fun (p: Tensor) (v: Tensor) -> p + h * v) ps vs)
                        let minus = gradAt net (List.map2 (fun (p: Tensor) (v: Tensor) -> p - h * v) ps vs)
                        let numeric = List.map2 (Array.map2 (fun a b -> (a - b) / (2.0 * h))) plus minus

                        for name, result in hvpBoth net.Loss ps vs do
                            List.iteri2
                                (fun k expected actual ->
                                    assertClose
                                        (sprintf "%s, seed %d, parameter %d" name seed k)
                                        1e-5
                                        1e-7
                                        expected
                                        actual)
                                numeric
                                result)
            testCase "the network's Hessian is symmetric: uᵀ(Hv) = vᵀ(Hu)"
            <| fun () ->
                inScope (fun () ->
                    use net = new TinyNet(7UL)
                    let ps = net.Parameters |> List.map (fun p -> p.Detach().RequiresGrad_())
                    let u = net.Direction()
                    let v = net.Direction()
                    // one forward pass, two products: the graph is kept for the second
                    let loss = net.Loss ps
                    let hu = Pai.Tensors.hvpOf true ps u loss
                    let hv = Pai.Tensors.hvpOf false ps v loss

                    let dot (a: Tensor list) (b: Tensor list) =
                        List.map2 (fun (x: Tensor) (y: Tensor) -> (x * y).Sum().Item()) a b |> List.sum

                    let uHv, vHu = dot u hv, dot v hu

                    Expect.isTrue
                        (abs (uHv - vHu) <= 1e-10 * (1.0 + abs uHv))
                        (sprintf "uᵀHv = %.15g but vᵀHu = %.15g" uHv vHu)
                    // and the products from the shared pass equal those from fresh passes
                    let huFresh = Pai.Tensors.hvp net.Loss ps u

                    List.iter2
                        (fun (a: Tensor) b -> assertClose "shared pass" 1e-12 1e-14 (values a) (values b))
                        huFresh
                        hu)
            testCase "hvp results outlive the scope they were computed in, intermediates do not"
            <| fun () ->
                use outer = new DisposeScope()
                let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                let v = f64 [| 2L |] [| 1.0; 0.0 |]
                let before = outer.OwnedCount
                let r = Autograd.HessianVectorProduct((x * x * x).Sum(), [| x |], [| v |])
                // H = diag(6x): H·e₀ = (6, 0)
                Expect.equal (values r.[0]) ([| 6.0; 0.0 |]) "values r.[0]"
                Expect.isFalse r.[0].IsDisposed "r.[0].IsDisposed"
                // the result and the loss belong to the outer scope; the gradients and dot products do not
                Expect.equal outer.OwnedCount (before + 4) "outer.OwnedCount"
        ]
