/// Properties of the criterion algebra: formulas over statistics, their canonical text, the
/// parser's errors, and statistics shared between criteria.
module Pai.Tests.AlgebraTests

open System
open Xunit
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
        let m = Selection.select Scope.Global density false None s

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

[<Fact>]
let ``the canonical text parses back to the same formula`` () =
    check 200 genExpr (fun e ->
        match Formula.parse (Formula.render e) with
        | Ok back -> Assert.Equal(Formula.render e, Formula.render back)
        | Error message -> failwith message)

[<Fact>]
let ``rank, positive scaling and the canonical text keep the mask; neg reverses the order`` () =
    let model, batches = setup ()
    use _ = model
    let ctx = context model batches 9UL
    let density = 0.3

    check 25 genExpr (fun e ->
        let c = criterionOf e
        let mask = maskOf ctx density c
        Assert.Equal<bool[]>(mask, maskOf ctx density (criterionOf (rank e)))
        // Powers of two scale exactly, so no two scores can become equal.
        Assert.Equal<bool[]>(mask, maskOf ctx density (criterionOf (4.0 * e)))
        Assert.Equal<bool[]>(mask, maskOf ctx density (criterionOf (e * 0.125)))

        Assert.Equal<bool[]>(
            mask,
            maskOf ctx density (Criteria.ofFormula (Result.toOption (Formula.parse (Formula.render e))).Value)
        )
        // neg: every score negated, so the kept set is the lowest-scoring one.
        let s = scoresOf ctx c
        Assert.Equal<float[]>(s |> Array.map (fun x -> -x), scoresOf ctx (criterionOf (-e)))
        // abs is idempotent; sums commute.
        Assert.Equal<float[]>(scoresOf ctx (criterionOf (abs e)), scoresOf ctx (criterionOf (abs (abs e))))
        Assert.Equal<float[]>(scoresOf ctx (criterionOf (e + theta)), scoresOf ctx (criterionOf (theta + e))))

[<Fact>]
let ``a user formula equal to a built-in gives the built-in's scores`` () =
    let model, batches = setup ()
    use _ = model
    let ctx = context model batches 4UL

    for b in Registry.builtIns |> List.filter (fun b -> b.Name <> "synflow") do
        let builtIn = Registry.instantiate Temperatures.Default b
        let text = Registry.formulaText b

        match Registry.resolve Temperatures.Default text with
        | Ok user ->
            Assert.Equal(text, user.Name)
            Assert.Equal<float[]>(scoresOf ctx builtIn, scoresOf ctx user)
        | Error e -> failwith e

[<Fact>]
let ``every built-in formula reads as the paper's, with its temperatures`` () =
    let text name =
        Registry.formulaText (Registry.builtIns |> List.find (fun b -> b.Name = name))

    Assert.Equal("abs(theta * grad)", text "snip")
    Assert.Equal("theta * hg(T=200)", text "grasp")
    Assert.Equal("0.5 * theta^2 * fisher", text "fisher_obd")
    Assert.Equal("abs(theta * grad + 0.5 * theta^2 * fisher)", text "fts")
    // hts: both terms from the same loss L(f/T), as the second-order paper's code.
    Assert.Equal("abs(theta * grad(T=200) + 0.5 * theta^2 * hdiag(T=200))", text "hts")

    let hts =
        Registry.instantiate
            { Grasp = 1.0; Hutchinson = 50.0 }
            (Registry.builtIns |> List.find (fun b -> b.Name = "hts"))

    Assert.Equal("abs(theta * grad(T=50) + 0.5 * theta^2 * hdiag(T=50))", Formula.render hts.Formula)

[<Fact>]
let ``criteria scored on one context compute each statistic once`` () =
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
        Assert.Equal<string list>([ "theta"; "hdiag(T=200)"; "grad(T=200)" ], cache.Computed)
        // One Hessian-diagonal estimate: 3 probes per batch, one block, six batches.
        for s in scores do
            Assert.Equal(18, (List.exactlyOne s.Diagnostics).Hvps)
    finally
        List.iter Scores.dispose scores

[<Fact>]
let ``statistics carry their temperatures in their names`` () =
    Assert.Equal("grad", (Statistic.Grad 1.0).Name)
    Assert.Equal("grad(T=200)", (Statistic.Grad 200.0).Name)
    Assert.Equal("hdiag(T=0.5)", (Statistic.HessianDiagonal 0.5).Name)
    Assert.NotEqual(Statistic.Grad 1.0, Statistic.Grad 200.0)
    Assert.Equal(Statistic.Grad 200.0, Statistic.Grad 200.0)

[<Theory>]
[<InlineData("abs(theta * grod)", 12, "unknown statistic or function 'grod'")>]
[<InlineData("theta * ", 8, "expected a statistic")>]
[<InlineData("theta grad", 6, "unexpected 'grad'")>]
[<InlineData("grad(T=0)", 7, "must be a positive number")>]
[<InlineData("grad(T=-2)", 8, "must be a positive number")>]
[<InlineData("theta ^ fisher", 8, "expected a number exponent")>]
[<InlineData("abs(theta", 9, "expected ')'")>]
[<InlineData("theta $ 2", 6, "unexpected character '$'")>]
[<InlineData("2 * 3", 0, "reads no statistic")>]
[<InlineData("", 0, "the formula is empty")>]
[<InlineData("theta + layernorm(2)", 0, "'layernorm(2)' normalizes or ranks a constant")>]
let ``a bad formula names the problem and points at it`` (text: string, column: int, problem: string) =
    match Formula.parse text with
    | Ok e -> failwith $"parsed '%s{text}' as %s{Formula.render e}"
    | Error message ->
        let lines = message.Split('\n')
        Assert.Contains(problem, lines.[0])
        Assert.Equal("  " + text, lines.[1])
        Assert.Equal(column + 2, lines.[2].IndexOf '^')
        Assert.Contains("statistics: theta", message)

[<Fact>]
let ``an unknown name lists the criteria and formulas`` () =
    match Registry.resolve Temperatures.Default "snipp" with
    | Ok _ -> failwith "resolved an unknown name"
    | Error message ->
        Assert.Contains("unknown criterion 'snipp'", message)
        Assert.Contains("snip", message)
        Assert.Contains("formula", message)
