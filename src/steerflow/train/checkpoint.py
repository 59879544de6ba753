"""Resumable training checkpoints under ``OUT/checkpoints/step_XXXXXX/``.

A checkpoint folder holds

* ``model.safetensors`` — the weights (read back through safetensors only);
* ``state.pt`` — optimizer, scheduler and RNG states (read back with
  ``torch.load(weights_only=True)``, which refuses any pickled object that is not plain data);
* ``trainer.json`` — the step, gradient-event counters and other loop state.

It is written into a hidden temporary folder and renamed into place, so a folder named
``step_*`` is always complete: a crash or ``kill -9`` mid-write leaves the previous checkpoint as
the newest valid one. Every file is written through :mod:`steerflow.io`, so a failed write (a
full disk) is a :class:`~steerflow.errors.CheckpointError` naming the file and the cause. Only
the last ``keep`` checkpoints are kept. Weights or optimizer state with NaN/inf are never written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from steerflow.errors import CheckpointError
from steerflow.io import atomic_torch_save, atomic_write_bytes, write_json

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
TRAINER_FILE = "trainer.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"step_(\d{6,})")
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


@dataclass(frozen=True)
class CheckpointRef:
    step: int
    path: Path


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: Path) -> list[CheckpointRef]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    refs = []
    for child in root.iterdir():
        match = _STEP_DIR.fullmatch(child.name)
        if match and child.is_dir() and (child / TRAINER_FILE).is_file():
            refs.append(CheckpointRef(int(match.group(1)), child))
    return sorted(refs, key=lambda r: r.step)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporary folders left by a save that was killed before its rename."""
    root = checkpoint_root(run_dir)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


# ---------------------------------------------------------------------------- saving
def check_finite(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Raise CheckpointError naming the first weight or optimizer state that holds NaN/inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"refusing to checkpoint non-finite weights ({name})")
    if optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if (isinstance(value, torch.Tensor) and value.is_floating_point()
                        and not bool(torch.isfinite(value).all())):
                    raise CheckpointError(f"refusing to checkpoint non-finite optimizer state ({key})")


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device); the loop uses no other global RNG."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, trainer: dict[str, Any], keep: int = 3) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically and keep only the last ``keep`` ones.

    Raises:
        CheckpointError: the weights or optimizer state are non-finite, or the folder cannot be
            written (the message names the path and the cause); the previous checkpoints stay.
    """
    check_finite(model, optimizer)
    root = checkpoint_root(run_dir)
    final = root / f"step_{step:06d}"
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_model(tmp / MODEL_FILE, model)
        atomic_torch_save(tmp / STATE_FILE,
                          {"optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict() if scheduler is not None else None,
                           "rng": rng_state()})
        write_json(tmp / TRAINER_FILE, {"format_version": FORMAT_VERSION, "step": step, **trainer})
        _commit(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(run_dir, keep)
    return final


def _write_model(path: Path, model: nn.Module) -> None:
    """``model``'s weights as safetensors, serialised in memory and written atomically (so a full
    disk is an OSError with its cause, not the serialiser's own I/O error).

    Tied weights are stored once, under the first of their names in sorted order, with the others
    recorded in the metadata as aliases (what ``safetensors.torch.save_model`` writes).
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in sorted(model.state_dict().items()):
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.contiguous()
    atomic_write_bytes(path, save(tensors, metadata=aliases or None))


def _commit(tmp: Path, final: Path) -> None:
    """Rename the finished temporary folder onto ``final`` (replacing an older one of that step)."""
    old = None
    if final.exists():
        old = final.with_name(f"{_OLD_PREFIX}{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or a folder entry to disk (folders: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; return the deleted folders."""
    refs = list_checkpoints(run_dir)
    doomed = [r.path for r in refs[:-keep]] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# ---------------------------------------------------------------------------- loading
def read_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer.json`` of a checkpoint folder, checked for its format version."""
    file = Path(path) / TRAINER_FILE
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing — not a training checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file}: unknown checkpoint format "
                              f"{record.get('format_version') if isinstance(record, dict) else None!r}"
                              f", expected {FORMAT_VERSION}")
    if not isinstance(record.get("step"), int):
        raise CheckpointError(f"{file}: no integer 'step'")
    return record


def load_model_weights(path: Path, model: nn.Module, device: Optional[str] = None) -> None:
    """Load ``model.safetensors`` of a checkpoint folder into ``model`` (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    device = device or str(next(model.parameters()).device)
    try:
        load_model(model, str(file), strict=True, device=device)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file}: unreadable or truncated safetensors file ({exc})") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: weights do not match the model ({first})") from None


def load_training_state(path: Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder, loaded with ``weights_only=True`` (no code runs)."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe content, EOFError/RuntimeError if torn
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: refused or unreadable ({type(exc).__name__}: "
                              f"{reason[:200]})") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise CheckpointError(f"{file}: expected optimizer, scheduler and rng states")
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Any = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from a checkpoint folder; return trainer.json.

    ``trainer.json`` and ``state.pt`` are read and checked before the weights are loaded, so a
    checkpoint with a damaged or unsafe state file leaves the model as it was.
    """
    trainer = read_trainer_state(path)
    state = load_training_state(path) if optimizer is not None or restore_rng else None
    load_model_weights(path, model)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{Path(path) / STATE_FILE}: optimizer state does not match "
                                  f"the trainable parameters ({exc})") from None
    if scheduler is not None and state is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state is not None:
        set_rng_state(state["rng"])
    return trainer
