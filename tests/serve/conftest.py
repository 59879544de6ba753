"""Fixtures of the playground tests: a tiny checkpoint where u matters, its playground, and one
``steerflow serve`` process on 127.0.0.1 shared by the browser and the load tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .harness import serving, steered_tiny


@pytest.fixture(scope="session")
def steered_dir(tmp_path_factory) -> Path:
    """A tiny hybrid trained to continue "The movie was" positively at u = +1, neutrally at 0 and
    negatively at u = −1 (:func:`harness.steered_tiny`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return steered_tiny(tmp_path_factory.mktemp("serve") / "steered")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def playground(steered_dir):
    from steerflow.serve.session import Playground

    return Playground.load(steered_dir)


@pytest.fixture(scope="session")
def server(steered_dir, tmp_path_factory):
    """``(url, process)`` of ``steerflow serve`` on the steered checkpoint, stopped at the end."""
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with serving(steered_dir, log=log) as running:
        yield running
