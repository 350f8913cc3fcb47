/// A VSTest adapter for Expecto, so that `dotnet test` (and therefore the README's single test
/// command and `.ci/run`) discovers and runs the Expecto tests of Pai.Tests beside the xunit
/// tests of the other projects, prints its usual per-assembly summary, fails the run when one
/// fails, and keeps `--filter "FullyQualifiedName~X"` working.
///
/// Why an adapter: no Expecto adapter package is served to this project, and the alternative (an
/// MSBuild target that runs the Expecto executable after `dotnet test`) would report outside
/// VSTest: no per-assembly summary for `.ci/run` to sum, no `--filter`, no test explorer. This
/// adapter is small because Expecto already turns the tree of `[<Tests>]` values into flat tests;
/// it only names them, matches them against the filter and runs them one at a time.
///
/// Each test's fully qualified name is `<assembly>.<testList names>.<test name>`, joined by '.',
/// e.g. `Pai.Tests.HvpTests.hvp of the quadratic xᵀAx is (A + Aᵀ)v` (the names xunit gave them).
/// Tests run sequentially in discovery order: libtorch's thread count, its global seed and process
/// memory are process-wide, and a 2-core machine gains nothing from running tests side by side.
namespace Pai.Expecto.TestAdapter

open System
open System.Diagnostics
open System.IO
open System.Reflection
open System.Threading
open Expecto
open Microsoft.VisualStudio.TestPlatform.ObjectModel
open Microsoft.VisualStudio.TestPlatform.ObjectModel.Adapter
open Microsoft.VisualStudio.TestPlatform.ObjectModel.Logging

module internal Discovery =
    [<Literal>]
    let ExecutorUri = "executor://pai/expecto"

    /// Whether the assembly at this path references Expecto (only those hold Expecto tests).
    let private usesExpecto (source: string) =
        try
            Assembly.LoadFrom(source).GetReferencedAssemblies()
            |> Array.exists (fun a -> a.Name = "Expecto")
        with _ ->
            false

    /// The fully qualified name of a flat test: the assembly, then its path of list names.
    let private fullyQualified (assembly: Assembly) (test: FlatTest) =
        (string (assembly.GetName().Name) :: test.name)
        |> List.filter (fun s -> not (String.IsNullOrWhiteSpace s))
        |> String.concat "."

    /// The Expecto tests of one assembly as VSTest cases, each with its Expecto test. Two tests
    /// with the same fully qualified name would be indistinguishable to VSTest: that is an error.
    let load (source: string) : (TestCase * FlatTest) list =
        if not (usesExpecto source) then
            []
        else
            let assembly = Assembly.LoadFrom source

            match Impl.testFromAssembly assembly with
            | None -> []
            | Some tree ->
                let tests =
                    Test.toTestCodeList tree
                    |> List.map (fun flat ->
                        let name = fullyQualified assembly flat
                        let case = TestCase(name, Uri ExecutorUri, source)
                        case, flat)

                let duplicates =
                    tests
                    |> List.countBy (fun (case, _) -> case.FullyQualifiedName)
                    |> List.filter (fun (_, n) -> n > 1)

                if not duplicates.IsEmpty then
                    failwithf
                        "%s: these Expecto tests share a name; rename one of each: %s"
                        source
                        (duplicates |> List.map fst |> String.concat "; ")

                tests

    /// The properties `--filter` may name, and how each reads a test case.
    let private properties =
        [
            "FullyQualifiedName", TestCaseProperties.FullyQualifiedName
            "DisplayName", TestCaseProperties.DisplayName
            "Name", TestCaseProperties.DisplayName
        ]

    let private propertyNamed (name: string) =
        properties
        |> List.tryFind (fun (n, _) -> String.Equals(n, name, StringComparison.OrdinalIgnoreCase))
        |> Option.map snd
        |> Option.toObj

    /// The predicate of the run's `--filter` (every test when there is none).
    let filterOf (context: IDiscoveryContext | null) : TestCase -> bool =
        match context with
        | :? IRunContext as context ->
            match context.GetTestCaseFilter(properties |> List.map fst, Func<_, _> propertyNamed) with
            | null -> fun _ -> true
            | filter ->
                fun case ->
                    filter.MatchTestCase(
                        case,
                        fun name ->
                            match propertyNamed name with
                            | null -> null
                            | property -> case.GetPropertyValue property
                    )
        | _ -> fun _ -> true

