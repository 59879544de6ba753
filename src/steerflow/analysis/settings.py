"""Settings of the solver and flow studies: what each measures, with the paper's defaults.

This module imports neither torch nor numpy, so the command line reads its flag defaults from
these dataclasses when it builds its parsers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from steerflow.config import ADAPTIVE_METHODS, SolverSpec
from steerflow.errors import InputError
from steerflow.experiments.paper import INVARIANCE_THRESHOLD

def field_defaults(settings_cls) -> dict[str, Any]:
    """``{name: default}`` for every field of the dataclass ``settings_cls`` with a plain default:
    the command line takes its flag defaults from here (``parser.set_defaults(**...)``)."""
    return {f.name: f.default for f in dataclasses.fields(settings_cls)
            if f.default is not dataclasses.MISSING}


# --------------------------------------------------------------------------- solver invariance
#: the float32 reference, in the command line's compact form: dopri5 near float32's resolution
#: (eps ≈ 1.2e-7) without stalling; atol = rtol/10
REFERENCE_FLAG = "dopri5:1e-6"
REFERENCE_SOLVER = SolverSpec.parse(REFERENCE_FLAG)
#: the float64 reference, the "truth" every sweep entry is measured against
FLOAT64_SOLVER = SolverSpec(method="dopri5", steps=None, rtol=1e-10, atol=1e-12,
                            max_nfe=100_000)


@dataclass(frozen=True)
class InvarianceSettings:
    """What the solver invariance test compares. ``test_solver=None`` means the checkpoint's
    training solver; ``threshold`` is the pass mark of every metric (paper 1: "above ~1 % the
    model would be a ResNet in disguise")."""

    controls: tuple[float, ...] = (-1.0, 0.0, 1.0)
    test_solver: Optional[SolverSpec] = None
    reference: SolverSpec = REFERENCE_SOLVER
    float64_reference: SolverSpec = FLOAT64_SOLVER
    tolerances: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    threshold: float = INVARIANCE_THRESHOLD
    axis: int = 0

    def __post_init__(self) -> None:
        if not self.controls:
            raise InputError("give at least one control value u")
        if any(not math.isfinite(u) for u in self.controls):
            raise InputError(f"control values must be finite, got {self.controls}")
        if any(not (t > 0 and math.isfinite(t)) for t in self.tolerances):
            raise InputError(f"tolerances must be positive, got {self.tolerances}")
        if any(n < 1 for n in self.steps):
            raise InputError(f"step counts must be >= 1, got {self.steps}")
        if not self.threshold > 0:
            raise InputError(f"threshold must be > 0, got {self.threshold}")


# --------------------------------------------------------------------------- solver probing
#: the solver that produces the hidden states at intermediate τ for the probes (dense output)
PROBE_SOLVER = SolverSpec(method="dopri5", steps=None, rtol=1e-5, atol=1e-6)


@dataclass(frozen=True)
class ProbeSettings:
    """What solver probing measures; the defaults follow the paper (§5.3, Figs. 3-4)."""

    us: tuple[float, ...] = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
    methods: tuple[str, ...] = ("dopri5", "adaptive_heun")
    rtol: float = 1e-3
    atol: float = 1e-4
    tolerances: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
    tolerance_us: tuple[float, ...] = (-1.0, 0.0, 1.0)
    max_examples: int = 16
    taus: tuple[float, ...] = (0.0, 1 / 6, 1 / 3, 0.5, 0.67, 5 / 6, 1.0)
    probe_solver: SolverSpec = PROBE_SOLVER
    probe_u: float = 0.0
    probe_limit: Optional[int] = None
    folds: int = 5
    seed: int = 0
    axis: int = 0

    def __post_init__(self) -> None:
        for name in ("us", "tolerance_us"):
            values = getattr(self, name)
            if not values or any(not math.isfinite(u) for u in values):
                raise InputError(f"{name} must be a non-empty list of finite numbers, got {values}")
        bad = [m for m in self.methods if m not in ADAPTIVE_METHODS]
        if not self.methods or bad:
            raise InputError(f"NFE probing needs adaptive solvers ({', '.join(ADAPTIVE_METHODS)}); "
                             f"got {list(self.methods)}")
        if any(not (t > 0 and math.isfinite(t)) for t in self.tolerances + (self.rtol, self.atol)):
            raise InputError("tolerances must be positive finite numbers")
        if self.max_examples < 1:
            raise InputError(f"max_examples must be >= 1, got {self.max_examples}")
        taus = list(self.taus)
        if len(taus) < 2 or taus[0] != 0 or taus[-1] != 1 or taus != sorted(set(taus)):
            raise InputError(f"taus must increase from 0 to 1, got {taus}")
        if self.folds < 2:
            raise InputError(f"folds must be >= 2, got {self.folds}")
        if self.probe_limit is not None and self.probe_limit < 2 * self.folds:
            raise InputError(f"probe_limit must be at least 2 × folds = {2 * self.folds}")


# --------------------------------------------------------------------------- flow analysis
#: classical order of each fixed-step method
EXPECTED_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4}
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64)


def check_methods(methods: Sequence[str], steps: Sequence[int]) -> None:
    """Known fixed-step methods and at least two distinct positive step counts, else InputError."""
    unknown = [m for m in methods if m not in EXPECTED_ORDER]
    if unknown:
        raise InputError(f"unknown fixed-step method(s) {unknown}; choose from "
                         f"{', '.join(EXPECTED_ORDER)}")
    if not steps or any(int(n) < 1 for n in steps):
        raise InputError(f"step counts must be positive integers, got {list(steps)}")
    if len(set(steps)) < 2:
        raise InputError(f"need at least two distinct step counts to fit an order, got {list(steps)}")


