"""What every ``ml-adv`` command shares: help formatting, argument types, the run folder.

A command module is ``add_arguments(parser)`` and ``run(args) -> int``; the parts all of them
need live here, with one set of defaults.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (not for on/off flags) and keeps the description's line breaks."""

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
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated names, got {text!r}")
    return names


def choices_help(what: str, names: list[str]) -> str:
    """Help text listing the valid names of a registry."""
    return f"{what}; one of: {', '.join(names)}"


# ---------------------------------------------------------- run directories
def add_run_arguments(parser: argparse.ArgumentParser, default_run_dir: str | None, default_hint: str) -> None:
    """``--run-dir`` and ``--fresh``, shared by every command that writes a run directory."""
    shown = "%(default)s" if default_run_dir else default_hint + "%(default).0s"
    parser.add_argument("--run-dir", default=default_run_dir, metavar="PATH",
                        help=f"run directory (default: {shown}); re-running with the same one resumes")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete what ml_adv wrote in the run directory (checkpoints, metrics, "
                             "report, plots, model) and nothing else; refuses a folder ml_adv did not create")


def clean_if_fresh(run_dir: str | Path, fresh: bool) -> None:
    """With ``--fresh``, remove the previous run's artifacts (only ml_adv's own files) and say so."""
    from ml_adv.rundir import RunDirectory

    if fresh:
        removed = RunDirectory.clean(run_dir)
        if removed:
            print(f"ml-adv: --fresh removed {len(removed)} artifact(s) of the previous run in {run_dir}/", flush=True)


def fresh_run_directory(run_dir: str | Path, fresh: bool):
    """The command's ``RunDirectory``, cleaned first when ``fresh`` (only ml_adv's own files)."""
    from ml_adv.rundir import RunDirectory

    clean_if_fresh(run_dir, fresh)
    return RunDirectory(run_dir)
