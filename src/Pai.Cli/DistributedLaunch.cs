using System.CommandLine;
using System.Globalization;
using Pai.Host.Distributed;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>
/// `pai run` across processes: `--nproc N` starts N local ranks (children of this same command
/// with torchrun's variables set, each with its share of the threads); a process started with
/// those variables already set (by torchrun, a scheduler, or the launcher) joins the group.
/// </summary>
internal static class DistributedLaunch
{
    internal static readonly Option<int> NProc = new("--nproc")
    {
        Description = "data-parallel ranks to start on this machine (Gloo); the batch size stays the global batch. " +
                      "With RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (as torchrun sets them), `pai run` joins that group instead",
        DefaultValueFactory = _ => 1,
    };

    /// <summary>The exit code when this invocation is distributed (launcher or rank), null for a plain single-process run.</summary>
    internal static int? Run(ParseResult p, RunConfig config)
    {
        var nproc = p.GetValue(NProc);
        Cli.CheckProcesses(nproc, "--nproc");
        var env = DistributedEnvironment.FromEnvironment();
        if (env is null && nproc == 1) return null;
        if (env is not null && nproc > 1)
            throw new ArgumentException($"this process is already rank {env.Rank} of {env.WorldSize} ({DistributedEnvironment.WorldSizeVariable} is set): leave out --nproc");
        WorkerCommands.CheckStoreFolders(p); // before any rank starts
        if (env is null) return Launch(p, nproc);

        using var parallel = DataParallel.Join(env);
        using var store = parallel.IsRoot ? WorkerCommands.OpenStore(p) : null;
        // Rank 0 shows progress and results; the other ranks only compute.
        var record = parallel.IsRoot
            ? ConsoleProgress.Show(progress => DistributedRun.Execute(config, store, parallel, progress, Console.WriteLine))
            : DistributedRun.Execute(config, null, parallel);
        if (record?.FinalTop1 is { } top1)
            AnsiConsole.MarkupLine($"{Markup.Escape(config.Label)}: test top-1 [bold]{top1:P2}[/] on {parallel.Size} ranks (run {config.Key} in {Markup.Escape(store!.Directory)})");
        return 0;
    }

    // Re-runs this command line as N ranks, without --nproc and with each rank's share of the threads.
    static int Launch(ParseResult p, int nproc)
    {
        var all = Environment.GetCommandLineArgs();
        var host = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which executable this is, to start the ranks");
        var arguments = new List<string>();
        // Under `dotnet pai.dll` the first argument is the assembly, which the children need too.
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") arguments.Add(all[0]);
        for (var i = 1; i < all.Length; i++)
        {
            if (all[i] is "--nproc" or "--threads") { i++; continue; }
            if (all[i].StartsWith("--nproc=", StringComparison.Ordinal) || all[i].StartsWith("--threads=", StringComparison.Ordinal)) continue;
            arguments.Add(all[i]);
        }
        var threads = p.GetValue(PaiCommand.Threads) is > 0 and var t ? t : Host.PaiHost.DefaultThreads.Threads;
        arguments.Add("--threads");
        arguments.Add(Math.Max(1, threads / nproc).ToString(CultureInfo.InvariantCulture));
        Console.WriteLine($"pai: starting {nproc} ranks on this machine, {Math.Max(1, threads / nproc)} threads each");
        return LocalLauncher.Run(host, arguments, nproc, Console.Error);
    }
}
