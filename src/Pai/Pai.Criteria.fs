/// Criteria as algebra over statistics: an expression type with F# operators, its canonical
/// text, a parser for user formulas, and evaluation on a scoring context. See docs/architecture.md §1.
namespace Pai

open System
open System.Globalization
open Pai.Torch

/// "Did you mean" hints for mistyped names: criteria, statistics, functions, features.
module Suggestion =
    /// Edit distance: insertions, deletions, substitutions and swaps of adjacent letters
    /// ("snpi" is one swap from "snip").
    let distance (a: string) (b: string) =
        let d = Array2D.zeroCreate (a.Length + 1) (b.Length + 1)

        for i in 0 .. a.Length do
            d.[i, 0] <- i

        for j in 0 .. b.Length do
            d.[0, j] <- j

        for i in 1 .. a.Length do
            for j in 1 .. b.Length do
                let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
                let best = min (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1)) (d.[i - 1, j - 1] + cost)

                d.[i, j] <-
                    if i > 1 && j > 1 && a.[i - 1] = b.[j - 2] && a.[i - 2] = b.[j - 1] then
                        min best (d.[i - 2, j - 2] + 1)
                    else
                        best

        d.[a.Length, b.Length]

    /// " (did you mean 'snip'?)" naming the candidates nearest to what was typed (ignoring case)
    /// when one is within an edit per three letters (at least one edit), else "": written
    /// right after the unknown name.
    let didYouMean (candidates: string seq) (typed: string) : string =
        let near =
            candidates
            |> Seq.distinct
            |> Seq.map (fun c -> c, distance (typed.ToLowerInvariant()) (c.ToLowerInvariant()))
            |> Seq.filter (fun (_, d) -> d > 0 && d <= max 1 (typed.Length / 3))
            |> List.ofSeq

        match near with
        | [] -> ""
        | _ ->
            let nearest = near |> List.minBy snd |> snd

            let names =
                near
                |> List.filter (fun (_, d) -> d = nearest)
                |> List.map (fun (c, _) -> $"'%s{c}'")

            $""" (did you mean %s{String.Join(" or ", names)}?)"""

/// A criterion's formula: an expression over per-weight statistics (higher score = keep). In F#
/// the operators + − * / ** (a float exponent), unary −, abs, and the functions of the Formula
/// module build it; users write the same as text (Formula.parse).
[<RequireQualifiedAccess; NoComparison>]
type Expr =
    | Statistic of Statistic
    | Constant of float
    | Sum of Expr * Expr
    | Difference of Expr * Expr
    | Product of Expr * Expr
    | Quotient of Expr * Expr
    | Power of Expr * float
    | Absolute of Expr
    | Negation of Expr
    /// Each layer's scores divided by that layer's Σ|s| (an all-zero layer stays zero).
    | LayerNormalized of Expr
    /// All scores divided by the global Σ|s| (SNIP's normalization).
    | GlobalNormalized of Expr
    /// Global rank in (0, 1]: the best weight 1; among equal scores the earlier weight ranks
    /// higher, so rank keeps the order top-k selection uses.
    | Rank of Expr

    static member (+)(a: Expr, b: Expr) = Expr.Sum(a, b)
    static member (+)(a: float, b: Expr) = Expr.Sum(Expr.Constant a, b)
    static member (+)(a: Expr, b: float) = Expr.Sum(a, Expr.Constant b)
    static member (-)(a: Expr, b: Expr) = Expr.Difference(a, b)
    static member (-)(a: float, b: Expr) = Expr.Difference(Expr.Constant a, b)
    static member (-)(a: Expr, b: float) = Expr.Difference(a, Expr.Constant b)
    static member (*)(a: Expr, b: Expr) = Expr.Product(a, b)
    static member (*)(a: float, b: Expr) = Expr.Product(Expr.Constant a, b)
    static member (*)(a: Expr, b: float) = Expr.Product(a, Expr.Constant b)
    static member (/)(a: Expr, b: Expr) = Expr.Quotient(a, b)
    static member (/)(a: float, b: Expr) = Expr.Quotient(Expr.Constant a, b)
    static member (/)(a: Expr, b: float) = Expr.Quotient(a, Expr.Constant b)
    static member (~-)(a: Expr) = Expr.Negation a
    static member Abs(a: Expr) = Expr.Absolute a
    static member Pow(a: Expr, k: float) = Expr.Power(a, k)

