"""WikiText-2 for language modelling: load the splits, encode them once into cached token arrays.

The cache folder ``<cache_dir>/wikitext2-<key>/`` holds ``{train,valid,test}.bin`` (raw token ids,
``uint16`` when the vocabulary fits, else ``uint32``) and ``manifest.json``. ``key`` hashes the text
of every split and the tokenizer's ``tokenizer.json``, so new data or a new tokenizer gets a new
folder. Files are written to temporary names and renamed; the manifest is written last and checked
(sizes and sha256) on reuse, so a half-written or damaged cache is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from steerflow.data.source import DataSource
from steerflow.data.tokenizer import Tokenizer
from steerflow.data.texts import SPLITS, load_lm_texts
from steerflow.io import atomic_write, atomic_write_text, sha256_file, sha256_text

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
#: Bump when the cache layout or the encoding procedure changes.
CACHE_FORMAT = 1
#: Cut points for chunked encoding: between a non-space character and a space that starts a word.
#: Byte-level BPE (GPT-2 regex) pre-tokenizes there anyway, so chunked == whole-text encoding.
_SAFE_CUT = re.compile(r"(?<=\S)(?= \S)")
_CHUNK_CHARS = 1 << 15


@dataclass(frozen=True)
class PreparedLM:
    """Token arrays of the WikiText-2 splits, memory-mapped from the cache.

    Attributes:
        splits: ``{"train"|"valid"|"test": 1-D read-only memmap of token ids}``.
        tokens_per_word: Tokens per whitespace-separated word, per split.
        manifest: The cache's ``manifest.json`` content.
        tokenizer: The tokenizer the ids come from.
        cache_dir: The folder holding the ``.bin`` files and the manifest.
    """

    splits: dict[str, np.memmap]
    tokens_per_word: dict[str, float]
    manifest: dict
    tokenizer: Tokenizer
    cache_dir: Path


def split_for_encoding(text: str, chunk_chars: int = _CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``chunk_chars`` characters at safe pre-token boundaries.

    ``"".join(pieces) == text``; encoding the pieces separately with a byte-level BPE gives the
    same ids as encoding ``text`` in one call (a cut never falls inside a pre-token).
    """
    pieces, start = [], 0
    while len(text) - start > chunk_chars:
        match = _SAFE_CUT.search(text, start + chunk_chars)
        if match is None:
            break
        pieces.append(text[start : match.start()])
        start = match.start()
    pieces.append(text[start:])
    return pieces


