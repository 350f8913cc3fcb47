/// Cross-check of the criteria against PyTorch (tests/oracles/criteria_oracle.py): the same
/// safetensors weights and scoring batches, the same Hutchinson probe vectors through a file.
/// Pass: Spearman ≥ 0.999 and mask agreement ≥ 99.9% at 90% sparsity, per criterion.
module Pai.Tests.TorchCrossCheckTests

open Expecto
open Pai.Tests.Support

open System
open System.Diagnostics
open System.IO
open Pai
open Pai.Torch
open Pai.Host.Checkpoints
open Pai.Host.Data
open Pai.Host.Models

let private repoRoot =
    let rec up (d: DirectoryInfo) =
        if File.Exists(Path.Combine(d.FullName, "Hybrid.sln")) then
            d.FullName
        else
            match d.Parent with
            | null -> failwith $"Hybrid.sln not found above {AppContext.BaseDirectory}"
            | parent -> up parent

    up (DirectoryInfo AppContext.BaseDirectory)

let private flat (s: Scores) =
    [|
        for _, t in s.Layers do
            yield! Pai.Tensors.toFloats t
    |]

let private keptAt90 (s: Scores) =
    let m = Selection.select Ranking.Global 0.1 false None s

    let k =
        [|
            for _, t in m.Layers do
                yield! t.ToArray<bool>()
        |]

    Mask.dispose m
    k

let private runOracle (dir: string) =
    let psi =
        ProcessStartInfo(
            "/usr/bin/python3",
            [
                Path.Combine(repoRoot, "tests", "oracles", "criteria_oracle.py")
                dir
                Path.Combine(repoRoot, "tests", "oracles")
            ]
        )

    psi.RedirectStandardError <- true
    psi.RedirectStandardOutput <- true
    use p = nonNull (Process.Start psi)
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()

    if p.ExitCode <> 0 then
        failwith $"criteria oracle failed (%d{p.ExitCode}):\n%s{err.Result}\n%s{out}"