/// A named criterion: its formula and how many pruning rounds it takes by default.
[<NoComparison; NoEquality>]
type Criterion =
    {
        /// A built-in's name (e.g. "snip"), or a user formula's canonical text.
        Name: string
        Formula: Expr
        /// Default number of pruning rounds (SynFlow: 100; everything else: 1).
        DefaultRounds: int
    }

/// The statistics and functions formulas are written with, as F# values: e.g.
/// `abs (theta * grad)` or `abs (theta * gradAt 200.0 + 0.5 * theta ** 2.0 * hdiag 200.0)`.
module Formula =
    let private stat s = Expr.Statistic s
    /// θ.
    let theta = stat Statistic.Theta
    /// g at T = 1.
    let grad = stat (Statistic.Grad 1.0)
    /// g at temperature T.
    let gradAt (t: float) = stat (Statistic.Grad t)
    /// H·g at temperature T.
    let hg (t: float) = stat (Statistic.HessianGradient t)
    /// Empirical Fisher diagonal.
    let fisher = stat Statistic.Fisher
    /// True-Fisher (Gauss–Newton) diagonal.
    let trueFisher = stat Statistic.TrueFisher
    /// Hessian diagonal at temperature T.
    let hdiag (t: float) = stat (Statistic.HessianDiagonal t)
    /// SynFlow's synaptic saliency.
    let synflow = stat Statistic.SynapticSaliency
    /// Seeded uniform noise.
    let random = stat Statistic.Random
    /// Per-layer normalization.
    let layernorm e = Expr.LayerNormalized e
    /// Global normalization.
    let globalnorm e = Expr.GlobalNormalized e
    /// Global rank in (0, 1].
    let rank e = Expr.Rank e

    /// The direct sub-expressions of an expression (the one place that knows each case's arity).
    let children (e: Expr) : Expr list =
        match e with
        | Expr.Statistic _
        | Expr.Constant _ -> []
        | Expr.Sum(a, b)
        | Expr.Difference(a, b)
        | Expr.Product(a, b)
        | Expr.Quotient(a, b) -> [ a; b ]
        | Expr.Power(a, _)
        | Expr.Absolute a
        | Expr.Negation a
        | Expr.LayerNormalized a
        | Expr.GlobalNormalized a
        | Expr.Rank a -> [ a ]

    /// The nesting depth: the most operators and functions on one path from the top to a
    /// statistic or number (theta: 0, abs(theta * grad): 2). Measured with an explicit stack, so
    /// an expression of any depth can be measured before a recursive walk meets it.
    let depth (e: Expr) : int =
        let pending = Collections.Generic.Stack<Expr * int>()
        pending.Push(e, 0)
        let mutable deepest = 0

        while pending.Count > 0 do
            let e, d = pending.Pop()
            deepest <- max deepest d

            for c in children e do
                pending.Push(c, d + 1)

        deepest

    /// The distinct statistics a formula reads, in order of first appearance.
    let statistics (e: Expr) : Statistic list =
        let rec go e =
            match e with
            | Expr.Statistic s -> [ s ]
            | _ -> children e |> List.collect go

        go e |> List.distinctBy (fun s -> s.Name)

    let private number (k: float) =
        k.ToString("R", CultureInfo.InvariantCulture)

    /// The canonical text: minimal parentheses, single spaces around binary operators; parse
    /// reads it back to the same expression.
    let render (e: Expr) =
        // Precedence: 1 + −, 2 * /, 3 unary −, 4 ^, 5 atoms. Right operands bind one tighter
        // (a − (b − c) keeps its parentheses).
        let rec go (e: Expr) : string * int =
            let binary a op b prec =
                $"%s{wrap prec a} %s{op} %s{wrap (prec + 1) b}", prec

            match e with
            | Expr.Statistic s -> s.Name, 5
            | Expr.Constant k when k < 0.0 -> $"-%s{number -k}", 3
            | Expr.Constant k -> number k, 5
            | Expr.Sum(a, b) -> binary a "+" b 1
            | Expr.Difference(a, b) -> binary a "-" b 1
            | Expr.Product(a, b) -> binary a "*" b 2
            | Expr.Quotient(a, b) -> binary a "/" b 2
            | Expr.Power(a, k) ->
                let exponent = if k < 0.0 then $"(-%s{number -k})" else number k
                $"%s{wrap 5 a}^%s{exponent}", 4
            | Expr.Negation a -> $"-%s{wrap 3 a}", 3
            | Expr.Absolute a -> $"abs(%s{fst (go a)})", 5
            | Expr.LayerNormalized a -> $"layernorm(%s{fst (go a)})", 5
            | Expr.GlobalNormalized a -> $"globalnorm(%s{fst (go a)})", 5
            | Expr.Rank a -> $"rank(%s{fst (go a)})", 5

        and wrap (needed: int) (e: Expr) =
            let text, prec = go e
            if prec < needed then $"(%s{text})" else text

        // A negated constant is the constant -k, as the parser reads "-k".
        let rec fold (e: Expr) =
            match e with
            | Expr.Negation a ->
                match fold a with
                | Expr.Constant k -> Expr.Constant -k
                | a -> Expr.Negation a
            | Expr.Statistic _
            | Expr.Constant _ -> e
            | Expr.Sum(a, b) -> Expr.Sum(fold a, fold b)
            | Expr.Difference(a, b) -> Expr.Difference(fold a, fold b)
            | Expr.Product(a, b) -> Expr.Product(fold a, fold b)
            | Expr.Quotient(a, b) -> Expr.Quotient(fold a, fold b)
            | Expr.Power(a, k) -> Expr.Power(fold a, k)
            | Expr.Absolute a -> Expr.Absolute(fold a)
            | Expr.LayerNormalized a -> Expr.LayerNormalized(fold a)
            | Expr.GlobalNormalized a -> Expr.GlobalNormalized(fold a)
            | Expr.Rank a -> Expr.Rank(fold a)

        fst (go (fold e))

    /// The first layernorm, globalnorm or rank whose argument reads no statistic (such a formula
    /// has no per-weight meaning), if any.
    let constantNormalization (e: Expr) : Expr option =
        let rec go e =
            match e with
            | Expr.LayerNormalized a
            | Expr.GlobalNormalized a
            | Expr.Rank a when statistics a |> List.isEmpty -> Some e
            | _ -> children e |> List.tryPick go

        go e

    let private functions: (string * (Expr -> Expr) * string) list =
        [
            "abs", Expr.Absolute, "absolute value"
            "neg", Expr.Negation, "negation (inverts the order; never 1/s)"
            "layernorm", Expr.LayerNormalized, "divide each layer by its Σ|s|"
            "globalnorm", Expr.GlobalNormalized, "divide by the global Σ|s|"
            "rank", Expr.Rank, "global rank in (0, 1]"
        ]

    /// The functions formulas may use, with what they do (for help and errors).
    let functionsDescribed = functions |> List.map (fun (n, _, d) -> n, d)

    /// The names of the built-in statistics a formula may read (temperatures are their parameters).
    let statisticNames = Statistics.builtIns |> List.map (fun d -> d.Name)

    /// The longest formula text parse accepts, in characters.
    [<Literal>]
    let MaxLength = 10000

    /// The deepest nesting parse accepts. Parentheses, functions, unary minus, ^ and each operator
    /// of a chain (a + b + c) add a level; the bound keeps the parser and every recursive walk
    /// over an expression (evaluation, the canonical text) far from the end of the stack.
    [<Literal>]
    let MaxDepth = 256

    // What a formula over these statistics may contain, for error messages.
    let private helpWith (definitions: StatisticDefinition list) =
        let stats = Statistics.describe definitions |> List.map fst |> String.concat ", "
        let fns = functions |> List.map (fun (n, _, _) -> n + "(…)") |> String.concat ", "

        $"statistics: %s{stats}; functions: %s{fns}; operators: + - * / ^ (a number exponent), unary -, numbers, parentheses; temperatures are written into the statistic, e.g. grad(T=200); at most %d{MaxDepth} levels of nesting and %d{MaxLength} characters"

    /// What a formula may contain, for error messages.
    let help () = helpWith Statistics.builtIns

    type private Token =
        /// The value and the text typed for it.
        | Number of float * string
        | Name of string
        | Symbol of char
        | End

    exception private ParseError of position: int * message: string

    let private tokenize (text: string) =
        let tokens = Collections.Generic.List<Token * int>()
        let mutable i = 0

        while i < text.Length do
            let c = text.[i]

            if Char.IsWhiteSpace c then
                i <- i + 1
            elif Char.IsDigit c || (c = '.' && i + 1 < text.Length && Char.IsDigit text.[i + 1]) then
                let start = i

                while i < text.Length
                      && (Char.IsDigit text.[i]
                          || text.[i] = '.'
                          || ((text.[i] = 'e' || text.[i] = 'E')
                              && i + 1 < text.Length
                              && (Char.IsDigit text.[i + 1] || text.[i + 1] = '-' || text.[i + 1] = '+'))
                          || ((text.[i] = '-' || text.[i] = '+') && (text.[i - 1] = 'e' || text.[i - 1] = 'E'))) do
                    i <- i + 1

                let typed = text.Substring(start, i - start)

                match Double.TryParse(typed, NumberStyles.Float, CultureInfo.InvariantCulture) with
                | true, v when Double.IsFinite v -> tokens.Add(Number(v, typed), start)
                | true, _ -> raise (ParseError(start, $"'%s{typed}' is too large: numbers must be finite"))
                | _ -> raise (ParseError(start, $"'%s{typed}' is not a number"))
            elif Char.IsLetter c || c = '_' then
                let start = i

                while i < text.Length && (Char.IsLetterOrDigit text.[i] || text.[i] = '_') do
                    i <- i + 1

                tokens.Add(Name(text.Substring(start, i - start).ToLowerInvariant()), start)
            elif "+-*/^()=,".Contains c then
                tokens.Add(Symbol c, i)
                i <- i + 1
            else
                raise (ParseError(i, $"unexpected character '%c{c}'"))

        tokens.Add(End, text.Length)
        tokens.ToArray()

    /// Parses a formula such as "abs(theta * grad) + 0.1 * fisher" over the given statistics
    /// (Statistics.builtIns and any a user defines). Errors point at the offending token (a caret
    /// under the text) and list what a formula may contain. Definitions the parser could not tell
    /// apart are an ArgumentException (Statistics.check).
    let parseWith (definitions: StatisticDefinition list) (text: string) : Result<Expr, string> =
        Statistics.check definitions

        try
            if text.Length > MaxLength then
                raise (
                    ParseError(0, $"the formula is %d{text.Length} characters long; at most %d{MaxLength} are allowed")
                )

            let tokens = tokenize text
            let mutable pos = 0
            let peek () = fst tokens.[pos]
            let at () = snd tokens.[pos]

            let describe t =
                match t with
                | Number(_, typed) -> $"number %s{typed}"
                | Name n -> $"'%s{n}'"
                | Symbol c -> $"'%c{c}'"
                | End -> "the end of the formula"

            let fail (message: string) = raise (ParseError(at (), message))

            let tooDeep (found: string) =
                $"the formula nests %s{found} levels deep; at most %d{MaxDepth} are allowed (parentheses, functions, unary minus, ^ and each operator of a chain such as a + b + c add a level)"

            // The levels the parser is inside (parentheses, functions, unary minus): each is a
            // recursion, so the bound is checked before descending, at the token that opens it.
            let mutable nesting = 0

            let nested (parse: unit -> Expr) =
                if nesting = MaxDepth then
                    fail (tooDeep $"more than %d{MaxDepth}")

                nesting <- nesting + 1
                let e = parse ()
                nesting <- nesting - 1
                e

            let expect (c: char) =
                match peek () with
                | Symbol s when s = c -> pos <- pos + 1
                | t -> fail $"expected '%c{c}' but found %s{describe t}"

            // Consumes an optional '-' and says whether there was one.
            let minus () =
                match peek () with
                | Symbol '-' ->
                    pos <- pos + 1
                    true
                | _ -> false

            // A statistic's named parameters, each a positive number given at most once; the
            // others keep their defaults.
            let parameters (d: StatisticDefinition) : (string * float) list =
                let name = d.Name
                let given = Collections.Generic.List<string * float>()

                let only () =
                    d.Parameters
                    |> List.map (fun p -> $"the %s{p.Meaning} %s{p.Name}")
                    |> String.concat " or "

                let example =
                    d.Parameters
                    |> List.map (fun p -> $"""%s{p.Name}=%s{p.Example.ToString("R", CultureInfo.InvariantCulture)}""")
                    |> String.concat ","

                match peek () with
                | Symbol '(' ->
                    pos <- pos + 1

                    let rec loop () =
                        match peek () with
                        | Name n when d.Parameters |> List.exists (fun p -> p.Name.ToLowerInvariant() = n) ->
                            let p = d.Parameters |> List.find (fun p -> p.Name.ToLowerInvariant() = n)

                            if given |> Seq.exists (fun (g, _) -> g = p.Name) then
                                fail $"%s{name} is given the %s{p.Meaning} %s{p.Name} twice; give it once"

                            pos <- pos + 1
                            expect '='

                            let negative = minus ()

                            match peek () with
                            | Number(v, _) when not negative && v > 0.0 ->
                                given.Add(p.Name, v)
                                pos <- pos + 1
                            | Number(_, typed) ->
                                let typed = if negative then "-" + typed else typed
                                fail $"the %s{p.Meaning} of %s{name} must be a positive number, got %s{typed}"
                            | tok -> fail $"expected a %s{p.Meaning} after %s{p.Name}= but found %s{describe tok}"

                            match peek () with
                            | Symbol ',' ->
                                pos <- pos + 1
                                loop ()
                            | _ -> expect ')'
                        | tok ->
                            fail $"%s{name} takes only %s{only ()}, e.g. %s{name}(%s{example}); found %s{describe tok}"

                    loop ()
                | _ -> ()

                List.ofSeq given

            let statistic (name: string) : Expr option =
                match definitions |> List.tryFind (fun d -> d.Name = name) with
                | Some d when d.Parameters.IsEmpty ->
                    match peek () with
                    | Symbol '(' -> fail $"%s{name} takes no parameters"
                    | _ -> Some(Expr.Statistic(Statistic.ofDefinition d))
                | Some d -> Some(Expr.Statistic(Statistic.at d (parameters d)))
                | None -> None

            // One left-associative level: operand (op operand)*, op one of the given symbols.
            let level (operand: unit -> Expr) (ops: (char * (Expr * Expr -> Expr)) list) () =
                let mutable left = operand ()
                let mutable go = true

                while go do
                    match peek () with
                    | Symbol c when ops |> List.exists (fun (op, _) -> op = c) ->
                        pos <- pos + 1
                        let make = ops |> List.find (fun (op, _) -> op = c) |> snd
                        left <- make (left, operand ())
                    | _ -> go <- false

                left

            let rec expr () =
                level term [ '+', Expr.Sum; '-', Expr.Difference ] ()

            and term () =
                level unary [ '*', Expr.Product; '/', Expr.Quotient ] ()

            and unary () =
                match peek () with
                | Symbol '-' ->
                    nested (fun () ->
                        pos <- pos + 1

                        match unary () with
                        | Expr.Constant k -> Expr.Constant -k
                        | e -> Expr.Negation e)
                | _ -> power ()

            and power () =
                let baseExpr = atom ()

                match peek () with
                | Symbol '^' ->
                    pos <- pos + 1

                    let exponent () =
                        let negative = minus ()

                        match peek () with
                        | Number(v, _) ->
                            pos <- pos + 1
                            if negative then -v else v
                        | tok -> fail $"expected a number exponent after '^' but found %s{describe tok}"

                    let k =
                        match peek () with
                        | Symbol '(' ->
                            pos <- pos + 1
                            let k = exponent ()
                            expect ')'
                            k
                        | _ -> exponent ()

                    Expr.Power(baseExpr, k)
                | _ -> baseExpr

            and atom () =
                let tok = peek ()

                // A parenthesized formula: expr () then the closing ')'.
                let group () =
                    nested (fun () ->
                        expect '('
                        let e = expr ()
                        expect ')'
                        e)

                match tok with
                | Number(v, _) ->
                    pos <- pos + 1
                    Expr.Constant v
                | Symbol '(' -> group ()
                | Name n ->
                    let start = at ()
                    pos <- pos + 1

                    match functions |> List.tryFind (fun (f, _, _) -> f = n) with
                    | Some(_, make, _) -> make (group ())
                    | None ->
                        match statistic n with
                        | Some e -> e
                        | None ->
                            let names =
                                (definitions |> List.map (fun d -> d.Name))
                                @ (functions |> List.map (fun (f, _, _) -> f))

                            let hint = Suggestion.didYouMean names n
                            raise (ParseError(start, $"unknown statistic or function '%s{n}'%s{hint}"))
                | _ -> fail $"expected a statistic, a number, a function or '(' but found %s{describe tok}"

            if String.IsNullOrWhiteSpace text then
                raise (ParseError(0, "the formula is empty"))

            let e = expr ()

            match peek () with
            | End -> ()
            | tok -> fail $"unexpected %s{describe tok} (an operator is missing?)"

            // Chains and powers nest the expression without nesting the parser: measured here,
            // before the first recursive walk (statistics, render).
            match depth e with
            | d when d > MaxDepth -> raise (ParseError(0, tooDeep (string d)))
            | _ -> ()

            if statistics e |> List.isEmpty then
                raise (ParseError(0, "the formula reads no statistic: it would give every weight the same score"))

            match constantNormalization e with
            | Some inner ->
                raise (
                    ParseError(
                        0,
                        $"'%s{render inner}' normalizes or ranks a constant: layernorm, globalnorm and rank need a per-weight argument"
                    )
                )
            | None -> ()

            Ok e
        with ParseError(position, message) ->
            // A long formula is shown as the stretch around the caret.
            let width = 100

            let start =
                if text.Length <= width then
                    0
                else
                    max 0 (position - width / 2)

            let stop = min text.Length (start + width)
            let before = if start > 0 then "…" else ""
            let after = if stop < text.Length then "…" else ""
            let shown = before + text.Substring(start, stop - start) + after
            let caret = String(' ', before.Length + position - start) + "^"
            Error $"bad criterion formula: %s{message}\n  %s{shown}\n  %s{caret}\n%s{helpWith definitions}"

    /// Parses a formula over the built-in statistics (see parseWith).
    let parse (text: string) : Result<Expr, string> = parseWith Statistics.builtIns text

