/// The binding's runtime and non-differentiable surface: threads, version, seeded generators,
/// factories, dtypes, sorting, comparisons, indexing, in-place updates and grad mode.
module Pai.Tests.BindingTests

open System
open Xunit
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support

type F = Functional

// ---- runtime ---------------------------------------------------------------------------------

[<Fact>]
let ``threads: the configured count is what libtorch reports`` () =
    let before = Libtorch.NumThreads

    try
        Libtorch.SetNumThreads 1
        Assert.Equal(1, Libtorch.NumThreads)
        Libtorch.SetNumThreads 2
        Assert.Equal(2, Libtorch.NumThreads)
    finally
        Libtorch.SetNumThreads before

[<Fact>]
let ``threads: a count below one is rejected before libtorch sees it`` () =
    let before = Libtorch.NumThreads

    throws<ArgumentOutOfRangeException>(fun () -> Libtorch.SetNumThreads 0)
    |> ignore

    Assert.Equal(before, Libtorch.NumThreads)

[<Fact>]
let ``the libtorch version is Debian's 1.13`` () =
    Assert.StartsWith("1.13", Libtorch.Version)
    Assert.EndsWith("libpai_torch.so", Libtorch.NativeLibraryPath.Split(' ').[0])

[<Fact>]
let ``a BLAS library is mapped once libtorch is loaded`` () =
    inScope (fun () -> Libtorch.Ones([| 8L; 8L |]).MatMul(Libtorch.Ones([| 8L; 8L |])) |> ignore)
    Assert.DoesNotContain("no BLAS library mapped", Libtorch.ActiveBlas)

// ---- seeded generators -----------------------------------------------------------------------

/// Every random draw the binding offers, from one generator, as float64 arrays.
let private draws (seed: uint64) : float[] list =
    inScope (fun () ->
        use g = new Generator(seed)
        let p = Libtorch.Full([| 64L |], 0.5, DType.Float64)
        let shaped = Libtorch.Zeros([| 3L; 5L |], DType.Float64)

        [
            Libtorch.Randn([| 50L |], g)
            Libtorch.Randn([| 7L |], g, DType.Float64)
            Libtorch.Rand([| 50L |], g)
            Libtorch.RandInt(0L, 1000L, [| 50L |], g)
            Libtorch.RandPerm(50L, g)
            Libtorch.Bernoulli(p, g)
            Libtorch.RandnLike(shaped, g)
            Libtorch.RademacherLike(shaped, g)
            Libtorch.Zeros([| 20L |]).Normal_(1.0, 2.0, g)
            Libtorch.Zeros([| 20L |]).Uniform_(-3.0, 3.0, g)
            F.Dropout(Libtorch.Ones([| 64L |]), 0.5, true, g)
        ]
        |> List.map values)

[<Fact>]
let ``seeded generators: the same seed gives bit-identical draws, other seeds differ`` () =
    let a = draws 42UL
    let b = draws 42UL
    let c = draws 43UL

    List.iteri2
        (fun k (x: float[]) (y: float[]) ->
            Assert.True(
                Array.map BitConverter.DoubleToInt64Bits x = Array.map BitConverter.DoubleToInt64Bits y,
                sprintf "draw %d differs for the same seed" k
            ))
        a
        b

    List.iteri2
        (fun k (x: float[]) (y: float[]) -> Assert.True(x <> y, sprintf "draw %d is the same for seeds 42 and 43" k))
        a
        c

[<Fact>]
let ``seeded generators: draws advance the state and the seed is remembered`` () =
    inScope (fun () ->
        use g = new Generator(9UL)
        Assert.Equal(9UL, g.Seed)
        let first = values (Libtorch.Randn([| 10L |], g))
        let second = values (Libtorch.Randn([| 10L |], g))
        Assert.NotEqual<float[]>(first, second))

[<Fact>]
let ``the global seed makes unseeded draws repeatable`` () =
    inScope (fun () ->
        Libtorch.ManualSeed 77UL
        let a = values (Libtorch.Randn([| 16L |]))
        Libtorch.ManualSeed 77UL
        let b = values (Libtorch.Randn([| 16L |]))
        Assert.Equal<float[]>(a, b))

