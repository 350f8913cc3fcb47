using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Pai.Host.Models;
using Pai.Torch;

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

            var psi = new ProcessStartInfo(Python, [Path.Combine(dir, "oracle.py"), dir])
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

class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(c * h * w, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, k)
    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1))))))

class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * fh * fw, 500)
        self.fc2 = nn.Linear(500, k)
    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

VGG_CFG = {
    'vgg11': [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
}

class PoolUnlessTiny(nn.Module):
    def forward(self, x):
        return x if min(x.shape[-2], x.shape[-1]) < 2 else F.max_pool2d(x, 2)

class VGG(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        layers, ch = [], c
        for v in cfg:
            if v == 'M':
                layers.append(PoolUnlessTiny())
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(ch, k)
    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))

class ResNet(nn.Module):
    def __init__(self, stem, widths, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(c, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        ch = stem
        self.stages = []
        for i, (wd, n) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(n):
                layers.append(Block(ch, wd, 2 if i > 0 and b == 0 else 1))
                ch = wd
            setattr(self, f'layer{i + 1}', nn.Sequential(*layers))
            self.stages.append(f'layer{i + 1}')
        self.fc = nn.Linear(ch, k)
    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in self.stages:
            x = getattr(self, s)(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

class ViT(nn.Module):
    def __init__(self, patch=4, dim=192, depth=6, heads=3, mlp=384):
        super().__init__()
        tokens = (h // patch) * (w // patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.patch_embed = nn.Conv2d(c, dim, patch, patch)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation='gelu',
                                                                 batch_first=True, norm_first=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, k)
    def forward(self, x):
        p = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(t))[:, 0])

def vit_name(n):
    n = re.sub(r'\.attn\.qkv\.weight$', '.self_attn.in_proj_weight', n)
    n = re.sub(r'\.attn\.qkv\.bias$', '.self_attn.in_proj_bias', n)
    n = n.replace('.attn.proj.', '.self_attn.out_proj.')
    return n.replace('.mlp.fc1.', '.linear1.').replace('.mlp.fc2.', '.linear2.')

builders = {
    'lenet300': LeNet300, 'lenet5': LeNet5,
    'vgg11': lambda: VGG(VGG_CFG['vgg11']), 'vgg16': lambda: VGG(VGG_CFG['vgg16']), 'vgg19': lambda: VGG(VGG_CFG['vgg19']),
    'resnet20': lambda: ResNet(16, [16, 32, 64], [3, 3, 3]), 'resnet32': lambda: ResNet(16, [16, 32, 64], [5, 5, 5]),
    'resnet56': lambda: ResNet(16, [16, 32, 64], [9, 9, 9]),
    'resnet18': lambda: ResNet(64, [64, 128, 256, 512], [2, 2, 2, 2]), 'vit-tiny': ViT,
}
to_torch = vit_name if name == 'vit-tiny' else (lambda n: n)

model = builders[name]().to(dtype)
state = {}
for key, t in tensors.items():
    if key.startswith('param/') or key.startswith('buffer/'):
        state[to_torch(key.split('/', 1)[1])] = t.to(dtype)
own = model.state_dict()
for key in own:  # Pai does not keep BN's batch counter
    if key.endswith('num_batches_tracked'):
        state[key] = own[key]
model.load_state_dict(state, strict=True)

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
