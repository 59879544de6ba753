"""Distilling a contrast teacher into the single pass at u: ``steerflow train --task distill``.

A contrast of two conditionals steers strongly where conditioning on u alone does not (the
steering issue's measurements): DExperts (Liu et al., ACL 2021, Eq. 1) samples

    z̃ = z_base + α · (z_expert − z_anti-expert),

and guidance over u samples z(0) + γ · (z(u) − z(−u)). Both cost three forward passes a token.
Distillation trains the hybrid so that **one** pass at u gives the teacher's distribution at u,

    p_teacher(· | x, u) = softmax(z_base + u · α · (z_plus − z_minus)),

per token over the whole vocabulary (``KL(p_teacher ‖ p_student(· | x, u))``), with u drawn from
U[−1, 1] per row, so that u = 0 is the base exactly and |u| sets the strength. The rows are
general-text windows (WikiText-2 train) and, on-policy, neutral sentence openings continued by
the teacher itself — the sequences the student will meet when it generates.

The teacher is frozen: its models never train, so a batch (on-policy samples included) is a pure
function of ``(seed, step)`` and a resumed run repeats an uninterrupted one exactly. Under data
parallelism every rank samples the whole global batch's on-policy rows (one generator) and keeps
its own; that repeats the teacher's sampling per rank but keeps the batches rank-independent.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from steerflow.errors import ConfigError, DataError
from steerflow.model.decoding import IncrementalDecoder, contrast_logits
from steerflow.train.objectives import MicroBatch, Objective

#: the teacher's nucleus when it samples on-policy continuations (the evaluation's top-p)
TEACHER_TOP_P = 0.9


def _frozen(model):
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ContrastTeacher:
    """``z_base + w(u) · (z_plus − z_minus)`` from three (model, control) pairs, all frozen.

    Use :meth:`dexperts` or :meth:`guidance`. ``axis`` is the control axis whose value scales a
    DExperts teacher.
    """

    def __init__(self, kind: str, base, plus, minus, weight: float, axis: int = 0,
                 top_p: Optional[float] = None) -> None:
        if top_p is not None and not 0 < top_p <= 1:
            raise ConfigError(f"the teacher's top_p must be in (0, 1], got {top_p!r}")
        self.kind, self.weight, self.axis, self.top_p = kind, float(weight), int(axis), top_p
        self.base, self.plus, self.minus = _frozen(base), _frozen(plus), _frozen(minus)

    @classmethod
    def dexperts(cls, base, expert, anti_expert, alpha: float, axis: int = 0,
                 top_p: Optional[float] = None) -> "ContrastTeacher":
        """DExperts' Eq. 1 at strength ``u · alpha`` (negative u swaps the experts' roles); with
        ``top_p``, on the base's nucleus, as DExperts samples (:meth:`logits`)."""
        from steerflow.steer.dexperts import check_same_tokenizer

        check_same_tokenizer([base, expert, anti_expert], ("student", "expert", "anti-expert"))
        return cls("dexperts", base, expert, anti_expert, alpha, axis, top_p)

    @classmethod
    def guidance(cls, model, gamma: float, top_p: Optional[float] = None) -> "ContrastTeacher":
        """Guidance over u of a frozen copy of ``model``: z(0) + γ · (z(u) − z(−u))."""
        if getattr(model, "ode", None) is None:
            raise ConfigError("a guidance teacher contrasts the model at u and -u; a discrete "
                              "model ignores u")
        frozen = copy.deepcopy(model)
        return cls("guidance", frozen, frozen, frozen, gamma, top_p=top_p)

    # ------------------------------------------------------------------ the three conditionals
    def _controls(self, u: torch.Tensor):
        """``(control of base, plus, minus)`` and the contrast weight ``(B, 1)`` for ``u`` ``(B, c)``."""
        if self.kind == "guidance":
            weight = torch.full((u.shape[0], 1), self.weight, device=u.device)
            return (torch.zeros_like(u), u, -u), weight
        return (None, None, None), self.weight * u[:, self.axis: self.axis + 1]

    @torch.no_grad()
    def logits(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(B, T, V)`` at every position of ``x`` ``(B, T)`` for ``u`` ``(B, c)``.

        With ``top_p``, the tokens outside the base's nucleus are −inf: DExperts samples the
        contrast on the base's top-p tokens only (the nucleus is cut from the base's logits before
        the experts are added; :func:`~steerflow.model.decoding.contrast_logits`), which keeps the
        contrast from lifting tokens the base finds implausible.
        """
        controls, weight = self._controls(u)
        z = [model(x, c)[0].float() for model, c in zip((self.base, self.plus, self.minus), controls)]
        out = z[0] + weight[:, :, None] * (z[1] - z[2])  # (B, T, V)
        return out if self.top_p is None else on_nucleus(out, z[0], self.top_p)

    @torch.no_grad()
    def sample(self, idx: torch.Tensor, u: torch.Tensor, n_tokens: int,
               generator: torch.Generator) -> torch.Tensor:
        """``idx`` ``(B, T)`` continued by ``n_tokens`` tokens drawn from the teacher at ``u``
        (on the base's nucleus ``TEACHER_TOP_P``, as DExperts samples); ``(B, T + n_tokens)``."""
        controls, weight = self._controls(u)
        decoders = [IncrementalDecoder(m, c, m.config.eval_solver, use_cache=True)
                    for m, c in zip((self.base, self.plus, self.minus), controls)]
        seq = idx
        for _ in range(n_tokens):
            z = [decode(seq) for decode in decoders]  # 3 × (B, V)
            logits = contrast_logits(*z, weight, top_p=TEACHER_TOP_P)
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            seq = torch.cat([seq, token], dim=1)
        return seq

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "axis": self.axis, "top_p": self.top_p}


