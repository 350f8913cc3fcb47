using System.Diagnostics;

namespace Pai.Host.Tests;

/// <summary>The `pai` command as a user runs it: a child process on synthetic data with a tiny budget.</summary>
public class CliEndToEndTests
{
    static readonly string Pai = Path.Combine(AppContext.BaseDirectory, "pai.dll");

    // A tiny budget: synthetic 1×28×28 data, a few batches per epoch, a learning rate lenet5 trains with.
    static readonly string[] Tiny = ["-m", "lenet5", "-d", "synthetic", "--max-batches", "4", "--batch-size", "32", "--lr", "0.01", "--samples-per-class", "2", "--threads", "1"];

    static Process Start(params string[] args) => StartIn(null, args);

    static Process StartIn(string? workingDirectory, params string[] args) => StartWith(workingDirectory, null, args);

    // Environment entries set to null are removed from the child's environment.
    static Process StartWith(string? workingDirectory, IReadOnlyDictionary<string, string?>? environment, string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null) psi.WorkingDirectory = workingDirectory;
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
            if (value is null) psi.Environment.Remove(name);
            else psi.Environment[name] = value;
        psi.ArgumentList.Add(Pai);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    internal static (int Code, string Out, string Err) Run(params string[] args) => RunIn(null, args);

    /// <summary>Runs `pai` with the arguments in a working directory; returns its exit code and output.</summary>
    internal static (int Code, string Out, string Err) RunIn(string? workingDirectory, params string[] args) => RunWith(workingDirectory, null, args);

    /// <summary>Runs `pai` with the arguments in a working directory and environment; returns its exit code and output.</summary>
    internal static (int Code, string Out, string Err) RunWith(string? workingDirectory, IReadOnlyDictionary<string, string?>? environment, params string[] args)
    {
        using var p = StartWith(workingDirectory, environment, args);
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }

