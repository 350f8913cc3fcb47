/// Shared pieces of the benchmarks: command-line options, statistics, processes, memory, data.
module Pai.Benchmarks.Common

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text.Json
open Pai.Torch
open Pai.Host.Data

let inv = CultureInfo.InvariantCulture

/// An option's value that the benchmark cannot take: the message says which option and what it takes.
exception BadOption of string

/// Parsed "--name value" options (a bare "--flag" maps to "true").
type Args(values: Map<string, string>) =
    member _.Has name = values.ContainsKey name

    member _.Str(name, fallback: string) =
        values |> Map.tryFind name |> Option.defaultValue fallback

    /// One of `allowed` (the first is the default).
    member this.Choice(name, allowed: string list) =
        let v = this.Str(name, List.head allowed)

        if not (List.contains v allowed) then
            raise (BadOption $"""--{name} takes {String.Join(" or ", allowed)}, not '{v}'""")

        v

    member this.Int(name, fallback: int) =
        match values |> Map.tryFind name with
        | Some v ->
            match Int32.TryParse(v, NumberStyles.Integer, inv) with
            | true, i -> i
            | _ -> raise (BadOption $"--{name} takes a whole number, not '{v}'")
        | None -> fallback

    member this.Float(name, fallback: float) =
        match values |> Map.tryFind name with
        | Some v ->
            match Double.TryParse(v, NumberStyles.Float, inv) with
            | true, f -> f
            | _ -> raise (BadOption $"--{name} takes a number, not '{v}'")
        | None -> fallback

    member this.List(name, fallback: string list) =
        match values |> Map.tryFind name with
        | Some v ->
            v.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> List.ofArray
        | None -> fallback

    /// The options as "--name value" arguments again (to hand them to a worker process).
    member _.Raw = values

    /// These options, when `command` takes each of them (`known`); else the error that names the
    /// others and lists what it takes. A misspelt option (or --help) must not start a long run
    /// with the defaults.
    member this.Only(command: string, known: string list) =
        let flag name = "--" + name

        match
            values
            |> Map.keys
            |> Seq.filter (fun n -> not (List.contains n known))
            |> List.ofSeq
        with
        | [] -> this
        | unknown ->
            let names = String.Join(", ", List.map flag unknown)
            let takes = String.Join(" ", List.map flag known)
            raise (BadOption $"{command} takes no {names}; its options are {takes} (--help shows what each one takes)")

    static member Parse(argv: string list) =
        let rec go acc =
            function
            | (name: string) :: value :: rest when name.StartsWith "--" && not (value.StartsWith "--") ->
                go (Map.add (name.Substring 2) value acc) rest
            | (name: string) :: rest when name.StartsWith "--" -> go (Map.add (name.Substring 2) "true" acc) rest
            | other :: _ -> raise (BadOption $"unexpected argument '{other}': options are written --name value")
            | [] -> acc

        Args(go Map.empty argv)

/// The repository root: the first directory above the executable that holds Hybrid.sln.
let repoRoot =
    lazy
        (let rec up (d: DirectoryInfo | null) =
            match d with
            | null ->
                failwithf
                    "Hybrid.sln not found above %s: run the benchmarks from the repository's build output"
                    AppContext.BaseDirectory
            | d when File.Exists(Path.Combine(d.FullName, "Hybrid.sln")) -> d.FullName
            | d -> up d.Parent

         try
             up (DirectoryInfo AppContext.BaseDirectory)
         with _ ->
             up (DirectoryInfo Environment.CurrentDirectory))

let benchmarksDir () =
    Path.Combine(repoRoot.Value, "benchmarks")

let oraclesDir () =
    Path.Combine(repoRoot.Value, "tests", "oracles")

let median (xs: float seq) =
    let a = Seq.toArray xs |> Array.sort

    if a.Length = 0 then nan
    elif a.Length % 2 = 1 then a.[a.Length / 2]
    else 0.5 * (a.[a.Length / 2 - 1] + a.[a.Length / 2])

/// The 1-, 5- and 15-minute load averages.
let loadAverage () =
    try
        let parts = File.ReadAllText("/proc/loadavg").Split(' ')
        sprintf "%s %s %s" parts.[0] parts.[1] parts.[2]
    with _ ->
        "unknown"

/// CPU seconds (user + system, all threads) this process has used so far.
let cpuSeconds () =
    use p = Process.GetCurrentProcess()
    p.TotalProcessorTime.TotalSeconds

// A /proc/self/status field in MB.
let private statusMb (field: string) =
    File.ReadLines "/proc/self/status"
    |> Seq.tryFind (fun l -> l.StartsWith(field + ":"))
    |> Option.map (fun l -> float (l.Split(' ', StringSplitOptions.RemoveEmptyEntries).[1]) / 1024.0)
    |> Option.defaultValue nan

/// Peak resident set size of this process in MB (VmHWM).
let peakRssMb () = statusMb "VmHWM"

/// Resident set size of this process now, in MB (VmRSS).
let rssMb () = statusMb "VmRSS"

/// Starts a new peak-RSS measurement (VmHWM) from what this process holds now: managed garbage
/// collected and its free pages decommitted, native memory that earlier work freed returned to the
/// system (the blocks the native allocator keeps, and the heap's free pages), then the kernel's
/// high-water mark reset to the current RSS. For comparisons with a worker process that starts
/// fresh for the same work.
let resetPeakRss () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    // Aggressive: also returns the managed heap's free pages to the system.
    GC.Collect(2, GCCollectionMode.Aggressive, true, true)
    Libtorch.ReleaseFreeMemory()
    File.WriteAllText("/proc/self/clear_refs", "5")