def encode_text(
    tokenizer: Tokenizer, text: str, progress: bool = False, desc: str = "encode"
) -> np.ndarray:
    """Encode ``text`` in parallel chunks into a 1-D ``int64`` array (same ids as one call)."""
    pieces = split_for_encoding(text)
    batch = 64
    parts: list[np.ndarray] = []
    with tqdm(
        total=len(text), desc=desc, unit="char", unit_scale=True, disable=not progress
    ) as bar:
        for i in range(0, len(pieces), batch):
            chunk = pieces[i : i + batch]
            parts += [np.asarray(ids, dtype=np.int64) for ids in tokenizer.encode_batch(chunk)]
            bar.update(sum(map(len, chunk)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` if every id ``< vocab_size`` fits in it, else ``uint32``."""
    return np.dtype(np.uint16 if vocab_size - 1 <= np.iinfo(np.uint16).max else np.uint32)


def cache_key(texts: dict[str, str], tokenizer: Tokenizer) -> str:
    """Hash of (data content, tokenizer.json, cache format): the name of the cache subfolder."""
    identity = {
        "format": CACHE_FORMAT,
        "texts": {split: sha256_text(texts[split]) for split in SPLITS},
        "tokenizer": tokenizer.content_hash(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _steerflow_version() -> str:
    """The installed steerflow version, or the package's ``__version__``, or ``unknown``."""
    from importlib import metadata

    try:
        return metadata.version("steerflow")
    except metadata.PackageNotFoundError:
        import steerflow

        return str(getattr(steerflow, "__version__", "unknown"))


def _split_entry(text: str, ids: np.ndarray, path: Path) -> dict:
    """The manifest entry of one encoded split."""
    words = len(text.split())
    return {
        "file": path.name,
        "tokens": int(ids.size),
        "words": words,
        "tokens_per_word": ids.size / words,
        "sha256": sha256_file(path),
        "text_sha256": sha256_text(text),
    }


def _build_cache(
    folder: Path, texts: dict[str, str], tokenizer: Tokenizer, source: DataSource, progress: bool
) -> dict:
    """Encode every split into ``folder`` and write the manifest last; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    entries = {}
    for split in SPLITS:
        ids = encode_text(tokenizer, texts[split], progress, desc=f"{tokenizer.name} {split}")
        path = folder / f"{split}.bin"
        _write_ids(path, ids, dtype)
        entries[split] = _split_entry(texts[split], ids, path)
    manifest = {
        "format": CACHE_FORMAT,
        "dataset": "wikitext-2",
        "source": source.describe(),
        "source_kind": source.kind,
        "tokenizer": {
            "name": tokenizer.name,
            "sha256": tokenizer.content_hash(),
            "vocab_size": tokenizer.vocab_size,
        },
        "dtype": dtype.name,
        "splits": entries,
        "steerflow_version": _steerflow_version(),
    }
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def cache_problems(folder: Path, tokenizer: Tokenizer) -> list[str]:
    """Why the cache in ``folder`` cannot be reused (empty list: it is complete and intact)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        dtype = np.dtype(manifest["dtype"])
        entries = {split: manifest["splits"][split] for split in SPLITS}
        tokenizer_hash = manifest["tokenizer"]["sha256"]
        for entry in entries.values():
            if not isinstance(entry["tokens"], int) or not isinstance(entry["sha256"], str):
                raise TypeError("split entries need an int 'tokens' and a str 'sha256'")
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path} is unreadable: {exc!r}"]
    if manifest.get("format") != CACHE_FORMAT or tokenizer_hash != tokenizer.content_hash():
        return [f"{path} was written for another cache format or tokenizer"]
    return [
        p for split, entry in entries.items() for p in _bin_problems(folder, split, entry, dtype)
    ]


def _bin_problems(folder: Path, split: str, entry: dict, dtype: np.dtype) -> Iterator[str]:
    """Size and checksum problems of one split's ``.bin`` file."""
    path = folder / f"{split}.bin"
    if not path.is_file():
        yield f"{path} is missing"
    elif path.stat().st_size != entry["tokens"] * dtype.itemsize:
        yield f"{path} has {path.stat().st_size} bytes, expected {entry['tokens'] * dtype.itemsize}"
    elif sha256_file(path) != entry["sha256"]:
        yield f"{path} does not match its sha256 in the manifest"


def _open_prepared(folder: Path, manifest: dict, tokenizer: Tokenizer) -> PreparedLM:
    """Memory-map the ``.bin`` files described by ``manifest``."""
    dtype = np.dtype(manifest["dtype"])
    entries = manifest["splits"]
    splits = {
        split: np.memmap(
            folder / f"{split}.bin", dtype=dtype, mode="r", shape=(entries[split]["tokens"],)
        )
        for split in SPLITS
    }
    tokens_per_word = {split: entries[split]["tokens_per_word"] for split in SPLITS}
    return PreparedLM(splits, tokens_per_word, manifest, tokenizer, folder)


def prepare_lm_data(
    source: DataSource,
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike[str],
    progress: bool = True,
) -> PreparedLM:
    """Encode WikiText-2 with ``tokenizer`` once and memory-map the cached token arrays.

    A later call with the same data and tokenizer reuses the cache after checking the manifest,
    the file sizes and checksums; a changed tokenizer or data file gets a fresh cache folder, and a
    damaged cache is rebuilt.

    Args:
        source: Where the text comes from.
        tokenizer: The tokenizer to encode with.
        cache_dir: Parent folder of the cache; ``wikitext2-<key>/`` is created inside.
        progress: Show a tqdm progress bar while encoding.
    """
    texts = load_lm_texts(source)
    folder = Path(cache_dir) / f"wikitext2-{cache_key(texts, tokenizer)}"
    problems = cache_problems(folder, tokenizer)
    if problems:
        if folder.exists():
            logger.warning("Rebuilding token cache %s: %s", folder, "; ".join(problems))
        manifest = _build_cache(folder, texts, tokenizer, source, progress)
    else:
        logger.info("Reusing token cache %s", folder)
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    return _open_prepared(folder, manifest, tokenizer)


def _write_ids(path: Path, ids: np.ndarray, dtype: np.dtype) -> None:
    """Write ``ids`` as raw ``dtype`` values to ``path`` atomically."""
    atomic_write(path, ids.astype(dtype).tofile)
