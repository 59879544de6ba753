"""SST-2 loading: real counts, strict header/label/encoding checks with file names in messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerflow.data.source import DataSource
from steerflow.data.sst2 import load_sst2, rows_from_records
from steerflow.errors import DataError


def test_real_dev_split(real_source: DataSource) -> None:
    rows = load_sst2(real_source, "dev")
    assert len(rows) == 872
    assert sum(label for _, label in rows) == 444
    assert rows[0] == ("it 's a charming and often affecting journey .", 1)
    assert all(s == s.strip() and s for s, _ in rows)


def test_real_train_split(real_source: DataSource) -> None:
    rows = load_sst2(real_source, "train")
    assert len(rows) == 67_349
    assert sum(label for _, label in rows) == 37_569


def test_generated_file(tiny_source: DataSource) -> None:
    assert load_sst2(tiny_source, "train") == [("a good movie", 1), ("a bad movie", 0)]


def _write(source: DataSource, content: bytes) -> Path:
    path = source.root / "sst2" / "dev.tsv"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"text\tlabel\nfine \t1\n", "header 'text\\\\tlabel'"),
        (b"sentence\tlabel\nfine \t1\nworse \t2\n", "line 3: label must be 0 or 1, got '2'"),
        (b"sentence\tlabel\nno tab here\n", "line 2: expected 2 tab-separated fields"),
        (b"sentence\tlabel\n \t1\n", "line 2: empty sentence"),
        (b"sentence\tlabel\ncaf\xe9 \t1\n", "not valid UTF-8"),
        (b"", "is empty"),
    ],
)
def test_malformed_files_raise_with_the_file_name(
    tiny_source: DataSource, content: bytes, match: str
) -> None:
    path = _write(tiny_source, content)
    with pytest.raises(DataError, match=match) as info:
        load_sst2(tiny_source, "dev")
    assert str(path) in str(info.value)


def test_missing_file_and_unknown_split(tiny_source: DataSource) -> None:
    (tiny_source.root / "sst2" / "dev.tsv").unlink()
    with pytest.raises(DataError, match="dev.tsv is missing"):
        load_sst2(tiny_source, "dev")
    with pytest.raises(DataError, match="valid: train, dev"):
        load_sst2(tiny_source, "test")  # type: ignore[arg-type]


def test_hub_records_are_converted_and_checked() -> None:
    records = [
        {"idx": 0, "sentence": "hide new secretions ", "label": 0},
        {"sentence": "great", "label": 1},
    ]
    assert rows_from_records(records, "hub") == [("hide new secretions", 0), ("great", 1)]
    with pytest.raises(DataError, match="record 0: label must be 0 or 1"):
        rows_from_records([{"sentence": "x", "label": -1}], "stanfordnlp/sst2 (test)")
    with pytest.raises(DataError, match="is empty"):
        rows_from_records([], "stanfordnlp/sst2 (validation)")
