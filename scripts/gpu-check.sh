#!/usr/bin/env bash
# The GPU check (issue 15) in two halves, because the device machine has PyTorch, CMake and a
# compiler but no .NET:
#
#   bash scripts/gpu-check.sh package   here: publishes pai (framework-dependent) and packs it with
#                                       the .NET runtime into device-carry/ (ignored by git), checks
#                                       the size, and dry-runs the whole check on the CPU from the
#                                       unpacked copy (cpu against cpu), so only CUDA itself is new
#                                       on the device
#   bash scripts/gpu-check.sh run       on the device machine, as one `run` call carrying
#                                       device-carry: unpacks, builds the shim against the libtorch
#                                       inside PyTorch's wheel, and checks (1) every criterion's
#                                       scores on cuda against the CPU's, (2) masked training keeps
#                                       pruned weights at zero on the device, (3) training throughput
#                                       of resnet20 and resnet18 against PyTorch on the same GPU,
#                                       (4) scoring time of the curvature criteria. Results go to
#                                       $OUT (or ./gpu-check-out) as gpu-check.log.
#
# Environment: DEVICE (default cuda in `run`, cpu in the dry run), STEPS (training steps, 50),
# SAMPLES (scoring samples per class in (4), 10), PYTHON (a python3 with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3} # one with torch (the dry run takes Debian's /usr/bin/python3)
carry=$root/device-carry

