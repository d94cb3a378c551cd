"""The ``ml-adv`` command line: ``main`` (the console script) and one module per command."""

from ml_adv.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
