// AutoS transfer, end to end: label weights once by iterative rewind pruning (IRP) on lenet5 /
// Fashion-MNIST, fit a predictor of those labels from (θ₀, g₀), then use it as a PaI criterion on
// other models and compare it with random, magnitude, SNIP and Hutchinson-OBD. Optionally runs
// iterative magnitude pruning (IMP) with the same schedule, the expensive reference.
//   dotnet build Hybrid.sln -c Release
//   dotnet fsi pipelines/autos-transfer.fsx [--rounds 8] [--prune-fraction 0.5] [--max-batches 200]
//       [--max-batches-bn 100] [--models lenet5,lenet300,resnet20,vgg11] [--sparsities 0.9,0.98,0.995]
//       [--criteria random,magnitude,snip,hutch_obd,autos] [--imp true] [--threads 1] [--results autos-results]
// Everything resumes: IRP and IMP continue after their last finished round, the predictor is
// fitted once, finished runs are skipped. The comparison table is written to RESULTS/transfer.md.
#load "Pai.fsx"

open System
open System.Globalization
open Pai
open Pai.Host
open Pai.Host.AutoS
open Pai.Host.Data
open Pai.Host.Runs

let inv (s: string) =
    Double.Parse(s, CultureInfo.InvariantCulture)

let list (name: string) (fallback: string) =
    (arg name fallback).Split(',') |> List.ofArray

let results = IO.Path.GetFullPath(arg "results" "autos-results")
let rounds = int (arg "rounds" "8")
let fraction = inv (arg "prune-fraction" "0.5")
let maxBatches = int (arg "max-batches" "200")
let maxBatchesBn = int (arg "max-batches-bn" "100")
let models = list "models" "lenet5,lenet300,resnet20,vgg11"
let sparsities = list "sparsities" "0.9,0.98,0.995" |> List.map inv
let criteria = list "criteria" "random,magnitude,snip,hutch_obd,autos"
let withImp = arg "imp" "true" = "true"
PaiHost.ConfigureThreads(Nullable(int (arg "threads" "1")))
IO.Directory.CreateDirectory results |> ignore

// The main job's budget for the LeNets (no batch norm: 0.005 keeps them from diverging); the
// models with batch norm take a larger rate and, being slower, fewer batches.
let config (model: string) (criterion: string) (sparsity: float) (predictor: string) =
    let lenet = model.StartsWith "lenet"

    RunConfig(
        Model = model,
        Dataset = "fashion-mnist",
        Criterion = criterion,
        Sparsity = sparsity,
        Predictor = (if criterion = "autos" then predictor else null),
        Epochs = 1,
        MaxBatchesPerEpoch = Nullable(if lenet then maxBatches else maxBatchesBn),
        LearningRate = (if lenet then 0.005 else 0.05)
    )
    |> RunPlan.Canonical

let data = new DataCache()
let train = data.Get("fashion-mnist", null, DatasetSplit.Train)
let test = data.Get("fashion-mnist", null, DatasetSplit.Test)

let iterative rewind =
    let spec =
        IterativePruningSpec(config "lenet5" "magnitude" 0.0 null, rounds, fraction, rewind)

    let dir = IO.Path.Combine(results, (if rewind then "irp" else "imp"))
    IterativePruning.Run(spec, train, test, dir, Action<string>(printfn "%s"), null)

// 1. Labels: IRP once on lenet5 / Fashion-MNIST.
let irp = iterative true

// 2. The predictor (MLP, θ₀ and g₀), fitted once.
let predictorPath = IO.Path.Combine(results, "predictor.safetensors")

if not (IO.File.Exists predictorPath) then
    use labels = LabelFile.Load irp.LabelsPath
    let samples = labels.Samples(Features.standard, train)

    let struct (fit, report) =
        PredictorFitting.Fit(samples, Features.standard, FitOptions(), Action<string>(printfn "%s"))

    use predictor = fit
    predictor.Save(predictorPath, report.ToMetadata())

    for s in samples do
        s.Features.Dispose()
        s.Labels.Dispose()

let fitted = Predictor.Load predictorPath

printfn
    "predictor: held-out layers %s, Spearman %s"
    fitted.Metadata.["validation_layers"]
    fitted.Metadata.["validation_spearman"]

