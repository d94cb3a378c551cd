"""Smoke tests of the benchmark harness (benchmarks/): machinery, row schema, peer fidelity.

Fast (tiny workloads, 2 steps per round, 2 rounds). PyTorch parts are skipped when torch is
not installed (CI installs ``.[dev]``, not ``.[bench]``).
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed

from benchmarks import harness, mfu, run  # noqa: E402
from benchmarks.peers import flax_plain  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

run.load_benchmarks()
TINY = [
    "--rounds",
    "2",
    "--steps",
    "2",
    "--quiet-budget",
    "0",
    "--torch-compile",
    "off",
]  # inductor: ~15 s a model


@pytest.fixture(scope="module", autouse=True)
def _shared_compiles():
    """One persistent compilation cache for this file (``gpu_check.dry_run_compiles``, which the
    dry run below joins): the GPU check's dry run trains the tiny MLP rows that the ``run.main``
    tests train, and loads those programs instead of compiling them again. The worker's JAX
    settings come back afterwards."""
    from benchmarks import gpu_check

    with gpu_check.dry_run_compiles(on_gpu=False):
        yield


def _flax_params(wl) -> int:
    model = flax_plain.build(wl.spec())
    x, _ = wl.data(1)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
    return sum(leaf.size for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_plain_flax_twin_has_the_same_parameters(name):
    from ml_adv.models import count_params

    wl = WORKLOADS[name]
    assert _flax_params(wl) == count_params(wl.spec())


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_torch_twin_has_the_same_parameters(name):
    torch = pytest.importorskip("torch")
    from benchmarks.peers import torch_models
    from ml_adv.models import count_params

    wl = WORKLOADS[name]
    spec = wl.spec()
    with torch.device("meta"):  # shapes only: the large encoders have ~185M parameters
        model = torch_models.build(spec)
    assert torch_models.count_trainable(model) == count_params(spec)


def test_run_writes_rows_in_the_schema(tmp_path):
    out = tmp_path / "r.json"
    run.main(["--only", "throughput/mlp/tiny", "--no-torch", "--out", str(out), *TINY])
    doc = json.loads(out.read_text())
    assert {"environment", "settings", "rows", "wall_seconds"} <= set(doc)
    env = doc["environment"]
    for key in ("cpu_model", "simd_flags", "cores", "python", "versions", "XLA_FLAGS", "date"):
        assert key in env
    assert env["versions"]["jax"] == jax.__version__
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == {"throughput/mlp/tiny", "compile/mlp/tiny"}
    for r in rows.values():
        harness.validate_row(r)
    row = rows["throughput/mlp/tiny"]
    assert set(row["contenders"]) == {"ml_adv", "ml_adv step", "plain Flax"}
    assert row["unit"] == "samples/s" and row["contenders"]["ml_adv"]["value"] > 0
    assert len(row["contenders"]["ml_adv"]["times_s"]) >= 2
    assert set(row["ratios"]) == {"ml_adv/plain Flax", "ml_adv step/plain Flax"}
    assert rows["compile/mlp/tiny"]["contenders"]["ml_adv epoch AOT compile"]["value"] > 0


def test_torch_row_and_the_gpu_path_on_cpu(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "t.json"
    res = run.main(["--only", "throughput/cnn/tiny", "--out", str(out), *TINY])
    row = res["rows"][0]
    assert "PyTorch" in row["contenders"] and "ml_adv/PyTorch" in row["ratios"]
    assert "| cnn tiny |" in res["table"]
    # --device gpu --dtype bf16 runs anywhere: here JAX and the PyTorch peer (autocast) on the CPU
    res = run.main(["--device", "gpu", "--dtype", "bf16", "--only", "throughput/mlp/tiny",
                    "--out", str(tmp_path / "g.json"), *TINY])  # fmt: skip
    row = res["rows"][0]
    assert res["settings"]["dtype"] == "bf16" and res["settings"]["torch_device"] == "cpu"
    assert "PyTorch" in row["contenders"] and row["extra"]["precision"] == "bf16"
    assert row["extra"]["torch_device"] == "cpu" and "ml_adv/PyTorch" in row["ratios"]


def test_rounds_alternate_and_ratios_point_the_right_way():
    calls = []

    def sleeper(name, seconds):
        def fn():
            calls.append(name)
            time.sleep(seconds)

        return fn

    timing = harness.time_rounds(
        # 4x apart: a loaded machine oversleeps by a few ms, which must not flip the ratios
        {"fast": sleeper("fast", 0.005), "slow": sleeper("slow", 0.02)},
        rounds=3,
        foreign_limit=1e9,
    )
    assert calls[:2] == ["fast", "slow"]  # warm-up, then rotating cycles
    assert calls[2:4] == ["fast", "slow"] and calls[4:6] == ["slow", "fast"]
    row = harness.make_row("x/y", "g", "t", timing, rounds=3, work_per_round=10, unit="items/s",
                           subject="fast", peers=("slow",))  # fmt: skip
    assert row["ratios"]["fast/slow"] > 1.5 and row["paired_ratios"]["fast/slow"] > 1.5
    times = harness.make_row("x/z", "g", "t", timing, rounds=3, work_per_round=1, unit="s",
                             higher_is_better=False, subject="fast", peers=("slow",))  # fmt: skip
    assert times["contenders"]["fast"]["value"] < times["contenders"]["slow"]["value"]
    assert times["ratios"]["fast/slow"] > 1.5  # >1 still means the subject wins


def test_selection_and_flop_formula():
    names = [b.name for b in harness.select(["throughput/cnn"], quick=False)]
    assert names == ["throughput/cnn/digits", "throughput/cnn/medium", "throughput/cnn/tiny"]
    assert all(b.default for b in harness.select(None, quick=True))
    # the GPU-sized encoders are never part of a CPU run's default or quick selection
    defaults = {b.name for quick in (False, True) for b in harness.select(None, quick=quick)}
    assert "throughput/transformer/large" in harness.BENCHMARKS
    assert not any("/large" in n for n in defaults)
    # 12 layers of d1024 (ffn 4096) over 512 tokens: ~0.5 TFLOP per sequence for forward + backward
    per_seq = mfu.workload_flops("transformer/large") / WORKLOADS["transformer/large"].batch
    assert 4.9e11 < per_seq < 5.2e11
    with pytest.raises(ValueError, match="no benchmark matches"):
        harness.select(["nope"], quick=False)
    # REFERENCE.md transformer: ~2.6 GFLOP per sequence for forward + backward
    per_seq = mfu.workload_flops("transformer/medium") / WORKLOADS["transformer/medium"].batch
    assert 2.55e9 < per_seq < 2.7e9


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux /proc")
def test_pool_scoring_probe_reports_memory():
    from benchmarks import pool_scoring

    rec = pool_scoring.probe(3000, "stream", chunk=1024)
    assert rec["finite"] and rec["seconds"] > 0 and rec["rows"] == 3000
    assert 0 <= rec["growth_mib"] < rec["peak_rss_mib"] and rec["pool_mib"] == 3000 * 64 * 4 / 2**20


def test_kcenter_row_on_a_tiny_pool():
    from benchmarks import kcenter

    # the pruned / bf16 variants and the scikit-activeml peer are tested elsewhere or too slow to
    # import
    ctx = harness.Context(quick=True, rounds=1, quiet_budget_s=0.0)
    (row,) = kcenter.selection_row(
        ctx, "kcenter/tiny", "tiny", kcenter.random_pool(256, 8), 12, peer=False, variants=False
    )
    harness.validate_row(row)
    assert (
        set(row["contenders"]) == {"stream floor", "ml_adv"}
        and "ml_adv/stream floor" in row["ratios"]
    )
    assert row["extra"]["ours_over_floor"] > 0 and row["extra"]["floor_bytes"] == 256 * 8 * 4 * 12


# --------------------------------------------------------------------------- the GPU check
def _check_plan(doc: dict) -> dict:
    """Every task of the plan ran (its rows are there) or says why not; returns rows by name."""
    rows = {r["name"]: r for r in doc["rows"]}
    for r in rows.values():
        harness.validate_row(r)
    assert doc["plan"] and {"not_run", "budget", "environment", "settings"} <= set(doc)
    for e in doc["plan"]:
        assert e["status"] in ("done", "skipped"), e
        if e["status"] == "done":
            assert all(name in rows for name in e["rows"]), e
        else:
            assert e["reason"], e
    not_done = {e["name"] for e in doc["plan"] if e["status"] != "done"}
    assert {e["name"] for e in doc["not_run"]} == not_done
    return rows


def test_gpu_check_budget_skips_what_does_not_fit_and_writes_after_every_task(tmp_path):
    from benchmarks import gpu_check as gc

    out = tmp_path / "c.json"
    settings = {"budget_seconds": 5.0, "started_at": 0.0, "deadline": 5.0}
    check = gc.Check(out, {}, settings, time.time())
    row = harness.simple_row("x/a", "g", "a", {"v": 1.0}, unit="s", higher_is_better=False)

    def broken():
        raise RuntimeError("broken row")

    def sees_the_file():  # the JSON already holds the earlier tasks while this one runs
        doc = json.loads(out.read_text())
        assert [r["name"] for r in doc["rows"]] == ["x/a"]
        assert {e["name"]: e["status"] for e in doc["plan"]}["x/sees"] == "running"
        return []

    plan = [
        gc.Task("x/a", "a", lambda: [row]),
        gc.Task("x/big", "big", lambda: []),
        gc.Task("x/needs", "c", lambda: [], needs=("x/missing",)),
        gc.Task("x/off", "c", lambda: [], off="off"),
        gc.Task("x/broken", "c", broken),
        gc.Task("x/skip", "c", lambda: []),
        gc.Task("x/sees", "c", sees_the_file),
    ]
    budget = gc.Budget(time.time() + 5 + gc.RESERVE_S, {"a": 0.1, "big": 100.0, "c": 0.0})
    gc.run_plan(check, plan, budget, {"only": [], "skip": ["x/skip"]})
    doc = json.loads(out.read_text())
    status = {e["name"]: (e["status"], e.get("reason", "")) for e in doc["plan"]}
    assert status["x/a"][0] == status["x/sees"][0] == "done"
    assert [r["name"] for r in doc["rows"]] == ["x/a"]
    assert status["x/big"][0] == "skipped" and status["x/big"][1].startswith("budget: needs ~")
    assert status["x/needs"] == ("skipped", "needs x/missing, which did not run")
    assert status["x/off"] == ("skipped", "off") and status["x/skip"] == ("skipped", "--skip")
    assert status["x/broken"] == ("failed", "RuntimeError: broken row")
    assert "traceback" in next(e for e in doc["plan"] if e["name"] == "x/broken")


def test_gpu_check_only_runs_the_selected_tasks_and_says_what_they_need(tmp_path):
    from benchmarks import gpu_check

    out = tmp_path / "gpu.json"
    only = ["mfu/matmul-peak", "mfu/transformer/medium"]
    gpu_check.main(["--budget-seconds", "300", "--out", str(out), "--only", *only])
    doc = json.loads(out.read_text())
    rows = _check_plan(doc)
    status = {e["name"]: e for e in doc["plan"]}
    assert status["throughput/cnn/medium/bf16"]["reason"] == "not selected (--only)"
    needs = status["mfu/transformer/medium"]["reason"]
    assert needs.startswith("needs throughput/transformer/medium/bf16")
    assert not doc["settings"]["measured_on_gpu"]
    assert rows["mfu/matmul-peak"]["contenders"]["jnp.dot"]["value"] > 0


def _check_precision_rows(rows: dict, table: str) -> None:
    """The first throughput rows time both precisions, against PyTorch where it is installed."""
    assert "| mlp tiny (as medium) f32 |" in table
    has_torch = importlib.util.find_spec("torch") is not None
    for prec in ("bf16", "f32"):
        row = rows[f"throughput/mlp/medium/{prec}"]
        assert row["extra"]["precision"] == prec and row["extra"]["workload"] == "mlp/tiny"
        assert row["contenders"]["ml_adv"]["value"] > 0
        if has_torch:  # CI installs .[dev] only
            assert row["contenders"]["PyTorch"]["value"] > 0 and row["ratios"]["ml_adv/PyTorch"] > 0
            assert row["extra"]["torch_device"] == "cpu"


@pytest.mark.slow
def test_gpu_check_whole_dry_run_on_cpu(tmp_path):
    """Every code path of the GPU check on CPU stand-ins (one compilation cache with this
    file's other tests, see ``_shared_compiles``)."""
    from benchmarks import gpu_check

    out = tmp_path / "gpu.json"
    res = gpu_check.main(["--budget-seconds", "500", "--out", str(out)])  # < pytest's timeout
    doc = json.loads(out.read_text())
    rows = _check_plan(doc)
    _check_precision_rows(rows, res["table"])
    # torch.compile is off on a CPU dry run; without the bench extra there is no peer at all.
    has_torch = importlib.util.find_spec("torch") is not None
    why_off = "CPU dry run" if has_torch else "no PyTorch peer"
    for e in doc["plan"]:
        if e["name"].startswith("torch-compile/"):
            assert e["status"] == "skipped" and why_off in e["reason"]
    done = {e["name"] for e in doc["plan"] if e["status"] == "done"}
    assert {"throughput/mlp/medium/bf16", "throughput/mlp/medium/f32"} <= done  # the first tasks
    if "mfu/transformer/large" in done:
        assert rows["mfu/transformer/large"]["extra"]["workload"] == "transformer/tiny"
    if "quickstart/steps" in done:
        assert "device loop, unroll 1/fit, unroll 1" in rows["quickstart/steps"]["ratios"]
