// A run as a pipeline of immutable records: data |> model |> score |> prune |> train |> record.
// Prunes LeNet-5 with SNIP and with a formula of your own at one sparsity, trains each sparse
// network and the dense one for a short budget on Fashion-MNIST, and records them in a store.
//   dotnet build Hybrid.sln -c Release
//   dotnet fsi pipelines/quickstart.fsx [--sparsity 0.98] [--max-batches 100] [--results pai-results-quickstart]
#load "Pai.fsx"

open Pai
open Pai.Formula
open Pai.Host
open Pai.Host.Runs

let sparsity = float (arg "sparsity" "0.98")
let budget = Budget(1, int (arg "max-batches" "100"))

// Criteria are F# values: a built-in from the registry, or a formula over statistics.
let snip = Registry.find "snip"
let mine = Criteria.ofFormula (abs (theta * grad) + 0.1 * fisher)

let lenet5 = Pipeline.data "fashion-mnist" |> Pipeline.model "lenet5"

let store =
    new SqliteRunStore(System.IO.Path.GetFullPath(arg "results" "pai-results-quickstart"))

for criterion in [ snip; mine ] do
    let pruned = lenet5 |> Pipeline.score criterion |> Pipeline.prune sparsity
    let run = pruned |> Pipeline.train budget |> Pipeline.record store

    // A run is named as the store names it: a built-in by its registry name, a formula by its text.
    printfn
        "%-32s density %.4f  test top-1 %.2f%%  (run %s)"
        run.Config.Criterion
        pruned.Density
        (100.0 * run.FinalTop1.Value)
        run.Key

let dense =
    lenet5 |> Pipeline.dense |> Pipeline.train budget |> Pipeline.record store

printfn "%-32s density 1.0000  test top-1 %.2f%%  (run %s)" "dense" (100.0 * dense.FinalTop1.Value) dense.Key
printfn "results in %s (see them with: ./pai report --results %s)" store.Directory store.Directory
store.Dispose()
