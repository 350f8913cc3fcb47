/// Helpers shared by the tests.
module Pai.Tests.Support

open Pai.Torch

/// Runs f inside a dispose scope so that every tensor it makes is freed.
let inScope (f: unit -> 'a) : 'a =
    use _scope = new DisposeScope()
    f ()
