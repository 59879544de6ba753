"""Honest timing: warm-up, runs that alternate between the contenders, medians and spreads.

Alternating (A B, B A, A B, ...) puts slow phases of a shared machine on both sides of a ratio,
and the order flips every round so neither contender always runs on a warmer cache. A ratio is the
median of the per-round ratios, with their interquartile range as its spread.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from steerflow.errors import ConfigError


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not its launch."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one contender, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return _quartiles(list(self.samples))[1]

    @property
    def iqr(self) -> float:
        q1, _, q3 = _quartiles(list(self.samples))
        return q3 - q1

    def as_dict(self, scale: float = 1e3, unit: str = "ms") -> dict:
        return {f"median_{unit}": self.median * scale, f"iqr_{unit}": self.iqr * scale,
                "reps": len(self.samples)}


@dataclass(frozen=True)
class Ratio:
    """Median and interquartile range of per-round ratios ``a_i / b_i``."""

    median: float
    q1: float
    q3: float

    def as_dict(self) -> dict:
        return {"median": self.median, "q1": self.q1, "q3": self.q3}


def paired_ratio(a: Timing, b: Timing, invert: bool = False) -> Ratio:
    """Per-round ratios ``a_i / b_i`` (``b_i / a_i`` when ``invert``, e.g. for throughputs)."""
    if len(a.samples) != len(b.samples):
        raise ConfigError("paired ratios need the same number of rounds on both sides")
    ratios = [(y / x) if invert else (x / y) for x, y in zip(a.samples, b.samples)]
    q1, q2, q3 = _quartiles(ratios)
    return Ratio(median=q2, q1=q1, q3=q3)


#: ``wall`` is elapsed time; ``cpu`` is this process's CPU time (all threads, user + system),
#: which on a machine shared with other jobs does not count the time spent waiting for a core
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_alternating(fns: Mapping[str, Callable[[], object]], reps: int, warmup: int = 1,
                     device: str = "cpu", clock: str = "wall") -> dict[str, Timing]:
    """Time each callable ``reps`` times, interleaved round by round, after ``warmup`` calls each.

    Round ``i`` runs the callables in order, round ``i + 1`` in reverse order. Each sample is one
    call, synchronised on GPU before and after, on the ``clock`` named in :data:`CLOCKS`
    (``cpu`` only on CPU devices: GPU work is not process CPU time).
    """
    if reps < 1 or warmup < 0:
        raise ConfigError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    if clock == "cpu" and not device.startswith("cpu"):
        raise ConfigError("the cpu clock measures CPU work only; use the wall clock on a GPU")
    now = CLOCKS[clock]
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            synchronize(device)
            start = now()
            fns[name]()
            synchronize(device)
            samples[name].append(now() - start)
    return {name: Timing(tuple(s)) for name, s in samples.items()}
