/// Pure helpers that say how far a curvature estimate and the mask it produces can be trusted:
/// mask overlap, relative standard error, rank correlation and relative error. Plain arrays in,
/// numbers out, so they are tested on constructed inputs.
module Pai.Stability

open System

/// Jaccard overlap |A ∩ B| / |A ∪ B| of two kept-sets given as flags of equal length (1 when
/// both are empty: two empty masks agree).
let jaccard (a: bool[]) (b: bool[]) : float =
    if a.Length <> b.Length then
        invalidArg "b" $"the masks differ in size (%d{a.Length} against %d{b.Length}): compare masks of the same model"

    let mutable both = 0
    let mutable either = 0

    for i in 0 .. a.Length - 1 do
        if a.[i] && b.[i] then
            both <- both + 1

        if a.[i] || b.[i] then
            either <- either + 1

    if either = 0 then 1.0 else float both / float either

/// The median of the values (the mean of the two middle ones for an even count); NaN when empty.
let median (xs: float[]) : float =
    if xs.Length = 0 then
        nan
    else
        let s = Array.sort xs
        let n = s.Length

        if n % 2 = 1 then
            s.[n / 2]
        else
            (s.[n / 2 - 1] + s.[n / 2]) / 2.0

/// A layer's median relative standard error: the median over its entries of SE/|estimate|.
/// Entries whose estimate and SE are both exactly zero are left out: every probe gave 0 there
/// (e.g. a dead ReLU unit), so they are known exactly and would otherwise pull the median to 0
/// and hide the noise of the rest. An entry with estimate 0 and SE > 0 counts as +∞. A layer
/// with nothing left to estimate has relative SE 0.
let medianRelativeSe (estimate: float[]) (stdErr: float[]) : float =
    if estimate.Length <> stdErr.Length then
        invalidArg
            "stdErr"
            $"estimate and standard error differ in size (%d{estimate.Length} against %d{stdErr.Length})"

    let ratios =
        [|
            for i in 0 .. estimate.Length - 1 do
                let m, s = abs estimate.[i], stdErr.[i]

                if not (m = 0.0 && s = 0.0) then
                    if m = 0.0 then Double.PositiveInfinity else s / m
        |]

    if ratios.Length = 0 then 0.0 else median ratios

/// Ranks 1..n of the values, ties sharing their average rank.
let ranks (xs: float[]) =
    let order = Array.init xs.Length id |> Array.sortBy (fun i -> xs.[i])
    let r = Array.zeroCreate<float> xs.Length
    let mutable i = 0

    while i < order.Length do
        let mutable j = i

        while j + 1 < order.Length && xs.[order.[j + 1]] = xs.[order.[i]] do
            j <- j + 1

        let average = float (i + j) / 2.0 + 1.0

        for k in i..j do
            r.[order.[k]] <- average

        i <- j + 1

    r

/// Spearman rank correlation (Pearson correlation of average ranks); NaN when either side is
/// constant or has fewer than 2 entries (no ranking to compare).
let spearman (x: float[]) (y: float[]) : float =
    if x.Length <> y.Length then
        invalidArg "y" $"Spearman needs equal lengths, got %d{x.Length} and %d{y.Length}"

    if x.Length < 2 then
        nan
    else
        let rx, ry = ranks x, ranks y
        let mx, my = Array.average rx, Array.average ry
        let mutable sxy, sxx, syy = 0.0, 0.0, 0.0

        for i in 0 .. x.Length - 1 do
            let dx, dy = rx.[i] - mx, ry.[i] - my
            sxy <- sxy + dx * dy
            sxx <- sxx + dx * dx
            syy <- syy + dy * dy

        if sxx = 0.0 || syy = 0.0 then
            nan
        else
            sxy / sqrt (sxx * syy)

/// Relative error ‖estimate − exact‖₂ / ‖exact‖₂ (0 when both are zero, +∞ when only exact is).
let relativeError (estimate: float[]) (exact: float[]) : float =
    if estimate.Length <> exact.Length then
        invalidArg "exact" $"estimate and exact differ in size (%d{estimate.Length} against %d{exact.Length})"

    let diff = Array.fold2 (fun acc e x -> acc + (e - x) * (e - x)) 0.0 estimate exact
    let norm = Array.sumBy (fun x -> x * x) exact

    if norm = 0.0 then
        (if diff = 0.0 then 0.0 else Double.PositiveInfinity)
    else
        sqrt (diff / norm)