/// Lists the Expecto tests of the assemblies VSTest hands over.
[<FileExtension(".dll"); FileExtension(".exe"); DefaultExecutorUri(Discovery.ExecutorUri)>]
type ExpectoDiscoverer() =
    interface ITestDiscoverer with
        member _.DiscoverTests(sources, context, logger, sink) =
            for source in sources do
                try
                    let keep = Discovery.filterOf context

                    for case, _ in Discovery.load source do
                        if keep case then
                            sink.SendTestCase case
                with e ->
                    logger.SendMessage(TestMessageLevel.Error, $"Expecto discovery failed in {source}: {e}")

/// Runs Expecto tests one at a time and reports each as a VSTest result.
[<ExtensionUri(Discovery.ExecutorUri)>]
type ExpectoExecutor() =
    let mutable cancelled = false

    /// Runs one test, capturing what it writes to the console into its result.
    let runOne (handle: IFrameworkHandle) (case: TestCase) (flat: FlatTest) =
        handle.RecordStart case
        let result = TestResult(case, StartTime = DateTimeOffset.Now)
        let output = new StringWriter()
        let console = Console.Out
        let clock = Stopwatch.StartNew()

        let outcome =
            match flat.state with
            | Pending -> TestOutcome.Skipped
            | Normal
            | Focused ->
                Console.SetOut output

                try
                    try
                        match flat.test with
                        | Sync f -> f ()
                        | SyncWithCancel f -> f CancellationToken.None
                        | Async a -> Async.RunSynchronously a
                        | AsyncFsCheck(config, _, f) ->
                            f (defaultArg config FsCheckConfig.defaultConfig) |> Async.RunSynchronously

                        TestOutcome.Passed
                    with
                    | :? IgnoreException as e ->
                        result.ErrorMessage <- e.Message
                        TestOutcome.Skipped
                    | :? AssertException as e ->
                        result.ErrorMessage <- e.Message
                        result.ErrorStackTrace <- e.StackTrace
                        TestOutcome.Failed
                    | :? FailedException as e ->
                        result.ErrorMessage <- e.Message
                        result.ErrorStackTrace <- e.StackTrace
                        TestOutcome.Failed
                    | e ->
                        result.ErrorMessage <- $"{e.GetType().FullName}: {e.Message}"
                        result.ErrorStackTrace <- e.ToString()
                        TestOutcome.Failed
                finally
                    Console.SetOut console

        result.Duration <- clock.Elapsed
        result.EndTime <- DateTimeOffset.Now
        result.Outcome <- outcome
        let text = output.ToString()

        if text <> "" then
            result.Messages.Add(TestResultMessage(TestResultMessage.StandardOutCategory, text))

        handle.RecordEnd(case, outcome)
        handle.RecordResult result

    let runAll (handle: IFrameworkHandle) (tests: (TestCase * FlatTest) seq) =
        cancelled <- false

        for case, flat in tests do
            if not cancelled then
                runOne handle case flat

    let loadLogged (handle: IFrameworkHandle) (source: string) =
        try
            Discovery.load source
        with e ->
            handle.SendMessage(TestMessageLevel.Error, $"Expecto discovery failed in {source}: {e}")
            []

    interface ITestExecutor with
        member _.RunTests(sources: string seq, context: IRunContext, handle: IFrameworkHandle) =
            let keep = Discovery.filterOf context

            for source in sources do
                loadLogged handle source
                |> List.filter (fun (case, _) -> keep case)
                |> runAll handle

        member _.RunTests(cases: TestCase seq, _context: IRunContext, handle: IFrameworkHandle) =
            for source, selected in cases |> Seq.groupBy (fun c -> c.Source) do
                let wanted = selected |> Seq.map (fun c -> c.FullyQualifiedName) |> set

                loadLogged handle source
                |> List.filter (fun (case, _) -> wanted.Contains case.FullyQualifiedName)
                |> runAll handle

        member _.Cancel() = cancelled <- true