[<Fact>]
let ``random values have the right ranges and statistics`` () =
    inScope (fun () ->
        use g = new Generator(1UL)
        let n = 200_000
        let z = values (Libtorch.Randn([| int64 n |], g, DType.Float64))
        let mean = Array.average z
        let sd = sqrt (z |> Array.averageBy (fun v -> (v - mean) ** 2.0))
        // standard errors: 1/√n ≈ 0.0022 for the mean, ≈ 0.0016 for the sd
        Assert.InRange(mean, -0.012, 0.012)
        Assert.InRange(sd, 0.99, 1.01)

        Assert.InRange(
            z
            |> Array.filter (fun v -> abs v < 1.0)
            |> Array.length
            |> float
            |> (fun c -> c / float n),
            0.677,
            0.689
        )

        let u = values (Libtorch.Rand([| int64 n |], g))
        Assert.True(u |> Array.forall (fun v -> v >= 0.0 && v < 1.0))
        Assert.InRange(Array.average u, 0.497, 0.503)

        let ints = Libtorch.RandInt(-3L, 4L, [| 10_000L |], g).ToArray<int64>()
        Assert.Equal<int64[]>([| -3L .. 3L |], Array.distinct ints |> Array.sort)

        let perm = Libtorch.RandPerm(100L, g).ToArray<int64>()
        Assert.Equal<int64[]>([| 0L .. 99L |], Array.sort perm)
        Assert.NotEqual<int64[]>([| 0L .. 99L |], perm)

        let r =
            values (Libtorch.RademacherLike(Libtorch.Zeros([| 10_000L |], DType.Float64), g))

        Assert.True(r |> Array.forall (fun v -> v = 1.0 || v = -1.0))
        Assert.InRange(Array.average r, -0.05, 0.05)

        let bern = values (Libtorch.Bernoulli(Libtorch.Full([| 10_000L |], 0.25), g))
        Assert.True(bern |> Array.forall (fun v -> v = 0.0 || v = 1.0))
        Assert.InRange(Array.average bern, 0.23, 0.27))

// ---- factories and dtypes --------------------------------------------------------------------

[<Fact>]
let ``factories: zeros, ones, full, arange, empty shapes, scalars`` () =
    inScope (fun () ->
        let z = Libtorch.Zeros([| 2L; 3L |], DType.Float64)
        Assert.Equal<int64[]>([| 2L; 3L |], z.Shape)
        Assert.Equal(DType.Float64, z.DType)
        Assert.Equal<float[]>(Array.zeroCreate 6, z.ToArray<float>())
        Assert.Equal<int64[]>(Array.create 4 1L, Libtorch.Ones([| 4L |], DType.Int64).ToArray<int64>())
        Assert.Equal<bool[]>(Array.create 3 true, Libtorch.Ones([| 3L |], DType.Bool).ToArray<bool>())
        Assert.Equal<float32[]>(Array.create 6 2.5f, Libtorch.Full([| 3L; 2L |], 2.5).ToArray<float32>())
        Assert.Equal<byte[]>(Array.create 2 7uy, Libtorch.Full([| 2L |], 7.0, DType.UInt8).ToArray<byte>())

        let ar = Libtorch.Arange(0.0, 5.0)
        Assert.Equal(DType.Int64, ar.DType)
        Assert.Equal<int64[]>([| 0L .. 4L |], ar.ToArray<int64>())
        Assert.Equal<float[]>([| 1.0; 1.5; 2.0; 2.5 |], Libtorch.Arange(1.0, 3.0, 0.5, DType.Float64).ToArray<float>())
        Assert.Equal<int64[]>([| 5L; 3L; 1L |], Libtorch.Arange(5.0, 0.0, -2.0).ToArray<int64>())

        let empty = Libtorch.Zeros([| 0L; 3L |])
        Assert.Equal<int64[]>([| 0L; 3L |], empty.Shape)
        Assert.Equal(0L, empty.NumEl)
        Assert.Empty(empty.ToArray<float32>())
        Assert.Equal(0.0, empty.Sum().Item())
        Assert.Equal<int64[]>([| 4L; 0L |], Libtorch.Empty([| 4L; 0L |]).Shape)

        let s = Libtorch.Scalar(3.5, DType.Float64)
        Assert.Equal(0, s.Dim)
        Assert.Equal(1L, s.NumEl)
        Assert.Equal(3.5, s.Item())
        Assert.Equal(7L, Libtorch.Scalar(7.0, DType.Int64).ItemLong())

        let e = Libtorch.Empty([| 2L; 5L |], DType.Int64)
        Assert.Equal<int64[]>([| 2L; 5L |], e.Shape)
        Assert.Equal(DType.Int64, e.DType)
        Assert.Equal(Device.Cpu, e.Device)
        Assert.True e.IsContiguous
        Assert.False(e.Transpose(0L, 1L).IsContiguous))

