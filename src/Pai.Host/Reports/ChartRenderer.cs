using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace Pai.Host.Reports;

/// <summary>A chart could not be rendered: node or npm missing, the npm install failed, or Vega failed.</summary>
public sealed class ChartRenderingException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Renders Vega-Lite specs to SVG with node and the npm packages vega and vega-lite, pinned by
/// <c>tools/charts/package.json</c> and <c>package-lock.json</c>. The first render runs
/// <c>npm ci</c> in that folder (under a file lock, so concurrent processes install once); it
/// runs again whenever the lock file changes. <c>node_modules</c> is never committed.
/// </summary>
public sealed class ChartRenderer
{
    /// <summary>Environment variable naming the charts folder (the one with render.mjs).</summary>
    public const string ChartsDirectoryVariable = "PAI_CHARTS_DIR";

    const string Script = "render.mjs";
    const string Stamp = ".pai-installed";
    const string InstallHint = "Install them with `apt-get install nodejs npm` (node 20 or newer).";

    readonly string? _chartsDirectory;
    readonly string? _node;
    readonly string? _npm;

    /// <summary>Creates a renderer.</summary>
    /// <param name="chartsDirectory">Folder with render.mjs and package-lock.json (null: <see cref="FindChartsDirectory"/>).</param>
    /// <param name="nodeExecutable">node to run (null: "node", then "nodejs", on PATH).</param>
    /// <param name="npmExecutable">npm to run (null: "npm" on PATH).</param>
    /// <param name="renderTimeout">Limit for one render (default 2 minutes).</param>
    /// <param name="installTimeout">Limit for <c>npm ci</c> (default 10 minutes).</param>
    public ChartRenderer(string? chartsDirectory = null, string? nodeExecutable = null, string? npmExecutable = null,
        TimeSpan? renderTimeout = null, TimeSpan? installTimeout = null)
    {
        _chartsDirectory = chartsDirectory;
        _node = nodeExecutable;
        _npm = npmExecutable;
        RenderTimeout = renderTimeout ?? TimeSpan.FromMinutes(2);
        InstallTimeout = installTimeout ?? TimeSpan.FromMinutes(10);
    }

    /// <summary>Limit for one render.</summary>
    public TimeSpan RenderTimeout { get; }

    /// <summary>Limit for <c>npm ci</c>.</summary>
    public TimeSpan InstallTimeout { get; }

