"""How ODE-like is an ordinary transformer? Statistics of its residual updates, layer by layer.

Paper 2 reads a residual layer ``x_{l+1} = x_l + f_l(x_l)`` as one forward-Euler step of
``dx/dt = f(x, t)``. That reading is accurate when each update is small against the state
(``‖f_l(x_l)‖ / ‖x_l‖ ≪ 1``) and varies smoothly with depth (consecutive updates point the same
way: ``cos(f_l, f_{l+1})`` near 1). We measure both per token, plus the log-norm of each residual
branch (per sequence: attention couples the tokens), on real text. In a hybrid model the ODE
block appears as one update, its displacement ``H(1) − H(0)``. Any stack recorded as a list of
:class:`Update` (a Hugging Face decoder through :mod:`~steerflow.analysis.hf_stack`) gets the
same statistics from :func:`branch_log_norms` and :func:`layer_stats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from steerflow.analysis.lognorm import LogNormEstimate, log_norm


@dataclass
class Update:
    """One residual update of the stack: its input ``x`` ``(B, T, d)`` and update ``f(x)``."""

    label: str
    x: torch.Tensor
    update: torch.Tensor
    branch: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # f_l, for discrete blocks


@dataclass
class LayerStats:
    """Per-layer summary over tokens (``cos_next`` compares this update with the next one)."""

    layer: str
    ratio_mean: float
    ratio_median: float
    cos_next_mean: Optional[float]
    cos_next_median: Optional[float]
    mu_mean: Optional[float] = None
    mu_max: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def residual_updates(model, idx: torch.Tensor, u=None, solver=None) -> list[Update]:
    """Run ``model`` on ``idx`` ``(B, T)`` and record each block's input and residual update:
    the blocks before the ODE block, the ODE block as one update, the blocks after it."""
    updates: list[Update] = []
    labels = iter(model.block_layers)
    with torch.no_grad():
        x = _record_blocks(model.blocks_before, labels, model.embed(idx), updates)  # (B, T, d)
        if model.ode is not None:
            h1 = model.ode(x, model.control(u, x.shape[0], x.device, x.dtype),
                           model.resolve_solver(solver))
            updates.append(Update("ode", x, h1 - x))
            _record_blocks(model.blocks_after, labels, h1, updates)
    return updates


def _record_blocks(blocks, labels, x: torch.Tensor, updates: list[Update]) -> torch.Tensor:
    """Apply ``blocks`` to ``x``, appending each block's :class:`Update`; return the output."""
    for block in blocks:
        f_x = block.residual_branch(x)  # f_l(x_l): the block is x + f_l(x)
        updates.append(Update(f"block {next(labels)}", x, f_x, block.residual_branch))
        x = x + f_x
    return x


def update_ratio(update: Update) -> torch.Tensor:
    """``‖f_l(x)‖ / ‖x‖`` per token, flattened ``(B·T,)``."""
    return (update.update.norm(dim=-1) / update.x.norm(dim=-1)).flatten()


def consecutive_cosine(a: Update, b: Update) -> torch.Tensor:
    """Cosine between two consecutive updates, per token ``(B·T,)``."""
    return F.cosine_similarity(a.update, b.update, dim=-1).flatten()


def branch_log_norms(updates: list[Update], iters: int = 24, seed: int = 0
                     ) -> list[Optional[LogNormEstimate]]:
    """The log-norm of each update's residual branch ``f_l`` at its input, per sequence
    (attention couples the tokens); None for an update without a branch (the ODE block)."""
    return [None if upd.branch is None else log_norm(upd.branch, upd.x, "sequence", iters, seed)
            for upd in updates]


def layer_stats(updates: list[Update],
                estimates: Optional[list[Optional[LogNormEstimate]]] = None) -> list[LayerStats]:
    """Per-update ratio and consecutive cosine, with the log-norms of :func:`branch_log_norms`
    (``estimates``, aligned with ``updates``) where given."""
    estimates = estimates or [None] * len(updates)
    stats = []
    for i, (upd, est) in enumerate(zip(updates, estimates)):
        ratio = update_ratio(upd)
        cos = consecutive_cosine(upd, updates[i + 1]) if i + 1 < len(updates) else None
        row = LayerStats(upd.label, float(ratio.mean()), float(ratio.median()),
                         None if cos is None else float(cos.mean()),
                         None if cos is None else float(cos.median()))
        if est is not None:
            row.mu_mean, row.mu_max = float(est.mu.mean()), float(est.mu.max())
        stats.append(row)
    return stats


def discrete_layer_stats(model, idx: torch.Tensor, u=None, lognorm_iters: int = 24,
                         seed: int = 0) -> list[LayerStats]:
    """Per-layer update ratio, consecutive cosine and branch log-norm for ``model`` on ``idx``.

    ``lognorm_iters = 0`` skips the log-norms. The model should be in float64 for the log-norms.
    """
    updates = residual_updates(model, idx, u)
    estimates = branch_log_norms(updates, lognorm_iters, seed) if lognorm_iters > 0 else None
    return layer_stats(updates, estimates)
