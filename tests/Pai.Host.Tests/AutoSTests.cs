using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Pai.Host.AutoS;

namespace Pai.Host.Tests;

/// <summary>AutoS: IRP labels, predictors, predictor files and the autos criterion.</summary>
public class AutoSTests
{
    // 1×8×8 images: lenet300 is then FC 64-300-100-10 (50,200 weights), fast enough for many rounds.
    static readonly SyntheticOptions Small = new(Height: 8, Width: 8, TrainCount: 256, TestCount: 64);

    // The small synthetic training and test sets, freed together.
    sealed class SmallData : IDisposable
    {
        public Dataset Train { get; } = SyntheticData.Create(Small, DatasetSplit.Train);
        public Dataset Test { get; } = SyntheticData.Create(Small, DatasetSplit.Test);

        public void Dispose()
        {
            Train.Dispose();
            Test.Dispose();
        }
    }

    static RunConfig SmallRun(double learningRate) => new()
    {
        Model = "lenet300", Dataset = "synthetic", Criterion = "magnitude", Epochs = 1, MaxBatchesPerEpoch = 2, BatchSize = 32,
        LearningRate = learningRate, SamplesPerClass = 2,
    };

    static float[] Floats(Tensor t) => t.To(DType.Float32).Flatten().ToArray<float>();

    [Fact]
    public void Irp_labels_count_the_rounds_each_weight_survived_when_the_pruning_order_is_known()
    {
        // A learning rate of 1e-30 leaves every float32 weight unchanged by training, so each round
        // prunes by |θ₀|: the order of pruning is the global order of |θ₀|, known in advance.
        using var dir = new TempDirectory();
        using var data = new SmallData();
        var (train, test) = (data.Train, data.Test);
        const int rounds = 3;
        var result = IterativePruning.Run(new IterativePruningSpec(SmallRun(1e-30), rounds, 0.2), train, test, dir.Path);
        using var labels = LabelFile.Load(result.LabelsPath!);
        using var model = Runner.CreateModel(RunPlan.Of(SmallRun(1e-30)), train);
        using var scope = new DisposeScope();

        var theta = model.Prunable.SelectMany(p => Floats(p.Value)).ToArray();
        var n = theta.Length;
        // Position of each weight in descending |θ₀| order (ties by position, as the selection breaks them).
        var order = Enumerable.Range(0, n).OrderByDescending(i => Math.Abs(theta[i])).ThenBy(i => i).ToArray();
        var place = new int[n];
        for (var k = 0; k < n; k++) place[order[k]] = k;
        var kept = Enumerable.Range(1, rounds).Select(r => Selection.keepCount(Math.Pow(0.8, r), n)).ToArray();
        var expected = place.Select(p => (float)kept.Count(k => p < k) / rounds).ToArray();

        var actual = model.Prunable.SelectMany(p => Floats(labels.Label(p.Key))).ToArray();
        Assert.Equal(expected, actual);
        Assert.Equal(new[] { 0f, 1f / 3, 2f / 3, 1f }, actual.Distinct().Order().ToArray());
        Assert.Equal("3", labels.Metadata["rounds"]);
        Assert.Equal(rounds + 1, result.Rounds.Count);
        Assert.Equal([1.0, 0.8, 0.64, 0.512], result.Rounds.Select(r => Math.Round(r.Density, 6)));
        foreach (var (name, w) in model.Prunable) Assert.True(w.Equal(labels.Theta0(name)), name);
    }

    [Fact]
    public void Irp_resumes_after_its_last_round_and_matches_an_uninterrupted_run_bit_for_bit()
    {
        using var dir = new TempDirectory();
        using var data = new SmallData();
        var (train, test) = (data.Train, data.Test);
        var spec = new IterativePruningSpec(SmallRun(0.01), 3, 0.2);
        IterativePruning.Run(spec, train, test, dir.File("straight"));
        // Two rounds, then a "restart" asking for three: it continues from the saved state.
        IterativePruning.Run(spec with { Rounds = 2 }, train, test, dir.File("resumed"));
        var lines = new List<string>();
        var resumed = IterativePruning.Run(spec, train, test, dir.File("resumed"), lines.Add);
        Assert.Contains(lines, l => l.StartsWith("resuming") && l.Contains("3 round(s) done"));
        Assert.Equal(4, resumed.Rounds.Count);

        using var a = Safetensors.Load(dir.File("straight", "labels.safetensors"));
        using var b = Safetensors.Load(dir.File("resumed", "labels.safetensors"));
        Assert.Equal(a.Names.Order(), b.Names.Order());
        foreach (var name in a.Names) Assert.True(a[name].Equal(b[name]), name);
        Assert.Contains(a.Names, n => n.StartsWith("label/"));
        // Training moved the weights: the labels are not merely the |θ₀| order of the test above.
        Assert.Equal("[1,0.8,0.6400000000000001,0.5120000000000001]", a.Metadata["densities"]);

        // Other settings in the same directory: a clear error, nothing overwritten.
        var e = Assert.Throws<CheckpointException>(() =>
            IterativePruning.Run(spec with { PruneFraction = 0.3 }, train, test, dir.File("resumed")));
        Assert.Contains("other settings", e.Message);
    }