    /// <summary>
    /// The charts folder: <c>$PAI_CHARTS_DIR</c> when set, else the first <c>tools/charts</c> with
    /// render.mjs found walking up from the application's directory, then from the current
    /// directory. Null when none is found.
    /// </summary>
    public static string? FindChartsDirectory()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable(ChartsDirectoryVariable);
        if (!string.IsNullOrEmpty(fromEnvironment)) return Path.GetFullPath(fromEnvironment);
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "tools", "charts");
                if (File.Exists(Path.Combine(candidate, Script))) return candidate;
            }
        }
        return null;
    }

    /// <summary>The charts folder this renderer uses; throws <see cref="ChartRenderingException"/> when none is found.</summary>
    public string ChartsDirectory =>
        _chartsDirectory is not null ? Path.GetFullPath(_chartsDirectory)
        : FindChartsDirectory() ?? throw new ChartRenderingException(
            $"the chart renderer (tools/charts/{Script}) was not found above {AppContext.BaseDirectory} or {Environment.CurrentDirectory}; " +
            $"set {ChartsDirectoryVariable} to the folder that holds {Script}");

    /// <summary>Resolves node; throws <see cref="ChartRenderingException"/> with install instructions when missing.</summary>
    public string NodeExecutable => Resolve(_node, ["node", "nodejs"], "node");

    /// <summary>Resolves npm; throws <see cref="ChartRenderingException"/> with install instructions when missing.</summary>
    public string NpmExecutable => Resolve(_npm, ["npm"], "npm");

    static string Resolve(string? configured, string[] names, string what)
    {
        if (configured is not null)
        {
            var found = configured.Contains(Path.DirectorySeparatorChar) ? (File.Exists(configured) ? configured : null) : OnPath(configured);
            return found ?? throw new ChartRenderingException($"{what} was not found at '{configured}'. {InstallHint}");
        }
        foreach (var name in names)
            if (OnPath(name) is { } path) return path;
        throw new ChartRenderingException($"{what} was not found on PATH; charts are rendered with node and npm. {InstallHint}");
    }

    static string? OnPath(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// Makes sure the npm packages are installed: runs <c>npm ci</c> when node_modules is missing
    /// or was installed from another package-lock.json. Safe to call from concurrent processes.
    /// </summary>
    public void EnsureInstalled()
    {
        var dir = ChartsDirectory;
        var lockFile = Path.Combine(dir, "package-lock.json");
        if (!File.Exists(lockFile))
            throw new ChartRenderingException($"{lockFile} is missing: the chart renderer's dependencies are not pinned");
        var expected = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(lockFile)));
        var stamp = Path.Combine(dir, "node_modules", Stamp);
        if (IsStamped(stamp, expected)) return;

        using var installLock = AcquireInstallLock(dir);
        if (IsStamped(stamp, expected)) return; // another process installed while we waited
        var npm = NpmExecutable;
        _ = NodeExecutable; // fail early, with the install hint, when only npm is present
        var result = Run(npm, ["ci", "--no-audit", "--no-fund", "--loglevel=error"], dir, stdin: null, InstallTimeout);
        if (result.ExitCode != 0)
            throw new ChartRenderingException(
                $"`npm ci` in {dir} failed (exit {result.ExitCode}); the npm registry must be reachable the first time a chart is drawn:\n{Tail(result.Stderr)}");
        File.WriteAllText(stamp, expected);
    }

    static bool IsStamped(string stamp, string expected) =>
        File.Exists(stamp) && File.ReadAllText(stamp).Trim() == expected;

    static FileStream AcquireInstallLock(string dir)
    {
        var path = Path.Combine(dir, ".install.lock");
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(15);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(250);
            }
        }
    }

    /// <summary>Renders one Vega-Lite spec (JSON) to an SVG document, installing the packages first if needed.</summary>
    public string RenderSvg(string vegaLiteJson)
    {
        ArgumentNullException.ThrowIfNull(vegaLiteJson);
        EnsureInstalled();
        var dir = ChartsDirectory;
        var result = Run(NodeExecutable, [Path.Combine(dir, Script)], dir, vegaLiteJson, RenderTimeout);
        if (result.ExitCode != 0 || !result.Stdout.TrimStart().StartsWith("<svg", StringComparison.Ordinal))
            throw new ChartRenderingException($"rendering a chart with node failed (exit {result.ExitCode}):\n{Tail(result.Stderr)}");
        return result.Stdout;
    }

    static string Tail(string text, int max = 2000) => text.Length <= max ? text.Trim() : "…" + text[^max..].Trim();

    sealed record ProcessResult(int ExitCode, string Stdout, string Stderr);

    static ProcessResult Run(string exe, IEnumerable<string> args, string workingDirectory, string? stdin, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(exe)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new ChartRenderingException($"could not start {exe}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ChartRenderingException($"could not start {exe}: {e.Message}. {InstallHint}", e);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            try
            {
                if (stdin is not null) process.StandardInput.Write(stdin);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The process exited before reading its input; its exit code and stderr say why.
            }
            if (!process.WaitForExit(timeout))
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                throw new ChartRenderingException($"{Path.GetFileName(exe)} {string.Join(' ', psi.ArgumentList)} did not finish within {timeout}");
            }
            process.WaitForExit();
            return new ProcessResult(process.ExitCode, stdout.Result, stderr.Result);
        }
    }
}
