"""Fixtures for the data-layer tests: the real data folder (if $STEERFLOW_DATA is set) and small
generated data folders with the same layout."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from steerflow.data.source import DataSource

WORDS = (
    "the a movie film was is good bad great awful plot actor scene story cat dog sat ran on "
    "in of and it 's not very quite funny boring long short music score , . ( ) 1990 @-@ <unk>"
).split()


def generated_lines(n_lines: int, seed: int) -> list[str]:
    """WikiText-like lines: a leading space, words separated by spaces, a trailing newline."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.1:
            lines.append(" \n")
        else:
            lines.append(
                " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) + " \n"
            )
    return lines


def write_layout(root: Path, texts: dict[str, str] | None = None) -> Path:
    """A full data folder under ``root``: generated WikiText and SST-2, placeholder GPT-2 files."""
    texts = texts or {
        s: "".join(generated_lines(n, seed))
        for s, n, seed in (("train", 300, 0), ("valid", 40, 1), ("test", 40, 2))
    }
    (root / "wikitext-2").mkdir(parents=True)
    for split, text in texts.items():
        (root / "wikitext-2" / f"{split}.txt").write_text(text, encoding="utf-8")
    (root / "sst2").mkdir()
    for split in ("train", "dev"):
        (root / "sst2" / f"{split}.tsv").write_text(
            "sentence\tlabel\na good movie \t1\na bad movie \t0\n", encoding="utf-8"
        )
    (root / "gpt2-tokenizer").mkdir()
    (root / "gpt2-tokenizer" / "encoder.json").write_text("{}", encoding="utf-8")
    (root / "gpt2-tokenizer" / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def make_layout():
    """The :func:`write_layout` function, for tests that need several data folders."""
    return write_layout


@pytest.fixture(scope="session")
def make_lines():
    """The :func:`generated_lines` function: deterministic WikiText-like lines."""
    return generated_lines


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A small generated data folder with the full layout."""
    return write_layout(tmp_path / "data")


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
