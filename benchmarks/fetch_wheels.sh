#!/usr/bin/env bash
# Fill benchmarks/wheels/ (ignored by git) with the pure-Python wheels of benchmarks/wheels.txt,
# on a machine whose pip reaches a package index, so that gpu_check.sh can install whichever of
# them a GPU machine without one lacks. Carry the folder there with the checkout (the device
# tool: carry ["benchmarks/wheels"]).
#
#   bash benchmarks/fetch_wheels.sh
#
# Only py3-none-any wheels, without their dependencies (the GPU machine has JAX, NumPy, SciPy,
# scikit-learn, pandas ...; pip must not resolve anything there), so they install on that
# machine's Python (3.12 on the H200 image) whatever Python runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=benchmarks/wheels
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$DEST"
mapfile -t reqs < <(sed 's/#.*//' benchmarks/wheels.txt | awk 'NF == 2 {print $1}')
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" "${reqs[@]}"
for whl in "$DEST"/*.whl; do
  case "$whl" in
    *-none-any.whl) ;;
    *) echo "fetch_wheels.sh: $whl is not a pure-Python wheel" >&2; exit 1 ;;
  esac
done
ls -1 "$DEST"
du -sh "$DEST"
