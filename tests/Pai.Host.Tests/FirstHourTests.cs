using System.Diagnostics;
using PaiCli = global::Pai.Cli.Cli;
using PaiCommand = global::Pai.Cli.PaiCommand;

namespace Pai.Host.Tests;

/// <summary>What a new user types first: defaults that train, validation at the door, progress, healing.</summary>
public sealed class FirstHourTests
{
    static (int Code, string Out, string Err) Pai(params string[] args) => CliEndToEndTests.Run(args);

    static readonly DataCache Data = new();

    public static TheoryData<string> Models()
    {
        var data = new TheoryData<string>();
        foreach (var m in ModelZoo.Names) data.Add(m);
        return data;
    }

    // Each model's default configuration (optimizer, learning rate and its warm-up, momentum,
    // weight decay) trains on the default data: 20 steps of 32 without divergence, and the loss
    // falls. The mean loss of the last 5 batches must be at least 10% below that of the first 5:
    // means of 5 batches, not single batches, and defaults whose first steps are not chaotic, so
    // that the margin (measured 0.67–0.74 for resnet32 over three loader seeds) does not hang on a
    // CPU's rounding.
    [Theory]
    [MemberData(nameof(Models))]
    public void Every_model_trains_with_its_default_configuration(string model)
    {
        var c = RunPlan.Canonical(ModelZoo.WithTrainingDefaults(new RunConfig { Model = model }) with { BatchSize = 32, Epochs = 1, MaxBatchesPerEpoch = 20 });
        var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
        using var m = Runner.CreateModel(RunPlan.Of(c), train);
        using var loader = new DataLoader(train, c.BatchSize, shuffle: true, seed: 0);
        var running = new List<double>(); // running mean of the epoch's batch losses after each batch
        var options = RunPlan.Of(c).Train;
        Trainer.Train(m, null, loader.Epoch, null, options, p => { if (p.Finished is null) running.Add(p.Loss); }, options.BatchesPerEpoch(loader.BatchCount));
        Assert.Equal(20, running.Count);
        Assert.All(running, l => Assert.True(double.IsFinite(l), $"{model}: the loss diverged ({string.Join(", ", running)})"));
        var first5 = running[4];
        var last5 = (20 * running[19] - 15 * running[14]) / 5;
        Assert.True(last5 < 0.9 * first5,
            $"{model} at lr {c.LearningRate} (warm-up {c.LrWarmup}): mean loss of batches 16-20 {last5:F4}, of batches 1-5 {first5:F4} (ratio {last5 / first5:F3}, needs < 0.9)");
    }

    [Fact]
    public void Help_prints_the_defaults_the_command_uses()
    {
        var sweep = Pai("sweep", "--help").Out;
        Assert.Matches(@"--epochs[^\n]*\[default: 2\]", sweep);
        Assert.DoesNotMatch(@"--max-batches[^\n]*\[default", sweep); // whole epochs
        Assert.Matches(@"--workers[^\n]*sweep default: one per core on a CPU", sweep);
        // The main job's LeNet-5 trains with AdamW at 0.001; the other models keep their own optimizer and rate.
        Assert.Matches(@"--lr[^\n]*default: 0\.05; 0\.1 for vgg11, resnet20, resnet32; 0\.001 for lenet5, vit-tiny; 0\.005 for lenet300\]", sweep);
        Assert.Matches(@"--optimizer[^\n]*default: sgd; adamw for lenet5, vit-tiny\]", sweep);
        Assert.Matches(@"--lr-warmup[^\n]*default: 100; 0 for lenet300, lenet5\]", sweep);
        var label = Pai("autos", "label", "--help").Out;
        Assert.Matches(@"--max-batches[^\n]*\[default: 200\]", label);
        Assert.Matches(@"--lr[^\n]*0\.005 for lenet300, lenet5", label);
        // The model keys the per-model defaults; its own default is one model, not one per model.
        Assert.Matches(@"--model[^\n]*\[default: lenet5\]\n", sweep);
        var train = Pai("train", "--help").Out;
        Assert.Matches(@"--epochs[^\n]*\[default: 10\]", train);
        // Masked layers run sparse wherever that measured faster, everywhere training happens.
        foreach (var help in new[] { sweep, train, Pai("run", "--help").Out })
            Assert.Matches(@"--sparse-kernels[^\n]*auto \(where a short calibration measures them faster[^\n]*\[default: auto\]", help);
        foreach (var pruningOnly in new[] { "--probes", "--probe-scope", "--hvp-budget", "--criterion", "--warmup", "--keep-one-per-layer" })
            Assert.DoesNotContain(pruningOnly, train);
    }

