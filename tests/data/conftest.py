"""Fixtures for the data-layer tests: the real data folder (if $STEERFLOW_DATA is set) and small
generated data folders with the same layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steerflow.data.source import DataSource

WORDS = (
    "the a movie film was is good bad great awful plot actor scene story cat dog sat ran on "
    "in of and it 's not very quite funny boring long short music score , . ( ) 1990 @-@ <unk>"
).split()


#: the data-layer folders: the shared fake data writer's WikiText splits (one line in ten blank),
#: two SST-2 rows and placeholder GPT-2 tokenizer files
LAYOUT_OPTIONS = dict(words=WORDS, blank_rate=0.1, sst2=[("a good movie ", 1), ("a bad movie ", 0)],
                      gpt2_placeholder=True)


@pytest.fixture(scope="session")
def make_layout(make_fake_data):
    """``make_layout(root, texts=None) -> root``: a full data folder under ``root`` (generated
    WikiText, or ``texts`` by split; SST-2; placeholder GPT-2 files)."""
    def write_layout(root: Path, texts: dict[str, str] | None = None) -> Path:
        return make_fake_data(root, texts=texts, **LAYOUT_OPTIONS)

    return write_layout


@pytest.fixture(scope="session")
def make_lines(make_fake_lines):
    """``make_lines(n, seed) -> list[str]``: deterministic WikiText-like lines, one in ten blank."""
    def lines(n_lines: int, seed: int) -> list[str]:
        return make_fake_lines(n_lines, seed, WORDS, blank_rate=0.1).splitlines(keepends=True)

    return lines


@pytest.fixture
def tiny_root(tmp_path: Path, make_layout) -> Path:
    """A small generated data folder with the full layout."""
    return make_layout(tmp_path / "data")


@pytest.fixture
def tiny_source(tiny_root: Path) -> DataSource:
    """A local DataSource on :func:`tiny_root`."""
    return DataSource("local", tiny_root)


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real data folder from $STEERFLOW_DATA; the test is skipped if it is unset."""
    env = os.environ.get("STEERFLOW_DATA")
    if not env:
        pytest.skip("STEERFLOW_DATA is not set; real-data test skipped")
    return Path(env)


@pytest.fixture(scope="session")
def real_source(real_root: Path) -> DataSource:
    """A local DataSource on the real data folder."""
    return DataSource("local", real_root)


@pytest.fixture(scope="session")
def gpt2(real_source: DataSource):
    """GPT-2's tokenizer built from the real data folder."""
    from steerflow.data.tokenizer import build_tokenizer

    return build_tokenizer("gpt2", real_source)
