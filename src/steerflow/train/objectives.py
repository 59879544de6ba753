"""What the training loop minimises, beside the language-model loss: objective objects.

Every step minimises the mean next-token cross-entropy of its batch (the LM term, paper 1). A
config may add terms; each is an :class:`Objective` built by :func:`build_objectives`:

* :class:`Discriminative` — GeDi's class posterior of u (``steer_discriminative``);
* :class:`Anchor` — the LM loss of WikiText-2 windows at u = 0 (``steer_anchor``);
* :class:`Consistency` — the ODE block's coarse-vs-fine solve penalty (``ode_consistency``).

The step makes **one** forward pass per micro-batch (DDP allows one forward per backward): an
objective that needs other rows (the batch at −u, anchor windows at u = 0) adds them with
:meth:`Objective.extra_rows`, and reads its logits back from the :class:`ForwardPass`. The loss
that is back-propagated is ``lm_weight · LM + Σ terms`` with every term already weighted and scaled
to its share of the global batch, so that DDP's mean over ranks gives the global mean.

A new objective subclasses :class:`Objective`, overrides what it needs (``step_data`` for inputs
of its own, ``extra_rows``, ``forward_context``, ``terms``) and is added to :func:`build_objectives`.

GeDi (Krause et al., 2020, "GeDi: Generative Discriminator Guided Sequence Generation", Eq. 3–5):
paper 1 steers with the LM loss alone, ``−log p(x | u = label)``; on SST-2 that loss rewards
knowing the label by at most one bit per sentence, and a steering run spends its updates on the
WikiText → review domain shift instead (measured in docs/results/steering_small.md: the probe share
moves by < 0.02 over u ∈ [−4, 4]). GeDi adds the class posterior of the conditional LM by Bayes'
rule with a uniform prior,

    P(u | x) = p(x | u) / (p(x | u) + p(x | −u)),

with ``log p(x | ·)`` normalised by the sequence length, and trains on
``(1 − w) · L_LM + w · (−log P(u | x))``. The second term is zero-sum between u and −u, so only
what tells the labels apart lowers it. For a control of several axes the contrast is ``−u``: the
opposite label on every axis. GeDi also learns a scale for the length-normalised
log-likelihoods; we keep it fixed at 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional

import torch
import torch.nn.functional as F

from steerflow.train.consistency import ODECapture, consistency_penalty, fine_solver

if TYPE_CHECKING:  # pragma: no cover
    from steerflow.config import SolverSpec
    from steerflow.train.config import TrainConfig


# ---------------------------------------------------------------------------- likelihoods
def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``−log p(target)`` at every position, ``(B, T)``; 0 where the target is −1 (no target)."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1,
                           reduction="none")


def sequence_log_likelihood(logits: torch.Tensor, targets: torch.Tensor,
                            nll: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean log-probability of each sequence's targets, ``(B,)``; targets of −1 are ignored.

    ``nll``: :func:`token_nll` of the same logits when the caller has it already (one
    log-softmax over the vocabulary instead of two).
    """
    nll = token_nll(logits, targets) if nll is None else nll
    return -nll.sum(dim=1) / (targets >= 0).sum(dim=1).clamp(min=1)


def discriminative_loss(ll_u: torch.Tensor, ll_contrast: torch.Tensor) -> torch.Tensor:
    """``−log P(u | x)`` per sequence, ``(B,)``: GeDi's Bayes-rule posterior with a uniform prior.

    ``−log (e^a / (e^a + e^b)) = softplus(b − a)`` with ``a = ll_u``, ``b = ll_contrast``.
    """
    return F.softplus(ll_contrast - ll_u)


# ---------------------------------------------------------------------------- what a term sees
@dataclass
class MicroBatch:
    """One micro-batch of a training step, on the device.

    ``share`` is its fraction of the global batch times the world size: a term that is a mean
    over the micro-batch, times ``share``, sums (and DDP-averages) to the global mean.
    ``data`` holds each objective's slice of what its :meth:`Objective.step_data` returned.
    """

    x: torch.Tensor  # (b, T) token ids
    y: torch.Tensor  # (b, T) targets, −1 = none
    u: Optional[torch.Tensor]  # (b, c) control, None = 0
    share: float
    step: int
    solver: Optional["SolverSpec"]  # None: the model's train_solver
    data: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)


@dataclass
class ForwardPass:
    """The micro-batch's forward pass: logits of its own rows, their per-token NLL, the logits
    of the rows each objective added, and what each objective's forward context captured."""

    logits: torch.Tensor  # (b, T, V)
    nll: torch.Tensor  # (b, T)
    rows: dict[str, torch.Tensor]  # objective name -> (rows, T', V)
    captured: dict[str, Any]
    autocast: Callable[[], ContextManager]


