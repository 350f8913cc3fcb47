"""PyTorch oracle for Pai's criteria (docs/architecture.md §5), written from the formulas, not from Pai's code.
Usage: criteria_oracle.py DIR ORACLE_DIR
DIR holds spec.json, weights.safetensors (Pai's parameters and buffers), batches.safetensors
(input/i, target/i: the scoring batches) and probes.safetensors (b/j/layer: Hutchinson's probe
vectors). Writes scores.safetensors with criterion/layer entries."""
import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, sys.argv[2])
import safetensors_io  # noqa: E402
import torch_models  # noqa: E402

d = sys.argv[1]
spec = json.load(open(f'{d}/spec.json'))
torch.set_num_threads(spec.get('threads', 1))
name = spec['model']
model = torch_models.build(name, spec['c'], spec['h'], spec['w'], spec['classes'])
weights = safetensors_io.load(f'{d}/weights.safetensors')
torch_models.load_pai_state(model, name, weights, torch.float32)
model.eval()
prunable = spec['prunable']  # Pai names, Pai's order
params = dict(model.named_parameters())
theta = [params[torch_models.to_torch_name(name, n)] for n in prunable]

raw = safetensors_io.load(f'{d}/batches.safetensors')
batches = [(raw[f'input/{i}'], raw[f'target/{i}']) for i in range(spec['batches'])]
total = sum(len(y) for _, y in batches)


def loss_of(x, y, temperature):
    return F.cross_entropy(model(x) / temperature, y, reduction='sum') / total


def mean_gradient(temperature):
    acc = [torch.zeros_like(p) for p in theta]
    for x, y in batches:
        for a, g in zip(acc, torch.autograd.grad(loss_of(x, y, temperature), theta)):
            a += g
    return acc


scores = {}
w = [p.detach() for p in theta]

g = mean_gradient(1.0)
scores['snip'] = [(wi * gi).abs() for wi, gi in zip(w, g)]

# GraSP: Hg with g = grad of L(f/T) detached; keep the largest θ ⊙ Hg.
t = spec['grasp_temperature']
gt = mean_gradient(t)
hg = [torch.zeros_like(p) for p in theta]
for x, y in batches:
    grads = torch.autograd.grad(loss_of(x, y, t), theta, create_graph=True)
    dot = sum((a * b).sum() for a, b in zip(grads, gt))
    for acc, h in zip(hg, torch.autograd.grad(dot, theta)):
        acc += h
scores['grasp'] = [wi * h for wi, h in zip(w, hg)]

# Empirical Fisher: mean over samples of per-sample squared gradients.
fisher = [torch.zeros_like(p) for p in theta]
for x, y in batches:
    for i in range(len(y)):
        gi = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), theta)
        for acc, v in zip(fisher, gi):
            acc += v * v
scores['fisher_obd'] = [0.5 * wi * wi * f / total for wi, f in zip(w, fisher)]

# Hutchinson with Pai's probes: mean over probes of z ⊙ (H z), summed over batches.
probes = safetensors_io.load(f'{d}/probes.safetensors')
th = spec['hutch_temperature']
n_probes = spec['probes']
diag = [torch.zeros_like(p) for p in theta]
for b, (x, y) in enumerate(batches):
    grads = torch.autograd.grad(loss_of(x, y, th), theta, create_graph=True)
    for j in range(n_probes):
        zs = [probes[f'{b}/{j}/{n}'] for n in prunable]
        dot = sum((gr * z).sum() for gr, z in zip(grads, zs))
        hz = torch.autograd.grad(dot, theta, retain_graph=True)
        for acc, z, h in zip(diag, zs, hz):
            acc += z * h / n_probes
scores['hutch_obd'] = [0.5 * wi * wi * h for wi, h in zip(w, diag)]

# HTS: |θ ⊙ g + ½ θ² ⊙ Ĥ| with g and Ĥ both of L(f/T) at the Hutchinson temperature.
g_th = gt if th == t else mean_gradient(th)
scores['hts'] = [(wi * gi + 0.5 * wi * wi * h).abs() for wi, gi, h in zip(w, g_th, diag)]

# SynFlow, one round: |θ ⊙ ∂R/∂θ|, R = Σ f(1) on a float64 copy with |θ|, eval mode.
sf = torch_models.build(name, spec['c'], spec['h'], spec['w'], spec['classes']).double()
torch_models.load_pai_state(sf, name, weights, torch.float64)
sf.eval()
with torch.no_grad():
    for p in sf.parameters():
        p.abs_()
sf_params = dict(sf.named_parameters())
sf_theta = [sf_params[torch_models.to_torch_name(name, n)] for n in prunable]
r = sf(torch.ones(1, spec['c'], spec['h'], spec['w'], dtype=torch.float64)).sum()
scores['synflow'] = [(p * gp).abs().float() for p, gp in zip(sf_theta, torch.autograd.grad(r, sf_theta))]

safetensors_io.save(f'{d}/scores.safetensors',
                    {f'{c}/{n}': s.detach().float() for c, ss in scores.items() for n, s in zip(prunable, ss)})
