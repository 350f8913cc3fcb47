"""The ImageNet training input pipeline in plain Python, as PyTorch users run it without torchvision:
PIL (Debian's python3-pil) + numpy, worker processes like torch's DataLoader(num_workers=N).

Per image: open + decode (PIL), RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3)) with
torchvision's algorithm (ten tries, then a center crop), bilinear resize of the box (PIL's
antialiased bilinear, as torchvision does on PIL images), horizontal flip with probability 1/2,
to float32 CHW, (x/255 - mean)/std. Per batch: stacked into one float32 [B, 3, 224, 224] array,
returned to the parent process (as DataLoader workers do). Prints one JSON line.

    python3 pil_loader.py FOLDER --threads 2 --batch 64 --size 224 [--epochs 1]
"""
import argparse
import json
import math
import os
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def crop_box(width, height, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def load_batch(job):
    files, labels, size, seed = job
    rng = random.Random(seed)
    out = np.empty((len(files), 3, size, size), dtype=np.float32)
    for i, path in enumerate(files):
        with Image.open(path) as img:
            img = img.convert("RGB")
            left, top, w, h = crop_box(img.width, img.height, rng)
            img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        out[i] = (x / 255.0 - MEAN) / STD
    return out, np.asarray(labels, dtype=np.int64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    classes = sorted(d for d in os.listdir(a.folder) if os.path.isdir(os.path.join(a.folder, d)))
    samples = [(os.path.join(a.folder, c, f), k) for k, c in enumerate(classes)
               for f in sorted(os.listdir(os.path.join(a.folder, c))) if f.lower().endswith((".jpeg", ".jpg"))]
    rng = random.Random(0)
    with Pool(a.threads) as pool:
        pool.map(abs, range(a.threads))  # start the workers before the clock
        start = time.perf_counter()
        images = 0
        for epoch in range(a.epochs):
            order = list(range(len(samples)))
            rng.shuffle(order)
            jobs = []
            for b in range(0, len(order) - a.batch + 1, a.batch):
                idx = order[b:b + a.batch]
                jobs.append(([samples[i][0] for i in idx], [samples[i][1] for i in idx], a.size, epoch * 100003 + b))
            for x, y in pool.imap(load_batch, jobs):
                images += len(y)
        seconds = time.perf_counter() - start
    print(json.dumps({"side": "pil", "images": images, "seconds": seconds, "img_s": images / seconds, "threads": a.threads}))


if __name__ == "__main__":
    sys.exit(main())
