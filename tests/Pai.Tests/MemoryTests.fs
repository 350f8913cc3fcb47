/// Native memory stays flat over thousands of steps run inside dispose scopes, and the
/// SafeHandle finalizer frees what no scope owns once the GC collects it (docs/architecture.md §3).
module Pai.Tests.MemoryTests

open Expecto

open System
open System.Runtime.CompilerServices
open Pai.Torch
open Pai.Tests.Support


let private mb (bytes: int64) = float bytes / 1048576.0

/// Collects managed garbage (running finalizers) so that RSS reflects native memory.
let private settle () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()

/// A small conv net: conv 1→8 3×3, relu, max-pool 2, linear 200→10.
type private ConvNet(g: Generator) =
    let init (shape: int64[]) (fanIn: float) =
        use r = Libtorch.Randn(shape, g)
        (r * (1.0 / sqrt fanIn)).RequiresGrad_()

    member val Parameters =
        [|
            init [| 8L; 1L; 3L; 3L |] 9.0
            init [| 8L |] 9.0
            init [| 10L; 200L |] 200.0
            init [| 10L |] 200.0
        |]

    member this.Loss(x: Tensor, y: Tensor) =
        let p = this.Parameters
        let h = F.MaxPool2d(F.Relu(F.Conv2d(x, p.[0], p.[1])), 2)
        F.CrossEntropy(F.Linear(h.Flatten(1L), p.[2], p.[3]), y)

/// One SGD step in its own scope on a fresh random batch of 16 at 1×12×12. Even steps take
/// gradients with Autograd.Grad, odd steps with Backward and .Grad (then clear them).
let private step (net: ConvNet) (g: Generator) (k: int) =
    use _scope = new DisposeScope()
    let x = Libtorch.Randn([| 16L; 1L; 12L; 12L |], g)
    let y = Libtorch.RandInt(0L, 10L, [| 16L |], g)
    let loss = net.Loss(x, y)

    let grads =
        if k % 2 = 0 then
            Autograd.Grad(loss, net.Parameters)
        else
            loss.Backward()
            net.Parameters |> Array.map (fun p -> nonNull p.Grad)

    use _noGrad = Libtorch.NoGrad()

    for p, gr in Array.zip net.Parameters grads do
        p.Add_(gr, -0.05) |> ignore
        p.ClearGrad()

    loss.Item()

[<MethodImpl(MethodImplOptions.NoInlining)>]
let private allocateAndDrop (count: int) (elements: int64) =
    // no scope, no Dispose: only the finalizer can free these
    for _ in 1..count do
        Libtorch.Zeros([| elements |]) |> ignore

[<Tests>]
let tests =
    testSequenced
    <| testList
        "MemoryTests"
        [
            testCase "10,000 conv-net training steps in dispose scopes keep resident memory flat"
            <| fun () ->
                // one intra-op thread: these tensors are tiny, and on a loaded machine two OpenMP threads
                // made each step 5–30× slower (barrier waits) without changing what is measured
                withThreads 1 (fun () ->
                    use outer = new DisposeScope()
                    use g = new Generator(2024UL)
                    let net = ConvNet(g)
                    let warmup, total = 500, 10_000
                    let mutable first = 0.0

                    for k in 0 .. warmup - 1 do
                        let l = step net g k

                        if k = 0 then
                            first <- l

                    settle ()
                    let before = residentBytes ()
                    let mutable last = 0.0

                    for k in warmup .. total - 1 do
                        last <- step net g k

                    settle ()
                    let after = residentBytes ()
                    let growth = after - before
                    Expect.isTrue (Double.IsFinite last) (sprintf "the loss became %g" last)
                    // the steps did run: the loss moved
                    Expect.notEqual last first "last"
                    // only the parameters (and the outer scope's bookkeeping) outlive the steps
                    Expect.equal outer.OwnedCount net.Parameters.Length "outer.OwnedCount"

                    Expect.isTrue
                        (growth < 20L * 1024L * 1024L)
                        (sprintf
                            "resident memory grew by %.1f MB over %d steps (%.1f → %.1f MB)"
                            (mb growth)
                            (total - warmup)
                            (mb before)
                            (mb after)))
            testCase "the finalizer frees tensors that no scope owns once they are collected"
            <| fun () ->
                settle ()
                let before = residentBytes ()
                // 6 × 80 MB, each above the 64 MB mmap threshold the native library sets, so that
                // freeing returns it to the OS
                allocateAndDrop 6 (20L * 1024L * 1024L)
                settle ()
                let after = residentBytes ()

                Expect.isTrue
                    (after - before < 100L * 1024L * 1024L)
                    (sprintf
                        "resident memory grew by %.1f MB after 480 MB of dropped tensors were collected"
                        (mb (after - before)))
        ]
