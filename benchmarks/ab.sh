# Shared by the A/B benchmark scripts (source it): interleaved repeats, medians, the ratio line.
# ab_repeats REPEATS UNIT LABEL_A LABEL_B FN_A FN_B: runs FN_A and FN_B (each prints one number)
# A/B then B/A per repeat, prints every repeat, then the medians and the ratio B / A.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ab_repeats() {
  local repeats=$1 unit=$2 label_a=$3 label_b=$4 fn_a=$5 fn_b=$6 r a=() b=()
  for r in $(seq "$repeats"); do
    if (( r % 2 )); then a+=("$($fn_a)"); b+=("$($fn_b)"); else b+=("$($fn_b)"); a+=("$($fn_a)"); fi
    echo "repeat $r: $label_a ${a[-1]} $unit, $label_b ${b[-1]} $unit (load $(cut -d' ' -f1 /proc/loadavg))"
  done
  local ma mb; ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
  echo "median: $label_a $ma $unit, $label_b $mb $unit, ratio ($label_b / $label_a) $(awk -v x="$mb" -v y="$ma" 'BEGIN {printf "%.2f", x / y}')"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}
