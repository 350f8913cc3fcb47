// ResNet-18 on CIFAR-10: the comparison of "What Scalable Second-Order Information Knows for
// Pruning at Initialization" (Navarrete et al., arXiv 2502.11450), with the settings of the
// authors' published experiment configurations for this table:
//   SGD, learning rate 0.03, momentum 0.9, weight decay 5e-4, batch 512, learning rate × 0.2 at
//   epochs 80 and 120; global mask; scoring on 10 samples per class at batch size 1; seeds 0, 42
//   and 123; BN warm-up compared on and off. The configurations do not state the epoch count
//   next to those milestones; 160 is assumed (override with --epochs).
// Usage (CIFAR-10 binary version, e.g. the folder cifar-10-batches-bin):
//   dotnet build Hybrid.sln -c Release
//   dotnet fsi pipelines/resnet18-cifar10.fsx --data /path/to/cifar-10-batches-bin [--epochs 160] [--results pai-results-resnet18]
// This is days of CPU time: on a 2-core machine try --epochs 1 --seeds 0 first.
#load "Pai.fsx"

open Pai
open Pai.Host.Runs

let data =
    match args.TryFind "data" with
    | Some d -> d
    | None ->
        failwith
            "give the CIFAR-10 directory: --data /path/to/cifar-10-batches-bin (binary version from the CIFAR-10 web page)"

let epochs = int (arg "epochs" "160")
let seeds = (arg "seeds" "0,42,123").Split(',') |> Array.map uint64 |> List.ofArray

let criteria =
    [
        "random"
        "magnitude"
        "grad_norm"
        "snip"
        "grasp"
        "synflow"
        "fisher_diag"
        "fisher_obd"
        "fts"
        "hutch_diag"
        "hutch_obd"
        "hts"
    ]

let sparsities =
    (arg "sparsities" "0.9,0.95,0.98").Split(',') |> Array.map float |> List.ofArray

let config seed criterion sparsity warmup =
    RunConfig(
        Model = "resnet18",
        Dataset = "cifar10",
        DataDirectory = data,
        Criterion = criterion,
        Sparsity = sparsity,
        WarmupBatches = warmup,
        SamplesPerClass = 10,
        ScoringBatchSize = 1,
        Seed = seed,
        Epochs = epochs,
        BatchSize = 512,
        LearningRate = 0.03,
        Momentum = 0.9,
        WeightDecay = 5e-4,
        Schedule = "multistep",
        Milestones = [| 80; 120 |],
        Gamma = 0.2,
        Augment = true
    )

// BN warm-up "on": one pass over the training set in batches of 512 (98 batches).
let configs =
    [
        for seed in seeds do
            yield config seed "dense" 0.0 0

            for warmup in [ 98; 0 ] do
                for c in criteria do
                    for s in sparsities -> config seed c s warmup
    ]

let results = arg "results" "pai-results-resnet18"
let runs = sweep results configs
report results runs
