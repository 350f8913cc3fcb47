
namespace Pai.Host.Tests;

public class RealDataTrainingTests
{
    [Fact]
    public void Lenet300_trained_one_epoch_on_Fashion_MNIST_exceeds_80_percent()
    {
        using var train = DatasetRegistry.FashionMnist(DatasetSplit.Train);
        using var test = DatasetRegistry.FashionMnist(DatasetSplit.Test);
        using var trainLoader = new DataLoader(train, 128, shuffle: true, seed: 1);
        using var testLoader = new DataLoader(test, 1000, shuffle: false);
        using var model = ModelZoo.Create("lenet300", new ModelOptions { InputShape = InputShape.Mnist, Classes = 10, Seed = 1 });
        var results = Trainer.Train(model, null, trainLoader.Epoch, () => testLoader.Epoch(0),
            new TrainOptions { Epochs = 1, LearningRate = 0.05, Schedule = LrSchedule.Constant, WeightDecay = 5e-4 });
        var top1 = results[0].Test!.Top1;
        Assert.True(top1 > 0.80, $"test top-1 after one epoch: {top1:P2}");
        Assert.Equal(10000, results[0].Test!.Samples);
    }

    [Fact]
    public void BN_warmup_changes_running_statistics_and_not_parameters()
    {
        using var data = SyntheticData.Create(new SyntheticOptions(Channels: 3, Height: 32, Width: 32, TrainCount: 256, TestCount: 16));
        using var loader = new DataLoader(data, 32, shuffle: true, seed: 2);
        using var model = ModelZoo.Create("resnet20", new ModelOptions { Seed = 3 });
        model.SetBatchNormMomentum(0.1);
        double[] Flat(IEnumerable<KeyValuePair<string, Tensor>> ts) =>
            ts.SelectMany(kv => { using var d = kv.Value.Detach().To(DType.Float64); return d.ToArray<double>(); }).ToArray();
        var paramsBefore = Flat(model.Parameters);
        var buffersBefore = Flat(model.Buffers);

        var used = Pai.BnWarmup.run(model, 4, loader.Epoch(0));

        Assert.Equal(4, used);
        Assert.False(model.Training); // scoring happens in eval mode afterwards
        Assert.Equal(paramsBefore, Flat(model.Parameters));
        var buffersAfter = Flat(model.Buffers);
        var changed = buffersBefore.Zip(buffersAfter).Count(p => p.First != p.Second);
        Assert.True(changed > buffersAfter.Length / 2, $"only {changed} of {buffersAfter.Length} running statistics changed");
        Assert.All(model.Parameters, kv => Assert.Null(kv.Value.Grad));
    }
}
