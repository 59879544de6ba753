"""TF-IDF features: the n-gram extractors and a block against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from steerflow.steer.judges.tfidf import TfidfBlock, char_wb_ngrams, word_ngrams

from .conftest import synthetic_pairs


def test_ngram_extractors() -> None:
    assert word_ngrams(["a", "b", "c"], 1, 2) == ["a", "b", "c", "a b", "b c"]
    assert char_wb_ngrams(["ab"], 3, 4) == [" ab", "ab ", " ab "]
    assert char_wb_ngrams(["a"], 4, 5) == []  # " a " is shorter than 4 characters


# ------------------------------------------------------------------ TF-IDF features


@pytest.mark.parametrize("kind, ngram_range, min_df", [("word", (1, 2), 1), ("char_wb", (3, 5), 2)])
def test_tfidf_block_matches_sklearn(kind: str, ngram_range: tuple[int, int], min_df: int) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [text.split() for text, _ in synthetic_pairs(60, 3)] + [[], ["great", "great", "great"]]
    extract = word_ngrams if kind == "word" else char_wb_ngrams
    reference = TfidfVectorizer(
        analyzer=lambda d: extract(d, *ngram_range), sublinear_tf=True, min_df=min_df
    )
    expected = reference.fit_transform(docs).toarray()
    block, fitted = TfidfBlock.fit_transform(docs, kind, ngram_range, min_df)
    assert list(block.terms) == list(reference.get_feature_names_out())
    np.testing.assert_allclose(block.idf, reference.idf_, rtol=1e-12)
    np.testing.assert_allclose(fitted.toarray(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(block.transform(docs).toarray(), expected, rtol=1e-12, atol=1e-15)
