/// Gradients of every differentiable op against central finite differences in float64, as
/// properties over random shapes and values (explicit generators; kinks kept away from the data).
module Pai.Tests.GradCheckTests

open System
open Expecto
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support


/// One float64 input: values and shape.
let private input (shape: int64[]) (lo: float) (hi: float) =
    genFloats (numel shape) lo hi |> Gen.map (fun v -> v, shape)

let private inputAwayFromZero (shape: int64[]) (lo: float) (hi: float) =
    genAwayFromZero (numel shape) lo hi |> Gen.map (fun v -> v, shape)

let private one (f: Tensor -> Tensor) (ts: Tensor list) = f (List.head ts)
let private two (f: Tensor -> Tensor -> Tensor) (ts: Tensor list) = f ts.[0] ts.[1]

/// Two shapes that broadcast against each other (either may be the larger one).
let private genBroadcastPair =
    gen {
        let! a = genShape 0 3 3
        let! b = genBroadcastable a
        let! swap = Gen.elements [ true; false ]
        return if swap then b, a else a, b
    }

// ---- arithmetic ------------------------------------------------------------------------------

// ---- elementwise math ------------------------------------------------------------------------

// ---- reductions ------------------------------------------------------------------------------

/// A shape with every size ≥ minSize, a non-empty subset of its dimensions (sometimes written
/// negative) or none (reduce all), and keepDim.
let private genReduction (minSize: int) =
    gen {
        let! rank = Gen.choose (1, 3)
        let! sizes = Gen.arrayOfLength rank (Gen.choose (minSize, 4))
        let! dims = Gen.subListOf [ 0L .. int64 rank - 1L ]
        let! negative = Gen.elements [ true; false ]
        let! keep = Gen.elements [ true; false ]

        let dims =
            dims
            |> List.map (fun d -> if negative then d - int64 rank else d)
            |> List.toArray

        return Array.map int64 sizes, (if dims.Length = 0 then None else Some dims), keep
    }

// ---- linear algebra --------------------------------------------------------------------------

// ---- convolution and pooling -----------------------------------------------------------------

type private ConvCase =
    {
        Groups: int
        Stride: struct (int * int)
        Padding: struct (int * int)
        Dilation: struct (int * int)
        Bias: bool
        X: float[] * int64[]
        W: float[] * int64[]
        B: float[] * int64[]
    }

/// libtorch's pooling output size along one axis.
let private poolOutput (input: int) (k: int) (stride: int) (padding: int) (dilation: int) (ceil: bool) =
    let span =
        input + 2 * padding - dilation * (k - 1) - 1 + (if ceil then stride - 1 else 0)

    let out = span / stride + 1

    if ceil && (out - 1) * stride >= input + padding then
        out - 1
    else
        out

/// True when some max-pooling window along an axis holds no input element (only padding).
let private windowInPadding (input: int) (k: int) (stride: int) (padding: int) (dilation: int) (ceil: bool) =
    [ 0 .. poolOutput input k stride padding dilation ceil - 1 ]
    |> List.exists (fun o ->
        [ 0 .. k - 1 ]
        |> List.forall (fun j ->
            let i = o * stride - padding + j * dilation
            i < 0 || i >= input))

// ---- normalization ---------------------------------------------------------------------------

// ---- activations and losses ------------------------------------------------------------------

let private genClassification =
    gen {
        let! n = Gen.choose (1, 4)
        let! c = Gen.choose (2, 5)
        let! targets = Gen.arrayOfLength n (Gen.choose (0, c - 1))
        let! x = input [| int64 n; int64 c |] -3.0 3.0
        let! reduction = Gen.elements [ Reduction.Mean; Reduction.Sum; Reduction.None ]
        return reduction, Array.map int64 targets, x
    }

// ---- shape operations ------------------------------------------------------------------------

// ---- the F# surface --------------------------------------------------------------------------

/// The property that each of `ops` matches finite differences (40 cases) on inputs of rank
/// minRank..3, sides up to 4, with magnitudes in [lo, hi] (kept off the kinks at zero).
let private elementwiseProperty name minRank (lo, hi) (ops: (Tensor -> Tensor) list) =
    let cases =
        gen {
            let! s = genShape minRank 3 4
            let! x = inputAwayFromZero s lo hi
            let! op = Gen.elements [ 0 .. ops.Length - 1 ]
            return op, x
        }

    property name 40 cases (fun (op, x) -> gradCheck (one ops.[op]) [ x ])

/// Whether t [N, C, H, W] is stored batch-innermost ([C, H, W, N] in memory).
let private storedInner (t: Tensor) = t.Permute(1L, 2L, 3L, 0L).IsContiguous

/// t's values stored batch-innermost, as a sparse layer passes activations on.
let private inner (t: Tensor) =
    t.Permute(1L, 2L, 3L, 0L).Contiguous().Permute(3L, 0L, 1L, 2L)

/// max |a − b| over max |b| is at most tol.
let private close (tol: float) (a: Tensor) (b: Tensor) what =
    let a, b = values a, values b
    let scale = b |> Array.map abs |> Array.max |> max 1e-30
    let err = Array.map2 (fun (u: float) v -> abs (u - v)) a b |> Array.max
    Expect.isLessThanOrEqual (err / scale) tol what

/// Batch-norm cases drawn from g: float64 with a tolerance of 1e-12 and float32 with 1e-5; batch 2
/// and 9 (a width of 7: no dimension a multiple of the vector length); an offset of 1000 tests the
/// variance of values far from zero. (dtype, tol, batch, offset, x [N, 3, 5, 7], weight, bias,
/// output gradient, running mean, running variance).
let private batchNormCases (g: Generator) =
    [
        for dtype, tol in [ DType.Float64, 1e-12; DType.Float32, 1e-5 ] do
            for n, offset in [ 2L, 0.0; 9L, 0.0; 9L, 1000.0 ] do
                let x =
                    (Libtorch.Randn([| n; 3L; 5L; 7L |], g, DType.Float64) * 2.0 + offset).To(dtype)

                let w = Libtorch.Randn([| 3L |], g, DType.Float64).To(dtype)
                let b = Libtorch.Randn([| 3L |], g, DType.Float64).To(dtype)
                let dy = Libtorch.Randn(x.Shape, g, DType.Float64).To(dtype)
                let rm0 = Libtorch.Randn([| 3L |], g, DType.Float64).To(dtype)
                let rv0 = (Libtorch.Rand([| 3L |], g, DType.Float64) + 0.5).To(dtype)
                dtype, tol, n, offset, x, w, b, dy, rm0, rv0
    ]

/// Without gradients, normalize (given fresh copies of the running statistics rm0, rv0) gives the
/// output y' and running variance rv' that the pass with a graph gave.
let private sameWithoutGraph tol (rm0: Tensor) (rv0: Tensor) (normalize: Tensor -> Tensor -> Tensor) y' rv' where =
    use _ = Libtorch.NoGrad()
    let rm2, rv2 = rm0.Clone(), rv0.Clone()
    close tol (normalize rm2 rv2) y' $"output without a graph, {where}"
    close tol rv2 rv' $"running variance without a graph, {where}"

