"""TF-IDF features fitted and applied in NumPy/SciPy, so that saved judges need no pickle.

A :class:`TfidfBlock` is one feature block (word or character n-grams) with its vocabulary and
inverse document frequencies; it reproduces scikit-learn's ``TfidfVectorizer`` with
``sublinear_tf=True, smooth_idf=True, norm="l2"``:

    tf-idf(t, d) = (1 + ln tf(t, d)) · (ln((1 + n) / (1 + df(t))) + 1),   then ‖row‖₂ = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from steerflow.errors import ConfigError, InputError

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