    // Features (θ₀, g₀) of lenet300 on the small data at initialization, with labels = global rank of |θ₀|
    // (tensors of the caller's dispose scope).
    static List<LayerSamples> RankOfMagnitudeSamples()
    {
        using var data = new SmallData();
        using var model = Runner.CreateModel(RunPlan.Of(SmallRun(0.01)), data.Train);
        using var scoring = ScoringSubset.Create(data.Train, 2, 0);
        var context = new ScoringContext(model, ListModule.OfSeq(scoring), ListModule.OfSeq(new long[] { 1, 8, 8 }), 0,
            CurvatureOptions.Default, FSharpOption<Mask>.None);
        var features = PaiAutoS.ComputeFeatures(200, Features.standard, context);
        var magnitude = model.Prunable.SelectMany(p => Floats(p.Value).Select(Math.Abs)).Select(v => (double)v).ToArray();
        var ranks = Stability.ranks(magnitude);
        var samples = new List<LayerSamples>();
        var offset = 0;
        foreach (var ((name, w), i) in model.Prunable.Select((p, i) => (p, i)))
        {
            var labels = ranks.Skip(offset).Take((int)w.NumEl).Select(r => (float)(r / ranks.Length)).ToArray();
            offset += (int)w.NumEl;
            samples.Add(new LayerSamples(name, features[i], Libtorch.FromArray(labels)));
        }
        return samples;
    }

    [Fact]
    public void A_predictor_learns_a_known_labeling_and_ranks_the_held_out_layer()
    {
        using var scope = new DisposeScope();
        var samples = RankOfMagnitudeSamples();
        var (predictor, report) = PredictorFitting.Fit(samples, [.. Features.standard], new FitOptions { Epochs = 5, Seed = 1 });
        using (predictor)
        {
            Assert.Equal(["fc2.weight"], report.ValidationLayers);
            Assert.Equal(64 * 300 + 100 * 10, report.TrainingWeights); // fc2 never trained on
            // Checked here from the predictions, not only from the report.
            var heldOut = samples.Single(s => s.Name == "fc2.weight");
            var predicted = predictor.Predict(heldOut.Features).To(DType.Float64).ToArray<double>();
            var spearman = Stability.spearman(predicted, heldOut.Labels.To(DType.Float64).ToArray<double>());
            Assert.True(spearman >= 0.95, $"Spearman on the held-out layer {spearman:F4}");
            Assert.Equal(report.ValidationSpearman, spearman, 6);
        }
    }

    [Fact]
    public void A_predictor_file_round_trips_with_its_features_normalization_and_predictions()
    {
        using var dir = new TempDirectory();
        using var scope = new DisposeScope();
        var samples = RankOfMagnitudeSamples();
        var (predictor, report) = PredictorFitting.Fit(samples, [.. Features.standard], new FitOptions { Epochs = 1, MaxWeights = 2000 });
        using (predictor)
        {
            var path = dir.File("p.safetensors");
            predictor.Save(path, report.ToMetadata());
            using var loaded = Predictor.Load(path);
            Assert.Equal(predictor.Features, loaded.Features);
            Assert.Equal("mlp", loaded.Architecture);
            Assert.True(predictor.Mean.Equal(loaded.Mean) && predictor.Std.Equal(loaded.Std));
            Assert.False(loaded.Std.Eq(1).CountNonZero() == 2, "the normalization was stored, not left at its defaults");
            var x = samples[2].Features;
            Assert.True(predictor.Predict(x).Equal(loaded.Predict(x)));
            Assert.Equal(report.ValidationSpearman.ToString("R", System.Globalization.CultureInfo.InvariantCulture), loaded.Metadata["validation_spearman"]);
        }
    }

