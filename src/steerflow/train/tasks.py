"""What the training loop trains on: the ``BatchSource`` protocol and the WikiText-2 source.

A batch is a triple ``(x, y, u)``: token ids ``x`` ``(B, T)`` (long), targets ``y`` ``(B, T)``
(long, ``-1`` = ignored) and the control ``u`` ``(B, c)`` (float) or ``None`` (u = 0). The loop
reuses one code path for language-model pretraining (:class:`LMBatchSource`) and for steering
(:func:`steerflow.steer.data.build_steer_source`), and any object with these two methods can be
passed to :func:`steerflow.train.train`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

import torch

from steerflow.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from steerflow.data import DataSource, PreparedLM, Tokenizer
    from steerflow.train.config import TrainConfig

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


@runtime_checkable
class BatchSource(Protocol):
    """Training and evaluation batches for :func:`steerflow.train.train`.

    ``train_batch(step, batch_size, rank, world_size)`` returns this rank's rows of the global
    batch at ``step``; the global batch must be a pure function of ``(seed, step)`` so that a
    resumed run and a data-parallel run see exactly the batches of a single uninterrupted run.
    ``eval_batches(split, batch_size)`` yields every example of ``split`` once, in a fixed order.

    Optional attributes the loop reads: ``eval_splits`` (the splits to evaluate, periodic
    validation on the first; default ``("valid",)``) and ``tokens_per_word`` (per split, for word
    perplexity).
    """

    def train_batch(self, step: int, batch_size: int, rank: int, world_size: int) -> Batch: ...

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]: ...


class LMBatchSource:
    """WikiText-2 windows from :func:`steerflow.data.prepare_lm_data` for LM pretraining.

    During pretraining ``u`` is ``None`` (zero control, paper 1: the control is trained only in the
    steering stage) unless ``lm_u="random"``, which draws u ~ U[-1, 1] per sequence from a generator
    seeded by ``(seed, step)`` — a pure function of the step, like the windows. Evaluation always
    uses u = 0.
    """

    eval_splits = ("valid", "test")

    def __init__(self, prepared: "PreparedLM", block_size: int, seed: int, lm_u: str = "zero",
                 control_dim: int = 1) -> None:
        if lm_u not in ("zero", "random"):
            raise ConfigError(f"lm_u must be 'zero' or 'random', got {lm_u!r}")
        self.prepared = prepared
        self.block_size = block_size
        self.seed = seed
        self.lm_u = lm_u
        self.control_dim = control_dim

    @property
    def tokens_per_word(self) -> dict[str, float]:
        """Tokens per whitespace word of each split: word ppl = exp(loss · tokens / words)."""
        return dict(self.prepared.tokens_per_word)

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """This rank's ``(x, y, u)`` at ``step`` (global batch: :func:`steerflow.data.lm_batch`)."""
        from steerflow.data import lm_batch

        x, y = lm_batch(self.prepared.splits["train"], step, batch_size, self.block_size,
                        self.seed, rank, world_size)  # (B/W, T), (B/W, T)
        return x, y, self._control(step, batch_size, rank, world_size)

    def _control(self, step: int, batch_size: int, rank: int, world_size: int
                 ) -> Optional[torch.Tensor]:
        if self.lm_u == "zero":
            return None
        gen = torch.Generator().manual_seed(_mix(self.seed, step))
        u = torch.rand(batch_size, self.control_dim, generator=gen) * 2 - 1  # (B, c) in [-1, 1]
        per_rank = batch_size // world_size
        return u[rank * per_rank: (rank + 1) * per_rank]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Non-overlapping windows of ``split`` in order, with u = 0."""
        from steerflow.data import eval_batches

        if split not in self.prepared.splits:
            raise ConfigError(f"unknown split {split!r}; have {', '.join(self.prepared.splits)}")
        for x, y in eval_batches(self.prepared.splits[split], batch_size, self.block_size):
            yield x, y, None

    def describe(self) -> dict:
        return {"name": "wikitext-2", "tokens": {k: int(len(v)) for k, v in self.prepared.splits.items()},
                "tokens_per_word": self.tokens_per_word, "lm_u": self.lm_u,
                "cache": str(self.prepared.cache_dir)}


def _mix(seed: int, step: int) -> int:
    """A 63-bit generator seed from ``(seed, step)`` (distinct pairs give unrelated streams)."""
    digest = hashlib.sha256(f"{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def load_tokenizer(spec: str, source: "DataSource", cache_dir: Path) -> "Tokenizer":
    """The tokenizer ``spec`` (``gpt2`` or ``bpe:N``), trained ``bpe:N`` ones cached on disk.

    Training ``bpe:N`` on WikiText-2 takes 5-15 s on 2 cores and is deterministic, so the result
    is stored under ``cache_dir/tokenizers/<spec>-<hash of the train text>/`` and reused.
    """
    from steerflow.data import Tokenizer, build_tokenizer, load_lm_texts
    from steerflow.data.tokenizer import parse_spec

    if parse_spec(spec) is None:
        return build_tokenizer(spec, source)
    texts = load_lm_texts(source)
    key = hashlib.sha256(texts["train"].encode("utf-8")).hexdigest()[:16]
    folder = Path(cache_dir) / "tokenizers" / f"{spec.replace(':', '-')}-{key}"
    if (folder / "tokenizer_meta.json").is_file():
        try:
            tokenizer = Tokenizer.load(folder)
            if tokenizer.name == spec:
                return tokenizer
        except ValueError as exc:  # a damaged cache entry is rebuilt, never trusted
            logger.warning("rebuilding cached tokenizer %s: %s", folder, exc)
    tokenizer = build_tokenizer(spec, source, texts["train"].splitlines(keepends=True))
    tokenizer.save(folder)
    return tokenizer


def build_batch_source(cfg: "TrainConfig", model, tokenizer: "Tokenizer",
                       data_source: "DataSource", progress: bool = True) -> BatchSource:
    """The batch source of ``cfg.task``: WikiText-2 windows (``lm``; mixed with SST-2 for
    ``lm_u="conditional"``), the steering data (``steer``), one label's SST-2 sentences
    (``expert``) or the distillation rows (``distill``)."""
    if cfg.task == "steer" and cfg.steer_data == "sst2-shaped":
        from steerflow.steer.shaped import build_shaped_source

        return build_shaped_source(cfg, model, tokenizer, data_source)
    if cfg.task == "steer":
        from steerflow.steer.data import build_steer_source

        return build_steer_source(cfg, model, tokenizer, data_source)
    if cfg.task == "expert":
        from steerflow.steer.data import build_expert_source

        return build_expert_source(cfg, model, tokenizer, data_source)
    from steerflow.data import prepare_lm_data

    prepared = prepare_lm_data(data_source, tokenizer, cfg.cache_path(), progress=progress)
    lm = LMBatchSource(prepared, model.config.block_size, cfg.seed,
                       "zero" if cfg.lm_u == "conditional" else cfg.lm_u, model.config.control_dim)
    if cfg.task == "distill":
        from steerflow.steer.distill import build_distill_source
        from steerflow.train.teacher_spec import is_multi_axis

        if is_multi_axis(cfg.distill_teacher):  # one expert pair per axis, summed
            from steerflow.steer.multi_axis import build_multi_axis_source

            return build_multi_axis_source(cfg, model, tokenizer, data_source, lm)

        return build_distill_source(cfg, model, tokenizer, data_source, lm)
    if cfg.lm_u == "conditional":
        from steerflow.steer.conditional import ConditionalLMSource
        from steerflow.steer.data import build_steer_source

        labelled = build_steer_source(cfg.replace(steer_data="sst2"), model, tokenizer,
                                      data_source)
        return ConditionalLMSource(lm, labelled, cfg.lm_u_share, cfg.lm_u_dropout, cfg.seed)
    return lm