class Objective:
    """A loss term of the training step (override what the term needs; the defaults add nothing).

    ``lm_weight`` multiplies the LM term (GeDi mixes it with its own); ``metric_names`` are the
    per-step values the term logs in ``metrics.jsonl`` (summed over micro-batches by
    :meth:`terms`' ``metrics`` argument, each already a share of the global mean).
    """

    name: str = "objective"
    lm_weight: float = 1.0
    metric_names: tuple[str, ...] = ()

    def step_data(self, step: int, batch_size: int, rank: int, world_size: int
                  ) -> Optional[tuple[torch.Tensor, ...]]:
        """Tensors of this rank's rows at ``step`` that the loop splits into micro-batches."""
        return None

    def extra_rows(self, batch: MicroBatch
                   ) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """``(x, u)`` rows to add to the micro-batch's forward pass, or None."""
        return None

    def forward_context(self, model) -> ContextManager:
        """A context entered around the forward pass; what it yields lands in ``captured``."""
        return contextlib.nullcontext()

    def terms(self, model, batch: MicroBatch, forward: ForwardPass,
              metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weighted loss terms of this micro-batch, by name (added to the LM term)."""
        return {}


class Discriminative(Objective):
    """GeDi's ``w · (−log P(u | x))``, the batch's own rows against their contrast at −u."""

    name = "discriminative"

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.lm_weight = 1 - weight

    def extra_rows(self, batch: MicroBatch):
        return batch.x, -batch.u

    def terms(self, model, batch, forward, metrics):
        disc = discriminative_loss(sequence_log_likelihood(forward.logits, batch.y, forward.nll),
                                   sequence_log_likelihood(forward.rows[self.name], batch.y))  # (b,)
        # the mean over the micro-batch × share gives the global mean under DDP
        return {self.name: self.weight * batch.share * disc.mean()}


class Anchor(Objective):
    """``λ · CE`` of WikiText-2 windows at u = 0, so the unsteered model stays the pretrained LM."""

    name = "anchor"
    metric_names = ("anchor_loss",)

    def __init__(self, weight: float, source: Any) -> None:  # a train.tasks.BatchSource
        self.weight = weight
        self.source = source

    def step_data(self, step, batch_size, rank, world_size):
        x, y, _ = self.source.train_batch(step, batch_size, rank, world_size)
        return x, y

    def extra_rows(self, batch: MicroBatch):
        xa = batch.data[self.name][0]
        return xa, None if batch.u is None else batch.u.new_zeros(xa.shape[0], batch.u.shape[1])

    def terms(self, model, batch, forward, metrics):
        ya = batch.data[self.name][1]
        anchor_ce = F.cross_entropy(forward.rows[self.name].float().flatten(0, 1), ya.flatten(),
                                    ignore_index=-1)  # mean over this micro-batch's windows
        metrics["anchor_loss"] += anchor_ce.detach() * batch.share  # this rank's mean; no sync
        return {self.name: self.weight * batch.share * anchor_ce}


class Consistency(Objective):
    """``λ · share · ‖H_coarse(1) − H_fine(1)‖ / ‖H_fine(1) − H(0)‖`` on the ODE block's input
    of this forward pass (:func:`~steerflow.train.consistency.consistency_penalty`)."""

    name = "consistency"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def forward_context(self, model) -> ContextManager:
        return ODECapture(model.ode)

    def terms(self, model, batch, forward, metrics):
        capture = forward.captured[self.name]
        if not capture.captured:
            return {}
        coarse = batch.solver or model.config.train_solver
        with forward.autocast():
            # H(0) is detached: the penalty regularises the field on the states it sees, not
            # the layers below
            penalty = consistency_penalty(model.ode, capture.h0.detach(), capture.u, coarse,
                                          fine_solver(coarse))
            return {self.name: self.weight * batch.share * penalty}


def build_objectives(cfg: "TrainConfig", model, anchor_source: Any = None) -> list[Objective]:
    """The terms ``cfg`` asks for, in the order they are added to the loss."""
    objectives: list[Objective] = []
    if cfg.task == "steer" and cfg.steer_discriminative:
        objectives.append(Discriminative(cfg.steer_discriminative))
    if anchor_source is not None:
        objectives.append(Anchor(cfg.steer_anchor, anchor_source))
    if cfg.ode_consistency > 0 and getattr(model, "ode", None) is not None:
        objectives.append(Consistency(cfg.ode_consistency))
    return objectives
