/// Immutable pipeline records and the model view that criteria consume. Criteria depend only on
/// this file and Pai.Torch, never on the host.
namespace Pai

open System.Collections.Generic
open Pai.Torch

/// One batch: inputs [N, C, H, W] (float) and int64 class targets [N].
type Batch = { Inputs: Tensor; Targets: Tensor }

/// What a criterion sees of a model. Implemented by the host's models.
type IModelView =
    /// Model name (e.g. "lenet5").
    abstract Name: string
    /// The prunable weights in a fixed order, by parameter name. These are the live leaf
    /// tensors (requiring gradients) that forward uses.
    abstract Prunable: IReadOnlyList<KeyValuePair<string, Tensor>>
    /// Every trainable parameter by name (prunable or not: biases, norm weights, …).
    abstract Parameters: IReadOnlyList<KeyValuePair<string, Tensor>>
    /// Logits [N, classes] for inputs [N, C, H, W].
    abstract Forward: inputs: Tensor -> Tensor
    /// Train mode (batch statistics, dropout) or eval mode.
    abstract Training: bool with get, set
    /// The device the parameters live on.
    abstract Device: Device
    /// A deep copy of the model (parameters and buffers) converted to another dtype.
    abstract CopyAs: dtype: DType -> IModelView
    /// Frees the model's tensors.
    inherit System.IDisposable
