"""Scoring a large unlabelled pool in bounded memory (issue 12, requirement 5 "Scale").

``active/score-pool``: entropy scores of a digits-shaped MLP (64-256-128-10) over pools of
250,000 and 1,000,000 rows of 64 float32 features (quick: 100,000 and 400,000), each in a
fresh interpreter so that its peak resident memory (``VmHWM``) is its own. Contenders:

* ``ml_adv score_pool``: ``active_learning.scores.score_pool`` (what ``select_samples``
  runs), 4,096 rows per compiled call, only the ``[N]`` scores kept;
* ``one call``: the same jitted model and score over the whole pool at once (what a
  notebook would write first): its activations scale with N.

Each probe (Linux only: it reads ``/proc/self/status`` and resets the peak through
``/proc/self/clear_refs``) reports seconds for the scoring pass (after one warm-up chunk, so
compiles are excluded) and the growth of the resident memory over the process's memory just
before the pass (the pool itself, the model and the JAX runtime are already there): bounded
means the growth does not scale with N beyond the ``[N]`` float32 scores. ``extra`` holds every
probe's numbers and the pool's bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.harness import Context, register, simple_row

FULL_SIZES = (250_000, 1_000_000)
QUICK_SIZES = (100_000, 400_000)
CHUNK = 4096

_PROBE = """
import json, time
import numpy as np
import jax
from ml_adv import make_spec
from ml_adv.active_learning.scores import entropy, score_pool

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB
rows, how, chunk = {rows}, {how!r}, {chunk}
spec = make_spec(
    "mlp", input_shape=(64,), input_kind="features", num_classes=10, hidden_sizes=(256, 128)
)
module = spec.build()
variables = module.init(jax.random.PRNGKey(0), spec.example_input(), train=False)
logits = jax.jit(lambda x: module.apply(variables, x, train=False))
pool = np.random.default_rng(0).uniform(size=(rows, 64)).astype(np.float32)
if how == "stream":
    run = lambda: score_pool(logits, entropy, pool, chunk=chunk)
    score_pool(logits, entropy, pool[:chunk], chunk=chunk)  # compile on one chunk
else:
    whole = jax.jit(lambda x: entropy(module.apply(variables, x, train=False)))
    run = lambda: np.asarray(whole(pool))
    whole.lower(pool).compile()
with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS (Linux >= 4.0)
    f.write("5")
before = status("VmRSS")
t0 = time.perf_counter()
scores = run()
seconds = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({{"rows": rows, "seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak,
                  "growth_mib": peak - before,
                  "pool_mib": pool.nbytes / 2**20, "finite": bool(np.isfinite(scores).all())}}))
"""


def probe(rows: int, how: str, chunk: int = CHUNK) -> dict:
    """One fresh interpreter scoring ``rows`` rows ``how`` ("stream" or "whole")."""
    code = _PROBE.format(rows=rows, how=how, chunk=chunk)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@register("active/score-pool", group="active")
def score_pool_row(ctx: Context) -> list[dict]:
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    probes = {how: [probe(rows, how) for rows in sizes] for how in ("stream", "whole")}
    largest = {how: results[-1] for how, results in probes.items()}
    values = {
        "ml_adv score_pool": largest["stream"]["seconds"],
        "one call": largest["whole"]["seconds"],
    }
    extra = {
        "chunk": CHUNK,
        "sizes": list(sizes),
        "probes": probes,
        "growth_mib": {how: [p["growth_mib"] for p in results] for how, results in probes.items()},
        "peak_rss_mib": {
            how: [p["peak_rss_mib"] for p in results] for how, results in probes.items()
        },
    }
    ctx.log(
        "active/score-pool: memory growth (MiB) at "
        + ", ".join(f"{n:,}" for n in sizes)
        + " rows: "
        + "; ".join(f"{how} {extra['growth_mib'][how]}" for how in probes)
    )
    return [simple_row(
        "active/score-pool", "active",
        f"entropy scores of {sizes[-1]:,} pool rows (MLP 64-256-128-10), seconds",
        values, unit="s", higher_is_better=False,
        ratios={"ml_adv score_pool/one call": values["one call"] / values["ml_adv score_pool"]},
        extra=extra,
    )]  # fmt: skip
