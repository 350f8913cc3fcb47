module Pai.Benchmarks.Program

open Pai.Benchmarks.Common

let usage =
    """Pai.Benchmarks: Pai against PyTorch (Debian's python3-torch, the same libtorch) on this machine.

  training [--models lenet5,resnet20] [--repeats 5] [--threads N] [--batch 128]
           [--steps S] [--warmup W] [--cifar-count 50000] [--sparsity 0] [--python /usr/bin/python3]
      Images/s of Trainer.Train (SGD momentum 0.9, wd 5e-4) against a plain PyTorch loop, and the
      peak RSS of each side, every configuration in a fresh process, A/B interleaved.
      Defaults: lenet5 200 steps after 20 warm-up steps, lenet300 400 after 50, others 30 after 5.

  scoring  [--models lenet5,resnet20] [--criteria random,magnitude,...] [--repeats 3] [--threads N]
           [--per-class 10] [--scoring-batch 1] [--probes 10] [--synflow-rounds 100]
           [--synflow-sparsity 0.99] [--min-seconds 0.5] [--criterion-batches hutch_obd=10,hts=10]
           [--python /usr/bin/python3]
      Seconds per criterion of Pai's Criteria against the same computation in PyTorch on the same
      weights and scoring batches, with the largest relative difference of the two results.
      --criterion-batches scores the named criteria on their first K scoring batches only.

  loader   [--images 512] [--side 224] [--size 224] [--threads 2] [--batch 64] [--repeats 3]
           [--steps 4] [--folder DIR] [--python /usr/bin/python3]
      Images/s of ImageFolderLoader's training pipeline (decode, random-resized crop, flip,
      normalize, batch) on a generated folder of side x side JPEGs against the same pipeline in
      PIL + numpy with as many worker processes (benchmarks/pil_loader.py), A/B interleaved; then
      whether a resnet18 training step waits for the loader (--steps 0 skips that).

  exact-scoring [--models lenet5,resnet20] [--criteria fisher_obd,hutch_obd,hts,snip,grasp]
           [--repeats 3] [--threads N] [--per-class 10] [--pai-batch 0] [--probes 10]
           [--samples resnet20=10] [--python /usr/bin/python3]
      Pai's batched per-sample statistics and exact Hessian diagonal (batches merged as a run does)
      against the second-order paper's algorithm in PyTorch (batch 1, 10 Hutchinson probes per
      sample, T=200), on the same weights and samples: time ratios, the estimators' relative error
      and Spearman against the exact diagonal, peak RSS. --samples limits a model's samples.

  sparse-kernels [--models lenet5,lenet300] (also resnet20, vgg11) [--patterns uniform-90,uniform-98,uniform-99.5,snip-98]
           [--batch 128] [--threads 1] [--repeats 5] [--pass training|forward]
      Per-layer forward + backward time of the sparse kernels against the dense masked layer
      (dense product, gradient times the mask) at random-uniform and SNIP-like densities, median
      of interleaved repeats, with each mask's multiply-add limit. Threads default to 1 here.
      --pass forward times the forward alone without gradients, as evaluation runs it.

  sparse-training [--models lenet300,lenet5,resnet20,vgg11] [--sparsities 0.9,0.98,0.995]
           [--threads 1,2] [--batch 128] [--repeats 5] [--steps S] [--warmup W] [--eval-batches 20]
           [--cifar-count 50000] [--python /usr/bin/python3]
      Whole training steps (forward, backward, optimizer) and evaluation batches on SNIP masks:
      Pai with the sparse kernels on and auto against Pai dense masked and PyTorch dense masked on
      the same masks, every configuration in a fresh process, interleaved; medians as speedups
      beside the mask's multiply-add limit, the layers auto ran sparse, and peak RSS.

Threads default to every core for both sides (loader: 2)."""

/// The options each command takes, as the usage lists them (a worker takes what its parent passes on).
let private known =
    Map
        [
            "training", "models repeats threads batch steps warmup cifar-count sparsity python"
            "scoring",
            "models criteria repeats threads per-class scoring-batch probes synflow-rounds synflow-sparsity min-seconds criterion-batches python"
            "loader", "images side size threads batch repeats steps folder python"
            "exact-scoring", "models criteria repeats threads per-class pai-batch probes samples python"
            "sparse-kernels", "models patterns batch threads repeats pass"
            "sparse-training", "models sparsities threads batch repeats steps warmup eval-batches cifar-count python"
        ]

let private options command rest =
    (Args.Parse rest).Only(command, known.[command].Split ' ' |> List.ofArray)

[<EntryPoint>]
let main argv =
    try
        match List.ofArray argv with
        | "training" :: rest -> Training.run (options "training" rest)
        | "training-worker" :: rest -> Training.worker (Args.Parse rest)
        | "scoring" :: rest -> Scoring.run (options "scoring" rest)
        | "loader" :: rest -> Loader.run (options "loader" rest)
        | "sparse-kernels" :: rest -> SparseKernels.run (options "sparse-kernels" rest)
        | "sparse-training" :: rest -> Training.runSparse (options "sparse-training" rest)
        | "exact-scoring" :: rest -> Scoring.runExact (options "exact-scoring" rest)
        | [ "--help" ]
        | [ "-h" ]
        | [ "help" ] ->
            printfn "%s" usage
            0
        | _ ->
            eprintfn "%s" usage
            2
    with BadOption message ->
        eprintfn "error: %s" message
        2
