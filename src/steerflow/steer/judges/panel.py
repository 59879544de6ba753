"""The judges of one steering evaluation, built once and shared by every method and setting.

VADER (a lexicon, reported but never a gate), the SST-2 TF-IDF classifier, the MiniLM embedding
judge whenever its optional packages import (otherwise the panel records why it was skipped), and
any extra specs (``hf:<model>``). Trained judges are cached: the SST-2 classifier in ``cache``,
the MiniLM head in ``cache/minilm``, each reused while its data and settings match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from steerflow.steer.judges.base import Judge, Pair

#: the judges every evaluation has; a repeated ``--judge`` spec naming one of them adds nothing
DEFAULT_SPECS = ("vader", "sst2-tfidf", "minilm")


@dataclass
class JudgePanel:
    """The judges, their dev accuracies (trained judges only) and the skipped ones with why."""

    judges: list[Judge]
    dev_accuracy: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.judges]

    @property
    def gates(self) -> list[str]:
        """The classifier judges: the only ones the open-ended targets are checked on."""
        return [j.name for j in self.judges if j.classifier]


def judge_panel(train: Sequence[Pair], dev: Sequence[Pair], *, seed: int = 0,
                cache: Optional[str | Path] = None, minilm: bool = True,
                extra: Sequence[str] = ()) -> JudgePanel:
    """Build the panel from SST-2 ``train`` / ``dev`` pairs (module docstring).

    ``minilm=True`` adds the MiniLM judge when :func:`minilm_unavailable` finds its packages; an
    explicit ``"minilm"`` in ``extra`` requires them (a missing install is then an error).
    """
    from steerflow.steer.judges.embedding import minilm_unavailable
    from steerflow.steer.judges.factory import make_judge

    trained = {"train_pairs": train, "dev_pairs": dev, "seed": seed}
    sst2 = make_judge("sst2-tfidf", **trained, **({"cache_dir": cache} if cache else {}))
    panel = JudgePanel([make_judge("vader"), sst2], {sst2.name: float(sst2.dev_accuracy)})
    asked = "minilm" in extra
    reason = (None if asked else minilm_unavailable() if minilm
              else "left out by the settings (--no-minilm)")
    if reason is None:
        kw = {"cache_dir": Path(cache) / "minilm"} if cache else {}
        _add(panel, make_judge("minilm", **trained, **kw))
    else:
        panel.skipped["minilm"] = reason
    for spec in extra:
        if spec not in DEFAULT_SPECS:
            _add(panel, make_judge(spec))
    return panel


def _add(panel: JudgePanel, judge: Judge) -> None:
    panel.judges.append(judge)
    if hasattr(judge, "dev_accuracy"):
        panel.dev_accuracy[judge.name] = float(judge.dev_accuracy)