/// normalize (x, weight, bias), batch norm of an activation stored batch-innermost, refuses a
/// second derivative with a message that says so.
let private refusesSecondDerivative (g: Generator) (normalize: Tensor -> Tensor -> Tensor -> Tensor) what =
    let x =
        (inner (Libtorch.Randn([| 4L; 2L; 3L; 3L |], g, DType.Float64))).RequiresGrad_()

    let w = Libtorch.Ones([| 2L |], DType.Float64).RequiresGrad_()
    let y = normalize x w (Libtorch.Zeros([| 2L |], DType.Float64))

    let e =
        throws<TorchException>(fun () -> Autograd.Grad((y * y).Sum(), [| x |], createGraph = true) |> ignore)

    Expect.stringContains e.Message "no second derivative" what

/// Whether t [N, C, H, W] is stored channels-last ([N, H, W, C] in memory).
let private storedChannelsLast (t: Tensor) = t.Permute(0L, 2L, 3L, 1L).IsContiguous

/// t's values stored channels-last, as a dense float convolution on the CPU passes activations on.
let private channelsLast (t: Tensor) =
    t.Permute(0L, 2L, 3L, 1L).Contiguous().Permute(0L, 3L, 1L, 2L)

/// The three storages of an activation [N, C, H, W]: a name, a copy of t stored so, and the test for it.
let private storages: (string * (Tensor -> Tensor) * (Tensor -> bool)) list =
    [
        "contiguous", (fun t -> t.Contiguous()), (fun t -> t.IsContiguous)
        "batch-innermost", inner, storedInner
        "channels-last", channelsLast, storedChannelsLast
    ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "GradCheckTests"
        [
            (let cases =
                gen {
                    let! sa, sb = genBroadcastPair
                    let! a = input sa -2.0 2.0
                    let! b = inputAwayFromZero sb 0.5 2.0
                    let! op = Gen.elements [ 0..3 ]
                    return op, a, b
                }

             property "add, sub, mul, div with broadcasting match finite differences" 60 cases (fun (op, a, b) ->
                 let f =
                     match op with
                     | 0 -> fun (x: Tensor) y -> x + y
                     | 1 -> fun x y -> x - y
                     | 2 -> fun x y -> x * y
                     | _ -> fun x y -> x / y

                 gradCheck (two f) [ a; b ]))
            (let cases =
                gen {
                    let! s = genShape 0 3 4
                    let! x = inputAwayFromZero s 0.5 2.0
                    let! c = genAwayFromZero 1 0.5 3.0
                    let! op = Gen.elements [ 0..8 ]
                    return op, c.[0], x
                }

             property "tensor-scalar arithmetic matches finite differences" 60 cases (fun (op, c, x) ->
                 let f: Tensor -> Tensor =
                     match op with
                     | 0 -> fun t -> t + c
                     | 1 -> fun t -> c + t
                     | 2 -> fun t -> t - c
                     | 3 -> fun t -> c - t
                     | 4 -> fun t -> t * c
                     | 5 -> fun t -> c * t
                     | 6 -> fun t -> t / c
                     | 7 -> fun t -> c / t
                     | _ -> fun t -> -t

                 gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! sa, sb = genBroadcastPair
                    let! b = input sa 0.5 2.0
                    let! e = input sb -2.0 2.0
                    let! c = genFloat -2.5 2.5
                    return b, e, c
                }

             property "pow with tensor and scalar exponents matches finite differences" 40 cases (fun (b, e, c) ->
                 gradCheck (two (fun x y -> x.Pow y)) [ b; e ]
                 gradCheck (one (fun x -> x.Pow c)) [ b ]))
            elementwiseProperty
                "neg, abs, exp, square match finite differences"
                0
                (0.05, 2.0)
                [
                    (fun t -> t.Neg())
                    (fun t -> t.Abs())
                    (fun t -> t.Exp())
                    (fun t -> t.Square())
                ]
            (let cases =
                gen {
                    let! s = genShape 0 3 4
                    let! x = input s 0.2 3.0
                    let! useLog = Gen.elements [ true; false ]
                    return useLog, x
                }

             property "sqrt and log of positive inputs match finite differences" 30 cases (fun (useLog, x) ->
                 gradCheck (one (fun t -> if useLog then t.Log() else t.Sqrt())) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! lo = genFloat -1.0 0.0
                    let! width = genFloat 0.2 1.5
                    let! v = genFloats (numel s) -2.5 2.5
                    let! sides = Gen.elements [ 0..2 ]
                    let hi = lo + width
                    // keep every value at least 0.02 from either bound: the derivative jumps there
                    let v =
                        v
                        |> Array.map (fun x ->
                            if abs (x - lo) < 0.02 then x + 0.05
                            elif abs (x - hi) < 0.02 then x - 0.05
                            else x)

                    return sides, lo, hi, (v, s)
                }

             property "clamp away from its bounds matches finite differences" 40 cases (fun (sides, lo, hi, x) ->
                 let f (t: Tensor) =
                     match sides with
                     | 0 -> t.Clamp(lo, hi)
                     | 1 -> t.Clamp(min = lo)
                     | _ -> t.Clamp(max = hi)

                 gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! cond = Gen.arrayOfLength (numel s) (Gen.elements [ true; false ])
                    let! a = input s -2.0 2.0
                    let! b = input s -2.0 2.0
                    return s, cond, a, b
                }

             property "where sends each gradient to the chosen branch" 30 cases (fun (s, cond, a, b) ->
                 use c = bools s cond
                 gradCheck (two (fun x y -> Tensor.Where(c, x, y))) [ a; b ]))
            (let cases =
                gen {
                    let! s, dims, keep = genReduction 1
                    let! x = input s -2.0 2.0
                    let! useMean = Gen.elements [ true; false ]
                    return useMean, dims, keep, x
                }

             property "sum and mean over dims match finite differences" 40 cases (fun (useMean, dims, keep, x) ->
                 let f (t: Tensor) =
                     let d = Option.toObj dims
                     if useMean then t.Mean(d, keep) else t.Sum(d, keep)

                 gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! s, dims, keep = genReduction 2
                    let! x = input s -2.0 2.0
                    let! unbiased = Gen.elements [ true; false ]
                    return unbiased, dims, keep, x
                }

             property
                 "var over dims (biased and unbiased) matches finite differences"
                 40
                 cases
                 (fun (unbiased, dims, keep, x) ->
                     gradCheck (one (fun t -> t.Var(Option.toObj dims, unbiased, keep))) [ x ]))
            (let cases =
                gen {
                    let! s, dims, keep = genReduction 1
                    let! x = inputAwayFromZero s 0.1 2.0
                    let! p = Gen.elements [ 1.0; 2.0; 3.0 ]
                    return p, dims, keep, x
                }

             property "norm (p = 1, 2, 3) over dims matches finite differences" 40 cases (fun (p, dims, keep, x) ->
                 gradCheck (one (fun t -> t.Norm(p, Option.toObj dims, keep))) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! v = genDistinct (numel s)
                    let! dim = Gen.choose (0, s.Length - 1)
                    let! keep = Gen.elements [ true; false ]
                    let! op = Gen.elements [ 0..2 ]
                    return op, int64 dim, keep, (v, s)
                }

             property
                 "max and min along a dim (and over all) match finite differences"
                 40
                 cases
                 (fun (op, dim, keep, x) ->
                     let f (t: Tensor) =
                         match op with
                         | 0 ->
                             let struct (values, _) = t.Max(dim, keep)
                             values
                         | 1 ->
                             let struct (values, _) = t.Min(dim, keep)
                             values
                         | _ -> t.Max() + t.Min()

                     gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! n = Gen.choose (1, 4)
                    let! k = Gen.choose (1, 4)
                    let! m = Gen.choose (1, 4)
                    let! b = Gen.choose (1, 3)

                    let! sa, sb =
                        Gen.elements
                            [
                                [| n; k |], [| k; m |]
                                [| k |], [| k; m |]
                                [| n; k |], [| k |]
                                [| k |], [| k |]
                                [| b; n; k |], [| k; m |]
                                [| b; n; k |], [| b; k; m |]
                                [| n; k |], [| b; k; m |]
                            ]

                    let! a = input (Array.map int64 sa) -2.0 2.0
                    let! c = input (Array.map int64 sb) -2.0 2.0
                    return a, c
                }

             property "matmul (vector, matrix and batched forms) matches finite differences" 40 cases (fun (a, b) ->
                 gradCheck (two (fun x y -> x.MatMul y)) [ a; b ]))
            (let cases =
                gen {
                    let! lead = genShape 1 2 3
                    let! inF = Gen.choose (1, 4)
                    let! outF = Gen.choose (1, 4)
                    let! x = input (Array.append lead [| int64 inF |]) -2.0 2.0
                    let! w = input [| int64 outF; int64 inF |] -1.0 1.0
                    let! b = input [| int64 outF |] -1.0 1.0
                    let! withBias = Gen.elements [ true; false ]
                    return withBias, x, w, b
                }

             property "linear with and without bias matches finite differences" 30 cases (fun (withBias, x, w, b) ->
                 if withBias then
                     gradCheck (fun ts -> F.Linear(ts.[0], ts.[1], ts.[2])) [ x; w; b ]
                 else
                     gradCheck (fun ts -> F.Linear(ts.[0], ts.[1])) [ x; w ]))
            (let cases =
                gen {
                    let! groups = Gen.elements [ 1; 2 ]
                    let! cin = Gen.choose (1, 2)
                    let! cout = Gen.choose (1, 2)
                    let! n = Gen.choose (1, 2)
                    let! kh = Gen.choose (1, 3)
                    let! kw = Gen.choose (1, 3)
                    let! sh = Gen.choose (1, 2)
                    let! sw = Gen.choose (1, 2)
                    let! ph = Gen.choose (0, 1)
                    let! pw = Gen.choose (0, 1)
                    let! dh = Gen.choose (1, 2)
                    let! dw = Gen.choose (1, 2)
                    // the (dilated) kernel must fit in the padded input
                    let! extraH = Gen.choose (0, 2)
                    let! extraW = Gen.choose (0, 2)
                    let h = max 1 (dh * (kh - 1) + 1 - 2 * ph) + extraH
                    let w = max 1 (dw * (kw - 1) + 1 - 2 * pw) + extraW
                    let! bias = Gen.elements [ true; false ]
                    let! x = input [| int64 n; int64 (groups * cin); int64 h; int64 w |] -1.0 1.0
                    let! wt = input [| int64 (groups * cout); int64 cin; int64 kh; int64 kw |] -1.0 1.0
                    let! b = input [| int64 (groups * cout) |] -1.0 1.0

                    return
                        {
                            Groups = groups
                            Stride = struct (sh, sw)
                            Padding = struct (ph, pw)
                            Dilation = struct (dh, dw)
                            Bias = bias
                            X = x
                            W = wt
                            B = b
                        }
                }

             property "conv2d (stride, padding, dilation, groups, bias) matches finite differences" 25 cases (fun c ->
                 let conv (ts: Tensor list) =
                     let bias: Tensor | null = if c.Bias then ts.[2] else null
                     F.Conv2d(ts.[0], ts.[1], bias, c.Stride, c.Padding, c.Dilation, c.Groups)

                 gradCheck conv [ c.X; c.W; c.B ]))
            testCase "conv2d with square int arguments matches finite differences"
            <| fun () ->
                let x =
                    Array.init 2 (fun c -> Array.init 25 (fun i -> sin (float (i + 7 * c))))
                    |> Array.concat

                let w = Array.init (4 * 1 * 9) (fun i -> cos (float i * 0.7))

                withThreads 1 (fun () ->
                    gradCheck
                        (fun ts -> F.Conv2d(ts.[0], ts.[1], stride = 2, padding = 1, dilation = 1, groups = 2))
                        [ x, [| 1L; 2L; 5L; 5L |]; w, [| 4L; 1L; 3L; 3L |] ])
            (let cases =
                gen {
                    let! k = Gen.choose (1, 3)
                    let! stride = Gen.choose (1, k)
                    let! padding = Gen.choose (0, k / 2)
                    let! dilation = Gen.choose (1, 2)
                    let! ceil = Gen.elements [ true; false ]
                    let! extraH = Gen.choose (0, 3)
                    let! extraW = Gen.choose (0, 3)
                    let minSize = max 1 (dilation * (k - 1) + 1 - 2 * padding)
                    let! n = Gen.choose (1, 2)
                    let! c = Gen.choose (1, 2)
                    let s = [| int64 n; int64 c; int64 (minSize + extraH); int64 (minSize + extraW) |]
                    let! v = genDistinct (numel s)
                    return (k, stride, padding, dilation, ceil), (v, s)
                }
                |> Gen.filter (fun ((k, stride, padding, dilation, ceil), (_, s)) ->
                    not (windowInPadding (int s.[2]) k stride padding dilation ceil)
                    && not (windowInPadding (int s.[3]) k stride padding dilation ceil))

             property "max_pool2d matches finite differences" 40 cases (fun ((k, stride, padding, dilation, ceil), x) ->
                 gradCheck (one (fun t -> F.MaxPool2d(t, k, stride, padding, dilation, ceil))) [ x ]))
            testCase
                "max_pool2d over non-overlapping windows (the shim's own kernel) equals libtorch's: ties, NaN, gradients and gradients of gradients"
            <| fun () ->
                inScope (fun () ->
                    let rnd = Random(3)
                    // 6 and 36: whole windows of 2 and of 3; rows of 18 windows of 2 take the eight-wide path and its remainder
                    let shape = [| 2L; 3L; 6L; 36L |]

                    let data (nans: bool) =
                        // values in {0, 1, 2}: most windows hold ties, which go to the first maximum
                        Array.init (2 * 3 * 6 * 36) (fun i ->
                            if nans && i % 37 = 5 then
                                Double.NaN
                            else
                                float (rnd.Next 3))

                    let same (a: float[]) (b: float[]) =
                        Array.forall2 (fun (u: float) v -> u = v || (Double.IsNaN u && Double.IsNaN v)) a b

                    for dtype in [ DType.Float32; DType.Float64 ] do
                        for k in [ 2; 3 ] do
                            let ours (t: Tensor) = F.MaxPool2d(t, k)
                            // ceil mode on whole windows pools alike but takes libtorch's kernel
                            let theirs (t: Tensor) = F.MaxPool2d(t, k, k, 0, 1, true)
                            let withNan = Libtorch.FromArray(data true, shape).To(dtype)

                            Expect.isTrue
                                (same (values (ours withNan)) (values (theirs withNan)))
                                $"forward, k {k}, {dtype}"

                            let x = Libtorch.FromArray(data false, shape).To(dtype)
                            let w = Libtorch.Randn((ours x).Shape, dtype = dtype)
                            let v = Libtorch.Randn(shape, dtype = dtype)

                            let grads (pool: Tensor -> Tensor) =
                                let xi = x.Detach().RequiresGrad_()
                                let wi = w.Detach().RequiresGrad_()
                                let gx = (Autograd.Grad((pool xi * wi).Sum(), [| xi |], createGraph = true)).[0]
                                // the second derivative reaches w through the pooling's backward pass
                                let gw = (Autograd.Grad((gx * v).Sum(), [| wi |])).[0]
                                values gx, values gw

                            let gx, gw = grads ours
                            let gx', gw' = grads theirs
                            Expect.isTrue (same gx gx') $"input gradient, k {k}, {dtype}"
                            Expect.isTrue (same gw gw') $"gradient of the gradient, k {k}, {dtype}")

            testCase
                "max_pool2d of activations stored batch-innermost pools them as they are stored and equals the standard layout: ties, NaN, uncovered rows, gradients and gradients of gradients"
            <| fun () ->
                inScope (fun () ->
                    let rnd = Random(5)

                    let same (a: float[]) (b: float[]) =
                        Array.forall2 (fun (u: float) v -> u = v || (Double.IsNaN u && Double.IsNaN v)) a b

                    for dtype in [ DType.Float32; DType.Float64 ] do
                        // batches of 8, 9 and 20: the eight-lane path, its remainder and (with AVX-512)
                        // the sixteen-lane one; 7 × 11 images leave rows and columns outside every
                        // window (floor mode)
                        for n, k in [ 9L, 2; 20L, 3; 8L, 2 ] do
                            let stored = [| 3L; 7L; 11L; n |]

                            let data (nans: bool) =
                                Array.init (int (3L * 7L * 11L * n)) (fun i ->
                                    if nans && i % 37 = 5 then
                                        Double.NaN
                                    else
                                        float (rnd.Next 3))

                            let inner (d: float[]) =
                                Libtorch.FromArray(d, stored).To(dtype).Permute(3L, 0L, 1L, 2L)

                            let where = $"batch {n}, k {k}, {dtype}"
                            let withNan = inner (data true)
                            let pooled = F.MaxPool2d(withNan, k)
                            Expect.isTrue (storedInner pooled) $"the output stays stored batch-innermost, {where}"

                            Expect.isTrue
                                (same (values pooled) (values (F.MaxPool2d(withNan.Contiguous(), k))))
                                $"forward, {where}"

                            let x = inner (data false)
                            let w = Libtorch.Randn(pooled.Shape, dtype = dtype)
                            let v = Libtorch.Randn(x.Shape, dtype = dtype)

                            let grads (input: Tensor) (graph: bool) =
                                let xi = input.Detach().RequiresGrad_()
                                let wi = w.Detach().RequiresGrad_()

                                let gx =
                                    (Autograd.Grad((F.MaxPool2d(xi, k) * wi).Sum(), [| xi |], createGraph = graph)).[0]

                                if graph then
                                    values gx, values (Autograd.Grad((gx * v).Sum(), [| wi |])).[0], false
                                else
                                    values gx, [||], storedInner gx

                            let gx, _, gxInner = grads x false
                            let gx', _, _ = grads (x.Contiguous()) false
                            Expect.isTrue gxInner $"the input gradient comes back stored batch-innermost, {where}"
                            Expect.isTrue (same gx gx') $"input gradient, {where}"
                            let hx, hw, _ = grads x true
                            let hx', hw', _ = grads (x.Contiguous()) true
                            Expect.isTrue (same hx hx' && same hw hw') $"gradients with a graph, {where}")

            testCase
                "batch norm of activations stored batch-innermost normalizes them as stored and equals libtorch's on the standard layout: train and eval, running statistics, gradients"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(31UL)


                    for dtype, tol, n, offset, x, w, b, dy, rm0, rv0 in batchNormCases g do

                        for training in [ true; false ] do
                            let where = $"{dtype}, batch {n}, offset {offset}, training {training}"

                            // the reference: libtorch on the standard layout in float64, from the same values
                            let run (input: Tensor) (grad: Tensor) (dt: DType) =
                                let xi = input.To(dt).Detach().RequiresGrad_()
                                let wi = w.To(dt).Detach().RequiresGrad_()
                                let bi = b.To(dt).Detach().RequiresGrad_()
                                let rm, rv = rm0.To(dt).Clone(), rv0.To(dt).Clone()
                                let y = F.BatchNorm(xi, rm, rv, wi, bi, training, 0.3, 1e-3)

                                let gs =
                                    Autograd.Grad([| y |], [| xi; wi; bi |], [| grad.To(dt) |]) |> Array.map nonNull

                                y, rm, rv, gs

                            let y, rm, rv, gs = run (inner x) (inner dy) dtype
                            let y', rm', rv', gs' = run x dy DType.Float64
                            Expect.isTrue (storedInner y) $"the output stays stored batch-innermost, {where}"
                            Expect.isFalse (storedInner y') $"the reference ran on the standard layout, {where}"
                            Expect.isTrue (storedInner gs.[0]) $"the input gradient comes back stored so, {where}"
                            close tol y y' $"output, {where}"
                            close tol rm rm' $"running mean, {where}"
                            close tol rv rv' $"running variance, {where}"

                            for k, name in [ 0, "input"; 1, "weight"; 2, "bias" ] do
                                close tol gs.[k] gs'.[k] $"{name} gradient, {where}"

                            // an output gradient in the standard layout is read as well
                            let _, _, _, gsStd = run (inner x) dy dtype

                            close
                                tol
                                gsStd.[0]
                                gs'.[0]
                                $"input gradient from a standard-layout output gradient, {where}"

                            sameWithoutGraph
                                tol
                                rm0
                                rv0
                                (fun rm rv -> F.BatchNorm(inner x, rm, rv, w, b, training, 0.3, 1e-3))
                                y'
                                rv'
                                where

                    // no second derivative: refused with the way out, not silently wrong
                    refusesSecondDerivative
                        g
                        (fun x w b -> F.BatchNorm(x, null, null, w, b, training = true))
                        "the error says what is missing")

            testCase
                "batch norm + ReLU in one function equals batch norm then ReLU, batch-innermost and standard layouts: train and eval, running statistics, gradients"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(41UL)

                    // Both sides compute the pre-activation with the same code, so they agree on where the
                    // ReLU passes gradients.

                    for dtype, tol, n, offset, x, w, b, dy, rm0, rv0 in batchNormCases g do

                        for layout, stored in [ "batch-innermost", inner; "standard", id ] do
                            for training in [ true; false ] do
                                let where = $"{dtype}, batch {n}, offset {offset}, {layout}, training {training}"

                                let run fused =
                                    let xi = (stored x).Detach().RequiresGrad_()
                                    let wi = w.Detach().RequiresGrad_()
                                    let bi = b.Detach().RequiresGrad_()
                                    let rm, rv = rm0.Clone(), rv0.Clone()

                                    let y =
                                        if fused then
                                            F.BatchNormRelu(xi, rm, rv, wi, bi, training, 0.3, 1e-3)
                                        else
                                            F.Relu(F.BatchNorm(xi, rm, rv, wi, bi, training, 0.3, 1e-3))

                                    let gs =
                                        Autograd.Grad([| y |], [| xi; wi; bi |], [| stored dy |]) |> Array.map nonNull

                                    y, rm, rv, gs

                                let y, rm, rv, gs = run true
                                let y', rm', rv', gs' = run false
                                Expect.equal (storedInner y) (storedInner y') $"the output's storage, {where}"

                                Expect.equal
                                    (storedInner gs.[0])
                                    (storedInner gs'.[0])
                                    $"the input gradient's storage, {where}"

                                let zeros = (values y') |> Array.filter (fun v -> v = 0.0) |> Array.length
                                Expect.isGreaterThan zeros 0 $"the ReLU clips some values, {where}"
                                Expect.isLessThan zeros (int y'.NumEl) $"the ReLU passes some values, {where}"
                                close tol y y' $"output, {where}"
                                close tol rm rm' $"running mean, {where}"
                                close tol rv rv' $"running variance, {where}"

                                for k, name in [ 0, "input"; 1, "weight"; 2, "bias" ] do
                                    close tol gs.[k] gs'.[k] $"{name} gradient, {where}"

                                sameWithoutGraph
                                    tol
                                    rm0
                                    rv0
                                    (fun rm rv -> F.BatchNormRelu(stored x, rm, rv, w, b, training, 0.3, 1e-3))
                                    y'
                                    rv'
                                    where

                    // batch-innermost, it is the shim's own function (which has no second derivative), not
                    // libtorch's batch norm and ReLU
                    refusesSecondDerivative
                        g
                        (fun x w b -> F.BatchNormRelu(x, null, null, w, b, training = true))
                        "the fused function ran")

            testCase
                "StoredLike copies between the contiguous, batch-innermost and channels-last storages only when they differ, and sends the gradient back in the input's"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(37UL)

                    for dtype in [ DType.Float64; DType.Float32 ] do
                        // odd sizes, so that no two storages coincide and the transposes have remainders
                        for n in [ 3L; 17L ] do
                            let std = Libtorch.Randn([| n; 5L; 3L; 9L |], g, DType.Float64).To(dtype)

                            for fromName, from, isFrom in storages do
                                let x = from std
                                Expect.isTrue (isFrom x) $"{fromName} is stored so"
                                // already stored as wanted: the same memory (a write through the result shows in x)
                                let expected = values (x.Clone().Add_(1.0))
                                let y = x.Clone()
                                F.StoredLike(y, x).Add_(1.0) |> ignore
                                Expect.equal (values y) expected $"{dtype}, batch {n}, {fromName}: no copy"

                                for toName, store, isTo in storages do
                                    if toName <> fromName then
                                        let where = $"{dtype}, batch {n}, {fromName} to {toName}"
                                        let xi = x.Detach().RequiresGrad_()
                                        let y = F.StoredLike(xi, store std)
                                        Expect.isTrue (isTo y) $"{where}: stored as the other"
                                        Expect.equal (values y) (values x) $"{where}: the same values"
                                        let dy = Libtorch.Randn(x.Shape, g, DType.Float64).To(dtype)

                                        for gradName, gradAs, _ in storages do
                                            let gx =
                                                (Autograd.Grad([| y |], [| xi |], [| gradAs dy |], retainGraph = true)
                                                 |> Array.map nonNull).[0]

                                            Expect.equal
                                                (values gx)
                                                (values dy)
                                                $"{where}, a {gradName} gradient: the gradient is the output's"

                                            Expect.isTrue
                                                (isFrom gx)
                                                $"{where}, a {gradName} gradient: it comes back in the input's storage"

                    let e =
                        throws<TorchException>(fun () ->
                            F.StoredLike(Libtorch.Zeros([| 2L; 3L |]), Libtorch.Zeros([| 3L; 2L |]))
                            |> ignore)

                    Expect.stringContains e.Message "shapes differ" "a clear error")

            testCase
                "a dense convolution runs in its input's storage, contiguous for a batch-innermost one, its input gradient stored as its input"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(41UL)

                    for dtype in [ DType.Float64; DType.Float32 ] do
                        for n, stride, padding in [ 2L, 1, 1; 9L, 2, 0 ] do
                            let x = Libtorch.Randn([| n; 3L; 7L; 6L |], g, DType.Float64)
                            let w = Libtorch.Randn([| 4L; 3L; 3L; 3L |], g, DType.Float64)
                            let b = Libtorch.Randn([| 4L |], g, DType.Float64)

                            let run (input: Tensor) (dt: DType) =
                                let xi = input.To(dt).Detach().RequiresGrad_()
                                let wi = w.To(dt).Detach().RequiresGrad_()
                                let y = F.Conv2d(xi, wi, b.To(dt), stride, padding)
                                let dy = Libtorch.Ones(y.Shape, dt) * 0.5 + y.Detach()
                                let gs = Autograd.Grad([| y |], [| xi; wi |], [| dy |]) |> Array.map nonNull
                                y, gs.[0], gs.[1]

                            // libtorch's float64 convolution on the standard layout
                            let y', gx', gw' = run x DType.Float64
                            let tol = if dtype = DType.Float64 then 1e-12 else 1e-5

                            let results =
                                [ for name, store, isStored in storages -> name, isStored, run (store x) dtype ]

                            let _, _, (y0, gx0, gw0) = results.Head

                            for name, isStored, (y, gx, gw) in results do
                                let where = $"{dtype}, batch {n}, stride {stride}, a {name} input"
                                let channelsLast = dtype = DType.Float32 && name = "channels-last"

                                // a batch-innermost input runs contiguous, so it gives the contiguous one's bits
                                if not channelsLast then
                                    Expect.sequenceEqual (values y) (values y0) $"output, {where}"
                                    Expect.sequenceEqual (values gx) (values gx0) $"input gradient, {where}"
                                    Expect.sequenceEqual (values gw) (values gw0) $"weight gradient, {where}"

                                assertClose $"output, {where}" tol tol (values y') (values y)
                                assertClose $"input gradient, {where}" tol tol (values gx') (values gx)
                                assertClose $"weight gradient, {where}" tol tol (values gw') (values gw)

                                Expect.isTrue
                                    (isStored gx)
                                    $"the input gradient comes back stored as the input, {where}"

                                Expect.equal
                                    (storedChannelsLast y && not y.IsContiguous)
                                    channelsLast
                                    $"only a float32 channels-last input runs channels-last, {where}"

                    // what a model applies to its input: float32 CPU images only
                    let x = Libtorch.Randn([| 3L; 5L; 4L; 6L |], g)
                    Expect.isTrue (storedChannelsLast (F.ChannelsLast x)) "float32 images are stored channels-last"
                    Expect.equal (values (F.ChannelsLast x)) (values x) "the same values"
                    let x64 = x.To(DType.Float64)
                    Expect.isTrue (F.ChannelsLast(x64).IsContiguous) "float64 stays as it is"
                    let flat = Libtorch.Randn([| 3L; 5L |], g)
                    Expect.isTrue (F.ChannelsLast(flat).IsContiguous) "a 2-d tensor stays as it is")

            testCase
                "a float32 dense convolution agrees with float64 over kernels, strides and channel counts, and runs channels-last where libtorch's is right"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(43UL)
                    // libtorch 1.13's channels-last convolution with a 1×1 kernel at stride 2 over 2 to 6
                    // channels (8×8 images) gives wrong gradients and corrupts the heap: such a layer must
                    // run contiguous, as a ResNet's projection shortcut over few channels would.
                    for kernel, stride, padding in [ 1L, 2, 0; 1L, 1, 0; 3L, 1, 1; 3L, 2, 1; 5L, 2, 2 ] do
                        for channels in [ 1L; 3L; 4L; 6L; 8L; 16L ] do
                            for n in [ 1L; 2L; 12L ] do
                                let where = $"kernel {kernel}, stride {stride}, {channels} channels, batch {n}"
                                let x = Libtorch.Randn([| n; channels; 8L; 8L |], g, DType.Float64)
                                let w = Libtorch.Randn([| 8L; channels; kernel; kernel |], g, DType.Float64)

                                let run (input: Tensor) (dt: DType) =
                                    let xi = input.To(dt).Detach().RequiresGrad_()
                                    let wi = w.To(dt).Detach().RequiresGrad_()
                                    let y = F.Conv2d(xi, wi, null, stride, padding)
                                    use g2 = new Generator(44UL)
                                    let dy = Libtorch.Randn(y.Shape, g2, DType.Float64).To(dt)
                                    let gs = Autograd.Grad([| y |], [| xi; wi |], [| dy |]) |> Array.map nonNull
                                    y, gs.[0], gs.[1]

                                let y', gx', gw' = run x DType.Float64

                                for name, store, _ in storages do
                                    let y, gx, gw = run (store x) DType.Float32
                                    let channelsLastInput = name = "channels-last"
                                    let at = $"{where}, a {name} input"
                                    // float32 rounding is ~1e-7 of the scale; the wrong gradients were off by its order
                                    for what, exact, got in
                                        [ "output", y', y; "input gradient", gx', gx; "weight gradient", gw', gw ] do
                                        let e, a = values exact, values got
                                        let scale = max 1e-12 (e |> Array.map abs |> Array.max)
                                        let err = Array.map2 (fun u v -> abs (u - v)) e a |> Array.max
                                        Expect.isLessThanOrEqual (err / scale) 1e-5 $"{what}, {at}"

                                    let pointStrided = kernel = 1L && stride > 1
                                    let expected = channelsLastInput && (not pointStrided || channels % 8L = 0L)
                                    // one channel or a 1×1 output: both storages at once, nothing to tell apart
                                    if channels > 1L && y.Shape.[2] * y.Shape.[3] > 1L && n > 1L then
                                        Expect.equal
                                            (storedChannelsLast y && not y.IsContiguous)
                                            expected
                                            $"a channels-last input runs channels-last unless a 1×1 kernel at a stride over a channel count not a multiple of 8, {at}")

            testCase
                "max pooling of a channels-last input gives the contiguous input's values and gradient, stored channels-last"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(45UL)

                    for dtype in [ DType.Float32; DType.Float64 ] do
                        for n, c, h, w, k in [ 3L, 5L, 8L, 6L, 2; 17L, 9L, 9L, 7L, 3; 2L, 4L, 4L, 4L, 4 ] do
                            let where = $"{dtype}, [{n}, {c}, {h}, {w}], window {k}"
                            let x = Libtorch.Randn([| n; c; h; w |], g, dtype)

                            let run (input: Tensor) =
                                let xi = input.Detach().RequiresGrad_()
                                let y = F.MaxPool2d(xi, k)
                                use g2 = new Generator(46UL)
                                let dy = Libtorch.Randn(y.Shape, g2, dtype)
                                y, (Autograd.Grad([| y |], [| xi |], [| dy |]) |> Array.map nonNull).[0]

                            let y, gx = run (channelsLast x)
                            let y', gx' = run x
                            Expect.equal (values y) (values y') $"output, {where}"
                            Expect.equal (values gx) (values gx') $"input gradient, {where}"
                            Expect.isTrue (storedChannelsLast y) $"the output stays channels-last, {where}"
                            Expect.isTrue (storedChannelsLast gx) $"the input gradient comes back so, {where}"
                            // without a graph: the same values
                            use _ = Libtorch.NoGrad()
                            Expect.equal (values (F.MaxPool2d(channelsLast x, k))) (values y') $"no graph, {where}")

            testCase "max_pool2d rejects a window that lies entirely in the padding"
            <| fun () ->
                // libtorch 1.13 itself returns -inf there and its backward corrupts the heap; the shim refuses
                Expect.isTrue (windowInPadding 1 2 1 1 2 false) "windowInPadding 1 2 1 1 2 false"
                Expect.isFalse (windowInPadding 1 2 1 1 1 false) "windowInPadding 1 2 1 1 1 false"

                inScope (fun () ->
                    let x = Libtorch.Randn([| 1L; 1L; 1L; 3L |], dtype = DType.Float64)
                    let e = throws<TorchException>(fun () -> F.MaxPool2d(x, 2, 1, 1, 2) |> ignore)
                    Expect.stringContains e.Message "lies entirely in the padding" "e.Message"
                    // without the dilation every window touches the input: the call works
                    Expect.equal
                        (F.MaxPool2d(x, 2, 1, 1, 1).Shape)
                        ([| 1L; 1L; 2L; 4L |])
                        "F.MaxPool2d(x, 2, 1, 1, 1).Shape")
            (let cases =
                gen {
                    let! k = Gen.choose (1, 3)
                    let! stride = Gen.choose (1, k)
                    let! padding = Gen.choose (0, k / 2)
                    let! ceil = Gen.elements [ true; false ]
                    let! countPad = Gen.elements [ true; false ]
                    let! h = Gen.choose (k, k + 3)
                    let! w = Gen.choose (k, k + 3)
                    let! x = input [| 2L; 2L; int64 h; int64 w |] -2.0 2.0
                    return (k, stride, padding, ceil, countPad), x
                }

             property "avg_pool2d matches finite differences" 40 cases (fun ((k, stride, padding, ceil, countPad), x) ->
                 gradCheck (one (fun t -> F.AvgPool2d(t, k, stride, padding, ceil, countPad))) [ x ]))
            (let cases =
                gen {
                    let! h = Gen.choose (1, 6)
                    let! w = Gen.choose (1, 6)
                    let! oh = Gen.choose (1, h)
                    let! ow = Gen.choose (1, w)
                    let! x = input [| 1L; 2L; int64 h; int64 w |] -2.0 2.0
                    return oh, ow, x
                }

             property "adaptive_avg_pool2d matches finite differences" 30 cases (fun (oh, ow, x) ->
                 gradCheck (one (fun t -> F.AdaptiveAvgPool2d(t, oh, ow))) [ x ]))
            (let cases =
                gen {
                    let! n = Gen.choose (2, 3)
                    let! c = Gen.choose (1, 3)
                    let! spatial = Gen.elements [ [||]; [| 2L; 2L |]; [| 1L; 3L |] ]
                    let! x = input (Array.append [| int64 n; int64 c |] spatial) -2.0 2.0
                    let! w = input [| int64 c |] 0.5 1.5
                    let! b = input [| int64 c |] -1.0 1.0
                    let! withStats = Gen.elements [ true; false ]
                    return withStats, x, w, b
                }

             property
                 "batch_norm in train mode (batch statistics) matches finite differences"
                 25
                 cases
                 (fun (withStats, x, w, b) ->
                     let c = (snd w).[0]
                     // running statistics, when given, are updated in place but do not change train-mode output
                     use rm = Libtorch.Zeros([| c |], DType.Float64)
                     use rv = Libtorch.Ones([| c |], DType.Float64)

                     let bn (ts: Tensor list) =
                         let m, v: (Tensor | null) * (Tensor | null) =
                             if withStats then rm, rv else null, null

                         F.BatchNorm(ts.[0], m, v, ts.[1], ts.[2], training = true)

                     gradCheck bn [ x; w; b ]))
            (let cases =
                gen {
                    let! n = Gen.choose (1, 3)
                    let! c = Gen.choose (1, 3)
                    let! x = input [| int64 n; int64 c; 2L; 2L |] -2.0 2.0
                    let! w = input [| int64 c |] 0.5 1.5
                    let! b = input [| int64 c |] -1.0 1.0
                    let! mean = genFloats c -1.0 1.0
                    let! var = genFloats c 0.5 2.0
                    return mean, var, x, w, b
                }

             property
                 "batch_norm in eval mode (running statistics) matches finite differences"
                 25
                 cases
                 (fun (mean, var, x, w, b) ->
                     use rm = f64 [| int64 mean.Length |] mean
                     use rv = f64 [| int64 var.Length |] var
                     gradCheck (fun ts -> F.BatchNorm(ts.[0], rm, rv, ts.[1], ts.[2], training = false)) [ x; w; b ]))
            (let cases =
                gen {
                    let! s = genShape 2 3 3
                    let s = s |> Array.map (max 2L)
                    let! k = Gen.choose (1, 2)
                    let normalized = Array.sub s (s.Length - k) k
                    let! x = input s -2.0 2.0
                    let! w = input normalized 0.5 1.5
                    let! b = input normalized -1.0 1.0
                    let! affine = Gen.elements [ true; false ]
                    return affine, normalized, x, w, b
                }

             property
                 "layer_norm over trailing dims matches finite differences"
                 30
                 cases
                 (fun (affine, normalized, x, w, b) ->
                     if affine then
                         gradCheck (fun ts -> F.LayerNorm(ts.[0], normalized, ts.[1], ts.[2])) [ x; w; b ]
                     else
                         gradCheck (one (fun t -> F.LayerNorm(t, normalized))) [ x ]))
            elementwiseProperty
                "relu and gelu (exact and tanh) match finite differences"
                1
                (0.01, 3.0)
                [
                    (fun t -> F.Relu t)
                    (fun t -> F.Gelu t)
                    (fun t -> F.Gelu(t, tanhApproximation = true))
                ]
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! dim = Gen.choose (-s.Length, s.Length - 1)
                    let! x = input s -3.0 3.0
                    let! useLog = Gen.elements [ true; false ]
                    return useLog, int64 dim, x
                }

             property "softmax and log_softmax along any dim match finite differences" 40 cases (fun (useLog, dim, x) ->
                 gradCheck (one (fun t -> if useLog then F.LogSoftmax(t, dim) else F.Softmax(t, dim))) [ x ]))
            (let cases =
                gen {
                    let! case = genClassification
                    let! smoothing = Gen.elements [ 0.0; 0.1; 0.3 ]
                    return smoothing, case
                }

             property
                 "cross_entropy (with label smoothing) matches finite differences"
                 40
                 cases
                 (fun (smoothing, (reduction, targets, x)) ->
                     use y = i64 [| int64 targets.Length |] targets
                     gradCheck (one (fun t -> F.CrossEntropy(t, y, reduction, smoothing))) [ x ]))
            (property
                "nll_loss of log_softmax matches finite differences"
                30
                genClassification
                (fun (reduction, targets, x) ->
                    use y = i64 [| int64 targets.Length |] targets
                    gradCheck (one (fun t -> F.NllLoss(F.LogSoftmax(t, 1L), y, reduction))) [ x ]
                    // nll_loss alone is linear in its input: its gradient is −1 (scaled) at the targets
                    gradCheck (one (fun t -> F.NllLoss(t, y, reduction))) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! a = input s -2.0 2.0
                    let! b = input s -2.0 2.0
                    let! reduction = Gen.elements [ Reduction.Mean; Reduction.Sum; Reduction.None ]
                    return reduction, a, b
                }

             property "mse_loss matches finite differences in both arguments" 30 cases (fun (reduction, a, b) ->
                 gradCheck (two (fun x y -> F.MseLoss(x, y, reduction))) [ a; b ]))
            (let cases =
                gen {
                    let! s = genShape 2 4 3
                    let! perm = Gen.shuffle [| 0L .. int64 s.Length - 1L |]
                    let! a = Gen.choose (0, s.Length - 1)
                    let! b = Gen.choose (0, s.Length - 1)
                    let! start = Gen.choose (0, s.Length - 1)
                    let! stop = Gen.choose (start, s.Length - 1)
                    let! x = input s -2.0 2.0
                    let! op = Gen.elements [ 0..4 ]
                    return op, perm, (int64 a, int64 b), (int64 start, int64 stop), x
                }

             property
                 "reshape, view, flatten, permute, transpose match finite differences"
                 40
                 cases
                 (fun (op, perm, (a, b), (start, stop), x) ->
                     let s = snd x

                     let f (t: Tensor) =
                         match op with
                         | 0 -> t.Reshape(-1L, s.[s.Length - 1]).MatMul(t.Reshape(s.[s.Length - 1], -1L))
                         | 1 -> t.View(Array.rev s) * t.Permute(Array.rev [| 0L .. int64 s.Length - 1L |])
                         | 2 -> t.Flatten(start, stop)
                         | 3 -> t.Permute perm
                         | _ -> t.Transpose(a, b)

                     gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 3
                    let! dim = Gen.choose (0, s.Length - 1)
                    let! count = Gen.choose (1, 3)
                    let! sizes = Gen.arrayOfLength count (Gen.choose (1, 3))

                    let shapes =
                        sizes
                        |> Array.map (fun k -> s |> Array.mapi (fun i d -> if i = dim then int64 k else d))

                    let! xs = shapes |> Array.map (fun sh -> input sh -2.0 2.0) |> Gen.sequenceToList
                    let! ys = List.replicate count (input s -2.0 2.0) |> Gen.sequenceToList
                    let! stackDim = Gen.choose (0, s.Length)
                    return int64 dim, xs, int64 stackDim, ys
                }

             property "cat and stack send each slice's gradient to its input" 30 cases (fun (dim, xs, stackDim, ys) ->
                 gradCheck (fun ts -> Libtorch.Cat(List.toArray ts, dim)) xs
                 gradCheck (fun ts -> Libtorch.Stack(List.toArray ts, stackDim)) ys))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! dim = Gen.choose (0, s.Length - 1)
                    let! start = Gen.choose (0, int s.[dim] - 1)
                    let! length = Gen.choose (1, int s.[dim] - start)
                    let! x = input s -2.0 2.0
                    let! op = Gen.elements [ 0..3 ]
                    return op, int64 dim, int64 start, int64 length, x
                }

             property
                 "narrow, select, expand, flip, squeeze, unsqueeze match finite differences"
                 40
                 cases
                 (fun (op, dim, start, length, x) ->
                     let s = snd x

                     let f (t: Tensor) =
                         match op with
                         | 0 -> t.Narrow(dim, start, length)
                         | 1 -> t.Select(dim, start)
                         | 2 -> t.Unsqueeze(0L).Expand(Array.append [| 3L |] s).Flip(0L, dim + 1L)
                         | _ -> t.Unsqueeze(dim).Squeeze(dim) * t

                     gradCheck (one f) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! dim = Gen.choose (0, s.Length - 1)
                    let! count = Gen.choose (1, 6)
                    let! index = Gen.arrayOfLength count (Gen.choose (0, int s.[dim] - 1))
                    let! x = input s -2.0 2.0
                    return int64 dim, Array.map int64 index, x
                }

             property "index_select with repeated indices accumulates gradients" 30 cases (fun (dim, index, x) ->
                 use idx = i64 [| int64 index.Length |] index
                 gradCheck (one (fun t -> t.IndexSelect(dim, idx))) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! dim = Gen.choose (0, s.Length - 1)
                    let! k = Gen.choose (1, 4)
                    let shapeIdx = s |> Array.mapi (fun i d -> if i = dim then int64 k else d)
                    let! index = Gen.arrayOfLength (numel shapeIdx) (Gen.choose (0, int s.[dim] - 1))
                    let! x = input s -2.0 2.0
                    return int64 dim, shapeIdx, Array.map int64 index, x
                }

             property "gather matches finite differences" 30 cases (fun (dim, shapeIdx, index, x) ->
                 use idx = i64 shapeIdx index
                 gradCheck (one (fun t -> t.Gather(dim, idx))) [ x ]))
            (let cases =
                gen {
                    let! s = genShape 1 3 4
                    let! padDims = Gen.choose (1, s.Length)

                    let! pads =
                        Array.init padDims (fun i ->
                            let size = int s.[s.Length - 1 - i]
                            // a crop may remove at most size − 1 elements in total along a dim
                            gen {
                                let! left = Gen.choose (-(size - 1) / 2, 2)
                                let! right = Gen.choose (-(size - 1) / 2, 2)
                                return [| int64 left; int64 right |]
                            })
                        |> Gen.sequenceToArray

                    let! value = genFloat -1.0 1.0
                    let! x = input s -2.0 2.0
                    return Array.concat pads, value, x
                }

             property
                 "constant pad (including negative pads that crop) matches finite differences"
                 30
                 cases
                 (fun (pads, value, x) -> gradCheck (one (fun t -> t.Pad(pads, value))) [ x ]))
            testCase "Pai.Tensors.grad of a pipeline matches finite differences"
            <| fun () ->
                let cases =
                    gen {
                        let! s = genShape 1 3 4
                        let! a = input s 0.2 2.0
                        let! b = input s -1.0 1.0
                        return a, b
                    }

                let f (ts: Tensor list) =
                    let a, b = ts.[0], ts.[1]
                    // sum(sqrt(a) · exp(b)² / 2) + mean(log a) − clamp(b)
                    (a |> Pai.Tensors.sqrt)
                    * (b |> Pai.Tensors.exp |> Pai.Tensors.square |> Pai.Tensors.scale 0.5)
                    + (a |> Pai.Tensors.log |> Pai.Tensors.mean)
                    - (b |> Pai.Tensors.clamp -0.5 2.0 |> Pai.Tensors.sumDim 0L |> Pai.Tensors.sum)

                check 30 cases (fun (a, b) ->
                    // clamp's kink: keep b away from −0.5
                    let bv = fst b |> Array.map (fun v -> if abs (v + 0.5) < 0.02 then v + 0.05 else v)
                    gradCheckUsing (fun out leaves -> Pai.Tensors.grad leaves out) 1e-5 1e-6 f [ a; bv, snd b ])
            testCase "an input the output does not depend on gets a zero gradient"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 3L |] [| 1.0; 2.0; 3.0 |]).RequiresGrad_()
                    let unused = (f64 [| 2L |] [| 5.0; 6.0 |]).RequiresGrad_()
                    let gs = Pai.Tensors.grad [ x; unused ] ((x * x).Sum())
                    Expect.equal (gs.[0].ToArray<float>()) ([| 2.0; 4.0; 6.0 |]) "gs.[0].ToArray<float>()"
                    Expect.equal (gs.[1].ToArray<float>()) ([| 0.0; 0.0 |]) "gs.[1].ToArray<float>()"

                    let raw = Autograd.Grad([| (x * 3.0).Sum() |], [| x; unused |], allowUnused = true)

                    Expect.equal
                        ((nonNull raw.[0]).ToArray<float>())
                        ([| 3.0; 3.0; 3.0 |])
                        "(nonNull raw.[0]).ToArray<float>()"

                    Expect.isNull raw.[1] "raw.[1]")
        ]
