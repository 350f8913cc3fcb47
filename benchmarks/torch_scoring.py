"""PyTorch side of `Pai.Benchmarks scoring`: a long-lived worker that computes the pruning
criteria of src/Pai/Pai.Registry.fs with the same semantics, on the weights and scoring batches
Pai exported (so the results can be compared, not only timed).

Semantics (docs/architecture.md §5, as Pai computes them): eval mode; g = ∇θ Σᵢ CE(f(xᵢ)/T, yᵢ)/N over the
scoring batches (prunable weights only); snip = |θ⊙g|; grasp = θ⊙(H g) with g and H of the T=200
loss, g detached; fisher_obd = ½θ²⊙mean(gᵢ²) sample by sample; hutch_obd = ½θ²⊙Ĥ where, per
scoring batch, the create_graph gradient of the T=200 loss is contracted with `probes` Rademacher
vectors z (drawn like Pai: rand >= 0.5, one generator seeded with the seed, in batch, probe,
layer order) and Ĥ sums over batches the probe mean of z⊙Hz; hts = |θ⊙g + ½θ²⊙Ĥ| (g and Ĥ both at T=200);
synflow = |θ⊙∂R/∂θ| on a float64 copy with |θ|, eval mode, all-ones input; synflow_xR = R rounds
of synflow and global top-k (stable, pruned weights score -inf) at density d^(k/R).

Protocol (stdin → stdout, one JSON line per command):
  dump <criterion> <path> [K]  compute once, write the flat float32 result (prunable order) to path
  run <criterion> <n> [K]      compute n times, answer {"seconds": ..., "cpu_seconds": ...} per computation
  rss                          answer {"max_rss_mb": ...}, this process's peak resident set size
  (K: use only the first K scoring batches)
  quit
"""
import argparse
import copy
import json
import math
import os
import sys
import time

from torch_side import peak_rss_mb, pin_openblas_threads

pin_openblas_threads(sys.argv)  # before numpy and torch load
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F


