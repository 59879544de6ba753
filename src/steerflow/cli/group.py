"""Subcommand groups such as ``steerflow eval <kind>``: a parser whose members are modules."""

from __future__ import annotations

import importlib
from typing import Sequence


def add_group(sub, name: str, help: str, members: Sequence[tuple[str, str]]) -> None:
    """Register ``steerflow NAME MEMBER ...``; each member module has ``add_parser(subparsers)``."""
    parser = sub.add_parser(name, help=help, description=help)
    members_sub = parser.add_subparsers(dest=f"{name}_command", metavar="KIND", required=True,
                                        parser_class=type(parser))
    for _, module in members:
        importlib.import_module(module).add_parser(members_sub)
