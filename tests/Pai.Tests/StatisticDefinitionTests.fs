/// A statistic is one StatisticDefinition: defined here, outside Pai.Statistics.fs, it is parsed,
/// scored, cached and pruned with like a built-in (docs/architecture.md §8, "Adding things").
module Pai.Tests.StatisticDefinitionTests

open Expecto

open Pai
open Pai.Torch
open Pai.Tests.Support
open Pai.Tests.TinyNet

/// θ², read through θ: the walkthrough's statistic, one value.
let theta2: StatisticDefinition =
    {
        Name = "theta2"
        Parameters = []
        Description = "θ², the squared weights"
        NeedsData = false
        WorthCaching = false
        Reads = fun _ -> [ Statistic.Theta ]
        Compute =
            fun get _ _ ->
                {
                    Layers = (get Statistic.Theta).Layers |> List.map (fun t -> t.Square())
                    Diagnostics = []
                }
    }

/// |θ|^P, a statistic with a parameter (P, default 2) written into its name.
let thetaPower: StatisticDefinition =
    let power =
        {
            Name = "P"
            Meaning = "power"
            Default = 2.0
            Example = 3.0
        }

    { Statistics.define "theta_pow" "|θ|^P" (fun ctx s ->
          {
              Layers = [ for kv in ctx.Model.Prunable -> kv.Value.Detach().Abs().Pow(s.Argument "P") ]
              Diagnostics = []
          }) with
        Parameters = [ power ]
        NeedsData = false
    }

let private definitions = theta2 :: thetaPower :: Statistics.builtIns

let private setup () =
    let model = new TinyMlp([ 6; 5; 3 ], 3UL, false, DType.Float64)
    let batches = singles (batch 5UL 6 6 3 DType.Float64)
    model, batches

let private spec =
    { PruneSpec.Default with
        Sparsity = 0.7
        Seed = 3UL
    }

let private parsed (text: string) =
    match Criteria.parseWith definitions text with
    | Ok c -> c
    | Error e -> failwith e

let private kept (m: Mask) =
    [
        for _, k in m.Layers do
            yield! k.Flatten().ToArray<bool>()
    ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "StatisticDefinitionTests"
        [
            testCase "a statistic defined outside Pai.Statistics.fs is parsed, scored and pruned with"
            <| fun () ->
                let model, batches = setup ()
                use _ = model
                let custom = parsed "abs(theta2 * grad)"
                let reference = parsed "abs(theta^2 * grad)"
                Expect.equal custom.Name "abs(theta2 * grad)" "the canonical text names the new statistic"
                Expect.isTrue (Criteria.needsData custom) "grad reads data"
                // What a results store keeps: grad, not θ² or the θ it reads (not worth caching).
                Expect.equal
                    (Criteria.storedStatistics custom |> List.map (fun s -> s.Name))
                    [ "grad" ]
                    "stored statistics"

                let prune (c: Criterion) =
                    Pruning.prune spec c model [ 6L ] batches Seq.empty [] ignore

                let a = prune custom
                let b = prune reference

                try
                    Expect.equal (kept a.Mask) (kept b.Mask) "θ² by the new statistic prunes as θ^2 in the formula"
                    Expect.equal (a.Statistics |> List.map fst) [ "grad" ] "statistics handed back for storing"

                    let sa = a.Scores.Layers |> List.map snd |> flatOf
                    let sb = b.Scores.Layers |> List.map snd |> flatOf
                    Expect.sequenceEqual sa sb "scores"
                finally
                    disposeResult a
                    disposeResult b
            testCase "a defined statistic's parameters are written into its name and checked by the parser"
            <| fun () ->
                let model, batches = setup ()
                use _ = model
                let cubed = parsed "theta_pow(p=3)"
                Expect.equal cubed.Name "theta_pow(P=3)" "the parameter in its canonical spelling"
                Expect.equal (parsed "theta_pow(P=2)").Name "theta_pow" "the default is left out"
                Expect.isFalse (Criteria.needsData cubed) "reads no data"
                let ctx = context model batches 1UL
                use _scope = new DisposeScope()
                let s = Criteria.score ctx cubed

                let expected =
                    [ for kv in (model :> IModelView).Prunable -> kv.Value.Abs().Pow(3.0) ]
                    |> flatOf

                Expect.sequenceEqual (s.Layers |> List.map snd |> flatOf) expected "|θ|^3"
                Scores.dispose s

                for text, problem in
                    [
                        "theta_pow(P=0)", "the power of theta_pow must be a positive number, got 0"
                        "theta_pow(T=2)", "theta_pow takes only the power P, e.g. theta_pow(P=3)"
                        "theta_pow(P=2, P=3)", "theta_pow is given the power P twice"
                        "theta2(P=2)", "theta2 takes no parameters"
                    ] do
                    match Criteria.parseWith definitions text with
                    | Ok c -> failwith $"parsed '%s{text}' as %s{c.Name}"
                    | Error e -> Expect.stringContains e problem text
            testCase "only the definitions given are known, each name once"
            <| fun () ->
                match Formula.parse "theta2" with
                | Ok _ -> failwith "the built-ins know theta2"
                | Error e ->
                    Expect.stringContains e "unknown statistic or function 'theta2' (did you mean 'theta'?)" "e"

                let twice = { theta2 with Name = "theta" }

                Expect.throwsC (fun () -> Formula.parseWith (twice :: Statistics.builtIns) "theta" |> ignore) (fun e ->
                    Expect.stringContains e.Message "the statistic 'theta' is defined twice" "message")

                // Help lists what the parser was given.
                match Formula.parseWith definitions "theta3" with
                | Ok _ -> failwith "parsed theta3"
                | Error e -> Expect.stringContains e "theta2, theta_pow(P=2), theta, grad(T=1)" "help"
            testCase "the built-ins keep their canonical names and descriptions"
            <| fun () ->
                Expect.equal
                    (Statistics.described |> List.map fst)
                    [
                        "theta"
                        "grad(T=1)"
                        "hg(T=1)"
                        "fisher"
                        "true_fisher"
                        "hdiag(T=1)"
                        "synflow"
                        "random"
                    ]
                    "described"

                Expect.equal
                    ([
                        Statistic.Theta
                        Statistic.Grad 200.0
                        Statistic.HessianGradient 200.0
                        Statistic.Fisher
                        Statistic.TrueFisher
                        Statistic.HessianDiagonal 200.0
                        Statistic.SynapticSaliency
                        Statistic.Random
                     ]
                     |> List.map (fun s -> s.Name))
                    [
                        "theta"
                        "grad(T=200)"
                        "hg(T=200)"
                        "fisher"
                        "true_fisher"
                        "hdiag(T=200)"
                        "synflow"
                        "random"
                    ]
                    "names"
        ]
