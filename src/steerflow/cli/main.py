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


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``steerflow`` parser; with ``only`` (a subcommand's name) that subcommand alone, so a
    run of one command imports one command module instead of all of them."""
    from steerflow import __version__

    parser = _Parser(
        prog="steerflow",
        description="Continuous-depth transformers steered by a control signal u: train, steer, "
                    "evaluate and analyse them as dynamical systems.",
    )
    parser.add_argument("--version", action="version", version=f"steerflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS:
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `steerflow generate ...` builds generate's parser only; `--help`, `--version` and unknown
    # commands build them all (the command list, argparse's "invalid choice" message)
    command = argv[0] if argv and argv[0] in dict(COMMANDS) else None
    parser = build_parser(only=command)
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
