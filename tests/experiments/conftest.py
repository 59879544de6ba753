"""Fixtures for the studies' tests: a generated WikiText-2 folder and a shared token cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, make_fake_data) -> Path:
    """Generated WikiText-2 splits (train ~30k characters), the size the training tests use."""
    return make_fake_data(tmp_path_factory.mktemp("data"),
                          wikitext=(("train", 700, 0), ("valid", 60, 1), ("test", 60, 2)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def one_thread(single_thread):
    """One torch thread: tiny models gain nothing from two on a busy 2-core machine."""
    yield
