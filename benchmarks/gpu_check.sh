#!/usr/bin/env bash
# GPU check: the train-step throughput and MFU rows on one GPU in bfloat16, under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; runs in the repository root
#
# What it runs: `python -m benchmarks.run --device gpu --dtype bf16` on the medium workloads
# (REFERENCE.md shapes) of all five architectures plus the MFU rows: ml_adv's scanned epoch
# and per-step paths with mixed precision (bf16 compute, f32 master weights) against plain
# Flax with dtype=bfloat16 layers; PyTorch is not needed (it is the CPU peer). MFU is
# reported against a bf16 8192^2 matmul measured in the same run and, on H100/H200, against
# the 989 TFLOP/s dense bf16 datasheet peak. The table is printed and the JSON lands in
# benchmarks/results/gpu-<device>-<date>-gpu-bf16-partial.json.
#
# Dependencies: uses the JAX / Flax / Optax the image ships. Anything else missing
# (orbax-checkpoint, jaxtyping, ...) is installed with pip: from $WHEELHOUSE
# (default benchmarks/wheels, fill it with `pip download -d benchmarks/wheels <pkg>` on a
# machine with internet) when that folder exists, else from the package index.
#
# Budget: steps per round are scaled up 25x (GPU steps are ~100x faster than the 2-core
# CPU's), 5 rounds, no waiting for a quiet host CPU (--quiet-budget 0, --foreign-limit 4:
# CPU load from other processes hardly matters to GPU timings); `timeout` keeps it < 7.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
WHEELHOUSE="${WHEELHOUSE:-benchmarks/wheels}"

missing=$("$PY" - <<'EOF'
import importlib.util
need = {"jax": "jax", "flax": "flax", "optax": "optax", "orbax.checkpoint": "orbax-checkpoint",
        "jaxtyping": "jaxtyping", "numpy": "numpy"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "installing missing packages: $missing"
  if [ -d "$WHEELHOUSE" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" $missing
  else
    "$PY" -m pip install --quiet $missing
  fi
fi

"$PY" - <<'EOF'
import jax
print("JAX", jax.__version__, "devices:", jax.devices())
if jax.default_backend() != "gpu":
    raise SystemExit("gpu_check.sh: JAX sees no GPU (backend %r); install jax[cuda12]" % jax.default_backend())
EOF

export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
timeout 450 "$PY" -m benchmarks.run --device gpu --dtype bf16 \
  --only 'throughput/*/medium' mfu \
  --steps-scale 25 --rounds 5 --quiet-budget 0 --foreign-limit 4 "$@"
