"""Where the data comes from: a local folder (``--data-dir`` or ``$STEERFLOW_DATA``) or the Hub.

A local folder has the layout of ``shared/data``::

    wikitext-2/{train,valid,test}.txt     WikiText-2 v1 (tokenized form)
    sst2/{train,dev}.tsv                  GLUE SST-2, header ``sentence<TAB>label``
    gpt2-tokenizer/{encoder.json,vocab.bpe}  OpenAI GPT-2 BPE files

The Hugging Face Hub is the fallback when neither is given and the optional ``datasets`` package
(``pip install steerflow[hub]``) is importable; it needs a network connection.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from steerflow.errors import DataError

logger = logging.getLogger(__name__)

ENV_VAR = "STEERFLOW_DATA"

#: Files a complete local data folder holds, by dataset sub-folder.
LAYOUT: dict[str, tuple[str, ...]] = {
    "wikitext-2": ("train.txt", "valid.txt", "test.txt"),
    "sst2": ("train.tsv", "dev.tsv"),
    "gpt2-tokenizer": ("encoder.json", "vocab.bpe"),
}

#: What the Hub fallback downloads (on first use; `datasets` caches it afterwards).
HUB_CONTENTS = (
    "WikiText-2 raw (Salesforce/wikitext, config wikitext-2-raw-v1, ~13 MB)",
    "SST-2 (stanfordnlp/sst2, ~5 MB)",
    "the GPT-2 tokenizer (gpt2/tokenizer.json, ~1.4 MB)",
)

_ORIGIN_TEXT = {
    "argument": " (from --data-dir)",
    "env": f" (from ${ENV_VAR})",
    "direct": "",
}


@dataclass(frozen=True)
class DataSource:
    """A resolved data source.

    Attributes:
        kind: ``"local"`` for a folder with the layout in :data:`LAYOUT`, ``"hub"`` for the
            Hugging Face Hub through the ``datasets`` package.
        root: The local folder (``None`` for the Hub).
        origin: How the folder was chosen (``"argument"``, ``"env"``, ``"direct"``, ``"hub"``);
            only used by :meth:`describe`, not part of equality.
    """

    kind: Literal["local", "hub"]
    root: Path | None
    origin: str = field(default="direct", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("local", "hub"):
            raise DataError(f"DataSource.kind must be 'local' or 'hub', got {self.kind!r}")
        if self.kind == "local" and self.root is None:
            raise DataError("a local DataSource needs a root folder")
        if self.kind == "hub" and self.root is not None:
            raise DataError("a hub DataSource has no root folder; pass root=None")
        if self.root is not None and not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``local folder /x (from --data-dir)``."""
        if self.kind == "hub":
            return "Hugging Face Hub via `datasets`"
        return f"local folder {self.root}{_ORIGIN_TEXT.get(self.origin, '')}"

    def path(self, dataset: str, filename: str) -> Path:
        """The path of ``<root>/<dataset>/<filename>`` (local sources only)."""
        if self.root is None:
            raise DataError(f"{self.describe()} has no local files ({dataset}/{filename})")
        return self.root / dataset / filename


def missing_files(root: Path, datasets: tuple[str, ...] = tuple(LAYOUT)) -> list[str]:
    """Relative paths of the layout files of ``datasets`` that are absent under ``root``."""
    missing = []
    for dataset in datasets:
        if dataset not in LAYOUT:
            raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(LAYOUT)}")
        missing += [
            f"{dataset}/{name}" for name in LAYOUT[dataset] if not (root / dataset / name).is_file()
        ]
    return missing


def _check_local(root: Path, how: str, datasets: tuple[str, ...]) -> None:
    """Raise a DataError naming ``root`` if it is not a folder with the required layout."""
    if not root.exists():
        raise DataError(f"data folder {root} ({how}) does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} ({how}) is not a directory")
    missing = missing_files(root, datasets)
    if missing:
        raise DataError(
            f"data folder {root} ({how}) lacks the expected layout; missing: {', '.join(missing)}"
        )


def hub_available() -> bool:
    """Whether the optional ``datasets`` package (the Hub fallback) can be imported."""
    return importlib.util.find_spec("datasets") is not None


def resolve_data_source(
    data_dir: str | os.PathLike[str] | None = None,
    allow_hub: bool = True,
    *,
    require: tuple[str, ...] = tuple(LAYOUT),
) -> DataSource:
    """Find the data: ``data_dir``, then ``$STEERFLOW_DATA``, then the Hugging Face Hub.

    Args:
        data_dir: A local folder (the CLI's ``--data-dir``). If given it must be valid; there is
            no silent fallback.
        allow_hub: Allow the Hub fallback (needs ``datasets`` and a network connection).
        require: The dataset sub-folders (keys of :data:`LAYOUT`) a local folder must hold.

    Raises:
        DataError: a given folder does not exist or lacks files (the message names them), or no
            source is available (the message lists all three ways to provide one).
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        _check_local(root, "from --data-dir", require)
        return DataSource("local", root, origin="argument")
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        _check_local(root, f"from ${ENV_VAR}", require)
        return DataSource("local", root, origin="env")
    if allow_hub and hub_available():
        logger.warning(
            "No local data given; using the Hugging Face Hub (network needed). It will fetch: %s.",
            "; ".join(HUB_CONTENTS),
        )
        return DataSource("hub", None, origin="hub")
    raise DataError(_no_source_message(allow_hub))


def _no_source_message(allow_hub: bool) -> str:
    """The single error message listing every way to provide data."""
    hub_note = (
        "the Hub fallback is disabled here"
        if not allow_hub
        else "the `datasets` package is not installed"
    )
    return (
        "no data source found. Provide one of: (1) --data-dir PATH, a folder with "
        f"{', '.join(f'{d}/' for d in LAYOUT)}; (2) the environment variable {ENV_VAR}=PATH to "
        "such a folder; (3) `pip install steerflow[hub]` and a network connection, to download "
        f"from the Hugging Face Hub ({hub_note})."
    )
