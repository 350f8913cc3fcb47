/// Helpers shared by the tests: scopes, explicit FsCheck generators for shapes and values, a
/// central-difference gradient checker and a few assertions.
///
/// The tests are Expecto values. Each file ends with one list, run by `dotnet test` through our
/// VSTest adapter (tests/Pai.Expecto.TestAdapter) under the name `Pai.Tests.<list>.<test>`:
///
///     [<Tests>]
///     let tests =
///         testSequenced            // libtorch's threads, seed and memory are process-wide
///         <| testList "MyTests" [
///             testCase "what it checks" <| fun () ->
///                 Expect.equal actual expected "what differs"                 // was Assert.Equal(expected, actual)
///                 Expect.floatClose (decimals 12) actual expected "which"     // was Assert.Equal(e, a, 12)
///                 Expect.isTrue cond "which"                                  // was Assert.True(cond)
///                 throws<ArgumentException> (fun () -> ...) |> ignore         // was Assert.Throws<_>
///             // was [<Fact>] with `check 40 cases body` as its only work:
///             property "what holds" 40 cases (fun (a, b) -> ...)
///         ]
///
/// An xunit [<Theory>] becomes a testList of testCases, one per case (see AlgebraTests.fs).
/// Other xunit assertions: Assert.InRange → inRange, Assert.Single → singleItem, Assert.Null/
/// Empty/Contains → Expect.isNull/isEmpty/stringContains (or Expect.contains for a collection).
/// A property whose cases share state built first (a model, data) keeps `check` in a testCase.
module Pai.Tests.Support

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Pai.Torch

/// libtorch's functional operations, by the short name every test file uses.
type F = Functional

/// Runs f inside a dispose scope so that every tensor it makes is freed.
let inScope (f: unit -> 'a) : 'a =
    use _scope = new DisposeScope()
    f ()

// ---- properties ------------------------------------------------------------------------------

/// Runs f with libtorch's intra-op thread count set to n, then restores the previous count.
let withThreads (n: int) (f: unit -> 'a) : 'a =
    let before = Libtorch.NumThreads
    Libtorch.SetNumThreads n

    try
        f ()
    finally
        Libtorch.SetNumThreads before

/// The seed of a failed property, to replay it: PAI_FSCHECK_REPLAY="seed,gamma,size" (or
/// "seed,gamma"), or the tuple of the failure report's "Focus on error" line pasted as printed,
/// e.g. "(1850877942752354717UL, 3284924084838830435UL, Some 3)", with a --filter naming the test.
let private replay =
    match Environment.GetEnvironmentVariable "PAI_FSCHECK_REPLAY" with
    | null
    | "" -> None
    | text ->
        let fields =
            text.Replace("(", "").Replace(")", "").Replace("UL", "").Replace("Some", "").Split(',')
            |> Array.map (fun s -> s.Trim())

        let parsed =
            match fields with
            | [| seed; gamma |] -> Some(UInt64.TryParse seed, UInt64.TryParse gamma, (true, None))
            | [| seed; gamma; "None" |] -> Some(UInt64.TryParse seed, UInt64.TryParse gamma, (true, None))
            | [| seed; gamma; size |] ->
                let ok, n = Int32.TryParse size
                Some(UInt64.TryParse seed, UInt64.TryParse gamma, (ok, Some n))
            | _ -> None

        match parsed with
        | Some((true, seed), (true, gamma), (true, size)) -> Some(seed, gamma, size)
        | _ ->
            failwith
                $"PAI_FSCHECK_REPLAY is '%s{text}': write seed,gamma,size as the failure's 'Focus on error' line prints them"

/// Expecto's FsCheck settings for maxTest cases (and the replayed seed, if one is set).
let fsCheckConfig (maxTest: int) =
    { FsCheckConfig.defaultConfig with
        maxTest = maxTest
        replay = replay
    }

/// The body of a property over an explicit generator. Properties run on one intra-op thread:
/// their tensors are tiny, and on a loaded machine OpenMP barriers between two threads cost
/// more than the work.
let private forAll (generator: Gen<'a>) (body: 'a -> unit) =
    Prop.forAll (Arb.fromGen generator) (fun x -> withThreads 1 (fun () -> body x))

/// A property test: maxTest cases drawn from the explicit generator; a failure prints the case
/// (shrunk) and the seed that replays it.
let property (name: string) (maxTest: int) (generator: Gen<'a>) (body: 'a -> unit) : Test =
    testPropertyWithConfig (fsCheckConfig maxTest) name (forAll generator body)

/// Checks a property inside a test that must first build state the cases share (a model, data);
/// a failing case throws with FsCheck's report, which includes the seed to replay.
let check (maxTest: int) (generator: Gen<'a>) (body: 'a -> unit) =
    let config =
        match replay with
        | Some(seed, gamma, size) -> Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(seed, gamma); Size = size })
        | None -> Config.QuickThrowOnFailure

    Check.One(config.WithMaxTest(maxTest), forAll generator body)

