using System.Security.Cryptography;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Pai.Host.Tests;

/// <summary>
/// Masks of every built-in criterion are bit-identical to those of Pai before criteria became
/// formulas over statistics (hashes recorded with commit 2c7da85 on this machine's libtorch), at
/// 90/98/99.5% on lenet5/Fashion-MNIST and resnet20/synthetic, through the real run path
/// (statistics stored and read back between sparsities). hts is absent from those on purpose: it
/// was wrong (g at T=1) and now takes both terms at T=200 (see the PyTorch test in Pai.Tests).
/// The Hessian-diagonal criteria keep their recorded masks under --curvature hutchinson; their
/// rows under the default (exact on these piecewise-linear models) were recorded when the exact
/// diagonal was wired in, and ExactMaskEqualsTheUnitVectorHvpMask checks that method against an
/// independent oracle. Since the batch-independent statistics read merged scoring batches (batch-1
/// semantics at batched cost), every row kept its hash: the float rounding of the merged sums
/// moved no weight across a threshold.
/// </summary>
public sealed class CriterionRegressionTests
{
    // Criterion → mask hashes at 90%, 98%, 99.5% (first 16 hex digits of SHA-256 over names and mask bytes).
    static readonly Dictionary<(string Model, string Criterion, string Curvature), string[]> Expected = new()
    {
        [("lenet5", "random", "auto")] = ["948f21d308e8e54c", "aba0ec6a1a829476", "f0353287edb56373"],
        [("lenet5", "magnitude", "auto")] = ["619abb71f2ed239a", "505f94df345d2218", "799e7cbfdb583218"],
        [("lenet5", "grad_norm", "auto")] = ["33c062c161a568c8", "74e0c2ce80443c87", "57359b4fba00fcf4"],
        [("lenet5", "snip", "auto")] = ["7f6ce819a4a98a67", "0b8edb936c7e48ed", "1893b97bbe0b1027"],
        [("lenet5", "grasp", "auto")] = ["2120c61627e2b344", "56c9dbd35acdf8c3", "d4a40dedebc320e2"],
        [("lenet5", "synflow", "auto")] = ["fac17608ed5c195d", "44036dc71f4f3df2", "b82231d24ae13a19"],
        [("lenet5", "fisher_diag", "auto")] = ["4a5727ead4bac690", "b98d4cc3b911990d", "b90ebe772e9b295e"],
        [("lenet5", "fisher_obd", "auto")] = ["f60c40b1e33b1a32", "f6b3f08aa19f292a", "e8447982fbf5e608"],
        [("lenet5", "fts", "auto")] = ["8d0250709211f1b9", "59099d5e7ff830b5", "9c012eee7df9c027"],
        [("lenet5", "gn_diag", "auto")] = ["73ba359f2dfb1258", "b41445ff596ef9d1", "72365e12d650a198"],
        [("lenet5", "hutch_diag", "hutchinson")] = ["93633f1bb25e8842", "7e7ceb5cf872d994", "b458ef0f5f39d09e"],
        [("lenet5", "hutch_obd", "hutchinson")] = ["ea81d89d23be3465", "aaa78613169e040e", "d820819cb99382b0"],
        [("lenet5", "hutch_diag", "auto")] = ["07b4e7fd0e1346fd", "f6edd6bedd60ad93", "bcad76cca3946850"],
        [("lenet5", "hutch_obd", "auto")] = ["45de0faf363c19e0", "2037f73e8023de32", "47e118b0d5140851"],
        [("lenet5", "hts", "auto")] = ["6d7d4920069966de", "070f80a746719147", "89047498716f3953"],
        [("resnet20", "random", "auto")] = ["87dfdee6e83720d1", "47eaeeb1cc661155", "0c72820aec76a890"],
        [("resnet20", "magnitude", "auto")] = ["5aec316a61515bcd", "346b087df254d94c", "f20c2ebdaf9a291f"],
        [("resnet20", "grad_norm", "auto")] = ["c0c4137f31a5196b", "479164b121c4c1c1", "fc059d73b59028f3"],
        [("resnet20", "snip", "auto")] = ["e0c44e1577b8a827", "eae9ae529fd46ed4", "4df978d1c66f288d"],
        [("resnet20", "grasp", "auto")] = ["a6ac39ef84999405", "57ef9f2dcaeb3f50", "82d79130a03649da"],
        [("resnet20", "synflow", "auto")] = ["0f4d7fb190af4911", "f6bbb86c60aee3b8", "3bc9600b8f4a51b3"],
        [("resnet20", "fisher_diag", "auto")] = ["9ea92d6a695be14b", "8059c5b520d7b858", "e5424ebd04952c24"],
        [("resnet20", "fisher_obd", "auto")] = ["3f423c2160f0512e", "348dcecc832355c9", "248cab81e9d9d47e"],
        [("resnet20", "fts", "auto")] = ["9d8364e7af5002c4", "b33808785b77e73b", "93dad5f81752d6af"],
        [("resnet20", "gn_diag", "auto")] = ["01572c64fc7f4b24", "9a576db6cb5063b7", "72651b5908b68e57"],
        [("resnet20", "hutch_diag", "hutchinson")] = ["29125b830cb9e6d2", "f51e6d3c71f16aee", "943915c8a34262df"],
        [("resnet20", "hutch_obd", "hutchinson")] = ["d322f1feec9d9a77", "aa587c927bfa1662", "5fd0459eae870398"],
        [("resnet20", "hutch_diag", "auto")] = ["ca597b1c5ffb1bbf", "1dcea76c154a682d", "939499288f2145f6"],
        [("resnet20", "hutch_obd", "auto")] = ["4ffe0593120f1a26", "b3e954c8333eae60", "3cbca5a5718eab2d"],
    };

