"""The ``ml-adv`` console script: a thin entry point over the library.

Each subcommand is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``,
registered by one line in ``COMMANDS``. Only the chosen command's module is asked for
its arguments (the others are imported for their one-line summary only), so
``ml-adv --help`` stays fast and one broken command cannot take the others down.

``main`` turns every ``ml_adv.errors`` exception into one clean line on stderr and exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from ml_adv.cli.common import HelpFormatter, plain, summary

# name -> module with add_arguments(parser) and run(args) -> int. Add a command with one line.
COMMANDS: dict[str, str] = {
    "quickstart": "ml_adv.cli.quickstart",
    "train": "ml_adv.cli.train",
    "hpo": "ml_adv.cli.hpo",
    "active-learn": "ml_adv.cli.active_learn",
    "ensemble": "ml_adv.cli.ensemble",
    "adapt": "ml_adv.cli.adapt",
    "workflow": "ml_adv.cli.workflow",
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
ml_adv on the command line: train, resume and inspect models on real data.

Runs write runs/<name>/ (config.json, metrics.jsonl, checkpoints/, plots/, report.json,
model/). Re-running the same command after an interruption resumes from the last
checkpoint; --fresh deletes only what ml_adv wrote there and starts over.
Run `ml-adv COMMAND --help` for a command's options, defaults and valid names."""


# ---------------------------------------------------------- parser and main
def _chosen(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; only the command named in ``argv`` gets its arguments (all when None)."""
    parser = argparse.ArgumentParser(
        prog="ml-adv", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        title="commands",
        help="one of: " + ", ".join(COMMANDS),
    )
    full = argv is None
    chosen = None if full else _chosen(argv)
    for name, module_path in COMMANDS.items():
        if not (full or name == chosen):
            # Other commands are listed from their source's docstring, without importing them.
            sub.add_parser(name, help=summary(_source_docstring(module_path)))
            continue
        module = importlib.import_module(module_path)
        command = sub.add_parser(
            name,
            help=summary(module.__doc__),
            description=plain(module.__doc__),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run, _short=getattr(module, "SHORT_RUN", False))
    return parser


def _source_docstring(module_path: str) -> str:
    """The module docstring read from its file (importing a package would pull in JAX)."""
    import ast

    parts = module_path.split(".")
    base = (
        Path(__file__).resolve().parents[1].joinpath(*parts[1:]) if parts[0] == "ml_adv" else None
    )
    for candidate in (base.with_suffix(".py"), base / "__init__.py") if base else ():
        if candidate.is_file():
            try:
                return ast.get_docstring(ast.parse(candidate.read_text())) or ""
            except (SyntaxError, OSError, ValueError):
                return "(unavailable: its source does not parse)"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ml-adv`` script; returns the exit status."""
    from ml_adv.errors import MlAdvError

    own_process = argv is None  # the ml-adv script, not main([...]) inside a user's program
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    run: Any = args._run
    try:
        _join_processes(args)
        if own_process and getattr(args, "_short", False):
            _compile_for_a_short_run()
        _split_cpu_into_cores()
        return int(run(args))
    except MlAdvError as exc:
        print(f"ml-adv {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"\nml-adv {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _join_processes(args: Any) -> None:
    """``--coordinator/--num-processes/--process-id`` (``ml-adv train``): all three or none."""
    given = {
        flag: getattr(args, name, None)
        for flag, name in (
            ("--coordinator", "coordinator"),
            ("--num-processes", "num_processes"),
            ("--process-id", "process_id"),
        )
    }
    if all(v is None for v in given.values()):
        return
    from ml_adv.devices import join_processes
    from ml_adv.errors import ConfigError

    missing = [flag for flag, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: expected together with the other multi-process flags "
            f"(--coordinator, --num-processes, --process-id), got only "
            f"{', '.join(f for f, v in given.items() if v is not None)}"
        )
    join_processes(args.coordinator, args.num_processes, args.process_id)


def _compile_for_a_short_run() -> None:
    """Commands of a fixed, short budget (``SHORT_RUN = True``: quickstart, workflow) spend
    much of a CPU run compiling: ``ml_adv.devices.fast_cpu_compiles`` halves that at nearly
    the same step speed. An optimisation level set in ``XLA_FLAGS`` wins. Only in the script's
    own process: inside a user's program JAX may already run, and the flags would only leak
    into its subprocesses."""
    from ml_adv.devices import fast_cpu_compiles

    fast_cpu_compiles()


def _split_cpu_into_cores() -> None:
    """One JAX device per core, so that stacked members (ensembles, populations, CV folds)
    run concurrently (``ml_adv.use_cpu_cores``; ``ML_ADV_CPU_DEVICES=1`` opts out). When
    ``main`` is called in a process where JAX already runs, its devices stay as they are."""
    from ml_adv.devices import CPU_DEVICES_ENV, use_cpu_cores

    use_cpu_cores(os.environ.get(CPU_DEVICES_ENV) or "auto", strict=False)


# An error line stays readable: a wrapped library message (orbax, tensorstore) can run to kilobytes.
MAX_ERROR_CHARS = 1000


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + f" ... ({len(text) - MAX_ERROR_CHARS} more characters)"
    return text


if __name__ == "__main__":
    sys.exit(main())