    [Fact]
    public void A_sweep_in_worker_processes_shows_from_its_main_process_the_runs_done_and_left_and_the_time_left()
    {
        using var dir = new TempDirectory();
        string[] Sweep(string results) => ["sweep", .. Tiny, "--seeds", "0,1", "--criteria", "magnitude,random", "--sparsities", "0.5", "--epochs", "1",
            "--results", Path.Combine(dir.Path, results), "--no-report", "--workers", "2"];
        // The interval is an environment setting (30 s by default), here short enough to see the sweep in between.
        var (code, output, err) = RunWith(null, new Dictionary<string, string?> { ["PAI_PROGRESS_INTERVAL"] = "0.2" }, Sweep("r"));
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith("sweep main: ", StringComparison.Ordinal) && l.Contains(" runs done")).ToList();
        // Every line counts the sweep's 6 runs (3 cells × 2 seeds); in between, with the time left from the runs finished so far.
        Assert.All(lines, l => Assert.Matches(@"^sweep main: (\d) of 6 runs done, (\d) left \([0-2] running\), 0 failed", l));
        Assert.All(lines, l => Assert.Equal(6, int.Parse(l[12..13]) + int.Parse(l.Split(", ")[1][..1]))); // done + left
        var shown = string.Join("\n", lines);
        Assert.True(lines.Any(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^sweep main: [1-5] of 6 runs done, [1-5] left \([0-2] running\), 0 failed, about \d+ (s|min) left$")), shown);
        Assert.Equal("sweep main: 6 of 6 runs done, 0 left (0 running), 0 failed", lines[^1]);
        var done = lines.Select(l => int.Parse(l[12..13])).ToList();
        Assert.True(done.Order().SequenceEqual(done), shown); // never counted back

        // The setting is checked before the store is made.
        var refused = RunWith(null, new Dictionary<string, string?> { ["PAI_PROGRESS_INTERVAL"] = "0" }, Sweep("refused"));
        Assert.Equal(2, refused.Code);
        Assert.Equal("error: PAI_PROGRESS_INTERVAL must be a number of seconds from 0.01 to 86400, got '0'; unset it for the default of 30", refused.Err.Trim());
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "refused")));
    }

    [Fact]
    public void Sweep_records_every_run_and_writes_a_report_containing_each()
    {
        using var dir = new TempDirectory();
        var (code, output, err) = Run(["sweep", .. Tiny, "--seeds", "0", "--criteria", "magnitude,snip", "--sparsities", "0.5,0.9", "--epochs", "1", "--results", dir.Path]);
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Contains("report:", output);
        // lenet5 has no batch norm to warm up: said once for the sweep, not once per pruned run.
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(output, "has no batch norm"));

        using var store = new SqliteRunStore(dir.Path);
        var runs = store.All();
        Assert.Equal(5, runs.Count); // 2 criteria × 2 sparsities + dense
        Assert.All(runs, r => Assert.Equal(RunStatus.Finished, r.Status));
        Assert.All(runs, r => Assert.Single(r.Epochs));
        Assert.All(runs.Where(r => r.Config.Criterion != "dense"), r =>
        {
            Assert.Equal(1 - r.Config.Sparsity, r.Prune!.Density, 3);
            Assert.True(File.Exists(store.MaskPath(r.Key)));
            // The model's multiply-adds are recorded with the prune summary: pruning removes some, never all.
            Assert.All(r.Prune.Layers, l => Assert.True(l.Flops > 0, $"{l.Name} has no multiply-adds recorded"));
            Assert.InRange(r.Prune.RemainingFlopsFraction!.Value, 0.01, 0.999);
        });
        Assert.All(runs, r => Assert.True(File.Exists(store.CheckpointPath(r.Key))));
        Assert.All(runs, r => Assert.Equal("1.13.0", r.LibtorchVersion));
        Assert.All(runs, r => Assert.True(r.PhaseSeconds.ContainsKey("training")));
        // Statistics are computed once and reused across sparsities: the one worth storing is snip's gradient (θ costs nothing).
        Assert.Single(Directory.GetFiles(Path.Combine(dir.Path, "scores")));

        var csv = File.ReadAllText(Path.Combine(dir.Path, "report", "results.csv"));
        var markdown = File.ReadAllText(Path.Combine(dir.Path, "report", "report.md"));
        foreach (var r in runs) Assert.Contains(r.Key, csv);
        foreach (var c in new[] { "dense", "magnitude", "snip" }) Assert.Contains(c, markdown);
        Assert.Contains("FLOPs %", markdown);
        Assert.True(File.Exists(Path.Combine(dir.Path, "report", "report.html")));

        // Running the same sweep again does nothing new.
        var again = Run(["sweep", .. Tiny, "--seeds", "0", "--criteria", "magnitude,snip", "--sparsities", "0.5,0.9", "--epochs", "1", "--results", dir.Path, "--no-report"]);
        Assert.Equal(0, again.Code);
        Assert.Contains("0 run, 5 skipped, 0 failed", again.Out);
    }

    [Fact]
    public void Curvature_options_reach_the_store_with_the_achieved_error_even_from_cached_scores()
    {
        using var dir = new TempDirectory();
        // 20 scoring batches × 4 layers × 2 probes = 160 HVPs.
        var (code, output, err) = Run(["sweep", .. Tiny, "--seeds", "0", "--criteria", "hts", "--sparsities", "0.5,0.9", "--epochs", "1", "--probe-scope", "layer",
            "--hvp-budget", "160", "--no-dense", "--no-report", "--results", dir.Path]);
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        using var store = new SqliteRunStore(dir.Path);
        var runs = store.All();
        Assert.Equal(2, runs.Count);
        Assert.All(runs, r =>
        {
            Assert.Equal(160, r.Config.HvpBudget);
            var curvature = Assert.Single(r.Prune!.Curvature!);
            Assert.Equal(160, curvature.Hvps);
            Assert.Equal(4, curvature.Layers.Count);
            Assert.All(curvature.Layers, l => Assert.True(l is { Method: "hutchinson", Probes: 2, MedianRelativeSe: > 0 }, l.ToString()));
        });

        string[] scoring = ["-m", "lenet5", "-d", "synthetic", "--samples-per-class", "2", "--threads", "1"];
        var estimate = Run(["estimate", .. scoring, "--budgets", "80", "--scopes", "full;0+1,2+3", "--criteria", "hutch_obd", "--sparsities", "0.9", "--class-passes", "2"]);
        Assert.True(estimate.Code == 0, $"exit {estimate.Code}\n{estimate.Out}\n{estimate.Err}");
        Assert.Contains("0+1,2+3", estimate.Out);
        // lenet5 is piecewise linear: every layer's error is against its exact diagonal.
        Assert.Matches(@"exact reference for conv1\.weight, conv2\.weight, fc1\.weight, fc2\.weight", estimate.Out);
        // The top-classes approximation is compared with the exact diagonal: its error per layer and its masks' overlap.
        Assert.Matches(@"top-classes K=2[^\n]*fc2\.weight", estimate.Out);
        Assert.Matches(@"sampled-classes K=2[^\n]*fc2\.weight", estimate.Out);
        Assert.Contains("top-classes K=2 vs exact", estimate.Out);
        Assert.Contains("sampled-classes K=2 vs exact", estimate.Out);
        Assert.Contains("closed-form", Run(["prune", .. scoring, "-c", "hutch_obd", "-s", "0.9", "--exact-last-layer", "-o", Path.Combine(dir.Path, "m.safetensors")]).Out);

        var bad = Run(["prune", .. scoring, "-c", "hutch_obd", "-s", "0.9", "--probe-scope", "0+1", "-o", Path.Combine(dir.Path, "m.safetensors")]);
        Assert.Equal(2, bad.Code);
        Assert.Contains("exactly once", bad.Err);
    }

    [Fact]
    public void A_sweep_killed_with_SIGKILL_resumes_without_losing_or_duplicating_anything()
    {
        using var dir = new TempDirectory();
        string[] sweep = ["sweep", .. Tiny, "--seeds", "0", "--criteria", "magnitude,random", "--sparsities", "0.5,0.8", "--epochs", "4", "--results", dir.Path, "--no-report"];
        using (var p = Start(sweep))
        {
            _ = p.StandardOutput.ReadToEndAsync();
            _ = p.StandardError.ReadToEndAsync();
            // Kill it once one run has finished and another has recorded an epoch but not finished.
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(200);
                Assert.False(p.HasExited, $"the sweep ended before it could be killed (exit {(p.HasExited ? p.ExitCode : 0)})");
                if (!File.Exists(Path.Combine(dir.Path, SqliteRunStore.DatabaseFileName))) continue;
                using var peek = new SqliteRunStore(dir.Path);
                var all = peek.All();
                if (all.Any(r => r.Status == RunStatus.Finished) && all.Any(r => r.Status == RunStatus.Running && r.Epochs.Count > 0)) break;
            }
            p.Kill(); // SIGKILL: no cleanup runs
            p.WaitForExit();
        }

        Dictionary<string, RunRecord> before;
        using (var store = new SqliteRunStore(dir.Path))
        {
            before = store.All().ToDictionary(r => r.Key);
            Assert.Contains(before.Values, r => r.Status == RunStatus.Finished);
            Assert.Contains(before.Values, r => r.Status == RunStatus.Running);
        }

        var (code, output, err) = Run(sweep);
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        using var after = new SqliteRunStore(dir.Path);
        var runs = after.All();
        Assert.Equal(5, runs.Count);
        foreach (var r in runs)
        {
            Assert.Equal(RunStatus.Finished, r.Status);
            Assert.Equal([1, 2, 3, 4], r.Epochs.Select(e => e.Epoch));
            var was = before[r.Key];
            if (was.Status == RunStatus.Finished)
            {
                Assert.Equal(1, r.Attempts); // skipped, not rerun
                Assert.Equal(was.FinalTop1, r.FinalTop1);
            }
            if (was.Status == RunStatus.Running) Assert.Equal(2, r.Attempts); // restarted once
        }
        Assert.Contains("finished earlier", output);
    }

    // --sparse-kernels auto (the default) chooses each layer's kernel by timing, and the two round
    // differently: the choices are kept in the cache folder, so a rerun on this machine chooses
    // alike and writes bit-identical weights. The file decides (edited, the run follows it), the run
    // record and the progress line say how each layer trained and its measured speedup, and a
    // corrupt file is measured anew and replaced.
    [Fact]
    public void Auto_sparse_kernels_keep_their_choices_so_a_rerun_gives_bit_identical_weights()
    {
        using var dir = new TempDirectory();
        var cacheFile = dir.File("cache", "sparse-kernels.json");
        var environment = new Dictionary<string, string?> { [CalibrationCache.DirectoryVariable] = dir.File("cache") };
        (RunRecord Run, byte[] Checkpoint, string Mask) RunOnce(string name, params string[] extra)
        {
            var results = dir.File(name);
            var (code, output, err) = RunWith(null, environment, ["run", .. Tiny, "-c", "snip", "-s", "0.98", "--epochs", "1", "--results", results, .. extra]);
            Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
            // e.g. "sparse kernels (auto): conv2 1.8×, fc1 2.4×; dense: conv1 (0.8×), fc2 (0.9×)"
            var line = output.Split('\n').First(l => l.Contains("sparse kernels (auto): "));
            foreach (var layer in new[] { "conv1", "conv2", "fc1", "fc2" })
                Assert.Matches($@"\b{layer} \(?\d+\.\d+×", line);
            using var store = new SqliteRunStore(results);
            var run = Assert.Single(store.All());
            return (run, File.ReadAllBytes(store.CheckpointPath(run.Key)), store.MaskPath(run.Key));
        }
        static List<string?> Kernels(RunRecord r) => r.Prune!.Layers.Select(l => l.Kernel).ToList();

        var first = RunOnce("first");
        Assert.True(File.Exists(cacheFile), "the calibration's choices are kept");
        Assert.All(Kernels(first.Run), k => Assert.Contains(k, new[] { "sparse", "dense" }));
        // Each layer's measured speedup, and sparse exactly where it measured faster.
        Assert.All(first.Run.Prune!.Layers, l =>
        {
            Assert.True(l.Speedup is > 0 and < double.PositiveInfinity, $"{l.Name}: speedup {l.Speedup}");
            Assert.Equal(l.Speedup > 1 ? "sparse" : "dense", l.Kernel);
        });
        var second = RunOnce("second");
        Assert.Equal(Kernels(first.Run), Kernels(second.Run));
        Assert.Equal(first.Run.Prune!.Layers.Select(l => l.Speedup), second.Run.Prune!.Layers.Select(l => l.Speedup)); // from the cache
        Assert.True(first.Checkpoint.SequenceEqual(second.Checkpoint), "the rerun's checkpoint differs");

        // Every choice made dense, then every one sparse: the runs follow the file, not a new measurement.
        foreach (var (choice, kernel) in new[] { ("dense", "dense"), ("BatchInnermost", "sparse") })
        {
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cacheFile))!;
            var entries = json["entries"]!.AsObject();
            Assert.Equal(4, entries.Count); // lenet5's four masked layers
            foreach (var (_, entry) in entries) entry!["choice"] = choice;
            File.WriteAllText(cacheFile, json.ToJsonString());
            Assert.All(Kernels(RunOnce(choice).Run), k => Assert.Equal(kernel, k));
        }

        File.WriteAllText(cacheFile, "{\"version\": 2, \"entries\": {\"linear|");
        RunOnce("corrupt");
        Assert.Equal(4, System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cacheFile))!["entries"]!.AsObject().Count);

        // `pai train --mask` says in its checkpoint which layers trained sparse (on: all of them).
        var checkpoint = dir.File("trained.safetensors");
        var trained = RunWith(null, environment, ["train", "-m", "lenet5", "-d", "synthetic", "--mask", first.Mask, "-e", "1", "--max-batches", "1",
            "--threads", "1", "--sparse-kernels", "on", "-o", checkpoint]);
        Assert.True(trained.Code == 0, $"exit {trained.Code}\n{trained.Out}\n{trained.Err}");
        Assert.Contains("sparse kernels (on): conv1, conv2, fc1, fc2", trained.Out);
        Assert.Equal("conv1,conv2,fc1,fc2", Safetensors.ReadHeader(checkpoint).Metadata["sparse_layers"]);
    }

    // TERM says a colour terminal, but the output goes to a pipe (these helpers redirect it):
    // plain text, no ANSI code, tables at 120 columns or at COLUMNS; NO_COLOR changes nothing there.
    [Theory]
    [InlineData(null, null)]
    [InlineData("1", null)]
    [InlineData(null, "90")]
    public void Redirected_output_is_plain_text_at_a_readable_width(string? noColor, string? columns)
    {
        var environment = new Dictionary<string, string?> { ["TERM"] = "xterm-256color", ["NO_COLOR"] = noColor, ["COLUMNS"] = columns };
        foreach (var command in new[] { "list criteria", "info", "sweep --dry-run" })
        {
            var (code, output, err) = RunWith(null, environment, command.Split(' '));
            Assert.True(code == 0, $"pai {command}: exit {code}\n{output}\n{err}");
            Assert.DoesNotContain('\u001b', output + err);
        }
        // The data sets' long hints wrap: the info table takes the whole width, and no line is wider.
        var width = int.Parse(columns ?? "120");
        var lines = RunWith(null, environment, "info").Out.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        Assert.All(lines, l => Assert.True(l.Length <= width, $"{l.Length} columns: {l}"));
        Assert.Equal(width, lines.Max(l => l.Length));
    }

    [Theory]
    [InlineData("status")]
    [InlineData("report")]
    [InlineData("worker")]
    public void Reading_an_empty_database_file_leaves_it_empty(string command)
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("pai.db"), []);
        var (code, output, err) = Run(command, "--results", dir.Path, "--threads", "1");
        Assert.True(code == 1, $"exit {code}\n{output}\n{err}");
        Assert.Contains("holds no Pai results store (it is empty)", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(0, new FileInfo(dir.File("pai.db")).Length);
        Assert.Equal(["pai.db"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("prune -m lenet9 -c snip -s 0.9", "valid models")]
    [InlineData("prune -m lenet5 -c snipp -s 0.9", "valid criteria")]
    [InlineData("prune -m lenet5 -c snip -s 1.5", "--sparsity must be at least 0 and below 1")]
    [InlineData("run -m lenet5 -d cifar10 --data /nonexistent -c snip -s 0.9", "/nonexistent")]
    [InlineData("report --results /nonexistent-results", "no results store")]
    public void Bad_input_gets_a_clear_message_and_a_nonzero_exit(string args, string expected)
    {
        var (code, output, err) = Run(args.Split(' '));
        Assert.NotEqual(0, code);
        Assert.Contains(expected, err + output);
        Assert.DoesNotContain("Unhandled exception", err);
    }
}
