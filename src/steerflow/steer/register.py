"""The register (domain) attribute: movie-review text (+1) against encyclopedic text (−1).

A second attribute beside sentiment that we can label offline from the data we have: SST-2's
sentences are movie reviews, WikiText-2's are Wikipedia articles. Both are put in the LM's text
style first (:func:`~steerflow.steer.data.normalize_sst2`), so the label is what is said and how,
not the tokenisation.

Every training split is cut in two halves by position (even rows, odd rows): the **experts**
(DExperts' expert and anti-expert of the register axis, :func:`expert_examples`) learn from the
even half and the **judge** (:func:`judge_pairs`) from the odd half, so the judge is trained on
text held apart from the models it judges; its held-out accuracy is measured on SST-2 dev and
WikiText-2 valid, which neither saw. The judge reads word windows the length of an open-ended
continuation (:data:`WINDOW_WORDS`), cut from inside sentences, as continuations are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from steerflow.errors import DataError

#: the attribute's name and its two poles (u = +1, u = −1)
NAME = "register"
POLES = ("movie review", "encyclopedic")
#: word windows the judge trains and is tested on: as long as a 20-token continuation or shorter
WINDOW_WORDS = (6, 20)
#: sentences shorter than this are dropped (SST-2 train holds many short phrases)
MIN_WORDS = 6

_SENTENCE_END = re.compile(r"(?<=[.!?]) +")


def encyclopedic_sentences(text: str, min_words: int = MIN_WORDS) -> list[str]:
    """The sentences of a WikiText-2 split (headings skipped) of at least ``min_words`` words."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        out += [s for s in _SENTENCE_END.split(line) if len(s.split()) >= min_words]
    return out


def labelled_movie_sentences(source, split: str, min_words: int = MIN_WORDS
                             ) -> list[tuple[str, int]]:
    """SST-2 ``split``'s ``(sentence, label)`` rows of at least ``min_words`` words in the LM's
    text style (label 1 positive, 0 negative), in file order."""
    from steerflow.data import load_sst2
    from steerflow.steer.data import lm_text_style, normalize_sst2

    style = lm_text_style(source)
    return [(normalize_sst2(t, style), y) for t, y in load_sst2(source, split)
            if len(t.split()) >= min_words]


def movie_sentences(source, split: str, min_words: int = MIN_WORDS, balanced: bool = True
                    ) -> list[str]:
    """SST-2 ``split``'s sentences of at least ``min_words`` words in the LM's text style; with
    ``balanced``, as many positive as negative ones (the first of the larger class, file order
    kept), so the register carries no sentiment."""
    rows = labelled_movie_sentences(source, split, min_words)
    counts = [sum(1 for _, y in rows if y == label) for label in (0, 1)]
    if not all(counts):
        raise DataError(f"SST-2 {split}: no sentence of {min_words}+ words for one of the labels")
    n = min(counts) if balanced else max(counts)
    seen = [0, 0]
    out = []
    for text, y in rows:  # file order; the first n of each label
        if seen[y] < n:
            out.append(text)
        seen[y] += 1
    return out


def half(texts: Sequence[str], which: int) -> list[str]:
    """Every other text: ``which`` = 0 the even positions (the experts'), 1 the odd (the judge's)."""
    return list(texts[which::2])


def windows(texts: Sequence[str], seed: int, words: tuple[int, int] = WINDOW_WORDS) -> list[str]:
    """One word window of each text: a seeded length in ``words`` (at most the text's), at a
    seeded start."""
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        split = text.split()
        n = min(len(split), int(rng.integers(words[0], words[1] + 1)))
        start = int(rng.integers(0, len(split) - n + 1))
        out.append(" ".join(split[start: start + n]))
    return out


def _sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """At most ``n`` of ``texts``, a seeded sample kept in order."""
    if len(texts) <= n:
        return list(texts)
    pick = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in pick]


def judge_pairs(source, per_class: int, seed: int = 0
                ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(train, held_out)`` ``(text, label)`` pairs of the register judge (label 1 = movie
    review): windows of the judge's halves of SST-2 train and WikiText-2 train (at most
    ``per_class`` each, as many of one as of the other), and windows of SST-2 dev and as many WikiText-2 valid sentences."""
    from steerflow.data import load_lm_texts

    texts = load_lm_texts(source)
    movie = _sample(half(movie_sentences(source, "train"), 1), per_class, seed)
    wiki = _sample(half(encyclopedic_sentences(texts["train"]), 1), len(movie), seed + 1)
    dev_movie = movie_sentences(source, "dev", balanced=False)
    dev_wiki = _sample(encyclopedic_sentences(texts["valid"]), len(dev_movie), seed + 2)
    if not (movie and wiki and dev_movie and dev_wiki):
        raise DataError("the register judge needs SST-2 and WikiText-2 sentences of "
                        f"{MIN_WORDS}+ words in train, dev and valid")

    def pairs(pos: list[str], neg: list[str], salt: int) -> list[tuple[str, int]]:
        return ([(t, 1) for t in windows(pos, seed + salt)]
                + [(t, 0) for t in windows(neg, seed + salt + 1)])

    return pairs(movie, wiki, 10), pairs(dev_movie, dev_wiki, 20)


def held_out_poles(source, attribute: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """Human text at each pole of ``attribute`` (+1 first), which no model or judge of the study
    trains on (the judges' held-out accuracies are measured on the same splits), as word windows the length of a continuation (:func:`windows`):

    * ``sentiment``: positive against negative SST-2 dev sentences (both movie reviews);
    * ``register``: SST-2 dev sentences, as many positive as negative, against as many
      WikiText-2 valid sentences (the same sentiment-free mix on the review side).
    """
    from steerflow.data import load_lm_texts

    if attribute == "sentiment":
        rows = labelled_movie_sentences(source, "dev")
        plus, minus = ([t for t, y in rows if y == label] for label in (1, 0))
    elif attribute == NAME:
        plus = movie_sentences(source, "dev")
        minus = _sample(encyclopedic_sentences(load_lm_texts(source)["valid"]), len(plus),
                        seed + 3)
    else:
        raise DataError(f"no held-out text for the attribute {attribute!r}")
    if not (plus and minus):
        raise DataError(f"no held-out sentences of {MIN_WORDS}+ words at a pole of {attribute}")
    return windows(plus, seed + 30), windows(minus, seed + 31)


def expert_examples(source, per_class: int, seed: int = 0) -> list[dict]:
    """``{"text", "u"}`` records of the register experts: the experts' halves of SST-2 train
    (u = +1) and WikiText-2 train (u = −1), whole sentences, at most ``per_class`` each."""
    from steerflow.data import load_lm_texts

    movie = _sample(half(movie_sentences(source, "train"), 0), per_class, seed)
    wiki = _sample(half(encyclopedic_sentences(load_lm_texts(source)["train"]), 0), per_class,
                   seed + 1)
    if not (movie and wiki):
        raise DataError(f"the register experts need SST-2 and WikiText-2 train sentences of "
                        f"{MIN_WORDS}+ words")
    return [{"text": t, "u": [1.0]} for t in movie] + [{"text": t, "u": [-1.0]} for t in wiki]


def write_expert_data(source, path: str | Path, per_class: int, seed: int = 0) -> Path:
    """:func:`expert_examples` as a JSON-lines file at ``path`` (``--task expert --steer-data``
    trains each pole's expert on it: ``--expert-label 1`` movie review, ``-1`` encyclopedic)."""
    from steerflow.io import atomic_write_text

    records = expert_examples(source, per_class, seed)
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in records))
    return Path(path)
