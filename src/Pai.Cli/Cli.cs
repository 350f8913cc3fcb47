using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Globalization;
using Spectre.Console;

namespace Pai.Cli;

/// <summary>Shared command plumbing: error handling and tables.</summary>
internal static class Cli
{
    /// <summary>
    /// Runs a command body; bad input becomes one clear line on stderr and exit code 2, any other
    /// failure exit code 1 (with libtorch's message when it came from there). A command that
    /// <paramref name="computes"/> runs with the requested threads; one that does not (or decides
    /// later, with <see cref="ConfigureThreads"/>) only has --threads checked, and so never pays
    /// for the load sample `--threads 0` takes.
    /// </summary>
    internal static int Guard(System.CommandLine.ParseResult parse, Func<int> body, bool computes = true)
    {
        try
        {
            if (computes) ConfigureThreads(parse);
            else Pai.Host.PaiHost.CheckThreads(parse.GetValue(PaiCommand.Threads));
            return body();
        }
        catch (Exception e) when (e is ArgumentException or DatasetException or CheckpointException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
        {
            var message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "") : e.Message;
            Console.Error.WriteLine($"error: {message}");
            return 2;
        }
        catch (Exception e) when (e is Pai.Torch.TorchException or InvalidOperationException or IOException or UnauthorizedAccessException or DllNotFoundException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>Sets libtorch's threads as --threads asks (Debian's libtorch starts with one), before the command computes.</summary>
    internal static void ConfigureThreads(System.CommandLine.ParseResult parse) => Pai.Host.PaiHost.ConfigureThreads(parse.GetValue(PaiCommand.Threads));

    /// <summary>
    /// Runs the parsed command. A command line that does not parse (an unknown option, a value of
    /// the wrong type, a missing argument) gets one line naming its first problem, with a
    /// suggestion for a mistyped name and where to find the options, and exit code 2, like any
    /// other bad input; the library's default would print every error and the whole usage.
    /// </summary>
    internal static int Invoke(ParseResult parse)
    {
        if (parse.Action is not ParseErrorAction) return parse.Invoke();
        var path = new List<string>();
        for (var c = parse.CommandResult; c is not null; c = c.Parent as CommandResult) path.Insert(0, c.Command.Name);
        // A mistyped name is the likelier cause of the other errors ("trian" leaves the command missing).
        var first = parse.Errors.FirstOrDefault(e => parse.UnmatchedTokens.Count > 0 && e.Message.Contains($"'{parse.UnmatchedTokens[0]}'")) ?? parse.Errors[0];
        var message = string.Join(' ', Describe(parse, first).Split((char[])['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Console.Error.WriteLine($"error: {message.TrimEnd('.')}; see `./{string.Join(' ', path)} --help`"); // as run through ./pai, the launcher
        return 2;
    }

    // The library's messages, in the project's words where they name a .NET type or an unmatched token.
    static string Describe(ParseResult parse, ParseError error)
    {
        if (error.SymbolResult is OptionResult { Tokens: [var token] } o && NotA(o.Option.ValueType, token.Value) is { } what)
            return $"{o.Option.Name}: '{token.Value}' is not {what}";
        if (parse.UnmatchedTokens.FirstOrDefault() is { } unmatched && error.Message.Contains($"'{unmatched}'"))
        {
            var known = OptionsOf(parse.CommandResult).SelectMany(o => o.Aliases.Prepend(o.Name))
                .Concat(parse.CommandResult.Command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name));
            var kind = unmatched.StartsWith('-') ? "unknown option" : "unexpected argument";
            return $"{kind} '{unmatched}'{Suggestion.didYouMean(known, unmatched)}";
        }
        return error.Message;
    }

    // What a token that does not convert to a numeric option's type is not (null when it converts, or the type is not numeric).
    static string? NotA(Type type, string text)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        var inv = CultureInfo.InvariantCulture;
        if (type == typeof(int))
            return int.TryParse(text, NumberStyles.Integer, inv, out _) ? null
                : System.Numerics.BigInteger.TryParse(text, NumberStyles.Integer, inv, out _) ? $"a whole number from {int.MinValue} to {int.MaxValue}" : "a whole number";
        if (type == typeof(double))
            return double.TryParse(text, NumberStyles.Float, inv, out _) ? null : "a number";
        return null;
    }

    // The options a command takes: its own and the recursive ones of the commands above it, hidden ones left out.
    static IEnumerable<Option> OptionsOf(CommandResult command)
    {
        for (var (c, own) = (command, true); c is not null; (c, own) = (c.Parent as CommandResult, false))
            foreach (var o in c.Command.Options)
                if (!o.Hidden && (own || o.Recursive)) yield return o;
    }

    /// <summary>
    /// One line in a colour on a terminal; redirected (logs, CI), the plain line as it is, since
    /// Spectre would wrap it at the table width and split a message a reader or a test greps for.
    /// </summary>
    internal static void ColourLine(string colour, string line)
    {
        if (Console.IsOutputRedirected) Console.WriteLine(line);
        else AnsiConsole.MarkupLine($"[{colour}]{Markup.Escape(line)}[/]");
    }

    /// <summary>
    /// Checks that a criterion comes with a sparsity and a sparsity with a criterion (a run
    /// without either trains densely unless <paramref name="required"/>).
    /// </summary>
    internal static Pai.Host.Runs.RunConfig CriterionAndSparsity(System.CommandLine.ParseResult p, ConfigOptions o, Pai.Host.Runs.RunConfig c, bool required)
    {
        var criterion = o.Given(p, nameof(c.Criterion));
        var sparsity = o.Given(p, nameof(c.Sparsity));
        var dense = c.Criterion.Trim().Equals(RunConfig.DenseCriterion, StringComparison.OrdinalIgnoreCase);
        if (required && (!criterion || !sparsity || dense))
            throw new ArgumentException("pruning needs a criterion and a sparsity, e.g. -c snip -s 0.9 (see `./pai list criteria`)");
        if (criterion && !dense && !sparsity)
            throw new ArgumentException($"the criterion '{c.Criterion}' needs a sparsity: add -s 0.9 (the fraction of weights removed), or leave out -c to train densely");
        if (sparsity && (!criterion || dense))
            throw new ArgumentException("a sparsity needs a criterion to choose the weights: add -c snip (see `./pai list criteria`), or leave out -s to train densely");
        return c;
    }

    /// <summary>
    /// Checks a count of local processes (--nproc ranks, --workers): at least 1, and no more than
    /// the cores allow threads, since each process runs at least one.
    /// </summary>
    internal static void CheckProcesses(int count, string option)
    {
        if (count < 1) throw new ArgumentException($"{option} must be at least 1, got {count}");
        Pai.Host.PaiHost.CheckCores(count, option, "each process runs at least one thread, and more than the cores only slow each other down");
    }

    /// <summary>
    /// Fails before any work when the output cannot be written where asked: its folder is missing or
    /// is a file, or takes no new file (read-only, /proc: tried by creating and deleting one), or the
    /// output is itself a folder. With <paramref name="folder"/> the output is a folder, created when
    /// missing: its nearest existing ancestor must take it.
    /// </summary>
    internal static void CheckWritable(string path, string option, bool folder = false)
    {
        var full = Path.GetFullPath(path);
        if (!folder && Directory.Exists(full))
            throw new ArgumentException($"{option}: '{full}' is a folder; name a file, e.g. {Path.Combine(full, "out.safetensors")}");
        if (folder && File.Exists(full))
            throw new ArgumentException($"{option}: '{full}' is a file, not a folder; name a folder or remove the file");
        var directory = folder ? full : Path.GetDirectoryName(full);
        if (folder)
            while (directory is not null && !Directory.Exists(directory) && !File.Exists(directory))
                directory = Path.GetDirectoryName(directory);
        if (directory is null) return;
        if (File.Exists(directory))
            throw new ArgumentException($"{option}: '{directory}' is a file, not a folder; write elsewhere");
        if (!Directory.Exists(directory))
            throw new ArgumentException($"{option}: the folder '{directory}' does not exist; create it first or write elsewhere");
        try
        {
            new FileStream(Path.Combine(directory, $".pai-write-test.{Guid.NewGuid():N}"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose).Dispose();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{option}: cannot create files in the folder '{directory}' (read-only or not a real folder); write elsewhere");
        }
    }

    /// <summary>
    /// A command's output files, checked before any work (writable, and no two naming the same file)
    /// and written all or none (<see cref="OutputSet"/>). Outputs not asked for are null.
    /// </summary>
    internal static OutputSet Outputs(params (string Option, string? Path)[] outputs)
    {
        var set = new OutputSet(outputs);
        foreach (var (option, path) in outputs)
            if (path is not null) CheckWritable(path, option);
        return set;
    }

    /// <summary>Per-layer kept/total/density, with collapsed layers marked.</summary>
    internal static void DensityTable(Pai.PruneReport report)
    {
        var table = new Table().Border(TableBorder.Rounded).Title(Markup.Escape($"{report.Criterion}: {report.Density:P2} of weights kept"));
        table.AddColumns("layer", "kept", "total", "density");
        foreach (var l in report.Layers)
        {
            var row = new[] { l.Name, l.Kept.ToString("N0"), l.Total.ToString("N0"), l.Density.ToString("P2") };
            if (l.Kept == 0) table.AddRow(row.Select(c => $"[red]{Markup.Escape(c)}[/]").ToArray());
            else table.AddRow(row.Select(Markup.Escape).ToArray());
        }
        table.AddRow("[bold]all[/]", report.Kept.ToString("N0"), report.Total.ToString("N0"), report.Density.ToString("P2"));
        AnsiConsole.Write(table);
        if (!report.Collapsed.IsEmpty)
            ColourLine("yellow", $"warning: layer collapse in {string.Join(", ", report.Collapsed)}: no weight left, the network is disconnected there (--keep-one-per-layer prevents it)");
        CurvatureTable(report.Curvature);
        var seconds = string.Join(", ", report.Seconds.Select(s => $"{s.Item1} {s.Item2:F1} s"));
        Console.WriteLine($"time: {seconds}");
    }

    /// <summary>
    /// Which estimator the Hessian diagonal took ("hdiag: exact (Gauss–Newton identity) T=200" or
    /// "hdiag: hutchinson (10 probes) …"), and for Hutchinson its per-layer method, probes and
    /// achieved median relative SE.
    /// </summary>
    internal static void CurvatureTable(IEnumerable<Pai.CurvatureDiagnostics> diagnostics)
    {
        foreach (var d in diagnostics)
        {
            var target = d.Target > 0 ? $", target median rel. SE {d.Target:G3}" : "";
            var cost = d.Layers.All(l => l.Method.IsExact) ? "" : $", {d.Hvps:N0} HVPs{target}";
            Console.WriteLine($"hdiag: {d.Estimator}{cost}");
            if (cost == "") continue; // exact everywhere: no probes, no error to show
            var table = new Table().Border(TableBorder.Rounded).Title(Markup.Escape($"{d.Estimator}: {d.Hvps:N0} HVPs{target}"));
            table.AddColumns("layer", "method", "probes", "median rel. SE");
            foreach (var l in d.Layers)
                table.AddRow(Markup.Escape(l.Name), Pai.CurvatureMethodModule.name(l.Method), l.Probes.ToString(), l.MedianRelativeSe.ToString("G3"));
            AnsiConsole.Write(table);
        }
    }
}
