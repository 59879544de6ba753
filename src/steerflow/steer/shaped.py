"""Steering sequences shaped like the evaluation: a neutral opening, then a labelled continuation.

Open-ended steering is measured on neutral sentence openings of general text, continued by the
model at u (DExperts' protocol, :mod:`steerflow.steer.prompts`). Plain SST-2 sentences never look
like that: no training sequence starts neutral and turns evaluative. Here each example is the
opening of a WikiText-2 **train** sentence (3-8 words; the evaluation's prompts come from
valid/test) followed by an SST-2 training sentence at its label's u, and only the continuation's
tokens are predicted (the opening's targets are ignored), so the control learns what to do
*after* a neutral prefix, as the evaluation asks.

The opening and the continuation are tokenised apart and joined, so the loss mask falls exactly on
the boundary. The batch order follows :class:`~steerflow.steer.data.SteerBatchSource`: a pure
function of ``(seed, step)``, balanced over the u values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from steerflow.errors import DataError
from steerflow.steer.data import (SteerBatchSource, SteerExample, lm_text_style, steer_examples,
                                  steering_shape)

#: opening lengths in words (drawn uniformly per example)
OPENING_WORDS = (3, 8)


@dataclass(frozen=True)
class ShapedExample:
    """A neutral ``opening``, a ``continuation`` and the continuation's control ``u``."""

    opening: str
    continuation: str
    u: tuple[float, ...]


def as_continuation(sentence: str) -> str:
    """A sentence written to follow an opening: a leading space and a lower-case first letter
    (the pronoun ``I`` stays)."""
    text = sentence.strip()
    if text[:2] not in ("I ", "I'") and text != "I":
        text = text[:1].lower() + text[1:]
    return " " + text


def shaped_examples(openings: Sequence[str], labelled: Sequence[SteerExample], seed: int
                    ) -> list[ShapedExample]:
    """Each labelled example after an opening drawn (with its length) from ``openings``."""
    if not openings:
        raise DataError("no sentence openings to put before the steering texts")
    rng = np.random.default_rng([seed, 0x736861])
    lo, hi = OPENING_WORDS
    out = []
    for example in labelled:
        words = openings[int(rng.integers(len(openings)))].split()
        n = min(len(words), int(rng.integers(lo, hi + 1)))
        out.append(ShapedExample(" ".join(words[:n]), as_continuation(example.text), example.u))
    return out


class ShapedBatchSource(SteerBatchSource):
    """A steering batch source whose targets cover the continuation only."""

    def __init__(self, train: Sequence[ShapedExample], held_out: Sequence[ShapedExample],
                 tokenizer, block_size: int, seed: int = 0, name: str = "sst2-shaped") -> None:
        super().__init__([SteerExample(e.opening + e.continuation, e.u) for e in train],
                         [SteerExample(e.opening + e.continuation, e.u) for e in held_out],
                         tokenizer, block_size, seed, name)
        self._train, self._train_open = self._encode(train, tokenizer, block_size)
        self._held, self._held_open = self._encode(held_out, tokenizer, block_size)

    @staticmethod
    def _encode(examples: Sequence[ShapedExample], tokenizer, block_size: int
                ) -> tuple[list[np.ndarray], np.ndarray]:
        """Token ids of opening + continuation (cut to ``block_size + 1``) and the opening lengths."""
        if not examples:
            return [], np.zeros(0, dtype=np.int64)
        opens = tokenizer.encode_batch([e.opening for e in examples])
        conts = tokenizer.encode_batch([e.continuation for e in examples])
        seqs, lengths = [], []
        for e, o, c in zip(examples, opens, conts):
            if not o or not c:
                raise DataError(f"shaped steering example {e.opening!r} + {e.continuation!r} "
                                f"needs tokens on both sides")
            seqs.append(np.asarray((o + c)[: block_size + 1], dtype=np.int64))
            lengths.append(len(o))
        return seqs, np.asarray(lengths, dtype=np.int64)

    def _mask(self, y: torch.Tensor, openings: np.ndarray) -> torch.Tensor:
        """Ignore the targets inside the opening: position t predicts token t + 1."""
        for row, n in enumerate(openings):
            y[row, : int(n) - 1] = -1
        return y

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        x, y, u = super().train_batch(step, batch_size, rank, world_size)
        index = self.global_indices(step, batch_size)
        per_rank = batch_size // world_size
        return x, self._mask(y, self._train_open[index[rank * per_rank: (rank + 1) * per_rank]]), u

    def eval_batches(self, split: str, batch_size: int) -> Iterator:
        openings = self._train_open if split == "train" else self._held_open
        for first, (x, y, u) in zip(range(0, len(openings), batch_size),
                                     super().eval_batches(split, batch_size)):
            yield x, self._mask(y, openings[first: first + batch_size]), u

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "opening_words": list(OPENING_WORDS),
                "loss": "continuation only"}



def build_shaped_source(cfg, model, tokenizer, data_source) -> ShapedBatchSource:
    """``--steer-data sst2-shaped``: SST-2 sentences after openings of WikiText-2 train sentences."""
    from steerflow.data import load_lm_texts
    from steerflow.steer.prompts import sentence_openings

    block, axis, control_dim = steering_shape(cfg, model)
    openings = sentence_openings(load_lm_texts(data_source)["train"], n_words=OPENING_WORDS[1])
    train, held = steer_examples("sst2", data_source, lm_text_style(data_source), control_dim, axis)
    return ShapedBatchSource(shaped_examples(openings, train, cfg.seed),
                             shaped_examples(openings, held, cfg.seed + 1), tokenizer, block,
                             cfg.seed)