def load(directory, oracles):
    sys.path.insert(0, oracles)
    from torch_models import build, load_pai_state
    tensors, prunable, spec, inputs, targets = {}, [], None, None, None
    with open(os.path.join(directory, 'manifest.txt')) as f:
        for line in f:
            parts = line.split()
            kind = parts[0]
            if kind == 'prunable':
                prunable.append(parts[1])
                continue
            if kind == 'spec':
                spec = (parts[1], *[int(p) for p in parts[2:]])
                continue
            name, index, dtype = parts[1], parts[2], parts[3]
            shape = [int(s) for s in parts[4:]]
            raw = np.fromfile(os.path.join(directory, f'{index}.bin'), dtype=np.int64 if dtype == 'int64' else np.float32)
            t = torch.from_numpy(raw.copy()).reshape(shape)
            if kind in ('param', 'buffer'):
                tensors[name] = t
            elif kind == 'inputs':
                inputs = t
            else:
                targets = t
    model_name, c, h, w, classes, batch_size = spec
    model = build(model_name, c, h, w, classes)
    load_pai_state(model, model_name, tensors, torch.float32)
    model.eval()
    batches = [(inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
    return model, prunable, batches, (c, h, w)


class Criteria:
    def __init__(self, model, prunable, batches, input_shape, probes, seed, synflow_rounds, synflow_sparsity):
        self.model = model
        self.names = prunable
        params = dict(model.named_parameters())
        self.ps = [params[n] for n in prunable]
        self.all_batches = batches
        self.use_batches(None)
        self.input_shape = input_shape
        self.probes = probes
        self.seed = seed
        self.synflow_rounds = synflow_rounds
        self.synflow_sparsity = synflow_sparsity

    def use_batches(self, count):
        """Scores on the first `count` scoring batches (all when None), as Pai's context does."""
        self.batches = self.all_batches if count is None else self.all_batches[:count]
        self.total = float(sum(y.numel() for _, y in self.batches))

    # ---- building blocks ------------------------------------------------------------------

    def batch_loss(self, x, y, temperature, total):
        logits = self.model(x)
        if temperature != 1.0:
            logits = logits / temperature
        return F.cross_entropy(logits, y, reduction='sum') / total

    def grads(self, loss, create_graph=False, retain_graph=None):
        gs = torch.autograd.grad(loss, self.ps, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.ps, gs)]

    def mean_gradient(self, temperature):
        acc = [torch.zeros_like(p) for p in self.ps]
        for x, y in self.batches:
            for a, g in zip(acc, self.grads(self.batch_loss(x, y, temperature, self.total))):
                a.add_(g)
        return acc

    def hessian_gradient(self, temperature):
        g = self.mean_gradient(temperature)
        acc = [torch.zeros_like(p) for p in self.ps]
        for x, y in self.batches:
            gs = self.grads(self.batch_loss(x, y, temperature, self.total), create_graph=True)
            dot = sum((gi * vi).sum() for gi, vi in zip(gs, g) if gi.requires_grad)
            for a, hv in zip(acc, self.grads(dot)):
                a.add_(hv)
        return acc

    def fisher_diagonal(self):
        acc = [torch.zeros_like(p) for p in self.ps]
        for x, y in self.batches:
            for i in range(y.numel()):
                gs = self.grads(self.batch_loss(x[i:i + 1], y[i:i + 1], 1.0, 1.0))
                for a, g in zip(acc, gs):
                    a.addcmul_(g, g)
        return [a / self.total for a in acc]

    def hutchinson(self, temperature):
        gen = torch.Generator().manual_seed(self.seed)
        mean = [torch.zeros_like(p) for p in self.ps]
        for x, y in self.batches:
            gs = self.grads(self.batch_loss(x, y, temperature, self.total), create_graph=True)
            acc = [torch.zeros_like(p) for p in self.ps]
            for _ in range(self.probes):
                zs = [torch.where(torch.rand(p.shape, generator=gen, dtype=p.dtype) >= 0.5, 1.0, -1.0) for p in self.ps]
                dot = sum((g * z).sum() for g, z in zip(gs, zs))
                hz = torch.autograd.grad(dot, self.ps, retain_graph=True, allow_unused=True)
                for a, z, h in zip(acc, zs, hz):
                    if h is not None:
                        a.addcmul_(z, h)
            for m, a in zip(mean, acc):
                m.add_(a, alpha=1.0 / self.probes)
        return mean

    def synaptic_saliency(self, mask=None):
        net = copy.deepcopy(self.model).double()
        net.eval()
        with torch.no_grad():
            for p in net.parameters():
                p.abs_()
        params = dict(net.named_parameters())
        ps = [params[n] for n in self.names]
        if mask is not None:
            with torch.no_grad():
                for p, m in zip(ps, mask):
                    p.mul_(m)
        ones = torch.ones((1, *self.input_shape), dtype=torch.float64)
        r = net(ones).sum()
        gs = torch.autograd.grad(r, ps, allow_unused=True)
        return [(p * (torch.zeros_like(p) if g is None else g)).abs().float() for p, g in zip(ps, gs)]

    def select_global(self, density, previous, scores):
        for s in scores:
            if s.numel() - int(torch.isfinite(s).count_nonzero()) > 0:
                raise ValueError('non-finite scores')
        flats = [s.flatten().double() for s in scores]
        if previous is not None:
            ninf = torch.tensor(float('-inf'), dtype=torch.float64)
            flats = [torch.where(k.flatten(), f, ninf) for k, f in zip(previous, flats)]
        flat = torch.cat(flats)
        n = flat.numel()
        k = int(math.floor(density * n + 0.5))  # round half away from zero (positive values)
        order = torch.sort(flat, descending=True, stable=True)[1][:k]
        keep = torch.zeros(n, dtype=torch.bool).scatter(0, order, torch.ones(k, dtype=torch.bool))
        out, offset = [], 0
        for s in scores:
            out.append(keep[offset:offset + s.numel()].reshape(s.shape).clone())
            offset += s.numel()
        return out

    def detached(self):
        return [p.detach() for p in self.ps]

    # ---- the criteria -----------------------------------------------------------------------

    def random(self):
        gen = torch.Generator().manual_seed(self.seed)
        return [torch.rand(p.shape, generator=gen, dtype=torch.float32) for p in self.ps]

    def magnitude(self):
        return [w.abs() for w in self.detached()]

    def snip(self):
        g = self.mean_gradient(1.0)
        return [(w * gi).abs() for w, gi in zip(self.detached(), g)]

    def grasp(self):
        hg = self.hessian_gradient(200.0)
        return [w * h for w, h in zip(self.detached(), hg)]

    def synflow(self):
        return self.synaptic_saliency()

    def synflow_prune(self):
        rounds, density_final = self.synflow_rounds, 1.0 - self.synflow_sparsity
        originals = [p.detach().clone() for p in self.ps]
        mask = None
        try:
            for k in range(1, rounds + 1):
                density = density_final ** (k / rounds)
                scores = self.synaptic_saliency(mask)
                mask = self.select_global(density, mask, scores)
                if k < rounds:
                    with torch.no_grad():
                        for p, m in zip(self.ps, mask):
                            p.mul_(m)
        finally:
            with torch.no_grad():
                for p, o in zip(self.ps, originals):
                    p.copy_(o)
        [int(m.count_nonzero()) for m in mask]  # per-layer densities, as Pai's report
        return [m.float() for m in mask]

    def fisher_obd(self):
        f = self.fisher_diagonal()
        return [w.square() * fi * 0.5 for w, fi in zip(self.detached(), f)]

    def hutch_obd(self):
        h = self.hutchinson(200.0)
        return [w.square() * hi * 0.5 for w, hi in zip(self.detached(), h)]

    def hts(self):
        g = self.mean_gradient(200.0)
        h = self.hutchinson(200.0)
        return [(w * gi + w.square() * hi * 0.5).abs() for w, gi, hi in zip(self.detached(), g, h)]

    # ---- the second-order paper's algorithm (Pai.Benchmarks exact-scoring) -------------------
    # Run on batches of one sample, `hutchinson` is the paper's estimator as its code computes it:
    # per sample, the create_graph gradient of the T=200 loss contracted with `probes` Rademacher
    # vectors, the probe mean of z*Hz summed over samples (each sample's loss divided by N).

    def hutch_diag(self):
        return self.hutchinson(200.0)

    def hts_t200(self):
        """hts with both terms from the T=200 loss (docs/architecture.md §5), as the paper's code."""
        g = self.mean_gradient(200.0)
        h = self.hutchinson(200.0)
        return [(w * gi + w.square() * hi * 0.5).abs() for w, gi, hi in zip(self.detached(), g, h)]

    def get(self, name):
        if name.startswith('synflow_x'):
            return self.synflow_prune
        return getattr(self, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--oracles', required=True)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--probes', type=int, default=10)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--synflow-rounds', type=int, default=100)
    ap.add_argument('--synflow-sparsity', type=float, default=0.99)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, prunable, batches, shape = load(a.dir, a.oracles)
    crit = Criteria(model, prunable, batches, shape, a.probes, a.seed, a.synflow_rounds, a.synflow_sparsity)

    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == 'quit':
            break
        if parts[0] == 'rss':
            print(json.dumps({'max_rss_mb': peak_rss_mb()}), flush=True)
            continue
        f = crit.get(parts[1])
        crit.use_batches(int(parts[3]) if len(parts) > 3 else None)
        if parts[0] == 'dump':
            scores = f()
            torch.cat([s.detach().flatten().float() for s in scores]).numpy().tofile(parts[2])
            print(json.dumps({'ok': True}), flush=True)
        elif parts[0] == 'run':
            n = int(parts[2])
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                f()
            print(json.dumps({'seconds': (time.perf_counter() - t0) / n, 'cpu_seconds': (time.process_time() - c0) / n}),
                  flush=True)


if __name__ == '__main__':
    main()
