/// Properties of the criterion algebra: formulas over statistics, their canonical text, the
/// parser's errors, and statistics shared between criteria.
module Pai.Tests.AlgebraTests

open Expecto

open System
open FsCheck
open FsCheck.FSharp
open Pai
open Pai.Formula
open Pai.Torch
open Pai.Tests.Support
open Pai.Tests.TinyNet

// A small network and data where every statistic is cheap (float64: no accidental ties).
let private setup () =
    let model = new TinyMlp([ 6; 5; 3 ], 3UL, false, DType.Float64)
    let batches = singles (batch 5UL 6 6 3 DType.Float64)
    model, batches

let private scoresOf (ctx: ScoringContext) (c: Criterion) : float[] =
    use _scope = new DisposeScope()
    let s = Criteria.score ctx c

    try
        s.Layers |> List.collect (fun (_, t) -> List.ofArray (values t)) |> Array.ofList
    finally
        Scores.dispose s

let private maskOf (ctx: ScoringContext) (density: float) (c: Criterion) : bool[] =
    use _scope = new DisposeScope()
    let s = Criteria.score ctx c

    try
        let m = Selection.select Ranking.Global density false None s

        try
            m.Layers
            |> List.collect (fun (_, t) -> List.ofArray (t.Flatten().ToArray<bool>()))
            |> Array.ofList
        finally
            Mask.dispose m
    finally
        Scores.dispose s

// Formulas over the cheap statistics, with constants, up to a small depth.
let private genExpr: Gen<Expr> =
    let leaves =
        Gen.oneof
            [
                Gen.elements [ theta; grad; gradAt 3.0; fisher; random ]
                Gen.elements [ 0.5; 2.0; 3.0 ] |> Gen.map Expr.Constant
            ]

    let rec go depth =
        if depth = 0 then
            leaves
        else
            let sub = go (depth - 1)

            Gen.oneof
                [
                    leaves
                    Gen.map2 (+) sub sub
                    Gen.map2 (-) sub sub
                    Gen.map2 (*) sub sub
                    Gen.map abs sub
                    Gen.map (fun e -> -e) sub
                    Gen.map (fun e -> e ** 2.0) sub
                    Gen.map layernorm sub
                    Gen.map rank sub
                ]

    go 3
    |> Gen.filter (fun e -> not (Formula.statistics e).IsEmpty && (Formula.constantNormalization e).IsNone)

let private criterionOf e = Criteria.ofFormula e

/// Bad formulas, the column the caret must point at, and the problem the message must name.
let private badFormulas =
    [
        "abs(theta * grod)", 12, "unknown statistic or function 'grod'"
        "theta * ", 8, "expected a statistic"
        "theta grad", 6, "unexpected 'grad'"
        "grad(T=0)", 7, "must be a positive number"
        "grad(T=-2)", 8, "must be a positive number"
        "theta ^ fisher", 8, "expected a number exponent"
        "abs(theta", 9, "expected ')'"
        "theta $ 2", 6, "unexpected character '$'"
        "2 * 3", 0, "reads no statistic"
        "", 0, "the formula is empty"
        "theta + layernorm(2)", 0, "'layernorm(2)' normalizes or ranks a constant"
        // The number as typed, not as parsed (1e999 parses to infinity).
        "abs(theta)^1e999", 11, "'1e999' is too large: numbers must be finite"
        "grad(T=1e999)", 7, "'1e999' is too large"
        "grad(T=1, T=2)", 10, "grad is given the temperature T twice"
        "theta * fishr", 8, "unknown statistic or function 'fishr' (did you mean 'fisher'?)"
        "abss(theta)", 0, "unknown statistic or function 'abss' (did you mean 'abs'?)"
    ]

let private repeat (n: int) (s: string) = String.replicate n s

/// Formulas nested `levels` deep in each way that nests, with the formula each equals on the
/// weights (a statistic, so scoring checks evaluation end to end).
let private nestedShapes (levels: int) =
    [
        "parentheses", repeat levels "(" + "theta" + repeat levels ")", theta
        "functions", repeat levels "abs(" + "theta" + repeat levels ")", abs theta
        "unary minus", repeat levels "-" + "theta", (if levels % 2 = 0 then theta else -theta)
        // Each ^ nests the expression; levels − 1 parentheses around it.
        "powers", repeat (levels - 1) "(" + "theta^1" + repeat (levels - 1) ")^1", theta
        "an operator chain", "theta" + repeat levels " - 0", theta
    ]

