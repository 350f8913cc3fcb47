using System.Text;

namespace Pai.Host.Reports;

/// <summary>
/// Writes a text or byte file so that readers see either the old content or the new, never half of it
/// (<see cref="OutputFile.WriteAtomically"/>), creating its folder first.
/// </summary>
static class AtomicFile
{
    static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Utf8NoBom.GetBytes(text));

    public static void WriteAllBytes(string path, byte[] bytes)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        OutputFile.WriteAtomically(full, f => f.Write(bytes));
    }
}
