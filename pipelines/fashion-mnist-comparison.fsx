// The Fashion-MNIST PaI comparison (the same grid as `pai sweep` with no options), scripted.
//   dotnet build Hybrid.sln -c Release
//   dotnet fsi pipelines/fashion-mnist-comparison.fsx [--epochs 1] [--results pai-results] [--seeds 0,1]
#load "Pai.fsx"

open Pai
open Pai.Host.Runs

let epochs = int (arg "epochs" "1")
let seeds = (arg "seeds" "0").Split(',') |> Array.map uint64 |> List.ofArray
let criteria = [ "random"; "magnitude"; "snip"; "grasp"; "synflow"; "fisher_obd"; "hutch_obd"; "hts" ]
let sparsities = [ 0.9; 0.98; 0.995 ]

let config seed criterion sparsity =
    RunConfig(
        Model = "lenet5",
        Dataset = "fashion-mnist",
        Criterion = criterion,
        Sparsity = sparsity,
        Epochs = epochs,
        LearningRate = 0.05,
        Seed = seed
    )

let configs =
    [ for seed in seeds do
          yield config seed "dense" 0.0

          for c in criteria do
              for s in sparsities -> config seed c s ]

let runs = sweep (arg "results" "pai-results") configs
Pai.Host.Reports.ReportWriter.Write(runs, System.IO.Path.Combine(arg "results" "pai-results", "report"), Pai.Host.Reports.ReportOptions())
|> printfn "%A"