/// Uniform doubles on [lo, hi] (FsCheck's own generators stay small or hit NaN/∞; these do not).
let genFloat (lo: float) (hi: float) : Gen<float> =
    Gen.choose (0, 1_000_000) |> Gen.map (fun i -> lo + (hi - lo) * float i / 1e6)

/// n uniform doubles on [lo, hi].
let genFloats (n: int) (lo: float) (hi: float) : Gen<float[]> = Gen.arrayOfLength n (genFloat lo hi)

/// n doubles with magnitude in [lo, hi] and a random sign: away from kinks at zero.
let genAwayFromZero (n: int) (lo: float) (hi: float) : Gen<float[]> =
    Gen.zip (genFloat lo hi) (Gen.elements [ -1.0; 1.0 ])
    |> Gen.map (fun (m, s) -> m * s)
    |> Gen.arrayOfLength n

/// n distinct doubles at least 0.05 apart, in random order: max and pooling have no ties to break.
let genDistinct (n: int) : Gen<float[]> =
    gen {
        let! order = Gen.shuffle [| 0 .. n - 1 |]
        let! jitter = genFloats n 0.0 0.02
        return Array.init n (fun i -> 0.07 * float order.[i] - 0.035 * float n + jitter.[i])
    }

/// A shape of rank in [minRank, maxRank] with every size in [1, maxSize].
let genShape (minRank: int) (maxRank: int) (maxSize: int) : Gen<int64[]> =
    gen {
        let! rank = Gen.choose (minRank, maxRank)
        let! sizes = Gen.arrayOfLength rank (Gen.choose (1, maxSize))
        return sizes |> Array.map int64
    }

/// A shape that broadcasts against <paramref name="shape"/>: some sizes set to 1 and some
/// leading dimensions dropped.
let genBroadcastable (shape: int64[]) : Gen<int64[]> =
    gen {
        let! drop = Gen.choose (0, shape.Length)
        let! ones = Gen.arrayOfLength shape.Length (Gen.elements [ true; false ])
        return shape |> Array.mapi (fun i s -> if ones.[i] then 1L else s) |> Array.skip drop
    }

let numel (shape: int64[]) =
    shape |> Array.fold (fun acc s -> acc * int s) 1

// ---- tensors ---------------------------------------------------------------------------------

/// A float64 tensor with the given values and shape.
let f64 (shape: int64[]) (values: float[]) =
    Libtorch.FromArray<float>(values, shape)

/// A float32 tensor with the given values and shape.
let f32 (shape: int64[]) (values: float32[]) =
    Libtorch.FromArray<float32>(values, shape)

/// An int64 tensor with the given values and shape.
let i64 (shape: int64[]) (values: int64[]) =
    Libtorch.FromArray<int64>(values, shape)

/// A bool tensor with the given values and shape.
let bools (shape: int64[]) (values: bool[]) = Libtorch.FromArray<bool>(values, shape)

/// The elements as float64 (any floating dtype).
let values (t: Tensor) : float[] =
    use d = t.To DType.Float64
    d.ToArray<float>()

/// Asserts two arrays agree elementwise within atol + rtol·max(|a|, |b|) (Expecto's accuracy).
let assertClose (what: string) (rtol: float) (atol: float) (expected: float[]) (actual: float[]) =
    Expect.equal actual.Length expected.Length $"%s{what}: number of values"
    let accuracy = { absolute = atol; relative = rtol }

    for i in 0 .. expected.Length - 1 do
        Expect.floatClose accuracy actual.[i] expected.[i] $"%s{what}: element %d{i}"

// ---- finite differences ----------------------------------------------------------------------

/// Step of the central differences (float64).
let fdStep = 1e-6

