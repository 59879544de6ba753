"""The SST-2 classifier judge: TF-IDF features and a logistic regression trained on SST-2.

Word 1-2-grams and character 3-5-grams of the PTB-tokenised text (:mod:`.tfidf`), a logistic
regression fitted with scikit-learn and validated on SST-2 dev; inference is plain NumPy/SciPy
and the saved judge is JSON + ``.npy`` (:mod:`.store`). :func:`load_or_train` reuses a saved judge
while the data and settings it was trained with are unchanged.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from steerflow.errors import ConfigError, DataError, InputError
from steerflow.steer.judges.base import Judge, Pair, check_pairs, data_fingerprint
from steerflow.steer.judges.store import (listed_file, load_vector, read_json, read_manifest,
                                          write_judge_files)
from steerflow.steer.judges.text import as_text_list, prepare_for_classifier
from steerflow.steer.judges.tfidf import TfidfBlock


@dataclass(frozen=True)
class TfidfConfig:
    """Hyper-parameters of :class:`SST2ClassifierJudge` (defaults: dev accuracy ≈ 0.83)."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = (3, 5)
    word_min_df: int = 1
    char_min_df: int = 3
    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        for field, rng in (("word_ngrams", self.word_ngrams), ("char_ngrams", self.char_ngrams)):
            if rng is None and field == "char_ngrams":
                continue
            if rng is None or len(rng) != 2 or not 1 <= rng[0] <= rng[1]:
                raise ConfigError(f"{field} must be (lo, hi) with 1 <= lo <= hi, got {rng!r}")
            object.__setattr__(self, field, (int(rng[0]), int(rng[1])))
        if self.word_min_df < 1 or self.char_min_df < 1:
            raise ConfigError("word_min_df and char_min_df must be >= 1")
        if not self.C > 0 or self.max_iter < 1:
            raise ConfigError(
                f"C must be > 0 and max_iter >= 1, got C={self.C}, max_iter={self.max_iter}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TfidfConfig:
        """Build from a dict (as stored in a manifest); unknown keys are a ConfigError."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown TfidfConfig keys: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)



class SST2ClassifierJudge(Judge):
    """TF-IDF (word 1-2-grams + char 3-5-grams) + logistic regression trained on SST-2.

    Build with :meth:`train`, :meth:`load` or :func:`load_or_train`. Inputs are cleaned and
    PTB-tokenised (:func:`ptb_tokenize`) so generated text matches SST-2's tokenisation.
    ``dev_accuracy`` is the accuracy on the dev pairs given to :meth:`train`.
    """

    name = "sst2-tfidf"
    _FORMAT = "steerflow.judge.sst2-tfidf/1"

    def __init__(
        self,
        blocks: Sequence[TfidfBlock],
        coef: np.ndarray,
        intercept: float,
        config: TfidfConfig,
        dev_accuracy: float,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        n_features = sum(len(b.terms) for b in blocks)
        if coef.shape != (n_features,):
            raise InputError(f"coef has shape {coef.shape}, expected ({n_features},)")
        self.blocks = tuple(blocks)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.config = config
        self.dev_accuracy = float(dev_accuracy)
        self.meta = dict(meta or {})

    @classmethod
    def train(
        cls,
        train_pairs: Sequence[Pair],
        dev_pairs: Sequence[Pair],
        seed: int = 0,
        config: TfidfConfig | None = None,
    ) -> SST2ClassifierJudge:
        """Fit features and a logistic regression on ``train_pairs``; score ``dev_pairs``.

        ``seed`` is the solver's ``random_state`` (the default lbfgs solver is deterministic).
        """
        from sklearn.linear_model import LogisticRegression

        config = config or TfidfConfig()
        texts, y = check_pairs(train_pairs, "train_pairs")
        dev_texts, dev_y = check_pairs(dev_pairs, "dev_pairs")
        if len(np.unique(y)) != 2:
            raise DataError("train_pairs must contain both labels 0 and 1")
        docs = prepare_for_classifier(texts)
        fitted = [TfidfBlock.fit_transform(docs, "word", config.word_ngrams, config.word_min_df)]
        if config.char_ngrams is not None:
            fitted.append(
                TfidfBlock.fit_transform(docs, "char_wb", config.char_ngrams, config.char_min_df)
            )
        blocks = [block for block, _ in fitted]
        features = sp.hstack([matrix for _, matrix in fitted], format="csr")
        model = LogisticRegression(C=config.C, max_iter=config.max_iter, random_state=seed)
        model.fit(features, y)
        meta = {
            "seed": seed,
            "n_train": len(texts),
            "n_dev": len(dev_texts),
            "data_sha256": data_fingerprint(train_pairs, dev_pairs),
        }
        judge = cls(
            blocks, model.coef_[0].astype(np.float64), float(model.intercept_[0]), config, 0.0, meta
        )
        judge.dev_accuracy = float(np.mean(judge.is_positive(dev_texts) == dev_y.astype(bool)))
        return judge

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF feature matrix (n, n_features) of cleaned, tokenised ``texts``."""
        docs = prepare_for_classifier(as_text_list(texts))
        return sp.hstack([b.transform(docs) for b in self.blocks], format="csr")

    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Logistic-regression P(positive) for each text."""
        scores = self.features(texts) @ self.coef + self.intercept  # (n,)
        return expit(np.asarray(scores, dtype=np.float64).reshape(-1))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the judge to directory ``path``: manifest, vocabularies (JSON), idf/coef (.npy)."""
        arrays = {f"idf_{i}.npy": b.idf for i, b in enumerate(self.blocks)} | {
            "coef.npy": self.coef
        }
        jsons = {f"terms_{i}.json": list(b.terms) for i, b in enumerate(self.blocks)}
        blocks = [{"kind": b.kind, "ngram_range": list(b.ngram_range)} for b in self.blocks]
        manifest = {
            "format": self._FORMAT,
            "config": asdict(self.config),
            "intercept": self.intercept,
            "dev_accuracy": self.dev_accuracy,
            "blocks": blocks,
            **self.meta,
        }
        write_judge_files(Path(path), arrays, jsons, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SST2ClassifierJudge:
        """Load a judge written by :meth:`save`; a bad or missing file is a DataError naming it."""
        directory = Path(path)
        manifest = read_manifest(directory, cls._FORMAT)
        try:
            config = TfidfConfig.from_dict(manifest["config"])
            block_specs = manifest["blocks"]
            intercept = float(manifest["intercept"])
            dev_accuracy = float(manifest["dev_accuracy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc
        blocks = [cls._load_block(directory, manifest, i) for i in range(len(block_specs))]
        coef = load_vector(
            listed_file(directory, manifest, "coef.npy"), sum(len(b.terms) for b in blocks)
        )
        meta = {
            k: manifest[k] for k in ("seed", "n_train", "n_dev", "data_sha256") if k in manifest
        }
        return cls(blocks, coef, intercept, config, dev_accuracy, meta)

    @staticmethod
    def _load_block(directory: Path, manifest: Mapping[str, Any], i: int) -> TfidfBlock:
        """Block ``i``: terms (JSON) and idf (.npy), as described by ``manifest['blocks'][i]``."""
        terms_path = listed_file(directory, manifest, f"terms_{i}.json")
        terms = read_json(terms_path)
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise DataError(f"corrupt judge file {terms_path}: expected a list of strings")
        idf = load_vector(listed_file(directory, manifest, f"idf_{i}.npy"), len(terms))
        try:
            spec = manifest["blocks"][i]
            return TfidfBlock(str(spec["kind"]), tuple(spec["ngram_range"]), tuple(terms), idf)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc


def default_judge_cache() -> Path:
    """Where ``steerflow eval steering`` keeps the trained judge: ``judges/sst2-tfidf`` in the
    cache folder (``$STEERFLOW_CACHE``, else ``~/.cache/steerflow``)."""
    from steerflow.data.cache import default_cache_dir

    return default_cache_dir() / "judges" / "sst2-tfidf"


def load_or_train(
    cache_dir: str | os.PathLike[str],
    train_pairs_fn: Callable[[], Sequence[Pair]],
    dev_pairs_fn: Callable[[], Sequence[Pair]],
    seed: int = 0,
    config: TfidfConfig | None = None,
    judge_cls: type[SST2ClassifierJudge] | None = None,
) -> SST2ClassifierJudge:
    """Reuse the judge saved in ``cache_dir`` if trained on the same data and config, else train.

    ``judge_cls`` (default :class:`SST2ClassifierJudge`) is the TF-IDF judge class to load or
    train: a subclass for another attribute keeps its own name and file format.

    The data functions are always called (reading SST-2 takes well under a second); training is
    skipped when the saved manifest's ``data_sha256``, config and seed match. A cached judge that
    fails to load is retrained and overwritten, with a warning.
    """
    config = config or TfidfConfig()
    judge_cls = judge_cls or SST2ClassifierJudge
    train_pairs, dev_pairs = list(train_pairs_fn()), list(dev_pairs_fn())
    fingerprint = data_fingerprint(train_pairs, dev_pairs)
    directory = Path(cache_dir)
    if (directory / "manifest.json").is_file():
        try:
            judge = judge_cls.load(directory)
            if (judge.meta.get("data_sha256"), judge.config, judge.meta.get("seed")) == (
                fingerprint,
                config,
                seed,
            ):
                return judge
        except DataError as exc:
            warnings.warn(f"retraining the {judge_cls.name} judge: cached copy unusable ({exc})",
                          stacklevel=2)
    judge = judge_cls.train(train_pairs, dev_pairs, seed=seed, config=config)
    judge.save(directory)
    return judge