def on_nucleus(logits: torch.Tensor, base: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` ``(..., V)`` with −inf outside the nucleus ``top_p`` of ``base`` ``(..., V)``."""
    from steerflow.model.decoding import filter_logits

    kept = filter_logits(base.reshape(-1, base.shape[-1]), top_p=top_p).reshape(base.shape)
    return logits.masked_fill(torch.isinf(kept), float("-inf"))


def teacher_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_teacher ‖ p_student)`` at every position, ``(B, T)``, over the whole vocabulary
    (tokens the teacher gives probability 0, −inf logits, add nothing)."""
    log_t = F.log_softmax(teacher_logits.float(), dim=-1)
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    diff = torch.where(torch.isfinite(log_t), log_t - log_s, 0.0)  # 0 · log 0 = 0
    return (log_t.exp() * diff).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true (0 when there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------- the batches
class DistillSource:
    """Rows for distillation: general-text windows and on-policy teacher continuations, each at a
    u ~ U[−1, 1] of its own (a pure function of ``(seed, step)``; the module docstring).

    ``y`` marks the positions the KL counts (``-1`` = padding); its token values are the next
    tokens, so the loop's LM loss stays defined (the distillation objective weights it 0).
    """

    eval_splits = ("valid",)

    def __init__(self, lm, openings: Sequence[list[int]], teacher: ContrastTeacher, seed: int,
                 on_policy: float, tokens: int, control_dim: int, axis: int = 0,
                 pad_id: int = 0) -> None:
        if not 0 <= on_policy <= 1:
            raise ConfigError(f"distill_on_policy must be in [0, 1], got {on_policy!r}")
        openings = [list(o) for o in openings if len(o) >= 2]
        if on_policy > 0 and not openings:
            raise DataError("no sentence openings of two or more tokens to continue on-policy")
        self.lm, self.openings, self.teacher = lm, openings, teacher
        self.seed, self.on_policy, self.tokens = int(seed), float(on_policy), int(tokens)
        self.control_dim, self.axis, self.pad_id = int(control_dim), int(axis), int(pad_id)
        self.block_size = lm.block_size

    @property
    def tokens_per_word(self) -> dict[str, float]:
        return self.lm.tokens_per_word

    def controls(self, step: int, batch_size: int) -> torch.Tensor:
        """The global batch's u ``(B, c)``: U[−1, 1] on the steered axis, 0 elsewhere."""
        gen = torch.Generator().manual_seed(_seed_of(self.seed, step, 0x7531))
        u = torch.zeros(batch_size, self.control_dim)
        u[:, self.axis] = torch.rand(batch_size, generator=gen) * 2 - 1
        return u

    def on_policy_rows(self, batch_size: int) -> int:
        return int(round(self.on_policy * batch_size))

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This rank's ``(x (B,T), y (B,T), u (B,c))`` at ``step``."""
        if batch_size % world_size:
            raise DataError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        u = self.controls(step, batch_size)
        x, y, _ = self.lm.train_batch(step, batch_size, 0, 1)  # (B, T) general text, global
        n = self.on_policy_rows(batch_size)
        if n:
            xo, yo = self._sampled(step, u[:n])
            x, y = x.clone(), y.clone()
            x[:n], y[:n] = xo, yo
        mine = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        return x[mine], y[mine], u[mine]

    def _sampled(self, step: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Openings continued by the teacher at ``u``, padded to the block: ``(x, y)`` ``(n, T)``."""
        rng = np.random.default_rng([self.seed, step, 0x6F6E])  # "on": its own stream
        chosen = [self.openings[int(i)] for i in rng.integers(len(self.openings), size=len(u))]
        width = min(min(len(o) for o in chosen), self.block_size + 1 - self.tokens)
        if width < 1:
            raise ConfigError(f"distill_tokens {self.tokens} leaves no room for an opening in a "
                              f"block of {self.block_size} tokens")
        idx = torch.tensor([o[:width] for o in chosen], dtype=torch.long)  # (n, width)
        gen = torch.Generator().manual_seed(_seed_of(self.seed, step, 0x73616D))
        seq = self.teacher.sample(idx, u, self.tokens, gen)  # (n, width + tokens)
        x = torch.full((len(u), self.block_size), self.pad_id, dtype=torch.long)
        y = torch.full((len(u), self.block_size), -1, dtype=torch.long)
        length = seq.shape[1] - 1
        x[:, :length], y[:, :length] = seq[:, :-1], seq[:, 1:]
        return x, y

    def eval_batches(self, split: str, batch_size: int) -> Iterator:
        """The general text's evaluation windows at u = 0 (the student's LM at u = 0)."""
        return self.lm.eval_batches(split, batch_size)

    def objectives(self) -> list[Objective]:
        """The KL to this source's teacher replaces the LM term (:class:`Distillation`)."""
        return [Distillation(self.teacher)]

    def describe(self) -> dict[str, Any]:
        return {"name": "distill", "teacher": self.teacher.describe(),
                "on_policy": self.on_policy, "tokens": self.tokens,
                "openings": len(self.openings), "general": self.lm.describe()}


def _seed_of(seed: int, step: int, stream: int) -> int:
    return int(np.random.default_rng([seed, step, stream]).integers(0, 2 ** 62))


# ---------------------------------------------------------------------------- the objective
class Distillation(Objective):
    """``share · mean KL(p_teacher ‖ p_student)`` over the batch's counted positions, in place
    of the LM term (``lm_weight = 0``)."""

    name = "distill"
    lm_weight = 0.0
    metric_names = ("distill_kl",)

    def __init__(self, teacher: ContrastTeacher) -> None:
        self.teacher = teacher

    def terms(self, model, batch: MicroBatch, forward, metrics):
        u = batch.u if batch.u is not None else torch.zeros(batch.x.shape[0], 1)
        target = self.teacher.logits(batch.x, u.to(batch.x.device))  # (b, T, V), no grad
        kl = masked_mean(teacher_kl(target, forward.logits), batch.y >= 0)
        metrics["distill_kl"] += kl.detach() * batch.share
        return {self.name: batch.share * kl}


@torch.no_grad()
def kl_by_u(model, teacher: ContrastTeacher, x: torch.Tensor, us: Sequence[float] = (-1, -0.5, 0, 0.5, 1),
            axis: int = 0) -> dict[float, float]:
    """Mean per-token KL of ``model`` to ``teacher`` on ``x`` ``(B, T)`` at each u in ``us``."""
    out = {}
    for value in us:
        u = torch.zeros(x.shape[0], model.config.control_dim)
        u[:, axis] = float(value)
        out[float(value)] = float(teacher_kl(teacher.logits(x, u), model(x, u)[0]).mean())
    return out


def build_teacher(cfg, model) -> ContrastTeacher:
    """The teacher ``cfg.distill_teacher`` names, at strength ``cfg.distill_alpha``."""
    from steerflow.train.config import parse_teacher

    kind, experts = parse_teacher(cfg.distill_teacher)
    if kind == "guidance":
        return ContrastTeacher.guidance(model, cfg.distill_alpha, cfg.distill_top_p)
    from steerflow.model.hub import load_model

    pos, neg = (load_model(path, "cpu") for path in experts)
    base = copy.deepcopy(model)
    device = next(model.parameters()).device
    return ContrastTeacher.dexperts(base.to(device), pos.to(device), neg.to(device),
                                    cfg.distill_alpha, cfg.steer_axis, cfg.distill_top_p)


def build_distill_source(cfg, model, tokenizer, data_source, lm_source) -> DistillSource:
    """The batch source of ``--task distill``: ``lm_source``'s windows and openings of WikiText-2
    train sentences (3-8 words; evaluation prompts come from valid/test) continued on-policy."""
    from steerflow.data import load_lm_texts
    from steerflow.steer.prompts import sentence_openings

    teacher = build_teacher(cfg, model)
    openings = sentence_openings(load_lm_texts(data_source)["train"], n_words=6)
    ids = tokenizer.encode_batch(openings) if openings else []
    return DistillSource(lm_source, ids, teacher, cfg.seed, cfg.distill_on_policy,
                         cfg.distill_tokens, model.config.control_dim, cfg.steer_axis,
                         tokenizer.eos_id)