package() {
  rm -rf "$carry" && mkdir -p "$carry"
  # linux-x64 only: the other platforms' native libraries (SkiaSharp, SQLite) would double the size.
  dotnet publish src/Pai.Cli -c Release -r linux-x64 --no-self-contained -o "$carry/pai" -p:DebugType=none >/dev/null
  rm -f "$carry/pai/libpai_torch.so" # built on the device against its libtorch
  local dotnet_root
  dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
  local runtime
  runtime=$(ls -d "$dotnet_root"/shared/Microsoft.NETCore.App/* | sort -V | tail -1)
  tar -C "$dotnet_root" -cJf "$carry/dotnet-runtime.tar.xz" dotnet host "shared/Microsoft.NETCore.App/$(basename "$runtime")"
  tar -C "$carry" -cJf "$carry/pai.tar.xz" pai && rm -rf "$carry/pai"
  local mb
  mb=$(du -sm "$carry" | cut -f1)
  echo "device-carry: ${mb} MiB (runtime $(du -sh "$carry/dotnet-runtime.tar.xz" | cut -f1), pai $(du -sh "$carry/pai.tar.xz" | cut -f1))"
  if (( mb > 56 )); then
    echo "device-carry is ${mb} MiB: with the working tree it must stay under the device tool's 64 MiB" >&2
    exit 1
  fi
  # Dry run: the same steps from the unpacked copy, with this machine's shim and the CPU.
  # Small budgets: the CPU only checks that every step runs.
  python=/usr/bin/python3 # Debian's, with torch
  DEVICE=cpu STEPS=3 SAMPLES=1 PAI_SHIM="$root/src/Pai.Cli/bin/Release/net10.0/libpai_torch.so" check "$(mktemp -d)"
}

# Unpacks device-carry into $1 and sets up `pai` (a function) to run from there.
unpack() {
  local work=$1
  mkdir -p "$work/dotnet" "$work/app"
  tar -C "$work/dotnet" -xJf "$carry/dotnet-runtime.tar.xz"
  tar -C "$work/app" -xJf "$carry/pai.tar.xz"
  export DOTNET_ROOT=$work/dotnet
  cp "$PAI_SHIM" "$work/app/pai/libpai_torch.so"
  pai() { "$DOTNET_ROOT/dotnet" "$work/app/pai/pai.dll" "$@"; }
}

build_shim() {
  local libtorch
  libtorch=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
  cmake -S native -B /tmp/pai-native -DCMAKE_BUILD_TYPE=Release -DLIBTORCH="$libtorch" >/dev/null
  cmake --build /tmp/pai-native --parallel "$(nproc)" >/dev/null
  PAI_SHIM=$(find /tmp/pai-native -name libpai_torch.so | head -1)
  export PAI_SHIM
}

# Runs the checks with `pai` on $DEVICE against the CPU; everything under $1.
check() {
  local work=$1 device=${DEVICE:-cuda} steps=${STEPS:-50} samples=${SAMPLES:-10}
  unpack "$work"
  cd "$work"
  echo "== pai info"
  pai info | grep -E "libtorch|CUDA|threads"

  echo "== (1) scores on $device against the CPU (synthetic data, 1 sample per class)"
  local criteria="random magnitude grad_norm snip grasp synflow fisher_diag fisher_obd fts gn_diag hutch_diag hutch_obd hts"
  for model in lenet5 resnet20; do
    for c in $criteria; do
      for d in cpu "$device"; do
        local rounds=()
        [ "$c" = synflow ] && rounds=(--rounds 10)
        pai prune -m "$model" -d synthetic -c "$c" -s 0.9 --samples-per-class 1 "${rounds[@]}" --device "$d" \
          -o "mask-$model-$c-$d.safetensors" --save-scores "scores-$model-$c-$d.safetensors" >"prune-$model-$c-$d.log"
      done
      "$python" - "$model" "$c" "$device" "$root/tests/oracles" <<'PY'
import sys
model, c, dev, oracles = sys.argv[1:]
sys.path.insert(0, oracles)
from safetensors_io import load as load_file
a, b = load_file(f"scores-{model}-{c}-cpu.safetensors"), load_file(f"scores-{model}-{c}-{dev}.safetensors")
ma, mb = load_file(f"mask-{model}-{c}-cpu.safetensors"), load_file(f"mask-{model}-{c}-{dev}.safetensors")
num = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
den = max(float(a[k].double().abs().max()) for k in a) or 1.0
agree = sum(int((ma[k] == mb[k]).sum()) for k in ma) / sum(ma[k].numel() for k in ma)
ok = num / den <= 1e-3
print(f"{model:9s} {c:12s} max rel. diff {num / den:.1e}  mask agreement {agree:.5f}  {'ok' if ok else 'DIFFERS'}")
PY
    done
  done

  echo "== (2) masked training on $device keeps pruned weights at zero"
  pai train -m lenet5 -d synthetic --mask "mask-lenet5-snip-$device.safetensors" -e 1 --max-batches 20 --device "$device" \
    -o trained.safetensors >train.log
  "$python" - "$root/tests/oracles" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from safetensors_io import load as load_file
t = load_file("trained.safetensors")
masks = {k[len("mask/"):]: v for k, v in t.items() if k.startswith("mask/")}
bad = {k: int((t[k][~m.bool()] != 0).sum()) for k, m in masks.items()}
print("pruned weights that are not exactly zero:", bad, "ok" if not any(bad.values()) else "FAILED")
PY

  echo "== (3) training throughput on $device, Pai against PyTorch (images/s, batch 128, $steps steps)"
  for model in resnet20 resnet18; do
    local p t
    p=$(pai run -m "$model" -d synthetic -e 1 --max-batches "$steps" --batch-size 128 --device "$device" --results "results-$model" 2>&1 |
      grep -oE '[0-9]+ img/s' | tail -1 | cut -d' ' -f1)
    t=$("$python" "$root/benchmarks/torch_training.py" --model "$model" --device "$device" --steps "$steps" --warmup 10 \
      --cifar-count 6400 --oracles "$root/tests/oracles" | "$python" -c 'import json, sys; print(round(json.load(sys.stdin)["img_s"]))')
    echo "$model: Pai $p img/s, PyTorch $t img/s, ratio $("$python" -c "print(f'{$p / $t:.2f}')")"
  done

  echo "== (4) scoring time of the curvature criteria on $device (resnet20, $samples samples per class)"
  for c in fisher_obd hutch_obd hts grasp snip; do
    local start
    start=$(date +%s.%N)
    pai prune -m resnet20 -d synthetic -c "$c" -s 0.9 --samples-per-class "$samples" --device "$device" -o "time-$c.safetensors" >/dev/null
    "$python" -c "print(f'$c: {$(date +%s.%N) - $start:.1f} s wall (initialization and data included)')"
  done
}

case "${1:-}" in
  package) package ;;
  run)
    build_shim
    out=${OUT:-$root/gpu-check-out}
    mkdir -p "$out"
    check "$(mktemp -d)" 2>&1 | tee "$out/gpu-check.log"
    ;;
  *)
    echo "usage: bash scripts/gpu-check.sh package | run" >&2
    exit 2
    ;;
esac
