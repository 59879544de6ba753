"""Settings of the steering evaluation: the paper's probe, the sweeps, sampling and judges.

This module imports neither torch nor numpy, so the command line reads its flag defaults from
:class:`SteeringEvalConfig` when it builds its parsers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from steerflow.errors import InputError

#: paper 1, Table 2: the probe prompt and the two next-token words it reads
PROBE_PROMPT = "The movie was"
PROBE_WORDS = (" good", " bad")
#: the controls of the probe table (u = +1, 0, -1)
TABLE_US = (1.0, 0.0, -1.0)
#: u values of the open-ended sweep (the probe sweep is finer: 21 points)
DEFAULT_OPEN_US = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
#: ActAdd coefficients swept by ``steerflow eval steering`` (negative ones steer negative)
DEFAULT_COEFS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
#: guidance weights γ over u (``generate(..., guidance=γ)`` at u = ±1)
DEFAULT_GAMMAS = (1.0, 2.0, 4.0)
#: DExperts weights α (Liu et al. 2021 report α = 3.2 for sentiment; smaller ones trade less
#: fluency)
DEFAULT_ALPHAS = (1.0, 2.0, 3.2)
#: where ActAdd's direction comes from: CAA over labelled SST-2 sentences, or the word pairs
ACTADD_VECTORS = ("caa", "pairs")


@dataclass
class SteeringEvalConfig:
    """Options of :func:`evaluate_steering` (the CLI flags of ``steerflow eval steering``).

    ``prompts`` neutral WikiText-2 openings (the field's protocol: ≥ 200 prompts × 4 samples × 20
    tokens), or the first ``prompts`` lines of ``prompts_file``. ``actadd_vector`` picks ActAdd's
    direction: ``caa`` (class means over ``caa_sentences`` SST-2 train sentences per class) or
    ``pairs`` (six word pairs). ``guidance_gammas`` (γ) and ``dexperts_alphas`` (α) are swept in
    both directions; DExperts runs when the evaluation is given two expert checkpoints. ``minilm``
    adds the MiniLM embedding judge whenever its optional packages import.
    """

    prompts: int = 200
    prompts_file: Optional[str] = None
    samples: int = 4
    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0
    prompt_words: int = 5
    sweep_points: int = 21
    sweep_range: tuple[float, float] = (-2.0, 2.0)
    open_us: tuple[float, ...] = DEFAULT_OPEN_US
    actadd_coefs: tuple[float, ...] = DEFAULT_COEFS
    actadd_vector: str = "caa"
    caa_sentences: int = 500
    guidance_gammas: tuple[float, ...] = DEFAULT_GAMMAS
    dexperts_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    probe_prompt: str = PROBE_PROMPT
    probe_words: tuple[str, str] = PROBE_WORDS
    axis: int = 0
    extra_judges: tuple[str, ...] = ()
    minilm: bool = True
    judge_cache: Optional[str] = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("prompts", "samples", "max_new_tokens", "sweep_points", "prompt_words",
                     "caa_sentences"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.sweep_points < 2:
            raise InputError(f"--sweep-points must be >= 2, got {self.sweep_points}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise InputError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.seed < 0 or self.axis < 0:
            raise InputError(f"--seed and --axis must be >= 0, got {self.seed}, {self.axis}")
        if not self.open_us or not self.actadd_coefs:
            raise InputError("the open-ended u values and ActAdd coefficients must not be empty")
        if self.actadd_vector not in ACTADD_VECTORS:
            raise InputError(f"--actadd-vector must be one of {', '.join(ACTADD_VECTORS)}, "
                             f"got {self.actadd_vector!r}")
        self.open_us = tuple(sorted(set(float(u) for u in self.open_us) | {0.0}))
        self.actadd_coefs = tuple(sorted(set(float(c) for c in self.actadd_coefs) | {0.0}))
        self.guidance_gammas = _weights("--guidance-gammas", self.guidance_gammas)
        self.dexperts_alphas = _weights("--dexperts-alphas", self.dexperts_alphas)


def _weights(flag: str, values) -> tuple[float, ...]:
    """Contrast weights (γ, α): finite numbers >= 0, sorted and unique; 0 (the unsteered draw,
    which every sweep runs anyway) is dropped, so ``()`` means only that reference setting."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"{flag} must be finite numbers >= 0, got {v!r}")
    return tuple(sorted({float(v) for v in values} - {0.0}))


def signed_values(weights) -> tuple[float, ...]:
    """The settings of a two-direction sweep: ``-w`` (negative direction), 0 and ``+w``."""
    return tuple(sorted({0.0} | {float(w) for w in weights} | {-float(w) for w in weights}))
