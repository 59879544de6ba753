"""The judge panel of ``steerflow eval steering``: MiniLM by default whenever its packages import,
a visible reason when it cannot run, classifier gates, and trained judges kept in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerflow.steer.judges import embedding
from steerflow.steer.judges.panel import judge_panel

from .conftest import hash_encoder, synthetic_pairs

TRAIN, DEV = synthetic_pairs(300, 0), synthetic_pairs(100, 1)


class CountingEncoder:
    """:func:`hash_encoder` that counts the texts it encodes (training encodes the train set)."""

    def __init__(self) -> None:
        self.texts = 0

    def __call__(self, texts):
        self.texts += len(texts)
        return hash_encoder(texts)


@pytest.fixture
def minilm(monkeypatch):
    """MiniLM importable as far as the panel can tell, its encoder a counting stand-in."""
    encoder = CountingEncoder()
    monkeypatch.setattr(embedding, "load_minilm_encoder", lambda: encoder)
    monkeypatch.setattr(embedding, "minilm_unavailable", lambda: None)
    return encoder


def test_minilm_joins_by_default_and_only_classifiers_gate(minilm, tmp_path: Path):
    panel = judge_panel(TRAIN, DEV, seed=0, cache=tmp_path, extra=("sst2-tfidf", "minilm"))
    assert panel.names == ["vader", "sst2-tfidf", "minilm"]  # repeated specs add nothing
    assert panel.gates == ["sst2-tfidf", "minilm"] and panel.skipped == {}
    assert set(panel.dev_accuracy) == {"sst2-tfidf", "minilm"}
    assert panel.dev_accuracy["minilm"] >= 0.9  # separable synthetic sentences


def test_trained_judges_are_reused_from_the_cache(minilm, tmp_path: Path):
    first = judge_panel(TRAIN, DEV, seed=0, cache=tmp_path)
    trained = minilm.texts
    assert trained >= len(TRAIN) and (tmp_path / "minilm" / "manifest.json").is_file()
    again = judge_panel(TRAIN, DEV, seed=0, cache=tmp_path)
    assert minilm.texts == trained  # the cached head: no text encoded again
    texts = [t for t, _ in synthetic_pairs(20, 9)]
    assert (again.judges[2].positive_proba(texts).tobytes()
            == first.judges[2].positive_proba(texts).tobytes())
    judge_panel(TRAIN, DEV, seed=1, cache=tmp_path)  # another seed: trained again
    assert minilm.texts > trained


def test_without_its_packages_minilm_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(embedding, "minilm_unavailable",
                        lambda: "ImportError: No module named 'sentence_transformers'")
    panel = judge_panel(TRAIN, DEV)
    assert panel.names == ["vader", "sst2-tfidf"]
    assert "sentence_transformers" in panel.skipped["minilm"]


def test_minilm_left_out_by_the_settings_is_noted(minilm):
    panel = judge_panel(TRAIN, DEV, minilm=False)
    assert panel.names == ["vader", "sst2-tfidf"] and "--no-minilm" in panel.skipped["minilm"]
    assert minilm.texts == 0
    # asked for explicitly, it is built even with the default off
    assert judge_panel(TRAIN, DEV, minilm=False, extra=("minilm",)).names[-1] == "minilm"


def test_minilm_unavailable_reports_a_missing_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # an import of it fails
    reason = embedding.minilm_unavailable()
    assert "sentence_transformers" in reason and "pip install steerflow[eval]" in reason
