"""Judges that need no training: the VADER lexicon and Hugging Face sentiment pipelines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from steerflow.errors import InputError
from steerflow.steer.judges.base import Judge
from steerflow.steer.judges.text import as_text_list, clean_generated_text


class VaderJudge(Judge):
    """VADER lexicon judge: positive ⇔ compound ≥ 0.05 (VADER's standard threshold).

    ``positive_proba`` is the compound score rescaled to [0, 1], ``(compound + 1) / 2``; it is a
    score, not a calibrated probability.
    """

    name = "vader"
    threshold = 0.05
    classifier = False  # a lexicon: reported, never a gate

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER compound score in [-1, 1] of each cleaned text, shape (n,)."""
        texts = as_text_list(texts)
        scores = [
            self._analyzer.polarity_scores(clean_generated_text(t))["compound"] for t in texts
        ]
        return np.asarray(scores, dtype=np.float64).reshape(len(texts))

    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(compound + 1) / 2`` for each text."""
        return (self.compound(texts) + 1.0) / 2.0

    def is_positive(self, texts: Sequence[str]) -> np.ndarray:
        """``compound >= 0.05`` for each text."""
        return self.compound(texts) >= self.threshold



_POSITIVE_NAMES = ("POSITIVE", "POS")
_NEGATIVE_NAMES = ("NEGATIVE", "NEG")


def _resolve_labels(
    labels: Iterable[str], positive: str | None, negative: str | None
) -> tuple[str, str]:
    """Pick the positive and negative label among a pipeline's labels (case-insensitive)."""
    upper = {label.upper(): label for label in labels}

    def pick(explicit: str | None, names: tuple[str, ...], binary_default: str) -> str | None:
        if explicit is not None:
            return upper.get(explicit.upper())
        for candidate in names:
            if candidate in upper:
                return upper[candidate]
        return upper.get(binary_default) if set(upper) == {"LABEL_0", "LABEL_1"} else None

    pos = pick(positive, _POSITIVE_NAMES, "LABEL_1")
    neg = pick(negative, _NEGATIVE_NAMES, "LABEL_0")
    if pos is None or neg is None:
        raise InputError(
            f"cannot tell the positive and negative labels apart among {sorted(upper.values())}; "
            "pass positive_label= and negative_label="
        )
    return pos, neg


class HFPipelineJudge(Judge):
    """A Hugging Face ``sentiment-analysis`` pipeline as a judge.

    P(positive) = p(positive label) / (p(positive label) + p(negative label)); any other label
    (e.g. "neutral") is ignored. POSITIVE/POS and, for two-label models, LABEL_1 are positive;
    override with ``positive_label``/``negative_label``. ``pipeline_fn`` replaces
    ``transformers.pipeline`` (same call signature), e.g. to inject a fake in tests.
    """

    def __init__(
        self,
        model: str,
        pipeline_fn: Callable[..., Callable[..., Any]] | None = None,
        positive_label: str | None = None,
        negative_label: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if pipeline_fn is None:
            pipeline_fn = self._transformers_pipeline()
        self.name = f"hf:{model}"
        self.positive_label, self.negative_label = positive_label, negative_label
        self.batch_size = batch_size
        self._pipe = pipeline_fn("sentiment-analysis", model=model)

    @staticmethod
    def _transformers_pipeline() -> Callable[..., Callable[..., Any]]:
        try:
            from transformers import pipeline
        except ImportError as exc:
            raise InputError(
                "HFPipelineJudge needs the transformers package: pip install transformers"
            ) from exc
        return pipeline

    def _scores(self, outputs: Any, n: int) -> list[dict[str, float]]:
        """Per-text {label: score} from pipeline outputs (all-label lists or one dict per text)."""
        if not isinstance(outputs, list) or len(outputs) != n:
            raise InputError(
                f"pipeline returned {type(outputs).__name__} for {n} texts, expected a list of {n}"
            )
        rows = []
        for out in outputs:
            items = out if isinstance(out, list) else [out]
            rows.append({str(d["label"]): float(d["score"]) for d in items})
        return rows

    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) renormalised over the positive and negative labels, for each text."""
        texts = as_text_list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        outputs = self._pipe(texts, top_k=None, truncation=True, batch_size=self.batch_size)
        probs = []
        for scores in self._scores(outputs, len(texts)):
            pos, neg = _resolve_labels(scores, self.positive_label, self.negative_label)
            total = scores[pos] + scores[neg]
            probs.append(scores[pos] / total if total > 0 else 0.5)
        return np.asarray(probs, dtype=np.float64)
