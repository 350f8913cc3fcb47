// The Fashion-MNIST PaI comparison (the same grid as `pai sweep` with no options), scripted.
//   dotnet build Hybrid.sln -c Release
//   dotnet fsi pipelines/fashion-mnist-comparison.fsx [--epochs 1] [--max-batches 200] [--seeds 0,1]
//       [--criteria snip,hts] [--results pai-results]
#load "Pai.fsx"

open Pai
open Pai.Host.Runs

let epochs = int (arg "epochs" "1")
let seeds = (arg "seeds" "0").Split(',') |> Array.map uint64 |> List.ofArray

let maxBatches =
    args |> Map.tryFind "max-batches" |> Option.map int |> Option.toNullable

let criteria =
    (arg "criteria" (System.String.Join(",", Registry.mainJob))).Split(',')
    |> List.ofArray

let sparsities = [ 0.9; 0.98; 0.995 ]

let config seed criterion sparsity =
    RunConfig(
        Model = "lenet5",
        Dataset = "fashion-mnist",
        Criterion = criterion,
        Sparsity = sparsity,
        Epochs = epochs,
        MaxBatchesPerEpoch = maxBatches,
        LearningRate = 0.005,
        Seed = seed
    )

let configs =
    [
        for seed in seeds do
            yield config seed "dense" 0.0

            for c in criteria do
                for s in sparsities -> config seed c s
    ]

let results = arg "results" "pai-results"
let runs = sweep results configs
report results runs
