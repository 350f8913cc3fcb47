using System.Diagnostics;
using Xunit.Abstractions;

namespace Pai.Host.Tests;

/// <summary>
/// The record pipeline (data |> model |> score |> prune |> train |> record) is the run path of
/// `pai run` cut into values: same keys, masks and accuracies bit for bit, records reusable, and
/// the fsi script that shows it runs.
/// </summary>
public sealed class PipelineTests(ITestOutputHelper output)
{
    static readonly Budget Short = new(1, 3);

    [Theory]
    [InlineData("lenet5", "fashion-mnist", "snip")]
    [InlineData("resnet20", "synthetic", "hutch_obd")]
    public void A_pipeline_run_equals_pai_run_bit_for_bit(string model, string dataset, string criterion)
    {
        var start = new RunConfig { Dataset = dataset, SamplesPerClass = 1, Probes = 2, WarmupBatches = 3 };
        var pruned = Pipeline.From(start).Model(model).Score(criterion).Prune(0.98);
        var trained = pruned.Train(Short);

        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var config = start with { Model = model, Criterion = criterion, Sparsity = 0.98, Epochs = 1, MaxBatchesPerEpoch = 3 };
        PaiHost.Run(config, store);
        var reference = store.Get(PaiHost.Configure(config).Key)!;

        Assert.Equal(reference.Key, trained.Run.Key);
        Assert.Equal(reference.FinalTop1, trained.Top1);
        Assert.Equal(reference.FinalLoss, trained.Run.FinalLoss);
        Assert.Equal(reference.Epochs.Select(e => e.TrainLoss), trained.Run.Epochs.Select(e => e.TrainLoss));
        // The pruning stage's summary is the stored one before training says how each layer trained.
        Assert.Equal(reference.Prune!.Layers.Select(l => l with { Kernel = null, Speedup = null }), pruned.Summary!.Layers);
        Assert.Equal(reference.Prune.Layers, trained.Run.Prune!.Layers);
        Assert.All(reference.Prune.Layers, l => Assert.Contains(l.Kernel, new[] { "sparse", "dense" }));
        using var scope = new DisposeScope();
        using var storedMask = Checkpoints.Safetensors.Load(store.MaskPath(reference.Key));
        var mask = TensorSnapshot.Of(pruned.Mask!.Names.Select(n => (n, storedMask.Take(n))));
        Assert.True(mask.SameAs(pruned.Mask), "the pipeline's mask differs from the one `pai run` stored");
    }

    [Fact]
    public void A_pruned_record_is_a_value_training_it_twice_gives_the_same_run_and_leaves_it_unchanged()
    {
        var pruned = Pipeline.Data("fashion-mnist").Model("lenet5").Score("magnitude").Prune(0.9);
        var weightsBefore = pruned.Weights!;
        var first = pruned.Train(Short);
        var second = pruned.Train(Short);
        Assert.Equal(first.Top1, second.Top1);
        Assert.True(first.Weights.SameAs(second.Weights));
        Assert.True(pruned.Weights!.SameAs(weightsBefore));
        Assert.Equal(0.005, first.Run.Config.LearningRate); // lenet5's default, as on the command line
        // Masked weights stay zero through training.
        using var scope = new DisposeScope();
        var weights = first.Weights.ToTensors().ToDictionary(t => t.Name, t => t.Tensor);
        foreach (var (name, keep) in pruned.Mask!.ToTensors())
            Assert.Equal(0, (weights[name] * keep.LogicalNot()).CountNonZero());
    }

    [Fact]
    public void An_FSharp_criterion_is_recorded_by_name_when_built_in_and_by_canonical_formula_otherwise()
    {
        var lenet = Pipeline.Data("fashion-mnist").Model("lenet5");
        Assert.Equal("snip", lenet.Score(Registry.find("snip")).Config.Criterion);
        var formula = Criteria.parse("abs(theta*grad)+0.1*fisher").ResultValue;
        var scored = lenet.Score(formula);
        Assert.Equal("abs(theta * grad) + 0.1 * fisher", scored.Config.Criterion);
        var cli = PaiHost.Configure(new RunConfig { Model = "lenet5", Optimizer = "sgd", LearningRate = 0.005, Criterion = "abs(theta * grad)  +  0.1*fisher", Sparsity = 0.9 });
        Assert.Equal(cli.Key, PaiHost.Configure(scored.Config with { Sparsity = 0.9 }).Key);
        var bad = Assert.Throws<ArgumentException>(() => lenet.Score("abs(theta * gard)"));
        Assert.Contains("gard", bad.Message);
    }

    [Fact]
    public void Recording_a_run_twice_keeps_one_finished_run_with_its_files()
    {
        var trained = Pipeline.Data("synthetic").Model("lenet300").Score("snip").Prune(0.9).Train(new Budget(1, 2));
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var stored = trained.Record(store);
        var again = trained.Record(store);
        Assert.Equal(RunStatus.Finished, stored.Status);
        Assert.Equal(stored.Key, again.Key);
        Assert.Single(store.All());
        Assert.True(File.Exists(store.MaskPath(stored.Key)));
        Assert.True(File.Exists(store.CheckpointPath(stored.Key)));
        Assert.Equal(trained.Top1, stored.FinalTop1);
        Assert.NotNull(stored.Prune);
    }

    [Fact]
    public async Task The_quickstart_script_runs_in_dotnet_fsi()
    {
        var root = RepositoryRoot();
        using var dir = new TempDirectory();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        foreach (var a in new[] { "fsi", "pipelines/quickstart.fsx", "--max-batches", "2", "--results", dir.Path }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        output.WriteLine(stdout);
        Assert.True(p.ExitCode == 0, $"dotnet fsi pipelines/quickstart.fsx exited {p.ExitCode}\n{stdout}\n{await stderr}");
        Assert.Contains("abs(theta * grad) + 0.1 * fisher", stdout);
        // SNIP's run is named as the store names it, and each run shows its phases and epochs as it goes.
        Assert.Matches(@"(?m)^snip\s+density 0\.0200", stdout);
        Assert.Matches(@"lenet5 snip 98\.0 ?% seed 0: warmup\+scoring", stdout);
        Assert.Contains("lenet5 dense seed 0: training", stdout);
        Assert.Matches(@"lenet5 snip 98\.0 ?% seed 0: epoch 1/1 loss", stdout);
        Assert.Contains("./pai report --results", stdout);
        using var store = new SqliteRunStore(dir.Path);
        Assert.Equal(3, store.All().Count(r => r.Status == RunStatus.Finished));
    }

    internal static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Hybrid.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("Hybrid.sln above the test's folder");
    }
}
