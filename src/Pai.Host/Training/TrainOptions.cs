namespace Pai.Host.Training;

/// <summary>Optimizer family.</summary>
public enum OptimizerKind
{
    /// <summary>SGD with momentum (PyTorch semantics), optional Nesterov, L2 weight decay.</summary>
    Sgd,
    /// <summary>AdamW (decoupled weight decay).</summary>
    AdamW,
}

/// <summary>Learning-rate schedule, stepped once per epoch.</summary>
public enum LrSchedule
{
    /// <summary>Constant learning rate.</summary>
    Constant,
    /// <summary>Multiply by Gamma at each milestone epoch.</summary>
    MultiStep,
    /// <summary>Cosine annealing from the base rate to zero over the epochs.</summary>
    Cosine,
}

/// <summary>How to train. Defaults follow common CIFAR practice (SGD 0.1, momentum 0.9, wd 5e-4, cosine).</summary>
public sealed record TrainOptions
{
    /// <summary>Passes over the training data.</summary>
    public int Epochs { get; init; } = 10;
    /// <summary>Optimizer family.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Sgd;
    /// <summary>Base learning rate.</summary>
    public double LearningRate { get; init; } = 0.1;
    /// <summary>Batches over which the rate rises linearly to the schedule's (0: none).</summary>
    public int LrWarmup { get; init; }
    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; } = 0.9;
    /// <summary>Nesterov momentum for SGD.</summary>
    public bool Nesterov { get; init; }
    /// <summary>Weight decay (L2 for SGD, decoupled for AdamW).</summary>
    public double WeightDecay { get; init; } = 5e-4;
    /// <summary>AdamW β₁.</summary>
    public double Beta1 { get; init; } = 0.9;
    /// <summary>AdamW β₂.</summary>
    public double Beta2 { get; init; } = 0.999;
    /// <summary>AdamW ε.</summary>
    public double Epsilon { get; init; } = 1e-8;
    /// <summary>Learning-rate schedule.</summary>
    public LrSchedule Schedule { get; init; } = LrSchedule.Cosine;
    /// <summary>Epochs at which MultiStep multiplies the rate by <see cref="Gamma"/>.</summary>
    public IReadOnlyList<int> Milestones { get; init; } = [];
    /// <summary>MultiStep factor.</summary>
    public double Gamma { get; init; } = 0.1;
    /// <summary>Label smoothing of the cross-entropy loss.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Stop an epoch after this many batches (null = the whole epoch): for short budgets.</summary>
    public int? MaxBatchesPerEpoch { get; init; }
    /// <summary>Whether masked layers train with the sparse kernels (CPU only; results agree to float rounding).</summary>
    public SparseKernelMode SparseKernels { get; init; } = SparseKernelMode.Auto;

    /// <summary>Batches one epoch runs when the loader has <paramref name="available"/>: <see cref="MaxBatchesPerEpoch"/> caps them.</summary>
    public int BatchesPerEpoch(int available) => MaxBatchesPerEpoch is { } m ? Math.Min(m, available) : available;

    /// <summary>Throws with a message naming the bad option.</summary>
    public void Validate()
    {
        if (Epochs < 1) throw new ArgumentException($"epochs must be at least 1, got {Epochs}");
        if (!(LearningRate > 0)) throw new ArgumentException($"the learning rate must be positive, got {LearningRate}");
        if (Momentum < 0 || Momentum >= 1) throw new ArgumentException($"momentum must lie in [0, 1), got {Momentum}");
        if (WeightDecay < 0) throw new ArgumentException($"weight decay must be non-negative, got {WeightDecay}");
        if (LabelSmoothing < 0 || LabelSmoothing >= 1) throw new ArgumentException($"label smoothing must lie in [0, 1), got {LabelSmoothing}");
        if (LrWarmup < 0) throw new ArgumentException($"the learning-rate warm-up must be at least 0 batches, got {LrWarmup}");
        if (MaxBatchesPerEpoch is < 1) throw new ArgumentException($"max batches per epoch must be at least 1, got {MaxBatchesPerEpoch}");
    }

    /// <summary>
    /// The rate of training step <paramref name="step"/> (0-based, counted over all epochs) when
    /// the schedule gives <paramref name="scheduled"/>: linear warm-up from <c>scheduled / LrWarmup</c>
    /// over the first <see cref="LrWarmup"/> steps (Goyal et al. 2017), the schedule's rate after.
    /// </summary>
    public double WarmedUp(double scheduled, long step) =>
        step < LrWarmup ? scheduled * (step + 1) / LrWarmup : scheduled;

    /// <summary>The learning rate used during epoch <paramref name="epoch"/> (0-based).</summary>
    public double LearningRateAt(int epoch) => Schedule switch
    {
        LrSchedule.Constant => LearningRate,
        LrSchedule.MultiStep => LearningRate * Math.Pow(Gamma, Milestones.Count(m => epoch >= m)),
        LrSchedule.Cosine => 0.5 * LearningRate * (1 + Math.Cos(Math.PI * epoch / Epochs)),
        _ => throw new ArgumentOutOfRangeException(nameof(Schedule)),
    };
}

/// <summary>Test metrics.</summary>
/// <param name="Loss">Mean cross-entropy.</param>
/// <param name="Top1">Top-1 accuracy in [0, 1].</param>
/// <param name="Top5">Top-5 accuracy in [0, 1] (top-min(5, classes)).</param>
/// <param name="Samples">Samples evaluated.</param>
public sealed record EvalResult(double Loss, double Top1, double Top5, long Samples);

/// <summary>One finished epoch.</summary>
/// <param name="Epoch">1-based epoch number.</param>
/// <param name="TrainLoss">Mean training loss.</param>
/// <param name="TrainTop1">Training accuracy.</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="Test">Test metrics, when a test set was given.</param>
/// <param name="Seconds">Wall time of the epoch (training and evaluation).</param>
/// <param name="ImagesPerSecond">Training throughput.</param>
public sealed record EpochResult(int Epoch, double TrainLoss, double TrainTop1, double LearningRate, EvalResult? Test, double Seconds, double ImagesPerSecond)
{
    /// <summary>
    /// Every masked layer's kernel and measured speedup; <see cref="SparseLayerChoices.Sparse"/> names
    /// those that ran the sparse kernels.
    /// </summary>
    public SparseLayerChoices SparseLayers { get; init; } = SparseLayerChoices.None;
}

/// <summary>Progress of training, reported per batch and per epoch.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Epochs">Total epochs.</param>
/// <param name="Batch">Batches done in this epoch.</param>
/// <param name="BatchesPerEpoch">Batches in an epoch, when known.</param>
/// <param name="Loss">Running mean training loss of the epoch.</param>
/// <param name="Finished">Set on the epoch's last report.</param>
public sealed record TrainProgress(int Epoch, int Epochs, int Batch, int? BatchesPerEpoch, double Loss, EpochResult? Finished)
{
    /// <summary>
    /// Every masked layer's kernel and measured speedup; <see cref="SparseLayerChoices.Sparse"/> names
    /// those running the sparse kernels.
    /// </summary>
    public SparseLayerChoices SparseLayers { get; init; } = SparseLayerChoices.None;
}
