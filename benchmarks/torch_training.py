"""PyTorch side of `Pai.Benchmarks training`: one configuration per process, the same work as
Pai's Trainer.Train over its DataLoader, written as the plain loop a PyTorch user would write.

Per step: gather a shuffled batch from the in-memory uint8 images, convert to float32 and
normalize (x * scale - shift per channel, as Pai's loader), zero_grad(set_to_none=True) (Pai
drops gradients the same way), forward in train mode, mean cross-entropy, backward,
torch.optim.SGD(momentum 0.9, weight decay 5e-4), and the running loss and accuracy that Pai's
trainer also keeps (loss.item(), argmax == target). With --sparsity (a random mask) or
--mask-file (a safetensors mask by parameter name, e.g. SNIP's from `sparse-training`) the mask is
applied to the gradients before and to the weights after every step, as Pai does. --eval-batches E
then times E evaluation batches (eval mode, no gradients, summed loss and top-5 as Pai's Evaluate).
Prints one JSON line: images/s and ms per step over the timed steps, ms per evaluation batch and
the peak RSS (VmHWM), and the training's own: its peak above the RSS when it starts.
"""
import argparse
import gzip
import json
import os
import sys
import time
import warnings

from torch_side import peak_rss_mb, pin_openblas_threads, reset_peak_rss, rss_mb

pin_openblas_threads(sys.argv)  # before numpy and torch load
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]


def read_idx(path, header):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def fashion_mnist(directory):
    def find(name):
        for n in (name, name + '.gz'):
            p = os.path.join(directory, n)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(name)
    images = read_idx(find('train-images-idx3-ubyte'), 16).reshape(-1, 1, 28, 28)
    labels = read_idx(find('train-labels-idx1-ubyte'), 8).astype(np.int64)
    # The tensor shares the decompressed buffer (read-only numpy view): one copy of the pixels.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        images = torch.from_numpy(images)
    return images, torch.from_numpy(labels), [0.2860], [0.3530]


def cifar_like(count):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (count,), generator=g, dtype=torch.int64)
    return images, labels, CIFAR10_MEAN, CIFAR10_STD


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='lenet5')
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--warmup', type=int, default=20)
    ap.add_argument('--sparsity', type=float, default=0.0)
    ap.add_argument('--mask-file', default='')
    ap.add_argument('--eval-batches', type=int, default=0)
    ap.add_argument('--kernels', default='off', help='ignored: PyTorch trains dense masked')
    ap.add_argument('--cifar-count', type=int, default=50000)
    ap.add_argument('--oracles', required=True)
    ap.add_argument('--fashion-mnist', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--device', default='cpu', help='cpu or cuda[:N]; batches move to it one at a time, as Pai moves them')
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    sys.path.insert(0, a.oracles)
    from torch_models import build

    if a.model in ('lenet5', 'lenet300'):
        images, labels, mean, std = fashion_mnist(a.fashion_mnist)
    else:
        images, labels, mean, std = cifar_like(a.cifar_count)
    n, c, h, w = images.shape
    dev = torch.device(a.device)
    scale = torch.tensor([1 / 255 / s for s in std], dtype=torch.float32, device=dev).reshape(1, c, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=dev).reshape(1, c, 1, 1)

    torch.manual_seed(0)
    model = build(a.model, c, h, w, 10).to(dev)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    masks = []
    if a.mask_file:
        from safetensors_io import load
        named = dict(model.named_parameters())
        for name, keep in load(a.mask_file).items():
            p = named[name]
            masks.append((p, keep.to(dtype=p.dtype, device=dev)))
        with torch.no_grad():
            for p, m in masks:
                p.mul_(m)
    elif a.sparsity > 0:
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name.endswith('weight') and p.dim() in (2, 4):
                masks.append((p, (torch.rand(p.shape, generator=g) >= a.sparsity).to(dtype=p.dtype, device=dev)))
        with torch.no_grad():
            for p, m in masks:
                p.mul_(m)

    per_epoch = n // a.batch
    total = a.warmup + a.steps
    perm = torch.randperm(n)
    loss_sum, correct, seen = 0.0, 0, 0
    # the peak so far (start-up), then a fresh peak for the training, counted above its start
    startup_peak = peak_rss_mb()
    reset_peak_rss()
    before = rss_mb()
    t0 = time.perf_counter()
    for step in range(total):
        if step == a.warmup:
            if dev.type == 'cuda':
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            c0 = time.process_time()
        i = step % per_epoch
        if i == 0 and step > 0:
            perm = torch.randperm(n)
        idx = perm[i * a.batch:(i + 1) * a.batch]
        x = images.index_select(0, idx).to(dev).float() * scale - shift
        y = labels.index_select(0, idx).to(dev)

        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        for p, m in masks:
            p.grad.mul_(m)
        opt.step()
        if masks:
            with torch.no_grad():
                for p, m in masks:
                    p.mul_(m)
        loss_sum += loss.item() * y.numel()
        with torch.no_grad():
            correct += int((logits.argmax(1) == y).count_nonzero().item())
        seen += y.numel()
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0

    eval_ms = 0.0
    if a.eval_batches > 0:
        model.eval()
        t2 = time.perf_counter()
        with torch.no_grad():
            for i in range(a.eval_batches):
                x = images[i * a.batch:(i + 1) * a.batch].to(dev).float() * scale - shift
                y = labels[i * a.batch:(i + 1) * a.batch].to(dev)
                logits = model(x)
                F.cross_entropy(logits, y, reduction='sum').item()
                int((logits.topk(min(5, logits.shape[1]), 1).indices == y.unsqueeze(1)).count_nonzero().item())
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)
        eval_ms = (time.perf_counter() - t2) * 1000 / a.eval_batches

    training_peak = peak_rss_mb()
    print(json.dumps({'side': 'pytorch', 'model': a.model, 'img_s': a.steps * a.batch / seconds, 'seconds': seconds,
                      'step_ms': seconds * 1000 / a.steps, 'eval_ms': eval_ms, 'cpu_seconds': cpu_seconds,
                      'peak_rss_mb': max(startup_peak, training_peak), 'training_rss_mb': training_peak - before,
                      'threads': torch.get_num_threads(), 'train_loss': loss_sum / seen}))


if __name__ == '__main__':
    main()
