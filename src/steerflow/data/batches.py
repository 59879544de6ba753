"""Deterministic, resumable batches of token windows for language-model training and evaluation.

The global training batch at step ``s`` is a pure function of ``(seed, s)``: resuming at step ``s``
gives the same batches as an uninterrupted run, and ``W`` data-parallel ranks each take a
contiguous ``batch_size / W`` slice of that global batch, so together they see exactly the
single-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from steerflow.errors import DataError


def _check_tokens(tokens: np.ndarray, block_size: int) -> None:
    """A 1-D array long enough for one window of ``block_size`` inputs plus one target."""
    if block_size < 1:
        raise DataError(f"block_size must be >= 1, got {block_size}")
    if np.ndim(tokens) != 1:
        raise DataError(f"tokens must be a 1-D array, got shape {np.shape(tokens)}")
    if block_size >= len(tokens) - 1:
        raise DataError(
            f"block_size {block_size} needs more than {block_size + 1} tokens; the split has "
            f"{len(tokens)}. Use a smaller block_size."
        )


def _check_batch(batch_size: int, step: int, seed: int, rank: int, world_size: int) -> None:
    """Positive sizes, non-negative step and seed, and a batch that splits evenly over ranks."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if step < 0 or seed < 0:
        raise DataError(f"step and seed must be >= 0, got step={step}, seed={seed}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise DataError(
            f"batch_size {batch_size} is not divisible by world_size {world_size}; "
            "the global batch must split evenly over ranks"
        )


def _windows(
    tokens: np.ndarray, starts: np.ndarray, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``tokens[s : s+T]`` and targets ``tokens[s+1 : s+T+1]`` for each start ``s``."""
    index = starts[:, None] + np.arange(block_size + 1)  # (B, T+1)
    rows = torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))  # (B, T+1)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # (B, T), (B, T)


def global_starts(
    n_tokens: int, step: int, batch_size: int, block_size: int, seed: int
) -> np.ndarray:
    """Window starts of the global (all-rank) batch at ``step``, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - block_size, size=batch_size)


def lm_batch(
    tokens: np.ndarray,
    step: int,
    batch_size: int,
    block_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """This rank's share of the random training batch at ``step``.

    Args:
        tokens: 1-D token ids (e.g. a memmap from :func:`prepare_lm_data`).
        step: Training step; with ``seed`` it fully determines the global batch.
        batch_size: Global batch size (all ranks together).
        block_size: Window length ``T``.
        seed: Data seed (>= 0).
        rank, world_size: This process's rank and the number of data-parallel ranks.

    Returns:
        ``(x, y)``, both ``int64`` of shape ``(batch_size // world_size, block_size)``, with
        ``y[:, t] == x[:, t + 1]``: rows ``rank * B/W : (rank + 1) * B/W`` of the global batch.
    """
    _check_tokens(tokens, block_size)
    _check_batch(batch_size, step, seed, rank, world_size)
    starts = global_starts(len(tokens), step, batch_size, block_size, seed)
    per_rank = batch_size // world_size
    return _windows(tokens, starts[rank * per_rank : (rank + 1) * per_rank], block_size)


def num_eval_windows(n_tokens: int, block_size: int) -> int:
    """Number of non-overlapping windows :func:`eval_batches` yields for ``n_tokens`` tokens."""
    return (n_tokens - 1) // block_size


def eval_batches(
    tokens: np.ndarray, batch_size: int, block_size: int, max_batches: int | None = None
) -> Iterator[tuple[torch.LongTensor, torch.LongTensor]]:
    """Non-overlapping windows in order, for validation and test loss.

    Window ``i`` has inputs ``tokens[i*T : (i+1)*T]`` and targets shifted by one, so every target
    ``tokens[1 : 1 + n*T]`` is predicted exactly once (the last ``< T`` tokens are dropped). The
    last batch may hold fewer than ``batch_size`` rows. ``max_batches`` stops early.
    """
    _check_tokens(tokens, block_size)
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise DataError(f"max_batches must be >= 1 or None, got {max_batches}")
    starts = np.arange(num_eval_windows(len(tokens), block_size)) * block_size
    for number, first in enumerate(range(0, len(starts), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        yield _windows(tokens, starts[first : first + batch_size], block_size)
