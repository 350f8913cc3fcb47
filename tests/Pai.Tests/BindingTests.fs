module Pai.Tests.BindingTests

open Xunit
open Pai.Torch
open Pai.Tests.Support

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
