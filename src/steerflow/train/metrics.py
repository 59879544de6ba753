"""Training metrics: the ``metrics.jsonl`` log, gradient norms per layer, and gradient events.

Every line of ``metrics.jsonl`` is one JSON object with a ``type`` (``train``, ``eval`` or
``final``) and the ``step`` it belongs to (the number of optimizer steps completed). On
``--resume`` the file is cut back to the checkpoint's step, so a resumed run's log equals an
uninterrupted one. A value JSON cannot hold (a NaN loss, an infinite gradient norm) is written as
``null`` (:func:`steerflow.io.json_safe`) and reads back as None.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

from steerflow.errors import CheckpointError
from steerflow.io import json_safe
from steerflow.train.config import EXPLODE_MIN_HISTORY

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` and flushes it at once (NaN and
    ±inf as ``null``).

    A disabled writer (ranks other than 0) accepts records and writes nothing.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._fh = None
        if enabled:
            with self._failures():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        with self._failures():
            self._fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
            self._fh.flush()

    @contextlib.contextmanager
    def _failures(self):
        """An OSError (a full disk) becomes a CheckpointError naming the log and the cause."""
        try:
            yield
        except OSError as exc:
            raise CheckpointError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with self._failures():
                fh.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except CheckpointError:
            if exc_type is None:  # else the error already in flight is the one to report
                raise


def read_metrics(path: Path, kind: Optional[str] = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (only those of type ``kind`` when given).

    A torn last line (the process was killed mid-write) is ignored.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (kind is None or record.get("type") == kind):
            records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> int:
    """Keep only the records with ``step <= step`` (atomically); return how many were dropped."""
    from steerflow.io import atomic_write_text

    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if record.get("step", 0) <= step and record.get("type") != "final":
            kept.append(line)
        else:
            dropped += 1
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


# ---------------------------------------------------------------------------- gradient norms
def layer_of(name: str, block_layers: list[int]) -> str:
    """The layer group of parameter ``name``: ``embed``, ``block_<layer>``, ``ode`` or ``head``."""
    parts = name.split(".")
    if parts[0] in ("wte", "wpe"):
        return "embed"
    if parts[0] == "blocks":
        return f"block_{block_layers[int(parts[1])]}"
    if parts[0] == "ode":
        return "ode"
    return "head"  # ln_f and lm_head


@dataclass
class GradNorms:
    """Gradient norms of one step, before clipping (2-norms over all entries)."""

    total: float
    ode: Optional[float]
    per_layer: dict[str, float]


def grad_norms(model: nn.Module) -> GradNorms:
    """Total, ODE-block and per-layer gradient norms: ‖g‖ = sqrt(Σ_layers ‖g_layer‖²)."""
    block_layers = getattr(model, "block_layers", [])
    squares: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        sq = torch.linalg.vector_norm(p.grad.detach().float()) ** 2
        group = layer_of(name, block_layers)
        squares[group] = squares[group] + sq if group in squares else sq
    if not squares:
        return GradNorms(0.0, None, {})
    per_layer = {k: math.sqrt(float(v)) for k, v in squares.items()}
    total = math.sqrt(float(torch.stack(list(squares.values())).sum()))
    has_ode = getattr(model, "ode", None) is not None
    return GradNorms(total, per_layer.get("ode", 0.0) if has_ode else None, per_layer)


# ---------------------------------------------------------------------------- gradient events
@dataclass
class GradEvent:
    vanishing: bool
    exploding: bool
    reason: str = ""


class GradientMonitor:
    """Counts vanishing and exploding gradient steps (thresholds in :class:`TrainConfig`).

    * vanishing: ``total < floor`` or ``ode < floor`` (when the model has an ODE block);
    * exploding: ``total`` non-finite, or ``total > factor · median(last window finite totals)``
      once at least ``min(window, EXPLODE_MIN_HISTORY)`` totals are known.
    """

    def __init__(self, floor: float, factor: float, window: int) -> None:
        self.floor, self.factor, self.window = floor, factor, window
        self.history: deque[float] = deque(maxlen=window)
        self.vanishing_steps = 0
        self.exploding_steps = 0

    def observe(self, total: float, ode: Optional[float] = None) -> GradEvent:
        """Classify one step's norms, update the counters and the running history."""
        event = GradEvent(False, False)
        if not math.isfinite(total) or (ode is not None and not math.isfinite(ode)):
            event = GradEvent(False, True, "non-finite gradient norm")
        else:
            median = self.running_median()
            if median is not None and total > self.factor * median:
                event = GradEvent(False, True, f"grad norm {total:.4g} > {self.factor:g} × "
                                               f"running median {median:.4g}")
            elif total < self.floor or (ode is not None and ode < self.floor):
                which = "total" if total < self.floor else "ODE-block"
                event = GradEvent(True, False, f"{which} grad norm below {self.floor:g}")
            self.history.append(total)
        self.vanishing_steps += event.vanishing
        self.exploding_steps += event.exploding
        return event

    def running_median(self) -> Optional[float]:
        if len(self.history) < min(self.window, EXPLODE_MIN_HISTORY):
            return None
        return statistics.median(self.history)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats round-trip exactly through JSON)."""
        return {"history": list(self.history), "vanishing_steps": self.vanishing_steps,
                "exploding_steps": self.exploding_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((float(v) for v in state["history"]), maxlen=self.window)
        self.vanishing_steps = int(state["vanishing_steps"])
        self.exploding_steps = int(state["exploding_steps"])


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the finite values; NaN when there are none."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite)

