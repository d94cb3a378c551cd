"""The ml-adv script: command table, self-explaining help, clean errors, safe --fresh, README
commands."""

import importlib
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from ml_adv import cli
from ml_adv.cli import common

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_a_module_with_add_arguments_and_run():
    for name, path in cli.COMMANDS.items():
        module = importlib.import_module(path)
        assert callable(module.add_arguments) and callable(module.run), name
        assert module.__doc__ and common.summary(module.__doc__), name


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out  # no raw reStructuredText
    if command in ("train", "quickstart"):
        from ml_adv.models import ARCHITECTURES
        from ml_adv.training.optim import OPTIMIZERS, SCHEDULES

        text = " ".join(out.split())
        for names in (ARCHITECTURES.names(), OPTIMIZERS.names(), SCHEDULES.names()):
            assert ", ".join(names) in text
        assert "(default: 0.15)" in text and "--warmup-fraction" in text
        default_lr = "0.002" if command == "quickstart" else "0.001"
        assert re.search(r"--lr LR\s+peak learning rate \(default: " + default_lr, out)


def test_top_level_help_lists_commands_without_importing_them(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert "--fresh" in out


def test_library_errors_are_one_clean_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--arch", "mlp", "--size", "tiny", "--run-dir", "."])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ml-adv train: error: --run-dir:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "a_file").write_text("x")
    assert cli.main(["train", "--arch", "mlp", "--run-dir", "a_file", "--fresh"]) == 2
    assert "--run-dir: expected a folder, got the file 'a_file'" in capsys.readouterr().err


def test_bad_option_values_are_usage_errors(capsys):
    for argv in (
        ["train", "--epochs", "0"],
        ["train", "--lr", "nan"],
        ["train", "--arch", "mpl"],
        ["train", "--monitor", "val_acc"],
        ["train", "--validation-split", "1"],
        ["train", "--seed", str(2**64)],
        ["nope"],
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv
    assert "invalid choice: 'val_acc'" in capsys.readouterr().err


def test_data_that_does_not_fit_leaves_no_run_behind(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        cli.main(["train", "--arch", "bert", "--data", "digits_flat", "--run-dir", str(run)]) == 2
    )
    assert "error: data.x: 'tokens' inputs are integer token ids" in capsys.readouterr().err
    assert not run.exists()


def test_fresh_refuses_an_unmarked_folder(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    code = cli.main(
        ["train", "--arch", "mlp", "--size", "tiny", "--run-dir", str(folder), "--fresh"]
    )
    assert code == 2 and "not an ml_adv run directory" in capsys.readouterr().err
    assert (folder / "thesis.tex").read_text() == "x"


def test_fresh_keeps_user_files_and_restarts(tmp_path, capsys):
    from ml_adv.rundir import RunDirectory

    run = tmp_path / "run"
    previous = RunDirectory(
        run
    )  # a previous run's artifacts; its broken checkpoint must not be resumed
    previous.write_config({"old": True})
    previous.append_metrics({"epoch": 1})
    previous.plot_path("learning_curve").write_bytes(b"old")
    (previous.checkpoint_dir / "latest" / "7").mkdir(parents=True)
    (previous.checkpoint_dir / "latest" / "7" / "junk").write_text("not a checkpoint")
    (run / "notes.md").write_text("mine")
    (run / "plots" / "my_plot.png").write_bytes(b"mine")
    (run / "checkpoints" / "README").write_text("mine")

    argv = [
        "train",
        "--arch",
        "mlp",
        "--size",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--run-dir",
        str(run),
    ]
    assert cli.main([*argv, "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "removed 4 artifact(s)" in out and f"the run is in {run}/" in out
    for name, content in (
        ("notes.md", b"mine"),
        ("plots/my_plot.png", b"mine"),
        ("checkpoints/README", b"mine"),
    ):
        assert (run / name).read_bytes() == content
    assert (run / "model").is_dir() and (
        run / "plots" / "learning_curve.png"
    ).read_bytes() != b"old"
    assert json.loads((run / "report.json").read_text())["metrics"]["resumed_from"] is None

    assert cli.main(argv) == 0  # the same command again: the finished run is shown, not retrained
    assert "already holds a finished run" in capsys.readouterr().out
    rerun = json.loads((run / "report.json").read_text(), parse_constant=pytest.fail)  # no bare NaN
    assert rerun["metrics"]["resumed_from"] == 1 and rerun["metrics"]["steps_per_second"] is None


def _accuracy_table_commands() -> list[tuple[str, str]]:
    rows = []
    for line in (ROOT / "docs" / "digits_notes.md").read_text().splitlines():
        match = re.match(r"\| (\w+) \(small\) \|.*`(ml-adv train [^`]+)`", line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def test_digits_accuracy_table_commands_are_the_tested_settings():
    """Each row's command parses to exactly the settings tests/test_e2e_digits.py trains with."""
    from ml_adv.cli.train import training_data_from_args

    cases = _e2e_cases()
    rows = _accuracy_table_commands()
    assert sorted(arch for arch, _ in rows) == sorted(cases)
    for arch, command in rows:
        args = cli.build_parser().parse_args(shlex.split(command)[1:])
        data = training_data_from_args(args)
        epochs, lr, _ = cases[arch]
        assert (args.arch, data["epochs"], data["learning_rate"]) == (arch, epochs, lr), command
        assert (
            data["batch_size"],
            data["schedule"],
            data["warmup_fraction"],
            data["seed"],
            data["size"],
            data["validation_split"],
            data["data"],
        ) == (32, "warmup_cosine", 0.05, 0, "small", 0.15, "digits")


def _e2e_cases() -> dict:
    source = (ROOT / "tests" / "test_e2e_digits.py").read_text()
    body = source[source.index("CASES = {") :]
    body = body[: body.index("}\n") + 1]
    namespace: dict = {}
    exec(body, namespace)  # noqa: S102 - our own test file's literal table
    return namespace["CASES"]


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_python_blocks_run_and_rerun(tmp_path, monkeypatch):
    """The README's trainer and core blocks run as written (1 epoch, tiny models); a rerun's save
    works.

    Rerunning the first block would train again; re-executing its lines from ``save`` on, in
    the same namespace, checks what a second run failed on (the model folder exists).
    """
    blocks = _readme_python_blocks()
    for i, block in enumerate(
        blocks
    ):  # every block at least compiles; other sections' owners run theirs
        compile(block, f"README python block {i + 1}", "exec")
    first = next(
        b for b in blocks if 'AdvancedCustomModelTrainer(architecture_type="transformer")' in b
    )
    second = next(b for b in blocks if 'AdvancedModelArchitecture("cnn")' in b and "fit(" in b)
    assert "save(" in first
    monkeypatch.chdir(tmp_path)
    quick = [
        (r'"epochs": 15', '"epochs": 1'),
        ("epochs=15", "epochs=1"),
        (
            'AdvancedCustomModelTrainer(architecture_type="transformer")',
            'AdvancedCustomModelTrainer(architecture_type="transformer", size="tiny")',
        ),
        ('AdvancedModelArchitecture("cnn")', 'AdvancedModelArchitecture("cnn", size="tiny")'),
    ]
    originals = first, second
    for old, new in quick:
        first, second = first.replace(old, new), second.replace(old, new)
    assert (first, second) != originals, "the README changed: update the substitutions"
    namespace: dict = {}
    exec(compile(first, "README block 1", "exec"), namespace)  # noqa: S102 - our README
    rerun = first[first.index("result.model.save(") :]
    exec(compile(rerun, "README block 1, second run", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "my_model").is_dir() and namespace["result"].success
    exec(compile(second, "README block 2", "exec"), {})  # noqa: S102
    assert (tmp_path / "runs" / "my-cnn" / "config.json").exists()


def test_short_commands_compile_with_the_fast_cpu_settings(monkeypatch):
    """quickstart and workflow (fixed, short budgets) ask for the fast CPU compile settings
    before JAX starts; a user's own optimisation level wins, and other commands keep XLA's
    defaults."""
    from ml_adv import devices

    commands = cli.COMMANDS.items()
    short = {n for n, m in commands if getattr(importlib.import_module(m), "SHORT_RUN", False)}
    assert short == {"quickstart", "workflow"}
    monkeypatch.setattr(devices, "_GPU_DEVICE_FILES", ())
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert devices.fast_cpu_compiles()
    assert os.environ["XLA_FLAGS"].endswith(devices.FAST_COMPILE_FLAGS)
    assert "device_count=2" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert not devices.fast_cpu_compiles()
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=3"


# Each command maps its options onto a library settings dataclass and makes one call into the
# capability's workflow module; the options' defaults are the library's.
# (module, settings class, the settings a command passes besides the same-named options)
WORKFLOW_SETTINGS = {
    "ensemble": ("ml_adv.ensembles.workflow", "EnsembleRunSettings", lambda a: {}),
    "adapt": ("ml_adv.domain_adaptation.workflow", "AdaptationRunSettings", lambda a: {}),
    "active-learn": ("ml_adv.active_learning.workflow", "ActiveLearningRunSettings", lambda a: {}),
    "hpo": (
        "ml_adv.hpo.workflow",
        "SearchRunSettings",
        lambda a: {"architectures": a.arch, "sizes": a.size, "pruner": None},
    ),
    "workflow": ("ml_adv.trainer.workflow", "WorkflowSettings", lambda a: {}),
}


@pytest.mark.parametrize("command", list(WORKFLOW_SETTINGS))
def test_a_command_s_defaults_are_its_library_settings_defaults(command):
    module, name, given = WORKFLOW_SETTINGS[command]
    cls = getattr(importlib.import_module(module), name)
    args = cli.build_parser([command]).parse_args([command])
    assert common.settings_for(cls, args, **given(args)) == cls()


def test_settings_for_maps_the_shared_options_onto_library_names():
    from ml_adv.ensembles.workflow import EnsembleRunSettings

    argv = ["ensemble", "--lr", "0.01", "--no-download", "--members", "3", "--no-calibration"]
    args = cli.build_parser(argv).parse_args(argv)
    settings = common.settings_for(EnsembleRunSettings, args, calibrate=not args.no_calibration)
    assert (settings.learning_rate, settings.download, settings.members) == (0.01, False, 3)
    assert settings.calibrate is False


def test_workflows_check_their_settings_before_loading_or_writing(tmp_path, monkeypatch):
    """The prepare_* functions fail on a bad name first, so a command deletes nothing."""
    from ml_adv.active_learning.workflow import (
        ActiveLearningRunSettings,
        prepare_active_learning_run,
    )
    from ml_adv.domain_adaptation.workflow import AdaptationRunSettings, prepare_adaptation_run
    from ml_adv.ensembles.workflow import EnsembleRunSettings, prepare_ensemble_run
    from ml_adv.errors import ConfigError
    from ml_adv.hpo.workflow import SearchRunSettings

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="combination_method"):
        prepare_ensemble_run(EnsembleRunSettings(method="median"))
    with pytest.raises(ConfigError, match="adaptation_method"):
        prepare_adaptation_run(AdaptationRunSettings(method="magic"))
    with pytest.raises(ConfigError, match="sampling_strategy"):
        prepare_active_learning_run(ActiveLearningRunSettings(strategies=("entropi",)))
    assert list(tmp_path.iterdir()) == []
    pbt = SearchRunSettings(method="pbt", ready=3, grid_points=5)
    assert pbt.method_options() == {"ready": 3}
    assert SearchRunSettings(method="grid_search").method_options() == {"grid_points": 3}
