#!/usr/bin/env bash
# Threads on an idle and on a loaded machine: `pai prune -m lenet5 -c hutch_obd -s 0.9` with
# --threads 1, --threads 2 and the default (--threads 0: the cores other processes leave free), each
# with Pai's passive waiting and with OMP_WAIT_POLICY=ACTIVE forced as a user would. First on the
# machine as it is (run it idle), then with BUSY busy-loop processes that this script starts and
# stops itself. The six variants run interleaved (the order rotates each repeat); prints every run's
# wall time (and the scoring phase's), then the medians. Usage (after `dotnet build src/Pai.Cli -c Release`):
#   bash benchmarks/threads-under-load.sh [REPEATS=3] [BUSY=4 per core; 0: idle only] [SETTLE=30 s for the load to rise]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/ab.sh # median
repeats=${1:-3}
busy=${2:-$((4 * $(nproc)))}
settle=${3:-30}
pai=(dotnet src/Pai.Cli/bin/Release/net10.0/pai.dll)
work=$(mktemp -d)
loops=()
stop_loops() { for pid in "${loops[@]}"; do kill "$pid" 2>/dev/null || true; done; loops=(); }
trap 'stop_loops; rm -rf "$work"' EXIT

variants=("threads 1" "threads 2" "default" "threads 1, ACTIVE" "threads 2, ACTIVE" "default, ACTIVE")
run() { # $1 = variant; prints "WALL SCORING" in seconds
  local threads=0 env=(env -u OMP_WAIT_POLICY) log="$work/run.log" start end
  case $1 in *"threads 1"*) threads=1 ;; *"threads 2"*) threads=2 ;; esac
  [[ $1 == *ACTIVE* ]] && env=(env OMP_WAIT_POLICY=ACTIVE)
  start=$(date +%s.%N)
  "${env[@]}" "${pai[@]}" prune -m lenet5 -c hutch_obd -s 0.9 -o "$work/mask.safetensors" --threads "$threads" >"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f ", b - a}'
  sed -n 's/.*scoring \([0-9.]*\) s.*/\1/p' "$log" | tail -1
}

phase() { # $1 = name
  echo "== $1: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "${pai[@]}" info | grep -E '^│ (threads|idle threads) ' | tr -s ' '
  declare -A wall scoring
  local r i v w s out
  for r in $(seq "$repeats"); do
    for i in "${!variants[@]}"; do
      v=${variants[$(((i + r - 1) % ${#variants[@]}))]}
      out=$(run "$v")
      read -r w s <<<"$out"
      wall[$v]+="$w "; scoring[$v]+="$s "
      echo "repeat $r, $v: $w s (scoring $s s), load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    printf '%s median: %-18s %6s s wall, %6s s scoring\n' "$1" "$v" "$(median ${wall[$v]})" "$(median ${scoring[$v]})"
  done
}

phase idle
((busy > 0)) || exit 0
for _ in $(seq "$busy"); do (while :; do :; done) & loops+=($!); done
echo "started $busy busy loops; waiting ${settle} s for the load average to rise"
sleep "$settle"
phase "loaded ($busy busy loops)"
stop_loops
