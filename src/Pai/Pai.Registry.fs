/// The one registry of criteria: every built-in is one line, its formula as the paper's code
/// computes it (docs/architecture.md §5). CLI help and validation, reports and charts (order, colours),
/// sweeps and pipelines read it; no criterion name is written anywhere else in src/.
namespace Pai

open System
open Pai.Formula

/// A built-in criterion: its formula (which may read the run's temperatures), default rounds,
/// the colour reports draw it in, and where it comes from.
[<NoComparison; NoEquality>]
type BuiltInCriterion =
    {
        Name: string
        Formula: Temperatures -> Expr
        DefaultRounds: int
        Colour: string
        Source: string
    }

module Registry =
    let private entry name colour source formula =
        {
            Name = name
            Formula = formula
            DefaultRounds = 1
            Colour = colour
            Source = source
        }

    /// The built-in criteria, in the order reports list them.
    let builtIns: BuiltInCriterion list =
        [
            entry "random" "#7f7f7f" "baseline" (fun _ -> random)
            entry "magnitude" "#8c564b" "baseline" (fun _ -> abs theta)
            entry "grad_norm" "#bcbd22" "baseline" (fun _ -> abs grad)
            entry "snip" "#1f77b4" "Lee et al. 2019" (fun _ -> abs (theta * grad))
            entry "grasp" "#ff7f0e" "Wang et al. 2020" (fun t -> theta * hg t.Grasp)
            { entry "synflow" "#2ca02c" "Tanaka et al. 2020" (fun _ -> synflow) with
                DefaultRounds = 100
            }
            entry "fisher_diag" "#aec7e8" "second-order PaI" (fun _ -> fisher)
            entry "fisher_obd" "#17becf" "second-order PaI" (fun _ -> 0.5 * theta ** 2.0 * fisher)
            entry "fts" "#9edae5" "second-order PaI" (fun _ -> abs (theta * grad + 0.5 * theta ** 2.0 * fisher))
            entry "gn_diag" "#c5b0d5" "true Fisher" (fun _ -> trueFisher)
            entry "hutch_diag" "#ff9896" "second-order PaI" (fun t -> hdiag t.Hutchinson)
            entry "hutch_obd" "#d62728" "second-order PaI" (fun t -> 0.5 * theta ** 2.0 * hdiag t.Hutchinson)
            entry "hts" "#9467bd" "second-order PaI" (fun t ->
                abs (theta * gradAt t.Hutchinson + 0.5 * theta ** 2.0 * hdiag t.Hutchinson))
        ]

    /// The learned criterion (AutoS), which needs a predictor file.
    let learnedName = "autos"

    /// Colour of the learned criterion and of user formulas in charts.
    let learnedColour = "#e377c2"

    /// The criteria of the main job (`pai sweep` with no options).
    let mainJob =
        [
            "random"
            "magnitude"
            "snip"
            "grasp"
            "synflow"
            "fisher_obd"
            "hutch_obd"
            "hts"
        ]

    /// The criteria iterative pruning (IRP, IMP) may rank trained weights with.
    let trainedRankings = [ "magnitude"; "snip" ]

    /// Every criterion name, the learned one last.
    let names = (builtIns |> List.map (fun c -> c.Name)) @ [ learnedName ]

    /// Position of a criterion in report order (user formulas after every name).
    let order (name: string) =
        match names |> List.tryFindIndex ((=) name) with
        | Some i -> i
        | None -> names.Length

    /// The colour a chart draws the criterion in.
    let colour (name: string) =
        match builtIns |> List.tryFind (fun c -> c.Name = name) with
        | Some c -> c.Colour
        | None -> learnedColour

    /// The built-in instantiated at the run's temperatures.
    let instantiate (temperatures: Temperatures) (b: BuiltInCriterion) : Criterion =
        {
            Name = b.Name
            Formula = b.Formula temperatures
            DefaultRounds = b.DefaultRounds
        }

    /// The formula text of a built-in at the default temperatures (what `pai list criteria` prints).
    let formulaText (b: BuiltInCriterion) =
        Formula.render (b.Formula Temperatures.Default)

    /// A built-in by name or, when the text is no name, a user formula. Errors name the valid
    /// criteria and, for formulas, point at the offending token.
    let resolve (temperatures: Temperatures) (text: string) : Result<Criterion, string> =
        let name = text.Trim()

        match builtIns |> List.tryFind (fun c -> c.Name = name.ToLowerInvariant()) with
        | Some b -> Ok(instantiate temperatures b)
        | None when name.ToLowerInvariant() = learnedName ->
            Error
                "the criterion 'autos' is learned: it needs a predictor file (train one with `./pai autos fit`, then pass --predictor FILE)"
        | None when
            name.Length > 0
            && name |> Seq.forall (fun ch -> Char.IsLetterOrDigit ch || ch = '_')
            && (Formula.parse name |> Result.isError)
            ->
            // A bare word may be a mistyped criterion or a mistyped statistic.
            let hint = Suggestion.didYouMean (names @ Formula.statisticNames) name

            Error
                $"""unknown criterion '%s{name}'%s{hint}; valid criteria: %s{String.Join(", ", names)}; or write a formula over statistics, e.g. "abs(theta * grad)" (see `./pai list criteria`)"""
        | None -> Criteria.parse name

    /// The built-in called name at the default temperatures (throws on unknown names).
    let find (name: string) : Criterion =
        match builtIns |> List.tryFind (fun c -> c.Name = name) with
        | Some b -> instantiate Temperatures.Default b
        | None ->
            let hint = Suggestion.didYouMean names name
            invalidArg "name" $"""unknown built-in criterion '%s{name}'%s{hint}; valid: %s{String.Join(", ", names)}"""
