using System.Diagnostics;
using System.Text.RegularExpressions;
using Pai.Host.Reports;
using SkiaSharp;

namespace Pai.Host.Tests;

/// <summary>
/// The HTML report in a real browser: Debian's chromium, headless, takes a screenshot of
/// report.html and dumps the DOM of a copy that records, once the page has loaded, whether each
/// chart image loaded and its natural size.
/// </summary>
public class ReportBrowserTests
{
    const string Chromium = "/usr/bin/chromium";

    static RunRecord Run(string criterion, double sparsity, ulong seed, double top1, string ablation = "none", RunStatus status = RunStatus.Finished)
    {
        var config = new RunConfig { Criterion = criterion, Sparsity = sparsity, Seed = seed, WarmupBatches = 0, Ablation = ablation };
        PruneSummary? prune = null;
        if (criterion != "dense")
        {
            var layers = new[] { ("conv1.weight", 150L, 3.0), ("fc1.weight", 48_000L, 1.0), ("fc2.weight", 840L, 1.5) }
                .Select(l => new LayerDensityRecord(l.Item1, (long)Math.Round(Math.Min(1, (1 - sparsity) * l.Item3) * l.Item2), l.Item2)).ToList();
            prune = new PruneSummary(criterion, layers, [], 1, layers.Sum(l => (double)l.Kept) / layers.Sum(l => (double)l.Total));
        }
        return new RunRecord
        {
            Key = config.Key, Config = config, Status = status, FinalTop1 = status == RunStatus.Finished ? top1 : null,
            FinalTop5 = status == RunStatus.Finished ? Math.Min(1, top1 + 0.05) : null, Prune = prune, Error = status == RunStatus.Failed ? "boom" : null,
        };
    }