    [Fact]
    public void Giving_a_default_explicitly_does_not_change_the_run()
    {
        string[] grid = ["sweep", "--dry-run", "--criteria", "snip", "--sparsities", "0.9", "--seeds", "0"];
        var implicitDefaults = Pai(grid);
        var explicitDefaults = Pai([.. grid, "--epochs", "2", "--optimizer", "adamw", "--lr", "0.001", "--lr-warmup", "0", "--max-batches", "0", "--model", "lenet5"]);
        Assert.Equal(0, implicitDefaults.Code);
        Assert.Equal(implicitDefaults.Out, explicitDefaults.Out);
        Assert.Contains("\"criterion\":\"snip\",\"epochs\":2,\"learning_rate\":0.001,\"optimizer\":\"adamw\",\"sparsity\":0.9", implicitDefaults.Out);
        // Another model's sweep keeps that model's optimizer and rate (SGD, the default, is not written), on the same two epochs.
        var resnet = Pai([.. grid, "--model", "resnet20", "--dataset", "cifar10"]);
        Assert.Equal(0, resnet.Code);
        Assert.Contains("resnet20 snip 90.0 % seed 0  {\"criterion\":\"snip\",\"dataset\":\"cifar10\",\"epochs\":2,\"lr_warmup\":100,\"model\":\"resnet20\",\"sparsity\":0.9}", resnet.Out);
    }

