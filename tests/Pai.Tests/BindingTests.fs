/// The binding's runtime and non-differentiable surface: threads, version, seeded generators,
/// factories, dtypes, sorting, comparisons, indexing, in-place updates and grad mode.
module Pai.Tests.BindingTests

open Expecto

open System
open System.Runtime.InteropServices
open FsCheck.FSharp
open Pai.Torch
open Pai.Tests.Support


// ---- runtime ---------------------------------------------------------------------------------

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

// ---- factories and dtypes --------------------------------------------------------------------

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

// ---- sorting ---------------------------------------------------------------------------------

/// Vectors with many ties (small integers as floats).
let private genTied =
    gen {
        let! n = Gen.choose (1, 12)
        let! v = Gen.arrayOfLength n (Gen.choose (0, 3))
        return Array.map float v
    }

// ---- comparisons, where, indexing ------------------------------------------------------------

// ---- in-place updates ------------------------------------------------------------------------

// ---- grad mode -------------------------------------------------------------------------------

// ---- devices ---------------------------------------------------------------------------------

// OpenBLAS's own thread count, read from the library libtorch loaded (Debian's libblas.so.3).
[<DllImport("libopenblas.so.0", EntryPoint = "openblas_get_num_threads")>]
extern int private openBlasThreads()

[<Tests>]
let tests =
    testSequenced
    <| testList
        "BindingTests"
        [
            testCase "threads: the configured count is what libtorch reports"
            <| fun () ->
                let before = Libtorch.NumThreads

                try
                    Libtorch.SetNumThreads 1
                    Expect.equal Libtorch.NumThreads 1 "Libtorch.NumThreads"
                    Libtorch.SetNumThreads 2
                    Expect.equal Libtorch.NumThreads 2 "Libtorch.NumThreads"
                finally
                    Libtorch.SetNumThreads before
            testCase "threads: the count also sizes OpenBLAS's pool, which runs libtorch's matrix products"
            <| fun () ->
                let before = Libtorch.NumThreads

                try
                    // Without this, OpenBLAS keeps one thread per core whatever --threads says.
                    Libtorch.SetNumThreads 1
                    Expect.equal (openBlasThreads ()) 1 "OpenBLAS threads after SetNumThreads 1"
                    Libtorch.SetNumThreads 2
                    Expect.equal (openBlasThreads ()) 2 "OpenBLAS threads after SetNumThreads 2"
                finally
                    Libtorch.SetNumThreads before
            testCase "threads: a count below one is rejected before libtorch sees it"
            <| fun () ->
                let before = Libtorch.NumThreads

                throws<ArgumentOutOfRangeException>(fun () -> Libtorch.SetNumThreads 0)
                |> ignore

                Expect.equal Libtorch.NumThreads before "Libtorch.NumThreads"
            testCase "the libtorch version is Debian's 1.13"
            <| fun () ->
                Expect.stringStarts Libtorch.Version "1.13" "Libtorch.Version"

                Expect.stringEnds
                    (Libtorch.NativeLibraryPath.Split(' ').[0])
                    "libpai_torch.so"
                    "Libtorch.NativeLibraryPath.Split(' ').[0]"
            testCase "a BLAS library is mapped once libtorch is loaded"
            <| fun () ->
                inScope (fun () -> Libtorch.Ones([| 8L; 8L |]).MatMul(Libtorch.Ones([| 8L; 8L |])) |> ignore)
                Expect.isFalse (Libtorch.ActiveBlas.Contains("no BLAS library mapped")) "Libtorch.ActiveBlas"
            testCase "seeded generators: the same seed gives bit-identical draws, other seeds differ"
            <| fun () ->
                let a = draws 42UL
                let b = draws 42UL
                let c = draws 43UL

                List.iteri2
                    (fun k (x: float[]) (y: float[]) ->
                        Expect.isTrue
                            (Array.map BitConverter.DoubleToInt64Bits x = Array.map BitConverter.DoubleToInt64Bits y)
                            (sprintf "draw %d differs for the same seed" k))
                    a
                    b

                List.iteri2
                    (fun k (x: float[]) (y: float[]) ->
                        Expect.isTrue (x <> y) (sprintf "draw %d is the same for seeds 42 and 43" k))
                    a
                    c
            testCase "seeded generators: draws advance the state and the seed is remembered"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(9UL)
                    Expect.equal g.Seed 9UL "g.Seed"
                    let first = values (Libtorch.Randn([| 10L |], g))
                    let second = values (Libtorch.Randn([| 10L |], g))
                    Expect.notEqual second first "second")
            testCase "the global seed makes unseeded draws repeatable"
            <| fun () ->
                inScope (fun () ->
                    Libtorch.ManualSeed 77UL
                    let a = values (Libtorch.Randn([| 16L |]))
                    Libtorch.ManualSeed 77UL
                    let b = values (Libtorch.Randn([| 16L |]))
                    Expect.equal b a "b")
            testCase "random values have the right ranges and statistics"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(1UL)
                    let n = 200_000
                    let z = values (Libtorch.Randn([| int64 n |], g, DType.Float64))
                    let mean = Array.average z
                    let sd = sqrt (z |> Array.averageBy (fun v -> (v - mean) ** 2.0))
                    // standard errors: 1/√n ≈ 0.0022 for the mean, ≈ 0.0016 for the sd
                    inRange mean -0.012 0.012 "mean"
                    inRange sd 0.99 1.01 "sd"

                    inRange
                        (z
                         |> Array.filter (fun v -> abs v < 1.0)
                         |> Array.length
                         |> float
                         |> (fun c -> c / float n))
                        0.677
                        0.689
                        "z |> Array.filter (fun v -> abs v < 1.0) |> Array.length |> float |..."

                    let u = values (Libtorch.Rand([| int64 n |], g))

                    Expect.isTrue
                        (u |> Array.forall (fun v -> v >= 0.0 && v < 1.0))
                        "u |> Array.forall (fun v -> v >= 0.0 && v < 1.0)"

                    inRange (Array.average u) 0.497 0.503 "Array.average u"

                    let ints = Libtorch.RandInt(-3L, 4L, [| 10_000L |], g).ToArray<int64>()

                    Expect.equal
                        (Array.distinct ints |> Array.sort)
                        ([| -3L .. 3L |])
                        "Array.distinct ints |> Array.sort"

                    let perm = Libtorch.RandPerm(100L, g).ToArray<int64>()
                    Expect.equal (Array.sort perm) ([| 0L .. 99L |]) "Array.sort perm"
                    Expect.notEqual perm ([| 0L .. 99L |]) "perm"

                    let r =
                        values (Libtorch.RademacherLike(Libtorch.Zeros([| 10_000L |], DType.Float64), g))

                    Expect.isTrue
                        (r |> Array.forall (fun v -> v = 1.0 || v = -1.0))
                        "r |> Array.forall (fun v -> v = 1.0 || v = -1.0)"

                    inRange (Array.average r) -0.05 0.05 "Array.average r"

                    let bern = values (Libtorch.Bernoulli(Libtorch.Full([| 10_000L |], 0.25), g))

                    Expect.isTrue
                        (bern |> Array.forall (fun v -> v = 0.0 || v = 1.0))
                        "bern |> Array.forall (fun v -> v = 0.0 || v = 1.0)"

                    inRange (Array.average bern) 0.23 0.27 "Array.average bern")
            testCase "factories: zeros, ones, full, arange, empty shapes, scalars"
            <| fun () ->
                inScope (fun () ->
                    let z = Libtorch.Zeros([| 2L; 3L |], DType.Float64)
                    Expect.equal z.Shape ([| 2L; 3L |]) "z.Shape"
                    Expect.equal z.DType DType.Float64 "z.DType"
                    Expect.equal (z.ToArray<float>()) (Array.zeroCreate 6) "z.ToArray<float>()"

                    Expect.equal
                        (Libtorch.Ones([| 4L |], DType.Int64).ToArray<int64>())
                        (Array.create 4 1L)
                        "Libtorch.Ones([| 4L |], DType.Int64).ToArray<int64>()"

                    Expect.equal
                        (Libtorch.Ones([| 3L |], DType.Bool).ToArray<bool>())
                        (Array.create 3 true)
                        "Libtorch.Ones([| 3L |], DType.Bool).ToArray<bool>()"

                    Expect.equal
                        (Libtorch.Full([| 3L; 2L |], 2.5).ToArray<float32>())
                        (Array.create 6 2.5f)
                        "Libtorch.Full([| 3L; 2L |], 2.5).ToArray<float32>()"

                    Expect.equal
                        (Libtorch.Full([| 2L |], 7.0, DType.UInt8).ToArray<byte>())
                        (Array.create 2 7uy)
                        "Libtorch.Full([| 2L |], 7.0, DType.UInt8).ToArray<byte>()"

                    let ar = Libtorch.Arange(0.0, 5.0)
                    Expect.equal ar.DType DType.Int64 "ar.DType"
                    Expect.equal (ar.ToArray<int64>()) ([| 0L .. 4L |]) "ar.ToArray<int64>()"

                    Expect.equal
                        (Libtorch.Arange(1.0, 3.0, 0.5, DType.Float64).ToArray<float>())
                        ([| 1.0; 1.5; 2.0; 2.5 |])
                        "Libtorch.Arange(1.0, 3.0, 0.5, DType.Float64).ToArray<float>()"

                    Expect.equal
                        (Libtorch.Arange(5.0, 0.0, -2.0).ToArray<int64>())
                        ([| 5L; 3L; 1L |])
                        "Libtorch.Arange(5.0, 0.0, -2.0).ToArray<int64>()"

                    let empty = Libtorch.Zeros([| 0L; 3L |])
                    Expect.equal empty.Shape ([| 0L; 3L |]) "empty.Shape"
                    Expect.equal empty.NumEl 0L "empty.NumEl"
                    Expect.isEmpty (empty.ToArray<float32>()) "empty.ToArray<float32>()"
                    Expect.equal (empty.Sum().Item()) 0.0 "empty.Sum().Item()"

                    Expect.equal
                        (Libtorch.Empty([| 4L; 0L |]).Shape)
                        ([| 4L; 0L |])
                        "Libtorch.Empty([| 4L; 0L |]).Shape"

                    let s = Libtorch.Scalar(3.5, DType.Float64)
                    Expect.equal s.Dim 0 "s.Dim"
                    Expect.equal s.NumEl 1L "s.NumEl"
                    Expect.equal (s.Item()) 3.5 "s.Item()"

                    Expect.equal
                        (Libtorch.Scalar(7.0, DType.Int64).ItemLong())
                        7L
                        "Libtorch.Scalar(7.0, DType.Int64).ItemLong()"

                    let e = Libtorch.Empty([| 2L; 5L |], DType.Int64)
                    Expect.equal e.Shape ([| 2L; 5L |]) "e.Shape"
                    Expect.equal e.DType DType.Int64 "e.DType"
                    Expect.equal e.Device Device.Cpu "e.Device"
                    Expect.isTrue e.IsContiguous "e.IsContiguous"
                    Expect.isFalse (e.Transpose(0L, 1L).IsContiguous) "e.Transpose(0L, 1L).IsContiguous")
            testCase "copies in and out handle empty data, views and graph-attached tensors"
            <| fun () ->
                inScope (fun () ->
                    let empty = Libtorch.FromArray<float>([||], [| 0L; 3L |])
                    Expect.equal empty.Shape ([| 0L; 3L |]) "empty.Shape"
                    Expect.isEmpty (empty.ToArray<float>()) "empty.ToArray<float>()"
                    // a transposed view is copied out in its own row-major order
                    let m = f64 [| 2L; 3L |] [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |]
                    let t = m.Transpose(0L, 1L)
                    Expect.isFalse t.IsContiguous "t.IsContiguous"
                    Expect.equal (t.ToArray<float>()) ([| 1.0; 4.0; 2.0; 5.0; 3.0; 6.0 |]) "t.ToArray<float>()"

                    Expect.equal
                        (t.Contiguous().ToArray<float>())
                        ([| 1.0; 4.0; 2.0; 5.0; 3.0; 6.0 |])
                        "t.Contiguous().ToArray<float>()"
                    // a tensor in a graph copies out without detaching it first
                    let x = m.Clone().RequiresGrad_()

                    Expect.equal
                        ((x * 2.0).ToArray<float>())
                        ([| 2.0; 4.0; 6.0; 8.0; 10.0; 12.0 |])
                        "(x * 2.0).ToArray<float>()"
                    // FromArray copies: later changes to the array do not reach the tensor
                    let data = [| 1.0; 2.0 |]
                    let c = f64 [| 2L |] data
                    data.[0] <- 99.0
                    Expect.equal (c.ToArray<float>()) ([| 1.0; 2.0 |]) "c.ToArray<float>()"
                    Expect.equal (m.Size 1) 3L "m.Size 1"
                    Expect.equal (m.Size -2) 2L "m.Size -2"
                    throws<ArgumentOutOfRangeException>(fun () -> m.Size 2 |> ignore) |> ignore)
            testCase "dropout keeps or zeroes and rescales in training, and is the identity otherwise"
            <| fun () ->
                inScope (fun () ->
                    use g = new Generator(5UL)
                    let x = Libtorch.Full([| 10_000L |], 3.0, DType.Float64)
                    Expect.isTrue (F.Dropout(x, 0.3, false, g).Equal x) "F.Dropout(x, 0.3, false, g).Equal x"
                    Expect.isTrue (F.Dropout(x, 0.0, true, g).Equal x) "F.Dropout(x, 0.0, true, g).Equal x"
                    let y = values (F.Dropout(x, 0.3, true, g))

                    Expect.isTrue
                        (y |> Array.forall (fun v -> v = 0.0 || abs (v - 3.0 / 0.7) < 1e-12))
                        "y |> Array.forall (fun v -> v = 0.0 || abs (v - 3.0 / 0.7) < 1e-12)"

                    let kept = y |> Array.filter (fun v -> v <> 0.0) |> Array.length
                    inRange (float kept / 10_000.0) 0.68 0.72 "float kept / 10_000.0"
                    let e = throws<TorchException>(fun () -> F.Dropout(x, 1.0, true, g) |> ignore)
                    Expect.stringContains e.Message "dropout probability must lie in [0, 1)" "e.Message")
            (let cases =
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

             property
                 "dtypes round-trip through FromArray and ToArray"
                 100
                 cases
                 (fun (shape, f32s, f64s, i64s, i32s, u8s, bs) ->
                     inScope (fun () ->
                         let roundTrip (data: 'T[]) (dtype: DType) =
                             let t = Libtorch.FromArray<'T>(data, shape)
                             Expect.equal t.DType dtype "t.DType"
                             Expect.equal t.Shape shape "t.Shape"
                             t.ToArray<'T>()

                         Expect.equal
                             (roundTrip f32s DType.Float32 |> Array.map bits32)
                             (Array.map bits32 f32s)
                             "roundTrip f32s DType.Float32 |> Array.map bits32"

                         Expect.equal
                             (roundTrip f64s DType.Float64 |> Array.map BitConverter.DoubleToInt64Bits)
                             (Array.map BitConverter.DoubleToInt64Bits f64s)
                             "roundTrip f64s DType.Float64 |> Array.map BitConverter.DoubleToInt6..."

                         Expect.equal (roundTrip i64s DType.Int64) i64s "roundTrip i64s DType.Int64"
                         Expect.equal (roundTrip i32s DType.Int32) i32s "roundTrip i32s DType.Int32"
                         Expect.equal (roundTrip u8s DType.UInt8) u8s "roundTrip u8s DType.UInt8"
                         Expect.equal (roundTrip bs DType.Bool) bs "roundTrip bs DType.Bool"
                         // conversions between dtypes
                         Expect.equal
                             ((Libtorch.FromArray<byte>(u8s, shape)).To(DType.Float64).ToArray<float>())
                             (Array.map float u8s)
                             "(Libtorch.FromArray<byte>(u8s, shape)).To(DType.Float64).ToArray<fl..."

                         Expect.equal
                             ((bools shape bs).To(DType.UInt8).ToArray<byte>())
                             (Array.map (fun b -> if b then 1uy else 0uy) bs)
                             "(bools shape bs).To(DType.UInt8).ToArray<byte>()")))
            testCase "the F# surface builds and reads tensors"
            <| fun () ->
                inScope (fun () ->
                    let t = Pai.Tensors.ofFloats [ 2L; 2L ] [| 1.0; -2.0; 3.0; -4.0 |]
                    Expect.equal (Pai.Tensors.shape t) ([| 2L; 2L |]) "Pai.Tensors.shape t"
                    Expect.equal (Pai.Tensors.numel t) 4L "Pai.Tensors.numel t"

                    Expect.equal
                        (t |> Pai.Tensors.abs |> Pai.Tensors.toFloats)
                        ([| 1.0; 2.0; 3.0; 4.0 |])
                        "t |> Pai.Tensors.abs |> Pai.Tensors.toFloats"

                    Expect.equal
                        (t |> Pai.Tensors.sum |> Pai.Tensors.item)
                        -2.0
                        "t |> Pai.Tensors.sum |> Pai.Tensors.item"

                    let h = Pai.Tensors.ofFloat32s [ 3L ] [| 0.5f; 1.5f; -1.0f |]
                    Expect.equal (Pai.Tensors.toFloats h) ([| 0.5; 1.5; -1.0 |]) "Pai.Tensors.toFloats h"

                    Expect.equal
                        (h |> Pai.Tensors.zerosLike |> Pai.Tensors.toFloats)
                        ([| 0.0; 0.0; 0.0 |])
                        "h |> Pai.Tensors.zerosLike |> Pai.Tensors.toFloats"

                    let p = Pai.Tensors.param t
                    Expect.isTrue p.RequiresGrad "p.RequiresGrad"
                    Expect.isFalse t.RequiresGrad "t.RequiresGrad")
            (property "stable sort and argsort keep tied elements in position order" 100 genTied (fun v ->
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
                    Expect.equal (values.ToArray<float>()) (Array.sort v) "values.ToArray<float>()"
                    Expect.equal (indices.ToArray<int64>()) ascending "indices.ToArray<int64>()"
                    Expect.equal (t.ArgSort().ToArray<int64>()) ascending "t.ArgSort().ToArray<int64>()"
                    let struct (dv, di) = t.Sort(descending = true)
                    Expect.equal (dv.ToArray<float>()) (Array.sortDescending v) "dv.ToArray<float>()"
                    Expect.equal (di.ToArray<int64>()) descending "di.ToArray<int64>()"

                    Expect.equal
                        (t.ArgSort(descending = true).ToArray<int64>())
                        descending
                        "t.ArgSort(descending = true).ToArray<int64>()")))
            (let cases =
                gen {
                    let! v = genTied
                    let! k = Gen.choose (1, v.Length)
                    return v, k
                }

             property "topk and kthvalue agree with sorting" 100 cases (fun (v, k) ->
                 inScope (fun () ->
                     let t = f64 [| int64 v.Length |] v
                     let struct (top, topIdx) = t.TopK(int64 k)

                     Expect.equal
                         (top.ToArray<float>())
                         (Array.sortDescending v |> Array.take k)
                         "top.ToArray<float>()"
                     // the indices point at the values reported
                     Expect.equal
                         (topIdx.ToArray<int64>() |> Array.map (fun i -> v.[int i]))
                         (top.ToArray<float>())
                         "topIdx.ToArray<int64>() |> Array.map (fun i -> v.[int i])"

                     let struct (bottom, _) = t.TopK(int64 k, largest = false)
                     Expect.equal (bottom.ToArray<float>()) (Array.sort v |> Array.take k) "bottom.ToArray<float>()"
                     let struct (kth, kthIdx) = t.KthValue(int64 k)
                     Expect.equal (kth.Item()) ((Array.sort v).[k - 1]) "kth.Item()"
                     Expect.equal (kth.Item()) (v.[int (kthIdx.ItemLong())]) "kth.Item()")))
            testCase "sorting along a dim of a matrix sorts each row"
            <| fun () ->
                inScope (fun () ->
                    let t = f64 [| 2L; 3L |] [| 3.0; 1.0; 2.0; 0.0; 5.0; -1.0 |]
                    let struct (v, i) = t.Sort(1L)
                    Expect.equal (v.ToArray<float>()) ([| 1.0; 2.0; 3.0; -1.0; 0.0; 5.0 |]) "v.ToArray<float>()"
                    Expect.equal (i.ToArray<int64>()) ([| 1L; 2L; 0L; 2L; 0L; 1L |]) "i.ToArray<int64>()"
                    let struct (cv, _) = t.Sort(0L, descending = true)
                    Expect.equal (cv.ToArray<float>()) ([| 3.0; 5.0; 2.0; 0.0; 1.0; -1.0 |]) "cv.ToArray<float>()"
                    let struct (mx, imx) = t.Max(1L)
                    Expect.equal (mx.ToArray<float>()) ([| 3.0; 5.0 |]) "mx.ToArray<float>()"
                    Expect.equal (imx.ToArray<int64>()) ([| 0L; 1L |]) "imx.ToArray<int64>()"
                    Expect.equal (t.ArgMax(1L).ToArray<int64>()) ([| 0L; 1L |]) "t.ArgMax(1L).ToArray<int64>()"
                    Expect.equal (t.ArgMax().ItemLong()) 4L "t.ArgMax().ItemLong()"
                    Expect.equal (t.CountNonZero()) 5L "t.CountNonZero()")
            (let cases =
                gen {
                    let! a = genTied
                    let! b = Gen.arrayOfLength a.Length (Gen.choose (0, 3) |> Gen.map float)
                    let! s = Gen.choose (0, 3)
                    return a, b, float s
                }

             property "comparisons match F#'s operators, with tensors and scalars" 100 cases (fun (a, b, s) ->
                 inScope (fun () ->
                     let n = [| int64 a.Length |]
                     let ta, tb = f64 n a, f64 n b

                     let expect (op: float -> float -> bool) (t: Tensor) (other: float[]) =
                         Expect.equal t.DType DType.Bool "t.DType"
                         Expect.equal (t.ToArray<bool>()) (Array.map2 op a other) "t.ToArray<bool>()"

                     let all = Array.create a.Length s
                     // Each comparison against a tensor and against a scalar.
                     for op, vsTensor, vsScalar in
                         [
                             (=), ta.Eq tb, ta.Eq s
                             (<>), ta.Ne tb, ta.Ne s
                             (<), ta.Lt tb, ta.Lt s
                             (<=), ta.Le tb, ta.Le s
                             (>), ta.Gt tb, ta.Gt s
                             (>=), ta.Ge tb, ta.Ge s
                         ] do
                         expect op vsTensor b
                         expect op vsScalar all

                     Expect.equal (ta.Equal tb) ((a = b)) "ta.Equal tb"

                     Expect.equal
                         ((ta.Gt 1.0).LogicalAnd(tb.Gt 1.0).ToArray<bool>())
                         (Array.map2 (fun x y -> x > 1.0 && y > 1.0) a b)
                         "(ta.Gt 1.0).LogicalAnd(tb.Gt 1.0).ToArray<bool>()"

                     Expect.equal
                         ((ta.Gt 1.0).LogicalOr(tb.Gt 1.0).ToArray<bool>())
                         (Array.map2 (fun x y -> x > 1.0 || y > 1.0) a b)
                         "(ta.Gt 1.0).LogicalOr(tb.Gt 1.0).ToArray<bool>()"

                     Expect.equal
                         ((ta.Gt 1.0).LogicalNot().ToArray<bool>())
                         (Array.map (fun x -> not (x > 1.0)) a)
                         "(ta.Gt 1.0).LogicalNot().ToArray<bool>()")))
            (let cases =
                gen {
                    let! shape = genShape 1 3 4
                    let n = numel shape
                    let! mask = Gen.arrayOfLength n (Gen.elements [ true; false ])
                    let! a = genFloats n -5.0 5.0
                    let! b = genFloats n -5.0 5.0
                    return shape, mask, a, b
                }

             property "where and masked_select pick the right elements" 100 cases (fun (shape, mask, a, b) ->
                 inScope (fun () ->
                     let m = bools shape mask
                     let ta, tb = f64 shape a, f64 shape b

                     Expect.equal
                         (Tensor.Where(m, ta, tb).ToArray<float>())
                         (Array.map3 (fun c x y -> if c then x else y) mask a b)
                         "Tensor.Where(m, ta, tb).ToArray<float>()"

                     Expect.equal
                         (ta.MaskedSelect(m).ToArray<float>())
                         (Array.zip mask a |> Array.filter fst |> Array.map snd)
                         "ta.MaskedSelect(m).ToArray<float>()"
                     // where with a broadcast scalar branch
                     let zero = Libtorch.Scalar(0.0, DType.Float64)

                     Expect.equal
                         (Tensor.Where(m, ta, zero).ToArray<float>())
                         (Array.map2 (fun c x -> if c then x else 0.0) mask a)
                         "Tensor.Where(m, ta, zero).ToArray<float>()")))
            (let cases =
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

             property
                 "gather and scatter follow their index definitions"
                 100
                 cases
                 (fun (rows, cols, k, x, gatherIdx, scatterIdx, src) ->
                     inScope (fun () ->
                         let t = f64 [| int64 rows; int64 cols |] x
                         let gi = i64 [| int64 rows; int64 k |] (Array.map int64 gatherIdx)
                         let gathered = Array.init (rows * k) (fun p -> x.[(p / k) * cols + gatherIdx.[p]])
                         Expect.equal (t.Gather(1L, gi).ToArray<float>()) gathered "t.Gather(1L, gi).ToArray<float>()"

                         let si = i64 [| int64 rows; int64 k |] (Array.map int64 scatterIdx)
                         let scattered = Array.copy x

                         for p in 0 .. rows * k - 1 do
                             scattered.[(p / k) * cols + scatterIdx.[p]] <- src.[p]

                         Expect.equal
                             (t.Scatter(1L, si, f64 [| int64 rows; int64 k |] src).ToArray<float>())
                             scattered
                             "t.Scatter(1L, si, f64 [| int64 rows; int64 k |] src).ToArray<float>()"
                         // out of place: the source tensor is unchanged
                         Expect.equal (t.ToArray<float>()) x "t.ToArray<float>()"

                         let rowsPicked = Array.init k (fun j -> gatherIdx.[j] % rows |> int64)

                         let selected =
                             rowsPicked |> Array.collect (fun r -> Array.sub x (int r * cols) cols)

                         Expect.equal
                             (t.IndexSelect(0L, i64 [| int64 k |] rowsPicked).ToArray<float>())
                             selected
                             "t.IndexSelect(0L, i64 [| int64 k |] rowsPicked).ToArray<float>()")))
            testCase "in-place ops update the tensor itself and return it"
            <| fun () ->
                inScope (fun () ->
                    let a () = f64 [| 4L |] [| 1.0; 4.0; 9.0; 16.0 |]
                    let b = f64 [| 4L |] [| 2.0; 2.0; -1.0; 0.5 |]
                    let c = f64 [| 4L |] [| 1.0; 3.0; 2.0; 4.0 |]

                    let same (expected: float[]) (update: Tensor -> Tensor) =
                        let t = a ()
                        let r = update t
                        Expect.isTrue (obj.ReferenceEquals(t, r)) "same object: r"
                        Expect.equal (t.ToArray<float>()) expected "t.ToArray<float>()"

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

                    same [| 1.0; 0.0; 9.0; 0.0 |] (fun t ->
                        t.MaskedFill_(bools [| 4L |] [| false; true; false; true |], 0.0))

                    // copy_ broadcasts and converts the dtype
                    let m = Libtorch.Zeros([| 2L; 3L |], DType.Float64)
                    m.Copy_(Libtorch.FromArray<float32>([| 1.0f; 2.0f; 3.0f |])) |> ignore
                    Expect.equal (m.ToArray<float>()) ([| 1.0; 2.0; 3.0; 1.0; 2.0; 3.0 |]) "m.ToArray<float>()"
                    // an in-place update through a view changes the base
                    m.Narrow(1L, 1L, 1L).Fill_(-1.0) |> ignore
                    Expect.equal (m.ToArray<float>()) ([| 1.0; -1.0; 3.0; 1.0; -1.0; 3.0 |]) "m.ToArray<float>()")
            testCase "in-place updates of a leaf that requires grad need no-grad mode"
            <| fun () ->
                inScope (fun () ->
                    let w = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                    let e = throws<TorchException>(fun () -> w.Add_(1.0) |> ignore)

                    Expect.stringContains
                        e.Message
                        "a leaf Variable that requires grad is being used in an in-place operation"
                        "e.Message"

                    do
                        use _noGrad = Libtorch.NoGrad()
                        w.Add_(1.0) |> ignore

                    Expect.equal (w.ToArray<float>()) ([| 2.0; 3.0 |]) "w.ToArray<float>()"
                    Expect.isTrue w.RequiresGrad "w.RequiresGrad")
            testCase "NoGrad records no graph inside and restores the previous mode"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 3L |] [| 1.0; 2.0; 3.0 |]).RequiresGrad_()
                    Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"
                    Expect.isTrue ((x * 2.0).RequiresGrad) "(x * 2.0).RequiresGrad"

                    do
                        use _guard = Libtorch.NoGrad()
                        Expect.isFalse Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"
                        let y = x * 2.0
                        Expect.isFalse y.RequiresGrad "y.RequiresGrad"
                        // nothing to differentiate: y has no graph back to x
                        throws<TorchException>(fun () -> y.Sum().Backward()) |> ignore

                        do
                            use _inner = Libtorch.EnableGrad()
                            Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"
                            Expect.isTrue ((x * 2.0).RequiresGrad) "(x * 2.0).RequiresGrad"

                        Expect.isFalse Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"

                        do
                            use _nested = Libtorch.NoGrad()
                            Expect.isFalse Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"

                        Expect.isFalse Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"

                    Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"

                    // disposing a guard twice does not flip the mode again
                    let guard = Libtorch.NoGrad()
                    guard.Dispose()
                    use _outer = Libtorch.NoGrad()
                    guard.Dispose()
                    Expect.isFalse Libtorch.IsGradEnabled "Libtorch.IsGradEnabled")

                Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"
            testCase "Pai.Tensors.noGrad runs its function without recording"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                    let y = Pai.Tensors.noGrad (fun () -> x * x)
                    Expect.isFalse y.RequiresGrad "y.RequiresGrad"
                    Expect.equal (y.ToArray<float>()) ([| 1.0; 4.0 |]) "y.ToArray<float>()"
                    Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled"
                    // an exception inside still restores the mode
                    throws<TorchException>(fun () ->
                        Pai.Tensors.noGrad (fun () -> x.MatMul(Libtorch.Ones([| 3L |]))) |> ignore)
                    |> ignore

                    Expect.isTrue Libtorch.IsGradEnabled "Libtorch.IsGradEnabled")
            testCase "detach cuts the graph and grads accumulate until cleared"
            <| fun () ->
                inScope (fun () ->
                    let x = (f64 [| 2L |] [| 1.0; 2.0 |]).RequiresGrad_()
                    Expect.isFalse (x.Detach().RequiresGrad) "x.Detach().RequiresGrad"
                    Expect.isNull x.Grad "x.Grad"
                    (x * x).Sum().Backward()
                    (x * 3.0).Sum().Backward()
                    Expect.equal (values (nonNull x.Grad)) ([| 5.0; 7.0 |]) "values (nonNull x.Grad)"
                    x.ClearGrad()
                    Expect.isNull x.Grad "x.Grad")
            testCase "devices parse and print"
            <| fun () ->
                Expect.equal (Device.Parse " CPU ") Device.Cpu "Device.Parse \" CPU \""
                Expect.equal (Device.Parse "cuda") (Device.Cuda 0) "Device.Parse \"cuda\""
                Expect.equal (Device.Parse "cuda:2") (Device.Cuda 2) "Device.Parse \"cuda:2\""
                Expect.equal ((Device.Cuda 1).ToString()) "cuda:1" "(Device.Cuda 1).ToString()"
                throws<ArgumentException>(fun () -> Device.Parse "tpu" |> ignore) |> ignore

                inScope (fun () ->
                    Expect.equal
                        (Libtorch.Ones([| 1L |], device = Device.Cpu).Device)
                        Device.Cpu
                        "Libtorch.Ones([| 1L |], device = Device.Cpu).Device")
        ]