    static readonly double[] Sparsities = [0.9, 0.98, 0.995];

    public static TheoryData<string, string, string> Cases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (model, criterion, curvature) in Expected.Keys) data.Add(model, criterion, curvature);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MaskIsBitIdenticalToTheRecordedOne(string model, string criterion, string curvature)
    {
        // Hutchinson's rows take 2 probes; the exact method takes no Hutchinson option.
        var readsHdiag = criterion is "hutch_diag" or "hutch_obd" or "hts";
        var hutchinson = curvature == "hutchinson" || !readsHdiag;
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        using var data = new DataCache();
        var dataset = model == "lenet5" ? "fashion-mnist" : "synthetic";
        var hashes = Sparsities.Select(s =>
        {
            var c = RunPlan.Canonical(new RunConfig
            {
                Model = model, Dataset = dataset, Criterion = criterion, Sparsity = s, Curvature = curvature,
                SamplesPerClass = model == "lenet5" ? 2 : 1, Probes = hutchinson ? 2 : 10, Rounds = criterion == "synflow" ? 10 : null,
            });
            if (readsHdiag) Assert.Equal(hutchinson ? "hutchinson" : "exact", c.Curvature);
            var train = data.Get(c.Dataset, null, DatasetSplit.Train);
            using var m = Runner.CreateModel(RunPlan.Of(c), train);
            var result = Runner.Prune(RunPlan.Of(c), m, train, store, _ => { });
            try { return Hash(result.Mask); }
            finally { MaskModule.dispose(result.Mask); }
        }).ToArray();
        Assert.Equal(Expected[(model, criterion, curvature)], hashes);
    }

    /// <summary>
    /// The exact default's masks are those of the true Hessian diagonal: on lenet300 over 2×2
    /// inputs (32,200 weights, few enough for one unit-vector HVP each), hutch_diag, hutch_obd and
    /// hts scored through the run path's statistic (--curvature settled to exact) keep the same
    /// weights at 90/98/99.5% as the same formulas over the diagonal read off unit-vector HVPs.
    /// </summary>
    [Fact]
    public void ExactMaskEqualsTheUnitVectorHvpMask()
    {
        using var scope = new DisposeScope();
        var shape = new Models.InputShape(1, 2, 2);
        using var model = Models.ModelZoo.Create("lenet300", new Models.ModelOptions { InputShape = shape, Seed = 3 });
        using var gen = new Generator(11);
        var batches = ListModule.OfSeq([new Batch(Libtorch.Randn(shape.WithBatch(20), gen),
            Libtorch.FromArray(Enumerable.Range(0, 20).Select(i => (long)(i % 10)).ToArray()))]);
        var config = RunPlan.Canonical(new RunConfig { Model = "lenet300", Criterion = "hutch_obd", Sparsity = 0.9 });
        Assert.Equal("exact", config.Curvature);
        var exact = new ScoringContext(model, batches, ListModule.OfSeq(shape.Dimensions), 0, RunPlan.CurvatureOf(config), FSharpOption<Mask>.None);
        var t = config.HutchinsonTemperature;
        var oracle = Enumerable.Range(0, model.Prunable.Count).Select(i => Estimators.unitVectorDiagonal(model, t, i, batches).Item1.DetachFromScope()).ToList();
        var hdiag = Statistic.HessianDiagonal(t).Name;
        using var exactCache = new StatisticCache(exact);
        using var oracleCache = new StatisticCache(exact, [Tuple.Create(hdiag, new StatisticValue(ListModule.OfSeq(oracle), FSharpList<CurvatureDiagnostics>.Empty))]);
        foreach (var name in new[] { "hutch_diag", "hutch_obd", "hts" })
        {
            var criterion = PaiPruning.ResolveCriterion(name, RunPlan.TemperaturesOf(config));
            var fromExact = Criteria.scoreWith(exactCache, criterion);
            var fromOracle = Criteria.scoreWith(oracleCache, criterion);
            Assert.Contains(hdiag, exactCache.Computed); // the exact side computed its diagonal, the oracle side was given it
            Assert.DoesNotContain(hdiag, oracleCache.Computed);
            foreach (var sparsity in Sparsities)
            {
                var a = Selection.select(Ranking.Global, 1 - sparsity, false, FSharpOption<Mask>.None, fromExact);
                var b = Selection.select(Ranking.Global, 1 - sparsity, false, FSharpOption<Mask>.None, fromOracle);
                Assert.True(Hash(a) == Hash(b), $"{name} at {sparsity:P1}: the exact diagonal's mask differs from the unit-vector HVP mask");
            }
        }
    }

    static string Hash(Mask mask)
    {
        var bytes = new List<byte>();
        foreach (var (name, keep) in mask.Layers)
        {
            bytes.AddRange(System.Text.Encoding.UTF8.GetBytes(name));
            bytes.AddRange(keep.Flatten().ToArray<bool>().Select(b => b ? (byte)1 : (byte)0));
        }
        return Convert.ToHexStringLower(SHA256.HashData(bytes.ToArray()))[..16];
    }
}