    [Fact]
    public void The_main_job_is_five_paired_seeds_of_eight_criteria_at_two_sparsities_and_dense_on_two_whole_epochs()
    {
        var (code, output, err) = Pai("sweep", "--dry-run");
        Assert.True(code == 0, err);
        var runs = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains(" lenet5 ", StringComparison.Ordinal)).ToList();
        Assert.EndsWith("85 runs", output.TrimEnd());
        Assert.Equal(85, runs.Count);
        // Every run: two whole epochs of AdamW at 0.001 without warm-up; seeds 0-4 in every cell (paired).
        Assert.All(runs, r => Assert.Matches(@"""epochs"":2,""learning_rate"":0\.001,""optimizer"":""adamw""[,}]", r)); // seed 0 is the default, left out
        Assert.All(runs, r => Assert.DoesNotContain("max_batches", r));
        Assert.All(runs, r => Assert.DoesNotContain("lr_warmup", r));
        var cells = runs.GroupBy(r => System.Text.RegularExpressions.Regex.Replace(r[r.IndexOf(' ', StringComparison.Ordinal)..], @" seed \d+|,?""seed"":\d+", "")).ToList();
        Assert.Equal(17, cells.Count); // 8 criteria × {90%, 99.5%} + dense
        Assert.All(cells, c => Assert.Equal(["0", "1", "2", "3", "4"], c.Select(r => System.Text.RegularExpressions.Regex.Match(r, @" seed (\d+)").Groups[1].Value).Order()));
    }

    [Theory]
    [InlineData("run -c snip", "needs a sparsity")]
    [InlineData("run -s 0.9", "needs a criterion")]
    [InlineData("prune -c snip", "pruning needs a criterion and a sparsity")]
    [InlineData("run --label-smoothing NaN", "--label-smoothing must be a finite number")]
    [InlineData("run --momentum NaN", "--momentum must be a finite number")]
    [InlineData("run --weight-decay NaN", "--weight-decay must be a finite number")]
    [InlineData("run --gamma NaN", "--gamma must be a finite number")]
    [InlineData("run -c grasp -s 0.9 --grasp-temperature 0", "--grasp-temperature must be above 0")]
    [InlineData("run -c hts -s 0.9 --hutch-temperature NaN", "--hutch-temperature must be a finite number")]
    [InlineData("run -c hts -s 0.9 --hutch-temperature -5", "--hutch-temperature must be above 0")]
    [InlineData("run --lr 0", "--lr must be above 0")]
    [InlineData("prune -c snip -s abc", "--sparsity: 'abc' is not a number")]
    [InlineData("prune -c snip -s 1", "--sparsity must be at least 0 and below 1")]
    [InlineData("prune -c \"abs(theta*grod)\" -s 0.9", "unknown statistic or function 'grod' (did you mean 'grad'?)")]
    [InlineData("prune -c snpi -s 0.9", "unknown criterion 'snpi' (did you mean 'snip'?)")]
    [InlineData("train --threads 100000", "--threads 100000 is more than")]
    [InlineData("prune -c snip -s 0.9 --device cuda", "--device cuda: this libtorch has no CUDA")]
    [InlineData("train --device gpu", "unknown device 'gpu': use cpu, cuda or cuda:N")]
    [InlineData("sweep --target-ci 0", "--target-ci must be a positive number of accuracy points")]
    [InlineData("sweep --target-ci NaN", "--target-ci must be a positive number of accuracy points")]
    [InlineData("sweep --max-seeds 4", "--max-seeds needs --target-ci W")]
    [InlineData("sweep --target-ci 1 --max-seeds 1", "--max-seeds 1 is fewer than the 5 seeds given by --seeds")]
    [InlineData("sweep --target-ci 1 --enqueue", "drop --enqueue")]
    [InlineData("sweep --seeds 18446744073709551615 --target-ci 1", "leaves no room for the 9 seeds")]
    // Values the command-line parser cannot convert: one line, like every other bad value.
    [InlineData("train --threads abc", "--threads: 'abc' is not a whole number; see `./pai train --help`")]
    [InlineData("train --threads 99999999999", "--threads: '99999999999' is not a whole number from -2147483648 to 2147483647")]
    [InlineData("info --threads -1", "--threads must be 0 (the cores other processes leave free) or positive, got -1")]
    [InlineData("sweep --workers abc", "--workers: 'abc' is not a whole number")]
    [InlineData("run --nproc 99999999999", "--nproc: '99999999999' is not a whole number")]
    [InlineData("worker --lease abc", "--lease: 'abc' is not a number")]
    [InlineData("estimate --reference-size 1.5", "--reference-size: '1.5' is not a whole number")]
    [InlineData("autos fit --max-weights x -l labels.safetensors -o p.safetensors", "--max-weights: 'x' is not a whole number")]
    [InlineData("train --thraeds 2", "unknown option '--thraeds' (did you mean '--threads'?)")]
    [InlineData("trian -e 1", "unexpected argument 'trian' (did you mean 'train'?)")]
    [InlineData("list everything", "Argument 'everything' not recognized. Must be one of: 'models' 'datasets' 'criteria'")]
    // Ranges of the typed options.
    [InlineData("worker --lease 1e300", "--lease must be from 1 to 604800 seconds (a week), got 1E+300")]
    [InlineData("sweep --lease Infinity", "--lease must be from 1 to 604800 seconds (a week), got Infinity")]
    [InlineData("run --nproc 1000", "--nproc 1000 is more than")]
    [InlineData("sweep --workers 1000", "--workers 1000 is more than")]
    [InlineData("run -c hutch_obd -s 0.9 --curvature-classes 1000", "--curvature-classes 1000 is more than the 10 classes of fashion-mnist")]
    [InlineData("estimate --class-passes 2,11", "--class-passes 11 is more than the 10 classes of fashion-mnist")]
    [InlineData("list models --threads 100000", "--threads 100000 is more than")]
    [InlineData("report --threads -1", "--threads must be 0 (the cores other processes leave free) or positive, got -1")]
    [InlineData("sweep --dry-run --threads 100000", "--threads 100000 is more than")]
    // A --store URL's parameters, named with their ranges.
    [InlineData("run --store postgresql://localhost/x?connect_timeout=abc", "connect_timeout=abc in the --store URL is not a whole number from 0 to 1024 seconds")]
    [InlineData("run --store postgresql://localhost/x?connect_timeout=99999999999", "connect_timeout=99999999999 in the --store URL is not a whole number from 0 to 1024")]
    [InlineData("status --store postgresql://localhost/x?connect_timeout=-1", "connect_timeout=-1 in the --store URL is not a whole number from 0 to 1024")]
    [InlineData("sweep --store postgresql://localhost:99999/x", "port=99999 in the --store URL is not a whole number from 1 to 65535")]
    // A worker works on a store a sweep defined; it creates none of its own.
    [InlineData("worker", "no store to work on: no results store in")]
    public void Bad_input_is_refused_at_the_door_naming_the_option(string command, string message)
    {
        using var dir = new TempDirectory();
        var args = Split(command).Concat(["--results", dir.Path]).ToArray();
        var watch = Stopwatch.StartNew();
        var (code, output, err) = Pai(args);
        Assert.True(code == 2, $"exit {code} for {command}\n{output}\n{err}");
        Assert.Contains(message, err);
        Assert.DoesNotContain("Usage:", err + output); // one line, not the whole help
        Assert.DoesNotContain("   at ", err); // no stack trace
        // One error, first (a formula's error points at the place with a caret on the lines below it).
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Split('\n'), line => line.StartsWith("error: "));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path)); // a refused command leaves no store, folder or file behind
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"refusing took {watch.Elapsed}");
    }

    // `--threads 0` samples other processes' load over 200 ms: only commands that compute pay for it.
    [Fact]
    public void Commands_that_compute_nothing_take_no_load_sample_and_info_still_shows_the_threads_chosen()
    {
        using var dir = new TempDirectory();
        var asked = PaiHost.DefaultThreadsAsked;
        Assert.Equal(0, PaiCli.Invoke(PaiCommand.Build().Parse(["list", "models"])));
        Assert.Equal(0, PaiCli.Invoke(PaiCommand.Build().Parse(["--help"])));
        Assert.Equal(0, PaiCli.Invoke(PaiCommand.Build().Parse(["sweep", "--dry-run", "--seeds", "0", "--results", dir.Path])));
        Assert.Equal(2, PaiCli.Invoke(PaiCommand.Build().Parse(["report", "--results", dir.Path]))); // no store yet
        Assert.Equal(2, PaiCli.Invoke(PaiCommand.Build().Parse(["status", "--results", dir.Path])));
        Assert.Equal(asked, PaiHost.DefaultThreadsAsked);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));

        // A command that computes (or shows what it would compute with) still chooses them from the load.
        var (code, output, err) = Pai(["info"]);
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
        Assert.Matches(@"threads\s+│ \d+ \(\d+ cores", output);
    }

    // A formula the parser could not nest through without overflowing the stack (which no handler
    // can catch) is refused by its length or depth; the formulas have no spaces, so Split keeps them whole.
    [Fact]
    public void A_formula_nested_too_deep_is_refused_at_the_door()
    {
        var deep = new string('(', 10000) + "theta" + new string(')', 10000);
        Bad_input_is_refused_at_the_door_naming_the_option($"prune -c {deep} -s 0.9", "the formula is 20005 characters long; at most 10000 are allowed");
        var nested = string.Concat(Enumerable.Repeat("abs(", 300)) + "theta" + new string(')', 300);
        Bad_input_is_refused_at_the_door_naming_the_option($"prune -c {nested} -s 0.9", "the formula nests more than 256 levels deep; at most 256 are allowed");
    }

    static IEnumerable<string> Split(string command) =>
        System.Text.RegularExpressions.Regex.Matches(command, "\"[^\"]*\"|\\S+").Select(m => m.Value.Trim('"'));

    [Fact]
    public void An_invalid_sweep_grid_leaves_no_store_behind()
    {
        using var dir = new TempDirectory();
        var (code, _, err) = Pai("sweep", "--criteria", "snip,bogus", "--results", dir.Path);
        Assert.Equal(2, code);
        Assert.Contains("unknown criterion 'bogus'", err);
        Assert.False(File.Exists(Path.Combine(dir.Path, SqliteRunStore.DatabaseFileName)));
    }

    [Fact]
    public void A_mistyped_results_path_is_named_not_created()
    {
        using var dir = new TempDirectory();
        var (code, _, err) = Pai("run", "-d", "cifar10", "--data", "/nonexistent", "-c", "snip", "-s", "0.9", "--threads", "1", "-r", dir.File("a", "b"));
        Assert.Equal(2, code);
        Assert.Contains($"--results: the folder '{dir.File("a")}' does not exist", err);
        Assert.False(Directory.Exists(dir.File("a")), "a refused command created its --results path");
    }

    [Fact]
    public void A_missing_output_folder_is_named_before_any_work()
    {
        var (code, _, err) = Pai("prune", "-c", "magnitude", "-s", "0.9", "-o", "/nonexistent-folder/mask.safetensors");
        Assert.Equal(2, code);
        Assert.Contains("the folder '/nonexistent-folder' does not exist", err);
        Assert.DoesNotContain(".tmp", err);
    }

    // Root cannot be kept out of a folder by its permissions, so the unwritable places are ones no
    // one can write to: a folder under a regular file, a folder that takes no new file (/proc), a
    // folder where a file is asked for.
    [Theory]
    [InlineData("{file}/m.safetensors", "--out: '{file}' is a file, not a folder")]
    [InlineData("/proc/m.safetensors", "--out: cannot create files in the folder '/proc'")]
    [InlineData("{dir}", "--out: '{dir}' is a folder; name a file")]
    public void An_unwritable_output_is_refused_before_any_work_and_nothing_is_written(string output, string message)
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("file"), "");
        string Place(string s) => s.Replace("{file}", dir.File("file")).Replace("{dir}", dir.Path);
        var (code, stdout, err) = Pai("prune", "-c", "magnitude", "-s", "0.9", "-d", "synthetic", "-o", Place(output),
            "--save-scores", dir.File("scores.safetensors"), "--save-init", dir.File("init.safetensors"));
        Assert.Equal(2, code);
        Assert.Contains(Place(message), err);
        Assert.DoesNotContain(".tmp", err);
        Assert.DoesNotContain("warm-up", stdout); // refused before the model was built
        Assert.Equal(["file"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("-o m.safetensors --save-scores ./m.safetensors", "--out and --save-scores both name")]
    [InlineData("--save-scores s.safetensors --save-init sub/../s.safetensors", "--save-scores and --save-init both name")]
    [InlineData("--save-init mask.safetensors", "--out and --save-init both name")] // -o's default
    public void Two_outputs_naming_one_file_are_refused_before_any_work(string outputs, string message)
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.File("sub"));
        var (code, _, err) = CliEndToEndTests.RunIn(dir.Path, ["prune", "-c", "magnitude", "-s", "0.9", "-d", "synthetic", .. Split(outputs)]);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
        Assert.Empty(Directory.GetFiles(dir.Path, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void Every_command_that_writes_checks_where_before_any_work()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("file"), "");
        foreach (var args in new[]
        {
            new[] { "imp", "-d", "synthetic", "-o", dir.File("file", "imp") },
            ["autos", "label", "-d", "synthetic", "-o", dir.File("file")],
            ["autos", "fit", "-l", dir.File("no-labels.safetensors"), "-o", "/proc/predictor.safetensors"],
            ["train", "-d", "synthetic", "-o", dir.File("file", "checkpoint.safetensors")],
        })
        {
            var (code, stdout, err) = Pai(args);
            Assert.True(code == 2, $"{string.Join(" ", args)}: exit {code}\n{stdout}\n{err}");
            Assert.Contains("error: --out: ", err);
            Assert.DoesNotContain("round", stdout);
        }
        Assert.Equal(["file"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Long_scoring_reports_progress()
    {
        // 7 samples per class at scoring batch 1: 70 batches of 1×28×28, merged into 5 (4 × 15 + 10)
        // for these batch-independent statistics; the exact Hessian diagonal takes C − 1 = 9 class passes per
        // batch, reported as they finish (in groups that share their per-sample squares).
        foreach (var (criterion, expected) in new[] { ("fisher_obd", "scoring: per-sample squared gradients "), ("hutch_obd", "scoring: Hessian diagonal, class passes ") })
        {
            var c = RunPlan.Canonical(new RunConfig { Dataset = "synthetic", Criterion = criterion, Sparsity = 0.9, SamplesPerClass = 7 });
            var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
            using var m = Runner.CreateModel(RunPlan.Of(c), train);
            var lines = new List<string>();
            var before = Runner.ScoringProgressInterval;
            Runner.ScoringProgressInterval = TimeSpan.Zero;
            try
            {
                var result = Runner.Prune(RunPlan.Of(c), m, train, null, lines.Add);
                MaskModule.dispose(result.Mask);
            }
            finally
            {
                Runner.ScoringProgressInterval = before;
            }
            var total = criterion == "hutch_obd" ? "/45 (" : "/5 (";
            Assert.Contains(lines, l => l.StartsWith(expected) && l.Contains(total) && l.Contains("s left"));
        }
    }

    [Fact]
    public void A_damaged_stored_statistic_is_reported_recomputed_and_replaced()
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        var c = RunPlan.Canonical(new RunConfig { Dataset = "synthetic", Criterion = "snip", Sparsity = 0.9, SamplesPerClass = 2 });
        var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
        bool[] MaskOnce(List<string> log)
        {
            using var m = Runner.CreateModel(RunPlan.Of(c), train);
            var result = Runner.Prune(RunPlan.Of(c), m, train, store, log.Add);
            try { return result.Mask.Layers.SelectMany(l => l.Item2.Flatten().ToArray<bool>()).ToArray(); }
            finally { MaskModule.dispose(result.Mask); }
        }
        var first = MaskOnce([]);
        var file = Assert.Single(Directory.GetFiles(Path.Combine(dir.Path, "scores")));
        var length = new FileInfo(file).Length;
        using (var f = File.OpenWrite(file)) f.SetLength(length / 2); // truncated, as by a full disk
        var log = new List<string>();
        Assert.Equal(first, MaskOnce(log));
        Assert.Contains(log, l => l.StartsWith("warning: stored statistic grad is damaged") && l.Contains("recomputing"));
        Assert.Equal(length, new FileInfo(file).Length); // replaced by a whole file
        using var healed = Safetensors.Load(file);
        Assert.Equal("grad", healed.Metadata["statistic"]);
    }

    [Fact]
    public void A_mask_that_keeps_nothing_is_refused()
    {
        using var dir = new TempDirectory();
        var c = RunPlan.Canonical(new RunConfig { Dataset = "synthetic" });
        var train = Data.Get(c.Dataset, null, DatasetSplit.Train);
        using (var m = Runner.CreateModel(RunPlan.Of(c), train))
        using (var scope = new DisposeScope())
            Safetensors.Save(dir.File("empty.safetensors"), m.Prunable.Select(p => (p.Key, Libtorch.Zeros(p.Value.Shape, DType.Bool))));
        var e = Assert.Throws<ArgumentException>(() => PaiHost.Train(c, dir.File("empty.safetensors")));
        Assert.Contains("keeps no weight", e.Message);
    }
}
