/// The F# surface over Pai.Torch for criteria and estimators: pipeline-friendly functions
/// (data last), gradients and Hessian-vector products. Operators (+, -, *, / with tensors and
/// floats) come from the Tensor type itself.
module Pai.Tensors

open Pai.Torch

/// Alias so that signatures read naturally.
type Tensor = Pai.Torch.Tensor

// ---- elementwise, data last -------------------------------------------------------------------

let abs (t: Tensor) = t.Abs()
let neg (t: Tensor) = t.Neg()
let sign (t: Tensor) = t.Sign()
let sqrt (t: Tensor) = t.Sqrt()
let exp (t: Tensor) = t.Exp()
let log (t: Tensor) = t.Log()
let square (t: Tensor) = t.Square()
let pow (exponent: float) (t: Tensor) = t.Pow exponent
let scale (factor: float) (t: Tensor) = t * factor
let clamp (lo: float) (hi: float) (t: Tensor) = t.Clamp(lo, hi)
let where (cond: Tensor) (a: Tensor) (b: Tensor) = Tensor.Where(cond, a, b)

// ---- reductions and shape -------------------------------------------------------------------

let sum (t: Tensor) = t.Sum()
let mean (t: Tensor) = t.Mean()
let sumDim (dim: int64) (t: Tensor) = t.Sum(dim)
let meanDim (dim: int64) (t: Tensor) = t.Mean(dim)
let flatten (t: Tensor) = t.Flatten()
let reshape (shape: int64 list) (t: Tensor) = t.Reshape(List.toArray shape)
let detach (t: Tensor) = t.Detach()
let toDType (dtype: DType) (t: Tensor) = t.To dtype
let item (t: Tensor) = t.Item()
let shape (t: Tensor) = t.Shape
let numel (t: Tensor) = t.NumEl

/// Copies a float32 or float64 tensor out as float[] (float64).
let toFloats (t: Tensor) : float[] =
    use d = t.To DType.Float64
    d.ToArray<float>()

// ---- creation ------------------------------------------------------------------------------

/// A float64 tensor from values and a shape.
let ofFloats (shape: int64 list) (values: float[]) =
    Libtorch.FromArray<float>(values, List.toArray shape)

/// A float32 tensor from values and a shape.
let ofFloat32s (shape: int64 list) (values: float32[]) =
    Libtorch.FromArray<float32>(values, List.toArray shape)

let zerosLike (t: Tensor) =
    Libtorch.Zeros(t.Shape, t.DType, t.Device)

let onesLike (t: Tensor) =
    Libtorch.Ones(t.Shape, t.DType, t.Device)

/// Rademacher ±1 entries shaped like t, drawn from the generator.
let rademacherLike (generator: Generator) (t: Tensor) = Libtorch.RademacherLike(t, generator)

// ---- autograd ------------------------------------------------------------------------------

/// A leaf that requires gradients: a copy of t cut from any graph.
let param (t: Tensor) =
    let p = t.Detach()
    p.RequiresGrad <- true
    p

/// ∂output/∂inputs for a scalar output (zeros for inputs it does not depend on).
let grad (inputs: Tensor list) (output: Tensor) : Tensor list =
    Autograd.Grad(output, List.toArray inputs) |> Array.toList

/// ∂output/∂inputs keeping the graph, so the result can be differentiated again.
let gradWithGraph (inputs: Tensor list) (output: Tensor) : Tensor list =
    Autograd.Grad(output, List.toArray inputs, createGraph = true, retainGraph = true)
    |> Array.toList

/// Hessian-vector product H·v of a scalar function of the inputs, by double backward.
/// f is called once; one vector per input.
let hvp (f: Tensor list -> Tensor) (inputs: Tensor list) (vectors: Tensor list) : Tensor list =
    let output = f inputs

    Autograd.HessianVectorProduct(output, List.toArray inputs, List.toArray vectors)
    |> Array.toList

/// Hessian-vector product for an output already computed with a graph (keeps the graph when
/// retainGraph, so several products can share one forward pass).
let hvpOf (retainGraph: bool) (inputs: Tensor list) (vectors: Tensor list) (output: Tensor) : Tensor list =
    Autograd.HessianVectorProduct(output, List.toArray inputs, List.toArray vectors, retainGraph)
    |> Array.toList

/// Runs f with gradient recording off on this thread.
let noGrad (f: unit -> 'a) : 'a =
    use _guard = Libtorch.NoGrad()
    f ()

/// Runs f inside a fresh dispose scope; the result (a tensor) is moved to the enclosing scope.
let scoped (f: unit -> Tensor) : Tensor =
    use _scope = new DisposeScope()
    (f ()).MoveToOuterScope()

/// Runs f inside a fresh dispose scope; every tensor of the resulting list is moved out.
let scopedList (f: unit -> Tensor list) : Tensor list =
    use _scope = new DisposeScope()
    f () |> List.map (fun t -> t.MoveToOuterScope())