/// Evaluating formulas and criteria.
module Criteria =
    // A formula's value: a scalar (constants fold) or one tensor per layer.
    type private Value =
        | Scalar of float
        | Layers of Tensor list

    let private map f v =
        match v with
        | Scalar _ -> invalidOp "internal: a per-layer function applied to a constant"
        | Layers ts -> Layers(List.map f ts)

    let private binary
        (scalar: float -> float -> float)
        (left: Tensor -> float -> Tensor)
        (right: float -> Tensor -> Tensor)
        (both: Tensor -> Tensor -> Tensor)
        a
        b
        =
        match a, b with
        | Scalar x, Scalar y -> Scalar(scalar x y)
        | Layers xs, Scalar y -> Layers(xs |> List.map (fun x -> left x y))
        | Scalar x, Layers ys -> Layers(ys |> List.map (right x))
        | Layers xs, Layers ys -> Layers(List.map2 both xs ys)

    let private globalRank (ts: Tensor list) =
        let flats = ts |> List.map (fun t -> t.Flatten().To(DType.Float64))
        let all = Libtorch.Cat(List.toArray flats, 0L)
        let n = all.NumEl
        // Descending and stable: the best weight first, equal scores in position order.
        let order = all.ArgSort(0L, descending = true, stable = true)

        let ranks = Libtorch.Arange(float n, 0.0, -1.0, DType.Float64, all.Device) / float n

        let ranked =
            Libtorch.Zeros([| n |], DType.Float64, all.Device).Scatter(0L, order, ranks)

        let mutable offset = 0L

        ts
        |> List.map (fun t ->
            let part = ranked.Narrow(0L, offset, t.NumEl).Reshape(t.Shape)
            offset <- offset + t.NumEl
            part)

    let rec private eval (get: Statistic -> StatisticValue) (e: Expr) : Value =
        let ev = eval get

        match e with
        | Expr.Statistic s -> Layers (get s).Layers
        | Expr.Constant k -> Scalar k
        | Expr.Sum(a, b) -> binary (+) (fun t k -> t + k) (fun k t -> k + t) (fun x y -> x + y) (ev a) (ev b)
        | Expr.Difference(a, b) -> binary (-) (fun t k -> t - k) (fun k t -> k - t) (fun x y -> x - y) (ev a) (ev b)
        | Expr.Product(a, b) -> binary (*) (fun t k -> t * k) (fun k t -> t * k) (fun x y -> x * y) (ev a) (ev b)
        | Expr.Quotient(a, b) -> binary (/) (fun t k -> t / k) (fun k t -> k / t) (fun x y -> x / y) (ev a) (ev b)
        | Expr.Power(a, k) ->
            match ev a with
            | Scalar x -> Scalar(Math.Pow(x, k))
            | v when k = 2.0 -> map (fun t -> t.Square()) v
            | v -> map (fun t -> t.Pow k) v
        | Expr.Absolute a ->
            match ev a with
            | Scalar x -> Scalar(Math.Abs x)
            | v -> map (fun t -> t.Abs()) v
        | Expr.Negation a ->
            match ev a with
            | Scalar x -> Scalar -x
            | v -> map (fun t -> t.Neg()) v
        | Expr.LayerNormalized a ->
            match ev a with
            | Scalar _ -> invalidArg "formula" "layernorm needs a per-weight argument, not a constant"
            | Layers ts ->
                Layers(
                    ts
                    |> List.map (fun t ->
                        use total = t.Abs().Sum()
                        let z = total.Item()
                        if z = 0.0 then t.Clone() else t / z)
                )
        | Expr.GlobalNormalized a ->
            match ev a with
            | Scalar _ -> invalidArg "formula" "globalnorm needs a per-weight argument, not a constant"
            | Layers ts ->
                let z = ts |> List.sumBy (fun t -> (use s = t.Abs().Sum() in s.Item()))
                Layers(ts |> List.map (fun t -> if z = 0.0 then t.Clone() else t / z))
        | Expr.Rank a ->
            match ev a with
            | Scalar _ -> invalidArg "formula" "rank needs a per-weight argument, not a constant"
            | Layers ts -> Layers(globalRank ts)

    /// The criterion's scores on the cache's context: every statistic comes from the cache, so
    /// criteria scored on one cache share them. The scores carry the diagnostics of the
    /// statistics they read; their tensors belong to the caller.
    let scoreWith (cache: StatisticCache) (c: Criterion) : Scores =
        let ctx = cache.Context
        use _scope = new DisposeScope()
        let get (s: Statistic) = cache.Get s

        let layers =
            match eval get c.Formula with
            | Scalar _ -> invalidArg "criterion" $"the criterion '%s{c.Name}' reads no statistic"
            // A bare statistic: the cache owns its tensors, the scores get copies.
            | Layers ts when
                (match c.Formula with
                 | Expr.Statistic _ -> true
                 | _ -> false)
                ->
                ts |> List.map (fun t -> t.Clone())
            | Layers ts -> ts

        {
            Layers =
                List.zip [ for kv in ctx.Model.Prunable -> kv.Key ] layers
                |> List.map (fun (n, t) -> n, t.MoveToOuterScope())
            Diagnostics =
                Formula.statistics c.Formula
                |> List.collect (fun s -> (cache.Get s).Diagnostics)
        }

    /// Scores the criterion on the context, computing its statistics afresh.
    let score (ctx: ScoringContext) (c: Criterion) : Scores =
        use cache = new StatisticCache(ctx)
        scoreWith cache c

    /// Every statistic scoring reads, directly or through another statistic, each once.
    let statisticsRead (c: Criterion) =
        Formula.statistics c.Formula
        |> List.collect Statistic.closure
        |> List.distinctBy (fun s -> s.Name)

    /// Whether scoring reads the data (so BN warm-up applies before it).
    let needsData (c: Criterion) =
        statisticsRead c |> List.exists (fun s -> s.Definition.NeedsData)

    /// The statistics of the criterion a results store keeps across runs (StatisticDefinition.WorthCaching).
    let storedStatistics (c: Criterion) =
        statisticsRead c |> List.filter Statistic.worthCaching

    /// Whether scoring reads the Hessian diagonal (directly or through another statistic), so
    /// that the curvature setting matters.
    let readsHessianDiagonal (c: Criterion) =
        statisticsRead c |> List.exists (fun s -> s.IsHessianDiagonal)

    /// A criterion from a user formula: named by its canonical text, one round by default.
    let ofFormula (e: Expr) =
        {
            Name = Formula.render e
            Formula = e
            DefaultRounds = 1
        }

    /// Parses a user formula over the given statistics into a criterion (see Formula.parseWith).
    let parseWith (definitions: StatisticDefinition list) (text: string) : Result<Criterion, string> =
        Formula.parseWith definitions text |> Result.map ofFormula

    /// Parses a user formula into a criterion (see Formula.parse).
    let parse (text: string) : Result<Criterion, string> =
        Formula.parse text |> Result.map ofFormula

/// Scoring and the data dependence as members, for C# and scripts.
type Criterion with
    /// Scores the criterion on the context (Criteria.score).
    member c.Score(ctx: ScoringContext) = Criteria.score ctx c
    /// Whether scoring reads the data (Criteria.needsData).
    member c.NeedsData = Criteria.needsData c
