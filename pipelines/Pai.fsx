// Shared set-up of the pipeline scripts: references the built assemblies (build first with
// `dotnet build Hybrid.sln -c Release`) and small helpers. Load it with #load "Pai.fsx".
#r "../src/Pai.Cli/bin/Release/net10.0/Pai.Torch.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/Pai.Core.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/Pai.Host.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/Microsoft.Data.Sqlite.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/SQLitePCLRaw.core.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/SQLitePCLRaw.batteries_v2.dll"
#r "../src/Pai.Cli/bin/Release/net10.0/SQLitePCLRaw.provider.e_sqlite3.dll"

open System
open System.Runtime.InteropServices
open Pai.Host
open Pai.Host.Runs

// dotnet fsi does not probe runtimes/<rid>/native/ as an application does: point SQLite's
// provider at its native library explicitly.
let private binDir =
    IO.Path.Combine(__SOURCE_DIRECTORY__, "..", "src", "Pai.Cli", "bin", "Release", "net10.0")

NativeLibrary.SetDllImportResolver(
    typeof<SQLitePCL.SQLite3Provider_e_sqlite3>.Assembly,
    DllImportResolver(fun name _ _ ->
        if name = "e_sqlite3" then
            NativeLibrary.Load(
                IO.Path.Combine(binDir, "runtimes", RuntimeInformation.RuntimeIdentifier, "native", "libe_sqlite3.so")
            )
        else
            IntPtr.Zero)
)

/// Command-line arguments after the script name: --name value pairs.
let args =
    let a = fsi.CommandLineArgs |> Array.skip 1

    [ for i in 0..2 .. a.Length - 2 -> a.[i].TrimStart('-'), a.[i + 1] ]
    |> Map.ofList

let arg name fallback =
    args |> Map.tryFind name |> Option.defaultValue fallback

/// What runs are doing, as lines (`pai` prints the same ones into logs): each phase, each finished
/// epoch, a line every 30 s within a long epoch, and what scoring says on the way.
let progress = LineProgress(Action<string>(printfn "%s"))

/// Runs the configs in the store (every core), printing one line per run and its progress; returns every run of the store.
let sweep (resultsDir: string) (configs: RunConfig list) =
    PaiHost.ConfigureThreads(Nullable())
    use store = new SqliteRunStore(IO.Path.GetFullPath resultsDir)

    let summary =
        Sweep.Execute(store, "pipeline", List.toArray configs, progress, Action<string>(printfn "%s"))

    printfn "%d run, %d skipped, %d failed; results in %s" summary.Ran summary.Skipped summary.Failed store.Directory
    store.All()

/// Writes the report (tables, CSV, charts, HTML) of the runs into RESULTS/report and prints where.
let report (resultsDir: string) (runs: Collections.Generic.IReadOnlyList<RunRecord>) =
    let files =
        Pai.Host.Reports.ReportWriter.Write(runs, IO.Path.Combine(IO.Path.GetFullPath resultsDir, "report"))

    printfn "report: %s" files.Html

/// A run as a pipeline of immutable records (Pai.Host.Pipeline):
///   Pipeline.data "fashion-mnist" |> Pipeline.model "lenet5" |> Pipeline.score snip
///   |> Pipeline.prune 0.98 |> Pipeline.train (Budget(1, 50)) |> Pipeline.record store
/// Each stage returns a new record; a pruned record can be trained with several budgets.
module Pipeline =
    /// Starts on a data set with the default settings (the model brings its learning rate).
    let data (dataset: string) = Pai.Host.Pipeline.Data(dataset)
    /// Starts from a configuration whose every setting the run keeps.
    let from (config: RunConfig) = Pai.Host.Pipeline.From(config)
    let model (name: string) (stage: Pai.Host.DataStage) = stage.Model(name)
    /// Chooses the criterion: an F# value (Registry.find "snip", or Criteria.ofFormula over statistics).
    let score (criterion: Pai.Criterion) (stage: Pai.Host.ModelStage) = stage.Score(criterion)
    /// The dense baseline: no pruning.
    let dense (stage: Pai.Host.ModelStage) = stage.Dense()
    /// Scores and prunes, printing the run's progress.
    let prune (sparsity: float) (stage: Pai.Host.CriterionStage) = stage.Prune(sparsity, null, progress)
    /// Trains, printing the run's progress.
    let train (budget: Pai.Host.Budget) (stage: Pai.Host.PrunedStage) = stage.Train(budget, progress)
    let record (store: IRunStore) (stage: Pai.Host.TrainedStage) = stage.Record(store)
