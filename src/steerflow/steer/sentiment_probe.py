"""The paper's steering probe: the next token after "The movie was" under control u.

Paper 1, Table 2: P(" good") and P(" bad") as the next token for u ∈ {+1, 0, −1}; Fig. 2: the two
probabilities along a sweep u ∈ [−2, 2]. We add the restricted share
``P(good) / (P(good) + P(bad))``, which is comparable across models that spread their mass over
different vocabularies, and a monotonicity check of the sweep.

A target word may span several tokens; its probability is then the product of its tokens'
conditional probabilities (the chain rule), which is the single next-token probability when the
word is one token (as " good" and " bad" are for GPT-2's BPE).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, ContextManager, Optional, Sequence

import numpy as np
import torch

from steerflow.errors import InputError
from steerflow.steer.settings import PROBE_PROMPT, PROBE_WORDS, TABLE_US

#: monotonicity is checked up to float32 round-off of a probability near 1 (2^-23 ≈ 1.2e-7)
MONOTONE_TOL = 1e-6


def control_vectors(us: Sequence[float], control_dim: int, axis: int = 0) -> torch.Tensor:
    """Rows ``u · e_axis``: the scalar sweep values placed on one control axis, shape ``(n, c)``."""
    if not 0 <= axis < control_dim:
        raise InputError(f"control axis {axis} is outside control_dim={control_dim}")
    out = torch.zeros(len(us), control_dim)
    out[:, axis] = torch.as_tensor([float(u) for u in us])
    return out


def _token_ids(tokenizer, text: str, what: str) -> list[int]:
    ids = tokenizer.encode(text)
    if not ids:
        raise InputError(f"the {what} {text!r} encodes to no tokens")
    return ids


@torch.inference_mode()
def word_log_probs(model, tokenizer, prompt: str, words: Sequence[str], us: Sequence[float],
                   axis: int = 0, solver=None, intervention: Optional[ContextManager] = None
                   ) -> np.ndarray:
    """``log P(word | prompt, u)`` for each u (rows) and word (columns), shape ``(len(us), len(words))``.

    All u values run as one batch. ``intervention`` (e.g. an ActAdd hook) is active during the
    forward passes.
    """
    prompt_ids = _token_ids(tokenizer, prompt, "probe prompt")
    c = model.config.control_dim if model.config.is_hybrid else 1
    u = control_vectors(us, c, axis)  # (n, c)
    out = np.zeros((len(us), len(words)))
    with intervention if intervention is not None else nullcontext():
        for j, word in enumerate(words):
            word_ids = _token_ids(tokenizer, word, "probe word")
            seq = torch.tensor([prompt_ids + word_ids[:-1]]).repeat(len(us), 1)  # (n, T)
            logits, _ = model(seq, u if model.config.is_hybrid else None, solver=solver)
            logp = torch.log_softmax(logits.float(), dim=-1)  # (n, T, V)
            first = len(prompt_ids) - 1  # logits at position t predict token t + 1
            targets = torch.tensor(word_ids).view(1, -1, 1).expand(len(us), -1, 1)
            picked = logp[:, first: first + len(word_ids), :].gather(-1, targets)  # (n, L, 1)
            out[:, j] = picked.sum(dim=(1, 2)).double().numpy()
    return out


@dataclass
class ProbePoint:
    """The probe at one u: P(good), P(bad), their sum and the restricted share."""

    u: float
    p_good: float
    p_bad: float

    @property
    def mass(self) -> float:
        return self.p_good + self.p_bad

    @property
    def share(self) -> float:
        """``P(good) / (P(good) + P(bad))``: the probe restricted to the two words."""
        return self.p_good / self.mass if self.mass > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "mass": self.mass, "share": self.share}


def probe(model, tokenizer, us: Sequence[float] = TABLE_US, prompt: str = PROBE_PROMPT,
          words: Sequence[str] = PROBE_WORDS, axis: int = 0, solver=None,
          intervention: Optional[ContextManager] = None) -> list[ProbePoint]:
    """Paper 1, Table 2: P(words[0]) and P(words[1]) after ``prompt`` for each u."""
    if len(words) != 2:
        raise InputError(f"the probe compares two words (positive, negative), got {len(words)}")
    p = np.exp(word_log_probs(model, tokenizer, prompt, words, us, axis, solver, intervention))
    return [ProbePoint(float(u), float(p[i, 0]), float(p[i, 1])) for i, u in enumerate(us)]


def probability_ceiling(model, tokenizer, word: str, restarts: int = 2, steps: int = 200,
                        seed: int = 0) -> float:
    """The highest P(word) any residual stream can reach through the frozen final LayerNorm and head.

    ``max_h softmax(W · LN_f(h))[word]`` over ``h ∈ R^d``, estimated by Adam ascent on
    ``log P`` from ``restarts`` random starts (a lower bound on the true maximum). Steering that
    leaves ``ln_f`` and the head frozen — the ODE block, ActAdd, additive injection — cannot put
    more probability on the word's first token than this, whatever it does upstream.
    """
    token = _token_ids(tokenizer, word, "probe word")[0]
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(restarts):
        h = torch.randn(1, model.config.n_embd, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([h], lr=0.1)
        for _ in range(steps):
            with torch.enable_grad():
                logp = torch.log_softmax(model.lm_head(model.ln_f(h)).float(), dim=-1)[0, token]
                opt.zero_grad()
                (-logp).backward()
            opt.step()
        best = max(best, float(logp.detach().exp()))
    return best


def sweep_values(low: float = -2.0, high: float = 2.0, points: int = 21) -> list[float]:
    """``points`` evenly spaced values from ``low`` to ``high`` (paper 1, Fig. 2: −2 … 2)."""
    if points < 2 or not low < high:
        raise InputError(f"a sweep needs points >= 2 and low < high, got {points}, {low}, {high}")
    return [round(float(v), 10) for v in np.linspace(low, high, points)]


def monotone_violation(values: Sequence[float], increasing: bool = True) -> float:
    """The largest step against the expected direction (0 when the sequence is monotone)."""
    diffs = np.diff(np.asarray(values, dtype=float))
    against = -diffs if increasing else diffs
    return float(max(0.0, against.max())) if len(diffs) else 0.0


@dataclass
class ProbeSweep:
    """The probe along a u sweep with monotonicity of the restricted share and of each word."""

    points: list[ProbePoint]

    @property
    def us(self) -> list[float]:
        return [p.u for p in self.points]

    def violations(self) -> dict[str, float]:
        """Largest steps against the expected direction: share ↑, P(good) ↑, P(bad) ↓ in u."""
        return {"share": monotone_violation([p.share for p in self.points]),
                "p_good": monotone_violation([p.p_good for p in self.points]),
                "p_bad": monotone_violation([p.p_bad for p in self.points], increasing=False)}

    @property
    def monotone(self) -> bool:
        """Whether the restricted share never decreases along u (up to :data:`MONOTONE_TOL`)."""
        return self.violations()["share"] <= MONOTONE_TOL

    def as_dict(self) -> dict[str, Any]:
        v = self.violations()
        return {"u": self.us, "p_good": [p.p_good for p in self.points],
                "p_bad": [p.p_bad for p in self.points], "share": [p.share for p in self.points],
                "monotone": self.monotone,
                "monotone_p_good": v["p_good"] <= MONOTONE_TOL,
                "monotone_p_bad": v["p_bad"] <= MONOTONE_TOL,
                "max_violation": v}


def probe_sweep(model, tokenizer, us: Optional[Sequence[float]] = None, **kwargs) -> ProbeSweep:
    """Paper 1, Fig. 2: :func:`probe` along ``us`` (default 21 points on [−2, 2]), with checks."""
    us = sweep_values() if us is None else list(us)
    if sorted(us) != list(us):
        raise InputError("sweep values must be sorted in increasing order")
    return ProbeSweep(probe(model, tokenizer, us, **kwargs))


def plot_sweep(sweeps: dict[str, ProbeSweep], path, words: Sequence[str] = PROBE_WORDS) -> None:
    """Paper 1, Fig. 2 as a PNG: P(good), P(bad) (solid / dashed) and the share along u."""
    from steerflow.io import pyplot, save_figure

    plt = pyplot()

    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, sweep) in enumerate(sweeps.items()):
        color = f"C{i}"
        ax_p.plot(sweep.us, [p.p_good for p in sweep.points], "-o", ms=3, color=color,
                  label=f"{name}: P({words[0].strip()})")
        ax_p.plot(sweep.us, [p.p_bad for p in sweep.points], "--s", ms=3, color=color,
                  label=f"{name}: P({words[1].strip()})")
        ax_s.plot(sweep.us, [p.share for p in sweep.points], "-o", ms=3, color=color, label=name)
    ax_p.set(xlabel="control u", ylabel="next-token probability", ylim=(0, 1),
             title=f"{PROBE_PROMPT!r} → next token")
    ax_s.set(xlabel="control u", ylabel="P(good) / (P(good) + P(bad))",
             ylim=(0, 1), title="restricted share")
    for ax in (ax_p, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
