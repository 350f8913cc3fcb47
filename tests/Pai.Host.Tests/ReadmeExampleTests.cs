using Xunit.Abstractions;
using System.Text.RegularExpressions;

namespace Pai.Host.Tests;

/// <summary>
/// The README's `pai …` examples (the command table of "Using Pai") run as written, in order, in
/// one folder, on a short budget appended per command, and each exits 0.
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
}
