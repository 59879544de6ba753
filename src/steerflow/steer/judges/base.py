"""The judge interface and the labelled text pairs judges are trained on.

A judge maps texts to P(positive) in [0, 1]; training data are ``(text, label)`` pairs with
label 1 for positive and 0 for negative.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from steerflow.errors import DataError
from steerflow.io import sha256_text

Pair = tuple[str, int]


class Judge(ABC):
    """A sentiment judge: ``positive_proba`` gives P(positive) in [0, 1] for each text."""

    name: str
    #: whether the judge is a trained sentiment classifier; only classifiers gate the targets of
    #: ``steerflow eval steering`` (a lexicon such as VADER is reported beside them)
    classifier: bool = True

    @abstractmethod
    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) for each text, float64 array of shape (n,)."""

    def is_positive(self, texts: Sequence[str]) -> np.ndarray:
        """Hard positive/negative decision for each text, bool array of shape (n,)."""
        return self.positive_proba(texts) >= 0.5


def check_pairs(pairs: Sequence[Pair], what: str) -> tuple[list[str], np.ndarray]:
    """Split (text, label) pairs into texts and a 0/1 label array; bad rows are a DataError."""
    texts, labels = [], []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise DataError(f"{what}[{i}] must be a (text, label) pair, got {pair!r}")
        if pair[1] not in (0, 1) or isinstance(pair[1], float):
            raise DataError(
                f"{what}[{i}] has label {pair[1]!r}; labels must be 0 (negative) or 1 (positive)"
            )
        texts.append(pair[0])
        labels.append(int(pair[1]))
    if not texts:
        raise DataError(f"{what} is empty")
    return texts, np.asarray(labels, dtype=np.int64)


def data_fingerprint(train_pairs: Sequence[Pair], dev_pairs: Sequence[Pair]) -> str:
    """sha256 of the training and dev pairs (order-sensitive); keys cached judges to their data."""
    lines = []
    for split, pairs in (("train", train_pairs), ("dev", dev_pairs)):
        lines.append(f"#{split}\n")
        lines.extend(f"{int(label)}\t{text}\n" for text, label in pairs)
    return sha256_text("".join(lines))