    [Fact]
    public void The_paper_predictor_trains_saves_and_predicts_on_a_tiny_subset()
    {
        using var dir = new TempDirectory();
        using var scope = new DisposeScope();
        using var gen = new Generator(3);
        // Three "layers" of 12 weights; the label is a function of the first feature.
        var samples = Enumerable.Range(0, 3).Select(i =>
        {
            var x = Libtorch.Randn([12, 2], gen);
            return new LayerSamples($"l{i}", x, x.Select(1, 0).Abs().Clamp(0, 1));
        }).ToList();
        var (predictor, report) = PredictorFitting.Fit(samples, [.. Features.standard],
            new FitOptions { Architecture = "resnet18", Epochs = 1, BatchSize = 8, MaxWeights = 8 });
        using (predictor)
        {
            Assert.IsType<ResNetPredictor>(predictor.Network);
            Assert.Equal(8, report.TrainingWeights);
            Assert.Equal(8, report.ValidationWeights);
            var predicted = predictor.Predict(samples[1].Features);
            Assert.Equal([12L], predicted.Shape);
            Assert.Equal(12, predicted.IsFinite().CountNonZero());
            predictor.Save(dir.File("paper.safetensors"));
            using var loaded = Predictor.Load(dir.File("paper.safetensors"));
            Assert.True(predicted.Equal(loaded.Predict(samples[1].Features)));
        }
    }

    [Fact]
    public void Predictor_files_that_do_not_fit_fail_with_an_error_naming_the_file_and_the_fix()
    {
        using var dir = new TempDirectory();
        using var scope = new DisposeScope();
        var good = dir.File("good.safetensors");
        using (var p = new Predictor("mlp", [.. Features.standard], Libtorch.Zeros([2]), Libtorch.Ones([2]), new MlpPredictor(2, 0)))
            p.Save(good);
        using (Predictor.Load(good)) { }

        // Rewrites the good file's tensors with other metadata (or other tensors).
        string Variant(string name, Action<Dictionary<string, string>> edit, Func<IEnumerable<(string, Tensor)>, IEnumerable<(string, Tensor)>>? tensors = null)
        {
            using var file = Safetensors.Load(good);
            var metadata = file.Metadata.ToDictionary();
            edit(metadata);
            var path = dir.File(name);
            Safetensors.Save(path, (tensors ?? (t => t))(file.Tensors), metadata);
            return path;
        }

        var cases = new (string Path, string Says)[]
        {
            (Variant("mask.safetensors", m => m.Clear()), "is not an AutoS predictor"),
            (Variant("v2.safetensors", m => m["format_version"] = "2"), "format version 2"),
            (Variant("extra.safetensors", m => m["features"] = "theta,grad,saliency"), "does not fit a mlp predictor of the 3 features"),
            (Variant("unknown.safetensors", m => m["features"] = "theta,curvature"), "unknown feature 'curvature'"),
            (Variant("short.safetensors", _ => { }, t => t.Where(x => x.Item1 != "feature_std")), "tensor 'feature_std' is missing"),
        };
        foreach (var (path, says) in cases)
        {
            var e = Assert.Throws<CheckpointException>(() => Predictor.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(says, e.Message);
            Assert.Contains("pai autos fit", e.Message);
        }
        var text = dir.File("notes.txt");
        File.WriteAllText(text, "not a safetensors file at all");
        var notSafetensors = Assert.Throws<CheckpointException>(() => Predictor.Load(text));
        Assert.Contains("pai autos fit", notSafetensors.Message);
    }

    [Fact]
    public void Autos_run_keys_change_with_the_predictor_content_and_other_keys_do_not()
    {
        using var dir = new TempDirectory();
        var path = dir.File("p.safetensors");
        void Write(ulong seed)
        {
            using var scope = new DisposeScope();
            using var p = new Predictor("mlp", [.. Features.standard], Libtorch.Zeros([2]), Libtorch.Ones([2]), new MlpPredictor(2, seed));
            p.Save(path);
        }
        var autos = new RunConfig { Criterion = "autos", Sparsity = 0.9, Predictor = path };
        Write(0);
        var first = RunPlan.Canonical(autos);
        Write(0);
        Assert.Equal(first.Key, RunPlan.Canonical(autos).Key); // same content, same run
        Write(1);
        var changed = RunPlan.Canonical(autos);
        Assert.NotEqual(first.Key, changed.Key);
        Assert.NotNull(changed.PredictorHash);
        // A stray --predictor leaves other criteria's keys alone (the pinned keys of StoreTests stay valid).
        var snip = new RunConfig { Criterion = "snip", Sparsity = 0.9 };
        Assert.Equal(snip.Key, RunPlan.Canonical(snip with { Predictor = path }).Key);
        Assert.Equal("44136fa355b3678a", RunPlan.Canonical(new RunConfig()).Key);
        // A run configured without the hash is refused rather than keyed by the path alone.
        var e = Assert.Throws<ArgumentException>(() => RunPlan.Validate(autos));
        Assert.Contains("RunPlan.Of", e.Message);
    }
}

/// <summary>AutoS through the `pai` command: label, fit, then prune and run with --criterion autos.</summary>
public class AutoSCliTests
{
    static (int Code, string Out, string Err) Pai(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pai.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }

