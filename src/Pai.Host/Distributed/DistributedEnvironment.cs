using System.Globalization;

namespace Pai.Host.Distributed;

/// <summary>
/// Where this process sits in a data-parallel run, read from the variables torchrun sets
/// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), plus Pai's two timeouts.
/// </summary>
/// <param name="Rank">This process's rank, 0 … WorldSize − 1; rank 0 hosts the rendezvous store and writes the results.</param>
/// <param name="WorldSize">Number of processes in the run.</param>
/// <param name="LocalRank">Rank among the processes of this machine (picks the GPU).</param>
/// <param name="MasterAddress">Address of rank 0's machine.</param>
/// <param name="MasterPort">Port of the rendezvous store on it.</param>
public sealed record DistributedEnvironment(int Rank, int WorldSize, int LocalRank, string MasterAddress, int MasterPort)
{
    /// <summary>Environment variables of a rank, as torchrun names them.</summary>
    public const string RankVariable = "RANK", WorldSizeVariable = "WORLD_SIZE", LocalRankVariable = "LOCAL_RANK",
        MasterAddressVariable = "MASTER_ADDR", MasterPortVariable = "MASTER_PORT";

    /// <summary>Seconds a collective waits for the other ranks (default 1800, as PyTorch's): it must cover rank 0's scoring, which the others wait for.</summary>
    public const string TimeoutVariable = "PAI_DIST_TIMEOUT";

    /// <summary>Seconds without a heartbeat after which a rank is declared lost (default 30).</summary>
    public const string HeartbeatTimeoutVariable = "PAI_DIST_HEARTBEAT_TIMEOUT";

    /// <summary>How long a collective waits for the other ranks.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(1800);

    /// <summary>How long a rank may go without a heartbeat before the others stop, naming it.</summary>
    public TimeSpan HeartbeatTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether this is rank 0.</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>
    /// The run's placement from the environment, or null when WORLD_SIZE is not set (a single
    /// process). Throws naming the variable when one is missing or malformed.
    /// </summary>
    public static DistributedEnvironment? FromEnvironment() => FromVariables(Environment.GetEnvironmentVariable);

    /// <summary>As <see cref="FromEnvironment"/>, reading variables through <paramref name="get"/>.</summary>
    public static DistributedEnvironment? FromVariables(Func<string, string?> get)
    {
        if (string.IsNullOrEmpty(get(WorldSizeVariable))) return null;
        var world = Int(get, WorldSizeVariable, null, 1);
        var rank = Int(get, RankVariable, null, 0);
        if (rank >= world) throw new ArgumentException($"{RankVariable}={rank} must be below {WorldSizeVariable}={world}");
        var local = Int(get, LocalRankVariable, rank, 0);
        var address = get(MasterAddressVariable);
        if (string.IsNullOrWhiteSpace(address))
            throw new ArgumentException($"{MasterAddressVariable} is not set: a distributed run ({WorldSizeVariable}={world}) needs the address of rank 0's machine, e.g. {MasterAddressVariable}=127.0.0.1");
        var port = Int(get, MasterPortVariable, null, 1);
        if (port > 65535) throw new ArgumentException($"{MasterPortVariable}={port} is not a port (1 … 65535)");
        return new DistributedEnvironment(rank, world, local, address, port)
        {
            Timeout = TimeSpan.FromSeconds(Seconds(get, TimeoutVariable, 1800)),
            HeartbeatTimeout = TimeSpan.FromSeconds(Seconds(get, HeartbeatTimeoutVariable, 30)),
        };
    }

    /// <summary>The variables a child rank of a local launch gets (see <see cref="LocalLauncher"/>).</summary>
    public IReadOnlyDictionary<string, string> Variables() => new Dictionary<string, string>
    {
        [RankVariable] = Rank.ToString(CultureInfo.InvariantCulture),
        [WorldSizeVariable] = WorldSize.ToString(CultureInfo.InvariantCulture),
        [LocalRankVariable] = LocalRank.ToString(CultureInfo.InvariantCulture),
        [MasterAddressVariable] = MasterAddress,
        [MasterPortVariable] = MasterPort.ToString(CultureInfo.InvariantCulture),
        [TimeoutVariable] = Timeout.TotalSeconds.ToString(CultureInfo.InvariantCulture),
        [HeartbeatTimeoutVariable] = HeartbeatTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture),
    };

    static int Int(Func<string, string?> get, string name, int? fallback, int min)
    {
        var text = get(name);
        if (string.IsNullOrEmpty(text))
            return fallback ?? throw new ArgumentException($"{name} is not set: a distributed run needs {RankVariable}, {WorldSizeVariable}, {MasterAddressVariable} and {MasterPortVariable} (as torchrun sets them), or use --nproc N");
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < min)
            throw new ArgumentException($"{name}='{text}' must be an integer ≥ {min}");
        return v;
    }

    /// <summary>A timeout in seconds from the variable <paramref name="name"/> of this process's environment, else <paramref name="fallback"/>.</summary>
    public static TimeSpan TimeoutFromEnvironment(string name, double fallback) =>
        TimeSpan.FromSeconds(Seconds(System.Environment.GetEnvironmentVariable, name, fallback));

    static double Seconds(Func<string, string?> get, string name, double fallback)
    {
        var text = get(name);
        if (string.IsNullOrEmpty(text)) return fallback;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0))
            throw new ArgumentException($"{name}='{text}' must be a positive number of seconds");
        return v;
    }
}
