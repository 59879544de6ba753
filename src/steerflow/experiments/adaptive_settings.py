"""Settings of the adaptive-depth study (:mod:`steerflow.experiments.adaptive_depth`).

No torch here: the command line reads its flag defaults from this dataclass when it builds its
parser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from steerflow.analysis.settings import REFERENCE_SOLVER, require_positive
from steerflow.config import SolverSpec
from steerflow.errors import InputError


@dataclass(frozen=True)
class AdaptiveDepthSettings:
    """What the adaptive-depth study measures (the issue's defaults: a few minutes on ``small``)."""

    #: rtol of each per-token solve (atol = rtol / 10, as ``per-token:RTOL`` parses)
    tolerances: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1)
    #: the per-token solver's finest grid; None: the checkpoint's training solver's steps
    grid: Optional[int] = None
    #: uniform Euler grids measured beside the adaptive points: does a token-by-token choice beat
    #: a coarser grid for every token?
    coarse_steps: tuple[int, ...] = (1, 2)
    #: validation windows of WikiText-2 (valid split): batches × batch_size
    batches: int = 16
    batch_size: int = 16
    #: open-ended steering: neutral WikiText-2 prompts × samples × new tokens by nucleus sampling
    #: (top-p 0.9), judged by the SST-2 classifier
    prompts: int = 50
    samples: int = 2
    new_tokens: int = 20
    #: u values of the depth-by-u breakdown on the steered model; the non-zero ones are the
    #: steering settings
    controls: tuple[float, ...] = (-1.0, 0.0, 1.0)
    #: the prompts' choice and the sampling
    seed: int = 0
    #: the solver invariance reference (dopri5 near float32's resolution)
    reference: SolverSpec = REFERENCE_SOLVER
    #: how finely depth is broken down by position in the window and by token frequency
    position_bins: int = 8
    frequency_bins: int = 4
    #: the control axis u is placed on
    axis: int = 0

    def __post_init__(self) -> None:
        if not self.tolerances or any(not (t > 0 and math.isfinite(t)) for t in self.tolerances):
            raise InputError(f"tolerances must be positive finite numbers, got {self.tolerances}")
        if self.grid is not None and self.grid < 1:
            raise InputError(f"grid must be >= 1 step, got {self.grid}")
        if any(n < 1 for n in self.coarse_steps):
            raise InputError(f"coarse step counts must be >= 1, got {self.coarse_steps}")
        require_positive(self, ("batches", "batch_size", "prompts", "samples", "new_tokens",
                                "position_bins", "frequency_bins"))
        if not self.controls or any(not math.isfinite(u) for u in self.controls):
            raise InputError(f"controls must be a non-empty list of finite numbers, got "
                             f"{self.controls}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")

    @property
    def steering_us(self) -> tuple[float, ...]:
        """The controls the steering rates are measured at (the non-zero ones)."""
        return tuple(u for u in self.controls if u != 0)

    def per_token(self, tolerance: float, grid: int) -> SolverSpec:
        """The per-token solver at ``tolerance`` on a ``grid``-step grid."""
        return SolverSpec.parse(f"per-token:{tolerance!r}", steps=grid)
