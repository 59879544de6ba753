"""Fixtures for the training tests: a small generated WikiText-like data folder, a shared
prepared-data cache, and a factory of tiny TrainConfigs.

Everything runs on the ``tiny`` preset with one torch thread, so that runs in this process and
in subprocesses do exactly the same arithmetic (bit-for-bit comparisons need that).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from steerflow.train import TrainConfig

TOKENIZER = "bpe:300"
#: the generated WikiText-2 splits: (split, lines, seed); train is ~30k characters
WIKITEXT = (("train", 700, 0), ("valid", 60, 1), ("test", 60, 2))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: tiny models gain nothing from two, and on a busy 2-core machine
    OpenMP threads that spin-wait for each other make a tiny step 100× slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, make_fake_data) -> Path:
    """A data folder with generated WikiText-2 splits (:data:`WIKITEXT`)."""
    return make_fake_data(tmp_path_factory.mktemp("data"), wikitext=WIKITEXT)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(data_dir, cache_dir, tmp_path):
    """``make_cfg(name, **changes)``: a tiny, quiet, single-thread TrainConfig in ``tmp_path/name``."""

    def make(name: str = "run", **changes) -> TrainConfig:
        values = dict(out=str(tmp_path / name), config="tiny", tokenizer=TOKENIZER,
                      data_dir=str(data_dir), cache_dir=str(cache_dir), steps=8, batch_size=4,
                      eval_batches=2, test_batches=2, threads=1, quiet=True, device="cpu")
        values.update(changes)
        return TrainConfig(**values)

    return make


def _cli_args(cfg: TrainConfig) -> list[str]:
    """``steerflow train`` flags equivalent to ``cfg`` (for subprocess runs)."""
    args = ["train", "--config", cfg.config, "--model", cfg.model, "--out", cfg.out,
            "--tokenizer", cfg.tokenizer, "--data-dir", cfg.data_dir, "--cache-dir", cfg.cache_dir,
            "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size),
            "--eval-batches", str(cfg.eval_batches), "--test-batches", str(cfg.test_batches),
            "--save-every", str(cfg.save_every), "--eval-interval", str(cfg.eval_interval),
            "--threads", str(cfg.threads), "--device", cfg.device, "--seed", str(cfg.seed),
            "--quiet"]
    return args


@pytest.fixture
def cli_args():
    """``cli_args(cfg)``: the ``steerflow train`` flags equivalent to a TrainConfig."""
    return _cli_args


@pytest.fixture
def steerflow_cmd():
    """``steerflow_cmd(*args)``: a ``python -m steerflow ...`` command line and its environment."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"

    def command(*args: str) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "steerflow", *args], env

    return command
