"""Evaluation-shaped steering data: a neutral opening then a labelled continuation, with targets
on the continuation only, tokenised so the mask falls exactly on the boundary."""

from __future__ import annotations

import torch

from steerflow.steer.data import SteerBatchSource, SteerExample
from steerflow.steer.shaped import ShapedBatchSource, as_continuation, shaped_examples

OPENINGS = ["The station was built in the north of the city", "She moved to a small town",
            "The council met in the old hall near the river"]
LABELLED = [SteerExample("A wonderful , moving film .", (1.0,)),
            SteerExample("I hated every minute of it .", (-1.0,)),
            SteerExample("Boring and badly acted .", (-1.0,)),
            SteerExample("Great fun .", (1.0,))]


def test_continuations_follow_an_opening_of_three_to_eight_words():
    examples = shaped_examples(OPENINGS, LABELLED, seed=0)
    assert [e.u for e in examples] == [e.u for e in LABELLED]
    for e, src in zip(examples, LABELLED):
        assert 1 <= len(e.opening.split()) <= 8 and any(o.startswith(e.opening) for o in OPENINGS)
        assert e.continuation == as_continuation(src.text)
    assert as_continuation("I hated it .") == " I hated it ." and as_continuation("Great .") == " great ."
    assert shaped_examples(OPENINGS, LABELLED, seed=0) == examples  # seeded


def test_targets_cover_the_continuation_exactly(tokenizer):
    examples = shaped_examples(OPENINGS, LABELLED, seed=1)
    source = ShapedBatchSource(examples, examples[:2], tokenizer, block_size=40, seed=0)
    plain = SteerBatchSource([SteerExample(e.opening + e.continuation, e.u) for e in examples],
                             [], tokenizer, 40, seed=0)
    for step in range(3):
        x, y, u = source.train_batch(step, 8)
        xp, yp, up = plain.train_batch(step, 8)
        assert torch.equal(u, up)
        index = source.global_indices(step, 8)
        for row, i in enumerate(index):
            e = examples[i]
            n_open = len(tokenizer.encode(e.opening))
            ids = tokenizer.encode(e.opening) + tokenizer.encode(e.continuation)
            assert x[row, : len(ids) - 1].tolist() == ids[:-1]
            assert bool((y[row, : n_open - 1] == -1).all())  # the opening is never predicted
            assert y[row, n_open - 1: len(ids) - 1].tolist() == ids[n_open:]  # the continuation is
    held = list(source.eval_batches("valid", 1))
    assert len(held) == 2 and all(bool((y[0, : len(tokenizer.encode(e.opening)) - 1] == -1).all())
                                  for (_, y, _), e in zip(held, examples[:2]))


def test_ranks_split_the_global_batch(tokenizer):
    examples = shaped_examples(OPENINGS, LABELLED, seed=2)
    source = ShapedBatchSource(examples, [], tokenizer, block_size=40, seed=3)
    whole = source.train_batch(4, 4)
    parts = [source.train_batch(4, 4, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p[2] for p in parts]), whole[2])  # u
    for rank, (x, y, _) in enumerate(parts):  # a rank pads to its own longest row
        rows = slice(2 * rank, 2 * rank + 2)
        width = x.shape[1]
        assert torch.equal(x, whole[0][rows, :width]) and torch.equal(y, whole[1][rows, :width])
        assert bool((whole[1][rows, width:] == -1).all())
