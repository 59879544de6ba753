"""Diversity metrics for generated text.

``distinct-n`` (Li et al., 2016, "A Diversity-Promoting Objective Function for Neural Conversation
Models") is the number of unique n-grams divided by the total number of n-grams, pooled over all
texts. A degenerate generator that repeats itself scores near 0; one that never repeats scores 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from steerflow.errors import InputError
from steerflow.steer.judges.text import as_text_list


def _ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    """Yield the contiguous n-grams of one token list (none if it has fewer than ``n`` tokens)."""
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique / total n-grams over all ``texts`` (whitespace tokens; n-grams never cross texts).

    Returns 0.0 when the texts contain no n-gram at all (for example all shorter than ``n`` tokens).
    """
    texts = as_text_list(texts)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        grams = list(_ngrams(text.split(), n))
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def distinct_scores(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1, -2 and -3 of ``texts``, keyed ``distinct_1`` .. ``distinct_3``."""
    return {f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)}
