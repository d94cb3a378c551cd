#!/usr/bin/env bash
# GPU check (issue 27): ml_adv against PyTorch on one GPU, everything inside one time budget.
#
#   bash benchmarks/gpu_check.sh [--budget-seconds N] [more options of benchmarks/gpu_check.py]
#
# Default budget 240 s, counted from this script's start (the install included). It runs, in
# priority order, the five medium train-step rows in bf16 and f32/TF32 against PyTorch eager on
# CUDA, the bf16 matmul peak, the large encoders and their MFU, the quickstart per scan_unroll,
# the stacked and population rows, torch.compile where time is left, and a fresh quickstart
# process; whatever would not fit is skipped and listed. The JSON is rewritten after every row:
# benchmarks/results/<machine>-<date>-gpu-check.json (see benchmarks/gpu_check.py and the
# "GPU check" section of benchmarks/README.md). Without a GPU the same path runs on the CPU
# with tiny stand-ins (a dry run, JSON in $TMPDIR).
#
# Dependencies: the machine's own JAX, Flax, Optax, PyTorch and NumPy. ml_adv comes from this
# checkout (PYTHONPATH: no pip resolution that could replace the machine's JAX); pure-Python
# packages of benchmarks/wheels.txt that do not import are installed from benchmarks/wheels/
# (fill it with benchmarks/fetch_wheels.sh where pip reaches an index, and carry it along).
set -uo pipefail
START=$(date +%s.%N)
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WHEELHOUSE="${WHEELHOUSE:-benchmarks/wheels}"
BUDGET=240
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --budget-seconds) BUDGET="${args[i + 1]:-240}" ;;
    --budget-seconds=*) BUDGET="${args[i]#*=}" ;;
  esac
done

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU: JAX must not take 75% of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export PYTHONUNBUFFERED=1

missing=$("$PY" - <<'EOF'
import importlib.util
from pathlib import Path

for line in Path("benchmarks/wheels.txt").read_text().splitlines():
    fields = line.split("#")[0].split()
    if len(fields) != 2:
        continue
    try:
        found = importlib.util.find_spec(fields[1]) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        print(fields[0], end=" ")
EOF
)
# --no-deps: wheels.txt lists everything needed; nothing else may be resolved (no index there).
install=("$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir
         --find-links "$WHEELHOUSE")
if [ -n "$missing" ]; then
  echo "gpu_check.sh: installing $missing"
  if [ -d "$WHEELHOUSE" ]; then
    # into the environment, or beside it where that is read-only
    "${install[@]}" $missing \
      || { "${install[@]}" --target /tmp/gpu_check_site $missing \
           && export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"; } \
      || echo "gpu_check.sh: could not install $missing; the rows that need them will fail"
  else
    echo "gpu_check.sh: no $WHEELHOUSE (benchmarks/fetch_wheels.sh fills it); trying the index"
    "$PY" -m pip install --quiet $missing || echo "gpu_check.sh: could not install $missing"
  fi
fi

elapsed=$(( $(date +%s) - ${START%.*} ))
left=$(( ${BUDGET%.*} - elapsed ))
echo "gpu_check.sh: ${elapsed} s of the ${BUDGET%.*} s budget spent on the set-up"
# The Python side stops itself before the deadline (and writes the JSON); this is the backstop.
timeout --kill-after=10 $(( (left > 0 ? left : 0) + 30 )) \
  "$PY" -m benchmarks.gpu_check --started-at "$START" "$@"