def require_positive(settings, names: Sequence[str]) -> None:
    """InputError unless every field ``names`` of ``settings`` is >= 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(settings, name)}")


@dataclass
class FlowConfig:
    """Options of one ``analyze flow`` run.

    Args:
        checkpoint: a hybrid checkpoint folder (its ODE block is analysed).
        out: output folder (created).
        baseline: a discrete baseline checkpoint for the "how ODE-like" layer statistics.
        compare: a second hybrid checkpoint; with one of the two using ``field="contractive"``
            the run reports the contractive comparison.
        data_dir, cache_dir: data folder (else ``$STEERFLOW_DATA``) and token cache (else
            ``$STEERFLOW_CACHE`` or ``~/.cache/steerflow``).
        controls: the values of u (every control axis set to the value).
        methods, steps: fixed-step methods and step counts of the convergence study.
        ref_rtol: tolerance of the dopri8 reference.
        batch_size: validation sequences analysed (the first window batch of the valid split).
        lanczos_iters: Krylov dimension of the log-norm estimates.
        grid_points, traj_steps: τ grid of the μ / perturbation study and the rk4 steps of its
            trajectories. eps: relative size of the perturbation. tolerance: relative slack
            before a bound violation is counted.
        loss_batches: validation batches for the losses of the contractive comparison.
        refinement: run the depth-refinement study (trains two small models).
        refinement_iters, refinement_train_steps, refinement_batch_size, refinement_width:
            its training length, N₀, batch size and width; refinement_basis: the number of
            Legendre polynomials of the smooth model (< N₀).
        seed: random start vectors, perturbations and refinement initialisation.
        device: ``cpu`` or ``cuda``.
    """

    checkpoint: str
    out: str
    baseline: Optional[str] = None
    compare: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    controls: tuple[float, ...] = (-1.0, 0.0, 1.0)
    methods: tuple[str, ...] = tuple(EXPECTED_ORDER)
    steps: tuple[int, ...] = DEFAULT_STEPS
    ref_rtol: float = 1e-12
    batch_size: int = 4
    lanczos_iters: int = 32
    grid_points: int = 17
    traj_steps: int = 64
    eps: float = 1e-6
    tolerance: float = 1e-2
    loss_batches: int = 10
    refinement: bool = True
    refinement_iters: int = 300
    refinement_train_steps: int = 8
    refinement_batch_size: int = 16
    refinement_width: int = 64
    refinement_basis: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("batch_size", "lanczos_iters", "traj_steps", "loss_batches",
                    "refinement_iters", "refinement_train_steps", "refinement_batch_size",
                    "refinement_width", "refinement_basis")
        require_positive(self, positive)
        if not self.controls:
            raise InputError("give at least one control value u")
        if any(not math.isfinite(u) for u in self.controls):
            raise InputError(f"control values must be finite, got {list(self.controls)}")
        if self.grid_points < 2 or self.traj_steps % (self.grid_points - 1):
            raise InputError(f"grid_points - 1 = {self.grid_points - 1} must divide traj_steps = "
                             f"{self.traj_steps}")
        if not 0 < self.ref_rtol < 1e-6:
            raise InputError(f"ref_rtol must be in (0, 1e-6) for a float64 reference, got "
                             f"{self.ref_rtol}")
        if not 0 < self.eps < 1e-2:
            raise InputError(f"eps must be in (0, 1e-2) (a small perturbation), got {self.eps}")
        if self.refinement_basis >= self.refinement_train_steps:
            raise InputError(f"refinement_basis={self.refinement_basis} must be < "
                             f"refinement_train_steps={self.refinement_train_steps} (a smooth "
                             f"basis as large as the step count is N₀ independent layers)")
        if self.tolerance < 0:
            raise InputError(f"tolerance must be >= 0, got {self.tolerance}")
        check_methods(self.methods, self.steps)  # before minutes of loading, not after


@dataclass
class HFFlowConfig:
    """Options of one ``analyze flow --hf`` run: a Hugging Face causal LM read as a discrete
    residual stack (layer statistics, branch log-norms, perturbation growth against exp(Σμ)).

    Args:
        source: a local folder saved by ``transformers`` (config.json and safetensors weights),
            or ``hf:<repo id>`` to download one from the Hub (network).
        out: output folder (created).
        batch_size, seq_len: sequences analysed and their length in tokens.
        data_dir: data folder (else ``$STEERFLOW_DATA``, else the Hub) of the analysis text, the
            WikiText-2 validation split; read only when the source has a tokenizer.
        lanczos_iters: Krylov dimension of the log-norm estimates.
        tolerance: relative slack before a measured growth above exp(Σμ) is counted (the
            perturbation is carried through the linearised stack: no size to choose).
        seed: random token ids (without a tokenizer), start vectors and perturbation.
        device: ``cpu`` or ``cuda``.
    """

    source: str
    out: str
    batch_size: int = 4
    seq_len: int = 64
    data_dir: Optional[str] = None
    lanczos_iters: int = 32
    tolerance: float = 1e-2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if str(self.source).strip() in ("", "hf:"):
            raise InputError("--hf needs a folder saved by transformers or hf:<repo id>")
        require_positive(self, ("batch_size", "seq_len", "lanczos_iters"))
        if self.tolerance < 0:
            raise InputError(f"tolerance must be >= 0, got {self.tolerance}")
