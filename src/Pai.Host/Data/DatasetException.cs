namespace Pai.Host.Data;

/// <summary>
/// A data set file is missing, truncated or corrupt, or a data set request cannot be met.
/// The message names the file, what was expected and how to obtain the data.
/// </summary>
public sealed class DatasetException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What went wrong, what was expected and how to fix it.</param>
    /// <param name="file">The offending file, when one is involved.</param>
    /// <param name="inner">The underlying I/O or decompression error, if any.</param>
    public DatasetException(string message, string? file = null, Exception? inner = null) : base(message, inner)
    {
        File = file;
    }

    /// <summary>The offending file, or null when the problem is not about one file.</summary>
    public string? File { get; }
}