/// How to start this benchmark executable again (apphost or `dotnet Pai.Benchmarks.dll`).
let selfCommand () =
    let path =
        match Environment.ProcessPath with
        | null -> failwith "cannot tell which executable is running"
        | p -> p

    let dll = typeof<Args>.Assembly.Location

    if Path.GetFileNameWithoutExtension(path) = "dotnet" then
        path, [ dll ]
    else
        path, []

// Starts a process; `redirect` gives this one its standard streams, otherwise it shares the console.
let private start (file: string) (args: string seq) (redirect: bool) =
    let psi = ProcessStartInfo(file)

    for a in args do
        psi.ArgumentList.Add a

    psi.RedirectStandardOutput <- redirect
    psi.RedirectStandardError <- redirect
    psi.RedirectStandardInput <- redirect
    psi.UseShellExecute <- false

    match Process.Start psi with
    | null -> failwithf "could not start %s" file
    | p -> p

/// Runs a process to completion on this console (its output shows as it comes); returns its exit code.
let runToExit (file: string) (args: string seq) : int =
    use p = start file args false
    p.WaitForExit()
    p.ExitCode

/// Runs a process to completion and returns its last stdout line that is a JSON object.
let runForJson (file: string) (args: string seq) : JsonElement =
    use p = start file args true
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()

    if p.ExitCode <> 0 then
        failwithf "%s %s failed (exit %d):\n%s\n%s" file (String.Join(" ", args)) p.ExitCode err.Result out

    let line =
        out.Split('\n')
        |> Array.map (fun s -> s.Trim())
        |> Array.filter (fun s -> s.StartsWith "{")
        |> Array.tryLast

    match line with
    | Some l -> JsonDocument.Parse(l).RootElement.Clone()
    | None -> failwithf "%s printed no JSON result:\n%s\n%s" file out err.Result

/// A long-lived worker answering one JSON line per command line written to its stdin.
type LineWorker(file: string, args: string seq) =
    let p = start file args true
    let err = Text.StringBuilder()

    do
        p.ErrorDataReceived.Add(fun e ->
            match e.Data with
            | null -> ()
            | d -> lock err (fun () -> err.AppendLine d |> ignore))

        p.BeginErrorReadLine()

    /// Sends one command and waits for its JSON answer (lines that are not JSON are skipped).
    member _.Ask(command: string) : JsonElement =
        p.StandardInput.WriteLine command
        p.StandardInput.Flush()

        let rec read () =
            match p.StandardOutput.ReadLine() with
            | null ->
                p.WaitForExit()

                failwithf
                    "the worker %s exited (%d) during '%s':\n%s"
                    file
                    p.ExitCode
                    command
                    (lock err (fun () -> err.ToString()))
            | line when line.TrimStart().StartsWith "{" -> JsonDocument.Parse(line).RootElement.Clone()
            | _ -> read ()

        read ()

    interface IDisposable with
        member _.Dispose() =
            try
                if not p.HasExited then
                    p.StandardInput.WriteLine "quit"
                    p.StandardInput.Flush()

                    if not (p.WaitForExit 10000) then
                        p.Kill()
            finally
                p.Dispose()

/// CIFAR-shaped synthetic data: uniform random uint8 pixels [count, 3, 32, 32] and random labels
/// 0..9, normalized with CIFAR-10's mean and std, i.e. the loader does exactly the work it does
/// for real CIFAR-10 (gather, uint8 → float, scale, shift). 50000 images = CIFAR-10's training set.
let cifarLike (count: int) (seed: uint64) =
    use scope = new DisposeScope()
    use gen = new Generator(seed)

    let images =
        Libtorch.RandInt(0L, 256L, [| int64 count; 3L; 32L; 32L |], gen, DType.UInt8)

    let labels = Libtorch.RandInt(0L, 10L, [| int64 count |], gen, DType.Int64)
    let info = DatasetRegistry.Info "cifar10"
    new Dataset("cifar-like", DatasetSplit.Train, images, labels, 10, info.Mean, info.Std)

/// Right-aligned table printing.
let printTable (header: string list) (rows: string list list) =
    let all = header :: rows

    let widths =
        [
            for i in 0 .. header.Length - 1 -> all |> List.map (fun r -> r.[i].Length) |> List.max
        ]

    let line (r: string list) =
        String.Join(
            "  ",
            List.mapi
                (fun i (c: string) ->
                    if i = 0 then
                        c.PadRight widths.[i]
                    else
                        c.PadLeft widths.[i])
                r
        )

    printfn "%s" (line header)
    printfn "%s" (String('-', (List.sum widths) + 2 * (widths.Length - 1)))

    for r in rows do
        printfn "%s" (line r)

let f1 (x: float) = x.ToString("F1", inv)
let f2 (x: float) = x.ToString("F2", inv)
let f3 (x: float) = x.ToString("F3", inv)

/// A duration in seconds with a sensible number of digits.
let secs (x: float) =
    if x >= 10.0 then x.ToString("F2", inv)
    elif x >= 0.1 then x.ToString("F3", inv)
    elif x >= 0.001 then x.ToString("F5", inv)
    else x.ToString("E2", inv)

let python (args: Args) = args.Str("python", "/usr/bin/python3")
