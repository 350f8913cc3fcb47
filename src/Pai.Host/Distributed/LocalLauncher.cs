using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Pai.Host.Distributed;

/// <summary>
/// Starts the ranks of a data-parallel run on this machine, as torchrun does: N child processes
/// with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT set. Rank 0
/// shares this console; the others' output is forwarded with a "[rank r]" prefix. When a rank
/// fails the others stop by themselves (the heartbeat names the lost rank); any still running
/// after the heartbeat timeout and a grace period are killed.
/// </summary>
public static class LocalLauncher
{
    /// <summary>
    /// Runs <paramref name="arguments"/> of <paramref name="executable"/> as <paramref name="ranks"/>
    /// ranks and returns 0 when every rank succeeded, else the first failing rank's exit code.
    /// </summary>
    public static int Run(string executable, IReadOnlyList<string> arguments, int ranks, TextWriter log,
        TimeSpan? timeout = null, TimeSpan? heartbeatTimeout = null)
    {
        if (ranks < 1) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "--nproc must be at least 1");
        timeout ??= DistributedEnvironment.TimeoutFromEnvironment(DistributedEnvironment.TimeoutVariable, 1800);
        heartbeatTimeout ??= DistributedEnvironment.TimeoutFromEnvironment(DistributedEnvironment.HeartbeatTimeoutVariable, 30);
        var port = FreePort();
        var children = new List<Process>();
        try
        {
            for (var r = 0; r < ranks; r++)
            {
                var env = new DistributedEnvironment(r, ranks, r, "127.0.0.1", port)
                {
                    Timeout = timeout.Value,
                    HeartbeatTimeout = heartbeatTimeout.Value,
                };
                var start = new ProcessStartInfo(executable) { UseShellExecute = false, RedirectStandardOutput = r > 0, RedirectStandardError = r > 0 };
                foreach (var a in arguments) start.ArgumentList.Add(a);
                foreach (var (k, v) in env.Variables()) start.Environment[k] = v;
                var child = Process.Start(start) ?? throw new InvalidOperationException($"could not start rank {r} ({executable})");
                if (r > 0)
                {
                    var prefix = $"[rank {r}] ";
                    child.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(prefix + e.Data); };
                    child.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(prefix + e.Data); };
                    child.BeginOutputReadLine();
                    child.BeginErrorReadLine();
                }
                children.Add(child);
            }
            return Wait(children, heartbeatTimeout.Value + TimeSpan.FromSeconds(15), log);
        }
        finally
        {
            foreach (var c in children)
            {
                if (!c.HasExited) c.Kill(entireProcessTree: true);
                c.Dispose();
            }
        }
    }

    // Waits for every rank; after the first failure the rest get `grace` to stop on their own.
    static int Wait(List<Process> children, TimeSpan grace, TextWriter log)
    {
        int? failed = null;
        DateTime? deadline = null;
        var pending = children.Select((c, r) => (c, r)).ToList();
        while (pending.Count > 0)
        {
            foreach (var (c, r) in pending.Where(x => x.c.HasExited).ToList())
            {
                c.WaitForExit(); // flushes the forwarded output
                pending.Remove((c, r));
                if (c.ExitCode != 0 && failed is null)
                {
                    failed = c.ExitCode;
                    deadline = DateTime.UtcNow + grace;
                    lock (log) log.WriteLine($"pai: rank {r} exited with code {c.ExitCode}; waiting up to {grace.TotalSeconds:0} s for the other ranks to stop");
                }
            }
            if (deadline is { } d && DateTime.UtcNow > d)
            {
                foreach (var (c, r) in pending)
                {
                    lock (log) log.WriteLine($"pai: rank {r} did not stop; killing it");
                    c.Kill(entireProcessTree: true);
                }
                break;
            }
            if (pending.Count > 0) pending[0].c.WaitForExit(200);
        }
        return failed ?? 0;
    }

    /// <summary>A TCP port free on the loopback interface at the time of the call.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
