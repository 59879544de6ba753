"""How far one solve of the ODE block is from a reference solve, pooled over every token.

* the paper's ratio ``‖H − H_ref‖ / ‖H_ref‖`` (paper 1, Exp. 3);
* the **displacement** ratio ``‖ΔH − ΔH_ref‖ / ‖ΔH_ref‖`` with ``ΔH = H(1) − H(0)``: the error
  relative to what the block adds, which the paper's ratio hides when ‖H(0)‖ dominates ‖H(1)‖;
* at the model's output: mean ``KL(p ‖ p_ref)`` over tokens, top-1 agreement and the losses.

Norms are Frobenius norms pooled over every token of every batch (``sqrt(Σ‖·‖²)``), so a result
does not depend on how the text is split into batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from steerflow.errors import InputError


@dataclass
class DivergenceMeter:
    """Running sums for the invariance metrics of one solver against a reference.

    Call :meth:`update` once per batch; :meth:`summary` turns the sums into ratios, so the metrics
    pool every token of every batch.
    """

    diff_sq: float = 0.0  # Σ ‖H − H_ref‖²
    ref_sq: float = 0.0  # Σ ‖H_ref‖²
    disp_sq: float = 0.0  # Σ ‖H_ref − H(0)‖²
    start_sq: float = 0.0  # Σ ‖H(0)‖²
    kl_sum: float = 0.0  # Σ_tokens KL(p ‖ p_ref)
    agree: int = 0  # tokens whose argmax matches the reference's
    tokens: int = 0
    nll_sum: float = 0.0  # Σ_tokens −log p(target)
    nll_ref_sum: float = 0.0
    nfe: list[int] = field(default_factory=list)

    def update(self, h: torch.Tensor, h_ref: torch.Tensor, h0: torch.Tensor,
               logits: Optional[torch.Tensor] = None, logits_ref: Optional[torch.Tensor] = None,
               targets: Optional[torch.Tensor] = None, nfe: Optional[int] = None) -> None:
        """Add one batch: final states ``(B, T, d)``, optional logits ``(B, T, V)`` and targets ``(B, T)``."""
        if h.shape != h_ref.shape or h0.shape != h_ref.shape:
            raise InputError(f"state shapes differ: {tuple(h.shape)}, {tuple(h_ref.shape)}, "
                             f"{tuple(h0.shape)}")
        h, h_ref, h0 = h.double(), h_ref.double(), h0.double()
        self.diff_sq += float((h - h_ref).square().sum())
        self.ref_sq += float(h_ref.square().sum())
        self.disp_sq += float((h_ref - h0).square().sum())
        self.start_sq += float(h0.square().sum())
        if nfe is not None:
            self.nfe.append(int(nfe))
        if logits is not None and logits_ref is not None:
            self._update_outputs(logits.double(), logits_ref.double(), targets)

    def _update_outputs(self, logits: torch.Tensor, logits_ref: torch.Tensor,
                        targets: Optional[torch.Tensor]) -> None:
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        logq = F.log_softmax(logits_ref, dim=-1)
        # KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), per token
        self.kl_sum += float((logp.exp() * (logp - logq)).sum())
        self.agree += int((logits.argmax(-1) == logits_ref.argmax(-1)).sum())
        self.tokens += logits.shape[0] * logits.shape[1]
        if targets is not None:
            t = targets.unsqueeze(-1)  # (B, T, 1); ids −1 are not used by eval_batches
            self.nll_sum -= float(logp.gather(-1, t).sum())
            self.nll_ref_sum -= float(logq.gather(-1, t).sum())

    def summary(self) -> dict[str, Any]:
        """The ratios: ``relative_divergence``, ``displacement_divergence``, and output metrics."""
        out: dict[str, Any] = {
            # paper 1, Exp. 3: ‖H − H_ref‖ / ‖H_ref‖
            "relative_divergence": _ratio(self.diff_sq, self.ref_sq),
            # ‖ΔH − ΔH_ref‖ / ‖ΔH_ref‖ with ΔH = H(1) − H(0); the H(0) terms cancel in the numerator
            "displacement_divergence": _ratio(self.diff_sq, self.disp_sq),
            # how much the block moves the state: ‖ΔH_ref‖ / ‖H(0)‖
            "displacement_to_state": _ratio(self.disp_sq, self.start_sq),
        }
        if self.tokens:
            out["kl"] = self.kl_sum / self.tokens
            out["top1_agreement"] = self.agree / self.tokens
            if self.nll_sum or self.nll_ref_sum:
                loss, loss_ref = self.nll_sum / self.tokens, self.nll_ref_sum / self.tokens
                out.update(loss=loss, loss_ref=loss_ref, loss_diff=loss - loss_ref,
                           relative_loss_diff=abs(loss - loss_ref) / loss_ref)
        if self.nfe:
            out["nfe_per_batch"] = sum(self.nfe) / len(self.nfe)
        return out


def _ratio(num_sq: float, den_sq: float) -> float:
    return math.sqrt(num_sq / den_sq) if den_sq > 0 else (0.0 if num_sq == 0 else math.inf)


def relative_divergence(h: torch.Tensor, h_ref: torch.Tensor) -> float:
    """Paper 1's Exp. 3 metric ``‖H − H_ref‖ / ‖H_ref‖`` (Frobenius norms over the whole tensor)."""
    meter = DivergenceMeter()
    meter.update(h, h_ref, torch.zeros_like(h_ref))
    return meter.summary()["relative_divergence"]


def displacement_divergence(h: torch.Tensor, h_ref: torch.Tensor, h0: torch.Tensor) -> float:
    """``‖(H − H0) − (H_ref − H0)‖ / ‖H_ref − H0‖``: the error relative to what the block adds."""
    meter = DivergenceMeter()
    meter.update(h, h_ref, h0)
    return meter.summary()["displacement_divergence"]


def output_divergence(logits: torch.Tensor, logits_ref: torch.Tensor,
                      targets: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Mean ``KL(p ‖ p_ref)``, top-1 agreement (and losses when ``targets`` is given)."""
    meter = DivergenceMeter()
    zeros = torch.zeros(1)
    meter.update(zeros, zeros, zeros, logits, logits_ref, targets)
    summary = meter.summary()
    return {k: summary[k] for k in summary if k not in (
        "relative_divergence", "displacement_divergence", "displacement_to_state")}
