"""What a training run produced: :class:`TrainResult` (``summary.json`` and the closing line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the trained (unwrapped) model, in eval mode."""

    out: Path
    step: int
    steps: int
    params: int
    trainable_params: int
    final_loss: float
    alpha_start: Optional[float]
    alpha_end: Optional[float]
    vanishing_steps: int
    exploding_steps: int
    nonfinite_steps: int
    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False
    resumed_from: Optional[int] = None
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)

    @property
    def val_loss(self) -> Optional[float]:
        return self.evals.get("valid", {}).get("loss")

    @property
    def test_loss(self) -> Optional[float]:
        return self.evals.get("test", {}).get("loss")

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable part (what ``summary.json`` holds)."""
        data = {k: v for k, v in asdict(self).items() if k != "model"}
        data["out"] = str(self.out)
        data["completed"] = self.step >= self.steps and not self.interrupted
        return data

    def summary_line(self) -> str:
        """One line for people: step, losses, α, gradient events and the run folder."""
        state = "interrupted" if self.interrupted else "done"
        parts = [f"{state}: step {self.step}/{self.steps}", f"final loss {self.final_loss:.4f}"]
        for split, ev in self.evals.items():
            text = f"{split} loss {ev['loss']:.4f} ppl {ev['ppl']:.1f}"
            if "word_ppl" in ev:
                text += f" (word ppl {ev['word_ppl']:.1f})"
            parts.append(text)
        if self.alpha_end is not None:
            parts.append(f"α {self.alpha_start:.4f} → {self.alpha_end:.4f}")
        parts.append(f"vanishing {self.vanishing_steps}, exploding {self.exploding_steps}, "
                     f"skipped {self.nonfinite_steps}")
        return "; ".join(parts) + f" — {self.out}"
