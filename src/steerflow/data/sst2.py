"""GLUE SST-2 sentences with binary sentiment labels (1 = positive, 0 = negative)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from steerflow.data.source import DataSource
from steerflow.data.texts import read_data_file
from steerflow.errors import DataError

logger = logging.getLogger(__name__)

SST2_SPLITS = ("train", "dev")
HEADER = "sentence\tlabel"
HUB_DATASET = "stanfordnlp/sst2"
_HUB_SPLITS = {"train": "train", "dev": "validation"}


def load_sst2(source: DataSource, split: Literal["train", "dev"]) -> list[tuple[str, int]]:
    """``(sentence, label)`` pairs of an SST-2 split, sentences stripped.

    Local sources read ``sst2/{train,dev}.tsv``; the Hub gives ``stanfordnlp/sst2`` (``dev`` is its
    ``validation`` split).

    Raises:
        DataError: unknown split; missing, empty or non-UTF-8 file; a header other than
            ``sentence<TAB>label``; a malformed row or a label other than 0/1 (with line number).
    """
    if split not in SST2_SPLITS:
        raise DataError(f"unknown SST-2 split {split!r}; valid: {', '.join(SST2_SPLITS)}")
    if source.kind == "hub":
        return _load_hub(split)
    return parse_sst2_file(source.path("sst2", f"{split}.tsv"))


def _read_lines(path: Path) -> list[str]:
    """Lines of a non-empty UTF-8 file; DataError naming the file otherwise."""
    return read_data_file(path, "SST-2 file").splitlines()


def _parse_row(path: Path, lineno: int, line: str) -> tuple[str, int]:
    """One ``sentence<TAB>label`` row."""
    fields = line.split("\t")
    if len(fields) != 2:
        raise DataError(
            f"{path}, line {lineno}: expected 2 tab-separated fields, got {len(fields)}"
        )
    sentence, label = fields[0].strip(), fields[1].strip()
    if label not in ("0", "1"):
        raise DataError(f"{path}, line {lineno}: label must be 0 or 1, got {label!r}")
    if not sentence:
        raise DataError(f"{path}, line {lineno}: empty sentence")
    return sentence, int(label)


def parse_sst2_file(path: Path) -> list[tuple[str, int]]:
    """Parse an SST-2 ``.tsv`` file with header ``sentence<TAB>label``."""
    lines = _read_lines(path)
    if lines[0] != HEADER:
        raise DataError(f"SST-2 file {path} has header {lines[0]!r}; expected {HEADER!r}")
    return [_parse_row(path, n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()]


def rows_from_records(records: Iterable[Mapping[str, object]], where: str) -> list[tuple[str, int]]:
    """``(sentence, label)`` pairs from Hub records with ``sentence`` and ``label`` fields."""
    rows = []
    for n, record in enumerate(records):
        label = record["label"]
        if label not in (0, 1):
            raise DataError(f"{where}, record {n}: label must be 0 or 1, got {label!r}")
        rows.append((str(record["sentence"]).strip(), int(label)))
    if not rows:
        raise DataError(f"{where} is empty")
    return rows


def _load_hub(split: str) -> list[tuple[str, int]]:
    """SST-2 from the Hub via ``datasets`` (imported here: it is an optional extra)."""
    import datasets

    hub_split = _HUB_SPLITS[split]
    logger.info("Loading %s (split %s) from the Hugging Face Hub", HUB_DATASET, hub_split)
    try:
        dataset = datasets.load_dataset(HUB_DATASET, split=hub_split)
    except Exception as exc:  # network and Hub errors come in many types
        raise DataError(f"could not load {HUB_DATASET} ({hub_split}) from the Hub: {exc}") from exc
    return rows_from_records(dataset, f"{HUB_DATASET} ({hub_split})")