let private crossCheck (model: Model) (batches: Batch list) =
    let dir = Directory.CreateTempSubdirectory("pai-criteria-").FullName
    let view = model :> IModelView
    let shape = model.InputShape
    // 4 probes keep the probe file small (batches × probes × weights floats).
    let options =
        { CurvatureOptions.Default with
            Probes = 4
        }

    let temperatures = Temperatures.Default

    let seed = 7UL

    try
        let state =
            [ for kv in model.Parameters -> struct (kv.Key, kv.Value) ]
            @ [ for kv in model.Buffers -> struct (kv.Key, kv.Value) ]

        Safetensors.Save(Path.Combine(dir, "weights.safetensors"), state)

        Safetensors.Save(
            Path.Combine(dir, "batches.safetensors"),
            [
                for i, b in List.indexed batches do
                    yield struct ($"input/%d{i}", b.Inputs)
                    yield struct ($"target/%d{i}", b.Targets)
            ]
        )

        let ctx =
            {
                Model = view
                Batches = batches
                InputShape = [ int64 shape.Channels; int64 shape.Height; int64 shape.Width ]
                Seed = seed
                Curvature = options
                Mask = None
            }

        // One cache, as a sweep scores its criteria: hutch_obd and hts share one Ĥ.
        let pai =
            use cache = new StatisticCache(ctx)

            [ "snip"; "grasp"; "synflow"; "fisher_obd"; "hutch_obd"; "hts" ]
            |> List.map (fun name -> name, Criteria.scoreWith cache (PaiPruning.ResolveCriterion(name, temperatures)))

        // The probes the criterion drew: replay its seeded generator, recording every vector, and
        // check that the replay reproduces the criterion's estimate bit for bit.
        let recorded = Collections.Generic.List<struct (string * Tensor)>()
        let names = [| for kv in view.Prunable -> kv.Key |]

        let replay =
            use gen = new Generator(seed)

            Hutchinson.estimateWith
                (fun b j i w ->
                    let z = Libtorch.RademacherLike(w, gen)
                    recorded.Add(struct ($"%d{b}/%d{j - 1}/%s{names.[i]}", z.Clone().DetachFromScope()))
                    z)
                view
                temperatures.Hutchinson
                (ProbeBudget.Probes options.Probes)
                (ProbeScope.blocks names.Length options.ProbeScope)
                batches

        let hutchObd = pai |> List.find (fst >> (=) "hutch_obd") |> snd

        for (_, h), m, kv in List.zip3 hutchObd.Layers replay.Mean (List.ofSeq view.Prunable) do
            use expected = kv.Value.Detach().Square() * m * 0.5
            Expect.isTrue (h.Equal expected) "replayed probes do not reproduce the criterion's Hutchinson estimate"

        Safetensors.Save(Path.Combine(dir, "probes.safetensors"), recorded)

        let spec =
            Text.Json.JsonSerializer.Serialize(
                {|
                    model = model.Name
                    c = shape.Channels
                    h = shape.Height
                    w = shape.Width
                    classes = model.Classes
                    prunable = names
                    batches = batches.Length
                    probes = options.Probes
                    grasp_temperature = temperatures.Grasp
                    hutch_temperature = temperatures.Hutchinson
                    threads = Libtorch.NumThreads
                |}
            )

        File.WriteAllText(Path.Combine(dir, "spec.json"), spec)
        runOracle dir
        use torchScores = Safetensors.Load(Path.Combine(dir, "scores.safetensors"))

        let results =
            [
                for name, s in pai ->
                    let theirs =
                        Scores.ofLayers [ for n in names -> n, torchScores.[$"%s{name}/%s{n}"] ]

                    let rho = Stability.spearman (flat s) (flat theirs)
                    let a, b = keptAt90 s, keptAt90 theirs

                    let agreement =
                        float (Array.fold2 (fun n x y -> if x = y then n + 1 else n) 0 a b)
                        / float a.Length

                    name, rho, agreement
            ]

        for _, s in pai do
            Scores.dispose s

        for struct (_, t) in recorded do
            t.Dispose()

        for name, rho, agreement in results do
            Expect.isTrue (rho >= 0.999) ($"%s{model.Name} %s{name}: Spearman %.6f{rho} < 0.999")

            Expect.isTrue
                (agreement >= 0.999)
                ($"%s{model.Name} %s{name}: mask agreement %.5f{agreement} < 0.999 at 90%% sparsity")

        results
    finally
        Directory.Delete(dir, true)

/// Prints one line per criterion (the adapter keeps it with the test's result).
let private report (model: string) results =
    for name, rho, agreement in results do
        printfn $"%s{model} %-10s{name} Spearman %.6f{rho}  mask agreement at 90%% sparsity %.5f{agreement}"

[<Tests>]
let tests =
    testSequenced
    <| testList
        "TorchCrossCheckTests"
        [
            testCase "criteria agree with PyTorch on lenet5 and Fashion-MNIST"
            <| fun () ->
                use data = DatasetRegistry.FashionMnist(DatasetSplit.Train)
                // Batches of 10: per-sample quantities (Fisher) must still be computed per sample.
                use scoring = ScoringSubset.Create(data, 10, 3UL, 10)

                use model =
                    ModelZoo.Create("lenet5", ModelOptions(InputShape = InputShape.Mnist, Classes = 10, Seed = 5UL))

                let results = crossCheck model (List.ofSeq scoring)
                report "lenet5" results
                Expect.equal results.Length 6 "results.Length"
            testCase "criteria agree with PyTorch on resnet20 after BN warm-up"
            <| fun () ->
                use data =
                    SyntheticData.Create(
                        SyntheticOptions(Channels = 3, Height = 32, Width = 32, TrainCount = 200, TestCount = 10)
                    )

                use loader = new DataLoader(data, 50, shuffle = true, seed = 1UL)
                use scoring = ScoringSubset.Create(data, 2, 3UL, 4)
                use model = ModelZoo.Create("resnet20", ModelOptions(Seed = 5UL))
                BnWarmup.run model 4 (loader.Epoch 0) |> ignore
                let results = crossCheck model (List.ofSeq scoring)
                report "resnet20" results
                Expect.equal results.Length 6 "results.Length"
        ]
