using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Pai.Host.Tests;

/// <summary>
/// `pai sweep --enqueue`, `pai worker` and `pai sweep --workers N` as child processes on one
/// PostgreSQL store of the throwaway cluster: killed and paused workers, a database that goes down.
/// </summary>
[Collection("postgres")]
public sealed partial class PostgresWorkerTests(PostgresCluster cluster, ITestOutputHelper output) : IDisposable
{
    static readonly string Pai = Path.Combine(AppContext.BaseDirectory, "pai.dll");

    // Synthetic data and a tiny budget: each run takes a moment, long enough to be caught mid-run.
    static readonly string[] Tiny = ["-m", "lenet5", "-d", "synthetic", "--batch-size", "32", "--lr", "0.005", "--samples-per-class", "2", "--no-report"];

    readonly TempDirectory artifacts = new();
    readonly List<PaiProcess> processes = [];

    [GeneratedRegex(@"\(run ([0-9a-f]{16})[,)].*: test top-1")]
    private static partial Regex FinishedLine();

    [Fact]
    public void Three_workers_finish_every_run_once_despite_a_killed_worker_and_a_paused_one_that_is_fenced_off()
    {
        var url = cluster.NewDatabase();
        var stopwatch = Stopwatch.StartNew();
        var enqueue = Pai_(["sweep", .. Tiny, "--seeds", "0", "--store", url, "--artifacts", artifacts.Path, "--sweep", "grid", "--enqueue",
            "--criteria", "magnitude,random,snip", "--sparsities", "0.5,0.7,0.8,0.9", "--no-dense", "--epochs", "1", "--max-batches", "3"]).Wait();
        Assert.True(enqueue.Code == 0, enqueue.Text);
        Assert.Contains("12 runs added", enqueue.Text);
        var again = Pai_(["sweep", .. Tiny, "--seeds", "0", "--store", url, "--artifacts", artifacts.Path, "--sweep", "grid", "--enqueue",
            "--criteria", "magnitude,random,snip", "--sparsities", "0.5,0.7,0.8,0.9", "--no-dense", "--epochs", "1", "--max-batches", "3"]).Wait();
        Assert.Contains("0 runs added", again.Text); // the same grid again adds nothing

        string[] worker = ["worker", "--store", url, "--artifacts", artifacts.Path, "--sweep", "grid", "--lease", "3", "--threads", "1"];
        var workers = Enumerable.Range(0, 3).Select(_ => Pai_(worker)).ToList();
        var (killed, paused, survivor) = (workers[0], workers[1], workers[2]);

        var killedRun = WaitForRunHeldBy(url, killed);
        killed.Process.Kill(); // SIGKILL: no chance to release its claim
        killed.Process.WaitForExit();
        Assert.Equal("running", cluster.Execute(url, $"SELECT status FROM pai_runs WHERE key = '{killedRun}'"));

        var pausedRun = WaitForRunHeldBy(url, paused);
        Signal("STOP", paused);
        // Resume it only after another worker took its run over (its lease of 3 s expired). The run may
        // be one the paused worker took over from the killed one: count from the attempt it holds.
        var heldAttempt = Convert.ToInt32(cluster.Execute(url, $"SELECT attempts FROM pai_runs WHERE key = '{pausedRun}'"));
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (Convert.ToInt32(cluster.Execute(url, $"SELECT attempts FROM pai_runs WHERE key = '{pausedRun}'")) <= heldAttempt && DateTime.UtcNow < deadline)
            Thread.Sleep(200);
        Signal("CONT", paused);

        var pausedResult = paused.Wait();
        var survivorResult = survivor.Wait();
        output.WriteLine($"{stopwatch.Elapsed.TotalSeconds:0.0} s\n--- paused\n{pausedResult.Text}\n--- survivor\n{survivorResult.Text}");
        Assert.True(pausedResult.Code == 0, pausedResult.Text);
        Assert.True(survivorResult.Code == 0, survivorResult.Text);
        Assert.Contains($"run {pausedRun}", pausedResult.Text);
        // The paused worker may hold a run it took over from the killed one: "(run KEY, attempt 2)".
        Assert.Matches($@"\(run {pausedRun}(, attempt \d+)?\).* lost: write refused: .*fencing token", pausedResult.Text);

        using var store = new PostgresRunStore(url, artifacts.Path);
        var runs = store.All();
        Assert.Equal(12, runs.Count);
        Assert.All(runs, r =>
        {
            Assert.Equal(RunStatus.Finished, r.Status);
            Assert.Equal([1], r.Epochs.Select(e => e.Epoch));
            Assert.True(File.Exists(store.MaskPath(r.Key)), r.Key);
            Assert.True(File.Exists(store.CheckpointPath(r.Key)), r.Key);
        });
        // Each run reported finished exactly once over all workers, the killed one included.
        var finished = new[] { killed.Text, pausedResult.Text, survivorResult.Text }
            .SelectMany(text => FinishedLine().Matches(text).Select(m => m.Groups[1].Value)).ToList();
        Assert.Equal(runs.Select(r => r.Key).Order(), finished.Order());
        var reclaimed = runs.Single(r => r.Key == killedRun);
        Assert.Equal(killedRun == pausedRun ? 3 : 2, reclaimed.Attempts); // the paused worker may have taken the killed one's run
        Assert.NotEqual(killed.Process.Id, reclaimed.Owner!.ProcessId);
        var fenced = runs.Single(r => r.Key == pausedRun);
        Assert.True(fenced.Attempts >= 2);
        Assert.NotEqual(paused.Process.Id, fenced.Owner!.ProcessId);

        var status = Pai_(["status", "--store", url]).Wait();
        Assert.True(status.Code == 0, status.Text);
        Assert.Matches(@"grid\s*[│|]\s*0\s*[│|]\s*0\s*[│|]\s*12\s*[│|]\s*0\s*[│|]\s*12", status.Text); // pending, running, finished, failed, total
    }