    static (int ExitCode, string Stdout, string Stderr) Browse(string profile, params string[] args)
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: install Debian's chromium (scripts/bootstrap.sh --tests does)");
        var psi = new ProcessStartInfo(Chromium)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        // We run as root: chromium needs --no-sandbox then. Its own profile, so that concurrent runs do not share one.
        foreach (var a in (string[])["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                     $"--user-data-dir={profile}", .. args])
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("chromium did not finish within 60 s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Pixels of the screenshot within <paramref name="tolerance"/> of <paramref name="hex"/> in every channel.</summary>
    static int PixelsNear(SKBitmap bitmap, string hex, int tolerance)
    {
        var c = SKColor.Parse(hex);
        var count = 0;
        foreach (var px in bitmap.Pixels)
            if (Math.Abs(px.Red - c.Red) <= tolerance && Math.Abs(px.Green - c.Green) <= tolerance && Math.Abs(px.Blue - c.Blue) <= tolerance) count++;
        return count;
    }

    [Fact]
    public void Headless_chromium_renders_the_html_report_with_every_chart_loaded()
    {
        using var dir = new TempDirectory();
        var runs = new List<RunRecord>();
        for (ulong seed = 0; seed < 3; seed++)
        {
            runs.Add(Run("dense", 0, seed, 0.91 + 0.002 * seed));
            foreach (var (criterion, drop) in new[] { ("random", 0.05), ("snip", 0.02), ("synflow", 0.015) })
                foreach (var sparsity in new[] { 0.9, 0.98 })
                    runs.Add(Run(criterion, sparsity, seed, 0.91 - drop * (sparsity == 0.9 ? 1 : 3) + 0.003 * seed));
            // Every optional column of the results table: ablations, failed and unfinished runs.
            runs.Add(Run("snip", 0.98, seed, 0.85 + 0.004 * seed, ablation: "shuffle"));
            runs.Add(Run("snip", 0.98, seed, 0.60 + 0.004 * seed, ablation: "invert"));
        }
        runs.Add(Run("synflow", 0.98, 7, 0, status: RunStatus.Failed));
        runs.Add(Run("synflow", 0.98, 8, 0, status: RunStatus.Running));
        var files = ReportWriter.Write(runs, dir.File("report"), new ReportOptions { RequireCharts = true });
        var charts = ReportCharts.Accuracy(ReportTables.Aggregate(runs)).Concat(ReportCharts.Layers(ReportCharts.LayerPanels(ReportCharts.DefaultLayerRuns(runs)))).ToList();
        Assert.Equal(2, charts.Count);

        // 1. Every chart image loads, at its natural size.
        var html = File.ReadAllText(files.Html);
        const string probe = """
            <script>
            window.addEventListener('load', () => {
              const pre = document.createElement('pre');
              pre.id = 'pai-images';
              pre.textContent = [...document.images].map(i => `${i.complete}:${i.naturalWidth}x${i.naturalHeight}`).join(' ');
              document.body.appendChild(pre);
              const tables = document.createElement('pre');
              tables.id = 'pai-tables';
              tables.textContent = [...document.querySelectorAll('div.table')].map(d => `${d.scrollWidth}/${d.clientWidth}`).join(' ');
              document.body.appendChild(tables);
            });
            </script>
            """;
        var probed = dir.File("report", "probe.html");
        File.WriteAllText(probed, html.Replace("</body>", probe + "</body>"));
        var dom = Browse(dir.File("profile-dom"), "--window-size=1400,2400", "--virtual-time-budget=5000", "--dump-dom", new Uri(probed).AbsoluteUri);
        Assert.True(dom.ExitCode == 0, $"chromium --dump-dom failed ({dom.ExitCode}):\n{dom.Stderr}");
        var images = Regex.Match(dom.Stdout, "<pre id=\"pai-images\">([^<]*)</pre>");
        Assert.True(images.Success, "the page's load event did not run the probe:\n" + dom.Stdout[..Math.Min(2000, dom.Stdout.Length)]);
        Assert.Equal(charts.Select(c => $"true:{c.Width}x{c.Height}"), images.Groups[1].Value.Split(' '));
        // Every table fits the page's width (1400 px wide window) by wrapping: nothing to scroll sideways.
        var tables = Regex.Match(dom.Stdout, "<pre id=\"pai-tables\">([^<]*)</pre>").Groups[1].Value.Split(' ');
        Assert.True(tables.Length >= 2, $"expected the results and the layer tables, got '{string.Join(' ', tables)}'");
        foreach (var t in tables)
        {
            var widths = t.Split('/').Select(int.Parse).ToArray();
            Assert.True(widths[0] <= widths[1], $"a table is {widths[0]} px wide in a {widths[1]} px page: {string.Join(' ', tables)}");
        }

        // 2. A screenshot of the page is not blank, and the charts' colours are on it (the tables have none).
        var shot = dir.File("shot.png");
        var screenshot = Browse(dir.File("profile-shot"), "--window-size=1400,2400", $"--screenshot={shot}", new Uri(files.Html).AbsoluteUri);
        Assert.True(screenshot.ExitCode == 0 && File.Exists(shot), $"chromium --screenshot failed ({screenshot.ExitCode}):\n{screenshot.Stderr}");
        using var bitmap = SKBitmap.Decode(shot);
        Assert.NotNull(bitmap);
        Assert.Equal(1400, bitmap.Width);
        var nonWhite = bitmap.Pixels.Count(p => p.Red < 235 || p.Green < 235 || p.Blue < 235);
        Assert.True(nonWhite > bitmap.Pixels.Length / 50, $"the screenshot is nearly blank: {nonWhite} of {bitmap.Pixels.Length} pixels are not white");
        foreach (var criterion in new[] { "random", "snip", "synflow" })
        {
            var near = PixelsNear(bitmap, CriterionColours.CriterionColour(criterion), 10);
            Assert.True(near >= 150, $"{criterion}'s colour {CriterionColours.CriterionColour(criterion)} covers only {near} pixels of the screenshot");
        }
    }
}
