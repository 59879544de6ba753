"""Text preparation: WikiText clean-up and the PTB-style tokenizer of SST-2."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from steerflow.steer.judges.text import clean_generated_text, prepare_for_classifier, ptb_tokenize


# ------------------------------------------------------------------ text preparation


def test_clean_generated_text_undoes_wikitext_markers() -> None:
    text = "the <unk> film @-@ maker earned 1 @,@ 000 and 3 @.@ 5 stars <|endoftext|>"
    assert clean_generated_text(text) == "the film-maker earned 1,000 and 3.5 stars"
    assert clean_generated_text("  a\n\tb  ") == "a b"


def test_ptb_tokenize_matches_sst2_conventions() -> None:
    assert ptb_tokenize("It's not bad, I can't say it isn't.") == [
        "it",
        "'s",
        "not",
        "bad",
        ",",
        "i",
        "ca",
        "n't",
        "say",
        "it",
        "is",
        "n't",
        ".",
    ]
    assert ptb_tokenize('A "well-made" film (really) by Mr. Smith...') == [
        "a",
        "``",
        "well-made",
        "''",
        "film",
        "(",
        "really",
        ")",
        "by",
        "mr.",
        "smith",
        "...",
    ]
    assert ptb_tokenize("they're here; we've won!") == [
        "they",
        "'re",
        "here",
        ";",
        "we",
        "'ve",
        "won",
        "!",
    ]


def test_ptb_tokenize_leaves_sst2_text_unchanged(sst2: tuple[list, list]) -> None:
    _, dev = sst2
    unchanged = np.mean([ptb_tokenize(text) == text.split() for text, _ in dev])
    assert unchanged >= 0.99


@given(
    st.lists(st.text(alphabet=" \n\t'\"`.,;!?()-@$aAnst<>|kuendoftx19", max_size=30), max_size=6)
)
def test_batched_preparation_equals_per_text(texts: list[str]) -> None:
    """The batched fast path (all texts joined by newlines) equals cleaning and tokenising each."""
    expected = [ptb_tokenize(clean_generated_text(t)) for t in texts]
    assert prepare_for_classifier(texts) == expected
