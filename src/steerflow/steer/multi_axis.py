"""Several attributes at once: a teacher that sums one DExperts contrast per control axis, and
the distillation rows that teach the student each axis on its own and together.

DExperts (Liu et al., ACL 2021, Eq. 1) steers one attribute with z_base + α·(z_expert − z_anti).
With one expert pair per attribute the contrasts add, as products of experts do in logit space:

    z_teacher(x, u) = z_base + Σ_a u_a · α_a · (z_plus_a − z_minus_a),

so u_a = 0 removes attribute a's term exactly, and at u = (u_0, 0, …) the teacher *is* the
single-axis teacher of :mod:`steerflow.steer.distill` on axis 0 (the same float operations, then
exact zeros added). The student learns one pass at u ∈ [−1, 1]^A. Its rows draw every axis
independently from U[−1, 1]; a share :data:`SOLO_SHARE` of them moves one axis alone (the others
exactly 0), so the student sees each contrast without the other's — what keeps u_a from
leaking into attribute b when u_b = 0 is learned from those rows.

Two contrasts can still share a direction: review-register text is more opinionated than
encyclopedic text, so the register pair's shift d_r = z_plus_r − z_minus_r also moves the tokens
the sentiment pair tells apart. With ``orthogonal`` the teacher removes that share before it
sums the terms, by Gram–Schmidt in the base distribution's Fisher metric (:func:`fisher_orthogonalize`):
for a logit shift δ at a position, KL(p ‖ softmax(z + δ)) = ½ Var_p(δ) + O(|δ|³), and
d/dt E_{softmax(z + t·a)}[b] = Cov_p(a, b) at t = 0. So Cov_p(d_r', d_s) = 0 means that moving
u_r leaves the expected sentiment evidence of the next token, E[d_s], unchanged to first order
(and symmetrically), while the first axis keeps its contrast exactly.

``steerflow train --task distill --teacher 'dexperts:P0,N0;P1,N1'`` builds these
(:mod:`steerflow.train.teacher_spec`); :func:`build_multi_axis_source` is its batch source.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Optional

import torch

from steerflow.errors import ConfigError
from steerflow.model.decoding import IncrementalDecoder, filter_logits
from steerflow.steer.distill import (TEACHER_TOP_P, DistillSource, _frozen, _seed_of,
                                     on_nucleus)

#: share of distillation rows whose u moves one axis alone (chosen uniformly), the others 0
SOLO_SHARE = 0.5


class MultiContrastTeacher:
    """``z_base + Σ_a u[axes[a]] · alphas[a] · (z_plus_a − z_minus_a)`` from frozen models.

    ``pairs[a]`` is axis ``axes[a]``'s (expert, anti-expert); build with :meth:`dexperts`.
    """

    kind = "dexperts-axes"

    def __init__(self, base, pairs: Sequence[tuple[Any, Any]], alphas: Sequence[float],
                 axes: Sequence[int], top_p: Optional[float] = None,
                 orthogonal: bool = False) -> None:
        if top_p is not None and not 0 < top_p <= 1:
            raise ConfigError(f"the teacher's top_p must be in (0, 1], got {top_p!r}")
        if not (len(pairs) == len(alphas) == len(axes)) or not pairs:
            raise ConfigError(f"a multi-axis teacher needs one alpha and one axis per expert pair; "
                              f"got {len(pairs)} pairs, {len(alphas)} alphas, {len(axes)} axes")
        if len(set(axes)) != len(axes) or min(axes) < 0:
            raise ConfigError(f"the teacher's axes must be distinct and >= 0, got {list(axes)}")
        self.base = _frozen(base)
        self.pairs = [(_frozen(plus), _frozen(minus)) for plus, minus in pairs]
        self.alphas, self.axes = [float(a) for a in alphas], [int(a) for a in axes]
        self.top_p, self.orthogonal = top_p, bool(orthogonal)

    @classmethod
    def dexperts(cls, base, pairs: Sequence[tuple[Any, Any]], alphas: Sequence[float],
                 axes: Sequence[int], top_p: Optional[float] = None,
                 orthogonal: bool = False) -> "MultiContrastTeacher":
        """DExperts' Eq. 1 per axis, summed; every model must share the base's tokenizer. With
        ``top_p`` the teacher lives on the base's nucleus (−inf elsewhere), as DExperts samples;
        with ``orthogonal`` the contrasts are Fisher-orthogonalised in axis order first."""
        from steerflow.steer.dexperts import check_same_tokenizer

        models = [base] + [m for pair in pairs for m in pair]
        names = ["student"] + [f"axis {a} {role}" for a in axes
                               for role in ("expert", "anti-expert")]
        check_same_tokenizer(models, names)
        return cls(base, pairs, alphas, axes, top_p, orthogonal)

    def weights(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Each pair's contrast weight ``(B, 1)``: ``α_a · u[:, axis_a]`` for ``u`` ``(B, c)``."""
        if u.shape[1] <= max(self.axes):
            raise ConfigError(f"the teacher steers axes {self.axes}; u has only {u.shape[1]}")
        return [alpha * u[:, axis: axis + 1] for alpha, axis in zip(self.alphas, self.axes)]

    @torch.no_grad()
    def logits(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(B, T, V)`` at every position of ``x`` ``(B, T)`` for ``u`` ``(B, c)``
        (−inf off the base's nucleus when the teacher has a ``top_p``)."""
        base = z = self.base(x)[0].float()  # (B, T, V)
        # the base's nucleus, cut once: the teacher's support and the Fisher metric's weights
        kept = base if self.top_p is None else on_nucleus(base, base, self.top_p)
        shifts = [plus(x)[0].float() - minus(x)[0].float() for plus, minus in self.pairs]
        if self.orthogonal:
            shifts = fisher_orthogonalize(shifts, kept.softmax(-1))
        for weight, shift in zip(self.weights(u), shifts):
            z = z + weight[:, :, None] * shift
        return z if self.top_p is None else z.masked_fill(torch.isinf(kept), float("-inf"))

    @torch.no_grad()
    def sample(self, idx: torch.Tensor, u: torch.Tensor, n_tokens: int,
               generator: torch.Generator) -> torch.Tensor:
        """``idx`` ``(B, T)`` continued by ``n_tokens`` teacher tokens at ``u`` on the base's
        nucleus (``TEACHER_TOP_P``, as DExperts samples); ``(B, T + n_tokens)``."""
        models = [self.base] + [m for pair in self.pairs for m in pair]
        decoders = [IncrementalDecoder(m, None, m.config.eval_solver, use_cache=True)
                    for m in models]
        weights = self.weights(u)
        seq = idx
        for _ in range(n_tokens):
            z = [decode(seq).float() for decode in decoders]  # (1 + 2A) × (B, V)
            kept = filter_logits(z[0], top_p=TEACHER_TOP_P)  # (B, V), −inf off the nucleus
            shifts = [z[1 + 2 * a] - z[2 + 2 * a] for a in range(len(weights))]
            if self.orthogonal:
                shifts = fisher_orthogonalize(shifts, kept.softmax(-1))
            shift = sum(w * d for w, d in zip(weights, shifts))
            logits = torch.where(torch.isfinite(kept), kept + shift, kept)
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            seq = torch.cat([seq, token], dim=1)
        return seq

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": self.alphas, "axes": self.axes, "top_p": self.top_p,
                "orthogonal": self.orthogonal}


def fisher_orthogonalize(shifts: Sequence[torch.Tensor], probs: torch.Tensor,
                         eps: float = 1e-12) -> list[torch.Tensor]:
    """Gram–Schmidt of logit shifts ``(..., V)`` in the Fisher metric of ``probs`` ``(..., V)``,
    position by position, in order: ``d'_k = d_k − Σ_{j<k} c_kj · d'_j`` with
    ``c_kj = Cov_p(d_k, d'_j) / Var_p(d'_j)``, so ``Cov_p(d'_k, d'_j) = 0`` for ``j ≠ k``
    (module docstring: the Fisher information of a softmax's logits is ``Cov_p``). The first
    shift is returned as it is; where ``Var_p(d'_j) ≤ eps`` (a nucleus of one token: nothing to
    remove) ``c_kj = 0``. Entries where ``p = 0`` carry no weight and must be finite."""
    out: list[torch.Tensor] = []
    for d in shifts:
        for e in out:
            e_c = e - (probs * e).sum(-1, keepdim=True)  # centred under p
            cov = (probs * d * e_c).sum(-1, keepdim=True)
            var = (probs * e_c * e_c).sum(-1, keepdim=True)
            d = d - torch.where(var > eps, cov / var.clamp_min(eps), 0.0) * e
        out.append(d)
    return out


class MultiAxisDistillSource(DistillSource):
    """:class:`~steerflow.steer.distill.DistillSource` with u drawn on several axes: each row's
    u is U[−1, 1] on every steered axis, except a :data:`SOLO_SHARE` of rows where one axis
    (chosen uniformly) moves alone and the others are 0 (a pure function of ``(seed, step)``)."""

    def __init__(self, *args, axes: Sequence[int], solo_share: float = SOLO_SHARE,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0 <= solo_share <= 1:
            raise ConfigError(f"solo_share must be in [0, 1], got {solo_share}")
        if max(axes) >= self.control_dim:
            raise ConfigError(f"the teacher steers axes {list(axes)}; the model's control_dim is "
                              f"{self.control_dim} (train the model with control_dim >= "
                              f"{max(axes) + 1})")
        self.axes, self.solo_share = [int(a) for a in axes], float(solo_share)

    def controls(self, step: int, batch_size: int) -> torch.Tensor:
        """The global batch's u ``(B, c)`` (class docstring)."""
        gen = torch.Generator().manual_seed(_seed_of(self.seed, step, 0x7531))
        n = len(self.axes)
        draws = torch.rand(batch_size, n, generator=gen) * 2 - 1  # (B, A) U[−1, 1]
        solo = torch.rand(batch_size, generator=gen) < self.solo_share  # (B,)
        alone = torch.randint(0, n, (batch_size,), generator=gen)  # (B,) the axis that moves
        keep = ~solo[:, None] | (torch.arange(n)[None, :] == alone[:, None])  # (B, A)
        u = torch.zeros(batch_size, self.control_dim)
        u[:, self.axes] = draws * keep
        return u

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "axes": self.axes, "solo_share": self.solo_share}


def build_multi_teacher(cfg, model) -> MultiContrastTeacher:
    """The teacher of a multi-axis ``cfg.distill_teacher``: pair k steers axis
    ``cfg.steer_axis + k`` at its own α or ``cfg.distill_alpha``."""
    from steerflow.model.hub import load_model
    from steerflow.train.teacher_spec import parse_teacher_axes

    _, pairs = parse_teacher_axes(cfg.distill_teacher)
    device = next(model.parameters()).device
    experts = [tuple(load_model(path, "cpu").to(device) for path in (p.positive, p.negative))
               for p in pairs]
    alphas = [cfg.distill_alpha if p.alpha is None else p.alpha for p in pairs]
    axes = [cfg.steer_axis + k for k in range(len(pairs))]
    if axes[-1] >= model.config.control_dim:
        raise ConfigError(f"{len(pairs)} expert pairs from axis {cfg.steer_axis} need "
                          f"control_dim >= {axes[-1] + 1}; the model has "
                          f"{model.config.control_dim}")
    base = copy.deepcopy(model)
    return MultiContrastTeacher.dexperts(base.to(device), experts, alphas, axes,
                                         cfg.distill_top_p, cfg.distill_orthogonal)


def build_multi_axis_source(cfg, model, tokenizer, data_source, lm_source) -> MultiAxisDistillSource:
    """The batch source of ``--task distill`` with a multi-axis teacher: ``lm_source``'s windows
    and, on-policy, WikiText-2 train openings continued by the teacher (as
    :func:`~steerflow.steer.distill.build_distill_source`)."""
    from steerflow.data import load_lm_texts
    from steerflow.steer.prompts import sentence_openings

    teacher = build_multi_teacher(cfg, model)
    openings = (sentence_openings(load_lm_texts(data_source)["train"], n_words=6)
                if cfg.distill_on_policy > 0 else [])
    ids = tokenizer.encode_batch(openings) if openings else []
    return MultiAxisDistillSource(lm_source, ids, teacher, cfg.seed, cfg.distill_on_policy,
                                  cfg.distill_tokens, model.config.control_dim,
                                  teacher.axes[0], tokenizer.eos_id, axes=teacher.axes)
