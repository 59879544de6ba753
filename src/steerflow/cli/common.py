"""Helpers shared by subcommands: printing JSON and tables, loading checkpoints."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from steerflow.errors import InputError


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (non-finite floats become null, which JSON allows)."""
    print(json.dumps(json_safe(obj), indent=2))


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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


def load_model(path: str | Path, device: str = "cpu"):
    """Load a checkpoint folder for evaluation (errors are one-line CheckpointErrors)."""
    from steerflow.model.gpt import SteerFlowGPT

    model = SteerFlowGPT.from_pretrained(path, map_location=device)
    return model.to(device).eval()


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
