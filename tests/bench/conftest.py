"""Benchmark tests run tiny models: one intra-op thread is faster for them and keeps a shared CI
machine's OpenMP threads from waiting on each other."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
