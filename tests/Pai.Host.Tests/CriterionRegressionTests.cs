using System.Security.Cryptography;

namespace Pai.Host.Tests;

/// <summary>
/// Masks of every built-in criterion are bit-identical to those of Pai before criteria became
/// formulas over statistics (hashes recorded with commit 2c7da85 on this machine's libtorch), at
/// 90/98/99.5% on lenet5/Fashion-MNIST and resnet20/synthetic, through the real run path
/// (statistics stored and read back between sparsities). hts is absent on purpose: it was wrong
/// (g at T=1) and now takes both terms at T=200 (see the PyTorch test in Pai.Tests).
/// </summary>
public sealed class CriterionRegressionTests
{
    // Criterion → mask hashes at 90%, 98%, 99.5% (first 16 hex digits of SHA-256 over names and mask bytes).
    static readonly Dictionary<(string Model, string Criterion), string[]> Expected = new()
    {
        [("lenet5", "random")] = ["948f21d308e8e54c", "aba0ec6a1a829476", "f0353287edb56373"],
        [("lenet5", "magnitude")] = ["619abb71f2ed239a", "505f94df345d2218", "799e7cbfdb583218"],
        [("lenet5", "grad_norm")] = ["33c062c161a568c8", "74e0c2ce80443c87", "57359b4fba00fcf4"],
        [("lenet5", "snip")] = ["7f6ce819a4a98a67", "0b8edb936c7e48ed", "1893b97bbe0b1027"],
        [("lenet5", "grasp")] = ["2120c61627e2b344", "56c9dbd35acdf8c3", "d4a40dedebc320e2"],
        [("lenet5", "synflow")] = ["fac17608ed5c195d", "44036dc71f4f3df2", "b82231d24ae13a19"],
        [("lenet5", "fisher_diag")] = ["4a5727ead4bac690", "b98d4cc3b911990d", "b90ebe772e9b295e"],
        [("lenet5", "fisher_obd")] = ["f60c40b1e33b1a32", "f6b3f08aa19f292a", "e8447982fbf5e608"],
        [("lenet5", "fts")] = ["8d0250709211f1b9", "59099d5e7ff830b5", "9c012eee7df9c027"],
        [("lenet5", "gn_diag")] = ["73ba359f2dfb1258", "b41445ff596ef9d1", "72365e12d650a198"],
        [("lenet5", "hutch_diag")] = ["93633f1bb25e8842", "7e7ceb5cf872d994", "b458ef0f5f39d09e"],
        [("lenet5", "hutch_obd")] = ["ea81d89d23be3465", "aaa78613169e040e", "d820819cb99382b0"],
        [("resnet20", "random")] = ["87dfdee6e83720d1", "47eaeeb1cc661155", "0c72820aec76a890"],
        [("resnet20", "magnitude")] = ["5aec316a61515bcd", "346b087df254d94c", "f20c2ebdaf9a291f"],
        [("resnet20", "grad_norm")] = ["c0c4137f31a5196b", "479164b121c4c1c1", "fc059d73b59028f3"],
        [("resnet20", "snip")] = ["e0c44e1577b8a827", "eae9ae529fd46ed4", "4df978d1c66f288d"],
        [("resnet20", "grasp")] = ["a6ac39ef84999405", "57ef9f2dcaeb3f50", "82d79130a03649da"],
        [("resnet20", "synflow")] = ["0f4d7fb190af4911", "f6bbb86c60aee3b8", "3bc9600b8f4a51b3"],
        [("resnet20", "fisher_diag")] = ["9ea92d6a695be14b", "8059c5b520d7b858", "e5424ebd04952c24"],
        [("resnet20", "fisher_obd")] = ["3f423c2160f0512e", "348dcecc832355c9", "248cab81e9d9d47e"],
        [("resnet20", "fts")] = ["9d8364e7af5002c4", "b33808785b77e73b", "93dad5f81752d6af"],
        [("resnet20", "gn_diag")] = ["01572c64fc7f4b24", "9a576db6cb5063b7", "72651b5908b68e57"],
        [("resnet20", "hutch_diag")] = ["29125b830cb9e6d2", "f51e6d3c71f16aee", "943915c8a34262df"],
        [("resnet20", "hutch_obd")] = ["d322f1feec9d9a77", "aa587c927bfa1662", "5fd0459eae870398"],
    };

    static readonly double[] Sparsities = [0.9, 0.98, 0.995];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var (model, criterion) in Expected.Keys) data.Add(model, criterion);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MaskIsBitIdenticalToTheRecordedOne(string model, string criterion)
    {
        using var dir = new TempDirectory();
        using var store = new SqliteRunStore(dir.Path);
        using var data = new DataCache();
        var dataset = model == "lenet5" ? "fashion-mnist" : "synthetic";
        var hashes = Sparsities.Select(s =>
        {
            var c = Experiment.Configure(new RunConfig
            {
                Model = model, Dataset = dataset, Criterion = criterion, Sparsity = s,
                SamplesPerClass = model == "lenet5" ? 2 : 1, Probes = 2, Rounds = criterion == "synflow" ? 10 : null,
            });
            var train = data.Get(c.Dataset, null, DatasetSplit.Train);
            using var m = Experiment.CreateModel(c, train);
            var result = Experiment.Prune(c, m, train, store, _ => { });
            try { return Hash(result.Mask); }
            finally { MaskModule.dispose(result.Mask); }
        }).ToArray();
        Assert.Equal(Expected[(model, criterion)], hashes);
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
