"""What every ``ml-adv`` command shares: arguments with one set of defaults, the run folder,
the results table, help formatting and argument types.

A command module is ``add_arguments(parser)`` and ``run(args) -> int``. It declares the
options that are its own (``add_options`` reads a table of them) and takes the shared ones
from ``add_model_arguments`` and ``add_run_arguments``. ``run`` maps the parsed options onto
its capability's settings dataclass (``settings_for``), lets the library check them and load
the data (``prepare_*``: nothing written, nothing compiled), opens its run folder once with
``open_run`` (validated, cleaned with ``--fresh``, ``config.json`` written), makes one call
into the library with that ``RunDirectory`` (``ml_adv.<capability>.workflow``) and ends with
``print_table``. The workflow itself lives in the library, callable from a notebook.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

# The shared options' defaults, one place for every command. A command overrides one only
# where its meaning differs (``--epochs`` of a search is per trial) and says so in its help.
DEFAULTS: dict[str, Any] = {
    "arch": "cnn",
    "size": "small",
    "data": "digits",
    "epochs": 20,
    "batch_size": 32,
    "lr": 1e-3,
    "seed": 0,
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (not for on/off flags) and keeps the description's line
    breaks.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0:  # store_true / store_false flags: "default: False" says nothing
            return action.help or ""
        return super()._get_help_string(action)


def plain(text: str | None) -> str:
    """A docstring as plain terminal text: reStructuredText markup (``x``, :func:`x`) removed."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text or "")
    return text.replace("``", "").strip()


def summary(text: str | None) -> str:
    """First line of a docstring, as plain text."""
    return plain(text).splitlines()[0].rstrip(".") if plain(text) else ""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def comma_names(text: str) -> tuple[str, ...]:
    """argparse type: one or more comma-separated names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected one or more comma-separated names, got {text!r}"
        )
    return names


def choices_help(what: str, names: list[str]) -> str:
    """Help text listing the valid names of a registry."""
    return f"{what}; one of: {', '.join(names)}"


def add_options(group, rows, defaults: dict[str, Any]) -> None:
    """Declare options from a table, each stated once: ``(flag, field, read, help)`` rows.

    ``flag`` may end with its metavar (``"--warmup-fraction FRACTION"``); ``field`` names the
    option's default in ``defaults`` (None: no default); ``read`` is an argparse type,
    ``bool`` for an on/off flag, or the list of valid names (then listed in the help).
    """
    for flag, field, read, help_text in rows:
        name, *metavar = flag.split()
        if read is bool:
            group.add_argument(name, action="store_true", help=help_text)
            continue
        options: dict[str, Any] = {"metavar": metavar[0]} if metavar else {}
        if isinstance(read, (list, tuple)):
            options.update(choices=list(read), help=choices_help(help_text, list(read)))
        else:
            options.update(type=read, help=help_text)
        group.add_argument(name, default=None if field is None else defaults[field], **options)


def dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` under: ``"--grad-accum N"`` -> ``grad_accum``."""
    return flag.split()[0].lstrip("-").replace("-", "_")


# ---------------------------------------------------------- run directories
def add_run_arguments(
    parser: argparse.ArgumentParser, default_run_dir: str | None, default_hint: str
) -> None:
    """``--run-dir`` and ``--fresh``, shared by every command that writes a run directory."""
    shown = "%(default)s" if default_run_dir else default_hint + "%(default).0s"
    parser.add_argument(
        "--run-dir",
        default=default_run_dir,
        metavar="PATH",
        help=f"run directory (default: {shown}); re-running with the same one resumes",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over: delete what ml_adv wrote in the run directory (checkpoints, metrics, "
        "report, plots, model) and nothing else; refuses a folder ml_adv did not create",
    )


def clean_if_fresh(run_dir: str | Path, fresh: bool) -> None:
    """With ``--fresh``, remove the previous run's artifacts (only ml_adv's own files) and
    say so.
    """
    from ml_adv.rundir import RunDirectory

    if fresh:
        removed = RunDirectory.clean(run_dir)
        if removed:
            print(
                f"ml-adv: --fresh removed {len(removed)} artifact(s) of the previous run in "
                f"{run_dir}/",
                flush=True,
            )


def fresh_run_directory(run_dir: str | Path, fresh: bool):
    """The command's ``RunDirectory``, cleaned first when ``fresh`` (only ml_adv's own files)."""
    from ml_adv.rundir import RunDirectory

    clean_if_fresh(run_dir, fresh)
    return RunDirectory(run_dir)


def names_among(valid: list[str], several: bool):
    """argparse type: one of ``valid`` (or, with ``several``, a comma-separated list of them)."""

    def parse(text: str):
        names = comma_names(text) if several else (text,)
        wrong = [n for n in names if n not in valid]
        if wrong:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {', '.join(map(repr, wrong))} (choose from {', '.join(valid)})"
            )
        return names if several else text

    parse.__name__ = "name"
    return parse


