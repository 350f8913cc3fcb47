using System.CommandLine;
using Pai.Host;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>The `pai` command tree.</summary>
internal static class PaiCommand
{
    internal static readonly Option<int> Threads = new("--threads")
    {
        Description = "libtorch intra-op threads (0 = every core)",
        DefaultValueFactory = _ => 0,
        Recursive = true,
    };

    internal static RootCommand Build()
    {
        var root = new RootCommand("Pai: pruning at initialization on libtorch.");
        root.Options.Add(Threads);
        root.Subcommands.Add(InfoCommand());
        return root;
    }

    static Command InfoCommand()
    {
        var info = new Command("info", "Versions, threads, active BLAS, native library path and data set locations.");
        info.SetAction(parse =>
        {
            var threads = parse.GetValue(Threads);
            if (threads < 0)
            {
                Console.Error.WriteLine($"error: --threads must be 0 (every core) or positive, got {threads}");
                return 2;
            }
            PaiHost.ConfigureThreads(threads);
            var d = PaiHost.Describe();
            var table = new Table().AddColumns("", "").HideHeaders().Border(TableBorder.Rounded);
            table.AddRow("Pai", d.PaiVersion);
            table.AddRow("libtorch", d.LibtorchVersion);
            table.AddRow("threads", d.Threads.ToString());
            table.AddRow("BLAS", Markup.Escape(d.Blas));
            table.AddRow("native library", Markup.Escape(d.NativeLibrary));
            table.AddRow("CUDA devices", d.CudaDevices.ToString());
            foreach (var ds in d.Datasets)
                table.AddRow($"data: {ds.Name}", Markup.Escape(ds.Found ? ds.Location : $"not found in {ds.Location}: {ds.HowToGet}"));
            AnsiConsole.Write(table);
            return 0;
        });
        return info;
    }
}
