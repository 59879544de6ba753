"""The distillation teacher as text: ``TrainConfig.distill_teacher`` (``--teacher``) parsed.

* ``guidance`` — the starting model's own guidance over u;
* ``dexperts:POS,NEG`` — DExperts on one axis (``steer_axis``) at strength ``distill_alpha``;
* ``dexperts:POS0,NEG0;POS1,NEG1[;...]`` — one expert pair per control axis, summed
  (:mod:`steerflow.steer.multi_axis`), axis ``steer_axis + k`` for the k-th pair.

Any pair may end in ``@ALPHA``, its own strength in place of ``distill_alpha``; a single pair
without one is the single-axis teacher of :mod:`steerflow.steer.distill`, anything else the
multi-axis teacher (which equals it on one axis). No torch here: the config validates specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from steerflow.errors import ConfigError

_FORMS = ("'guidance', 'dexperts:POS_DIR,NEG_DIR' or one pair per axis "
          "'dexperts:POS0,NEG0;POS1,NEG1' (a pair may end in @ALPHA)")


@dataclass(frozen=True)
class ExpertPair:
    """One axis of a DExperts teacher: its expert and anti-expert folders and its own α (None:
    ``distill_alpha``)."""

    positive: str
    negative: str
    alpha: Optional[float] = None


def _pair(text: str, spec: str) -> ExpertPair:
    alpha = None
    head, at, tail = text.rpartition("@")
    if at:
        try:
            alpha = float(tail)
        except ValueError:
            raise ConfigError(f"distill_teacher {spec!r}: {tail!r} after '@' is not a number "
                              f"(the pair's alpha)") from None
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ConfigError(f"distill_teacher {spec!r}: a pair's alpha must be a finite number "
                              f">= 0, got {tail}")
        text = head
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"distill_teacher must be {_FORMS}; {text!r} in {spec!r} is not "
                          f"POS_DIR,NEG_DIR")
    return ExpertPair(parts[0], parts[1], alpha)


def parse_teacher_axes(spec: str) -> tuple[str, tuple[ExpertPair, ...]]:
    """``(kind, pairs)``: ``("guidance", ())`` or ``("dexperts", (pair per axis, ...))``."""
    if spec == "guidance":
        return "guidance", ()
    if not (isinstance(spec, str) and spec.startswith("dexperts:")):
        raise ConfigError(f"distill_teacher must be {_FORMS}, got {spec!r}")
    return "dexperts", tuple(_pair(p, spec) for p in spec[len("dexperts:"):].split(";"))


def check_teacher(spec: str, orthogonal: bool = False) -> None:
    """ConfigError unless ``spec`` is a teacher spec, and unless it has two or more expert pairs
    when the teacher is to be ``orthogonal`` (there is nothing to make one pair orthogonal to)."""
    _, pairs = parse_teacher_axes(spec)
    if orthogonal and len(pairs) < 2:
        raise ConfigError("distill_orthogonal needs a teacher of two or more expert pairs, "
                          "'dexperts:P0,N0;P1,N1'")


def parse_teacher(spec: str) -> tuple[str, Optional[tuple[str, str]]]:
    """A single-axis teacher: ``"guidance"`` or ``"dexperts:POS,NEG"`` → ``(kind, (pos, neg) or
    None)``; a multi-axis spec is a ConfigError here (:func:`parse_teacher_axes` reads it)."""
    kind, pairs = parse_teacher_axes(spec)
    if kind == "guidance":
        return kind, None
    if len(pairs) != 1 or pairs[0].alpha is not None:
        raise ConfigError(f"{spec!r} is a multi-axis teacher; the single-axis one is "
                          f"'dexperts:POS_DIR,NEG_DIR'")
    return kind, (pairs[0].positive, pairs[0].negative)


def is_multi_axis(spec: Optional[str]) -> bool:
    """Whether ``spec`` needs the multi-axis teacher: several pairs, or a pair with its own α."""
    if spec is None:
        return False
    kind, pairs = parse_teacher_axes(spec)
    return kind == "dexperts" and (len(pairs) > 1 or pairs[0].alpha is not None)
