"""Data source resolution: --data-dir, then $STEERFLOW_DATA, then the Hub; clear errors."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerflow.data.source import ENV_VAR, DataSource, resolve_data_source
from steerflow.errors import DataError


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def second_root(tmp_path: Path, make_layout) -> Path:
    return make_layout(tmp_path / "other")


def test_argument_wins_over_env(tiny_root: Path, second_root: Path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(second_root))
    source = resolve_data_source(tiny_root)
    assert source == DataSource("local", tiny_root)
    assert source.describe() == f"local folder {tiny_root} (from --data-dir)"


def test_env_used_without_argument(second_root: Path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(second_root))
    source = resolve_data_source(allow_hub=False)
    assert source.kind == "local" and source.root == second_root
    assert source.describe() == f"local folder {second_root} (from $STEERFLOW_DATA)"


def test_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        resolve_data_source(missing)
    assert str(missing) in str(info.value)


def test_incomplete_layout_lists_missing_files(tiny_root: Path) -> None:
    (tiny_root / "sst2" / "dev.tsv").unlink()
    (tiny_root / "wikitext-2" / "test.txt").unlink()
    with pytest.raises(DataError) as info:
        resolve_data_source(tiny_root)
    message = str(info.value)
    assert str(tiny_root) in message
    assert "sst2/dev.tsv" in message and "wikitext-2/test.txt" in message
    assert "sst2/train.tsv" not in message


def test_require_limits_the_checked_layout(tiny_root: Path) -> None:
    (tiny_root / "sst2" / "dev.tsv").unlink()
    assert resolve_data_source(tiny_root, require=("wikitext-2",)).root == tiny_root


def test_invalid_env_folder_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"\$STEERFLOW_DATA"):
        resolve_data_source()


def _assert_lists_all_options(message: str) -> None:
    assert "--data-dir" in message
    assert "STEERFLOW_DATA" in message
    assert "pip install steerflow[hub]" in message and "network" in message


def test_nothing_found_names_all_options() -> None:
    with pytest.raises(DataError) as info:
        resolve_data_source(allow_hub=False)
    _assert_lists_all_options(str(info.value))


def test_nothing_found_without_datasets(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `datasets` unimportable
    with pytest.raises(DataError) as info:
        resolve_data_source(allow_hub=True)
    _assert_lists_all_options(str(info.value))
    assert "not installed" in str(info.value)


def test_hub_fallback_says_what_it_fetches(caplog) -> None:
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("the optional `datasets` package is not installed")
    with caplog.at_level(logging.INFO, logger="steerflow.data.source"):
        source = resolve_data_source()
    assert source == DataSource("hub", None)
    assert source.describe() == "Hugging Face Hub via `datasets`"
    assert "wikitext" in caplog.text.lower() and "sst2" in caplog.text.lower()


def test_datasource_validates_kind_and_root(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        DataSource("ftp", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        DataSource("local", None)
    with pytest.raises(DataError):
        DataSource("hub", tmp_path)
    assert DataSource("local", str(tmp_path)).root == tmp_path  # type: ignore[arg-type]


def test_import_does_not_load_datasets() -> None:
    code = "import sys, steerflow.data; assert 'datasets' not in sys.modules, 'datasets imported'"
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
