"""The dynamics the playground plots for the current prompt and control.

* :func:`next_token_sweep` — the next-token distribution along a sweep of one control axis, and
  its likeliest candidates: paper 1's Fig. 2 (P(" good"), P(" bad") against u), for any prompt;
* :func:`displacement` — ‖H(τ) − H(0)‖ along τ ∈ [0, 1] for the prompt's last token, with the
  NFE of that solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from steerflow.config import SolverSpec
from steerflow.serve.session import Playground, integer

#: points of the u sweep (−u_range … +u_range) and candidates kept for the plot
SWEEP_POINTS = 25
CANDIDATES = 6
#: τ points of an adaptive solve's trajectory (a fixed-step solve shows its own grid)
ADAPTIVE_TAUS = 21


@dataclass
class Dynamics:
    """What the dynamics tab shows. ``probs[i, j]`` is P(candidate j | prompt, u = ``us[i]``
    on axis ``axis``, the other axes at ``u``); ``norms[k]`` is ‖H(τ_k) − H(0)‖ of the last
    prompt token, ``h0_norm`` its ‖H(0)‖ and ``nfe`` what that solve cost."""

    u: list[float]
    axis: int
    axis_name: str
    solver: str
    us: list[float]
    candidates: list[str]
    probs: np.ndarray  # (len(us), CANDIDATES)
    taus: list[float]
    norms: list[float]
    h0_norm: float
    nfe: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the API."""
        return {"u": self.u, "axis": self.axis, "axis_name": self.axis_name,
                "solver": self.solver, "us": self.us, "candidates": self.candidates,
                "probs": self.probs.tolist(), "taus": self.taus, "norms": self.norms,
                "h0_norm": self.h0_norm, "nfe": self.nfe}


def token_label(tokenizer, token: int) -> str:
    """A token as the legend shows it: its text quoted, spaces and newlines visible."""
    return repr(tokenizer.decode([token]))


@torch.inference_mode()
def next_token_sweep(model, ids: list[int], u: list[float], axis: int, us: np.ndarray,
                     solver: SolverSpec, k: int = CANDIDATES) -> tuple[list[int], np.ndarray]:
    """The ``k`` tokens with the highest probability anywhere along the sweep, and their
    probabilities ``(len(us), k)`` after ``ids`` with u's axis ``axis`` set to each of ``us``
    (one batched forward pass)."""
    controls = torch.tensor(u, dtype=torch.float32).repeat(len(us), 1)  # (n, c)
    controls[:, axis] = torch.as_tensor(us, dtype=torch.float32)
    idx = torch.tensor([ids]).repeat(len(us), 1)  # (n, T)
    logits, _ = model(idx, controls, solver=solver)
    probs = logits[:, -1].float().softmax(dim=-1)  # (n, V)
    top = probs.amax(dim=0).topk(min(k, probs.shape[-1])).indices  # (k,)
    return top.tolist(), probs[:, top].double().numpy()


@torch.inference_mode()
def displacement(model, ids: list[int], u: list[float], solver: SolverSpec
                 ) -> tuple[list[float], list[float], float, int]:
    """``(τ, ‖H(τ) − H(0)‖, ‖H(0)‖, NFE)`` of the ODE block for the last token of ``ids``: a
    fixed-step solve reports its grid, an adaptive one :data:`ADAPTIVE_TAUS` points."""
    if solver.is_fixed_step:
        taus = torch.linspace(0, 1, solver.steps + 1)
    else:
        taus = torch.linspace(0, 1, ADAPTIVE_TAUS)
    h0 = model.ode_input(torch.tensor([ids]))  # (1, T, d)
    solution = model.ode.solve(h0, model.control(u, 1), solver, taus=taus)
    last = solution.states[:, 0, -1]  # (len(taus), d)
    norms = (last - last[0]).norm(dim=-1)
    return taus.tolist(), norms.tolist(), float(last[0].norm()), solution.stats.nfe_forward


def dynamics(playground: Playground, prompt: Any, u: Any, axis: Any = 0,
             solver: Optional[SolverSpec] = None) -> Dynamics:
    """Both measurements for ``prompt`` at control ``u`` (checked inputs), sweeping ``axis``
    over the playground's u range."""
    control = playground.control(u)
    a = integer("axis", axis, 0, playground.control_dim - 1)
    ids = playground.encode(prompt)
    solver = solver if solver is not None else playground.solver("train")
    r = playground.limits.u_range
    us = np.linspace(-r, r, SWEEP_POINTS)
    with playground.lock:
        top, probs = next_token_sweep(playground.model, ids, control, a, us, solver)
        taus, norms, h0_norm, nfe = displacement(playground.model, ids, control, solver)
    labels = [token_label(playground.tokenizer, t) for t in top]
    return Dynamics(u=control, axis=a, axis_name=playground.names[a], solver=solver.describe(),
                    us=us.tolist(), candidates=labels, probs=probs, taus=taus, norms=norms,
                    h0_norm=h0_norm, nfe=nfe)