    [Fact]
    public void A_database_down_at_start_or_mid_sweep_stops_the_worker_clearly_and_a_restart_continues_without_duplicates()
    {
        var url = cluster.NewDatabase();
        string[] sweep = ["sweep", .. Tiny, "--seeds", "0", "--store", url, "--artifacts", artifacts.Path, "--sweep", "s", "--enqueue",
            "--criteria", "magnitude,random", "--sparsities", "0.5,0.9", "--no-dense", "--epochs", "2", "--max-batches", "3"];
        Assert.Equal(0, Pai_(sweep).Wait().Code);
        string[] worker = ["worker", "--store", url, "--artifacts", artifacts.Path, "--sweep", "s", "--lease", "2", "--threads", "1"];

        cluster.Stop();
        try
        {
            var down = Pai_(worker).Wait();
            Assert.Equal(1, down.Code);
            Assert.Contains("cannot be reached", down.Text);
            Assert.Contains("start the worker again", down.Text);
        }
        finally
        {
            cluster.Start();
        }

        var first = Pai_(worker);
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (DateTime.UtcNow < deadline &&
               !(Convert.ToInt32(cluster.Execute(url, "SELECT count(*) FROM pai_runs WHERE status = 'finished'")) >= 1 &&
                 Convert.ToInt32(cluster.Execute(url, "SELECT count(*) FROM pai_runs WHERE status = 'running'")) == 1))
            Thread.Sleep(100);
        cluster.Stop();
        RunRecord[] before;
        try
        {
            var crashed = first.Wait();
            output.WriteLine(crashed.Text);
            Assert.Equal(1, crashed.Code);
            Assert.Contains("cannot be reached", crashed.Text);
        }
        finally
        {
            cluster.Start();
        }
        using (var peek = new PostgresRunStore(url, artifacts.Path)) before = [.. peek.All()];
        Assert.Contains(before, r => r.Status == RunStatus.Finished);
        Assert.Contains(before, r => r.Status == RunStatus.Running); // held by the worker that stopped

        var restarted = Pai_(worker).Wait();
        output.WriteLine(restarted.Text);
        Assert.True(restarted.Code == 0, restarted.Text);
        using var store = new PostgresRunStore(url, artifacts.Path);
        var after = store.All().ToDictionary(r => r.Key);
        Assert.Equal(4, after.Count);
        Assert.All(after.Values, r => Assert.Equal([1, 2], r.Epochs.Select(e => e.Epoch)));
        foreach (var was in before)
        {
            var now = after[was.Key];
            Assert.Equal(RunStatus.Finished, now.Status);
            if (was.Status == RunStatus.Finished)
                Assert.Equal((was.Attempts, was.Finished, was.FinalTop1), (now.Attempts, now.Finished, now.FinalTop1)); // not run again
            if (was.Status == RunStatus.Running) Assert.Equal(was.Attempts + 1, now.Attempts); // taken over once its lease expired
        }
        var finishedTwice = FinishedLine().Matches(first.Text + restarted.Text).GroupBy(m => m.Groups[1].Value).Where(g => g.Count() > 1);
        Assert.Empty(finishedTwice);
    }

