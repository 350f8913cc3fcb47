namespace Pai.Host.Runs;

/// <summary>
/// The results store cannot do what was asked: its database is unreadable or from a newer Pai,
/// a run is unknown, or an epoch is recorded twice. The message says what to do.
/// </summary>
public class RunStoreException : InvalidOperationException
{
    /// <summary>An error with a message a user can act on.</summary>
    public RunStoreException(string message) : base(message) { }

    /// <summary>An error with a message a user can act on and the error that caused it.</summary>
    public RunStoreException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// This process no longer owns the run it is writing to (it never claimed it, or its claim was
/// taken over because it looked dead): stop working on the run; nothing was written.
/// </summary>
public sealed class RunClaimLostException : RunStoreException
{
    /// <summary>The run's key.</summary>
    public string Key { get; }

    /// <summary>An error for run <paramref name="key"/> with the reason.</summary>
    public RunClaimLostException(string key, string message) : base(message) => Key = key;
}

/// <summary>
/// The store's database cannot be reached (server down, network lost) or stopped answering. Nothing
/// of the failed statement was written; runs this worker held are reclaimed by other workers when
/// their lease expires. Start the worker again once the database is back.
/// </summary>
public sealed class RunStoreUnavailableException : RunStoreException
{
    /// <summary>An error naming the store and the fix, with the driver's error.</summary>
    public RunStoreUnavailableException(string message, Exception inner) : base(message, inner) { }
}
