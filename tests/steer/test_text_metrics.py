"""Tests of distinct-n, against hand-counted n-grams."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerflow.errors import InputError
from steerflow.steer.text_metrics import distinct_n, distinct_scores


def test_distinct_hand_computed() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 6 total, {the, cat, sat, ran} = 4 unique
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 4 total, 3 unique
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (the cat sat) (the cat ran) -> 2 total, 2 unique
    assert distinct_n(texts, 3) == 1.0


def test_repetitive_text_scores_low() -> None:
    assert distinct_n(["good good good good"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["good good good good"], 2) == pytest.approx(1 / 3)


def test_ngrams_do_not_cross_text_boundaries() -> None:
    # "a b" + "c d": a joined stream would contain the bigram (b, c); per-text counting does not.
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["a b", "b a"], 3) == 0.0  # no text has 3 tokens


def test_no_ngrams_gives_zero() -> None:
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "   "], 1) == 0.0
    assert distinct_n(["one two"], 3) == 0.0


def test_whitespace_tokenisation() -> None:
    assert distinct_n(["a  b\tc\nd"], 1) == 1.0
    assert distinct_n(["a  b\tc\nd"], 4) == 1.0


def test_distinct_scores_keys_and_values() -> None:
    texts = ["the cat sat", "the cat ran"]
    assert distinct_scores(texts) == {
        "distinct_1": pytest.approx(4 / 6),
        "distinct_2": pytest.approx(3 / 4),
        "distinct_3": 1.0,
    }


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_n_rejected(n: object) -> None:
    with pytest.raises(InputError, match="positive integer"):
        distinct_n(["a b"], n)  # type: ignore[arg-type]


def test_bare_string_rejected() -> None:
    with pytest.raises(InputError, match="single string"):
        distinct_n("the cat sat", 1)
    with pytest.raises(InputError, match=r"texts\[1\]"):
        distinct_n(["ok", 3], 1)  # type: ignore[list-item]


@given(st.lists(st.text(alphabet="abc ", max_size=12), max_size=6), st.integers(1, 4))
def test_distinct_is_a_fraction_and_exact_for_unique_tokens(texts: list[str], n: int) -> None:
    value = distinct_n(texts, n)
    assert 0.0 <= value <= 1.0
    total = sum(max(len(t.split()) - n + 1, 0) for t in texts)
    assert (value == 0.0) == (total == 0)
    # Renaming every token to a fresh one makes every n-gram unique.
    counter = iter(range(10**6))
    fresh = [" ".join(f"w{next(counter)}" for _ in t.split()) for t in texts]
    assert distinct_n(fresh, n) == (1.0 if total else 0.0)
