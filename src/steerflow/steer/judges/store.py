"""Persistence of trained judges: JSON and ``.npy`` files (never pickle) with a manifest.

``manifest.json`` is written last and lists the sha256 of every other file, so a judge folder
is either complete and intact or refused on load with a :class:`~steerflow.errors.DataError`
naming the bad file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steerflow.errors import DataError
from steerflow.io import atomic_write_bytes, sha256_file, write_json

def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or unparsable file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"missing judge file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupt judge file {path}: {exc}") from exc


def _npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in the ``.npy`` format (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_judge_files(
    directory: Path,
    arrays: Mapping[str, np.ndarray],
    jsons: Mapping[str, Any],
    manifest: dict[str, Any],
) -> None:
    """Write arrays (.npy) and JSON files, then ``manifest.json`` listing their sha256 (last).

    Each file is written atomically (:mod:`steerflow.io`), so a failed write names the file.
    """
    for name, array in arrays.items():
        atomic_write_bytes(directory / name, _npy_bytes(array))
    for name, obj in jsons.items():
        write_json(directory / name, obj)
    manifest["files"] = {name: sha256_file(directory / name) for name in [*arrays, *jsons]}
    write_json(directory / "manifest.json", manifest)


def read_manifest(directory: Path, expected_format: str) -> dict[str, Any]:
    """Read ``manifest.json`` and check its format tag and the sha256 of every file it lists."""
    manifest = read_json(directory / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        raise DataError(f"{directory / 'manifest.json'} is not a {expected_format!r} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise DataError(f"corrupt judge file {directory / 'manifest.json'}: no 'files' table")
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"missing judge file: {path}")
        if sha256_file(path) != digest:
            raise DataError(f"corrupt judge file {path}: sha256 does not match manifest.json")
    return manifest


def listed_file(directory: Path, manifest: Mapping[str, Any], name: str) -> Path:
    """Path of data file ``name``, which must be listed (and so checksummed) in the manifest."""
    if name not in manifest["files"]:
        raise DataError(f"judge file {directory / name} is not listed in manifest.json")
    return directory / name


def load_vector(path: Path, length: int | None = None) -> np.ndarray:
    """Load a finite 1-D float64 ``.npy`` (optionally of a given length) without pickle."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt judge file {path}: {exc}") from exc
    if (
        array.dtype != np.float64
        or array.ndim != 1
        or (length is not None and array.shape[0] != length)
    ):
        raise DataError(
            f"corrupt judge file {path}: expected float64 vector of length {length}, "
            f"got {array.dtype} {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise DataError(f"corrupt judge file {path}: non-finite values")
    return array
