/// Cross-checks against PyTorch (Debian's python3-torch, the same libtorch 1.13): forward values
/// of the layer functions, batch-norm running statistics and a loss gradient on the same float64
/// inputs, computed in one Python process.
module Pai.Tests.PyTorchTests

open Expecto

open System
open System.Diagnostics
open System.Text.Json
open Pai.Torch
open Pai.Tests.Support


/// The PyTorch side: reads named float64 inputs (values + shape) as JSON and prints every
/// result flattened, by name.
let private script =
    """
import json, sys
import torch
import torch.nn.functional as F
torch.set_num_threads(1)
d = json.load(sys.stdin)
t = lambda n: torch.tensor(d[n]["v"], dtype=torch.float64).reshape(d[n]["s"])
x, w, b = t("x"), t("w"), t("b")
g, beta = t("g"), t("beta")
logits, target = t("logits"), t("target").long()
r = {}
r["conv"] = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
r["max_pool"] = F.max_pool2d(x, 3, 2, 1, 1, ceil_mode=True)
r["avg_pool"] = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
r["adaptive"] = F.adaptive_avg_pool2d(x, (3, 4))
rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
r["bn_train"] = F.batch_norm(x, rm, rv, g, beta, training=True, momentum=0.2, eps=1e-3)
r["bn_running_mean"], r["bn_running_var"] = rm, rv
r["bn_eval"] = F.batch_norm(x, rm, rv, g, beta, training=False, eps=1e-3)
r["layer_norm"] = F.layer_norm(x, (7, 6), t("ln_w"), t("ln_b"))
r["gelu"] = F.gelu(x)
r["gelu_tanh"] = F.gelu(x, approximate="tanh")
r["softmax"] = F.softmax(logits, 1)
r["log_softmax"] = F.log_softmax(logits, -1)
r["ce_smooth"] = F.cross_entropy(logits, target, label_smoothing=0.2)
r["ce_none"] = F.cross_entropy(logits, target, reduction="none")
r["nll_sum"] = F.nll_loss(F.log_softmax(logits, 1), target, reduction="sum")
r["mse"] = F.mse_loss(logits, torch.tanh(logits))
r["var"] = x.var((2, 3))
r["norm3"] = x.norm(3, (1,))
l = logits.clone().requires_grad_()
F.cross_entropy(l, target, label_smoothing=0.1).backward()
r["ce_grad"] = l.grad
print(json.dumps({k: v.detach().flatten().tolist() for k, v in r.items()}))
"""

/// Runs the script with Debian's Python (not a virtual environment's) on the given inputs.
let private runPyTorch (inputs: (string * float[] * int64[]) list) : Map<string, float[]> =
    let json =
        inputs
        |> List.map (fun (name, v, s) -> name, dict [ "v", box v; "s", box s ])
        |> dict
        |> JsonSerializer.Serialize

    let path =
        IO.Path.Combine(IO.Path.GetTempPath(), sprintf "pai-pytorch-%d.py" Environment.ProcessId)

    IO.File.WriteAllText(path, script)

    try
        let info = ProcessStartInfo("/usr/bin/python3", path)
        info.RedirectStandardInput <- true
        info.RedirectStandardOutput <- true
        info.RedirectStandardError <- true
        use p = nonNull (Process.Start info)
        let stderr = p.StandardError.ReadToEndAsync()
        p.StandardInput.Write json
        p.StandardInput.Close()
        let stdout = p.StandardOutput.ReadToEnd()
        p.WaitForExit()

        if p.ExitCode <> 0 then
            failwithf "python3 with torch failed (install python3-torch): %s" stderr.Result

        nonNull (JsonSerializer.Deserialize<Collections.Generic.Dictionary<string, float[]>> stdout)
        |> Seq.map (fun kv -> kv.Key, kv.Value)
        |> Map.ofSeq
    finally
        IO.File.Delete path

/// Deterministic, irregular values.
let private wave (n: int) (phase: float) =
    Array.init n (fun i -> sin (1.7 * float i + phase) * (1.0 + 0.3 * cos (0.37 * float i)))

