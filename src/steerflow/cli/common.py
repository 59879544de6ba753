"""Helpers shared by subcommands: printing JSON, argparse types, the common flags, registering a
subcommand and scoping torch's thread count."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from steerflow.errors import InputError
from steerflow.io import to_json


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (non-finite floats become null, which JSON allows)."""
    print(to_json(obj), end="")


def report_study(result: Any, table: str, written: Sequence[str], out: Any,
                 as_json: bool) -> int:
    """A study's result on stdout: its JSON object with ``--json``, else its ``table``, and the
    names of the files it ``written`` into ``out`` on stderr. Returns the exit code 0."""
    if as_json:
        print_json(result)
        return 0
    print(table)
    for name in written:
        eprint(f"wrote {out}/{name}")
    return 0


def echo_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """``--flag value ...`` for the flags ``names`` that ``args`` sets (not None): a command line
    rebuilt for the record in a results file."""
    parts: list[str] = []
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        parts += ["--" + name.replace("_", "-"),
                  *(shlex.quote(f"{v:g}" if isinstance(v, float) else str(v)) for v in values)]
    return parts


def existing_dir(path: str) -> Path:
    """argparse ``type=`` for a folder that must exist."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{path}: no such folder")
    return p


def output_folder(path: str) -> str:
    """argparse ``type=`` for an output folder: it may not exist yet (the command creates it), but
    its nearest existing ancestor must be a writable folder — checked when the flags are read,
    not after the work is done."""
    import os

    target = Path(path).expanduser()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path}: {'it' if existing == target else existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {existing} is not writable")
    return path


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr)


def positive_int(text: str) -> int:
    """argparse ``type=`` for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=`` for a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_subcommand(sub, name: str, doc: str) -> argparse.ArgumentParser:
    """Register subcommand ``name`` with its module's docstring as its words, so they are written
    once: the first paragraph after ``steerflow NAME``: is the one-line ``help`` of the command
    list, the paragraphs after it the description ``--help`` shows."""
    summary, _, description = doc.strip().partition("\n\n")
    summary = summary.split("``: ", 1)[-1].rstrip(".")
    return sub.add_parser(name, help=" ".join(summary.split()),
                          description=" ".join(description.split()) or None)


def add_data_flags(p: argparse.ArgumentParser, cache: bool = True) -> None:
    """``--data-dir`` (and ``--cache-dir``): where the real data and the token caches live."""
    p.add_argument("--data-dir", default=None,
                   help="data folder with wikitext-2/, sst2/, gpt2-tokenizer/ "
                        "(default: $STEERFLOW_DATA, else the Hugging Face Hub)")
    if cache:
        p.add_argument("--cache-dir", default=None,
                       help="token cache folder (default: $STEERFLOW_CACHE or ~/.cache/steerflow)")


def add_common_flags(p: argparse.ArgumentParser, *, out: Optional[str] = None,
                     out_default: Optional[str] = None, out_required: bool = False,
                     device: Optional[str] = "cpu", threads: bool = True,
                     json: str = "print one JSON object on stdout instead of tables",
                     quiet: bool = True) -> None:
    """The flags most subcommands share, declared once: ``--out`` (when ``out`` describes what
    goes there), ``--device`` (``device`` is its default; None leaves it out), ``--threads``,
    ``--json`` and ``--quiet``. A default of ``auto`` means CUDA when available, else CPU."""
    if out is not None:
        default_text = f" (default: {out_default})" if out_default else ""
        p.add_argument("--out", type=output_folder, default=out_default, required=out_required,
                       help=f"{out}{default_text}")
    if device is not None:
        p.add_argument("--device", default=None if device == "auto" else device,
                       help=f"torch device: cpu, cuda, cuda:N{', auto' if device == 'auto' else ''} "
                            f"(default: {device})")
    if threads:
        p.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: torch's choice; 1 is fastest for small "
                            "models on a busy machine)")
    if json:
        p.add_argument("--json", action="store_true", help=json)
    if quiet:
        p.add_argument("--quiet", action="store_true", default=None, help="no progress output")


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block, restored after (None: leave as is)."""
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