/// Compares a gradient of f at the inputs, computed by <paramref name="gradOf"/> (the scalar, the
/// leaves), with central finite differences (f(x+h) − f(x−h)) / 2h, elementwise, for every input.
/// Inputs are float64 (values, shape). A non-scalar output is contracted with fixed N(0, 1)
/// weights so that every output element contributes to the checked scalar.
let gradCheckUsing
    (gradOf: Tensor -> Tensor list -> Tensor list)
    (rtol: float)
    (atol: float)
    (f: Tensor list -> Tensor)
    (inputs: (float[] * int64[]) list)
    =
    inScope (fun () ->
        let leaves = inputs |> List.map (fun (v, s) -> (f64 s v).RequiresGrad_())
        let out = f leaves

        let weights =
            if out.NumEl = 1L then
                None
            else
                use g = new Generator(12345UL)
                Some(Libtorch.Randn(out.Shape, g, DType.Float64))

        let scalarize (o: Tensor) =
            match weights with
            | None -> o.Sum()
            | Some w -> (o * w).Sum()

        let analytic =
            gradOf (scalarize out) leaves |> List.map (fun g -> g.ToArray<float>())

        if analytic.Length <> inputs.Length then
            failwithf "%d gradients for %d inputs" analytic.Length inputs.Length

        let evaluate (vals: float[] list) =
            inScope (fun () ->
                use _noGrad = Libtorch.NoGrad()
                let ts = List.map2 (fun v (_, s) -> f64 s v) vals inputs
                (scalarize (f ts)).Item())

        let baseValues = inputs |> List.map fst

        inputs
        |> List.iteri (fun k (v, _) ->
            let numeric =
                Array.init v.Length (fun j ->
                    let shifted delta =
                        baseValues
                        |> List.mapi (fun m vs ->
                            if m = k then
                                let c = Array.copy vs
                                c.[j] <- c.[j] + delta
                                c
                            else
                                vs)

                    (evaluate (shifted fdStep) - evaluate (shifted -fdStep)) / (2.0 * fdStep))

            assertClose (sprintf "gradient of input %d" k) rtol atol numeric analytic.[k]))

/// Autograd.Grad (the C# API) as the gradient under test.
let autogradGrad (output: Tensor) (leaves: Tensor list) =
    Autograd.Grad(output, List.toArray leaves) |> Array.toList

/// gradCheckUsing Autograd.Grad at the given tolerances.
let gradCheckWith rtol atol f inputs =
    gradCheckUsing autogradGrad rtol atol f inputs

/// gradCheckWith at the default tolerances for float64 central differences.
let gradCheck (f: Tensor list -> Tensor) (inputs: (float[] * int64[]) list) = gradCheckWith 1e-5 1e-6 f inputs

// ---- process ---------------------------------------------------------------------------------

/// Resident set size of this process in bytes (VmRSS from /proc/self/status).
let residentBytes () : int64 =
    IO.File.ReadAllLines "/proc/self/status"
    |> Array.find (fun l -> l.StartsWith "VmRSS:")
    |> fun l -> l.Substring(6).Trim().Split(' ').[0] |> int64 |> (*) 1024L

/// Runs f on a new thread of its own and returns its result (Task.Run(...).Result may run the
/// task inline on the waiting thread, which would defeat tests of thread-local state).
let onOtherThread (f: unit -> 'a) : 'a =
    let result = ref Unchecked.defaultof<'a>
    let error: exn option ref = ref None

    let thread =
        Threading.Thread(fun () ->
            try
                result.Value <- f ()
            with e ->
                error.Value <- Some e)

    thread.Start()
    thread.Join()

    match error.Value with
    | Some e -> raise (AggregateException(e))
    | None -> result.Value

/// Asserts f throws exactly 'T (not a subtype) and returns it.
let throws<'T when 'T :> exn> (f: unit -> unit) : 'T =
    let thrown =
        try
            f ()
            None
        with e ->
            Some e

    match thrown with
    | Some(:? 'T as e) when e.GetType() = typeof<'T> -> e
    | Some e -> failtestf "expected %s, got %s: %s" typeof<'T>.FullName (e.GetType().FullName) e.Message
    | None -> failtestf "expected %s, nothing was thrown" typeof<'T>.FullName

/// The accuracy of "equal to p decimal places": |actual − expected| ≤ 0.5·10⁻ᵖ.
let decimals (p: int) : Accuracy =
    {
        absolute = 0.5 * 10.0 ** float -p
        relative = 0.0
    }

/// Asserts lo ≤ actual ≤ hi.
let inRange (actual: 'a) (lo: 'a) (hi: 'a) (what: string) =
    if not (lo <= actual && actual <= hi) then
        failtestf "%s: %A is outside [%A, %A]" what actual lo hi

/// Asserts the sequence has exactly one element and returns it.
let singleItem (items: 'a seq) : 'a =
    match List.ofSeq items with
    | [ item ] -> item
    | items -> failtestf "one element expected, %d found: %A" items.Length items