    [Fact]
    public void Two_worker_processes_give_the_same_masks_and_accuracies_as_one()
    {
        var url = cluster.NewDatabase();
        using var sqlite = new TempDirectory();
        string[] grid = ["sweep", .. Tiny, "--seeds", "0", "--criteria", "magnitude,snip", "--sparsities", "0.5,0.9", "--epochs", "1", "--max-batches", "3", "--threads", "1"];
        var two = Pai_([.. grid, "--store", url, "--artifacts", artifacts.Path, "--workers", "2"]).Wait();
        Assert.True(two.Code == 0, two.Text);
        Assert.Contains("[worker 1]", two.Text);
        Assert.Contains("[worker 2]", two.Text);
        var one = Pai_([.. grid, "--results", sqlite.Path, "--workers", "1"]).Wait();
        Assert.True(one.Code == 0, one.Text);

        using var parallel = new PostgresRunStore(url, artifacts.Path);
        using var serial = new SqliteRunStore(sqlite.Path);
        var a = parallel.All().OrderBy(r => r.Key).ToList();
        var b = serial.All().OrderBy(r => r.Key).ToList();
        Assert.Equal(5, a.Count); // two criteria at two sparsities and the dense baseline
        Assert.Equal(b.Select(r => r.Key), a.Select(r => r.Key));
        Assert.True(a.Select(r => r.Owner!.ProcessId).Distinct().Count() == 2, "both workers ran some of the runs");
        foreach (var (x, y) in a.Zip(b))
        {
            Assert.Equal(RunStatus.Finished, x.Status);
            Assert.Equal(y.FinalTop1, x.FinalTop1);
            Assert.Equal(y.FinalLoss, x.FinalLoss);
            if (x.Config.Criterion != "dense")
                Assert.Equal(File.ReadAllBytes(serial.MaskPath(y.Key)), File.ReadAllBytes(parallel.MaskPath(x.Key)));
        }

        // The report reads everything it needs from the database.
        var report = Pai_(["report", "--store", url, "--artifacts", artifacts.Path]).Wait();
        Assert.True(report.Code == 0, report.Text);
        var csv = File.ReadAllText(Path.Combine(artifacts.Path, "report", "results.csv"));
        Assert.All(a, r => Assert.Contains(r.Key, csv));
    }

    // ---- helpers ----

    string WaitForRunHeldBy(string url, PaiProcess worker)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            Assert.False(worker.Process.HasExited, $"worker {worker.Process.Id} ended early: {worker.Text}");
            // A run it claimed just now, so that it is surely mid-run when the test acts.
            if (cluster.Execute(url, $"""
                    SELECT key FROM pai_runs WHERE status = 'running' AND owner_pid = {worker.Process.Id}
                        AND started > now() - interval '300 milliseconds'
                    """) is string key)
                return key;
            Thread.Sleep(50);
        }
        throw new TimeoutException($"worker {worker.Process.Id} claimed nothing in 60 s: {worker.Text}");
    }

    static void Signal(string signal, PaiProcess worker)
    {
        using var kill = Process.Start("kill", [$"-{signal}", worker.Process.Id.ToString()]);
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    PaiProcess Pai_(string[] args)
    {
        var process = PaiProcess.Start(args);
        processes.Add(process);
        return process;
    }

    public void Dispose()
    {
        foreach (var p in processes) p.Dispose();
        artifacts.Dispose();
    }

    /// <summary>A `pai` child process whose stdout and stderr are collected together.</summary>
    sealed class PaiProcess : IDisposable
    {
        readonly StringBuilder text = new();
        public required Process Process { get; init; }

        public string Text { get { lock (text) return text.ToString(); } }

        public static PaiProcess Start(string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(Pai);
            foreach (var a in args) psi.ArgumentList.Add(a);
            var p = new PaiProcess { Process = Process.Start(psi)! };
            p.Process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (p.text) p.text.AppendLine(e.Data); };
            p.Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (p.text) p.text.AppendLine(e.Data); };
            p.Process.BeginOutputReadLine();
            p.Process.BeginErrorReadLine();
            return p;
        }

        public (int Code, string Text) Wait()
        {
            Assert.True(Process.WaitForExit(TimeSpan.FromSeconds(180)), $"pai {Process.Id} did not finish in 180 s: {Text}");
            Process.WaitForExit(); // drain the output readers
            return (Process.ExitCode, Text);
        }

        public void Dispose()
        {
            try
            {
                if (!Process.HasExited)
                {
                    Signal("CONT", this);
                    Process.Kill(entireProcessTree: true);
                }
            }
            catch (InvalidOperationException) { }
            Process.Dispose();
        }
    }
}
