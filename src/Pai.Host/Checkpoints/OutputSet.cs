namespace Pai.Host.Checkpoints;

/// <summary>
/// Writing a file whole: the content goes to a temporary file in the target's folder (same file
/// system, so the rename is atomic), is flushed to disk, then renamed over the target, so readers
/// see the old content or the new, never half. Safetensors files, reports and <see cref="OutputSet"/>
/// all write through here. Errors name the target, never the temporary file the user never asked for.
/// </summary>
public static class OutputFile
{
    /// <summary>Writes <paramref name="path"/> atomically with what <paramref name="write"/> puts into the stream.</summary>
    /// <exception cref="IOException">The file could not be written; the message names <paramref name="path"/>.</exception>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var temp = TempNextTo(full);
        try
        {
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(f);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e)
        {
            Delete(temp);
            if (e is IOException or UnauthorizedAccessException) throw CannotWrite(full, e, [(temp, full)]);
            throw;
        }
    }

    /// <summary>A fresh hidden temporary name in the folder of <paramref name="full"/>.</summary>
    internal static string TempNextTo(string full) =>
        Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");

    /// <summary>
    /// "cannot write TARGET: reason", with every temporary name in the reason replaced by the file it
    /// stood for; an error that already says so is reworded only.
    /// </summary>
    internal static IOException CannotWrite(string target, Exception e, IEnumerable<(string Temp, string Target)> names)
    {
        var message = names.Aggregate(e.Message, (m, n) => m.Replace(n.Temp, n.Target));
        return new IOException(message.StartsWith("cannot write ", StringComparison.Ordinal) ? message : $"cannot write {target}: {message}", e);
    }

    internal static void Delete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// A command's output files, written all or none. Each is written to a temporary file next to its
/// target (<see cref="Staged"/>, atomically as every file is); once the command's work has written
/// them all, <see cref="Write"/> moves them into place, and a move that fails puts back what the
/// targets held before. A failure anywhere leaves no temporary file and no partial set.
/// </summary>
public sealed class OutputSet
{
    readonly List<(string Option, string Target, string Temp)> files = [];

    /// <summary>The outputs, each with the option that named it; null paths (outputs not asked for) are left out.</summary>
    /// <exception cref="ArgumentException">Two outputs name the same file (one would overwrite the other).</exception>
    public OutputSet(IEnumerable<(string Option, string? Path)> outputs)
    {
        foreach (var (option, path) in outputs)
        {
            if (path is null) continue;
            var full = Path.GetFullPath(path);
            if (files.FirstOrDefault(f => f.Target == full) is { Option: { } other })
                throw new ArgumentException($"{other} and {option} both name {full}: one would overwrite the other; give each its own file");
            files.Add((option, full, OutputFile.TempNextTo(full)));
        }
    }

    /// <summary>Where the work writes <paramref name="path"/> (one of the outputs) until it is moved into place; null stays null.</summary>
    public string? Staged(string? path) => path is null ? null
        : files.FirstOrDefault(f => f.Target == Path.GetFullPath(path)).Temp
          ?? throw new ArgumentException($"{path} is not one of this command's outputs", nameof(path));

    /// <summary>Runs <paramref name="work"/>, which writes every output to its <see cref="Staged"/> path, then moves them all into place.</summary>
    /// <exception cref="IOException">A file could not be written or moved; the message names the user's file.</exception>
    public void Write(Action work) => Write(() => { work(); return 0; });

    /// <inheritdoc cref="Write(Action)"/>
    public T Write<T>(Func<T> work)
    {
        try
        {
            var result = work();
            if (files.FirstOrDefault(f => !File.Exists(f.Temp)) is { Option: { } missing } file)
                throw new InvalidOperationException($"{missing} {file.Target} was not written");
            Commit();
            return result;
        }
        catch (Exception e) when (e is (IOException or UnauthorizedAccessException) &&
                                   files.FirstOrDefault(f => e.Message.Contains(f.Temp) || e.Message.Contains(f.Target)).Target is { } target)
        {
            // Only errors about the outputs are reworded; an input that fails to read keeps its own message.
            throw OutputFile.CannotWrite(target, e, files.Select(f => (f.Temp, f.Target)));
        }
        finally
        {
            foreach (var f in files) OutputFile.Delete(f.Temp);
        }
    }

    // Each target that exists is set aside under a temporary name before its new content moves in,
    // so a failed move can put every earlier target back as it was.
    void Commit()
    {
        var moved = new List<(string Target, string? Backup)>();
        try
        {
            foreach (var f in files)
            {
                string? backup = null;
                if (File.Exists(f.Target))
                {
                    backup = OutputFile.TempNextTo(f.Target);
                    File.Move(f.Target, backup);
                }
                moved.Add((f.Target, backup));
                File.Move(f.Temp, f.Target);
            }
        }
        catch
        {
            // The target being moved when the failure came is in the list too: a new file there goes as well.
            foreach (var (target, backup) in moved)
            {
                OutputFile.Delete(target);
                if (backup is not null)
                    try { File.Move(backup, target); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
            throw;
        }
        foreach (var (_, backup) in moved)
            if (backup is not null) OutputFile.Delete(backup);
    }
}