    static void Ok((int Code, string Out, string Err) r) => Assert.True(r.Code == 0, $"exit {r.Code}\n{r.Out}\n{r.Err}");

    [Fact]
    public void Label_fit_then_prune_and_run_with_the_autos_criterion()
    {
        using var dir = new TempDirectory();
        string[] tiny = ["-d", "synthetic", "--samples-per-class", "2", "--threads", "1"];
        string[] budget = ["--max-batches", "2", "--batch-size", "32", "--lr", "0.01"];
        Ok(Pai(["autos", "label", "-m", "lenet5", .. tiny, .. budget, "--rounds", "2", "-o", dir.File("irp")]));
        var labels = dir.File("irp", "labels.safetensors");
        var fit = Pai("autos", "fit", "-l", labels, "-o", dir.File("p.safetensors"), "-e", "1", "--max-weights", "4000", "--threads", "1");
        Ok(fit);
        Assert.Contains("Spearman", fit.Out);

        // The predictor learned on lenet5 prunes another model.
        var prune = Pai(["prune", "-m", "lenet300", .. tiny, "-c", "autos", "--predictor", dir.File("p.safetensors"), "-s", "0.9", "-o", dir.File("mask.safetensors")]);
        Ok(prune);
        using (var mask = Safetensors.Load(dir.File("mask.safetensors")))
        {
            var kept = mask.Tensors.Sum(t => t.Tensor.CountNonZero());
            var total = mask.Tensors.Sum(t => t.Tensor.NumEl);
            Assert.Equal(Selection.keepCount(0.1, total), kept);
        }

        var run = Pai(["run", "-m", "lenet300", .. tiny, "-c", "autos", "--predictor", dir.File("p.safetensors"), "-s", "0.9", .. budget, "-e", "1", "--results", dir.File("store")]);
        Ok(run);
        using (var store = new SqliteRunStore(dir.File("store")))
        {
            var record = Assert.Single(store.All());
            Assert.Equal(RunStatus.Finished, record.Status);
            Assert.Equal(Predictor.ContentHash(dir.File("p.safetensors")), record.Config.PredictorHash);
            Assert.Equal(0.1, record.Prune!.Density, 3);
        }

        // A file that is not a predictor: exit 2, the file and the fix named.
        var wrong = Pai(["prune", "-m", "lenet300", .. tiny, "-c", "autos", "--predictor", dir.File("mask.safetensors"), "-s", "0.9", "-o", dir.File("m2.safetensors")]);
        Assert.Equal(2, wrong.Code);
        Assert.Contains(dir.File("mask.safetensors"), wrong.Err);
        Assert.Contains("pai autos fit", wrong.Err);
    }

    [Fact]
    public void Imp_prints_the_accuracy_at_every_density_and_writes_the_final_mask()
    {
        using var dir = new TempDirectory();
        var r = Pai("imp", "-m", "lenet300", "-d", "synthetic", "--max-batches", "2", "--batch-size", "32", "--lr", "0.01", "--rounds", "2",
            "--prune-fraction", "0.5", "--threads", "1", "-o", dir.File("imp"));
        Ok(r);
        Assert.Contains("IMP", r.Out);
        Assert.Contains("25.00 %", r.Out);
        Assert.False(File.Exists(dir.File("imp", "labels.safetensors")));
        using var mask = Safetensors.Load(dir.File("imp", "mask.safetensors"));
        Assert.Equal(Selection.keepCount(0.25, 266_200), mask.Tensors.Sum(t => t.Tensor.CountNonZero()));
    }
}