[<Fact>]
let ``copies in and out handle empty data, views and graph-attached tensors`` () =
    inScope (fun () ->
        let empty = Libtorch.FromArray<float>([||], [| 0L; 3L |])
        Assert.Equal<int64[]>([| 0L; 3L |], empty.Shape)
        Assert.Empty(empty.ToArray<float>())
        // a transposed view is copied out in its own row-major order
        let m = f64 [| 2L; 3L |] [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |]
        let t = m.Transpose(0L, 1L)
        Assert.False t.IsContiguous
        Assert.Equal<float[]>([| 1.0; 4.0; 2.0; 5.0; 3.0; 6.0 |], t.ToArray<float>())
        Assert.Equal<float[]>([| 1.0; 4.0; 2.0; 5.0; 3.0; 6.0 |], t.Contiguous().ToArray<float>())
        // a tensor in a graph copies out without detaching it first
        let x = m.Clone().RequiresGrad_()
        Assert.Equal<float[]>([| 2.0; 4.0; 6.0; 8.0; 10.0; 12.0 |], (x * 2.0).ToArray<float>())
        // FromArray copies: later changes to the array do not reach the tensor
        let data = [| 1.0; 2.0 |]
        let c = f64 [| 2L |] data
        data.[0] <- 99.0
        Assert.Equal<float[]>([| 1.0; 2.0 |], c.ToArray<float>())
        Assert.Equal(3L, m.Size 1)
        Assert.Equal(2L, m.Size -2)
        throws<ArgumentOutOfRangeException>(fun () -> m.Size 2 |> ignore) |> ignore)

[<Fact>]
let ``dropout keeps or zeroes and rescales in training, and is the identity otherwise`` () =
    inScope (fun () ->
        use g = new Generator(5UL)
        let x = Libtorch.Full([| 10_000L |], 3.0, DType.Float64)
        Assert.True(F.Dropout(x, 0.3, false, g).Equal x)
        Assert.True(F.Dropout(x, 0.0, true, g).Equal x)
        let y = values (F.Dropout(x, 0.3, true, g))
        Assert.True(y |> Array.forall (fun v -> v = 0.0 || abs (v - 3.0 / 0.7) < 1e-12))
        let kept = y |> Array.filter (fun v -> v <> 0.0) |> Array.length
        Assert.InRange(float kept / 10_000.0, 0.68, 0.72)
        let e = throws<TorchException>(fun () -> F.Dropout(x, 1.0, true, g) |> ignore)
        Assert.Contains("dropout probability must lie in [0, 1)", e.Message))

/// Bits of a float32, so that NaN and −0 compare exactly.
let private bits32 (x: float32) = BitConverter.SingleToInt32Bits x

/// float32 values including specials (±0, ±∞, NaN, denormals, extremes).
let private genFloat32 =
    Gen.frequency
        [
            8, genFloat -1e6 1e6 |> Gen.map float32
            2,
            Gen.elements
                [
                    0.0f
                    -0.0f
                    Single.PositiveInfinity
                    Single.NegativeInfinity
                    Single.NaN
                    Single.Epsilon
                    Single.MaxValue
                    Single.MinValue
                ]
        ]

