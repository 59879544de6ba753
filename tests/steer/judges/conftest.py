"""Shared data of the judge tests: real SST-2 when ``$STEERFLOW_DATA`` has it, synthetic
polarity sentences, a small trained classifier, a fake HF pipeline and a hash encoder."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steerflow.steer.judges.sst2 import SST2ClassifierJudge


CLEAR_POSITIVE = "this movie was wonderful, a great and moving film"
CLEAR_NEGATIVE = "a dull, boring and terrible mess"


# ------------------------------------------------------------------ data helpers


def _read_tsv(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert next(reader) == ["sentence", "label"]
        return [(text.strip(), int(label)) for text, label in reader]


def _sst2_dir() -> Path:
    root = os.environ.get("STEERFLOW_DATA")
    if not root or not (Path(root) / "sst2" / "train.tsv").is_file():
        pytest.skip("STEERFLOW_DATA with sst2/ is not available")
    return Path(root) / "sst2"


@pytest.fixture(scope="module")
def sst2() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    directory = _sst2_dir()
    return _read_tsv(directory / "train.tsv"), _read_tsv(directory / "dev.tsv")


@pytest.fixture(scope="module")
def sst2_judge(sst2: tuple[list, list]) -> tuple[SST2ClassifierJudge, float]:
    start = time.perf_counter()
    judge = SST2ClassifierJudge.train(*sst2)
    return judge, time.perf_counter() - start


POS_WORDS = ["good", "great", "wonderful", "moving", "brilliant", "charming"]
NEG_WORDS = ["bad", "dull", "boring", "terrible", "awful", "tedious"]
FILLER = ["the", "film", "movie", "was", "is", "a", "story", "plot", "and", "acting"]


def synthetic_pairs(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences of filler words plus sentiment words of one polarity."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=5)) + list(
            rng.choice(POS_WORDS if label else NEG_WORDS, size=2)
        )
        rng.shuffle(words)
        pairs.append((" ".join(words), label))
    return pairs


@pytest.fixture(scope="module")
def small_judge() -> SST2ClassifierJudge:
    return SST2ClassifierJudge.train(synthetic_pairs(300, 0), synthetic_pairs(100, 1))


class FakePipeline:
    """Stands in for ``transformers.pipeline``: first label scores 0.9 if a text has 'good'."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.calls: list[tuple[str, str]] = []

    def __call__(self, task: str, model: str) -> Callable[..., Any]:
        self.calls.append((task, model))

        def pipe(texts: list[str], **kwargs: Any) -> list[list[dict[str, Any]]]:
            assert kwargs["top_k"] is None
            out = []
            for text in texts:
                first = 0.9 if "good" in text else 0.1
                rest = (1 - first) / (len(self.labels) - 1)
                out.append(
                    [
                        {"label": lab, "score": first if i == 0 else rest}
                        for i, lab in enumerate(self.labels)
                    ]
                )
            return out

        return pipe


def hash_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words encoder (word -> one of 64 dimensions) in place of MiniLM."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, sum(map(ord, word)) % 64] += 1.0
    return out
