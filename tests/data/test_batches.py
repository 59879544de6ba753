"""LM batches: a pure function of (seed, step), DDP ranks partition the global batch exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steerflow.data.batches import eval_batches, lm_batch, num_eval_windows
from steerflow.errors import DataError

N = 5_000
# Token ids equal to their position make every check about offsets exact.
TOKENS = np.arange(N, dtype=np.uint16)


def test_same_seed_and_step_give_the_same_batch() -> None:
    x1, y1 = lm_batch(TOKENS, step=7, batch_size=8, block_size=16, seed=3)
    lm_batch(TOKENS, step=8, batch_size=8, block_size=16, seed=3)  # no hidden state in between
    x2, y2 = lm_batch(TOKENS, step=7, batch_size=8, block_size=16, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_other_step_or_seed_give_other_batches() -> None:
    x, _ = lm_batch(TOKENS, step=7, batch_size=8, block_size=16, seed=3)
    assert not torch.equal(x, lm_batch(TOKENS, step=8, batch_size=8, block_size=16, seed=3)[0])
    assert not torch.equal(x, lm_batch(TOKENS, step=7, batch_size=8, block_size=16, seed=4)[0])


def test_windows_are_contiguous_and_targets_shifted() -> None:
    x, y = lm_batch(TOKENS, step=0, batch_size=32, block_size=64, seed=0)
    assert x.shape == y.shape == (32, 64)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x - x[:, :1], torch.arange(64).expand(32, 64))  # x = tokens[s : s+T]
    assert torch.equal(y, x + 1)  # y = tokens[s+1 : s+T+1]


def test_every_valid_window_start_is_reachable() -> None:
    # 12 tokens, T = 10: the only windows with a full target are s = 0 and s = 1.
    tokens = np.arange(12, dtype=np.uint16)
    starts = {
        int(lm_batch(tokens, step, 4, 10, seed=0)[0][i, 0]) for step in range(20) for i in range(4)
    }
    assert starts == {0, 1}


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_ddp_ranks_concatenate_to_the_single_process_batch(world_size: int) -> None:
    for step in (0, 1, 123):
        x, y = lm_batch(TOKENS, step, batch_size=16, block_size=8, seed=11)
        parts = [
            lm_batch(TOKENS, step, 16, 8, 11, rank=r, world_size=world_size)
            for r in range(world_size)
        ]
        assert all(p[0].shape == (16 // world_size, 8) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_works_on_a_memmap(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    TOKENS.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r", shape=(N,))
    for a, b in zip(lm_batch(mm, 5, 4, 32, 1), lm_batch(TOKENS, 5, 4, 32, 1), strict=True):
        assert torch.equal(a, b)


def test_ids_above_int16_survive() -> None:
    tokens = np.full(100, 50256, dtype=np.uint16)
    x, _ = lm_batch(tokens, 0, 2, 8, 0)
    assert int(x.min()) == 50256  # uint16 ids are not wrapped to negative values


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(block_size=N - 1), "block_size"),
        (dict(block_size=0), "block_size"),
        (dict(batch_size=6, world_size=4), "divisible"),
        (dict(rank=2, world_size=2), "rank"),
        (dict(step=-1), "step"),
        (dict(seed=-1), "seed"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    args = dict(step=0, batch_size=8, block_size=16, seed=0) | kwargs
    with pytest.raises(DataError, match=match):
        lm_batch(TOKENS, **args)


def test_two_dimensional_tokens_rejected() -> None:
    with pytest.raises(DataError, match="1-D"):
        lm_batch(TOKENS.reshape(50, 100), 0, 2, 8, 0)


def test_eval_batches_cover_the_split_in_order() -> None:
    tokens = np.arange(1_000, dtype=np.uint16)
    batches = list(eval_batches(tokens, batch_size=4, block_size=32))
    n_windows = num_eval_windows(1_000, 32)
    assert n_windows == 31  # 31 * 32 + 1 <= 1000 < 32 * 32 + 1
    assert [len(x) for x, _ in batches] == [4] * 7 + [3]
    xs = torch.cat([x for x, _ in batches]).flatten()
    ys = torch.cat([y for _, y in batches]).flatten()
    assert torch.equal(xs, torch.arange(n_windows * 32))
    assert torch.equal(ys, torch.arange(1, n_windows * 32 + 1))


def test_eval_batches_exact_fit_and_max_batches() -> None:
    tokens = np.arange(65, dtype=np.uint16)  # exactly 2 windows of 32 + the final target
    batches = list(eval_batches(tokens, batch_size=1, block_size=32))
    assert len(batches) == 2 and int(batches[-1][1][0, -1]) == 64
    limited = list(eval_batches(np.arange(1_000), batch_size=2, block_size=10, max_batches=3))
    assert len(limited) == 3 and int(limited[-1][0][-1, 0]) == 50


def test_eval_batches_validate() -> None:
    with pytest.raises(DataError, match="block_size"):
        next(eval_batches(np.arange(10), batch_size=1, block_size=9))
    with pytest.raises(DataError, match="max_batches"):
        next(eval_batches(np.arange(100), batch_size=1, block_size=9, max_batches=0))
