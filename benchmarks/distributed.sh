#!/usr/bin/env bash
# Data-parallel throughput on this machine: resnet20 on synthetic data, 2 ranks × 1 thread
# (`pai run --nproc 2 --threads 2`) against 1 process × 2 threads, interleaved A/B/B/A, medians of
# the training images/s that `pai run` prints per epoch. Usage (after `dotnet build src/Pai.Cli -c Release`):
#   bash benchmarks/distributed.sh [REPEATS=3] [BATCHES=40] [BATCH=128]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/ab.sh
repeats=${1:-3}; batches=${2:-40}; batch=${3:-128}
pai=(dotnet src/Pai.Cli/bin/Release/net10.0/pai.dll)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
run() { # $1 = label, rest = extra options; prints images/s
  local out
  out=$("${pai[@]}" run -m resnet20 -d synthetic -e 1 --max-batches "$batches" --batch-size "$batch" --lr 0.05 \
        --threads 2 --results "$work/$1-$RANDOM" "${@:2}" 2>&1) || { echo "$out" >&2; exit 1; }
  grep -oE '[0-9]+ img/s' <<<"$out" | tail -1 | cut -d' ' -f1
}
one() { run one; }
two() { run two --nproc 2; }
ab_repeats "$repeats" img/s "1 process x 2 threads" "2 ranks x 1 thread" one two
