using Xunit.Abstractions;
using System.Text.RegularExpressions;

namespace Pai.Host.Tests;

/// <summary>
/// The README's `pai …` examples (the command table of "Using Pai") run as written, in order, in
/// one folder, on a short budget appended per command, and each exits 0; and every option the
/// README names for a command is one that command's --help lists.
/// </summary>
public sealed class ReadmeExampleTests(ITestOutputHelper output)
{
    // Appended to keep the test short; none of these options appears in the README's examples.
    static readonly Dictionary<string, string[]> ShortBudget = new()
    {
        ["prune"] = ["--samples-per-class", "1"],
        ["train"] = ["--max-batches", "2"],
        ["run"] = ["--max-batches", "2", "--samples-per-class", "1"],
        ["sweep"] = ["--max-batches", "2", "--samples-per-class", "1"],
        ["estimate"] = ["--samples-per-class", "1"],
        ["autos label"] = ["--max-batches", "2", "--samples-per-class", "1"],
        ["autos fit"] = ["--epochs", "1", "--max-weights", "5000"],
        ["imp"] = ["--max-batches", "2", "--samples-per-class", "1"],
    };

    static string Readme()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "README.md")) && File.Exists(Path.Combine(dir.FullName, "Hybrid.sln")))
                return Path.Combine(dir.FullName, "README.md");
        throw new FileNotFoundException("README.md above the test's folder");
    }

    /// <summary>The commands of the README's table, as written.</summary>
    internal static List<string> Examples() =>
        File.ReadLines(Readme()).Select(l => Regex.Match(l, @"^\| `pai ([^`]*)`")).Where(m => m.Success).Select(m => m.Groups[1].Value).ToList();

    [Fact]
    public void Every_example_in_the_README_runs_as_written()
    {
        var examples = Examples();
        Assert.True(examples.Count >= 10, $"found only {examples.Count} examples");
        using var dir = new TempDirectory();
        foreach (var example in examples)
        {
            var words = Regex.Matches(example, "\"[^\"]*\"|\\S+").Select(m => m.Value.Trim('"')).ToList();
            var command = words[0] == "autos" ? $"autos {words[1]}" : words[0];
            var args = words.Concat(ShortBudget.GetValueOrDefault(command) ?? []).Concat(["--threads", "2"]).ToArray();
            var (code, stdout, stderr) = CliEndToEndTests.RunIn(dir.Path, args);
            output.WriteLine($"pai {example}: exit {code}");
            Assert.True(code == 0, $"`pai {example}` exited {code}\n{stdout}\n{stderr}");
        }
        Assert.True(File.Exists(Path.Combine(dir.Path, "pai-results", "report", "report.html")));
    }

    /// <summary>A README claim: <paramref name="Option"/> works in `pai <paramref name="Command"/>` (said on README line <paramref name="Line"/>).</summary>
    internal sealed record OptionClaim(string Command, string Option, int Line);

    // `pai COMMAND [SUBCOMMAND]` where "pai" is a word of its own (not the tail of a path such as bin/…/pai).
    static readonly Regex PaiCommand = new(@"(?<![\w/.-])pai\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?");
    // Long and short options, outside quoted values (formulas such as "-(abs(theta))" are no options).
    static readonly Regex OptionToken = new(@"(?<![\w-])(--[a-z][\w-]*|-[a-zA-Z])(?![\w-])");
    static readonly Regex Span = new("`([^`]+)`");
    // "`--opt …` (works) in `run` and `sweep`": the commands an option span is said to work in.
    static readonly Regex OptionIn = new(@"`(-[^`]+)`[^`]{0,15}?\bin\s+((?:`[a-z][\w -]*`(?:\s*(?:,|and|or)\s*)?)+)");

    /// <summary>
    /// Where the README says an option works in a command: options after `pai COMMAND` in one code
    /// span or code-block line; option spans in a table row whose first span is `pai COMMAND …`; and
    /// "`--opt …` in `command` and `command`" in a paragraph or row.
    /// </summary>
    internal static List<OptionClaim> OptionClaims(IReadOnlyList<string> lines, IReadOnlyCollection<string> commands)
    {
        var claims = new List<OptionClaim>();
        // The command named by `pai X [Y]`, with the text after it; null when X is no command.
        (string Command, string After)? Named(string text)
        {
            var m = PaiCommand.Match(text);
            if (!m.Success || !commands.Contains(m.Groups[1].Value)) return null;
            var sub = $"{m.Groups[1].Value} {m.Groups[2].Value}";
            return commands.Contains(sub) ? (sub, text[(m.Index + m.Length)..]) : (m.Groups[1].Value, text[(m.Groups[1].Index + m.Groups[1].Length)..]);
        }
        void Claim(string command, string text, int line)
        {
            foreach (Match o in OptionToken.Matches(Regex.Replace(text, "\"[^\"]*\"", " ")))
                claims.Add(new OptionClaim(command, o.Value, line));
        }
        void Prose(string text, int line, bool row)
        {
            var placed = new HashSet<int>(); // option spans said to work in named commands, not (only) the row's
            foreach (Match m in OptionIn.Matches(text))
            {
                placed.Add(m.Index);
                foreach (Match named in Span.Matches(m.Groups[2].Value))
                    if (commands.Contains(named.Groups[1].Value)) Claim(named.Groups[1].Value, m.Groups[1].Value, line);
            }
            var rowCommand = row && Span.Match(text) is { Success: true } first && Named(first.Groups[1].Value) is { } c ? c.Command : null;
            foreach (Match span in Span.Matches(text))
            {
                if (Named(span.Groups[1].Value) is { } named) Claim(named.Command, named.After, line);
                else if (rowCommand is not null && span.Groups[1].Value.StartsWith('-') && !placed.Contains(span.Index)) Claim(rowCommand, span.Groups[1].Value, line);
            }
        }
        var fenced = false;
        var paragraph = new List<string>();
        var start = 0;
        void EndParagraph()
        {
            if (paragraph.Count > 0) Prose(string.Join(" ", paragraph), start, row: false);
            paragraph.Clear();
        }
        for (var i = 0; i < lines.Count; i++)
        {
            var line = lines[i];
            if (line.TrimStart().StartsWith("```"))
            {
                EndParagraph();
                fenced = !fenced;
            }
            else if (fenced || line.StartsWith("    "))
            {
                EndParagraph();
                if (Named(line.Split('#')[0]) is { } named) Claim(named.Command, named.After, i + 1);
            }
            else if (line.StartsWith('|'))
            {
                EndParagraph();
                Prose(line, i + 1, row: true);
            }
            else if (string.IsNullOrWhiteSpace(line)) EndParagraph();
            else
            {
                if (paragraph.Count == 0) start = i + 1;
                paragraph.Add(line);
            }
        }
        EndParagraph();
        return claims.Distinct().ToList();
    }

    // The commands and subcommands `pai --help` lists ("autos fit"), with each one's help text.
    static Dictionary<string, string> CommandHelp()
    {
        static IEnumerable<string> Listed(string help) =>
            help.Split('\n').SkipWhile(l => !l.StartsWith("Commands:")).Skip(1).TakeWhile(l => l.StartsWith("  "))
                .Select(l => l.Trim().Split(' ')[0]).Where(c => c != "");
        var help = new Dictionary<string, string>();
        foreach (var command in Listed(CliEndToEndTests.Run("--help").Out))
        {
            var text = CliEndToEndTests.Run(command, "--help").Out;
            help[command] = text;
            foreach (var sub in Listed(text)) help[$"{command} {sub}"] = CliEndToEndTests.Run(command, sub, "--help").Out;
        }
        return help;
    }

    [Fact]
    public void The_README_finds_its_claims_in_table_rows_code_and_prose()
    {
        string[] readme =
        [
            "| `pai prune -m lenet5 -o m.st` | writes the mask; `--save-scores FILE` too; `--seeds 0` in `sweep` |",
            "`--ablation shuffle` (in `prune` and `run`; `--ablations none` in",
            "`sweep`) runs checks, `pai autos fit -l x` fits; the binary `bin/pai info --bogus` is a path.",
            "",
            "```sh",
            "pai worker --store URL --workers 2   # --not-an-option in a comment",
            "```",
            "    pai run -c \"-(abs(theta))\" -s 0.9",
        ];
        var claims = OptionClaims(readme, ["prune", "run", "sweep", "worker", "info", "autos", "autos fit"]).Select(c => $"{c.Command} {c.Option}@{c.Line}");
        Assert.Equal(
            ["sweep --seeds@1", "prune -m@1", "prune -o@1", "prune --save-scores@1", "prune --ablation@2", "run --ablation@2", "sweep --ablations@2", "autos fit -l@2",
             "worker --store@6", "worker --workers@6", "run -c@8", "run -s@8"],
            claims);
    }

    [Fact]
    public void Every_option_the_README_names_for_a_command_is_in_its_help()
    {
        var help = CommandHelp();
        Assert.Contains("autos fit", help.Keys);
        var claims = OptionClaims(File.ReadAllLines(Readme()), help.Keys);
        Assert.True(claims.Count >= 40, $"found only {claims.Count} option claims: {string.Join(", ", claims)}");
        Assert.Contains(new OptionClaim("prune", "--ablation", claims.Single(c => c is { Command: "prune", Option: "--ablation" }).Line), claims);
        var missing = claims.Where(c => !Regex.IsMatch(help[c.Command], $@"(?<![\w-]){Regex.Escape(c.Option)}(?![\w-])"))
            .Select(c => $"README line {c.Line}: `pai {c.Command} {c.Option}` is not in `pai {c.Command} --help`").ToList();
        foreach (var c in claims) output.WriteLine($"{c.Line}: pai {c.Command} {c.Option}");
        Assert.True(missing.Count == 0, string.Join("\n", missing));
    }
}