[<Tests>]
let tests =
    testSequenced
    <| testList
        "PyTorchTests"
        [
            testCase "layer functions, batch-norm statistics and a loss gradient agree with PyTorch"
            <| fun () ->
                let xs = [| 2L; 4L; 7L; 6L |]
                let x = wave (2 * 4 * 7 * 6) 0.1
                let w = wave (6 * 2 * 3 * 3) 0.7
                let b = wave 6 1.3
                let g = wave 4 2.0 |> Array.map (fun v -> 1.0 + 0.5 * v)
                let beta = wave 4 2.9
                let lnW = wave 42 0.4
                let lnB = wave 42 0.9
                let logits = wave 20 0.2 |> Array.map ((*) 3.0)
                let target = [| 0.0; 3.0; 1.0; 1.0; 2.0 |]

                let expected =
                    runPyTorch
                        [
                            "x", x, xs
                            "w", w, [| 6L; 2L; 3L; 3L |]
                            "b", b, [| 6L |]
                            "g", g, [| 4L |]
                            "beta", beta, [| 4L |]
                            "ln_w", lnW, [| 7L; 6L |]
                            "ln_b", lnB, [| 7L; 6L |]
                            "logits", logits, [| 5L; 4L |]
                            "target", target, [| 5L |]
                        ]

                withThreads 1 (fun () ->
                    inScope (fun () ->
                        let xt = f64 xs x
                        let gt, bt = f64 [| 4L |] g, f64 [| 4L |] beta
                        let lt = f64 [| 5L; 4L |] logits
                        let yt = i64 [| 5L |] (Array.map int64 target)
                        let rm = Libtorch.Zeros([| 4L |], DType.Float64)
                        let rv = Libtorch.Ones([| 4L |], DType.Float64)
                        let lg = lt.Clone().RequiresGrad_()

                        let ours =
                            [
                                "conv",
                                F.Conv2d(
                                    xt,
                                    f64 [| 6L; 2L; 3L; 3L |] w,
                                    f64 [| 6L |] b,
                                    struct (2, 1),
                                    struct (1, 0),
                                    struct (1, 2),
                                    2
                                )
                                "max_pool", F.MaxPool2d(xt, 3, 2, 1, 1, true)
                                "avg_pool", F.AvgPool2d(xt, 3, 2, 1, true, false)
                                "adaptive", F.AdaptiveAvgPool2d(xt, 3, 4)
                                "bn_train", F.BatchNorm(xt, rm, rv, gt, bt, true, 0.2, 1e-3)
                                "bn_running_mean", rm.Clone()
                                "bn_running_var", rv.Clone()
                                "bn_eval", F.BatchNorm(xt, rm, rv, gt, bt, false, 0.2, 1e-3)
                                "layer_norm",
                                F.LayerNorm(xt, [| 7L; 6L |], f64 [| 7L; 6L |] lnW, f64 [| 7L; 6L |] lnB)
                                "gelu", F.Gelu xt
                                "gelu_tanh", F.Gelu(xt, true)
                                "softmax", F.Softmax(lt, 1L)
                                "log_softmax", F.LogSoftmax(lt, -1L)
                                "ce_smooth", F.CrossEntropy(lt, yt, labelSmoothing = 0.2)
                                "ce_none", F.CrossEntropy(lt, yt, Reduction.None)
                                "nll_sum", F.NllLoss(F.LogSoftmax(lt, 1L), yt, Reduction.Sum)
                                "mse", F.MseLoss(lt, (lt.Exp() - (-lt).Exp()) / (lt.Exp() + (-lt).Exp()))
                                "var", xt.Var([| 2L; 3L |])
                                "norm3", xt.Norm(3.0, [| 1L |])
                                "ce_grad", (Autograd.Grad(F.CrossEntropy(lg, yt, labelSmoothing = 0.1), [| lg |])).[0]
                            ]

                        Expect.equal expected.Count ours.Length "expected.Count"

                        for name, t in ours do
                            assertClose name 1e-10 1e-12 expected.[name] (values t)))
        ]
