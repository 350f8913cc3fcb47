namespace Pai.Host.Tests;

/// <summary>A command's files are written all or none, and a failed write names the user's file, never a temporary one.</summary>
public sealed class OutputSetTests
{
    static void Save(string path, float value)
    {
        using var scope = new DisposeScope();
        Safetensors.Save(path, [("w", Libtorch.Full([4], value))]);
    }

    static float Read(string path)
    {
        using var f = Safetensors.Load(path);
        return f["w"].ToArray<float>()[0];
    }

    [Fact]
    public void A_write_that_fails_names_the_file_asked_for_not_its_temporary()
    {
        using var dir = new TempDirectory();
        var path = dir.File("gone", "model.safetensors");
        Directory.CreateDirectory(dir.File("gone"));
        // The folder vanishes while the file is being written: the rename of the temporary file fails.
        Safetensors.AfterTensorWritten = _ => Directory.Delete(dir.File("gone"), recursive: true);
        try
        {
            var e = Assert.ThrowsAny<IOException>(() => Save(path, 1));
            Assert.Contains($"cannot write {path}", e.Message);
            Assert.DoesNotContain(".tmp", e.Message);
        }
        finally
        {
            Safetensors.AfterTensorWritten = null;
        }
    }

    [Fact]
    public void Work_that_fails_after_one_file_leaves_the_old_files_and_no_temporary()
    {
        using var dir = new TempDirectory();
        Save(dir.File("a.safetensors"), 1);
        var set = new OutputSet([("--out", dir.File("a.safetensors")), ("--save-scores", dir.File("b.safetensors"))]);
        var e = Assert.Throws<InvalidOperationException>(() => set.Write(() =>
        {
            Save(set.Staged(dir.File("a.safetensors"))!, 2);
            throw new InvalidOperationException("scoring failed");
        }));
        Assert.Equal("scoring failed", e.Message);
        Assert.Equal(["a.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        Assert.Equal(1, Read(dir.File("a.safetensors")));
    }

    [Fact]
    public void A_move_that_fails_puts_back_the_files_moved_before_it()
    {
        using var dir = new TempDirectory();
        Save(dir.File("a.safetensors"), 1);
        var set = new OutputSet([("--out", dir.File("a.safetensors")), ("--save-scores", dir.File("b.safetensors")), ("--save-init", dir.File("c.safetensors"))]);
        var e = Assert.ThrowsAny<IOException>(() => set.Write(() =>
        {
            Save(set.Staged(dir.File("a.safetensors"))!, 2);
            Save(set.Staged(dir.File("b.safetensors"))!, 2);
            Save(set.Staged(dir.File("c.safetensors"))!, 2);
            // Something takes b's place before the files move in: its move fails after a's succeeded.
            Directory.CreateDirectory(dir.File("b.safetensors"));
        }));
        Assert.Contains(dir.File("b.safetensors"), e.Message);
        Assert.DoesNotContain(".tmp", e.Message);
        Assert.Equal(["a.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        Assert.Equal(1, Read(dir.File("a.safetensors"))); // the old a, not the new one
    }

    [Fact]
    public void Every_file_moves_in_and_replaces_the_old_one()
    {
        using var dir = new TempDirectory();
        Save(dir.File("a.safetensors"), 1);
        var set = new OutputSet([("--out", dir.File("a.safetensors")), ("--save-scores", dir.File("b.safetensors")), ("--save-init", null)]);
        Assert.Null(set.Staged(null));
        set.Write(() =>
        {
            Save(set.Staged(dir.File("a.safetensors"))!, 2);
            Save(set.Staged(dir.File("b.safetensors"))!, 3);
            Assert.False(File.Exists(dir.File("b.safetensors"))); // nothing is in place before the work is done
        });
        Assert.Equal(["a.safetensors", "b.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
        Assert.Equal(2, Read(dir.File("a.safetensors")));
        Assert.Equal(3, Read(dir.File("b.safetensors")));
    }

    [Fact]
    public void Two_outputs_naming_one_file_are_refused()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<ArgumentException>(() =>
            new OutputSet([("--out", dir.File("m.safetensors")), ("--save-scores", dir.File("x", "..", "m.safetensors"))]));
        Assert.Contains($"--out and --save-scores both name {dir.File("m.safetensors")}", e.Message);
    }
}
