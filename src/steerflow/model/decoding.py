"""Decoding: next-token logits of a growing sequence, sampling, and sampling from a contrast.

* :class:`IncrementalDecoder` — logits of the last position for one model at one control,
  through KV caches where they are exact (:meth:`SteerFlowGPT.can_cache`), else by recomputing the
  last ``block_size`` tokens; once the context is full it falls back to recomputing.
* :func:`filter_logits` / :func:`sample_next` — temperature, top-k and nucleus (top-p) sampling.
* :func:`sample_contrast` — DExperts' and classifier-free guidance's rule, one function for both:

      z̃ = z_base + w · (z_plus − z_minus)

  sampled from the nucleus of the **base** distribution only (Liu et al., ACL 2021, "DExperts",
  Eq. 1 with top-p filtering of the base logits; Ho & Salimans 2022 for guidance). With ``w = 0``
  it is plain sampling from ``z_base``, draw for draw.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch

from steerflow.errors import InputError


def check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    """Refuse sampling settings that have no meaning (one clear :class:`InputError`)."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be > 0, got {temperature!r} (use greedy=True for argmax)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")


def check_seed(seed) -> None:
    """Refuse a seed ``torch.Generator.manual_seed`` cannot take (None: unseeded)."""
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool)
                                 and -2 ** 63 <= seed < 2 ** 64):
        raise InputError(f"seed must be an integer in [-2**63, 2**64), got {seed!r}")


def check_weight(name: str, value) -> float:
    """A contrast weight (guidance γ, DExperts α): a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> torch.Tensor:
    """``logits / temperature`` ``(B, V)`` in float32 with the tokens outside top-k and outside the
    nucleus ``top_p`` set to −inf."""
    scaled = logits.float() / temperature
    if not bool(torch.isfinite(scaled).all()):
        # a tiny temperature overflows logits/T (or is 0 in float32) and softmax would give NaN:
        # shift by the row maximum and divide in float64 — softmax is shift-invariant, so the
        # distribution is the same, with the maximum at exactly 0
        shifted = logits.double() - logits.double().amax(dim=-1, keepdim=True)
        scaled = (shifted / temperature).float()
    logits = scaled
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (keeps at least one)
        drop = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop[..., 0] = False  # the likeliest token stays even when top_p rounds to 0 in float32
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, greedy: bool = False,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample one token id per row from ``logits`` ``(B, V)`` with temperature, top-k, top-p."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def contrast_logits(base: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor,
                    weight: float | torch.Tensor, temperature: float = 1.0,
                    top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """``(z_base + w · (z_plus − z_minus)) / T`` on the base's top-k / nucleus, −inf elsewhere.

    ``weight`` is a number or a ``(B, 1)`` tensor (a weight per row)."""
    kept = filter_logits(base, temperature, top_k, top_p)
    if not isinstance(weight, torch.Tensor) and weight == 0:
        return kept  # exactly plain sampling from the base
    shift = weight * (plus.float() - minus.float()) / temperature
    return torch.where(torch.isfinite(kept), kept + shift, kept)


def sample_contrast(base: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor, weight: float,
                    temperature: float = 1.0, top_k: Optional[int] = None,
                    top_p: Optional[float] = None, greedy: bool = False,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row from :func:`contrast_logits` (``greedy``: its argmax)."""
    logits = contrast_logits(base, plus, minus, weight, 1.0 if greedy else temperature,
                             None if greedy else top_k, None if greedy else top_p)
    if greedy:
        return logits.argmax(dim=-1)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


class IncrementalDecoder:
    """Next-token logits of one model at one control for a sequence that grows a token a step.

    ``u`` is the model's ``(B, c)`` control (None for a discrete model). The first call reads the
    whole prompt; later calls feed the new token through the KV cache when ``use_cache`` and the
    solver allow it (:meth:`SteerFlowGPT.can_cache`), else recompute the last ``block_size``
    tokens.
    """

    def __init__(self, model, u: Optional[torch.Tensor], solver, use_cache: bool = True) -> None:
        self.model, self.u, self.solver = model, u, solver
        self.cache = model.new_cache(solver) if use_cache and model.can_cache(solver) else None
        self._fed = 0  # tokens of the sequence the cache holds

    def __call__(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, V)`` of the position after ``seq`` ``(B, T)``."""
        block = self.model.config.block_size
        if self.cache is not None and seq.shape[1] > block:
            self.cache = None  # context full: recompute the last block_size tokens from now on
        if self.cache is None:
            logits, _ = self.model(seq[:, -block:], self.u, solver=self.solver)
        else:
            logits, _ = self.model(seq[:, self._fed:], self.u, solver=self.solver,
                                   cache=self.cache)
            self._fed = seq.shape[1]
        return logits[:, -1, :]


def decode_tokens(next_token: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor,
                  max_new_tokens: int, eos_id: Optional[int] = None) -> Iterator[torch.Tensor]:
    """Yield ``next_token(seq)`` ``(B,)`` for a sequence ``seq`` ``(B, T)`` that starts as ``idx``
    and grows by each yielded token; rows that produced ``eos_id`` keep producing it, and the
    loop ends early once every row has."""
    seq = idx
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        token = next_token(seq)
        if eos_id is not None:
            token = torch.where(finished, torch.full_like(token, eos_id), token)
            finished |= token == eos_id
        seq = torch.cat([seq, token[:, None]], dim=1)
        yield token
        if eos_id is not None and bool(finished.all()):
            return
