/// Helpers shared by the tests.
module Pai.Tests.Support

// libtorch's thread count, the global seed and process memory are process-wide: tests that
// touch or measure them must not run beside others.
[<assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)>]
do ()

open Pai.Torch

/// Runs f inside a dispose scope so that every tensor it makes is freed.
let inScope (f: unit -> 'a) : 'a =
    use _scope = new DisposeScope()
    f ()