/// The first line of the error parse gives for text (failing if it parses).
let private refusal (text: string) =
    match Formula.parse text with
    | Ok e -> failwith $"parsed a formula of %d{text.Length} characters, %d{Formula.depth e} deep"
    | Error message -> message.Split('\n').[0]

/// The checks of one bad formula.
let private badFormula (text: string, column: int, problem: string) =
    match Formula.parse text with
    | Ok e -> failwith $"parsed '%s{text}' as %s{Formula.render e}"
    | Error message ->
        let lines = message.Split('\n')
        Expect.stringContains lines.[0] problem "lines.[0]"
        Expect.equal (lines.[1]) ("  " + text) "lines.[1]"
        Expect.equal (lines.[2].IndexOf '^') (column + 2) "lines.[2].IndexOf '^'"
        Expect.stringContains message "statistics: theta" "message"

[<Tests>]
let tests =
    testSequenced
    <| testList
        "AlgebraTests"
        [
            testList
                "a bad formula names the problem and points at it"
                [
                    for case in badFormulas do
                        let text, _, _ = case
                        testCase (sprintf "%A" text) (fun () -> badFormula case)
                ]
            testCase "the deepest formula allowed parses, renders and scores; one level deeper is refused"
            <| fun () ->
                let model, batches = setup ()
                use _ = model
                let ctx = context model batches 5UL

                for shape, text, equal in nestedShapes Formula.MaxDepth do
                    // On a thread of its own: the default stack of a secondary thread, smaller
                    // than the main thread's.
                    onOtherThread (fun () ->
                        match Formula.parse text with
                        | Error message -> failwith $"%s{shape}: %s{message}"
                        | Ok e ->
                            let rendered = Formula.render e

                            match Formula.parse rendered with
                            | Ok back -> Expect.equal (Formula.render back) rendered $"%s{shape}: render parses back"
                            | Error message -> failwith $"%s{shape}: %s{message}"

                            Expect.equal (Formula.statistics e) [ Statistic.Theta ] $"%s{shape}: statistics"
                            Expect.isLessThanOrEqual (Formula.depth e) Formula.MaxDepth $"%s{shape}: depth"

                            Expect.equal
                                (scoresOf ctx (criterionOf e))
                                (scoresOf ctx (criterionOf equal))
                                $"%s{shape}: scores")

                for shape, text, _ in nestedShapes (Formula.MaxDepth + 1) do
                    let line = refusal text
                    Expect.stringContains line "levels deep; at most 256 are allowed" shape
                    // The expression's depth is known exactly; the parser's nesting as "more than".
                    let found =
                        if shape = "an operator chain" || shape = "powers" then
                            "257"
                        else
                            "more than 256"

                    Expect.stringContains line $"the formula nests %s{found} levels deep" shape
            testCase "formulas nested far too deep or too long are refused with the limit, not a crash"
            <| fun () ->
                let tooLong n =
                    $"the formula is %d{n} characters long; at most %d{Formula.MaxLength} are allowed"

                for text in
                    [
                        repeat 10000 "(" + "theta" + repeat 10000 ")"
                        repeat 10000 "abs(" + "theta" + repeat 10000 ")"
                        repeat 10000 "(" + "theta"
                        repeat 60000 "("
                        repeat 10000 "-" + "theta"
                        "theta" + repeat 5000 "+1"
                    ] do
                    Expect.equal (refusal text) ("bad criterion formula: " + tooLong text.Length) "refusal text"

                // Within the length, unclosed parentheses meet the depth bound before the missing ')'.
                Expect.stringContains (refusal (repeat 5000 "(" + "theta")) "nests more than 256 levels deep" "unclosed"
                // Long input is shown as the stretch around the caret, not whole.
                match Formula.parse (repeat 5000 "(" + "theta") with
                | Error message -> Expect.isLessThan (message.Split('\n').[1].Length) 110 "the echoed formula"
                | Ok _ -> failwith "parsed"
                // The longest formula allowed parses.
                let longest = "theta" + String(' ', Formula.MaxLength - 5)
                Expect.isOk (Formula.parse longest) "a formula of MaxLength characters"
                Expect.stringContains (refusal (longest + " ")) (tooLong (Formula.MaxLength + 1)) "one character more"
            testCase "a mistyped name gets the nearest names as a suggestion"
            <| fun () ->
                Expect.equal (Suggestion.distance "snpi" "snip") 1 "a swap is one edit"
                Expect.equal (Suggestion.distance "grod" "grad") 1 "a substitution is one edit"
                Expect.equal (Suggestion.distance "hts" "hutch_obd") 7 "distance"
                Expect.equal (Suggestion.didYouMean Registry.names "snpi") " (did you mean 'snip'?)" "snpi"
                Expect.equal (Suggestion.didYouMean Registry.names "SNPI") " (did you mean 'snip'?)" "case"

                Expect.equal
                    (Suggestion.didYouMean [ "grad"; "grid" ] "grud")
                    " (did you mean 'grad' or 'grid'?)"
                    "ties"

                Expect.equal (Suggestion.didYouMean Registry.names "bogus") "" "nothing near"

                let error text =
                    match Registry.resolve Temperatures.Default text with
                    | Ok _ -> failwith $"resolved '%s{text}'"
                    | Error message -> message

                Expect.stringContains
                    (error "snpi")
                    "unknown criterion 'snpi' (did you mean 'snip'?); valid criteria"
                    "snpi"
                // A bare word may be a mistyped statistic.
                Expect.stringContains (error "fishr") "unknown criterion 'fishr' (did you mean 'fisher'?)" "fishr"
                Expect.stringContains (error "hutch_ob") "(did you mean 'hutch_obd'?)" "hutch_ob"

                match Features.parse "theta,gard" with
                | Ok _ -> failwith "parsed an unknown feature"
                | Error message -> Expect.stringContains message "unknown feature 'gard' (did you mean 'grad'?)" "gard"

                let e = throws<ArgumentException>(fun () -> Registry.find "magnitud" |> ignore)
                Expect.stringContains e.Message "(did you mean 'magnitude'?)" "find"
            (property "the canonical text parses back to the same formula" 200 genExpr (fun e ->
                match Formula.parse (Formula.render e) with
                | Ok back -> Expect.equal (Formula.render back) (Formula.render e) "Formula.render back"
                | Error message -> failwith message))
            testCase "rank, positive scaling and the canonical text keep the mask; neg reverses the order"
            <| fun () ->
                let model, batches = setup ()
                use _ = model
                let ctx = context model batches 9UL
                let density = 0.3

                check 25 genExpr (fun e ->
                    let c = criterionOf e
                    let mask = maskOf ctx density c

                    Expect.equal
                        (maskOf ctx density (criterionOf (rank e)))
                        mask
                        "maskOf ctx density (criterionOf (rank e))"
                    // Powers of two scale exactly, so no two scores can become equal.
                    Expect.equal
                        (maskOf ctx density (criterionOf (4.0 * e)))
                        mask
                        "maskOf ctx density (criterionOf (4.0 * e))"

                    Expect.equal
                        (maskOf ctx density (criterionOf (e * 0.125)))
                        mask
                        "maskOf ctx density (criterionOf (e * 0.125))"

                    Expect.equal
                        (maskOf
                            ctx
                            density
                            (Criteria.ofFormula (Result.toOption (Formula.parse (Formula.render e))).Value))
                        mask
                        "maskOf ctx density (Criteria.ofFormula (Result.toOption (Formula.pa..."
                    // neg: every score negated, so the kept set is the lowest-scoring one.
                    let s = scoresOf ctx c

                    Expect.equal
                        (scoresOf ctx (criterionOf (-e)))
                        (s |> Array.map (fun x -> -x))
                        "scoresOf ctx (criterionOf (-e))"
                    // abs is idempotent; sums commute.
                    Expect.equal
                        (scoresOf ctx (criterionOf (abs (abs e))))
                        (scoresOf ctx (criterionOf (abs e)))
                        "scoresOf ctx (criterionOf (abs (abs e)))"

                    Expect.equal
                        (scoresOf ctx (criterionOf (theta + e)))
                        (scoresOf ctx (criterionOf (e + theta)))
                        "scoresOf ctx (criterionOf (theta + e))")
            testCase "a user formula equal to a built-in gives the built-in's scores"
            <| fun () ->
                let model, batches = setup ()
                use _ = model
                let ctx = context model batches 4UL

                for b in Registry.builtIns |> List.filter (fun b -> b.Name <> "synflow") do
                    let builtIn = Registry.instantiate Temperatures.Default b
                    let text = Registry.formulaText b

                    match Registry.resolve Temperatures.Default text with
                    | Ok user ->
                        Expect.equal user.Name text "user.Name"
                        Expect.equal (scoresOf ctx user) (scoresOf ctx builtIn) "scoresOf ctx user"
                    | Error e -> failwith e
            testCase "every built-in formula reads as the paper's, with its temperatures"
            <| fun () ->
                let text name =
                    Registry.formulaText (Registry.builtIns |> List.find (fun b -> b.Name = name))

                Expect.equal (text "snip") "abs(theta * grad)" "text \"snip\""
                Expect.equal (text "grasp") "theta * hg(T=200)" "text \"grasp\""
                Expect.equal (text "fisher_obd") "0.5 * theta^2 * fisher" "text \"fisher_obd\""
                Expect.equal (text "fts") "abs(theta * grad + 0.5 * theta^2 * fisher)" "text \"fts\""
                // hts: both terms from the same loss L(f/T), as the second-order paper's code.
                Expect.equal (text "hts") "abs(theta * grad(T=200) + 0.5 * theta^2 * hdiag(T=200))" "text \"hts\""

                let hts =
                    Registry.instantiate
                        { Grasp = 1.0; Hutchinson = 50.0 }
                        (Registry.builtIns |> List.find (fun b -> b.Name = "hts"))

                Expect.equal
                    (Formula.render hts.Formula)
                    "abs(theta * grad(T=50) + 0.5 * theta^2 * hdiag(T=50))"
                    "Formula.render hts.Formula"
            testCase "criteria scored on one context compute each statistic once"
            <| fun () ->
                let model, batches = setup ()
                use _ = model

                let ctx =
                    { context model batches 2UL with
                        Curvature =
                            { CurvatureOptions.Default with
                                Probes = 3
                            }
                    }

                use cache = new StatisticCache(ctx)
                let obd = Registry.find "hutch_obd"
                let hts = Registry.find "hts"
                let diag = Registry.find "hutch_diag"
                let scores = [ obd; hts; diag ] |> List.map (Criteria.scoreWith cache)

                try
                    Expect.equal cache.Computed ([ "theta"; "hdiag(T=200)"; "grad(T=200)" ]) "cache.Computed"
                    // One Hessian-diagonal estimate: 3 probes per batch, one block, six batches.
                    for s in scores do
                        Expect.equal ((List.exactlyOne s.Diagnostics).Hvps) 18 "(List.exactlyOne s.Diagnostics).Hvps"
                finally
                    List.iter Scores.dispose scores
            testCase "statistics carry their temperatures in their names"
            <| fun () ->
                Expect.equal ((Statistic.Grad 1.0).Name) "grad" "(Statistic.Grad 1.0).Name"
                Expect.equal ((Statistic.Grad 200.0).Name) "grad(T=200)" "(Statistic.Grad 200.0).Name"

                Expect.equal
                    ((Statistic.HessianDiagonal 0.5).Name)
                    "hdiag(T=0.5)"
                    "(Statistic.HessianDiagonal 0.5).Name"

                Expect.notEqual (Statistic.Grad 200.0) (Statistic.Grad 1.0) "Statistic.Grad 200.0"
                Expect.equal (Statistic.Grad 200.0) (Statistic.Grad 200.0) "Statistic.Grad 200.0"
            testCase "an unknown name lists the criteria and formulas"
            <| fun () ->
                match Registry.resolve Temperatures.Default "snipp" with
                | Ok _ -> failwith "resolved an unknown name"
                | Error message ->
                    Expect.stringContains message "unknown criterion 'snipp'" "message"
                    Expect.stringContains message "snip" "message"
                    Expect.stringContains message "formula" "message"
        ]