// 2b. What the predictor learned: on each model at initialization (after BN warm-up, as a run
// scores), the Spearman correlation of its scores with |θ| and with SNIP's, and how much of what it
// keeps at 98% sparsity magnitude would keep too.
let agreement (model: string) =
    use scope = new Pai.Torch.DisposeScope()
    let c = config model "autos" 0.98 predictorPath
    use m = Runner.CreateModel(RunPlan.Of(c), train)

    use scoring =
        ScoringSubset.Create(train, c.SamplesPerClass, c.Seed, c.ScoringBatchSize)

    if Seq.isEmpty m.BatchNorms |> not then
        use loader = new DataLoader(train, c.BatchSize, true, c.Seed)
        BnWarmup.run m c.WarmupBatches (loader.Epoch 0) |> ignore

    m.Training <- false

    let ctx =
        {
            Model = m
            Batches = List.ofSeq scoring
            InputShape = List.ofArray train.InputShape
            Seed = c.Seed
            Curvature = CurvatureOptions.Default
            Mask = None
        }

    let flat (layers: (string * Pai.Torch.Tensor) list) =
        layers
        |> Array.ofList
        |> Array.collect (fun (_, t) -> Pai.Tensors.toFloats (t.To Pai.Torch.DType.Float64))

    let autos = fitted.Criterion(c.HutchinsonTemperature).Score ctx
    let magnitude = (Registry.find "magnitude").Score ctx
    let snip = (Registry.find "snip").Score ctx

    let kept (s: Scores) =
        flat (Selection.select Ranking.Global 0.02 false None s).Layers

    let a, b = kept autos, kept magnitude
    let both = Array.fold2 (fun n x y -> if x > 0.0 && y > 0.0 then n + 1 else n) 0 a b
    let total = a |> Array.filter (fun x -> x > 0.0) |> Array.length

    $"| %s{model} | %.3f{Stability.spearman (flat autos.Layers) (flat magnitude.Layers)} | %.3f{Stability.spearman (flat autos.Layers) (flat snip.Layers)} | %.1f{100.0 * float both / float total} |"

let agreements =
    [
        "| model | Spearman(autos, \\|θ\\|) | Spearman(autos, snip) | autos-kept also magnitude-kept at 98% (%) |"
        "|---|---|---|---|"
        yield!
            models
            |> List.map (fun m ->
                let row = agreement m
                printfn "%s" row
                row)
    ]

// 3. Transfer: the predictor as a PaI criterion on every model, against the baselines.
let configs =
    [
        for m in models do
            yield config m "dense" 0.0 predictorPath

            for c in criteria do
                for s in sparsities -> config m c s predictorPath
    ]

// Pai.fsx's `sweep` would reset the thread count to every core: run the store directly.
let runs =
    use store = new SqliteRunStore(results)

    let summary =
        Sweep.Execute(store, "pipeline", List.toArray configs, progress, Action<string>(printfn "%s"))

    printfn "%d run, %d skipped, %d failed; results in %s" summary.Ran summary.Skipped summary.Failed store.Directory
    store.All()

report results runs

// 4. The reference: IMP with the same schedule (no rewind, keeps training); last, as the most expensive.
let imp = if withImp then Some(iterative false) else None

// 5. The comparison: test top-1 per model, criterion and sparsity.
let top1 (m: string) (c: string) (s: float) =
    runs
    |> Seq.tryFind (fun r ->
        r.Config.Model = m
        && r.Config.Criterion = c
        && abs (r.Config.Sparsity - s) < 1e-9
        && r.Status = RunStatus.Finished)
    |> Option.bind (fun r -> Option.ofNullable r.FinalTop1)
    |> Option.map (fun a -> $"%.2f{100.0 * a}")
    |> Option.defaultValue "–"

let table =
    [
        yield
            "| model | criterion | "
            + String.Join(" | ", sparsities |> List.map (fun s -> $"%g{100.0 * s}%%"))
            + " |"
        yield "|---|---|" + String.replicate sparsities.Length "---|"

        for m in models do
            yield
                $"| %s{m} | dense | "
                + String.Join(" | ", sparsities |> List.map (fun _ -> top1 m "dense" 0.0))
                + " |"

            for c in criteria do
                yield
                    $"| %s{m} | %s{c} | "
                    + String.Join(" | ", sparsities |> List.map (top1 m c))
                    + " |"
    ]

let rows (r: IterativePruningResult) =
    [
        for x in r.Rounds -> $"| %d{x.Round} | %.2f{100.0 * x.Density} | %.2f{100.0 * x.TestTop1} |"
    ]

let lines =
    [
        yield "## IRP (labels), lenet5 / Fashion-MNIST"
        yield "| round | density % | test top-1 % |"
        yield "|---|---|---|"
        yield! rows irp

        match imp with
        | Some r ->
            yield ""
            yield "## IMP (reference), lenet5 / Fashion-MNIST"
            yield "| round | density % | test top-1 % |"
            yield "|---|---|---|"
            yield! rows r
        | None -> ()

        yield ""

        yield
            $"""## Predictor: held-out layers %s{fitted.Metadata.["validation_layers"]}, MSE %s{fitted.Metadata.["validation_mse"]}, Spearman %s{fitted.Metadata.["validation_spearman"]}"""

        yield ""
        yield "## What the predictor learned (scores at initialization)"
        yield! agreements
        yield ""
        yield "## Transfer: test top-1 % (Fashion-MNIST)"
        yield! table
    ]

IO.File.WriteAllLines(IO.Path.Combine(results, "transfer.md"), lines)
lines |> List.iter (printfn "%s")
