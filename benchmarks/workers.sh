#!/usr/bin/env bash
# The main job's wall time with local worker processes: `pai sweep --workers 2` (two one-thread
# processes sharing the SQLite store) against one process with `--threads 2`, interleaved A/B/B/A,
# each repeat on a fresh store, medians. Usage (after `dotnet build src/Pai.Cli -c Release`):
#   bash benchmarks/workers.sh [REPEATS=3] [extra `pai sweep` options, e.g. --max-batches 50]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/ab.sh
repeats=${1:-3}; shift || true
extra=("$@")
pai=(dotnet src/Pai.Cli/bin/Release/net10.0/pai.dll)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
run() { # $1 = label, rest = options; prints wall seconds
  local dir="$work/$1-$RANDOM" start end
  start=$(date +%s.%N)
  "${pai[@]}" sweep --results "$dir" "${@:2}" "${extra[@]}" >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
  end=$(date +%s.%N)
  if grep -q ' failed: ' "$dir.log"; then grep ' failed: ' "$dir.log" >&2; exit 1; fi
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}'
}
one() { run one --threads 2; }
two() { run two --workers 2; }
ab_repeats "$repeats" s "1 process x 2 threads" "2 workers x 1 thread" one two
