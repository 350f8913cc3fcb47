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
open Pai.Host
open Pai.Host.Runs

/// Command-line arguments after the script name: --name value pairs.
let args =
    let a = fsi.CommandLineArgs |> Array.skip 1
    [ for i in 0..2 .. a.Length - 2 -> a.[i].TrimStart('-'), a.[i + 1] ] |> Map.ofList

let arg name fallback = args |> Map.tryFind name |> Option.defaultValue fallback

/// Runs the configs in the store, printing one line per run, then writes the report.
let sweep (resultsDir: string) (configs: RunConfig list) =
    PaiHost.ConfigureThreads(None |> Option.toNullable)
    use store = new SqliteRunStore(IO.Path.GetFullPath resultsDir)
    let summary = Sweep.Execute(store, List.toArray configs, null, Action<string>(printfn "%s"))
    printfn "%d run, %d skipped, %d failed; results in %s" summary.Ran summary.Skipped summary.Failed store.Directory
    store.All()