[<Fact>]
let ``dtypes round-trip through FromArray and ToArray`` () =
    let cases =
        gen {
            let! shape = genShape 0 4 4
            let n = numel shape
            let! f32s = Gen.arrayOfLength n genFloat32

            let! f64s =
                Gen.arrayOfLength
                    n
                    (Gen.frequency
                        [
                            9, genFloat -1e12 1e12
                            1, Gen.elements [ Double.NaN; -0.0; Double.MaxValue ]
                        ])

            let! i64s = Gen.arrayOfLength n (Gen.choose64 (Int64.MinValue, Int64.MaxValue))
            let! i32s = Gen.arrayOfLength n (Gen.choose (Int32.MinValue, Int32.MaxValue))
            let! u8s = Gen.arrayOfLength n (Gen.choose (0, 255) |> Gen.map byte)
            let! bs = Gen.arrayOfLength n (Gen.elements [ true; false ])
            return shape, f32s, f64s, i64s, i32s, u8s, bs
        }

    check 100 cases (fun (shape, f32s, f64s, i64s, i32s, u8s, bs) ->
        inScope (fun () ->
            let roundTrip (data: 'T[]) (dtype: DType) =
                let t = Libtorch.FromArray<'T>(data, shape)
                Assert.Equal(dtype, t.DType)
                Assert.Equal<int64[]>(shape, t.Shape)
                t.ToArray<'T>()

            Assert.Equal<int[]>(Array.map bits32 f32s, roundTrip f32s DType.Float32 |> Array.map bits32)

            Assert.Equal<int64[]>(
                Array.map BitConverter.DoubleToInt64Bits f64s,
                roundTrip f64s DType.Float64 |> Array.map BitConverter.DoubleToInt64Bits
            )

            Assert.Equal<int64[]>(i64s, roundTrip i64s DType.Int64)
            Assert.Equal<int[]>(i32s, roundTrip i32s DType.Int32)
            Assert.Equal<byte[]>(u8s, roundTrip u8s DType.UInt8)
            Assert.Equal<bool[]>(bs, roundTrip bs DType.Bool)
            // conversions between dtypes
            Assert.Equal<float[]>(
                Array.map float u8s,
                (Libtorch.FromArray<byte>(u8s, shape)).To(DType.Float64).ToArray<float>()
            )

            Assert.Equal<byte[]>(
                Array.map (fun b -> if b then 1uy else 0uy) bs,
                (bools shape bs).To(DType.UInt8).ToArray<byte>()
            )))

[<Fact>]
let ``the F# surface builds and reads tensors`` () =
    inScope (fun () ->
        let t = Pai.Tensors.ofFloats [ 2L; 2L ] [| 1.0; -2.0; 3.0; -4.0 |]
        Assert.Equal<int64[]>([| 2L; 2L |], Pai.Tensors.shape t)
        Assert.Equal(4L, Pai.Tensors.numel t)
        Assert.Equal<float[]>([| 1.0; 2.0; 3.0; 4.0 |], t |> Pai.Tensors.abs |> Pai.Tensors.toFloats)
        Assert.Equal(-2.0, t |> Pai.Tensors.sum |> Pai.Tensors.item)
        let h = Pai.Tensors.ofFloat32s [ 3L ] [| 0.5f; 1.5f; -1.0f |]
        Assert.Equal<float[]>([| 0.5; 1.5; -1.0 |], Pai.Tensors.toFloats h)
        Assert.Equal<float[]>([| 0.0; 0.0; 0.0 |], h |> Pai.Tensors.zerosLike |> Pai.Tensors.toFloats)
        let p = Pai.Tensors.param t
        Assert.True p.RequiresGrad
        Assert.False t.RequiresGrad)

// ---- sorting ---------------------------------------------------------------------------------

/// Vectors with many ties (small integers as floats).
let private genTied =
    gen {
        let! n = Gen.choose (1, 12)
        let! v = Gen.arrayOfLength n (Gen.choose (0, 3))
        return Array.map float v
    }

[<Fact>]
let ``stable sort and argsort keep tied elements in position order`` () =
    check 100 genTied (fun v ->
        inScope (fun () ->
            let t = f64 [| int64 v.Length |] v

            let ascending =
                [ 0 .. v.Length - 1 ]
                |> List.sortBy (fun i -> v.[i])
                |> List.map int64
                |> List.toArray

            let descending =
                [ 0 .. v.Length - 1 ]
                |> List.sortBy (fun i -> -v.[i])
                |> List.map int64
                |> List.toArray

            let struct (values, indices) = t.Sort()
            Assert.Equal<float[]>(Array.sort v, values.ToArray<float>())
            Assert.Equal<int64[]>(ascending, indices.ToArray<int64>())
            Assert.Equal<int64[]>(ascending, t.ArgSort().ToArray<int64>())
            let struct (dv, di) = t.Sort(descending = true)
            Assert.Equal<float[]>(Array.sortDescending v, dv.ToArray<float>())
            Assert.Equal<int64[]>(descending, di.ToArray<int64>())
            Assert.Equal<int64[]>(descending, t.ArgSort(descending = true).ToArray<int64>())))

[<Fact>]
let ``topk and kthvalue agree with sorting`` () =
    let cases =
        gen {
            let! v = genTied
            let! k = Gen.choose (1, v.Length)
            return v, k
        }

    check 100 cases (fun (v, k) ->
        inScope (fun () ->
            let t = f64 [| int64 v.Length |] v
            let struct (top, topIdx) = t.TopK(int64 k)
            Assert.Equal<float[]>(Array.sortDescending v |> Array.take k, top.ToArray<float>())
            // the indices point at the values reported
            Assert.Equal<float[]>(top.ToArray<float>(), topIdx.ToArray<int64>() |> Array.map (fun i -> v.[int i]))
            let struct (bottom, _) = t.TopK(int64 k, largest = false)
            Assert.Equal<float[]>(Array.sort v |> Array.take k, bottom.ToArray<float>())
            let struct (kth, kthIdx) = t.KthValue(int64 k)
            Assert.Equal((Array.sort v).[k - 1], kth.Item())
            Assert.Equal(v.[int (kthIdx.ItemLong())], kth.Item())))

[<Fact>]
let ``sorting along a dim of a matrix sorts each row`` () =
    inScope (fun () ->
        let t = f64 [| 2L; 3L |] [| 3.0; 1.0; 2.0; 0.0; 5.0; -1.0 |]
        let struct (v, i) = t.Sort(1L)
        Assert.Equal<float[]>([| 1.0; 2.0; 3.0; -1.0; 0.0; 5.0 |], v.ToArray<float>())
        Assert.Equal<int64[]>([| 1L; 2L; 0L; 2L; 0L; 1L |], i.ToArray<int64>())
        let struct (cv, _) = t.Sort(0L, descending = true)
        Assert.Equal<float[]>([| 3.0; 5.0; 2.0; 0.0; 1.0; -1.0 |], cv.ToArray<float>())
        let struct (mx, imx) = t.Max(1L)
        Assert.Equal<float[]>([| 3.0; 5.0 |], mx.ToArray<float>())
        Assert.Equal<int64[]>([| 0L; 1L |], imx.ToArray<int64>())
        Assert.Equal<int64[]>([| 0L; 1L |], t.ArgMax(1L).ToArray<int64>())
        Assert.Equal(4L, t.ArgMax().ItemLong())
        Assert.Equal(5L, t.CountNonZero()))

// ---- comparisons, where, indexing ------------------------------------------------------------

[<Fact>]
let ``comparisons match F#'s operators, with tensors and scalars`` () =
    let cases =
        gen {
            let! a = genTied
            let! b = Gen.arrayOfLength a.Length (Gen.choose (0, 3) |> Gen.map float)
            let! s = Gen.choose (0, 3)
            return a, b, float s
        }

    check 100 cases (fun (a, b, s) ->
        inScope (fun () ->
            let n = [| int64 a.Length |]
            let ta, tb = f64 n a, f64 n b

            let expect (op: float -> float -> bool) (t: Tensor) (other: float[]) =
                Assert.Equal(DType.Bool, t.DType)
                Assert.Equal<bool[]>(Array.map2 op a other, t.ToArray<bool>())

            let all = Array.create a.Length s
            expect (=) (ta.Eq tb) b
            expect (<>) (ta.Ne tb) b
            expect (<) (ta.Lt tb) b
            expect (<=) (ta.Le tb) b
            expect (>) (ta.Gt tb) b
            expect (>=) (ta.Ge tb) b
            expect (=) (ta.Eq s) all
            expect (<>) (ta.Ne s) all
            expect (<) (ta.Lt s) all
            expect (<=) (ta.Le s) all
            expect (>) (ta.Gt s) all
            expect (>=) (ta.Ge s) all
            Assert.Equal((a = b), ta.Equal tb)

            Assert.Equal<bool[]>(
                Array.map2 (fun x y -> x > 1.0 && y > 1.0) a b,
                (ta.Gt 1.0).LogicalAnd(tb.Gt 1.0).ToArray<bool>()
            )

            Assert.Equal<bool[]>(
                Array.map2 (fun x y -> x > 1.0 || y > 1.0) a b,
                (ta.Gt 1.0).LogicalOr(tb.Gt 1.0).ToArray<bool>()
            )

            Assert.Equal<bool[]>(Array.map (fun x -> not (x > 1.0)) a, (ta.Gt 1.0).LogicalNot().ToArray<bool>())))

[<Fact>]
let ``where and masked_select pick the right elements`` () =
    let cases =
        gen {
            let! shape = genShape 1 3 4
            let n = numel shape
            let! mask = Gen.arrayOfLength n (Gen.elements [ true; false ])
            let! a = genFloats n -5.0 5.0
            let! b = genFloats n -5.0 5.0
            return shape, mask, a, b
        }

    check 100 cases (fun (shape, mask, a, b) ->
        inScope (fun () ->
            let m = bools shape mask
            let ta, tb = f64 shape a, f64 shape b

            Assert.Equal<float[]>(
                Array.map3 (fun c x y -> if c then x else y) mask a b,
                Tensor.Where(m, ta, tb).ToArray<float>()
            )

            Assert.Equal<float[]>(
                Array.zip mask a |> Array.filter fst |> Array.map snd,
                ta.MaskedSelect(m).ToArray<float>()
            )
            // where with a broadcast scalar branch
            let zero = Libtorch.Scalar(0.0, DType.Float64)

            Assert.Equal<float[]>(
                Array.map2 (fun c x -> if c then x else 0.0) mask a,
                Tensor.Where(m, ta, zero).ToArray<float>()
            )))

[<Fact>]
let ``gather and scatter follow their index definitions`` () =
    let cases =
        gen {
            let! rows = Gen.choose (1, 4)
            let! cols = Gen.choose (1, 5)
            let! x = genFloats (rows * cols) -5.0 5.0
            let! k = Gen.choose (1, cols)
            // gather may repeat indices; scatter gets distinct ones per row (its order is otherwise unspecified)
            let! gatherIdx = Gen.arrayOfLength (rows * k) (Gen.choose (0, cols - 1))
            let! perms = Gen.listOfLength rows (Gen.shuffle [| 0 .. cols - 1 |])
            let! src = genFloats (rows * k) -5.0 5.0
            return rows, cols, k, x, gatherIdx, perms |> List.map (Array.take k) |> Array.concat, src
        }

    check 100 cases (fun (rows, cols, k, x, gatherIdx, scatterIdx, src) ->
        inScope (fun () ->
            let t = f64 [| int64 rows; int64 cols |] x
            let gi = i64 [| int64 rows; int64 k |] (Array.map int64 gatherIdx)
            let gathered = Array.init (rows * k) (fun p -> x.[(p / k) * cols + gatherIdx.[p]])
            Assert.Equal<float[]>(gathered, t.Gather(1L, gi).ToArray<float>())

            let si = i64 [| int64 rows; int64 k |] (Array.map int64 scatterIdx)
            let scattered = Array.copy x

            for p in 0 .. rows * k - 1 do
                scattered.[(p / k) * cols + scatterIdx.[p]] <- src.[p]

            Assert.Equal<float[]>(scattered, t.Scatter(1L, si, f64 [| int64 rows; int64 k |] src).ToArray<float>())
            // out of place: the source tensor is unchanged
            Assert.Equal<float[]>(x, t.ToArray<float>())

            let rowsPicked = Array.init k (fun j -> gatherIdx.[j] % rows |> int64)

            let selected =
                rowsPicked |> Array.collect (fun r -> Array.sub x (int r * cols) cols)

            Assert.Equal<float[]>(selected, t.IndexSelect(0L, i64 [| int64 k |] rowsPicked).ToArray<float>())))

// ---- in-place updates ------------------------------------------------------------------------

[<Fact>]
let ``in-place ops update the tensor itself and return it`` () =
    inScope (fun () ->
        let a () = f64 [| 4L |] [| 1.0; 4.0; 9.0; 16.0 |]
        let b = f64 [| 4L |] [| 2.0; 2.0; -1.0; 0.5 |]
        let c = f64 [| 4L |] [| 1.0; 3.0; 2.0; 4.0 |]

        let same (expected: float[]) (update: Tensor -> Tensor) =
            let t = a ()
            let r = update t
            Assert.Same(t, r)
            Assert.Equal<float[]>(expected, t.ToArray<float>())

        same [| 5.0; 8.0; 7.0; 17.0 |] (fun t -> t.Add_(b, 2.0))
        same [| 3.0; 6.0; 11.0; 18.0 |] (fun t -> t.Add_ 2.0)
        same [| 2.0; 8.0; -9.0; 8.0 |] (fun t -> t.Mul_ b)
        same [| -1.0; -4.0; -9.0; -16.0 |] (fun t -> t.Mul_(-1.0))
        same [| 0.5; 2.0; -9.0; 32.0 |] (fun t -> t.Div_ b)
        same [| 2.0; 7.0; 8.0; 17.0 |] (fun t -> t.AddCMul_(b, c, 0.5)) // a + 0.5·b·c
        same [| 3.0; 4.0 + 2.0 / 3.0; 8.5; 16.125 |] (fun t -> t.AddCDiv_(b, c, 1.0)) // a + b / c
        same [| 0.0; 0.0; 0.0; 0.0 |] (fun t -> t.Zero_())
        same [| 7.0; 7.0; 7.0; 7.0 |] (fun t -> t.Fill_ 7.0)
        same [| 2.0; 2.0; -1.0; 0.5 |] (fun t -> t.Copy_ b)
        same [| 1.0; 2.0; 3.0; 4.0 |] (fun t -> t.Sqrt_())
        same [| 1.0; 4.0; 9.0; 16.0 |] (fun t -> t.Mul_(-1.0).Abs_())
        same [| 5.0; 5.0; 9.0; 16.0 |] (fun t -> t.ClampMin_ 5.0)
        same [| 1.0; 0.0; 9.0; 0.0 |] (fun t -> t.MaskedFill_(bools [| 4L |] [| false; true; false; true |], 0.0))

        // copy_ broadcasts and converts the dtype
        let m = Libtorch.Zeros([| 2L; 3L |], DType.Float64)
        m.Copy_(Libtorch.FromArray<float32>([| 1.0f; 2.0f; 3.0f |])) |> ignore
        Assert.Equal<float[]>([| 1.0; 2.0; 3.0; 1.0; 2.0; 3.0 |], m.ToArray<float>())
        // an in-place update through a view changes the base
        m.Narrow(1L, 1L, 1L).Fill_(-1.0) |> ignore
        Assert.Equal<float[]>([| 1.0; -1.0; 3.0; 1.0; -1.0; 3.0 |], m.ToArray<float>()))

[<Fact>]
let ``in-place updates of a leaf that requires grad need no-grad mode`` () =
    inScope (fun () ->
        let w = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
        let e = throws<TorchException>(fun () -> w.Add_(1.0) |> ignore)
        Assert.Contains("a leaf Variable that requires grad is being used in an in-place operation", e.Message)

        do
            use _noGrad = Libtorch.NoGrad()
            w.Add_(1.0) |> ignore

        Assert.Equal<float[]>([| 2.0; 3.0 |], w.ToArray<float>())
        Assert.True w.RequiresGrad)

// ---- grad mode -------------------------------------------------------------------------------

[<Fact>]
let ``NoGrad records no graph inside and restores the previous mode`` () =
    inScope (fun () ->
        let x = (f64 [| 3L |] [| 1.0; 2.0; 3.0 |]).RequiresGrad_()
        Assert.True Libtorch.IsGradEnabled
        Assert.True((x * 2.0).RequiresGrad)

        do
            use _guard = Libtorch.NoGrad()
            Assert.False Libtorch.IsGradEnabled
            let y = x * 2.0
            Assert.False y.RequiresGrad
            // nothing to differentiate: y has no graph back to x
            throws<TorchException>(fun () -> y.Sum().Backward()) |> ignore

            do
                use _inner = Libtorch.EnableGrad()
                Assert.True Libtorch.IsGradEnabled
                Assert.True((x * 2.0).RequiresGrad)

            Assert.False Libtorch.IsGradEnabled

            do
                use _nested = Libtorch.NoGrad()
                Assert.False Libtorch.IsGradEnabled

            Assert.False Libtorch.IsGradEnabled

        Assert.True Libtorch.IsGradEnabled

        // disposing a guard twice does not flip the mode again
        let guard = Libtorch.NoGrad()
        guard.Dispose()
        use _outer = Libtorch.NoGrad()
        guard.Dispose()
        Assert.False Libtorch.IsGradEnabled)

    Assert.True Libtorch.IsGradEnabled

[<Fact>]
let ``Pai.Tensors.noGrad runs its function without recording`` () =
    inScope (fun () ->
        let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
        let y = Pai.Tensors.noGrad (fun () -> x * x)
        Assert.False y.RequiresGrad
        Assert.Equal<float[]>([| 1.0; 4.0 |], y.ToArray<float>())
        Assert.True Libtorch.IsGradEnabled
        // an exception inside still restores the mode
        throws<TorchException>(fun () -> Pai.Tensors.noGrad (fun () -> x.MatMul(Libtorch.Ones([| 3L |]))) |> ignore)
        |> ignore

        Assert.True Libtorch.IsGradEnabled)

[<Fact>]
let ``detach cuts the graph and grads accumulate until cleared`` () =
    inScope (fun () ->
        let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
        Assert.False(x.Detach().RequiresGrad)
        Assert.Null x.Grad
        (x * x).Sum().Backward()
        (x * 3.0).Sum().Backward()
        Assert.Equal<float[]>([| 5.0; 7.0 |], values (nonNull x.Grad))
        x.ClearGrad()
        Assert.Null x.Grad)

// ---- devices ---------------------------------------------------------------------------------

[<Fact>]
let ``devices parse and print`` () =
    Assert.Equal(Device.Cpu, Device.Parse " CPU ")
    Assert.Equal(Device.Cuda 0, Device.Parse "cuda")
    Assert.Equal(Device.Cuda 2, Device.Parse "cuda:2")
    Assert.Equal("cuda:1", (Device.Cuda 1).ToString())
    throws<ArgumentException>(fun () -> Device.Parse "tpu" |> ignore) |> ignore
    inScope (fun () -> Assert.Equal(Device.Cpu, Libtorch.Ones([| 1L |], device = Device.Cpu).Device))
