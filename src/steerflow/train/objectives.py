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

    P(u | x) = σ(s · (ℓ(x | u) − ℓ(x | −u))),

with ``ℓ`` the log-likelihood normalised by the sequence length and ``s`` a learned scale (GeDi's
``logit_scale``, initialised to 1: ``s = 1`` is Bayes' rule ``p(x|u) / (p(x|u) + p(x|−u))`` on
per-token likelihoods), and trains on ``(1 − w) · L_LM + w · (−log P(u | x))``; salesforce/GeDi
trains with ``w = 0.2`` (``train.config.GEDI_WEIGHT``). The second term is zero-sum between u and
−u, so only what tells the labels apart lowers it. Without the scale it cannot saturate: a
per-token margin of 0.1 nats is P = 0.52, so the term keeps pushing the margin (and the field)
up; with ``s`` learned, the classifier becomes confident at the margin the data supports and the
term's gradient fades. We learn ``log s`` (``s`` stays positive and Adam moves it by a factor,
not by an amount, per step); it is an optimizer parameter of the run, saved with every checkpoint
(:meth:`Objective.state_dict`). For a control of several axes the contrast is ``−u``: the
opposite label on every axis.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional

import torch
import torch.nn.functional as F

from steerflow.errors import CheckpointError
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


def discriminative_loss(ll_u: torch.Tensor, ll_contrast: torch.Tensor,
                        scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``−log P(u | x)`` per sequence, ``(B,)``: GeDi's posterior with a uniform prior,
    ``P(u | x) = σ(s · (a − b))`` with ``a = ll_u``, ``b = ll_contrast``, ``s = scale``.

    ``−log σ(s·(a − b)) = softplus(s · (b − a))``; ``scale = 1`` is Bayes' rule on ``e^a, e^b``.
    """
    return F.softplus(scale * (ll_contrast - ll_u))


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

    def parameters(self) -> list[torch.Tensor]:
        """Parameters of the term itself that the run's optimizer trains (none by default).

        They are not the model's: the loop averages their gradients over ranks itself, and
        :meth:`state_dict` carries their values into every checkpoint."""
        return []

    def state_dict(self) -> dict[str, float]:
        """The term's values a checkpoint must hold to resume bit for bit (floats: JSON)."""
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Discriminative(Objective):
    """GeDi's ``w · (−log P(u | x))``, the batch's own rows against their contrast at −u, with
    the learned scale ``s = exp(log_scale)`` of the class logits (module docstring)."""

    name = "discriminative"
    metric_names = ("gedi_loss", "gedi_scale")

    def __init__(self, weight: float, device: torch.device | str = "cpu") -> None:
        self.weight = weight
        self.lm_weight = 1 - weight
        self.log_scale = torch.nn.Parameter(torch.zeros((), device=device))  # s = 1 (GeDi's init)

    def extra_rows(self, batch: MicroBatch):
        return batch.x, -batch.u

    def terms(self, model, batch, forward, metrics):
        scale = self.log_scale.exp()
        disc = discriminative_loss(sequence_log_likelihood(forward.logits, batch.y, forward.nll),
                                   sequence_log_likelihood(forward.rows[self.name], batch.y),
                                   scale)  # (b,)
        metrics["gedi_loss"] += disc.detach().mean() * batch.share  # this rank's mean; no sync
        metrics["gedi_scale"] += scale.detach() * batch.share
        # the mean over the micro-batch × share gives the global mean under DDP
        return {self.name: self.weight * batch.share * disc.mean()}

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_scale]

    def state_dict(self) -> dict[str, float]:
        # float32 -> Python float -> JSON -> float32 round-trips exactly
        return {"log_scale": float(self.log_scale.detach())}

    def load_state_dict(self, state: dict[str, float]) -> None:
        value = state.get("log_scale")
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise CheckpointError(f"the discriminative term's log_scale must be a finite number, "
                                  f"got {value!r}")
        with torch.no_grad():
            self.log_scale.fill_(value)


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


def objectives_state(objectives: list[Objective]) -> dict[str, dict[str, float]]:
    """The state of every objective that has parameters, by name (for ``trainer.json``)."""
    return {o.name: o.state_dict() for o in objectives if o.parameters()}


def load_objectives_state(objectives: list[Objective], state: Optional[dict]) -> None:
    """Restore :func:`objectives_state`; an objective with parameters must find its state."""
    for o in objectives:
        if not o.parameters():
            continue
        saved = (state or {}).get(o.name)
        if not isinstance(saved, dict):
            raise CheckpointError(f"the checkpoint holds no state of the {o.name} term's "
                                  f"parameters (written by a run without that term)")
        o.load_state_dict(saved)


def build_objectives(cfg: "TrainConfig", model, anchor_source: Any = None) -> list[Objective]:
    """The terms ``cfg`` asks for, in the order they are added to the loss."""
    objectives: list[Objective] = []
    if cfg.task == "steer" and cfg.steer_discriminative:
        device = next(model.parameters()).device
        objectives.append(Discriminative(cfg.steer_discriminative, device))
    if anchor_source is not None:
        objectives.append(Anchor(cfg.steer_anchor, anchor_source))
    if cfg.ode_consistency > 0 and getattr(model, "ode", None) is not None:
        objectives.append(Consistency(cfg.ode_consistency))
    return objectives
