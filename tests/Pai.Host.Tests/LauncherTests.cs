using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Pai.Host.Tests;

/// <summary>
/// `./pai`, the launcher at the repository root, is how a fresh clone runs the `pai` command (nothing
/// puts `pai` on the PATH): it runs, and every command a pipeline script tells the user to run is
/// written that way.
/// </summary>
public sealed class LauncherTests
{
    [Fact]
    public async Task The_launcher_at_the_repository_root_runs_pai()
    {
        var root = PipelineTests.RepositoryRoot();
        // Started as a user types it (the file itself, so its executable bit and #! line count), from another folder.
        var psi = new ProcessStartInfo(Path.Combine(root, "pai")) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        psi.ArgumentList.Add("info");
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"./pai info exited {p.ExitCode}\n{output}\n{await err}");
        Assert.Contains("libtorch", output);
        Assert.Contains("libpai_torch.so", output);
    }

    [Fact]
    public void Every_command_a_pipeline_script_prints_is_written_as_the_launcher_runs_it()
    {
        var help = CliEndToEndTests.Run("--help");
        Assert.Equal(0, help.Code);
        // The command names, from the "Commands:" section of `pai --help`.
        var commands = Regex.Matches(help.Out[help.Out.IndexOf("Commands:")..], @"^\s{2}([a-z]+)\b", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToList();
        Assert.Contains("report", commands);
        var bare = new Regex($@"(?<![\w./-])pai ({string.Join('|', commands)})\b");
        var launcher = 0;
        foreach (var script in Directory.GetFiles(Path.Combine(PipelineTests.RepositoryRoot(), "pipelines"), "*.fsx"))
            foreach (var line in File.ReadLines(script).Where(l => !l.TrimStart().StartsWith("//")))
                foreach (var literal in Regex.Matches(line, @"""(?:[^""\\]|\\.)*""").Select(m => m.Value))
                {
                    Assert.False(bare.IsMatch(literal), $"{Path.GetFileName(script)} prints {literal}: write the command as `./pai …` (README, \"Using Pai\")");
                    if (literal.Contains("./pai ")) launcher++;
                }
        Assert.True(launcher > 0, "no pipeline script names a command: this test checks nothing");
    }
}
