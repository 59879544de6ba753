"""Settings of the disentangled-control study (:mod:`steerflow.pipeline.disentangle`).

No torch here: the command line reads its choices and defaults from this module when it builds
its parser.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from steerflow.errors import InputError

#: the attributes a control axis can steer; each has experts, a judge and an ActAdd direction
#: (sentiment: SST-2 positive / negative; register: movie review (SST-2) / encyclopedic (WikiText-2))
ATTRIBUTES = ("sentiment", "register")
#: the grid's values of every axis
GRID_VALUES = (-1.0, 0.0, 1.0)


@dataclass(frozen=True)
class DisentangleSettings:
    """Sizes of every stage. :data:`SCALES` holds the named presets.

    The recipe is the steering issue's (``steerflow demo``): DExperts' experts fine-tuned from the
    hybrid LM, their contrast on the base's nucleus distilled into the field's zero-initialised
    control path W_o u and an untied head at α = ``distill_alpha``,
    here one expert pair per axis (``joint_steps``) and, for comparison, one single-axis model per
    attribute (``single_steps``).
    """

    config: str = "small"
    #: the attribute of each control axis, in axis order
    axes: tuple[str, ...] = ATTRIBUTES
    lm_steps: int = 250
    lm_batch_size: Optional[int] = None
    lm_lr: Optional[float] = None
    test_batches: Optional[int] = 40
    expert_steps: int = 120
    expert_batch_size: int = 32
    expert_lr: float = 1e-3
    #: sentences per pole the register experts learn from (their half of each train split)
    expert_texts: int = 8000
    joint_steps: int = 300
    single_steps: int = 200
    distill_alpha: float = 1.5
    #: the teachers on the base's nucleus (``TrainConfig.distill_top_p``; None: the whole
    #: vocabulary)
    distill_top_p: Optional[float] = 0.9
    #: the joint teacher's contrasts Fisher-orthogonal in axis order
    #: (``TrainConfig.distill_orthogonal``): moving one axis leaves the other attribute's
    #: expected evidence unchanged to first order
    orthogonal: bool = False
    #: rank of the field's u-gated adapter (``TrainConfig.control_adapter``; 0: none, the recipe)
    control_adapter: int = 0
    distill_batch_size: int = 16
    distill_lr: float = 1e-2
    distill_block_size: Optional[int] = 64
    control_gain: float = 3.0
    #: the grid: neutral WikiText-2 prompts × samples × new tokens (nucleus 0.9)
    prompts: int = 200
    samples: int = 4
    new_tokens: int = 20
    #: ActAdd: the CAA direction of each attribute from this many texts per class, added at
    #: ``u_a · actadd_coef`` per axis
    actadd_coef: float = 8.0
    actadd_sentences: int = 500
    #: sentences per class the register judge is fitted on
    judge_texts: int = 30_000
    seed: int = 1337

    def __post_init__(self) -> None:
        check_axes(self.axes)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            floor = 0 if f.name == "control_adapter" else 1  # a rank of 0: no adapter
            if isinstance(value, int) and not isinstance(value, bool) and f.name != "seed" \
                    and value < floor:
                raise InputError(f"{f.name} must be >= {floor}, got {value}")
        for name in ("distill_alpha", "distill_lr", "expert_lr", "control_gain", "actadd_coef"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise InputError(f"{name} must be a finite number > 0, got {value}")
        if self.distill_top_p is not None and not 0 < self.distill_top_p <= 1:
            raise InputError(f"distill_top_p must be in (0, 1], got {self.distill_top_p}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")

    def replace(self, **changes) -> "DisentangleSettings":
        return dataclasses.replace(self, **changes)


def check_axes(axes) -> tuple[str, ...]:
    """``axes`` as a tuple of two distinct attribute names (:data:`ATTRIBUTES`), else InputError."""
    axes = tuple(axes)
    unknown = [a for a in axes if a not in ATTRIBUTES]
    if unknown:
        raise InputError(f"unknown attribute(s) {unknown} in the axes; choose from "
                         f"{', '.join(ATTRIBUTES)}")
    if len(axes) != 2 or len(set(axes)) != 2:
        raise InputError(f"the study steers two distinct attributes, one per axis; got "
                         f"{list(axes)}")
    return axes


def parse_axes(text: str) -> tuple[str, ...]:
    """``"sentiment,register"`` → ``("sentiment", "register")`` (checked by :func:`check_axes`)."""
    return check_axes(part.strip() for part in str(text).split(","))


SCALES: dict[str, DisentangleSettings] = {
    # tests and smoke runs: under a minute on one core
    "tiny": DisentangleSettings(config="tiny", lm_steps=40, test_batches=4, expert_steps=20,
                                expert_batch_size=16, expert_texts=200, joint_steps=40,
                                single_steps=30, distill_batch_size=8, distill_block_size=32,
                                control_gain=10.0, prompts=4, samples=2, new_tokens=8,
                                actadd_sentences=20, judge_texts=500),
    # the study: ≤ 45 minutes on 2 cores (stage estimates in pipeline/disentangle.py)
    "small": DisentangleSettings(),
}
