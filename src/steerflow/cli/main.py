"""The ``steerflow`` command: one subcommand per module in :data:`COMMANDS`.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its parser with a
one-line ``help`` and ``set_defaults(func=run)``) and ``run(args) -> int``. Modules import their
heavy dependencies inside ``run`` so that ``steerflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from steerflow.errors import SolverError, SteerflowError

#: (subcommand, module) in the order ``--help`` lists them
COMMANDS: list[tuple[str, str]] = [
    ("demo", "steerflow.cli.demo"),
    ("reproduce", "steerflow.cli.reproduce"),
    ("info", "steerflow.cli.info"),
    ("train", "steerflow.cli.train"),
    ("generate", "steerflow.cli.generate"),
    ("convert", "steerflow.cli.convert"),
    ("export", "steerflow.cli.export"),
    ("serve", "steerflow.cli.serve"),
    ("eval", "steerflow.cli.eval"),
    ("analyze", "steerflow.cli.analyze"),
    ("experiment", "steerflow.cli.experiment"),
    ("bench", "steerflow.cli.bench"),
]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors print one line and exit with code 2 (argparse's convention)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from steerflow import __version__

    parser = _Parser(
        prog="steerflow",
        description="Continuous-depth transformers steered by a control signal u: train, steer, "
                    "evaluate and analyse them as dynamical systems.",
    )
    parser.add_argument("--version", action="version", version=f"steerflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for _, module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("steerflow: interrupted", file=sys.stderr)
        return 130
    except SolverError as exc:
        print(f"steerflow: error: {exc}", file=sys.stderr)
        return 1
    except SteerflowError as exc:
        print(f"steerflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path that cannot be written or read (full disk, read-only, a file)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"steerflow: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # never a raw traceback, unless asked for
        if os.environ.get("STEERFLOW_DEBUG"):
            raise
        print(f"steerflow: internal error: {type(exc).__name__}: {exc} "
              f"(set STEERFLOW_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
