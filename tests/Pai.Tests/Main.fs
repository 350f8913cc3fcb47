/// The Expecto runner, for running the tests without VSTest:
/// `dotnet run --project tests/Pai.Tests -c Release -- --filter-test-case "hvp"` (see --help).
/// `dotnet test` does not use it; it runs the same tests through Pai.Expecto.TestAdapter.
module Pai.Tests.Main

open Expecto

[<EntryPoint>]
let main argv =
    // Every list is testSequenced: the runner never runs two tests at once.
    Tests.runTestsInAssemblyWithCLIArgs [] argv
