#!/usr/bin/env bash
# Installs the Debian packages Pai needs, when they are missing. Called by the build (so that the
# README's two commands need no other step); safe and fast to run again.
#   scripts/bootstrap.sh           packages to build and run Pai
#   scripts/bootstrap.sh --tests   also the packages the tests use: python3-torch, python3-scipy (statistics) and
#                                  python3-pil (JPEG files) as oracles, chromium (renders the HTML report headless)
#                                  and postgresql (the tests start a throwaway cluster for the PostgreSQL run store)
set -euo pipefail

# fonts-dejavu-core: the font of the report's charts (drawn with SkiaSharp, which reads /usr/share/fonts).
# libturbojpeg0: the JPEG decoder of the image-folder data sets.
packages=(libopenblas0-pthread libturbojpeg0 cmake dataset-fashion-mnist fonts-dejavu-core)
# LIBTORCH points at another libtorch (a CUDA build, say): then Debian's is not needed.
# libgloo-dev: Gloo's headers, which libtorch's c10d headers include (distributed training).
[ -n "${LIBTORCH:-}" ] || packages=(libtorch-dev libgloo-dev "${packages[@]}")
[ "${1:-}" = "--tests" ] && packages+=(python3-torch python3-scipy python3-pil chromium postgresql)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "pai bootstrap: not a Debian system; make sure libtorch, OpenBLAS and cmake are installed (${packages[*]} on Debian)." >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  {
    echo "pai: missing Debian packages: ${missing[*]}"
    echo "Install them, then run the command again:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  } >&2
  exit 1
fi

echo "pai: installing missing Debian packages: ${missing[*]}"
# Serialize concurrent builds (several projects or processes may bootstrap at once).
exec 9>/tmp/pai-bootstrap.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/tmp/pai-bootstrap-apt.log 2>&1 || {
  echo "pai: apt-get install failed; see /tmp/pai-bootstrap-apt.log" >&2
  tail -20 /tmp/pai-bootstrap-apt.log >&2
  exit 1
}
echo "pai: installed ${missing[*]}"
