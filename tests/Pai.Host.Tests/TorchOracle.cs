using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Pai.Host.Tests;

/// <summary>What PyTorch computed for the same model, weights and batch.</summary>
public sealed record OracleResult(
    long ParameterCount,
    double[] EvalLogits,
    double[] TrainLogits,
    double Loss,
    IReadOnlyDictionary<string, double[]> Gradients,
    IReadOnlyDictionary<string, double[]> BuffersAfter);

/// <summary>
/// Runs Debian's python3-torch (the same libtorch build) as an oracle: the model's parameters and
/// buffers are written as raw float64 files (one per tensor, listed with their shapes in a
/// manifest), an independent torch.nn definition of the architecture loads them with
/// load_state_dict(strict=True) (so names and shapes must match), runs an eval-mode forward pass
/// and then a train-mode forward and cross-entropy backward, and writes logits, loss, gradients and
/// the updated buffers back.
/// </summary>
public static class TorchOracle
{
    public const string Python = "/usr/bin/python3";

    /// <summary>tests/oracles: the shared PyTorch definitions (torch_models.py), found above the test assembly.</summary>
    public static string OracleDirectory
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Hybrid.sln"))) return Path.Combine(d.FullName, "tests", "oracles");
            throw new DirectoryNotFoundException("tests/oracles not found above " + AppContext.BaseDirectory);
        }
    }

    public static OracleResult Run(Model model, Tensor inputs, Tensor targets)
    {
        var dir = Directory.CreateTempSubdirectory("pai-oracle-").FullName;
        try
        {
            var manifest = new StringBuilder();
            var index = 0;
            void Write(string name, Tensor t)
            {
                using var scope = new DisposeScope();
                var values = t.Detach().To(DType.Float64).ToArray<double>();
                File.WriteAllBytes(Path.Combine(dir, $"{index}.bin"), MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
                manifest.Append(name).Append(' ').Append(index).Append(' ').AppendJoin(' ', t.Shape).Append('\n');
                index++;
            }
            foreach (var (n, t) in model.Parameters) Write("param/" + n, t);
            foreach (var (n, t) in model.Buffers) Write("buffer/" + n, t);
            Write("input", inputs);
            Write("target", targets);
            File.WriteAllText(Path.Combine(dir, "manifest.txt"), manifest.ToString());
            var s = model.InputShape;
            File.WriteAllText(Path.Combine(dir, "spec.txt"), string.Join('\n',
                $"model={model.Name}", $"c={s.Channels}", $"h={s.Height}", $"w={s.Width}", $"classes={model.Classes}",
                $"dtype={(model.DType == DType.Float64 ? "float64" : "float32")}"));
            File.WriteAllText(Path.Combine(dir, "oracle.py"), Script);

            var psi = new ProcessStartInfo(Python, [Path.Combine(dir, "oracle.py"), dir, OracleDirectory])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"the PyTorch oracle failed ({p.ExitCode}):\n{stderr}\n{stdout.Result}");

            long count = 0;
            double loss = double.NaN;
            double[] evalLogits = [], trainLogits = [];
            var grads = new Dictionary<string, double[]>();
            var buffers = new Dictionary<string, double[]>();
            foreach (var line in File.ReadAllLines(Path.Combine(dir, "out.txt")))
            {
                var parts = line.Split(' ');
                switch (parts[0])
                {
                    case "count": count = long.Parse(parts[1], CultureInfo.InvariantCulture); break;
                    case "loss": loss = double.Parse(parts[1], CultureInfo.InvariantCulture); break;
                    default:
                        var values = MemoryMarshal.Cast<byte, double>(File.ReadAllBytes(Path.Combine(dir, parts[1]))).ToArray();
                        if (parts[0] == "eval_logits") evalLogits = values;
                        else if (parts[0] == "train_logits") trainLogits = values;
                        else if (parts[0].StartsWith("grad/")) grads[parts[0][5..]] = values;
                        else if (parts[0].StartsWith("buffer/")) buffers[parts[0][7..]] = values;
                        break;
                }
            }
            return new OracleResult(count, evalLogits, trainLogits, loss, grads, buffers);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // Independent PyTorch definitions of the zoo. The ViT uses torch's own
    // nn.TransformerEncoderLayer (pre-norm, GELU) and nn.MultiheadAttention, so the hand-written
    // attention is checked against a different implementation; names are mapped to Pai's.
    const string Script = """
import sys, re
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
sys.path.insert(0, sys.argv[2])
import torch_models

torch.set_num_threads(1)
d = sys.argv[1]
spec = dict(l.split('=', 1) for l in open(d + '/spec.txt').read().splitlines())
c, h, w, k = (int(spec[x]) for x in ('c', 'h', 'w', 'classes'))
name = spec['model']
dtype = torch.float64 if spec['dtype'] == 'float64' else torch.float32

tensors = {}
for line in open(d + '/manifest.txt').read().splitlines():
    parts = line.split(' ')
    shape = [int(s) for s in parts[2:]]
    tensors[parts[0]] = torch.from_numpy(np.fromfile(f'{d}/{parts[1]}.bin', dtype=np.float64).reshape(shape))

model = torch_models.build(name, c, h, w, k).to(dtype)
torch_models.load_pai_state(model, name, {key.split('/', 1)[1]: t for key, t in tensors.items() if key.startswith(('param/', 'buffer/'))}, dtype)
to_torch = lambda n: torch_models.to_torch_name(name, n)

x = tensors['input'].to(dtype)
y = tensors['target'].long()
out = [f'count {sum(p.numel() for p in model.parameters())}']
def save(key, t):
    i = len(out)
    t.detach().to(torch.float64).contiguous().numpy().tofile(f'{d}/out{i}.bin')
    out.append(f'{key} out{i}.bin')

# Eval mode first (running statistics untouched), then one train-mode step.
model.eval()
with torch.no_grad():
    save('eval_logits', model(x))
model.train()
logits = model(x)
loss = F.cross_entropy(logits, y)
loss.backward()
out.append(f'loss {loss.item()!r}')
save('train_logits', logits)
named = dict(model.named_parameters())
bufs = dict(model.named_buffers())
for key in tensors:
    kind, _, n = key.partition('/')
    if kind == 'param':
        save('grad/' + n, named[to_torch(n)].grad)
    elif kind == 'buffer':
        save('buffer/' + n, bufs[to_torch(n)])
open(d + '/out.txt', 'w').write('\n'.join(out) + '\n')
""";
}
