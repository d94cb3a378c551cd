"""``ml-adv adapt`` end to end on digits -> digits_m (tiny MLP, one epoch each)."""

import json

import numpy as np
import pytest

from ml_adv.cli import main
from ml_adv.training.trained_model import TrainedModel


@pytest.mark.slow
def test_adapt_command_writes_metrics_plot_report_and_model(tmp_path, capsys):
    run_dir = tmp_path / "adapt"
    argv = [
        "adapt",
        "--method",
        "domain_adversarial",
        "--source",
        "digits_m_source",
        "--target",
        "digits_m",
        "--arch",
        "mlp",
        "--size",
        "tiny",
        "--epochs",
        "1",
        "--steps",
        "88",
        "--run-dir",
        str(run_dir),
    ]
    assert main(argv) == 0
    assert "| target test accuracy, domain_adversarial " in capsys.readouterr().out
    report = json.loads((run_dir / "report.json").read_text())
    ev = report["evaluation"]
    assert ev["method"] == "domain_adversarial"
    assert ev["transfer_ratio"] == pytest.approx(ev["target_accuracy"] / ev["source_accuracy"])
    assert set(report["similarity"]["after"]) == {
        "mmd2",
        "mmd_similarity",
        "coral_distance",
        "proxy_a_distance",
    }
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 88 steps of the 1,437-image source split at batch 32 (44 steps an epoch): 2 epochs.
    assert [r["epoch"] for r in lines] == [1, 2] and "train_domain_loss" in lines[0]
    assert (run_dir / "plots" / "embedding.png").stat().st_size > 0
    from ml_adv import load_dataset

    test = load_dataset("digits_m", split="test")
    model = TrainedModel.load(run_dir / "model")
    assert model.evaluate(test)["accuracy"] == pytest.approx(ev["target_accuracy"], abs=1e-6)
    # --fresh removes everything the run wrote, the nested source/ and adaptation/ runs included.
    assert (run_dir / "source" / "checkpoints").exists() and (
        run_dir / "adaptation" / "checkpoints"
    ).exists()
    from ml_adv.rundir import RunDirectory

    RunDirectory.clean(run_dir)
    assert not (run_dir / "source").exists() and not (run_dir / "adaptation").exists()
    assert not (run_dir / "report.json").exists()


def test_adapt_command_rejects_bad_input_cleanly(tmp_path, capsys):
    assert main(["adapt", "--method", "magic", "--run-dir", str(tmp_path / "x")]) == 2
    assert "adaptation_method: unknown name 'magic'" in capsys.readouterr().err
    assert (
        main(
            [
                "adapt",
                "--method",
                "fine_tuning",
                "--labels-per-class",
                "0",
                "--run-dir",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x").exists()


def test_labelled_sample_is_per_class():
    from ml_adv import load_dataset
    from ml_adv.domain_adaptation.workflow import labelled_sample

    data = load_dataset("digits_m", split="train")
    sample = labelled_sample(data, 3, seed=1)
    assert np.bincount(sample.y).tolist() == [3] * 10
