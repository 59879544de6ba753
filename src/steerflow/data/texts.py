"""The WikiText-2 texts: the local copy's split files or the Hub's raw variant.

Kept apart from the token caches (:mod:`steerflow.data.wikitext`) because the tokenizer trainer
(:mod:`steerflow.data.tokenizer`) reads these texts too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from steerflow.data.source import DataSource
from steerflow.errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
HUB_DATASET = ("Salesforce/wikitext", "wikitext-2-raw-v1")
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def read_data_file(path: Path, what: str = "data file") -> str:
    """The UTF-8 text of ``path``; DataError naming the file (as ``what``) if missing, empty or
    not UTF-8."""
    if not path.is_file():
        raise DataError(f"{what} {path} is missing")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{what} {path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not valid UTF-8 (byte {exc.start})") from exc


def load_lm_texts(source: DataSource) -> dict[str, str]:
    """The WikiText-2 train/valid/test texts of ``source``.

    Local sources read ``wikitext-2/{train,valid,test}.txt`` (the tokenized v1 form); the Hub gives
    ``wikitext-2-raw-v1`` with its lines joined.

    Raises:
        DataError: a file is missing, empty or not UTF-8 (the message names it).
    """
    if source.kind == "hub":
        return _load_hub_texts()
    return {split: read_data_file(source.path("wikitext-2", f"{split}.txt")) for split in SPLITS}


def _load_hub_texts() -> dict[str, str]:
    """WikiText-2 raw from the Hub via ``datasets`` (imported here: it is an optional extra)."""
    import datasets

    logger.info("Loading %s (%s) from the Hugging Face Hub", *HUB_DATASET)
    try:
        dataset = datasets.load_dataset(*HUB_DATASET)
    except Exception as exc:  # network and Hub errors come in many types
        raise DataError(
            f"could not load {HUB_DATASET[0]} ({HUB_DATASET[1]}) from the Hub: {exc}"
        ) from exc
    return {split: join_hub_lines(dataset[name]["text"]) for split, name in _HUB_SPLITS.items()}


def join_hub_lines(lines: list[str]) -> str:
    """Join the Hub's per-line records (each already ending in a newline) into one text."""
    text = "".join(lines)
    if not text.strip():
        raise DataError(f"{HUB_DATASET[0]} ({HUB_DATASET[1]}) returned an empty split")
    return text