def non_negative_int(text: str) -> int:
    """argparse type: an integer in [0, 2**63) (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer below 2**63, got {text!r}"
        )
    return value


def fraction(low_open: bool):
    """argparse type: a number in ``(0, 1)`` (``low_open``) or ``[0, 1)``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((0 < value < 1) if low_open else (0 <= value < 1)):
            raise argparse.ArgumentTypeError(
                f"expected a number in {'(0, 1)' if low_open else '[0, 1)'}, got {text!r}"
            )
        return value

    parse.__name__ = "fraction"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_model_arguments(
    parser: argparse.ArgumentParser, *, several: bool = False, **defaults: Any
) -> None:
    """``--arch --size --data --no-download --epochs --batch-size --lr --seed`` with ``DEFAULTS``.

    ``defaults`` overrides a default for this command (e.g. the quickstart's 40 epochs);
    ``several``: ``--arch``/``--size`` take comma-separated lists (a search chooses among them).
    """
    from ml_adv.data.catalog import available_datasets
    from ml_adv.models import ARCHITECTURES

    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"defaults: unknown shared options {sorted(unknown)}")
    d = {**DEFAULTS, **defaults}
    sizes = sorted({s for name in ARCHITECTURES.names() for s in ARCHITECTURES.get(name).sizes})
    group = parser.add_argument_group("model and data")
    many = " (or a comma-separated list to choose among)" if several else ""
    arch, size = ((d[k],) if several and isinstance(d[k], str) else d[k] for k in ("arch", "size"))
    group.add_argument(
        "--arch",
        type=names_among(ARCHITECTURES.names(), several),
        default=arch,
        metavar="NAMES" if several else "NAME",
        help=choices_help("architecture" + many, ARCHITECTURES.names()),
    )
    group.add_argument(
        "--size",
        type=names_among(sizes, several),
        default=size,
        metavar="NAMES" if several else "NAME",
        help=choices_help("model size variant" + many, sizes),
    )
    group.add_argument(
        "--data",
        default=d["data"],
        metavar="NAME",
        help=choices_help(
            "dataset: a built-in name, a TFDS name (cifar10 ...), or (ml-adv train) "
            "your own .npz / .csv file; built-ins",
            available_datasets(),
        ),
    )
    group.add_argument(
        "--no-download",
        action="store_true",
        help="never download a missing dataset (MNIST files, TFDS preparation): fail instead",
    )
    train = parser.add_argument_group("training")
    train.add_argument(
        "--epochs", type=positive_int, default=d["epochs"], help="maximum passes over the data"
    )
    train.add_argument(
        "--batch-size", type=positive_int, default=d["batch_size"], help="examples per step"
    )
    train.add_argument("--lr", type=positive_float, default=d["lr"], help="peak learning rate")
    train.add_argument(
        "--seed",
        type=non_negative_int,
        default=d["seed"],
        help="seeds initialisation, dropout, shuffling and every random choice of the command",
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON-ready settings (what config.json and report.json record)."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(args).items()
        if k not in ("fresh", "command") and not k.startswith("_")
    }


def settings_for(cls: type, args: argparse.Namespace, **given: Any):
    """The library's settings dataclass ``cls`` from parsed ``args``: each field named like an
    option, the shared options under their library names (``learning_rate`` from ``--lr``,
    ``download`` from ``--no-download``), then ``given``."""
    options = dict(vars(args))
    if "lr" in options:
        options["learning_rate"] = options["lr"]
    if "no_download" in options:
        options["download"] = not options["no_download"]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**options, **given}.items() if k in fields})


def progress(line: str) -> None:
    """One progress line of a running command, indented under its header line."""
    print(f"  {line}", flush=True)


def open_run(args: argparse.Namespace, default: str, **record: Any):
    """The command's one ``RunDirectory``: ``--run-dir`` or ``runs/<default>``, checked, cleaned
    with ``--fresh`` (only ml_adv's own files), with ``config.json`` holding the command, its
    settings and ``record``. Call it after every other check, so a mistake deletes nothing."""
    from ml_adv.rundir import check_location

    path = Path(args.run_dir or Path("runs") / default)
    check_location(path, "--run-dir")
    rd = fresh_run_directory(path, args.fresh)
    rd.write_config({"command": args.command, **settings(args), **record})
    return rd


def print_table(rows: list[tuple[Any, ...]], header: tuple[str, ...] = ("metric", "value")) -> None:
    """A markdown table on stdout: the last thing every command prints."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("\n| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print()


def fmt(value: Any, pattern: str = "{:.4f}") -> str:
    """A number for a table cell; ``-`` for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)
