"""The discriminative steering objective: make u carry the label, not only the text's domain.

Paper 1 steers with the language-model loss alone: ``−log p(x | u = label)``. On SST-2 that loss
rewards knowing the label by at most one bit per sentence, and a steering run spends its updates on
the WikiText → review domain shift instead (measured in docs/results/steering_small.md: the probe
share moves by < 0.02 over u ∈ [−4, 4]). GeDi (Krause et al., 2020, "GeDi: Generative
Discriminator Guided Sequence Generation", Eq. 3–5) adds the class posterior of the conditional LM
by Bayes' rule with a uniform prior:

    P(u | x) = p(x | u) / (p(x | u) + p(x | −u)),

with ``log p(x | ·)`` normalised by the sequence length, and trains on
``(1 − w) · L_LM + w · (−log P(u | x))``. The second term is zero-sum between u and −u, so only
what tells the labels apart lowers it. For a control of several axes the contrast is ``−u``: the
opposite label on every axis.

GeDi also learns a scale for the length-normalised log-likelihoods; we keep it fixed at 1.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


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
