"""How much of a logit contrast a hidden state can produce: the reach of single-pass steering.

A causal LM's logits are ``z = W_head · LN_f(h)``: whatever the control does to the residual
stream h, the logits move within span(W_head) (plus the constant vector, to which softmax is
blind) — ``d`` of ``V`` directions (128 of 4096 on ``small``). A contrast teacher such as DExperts
(Liu et al., ACL 2021, Eq. 1) adds ``α · (z_expert − z_anti)``, and fine-tuned experts move their
own heads and embeddings, so their contrast need not lie in the base head's span. The share that
does bounds what a single pass with the base's head can match; the rest needs the head to change
(``TrainConfig.train_head``). Measured on the demo's 250-step ``small`` LM and two 150-step SST-2
experts, the share of the mean contrast is a few per cent and the in-span part boosts no sentiment
words (the steering issue's round 6, ``docs/results/steering_small.md``).
"""

from __future__ import annotations

from typing import Sequence

import torch


def head_span_basis(head_weight: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``(V, k)`` of span(columns of W_head, the all-ones vector)."""
    W = head_weight.detach().double()  # (V, d)
    cols = torch.cat([W, torch.ones(W.shape[0], 1, dtype=W.dtype)], dim=1)  # (V, d + 1)
    Q, R = torch.linalg.qr(cols)
    keep = R.diagonal().abs() > 1e-10 * R.diagonal().abs().max()  # drop dependent columns
    return Q[:, keep]


def share_in_span(contrast: torch.Tensor, basis: torch.Tensor) -> float:
    """The share of ``contrast`` ``(..., V)`` (centred over V) that lies in span(``basis``):
    ``1 − ‖c − Q Qᵀ c‖² / ‖c‖²`` summed over the leading dimensions."""
    c = contrast.detach().double().reshape(-1, contrast.shape[-1])
    c = c - c.mean(dim=1, keepdim=True)  # softmax ignores a constant shift
    residual = c - (c @ basis) @ basis.T
    total = float(c.pow(2).sum())
    return 1.0 - float(residual.pow(2).sum()) / total if total > 0 else 0.0


@torch.no_grad()
def contrast_head_span(base, expert, anti_expert, prompt_ids: Sequence[Sequence[int]]) -> dict:
    """The share of DExperts' contrast ``z_expert − z_anti`` in span(W_head of ``base``), per
    position and for its mean over positions, on the token sequences ``prompt_ids``."""
    contrasts = []
    for ids in prompt_ids:
        x = torch.tensor([list(ids)], dtype=torch.long, device=base.lm_head.weight.device)
        contrasts.append((expert(x)[0] - anti_expert(x)[0])[0].float().cpu())  # (T, V)
    per_position = torch.cat(contrasts)  # (N, V)
    basis = head_span_basis(base.lm_head.weight.cpu())
    return {"positions": int(per_position.shape[0]),
            "head_rank": int(basis.shape[1]), "vocab_size": int(per_position.shape[1]),
            "share_per_position": share_in_span(per_position, basis),
            "share_of_mean": share_in_span(per_position.mean(0, keepdim=True), basis)}
