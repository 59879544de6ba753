"""Decoding: next-token logits of a growing sequence, sampling, and sampling from a contrast.

* :class:`IncrementalDecoder` — logits of the last position for one model at one control,
  through KV caches where they are exact (:meth:`SteerFlowGPT.can_cache`), else by recomputing the
  last ``block_size`` tokens; once the context is full it falls back to recomputing.
* :func:`filter_logits` / :func:`sample_next` — temperature, top-k and nucleus (top-p) sampling;
  :func:`draw` takes one uniform per row and inverts the running sum of the kept tokens' weights.
* :func:`sample_contrast` — DExperts' and classifier-free guidance's rule, one function for both:

      z̃ = z_base + w · (z_plus − z_minus)

  sampled from the nucleus of the **base** distribution only (Liu et al., ACL 2021, "DExperts",
  Eq. 1 with top-p filtering of the base logits; Ho & Salimans 2022 for guidance). With ``w = 0``
  it is plain sampling from ``z_base``, draw for draw.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from steerflow.errors import InputError, SolverError


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


def scale_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``logits / temperature`` ``(B, V)`` in float32 (each row shifted to a maximum of 0 where
    the division would overflow: the same softmax)."""
    scaled = logits.float() / temperature
    lo, hi = torch.aminmax(scaled)  # one pass: NaN reaches both ends, ±inf is one of them
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        # a tiny temperature overflows logits/T (or is 0 in float32) and softmax would give NaN:
        # shift by the row maximum and divide in float64 — softmax is shift-invariant, so the
        # distribution is the same, with the maximum at exactly 0
        shifted = logits.double() - logits.double().amax(dim=-1, keepdim=True)
        scaled = (shifted / temperature).float()
    return scaled


def kept_floor(scaled: torch.Tensor, top_k: Optional[int] = None,
               top_p: Optional[float] = None) -> Optional[torch.Tensor]:
    """The least logit ``(B, 1)`` that top-k and the nucleus ``top_p`` keep in each row of
    ``scaled`` ``(B, V)`` (tokens tied with it stay too); None when neither cuts anything."""
    top_k = top_k if top_k is not None and top_k < scaled.size(-1) else None
    top_p = top_p if top_p is not None and top_p < 1.0 else None
    if top_p is None:
        return None if top_k is None else torch.topk(scaled, top_k, dim=-1).values[:, -1:]
    ranked = sorted_descending(scaled)  # (B, V)
    if top_k is not None:  # what top-k leaves, still sorted: the sort of the top-k-cut logits
        ranked = ranked.masked_fill(ranked < ranked[:, top_k - 1 : top_k], float("-inf"))
    probs = ranked.softmax(dim=-1)
    # keep a token while the mass before it is below top_p; the likeliest always stays
    # (top_p can round to 0 in float32)
    kept = ((probs.cumsum(dim=-1) - probs) < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    return ranked.gather(-1, kept - 1)  # (B, 1): the least likely token kept


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> torch.Tensor:
    """``logits / temperature`` ``(B, V)`` in float32 with the tokens outside top-k and outside the
    nucleus ``top_p`` set to −inf."""
    scaled = scale_logits(logits, temperature)
    floor = kept_floor(scaled, top_k, top_p)
    return scaled if floor is None else scaled.masked_fill(scaled < floor, float("-inf"))


def sorted_descending(logits: torch.Tensor) -> torch.Tensor:
    """The values of ``logits`` ``(B, V)`` sorted in descending order along the vocabulary.

    The nucleus needs the sorted values only, not the permutation: on CPU, numpy's vectorised
    sort of values takes 0.4 ms for V = 50,257 where ``torch.sort`` (values and indices) takes
    4.8 ms (one thread). Sorting is exact, so both give the same tensor.
    """
    if logits.device.type != "cpu":
        return torch.sort(logits, descending=True, dim=-1).values
    return torch.from_numpy(-np.sort(-logits.detach().numpy(), axis=-1))


def draw(weights: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One index per row of ``weights`` ``(B, V)`` (≥ 0; 0 for a token that may not be drawn):
    index i with probability ``weights[i] / Σ weights``.

    Inverse CDF with one uniform per row from ``generator`` (row b uses the b-th, whatever the
    other rows hold): a running sum in float64 and a binary search. ``torch.multinomial`` draws
    an exponential variate for each of the V tokens and takes the argmax of ``p / E`` instead;
    at V = 50,257 that took 1.7–1.9 ms of a 3.2–3.3 ms sampling step, this takes 0.2 ms (one
    thread).
    """
    cum = weights.double().cumsum(dim=-1)  # (B, V)
    total = cum[:, -1:]  # (B, 1)
    if not bool((total > 0).all()):  # False for NaN too
        raise SolverError("a row of logits is NaN, +inf or all -inf: there is no token to "
                          "sample from (check the model's outputs and the contrast weight)")
    # 1 - U lies in (0, 1], so the target lies in (0, total] and the first running sum that
    # reaches it ends at a token of positive weight
    uniform = torch.rand(total.shape, dtype=torch.float64, device=cum.device, generator=generator)
    return torch.searchsorted(cum, (1 - uniform) * total).squeeze(-1)  # (B,)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, greedy: bool = False,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample one token id per row from ``logits`` ``(B, V)`` with temperature, top-k, top-p:
    from ``softmax(filter_logits(...))``, drawn by :func:`draw`."""
    if greedy:
        return logits.argmax(dim=-1)
    scaled = scale_logits(logits, temperature)  # (B, V)
    weights = (scaled - scaled.amax(dim=-1, keepdim=True)).exp()  # (B, V): softmax × a constant
    floor = kept_floor(scaled, top_k, top_p)
    if floor is not None:  # the tokens filter_logits keeps; a mask, as exp(-inf) is slow on CPU
        weights = weights * (scaled >= floor)
    return draw(weights, generator)


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
    """One token per row from :func:`contrast_logits` (``greedy``: its argmax); with ``weight``
    0 it is :func:`sample_next` on ``base``, draw for draw."""
    if greedy:
        return contrast_logits(base, plus, minus, weight).argmax(dim=-1)
    if not isinstance(weight, torch.Tensor) and weight == 0:
        return sample_next(base, temperature, top_k, top_p, generator=generator)
    logits = contrast_logits(base, plus, minus, weight, temperature, top_k, top_p)  # (B, V)
    return draw((logits - logits.amax(dim=-1, keepdim=True)).exp(), generator)  # exp(-inf) = 0


class VocabHead:
    """The LM head for the few rows a decoding step reads: ``h Wᵀ`` ``(B, d) → (B, V)``.

    A step multiplies B ≤ a few dozen rows by the ``(V, d)`` head, a memory-bound product whose
    speed on CPU depends on the operand layout more than on its FLOPs. Measured with MKL's
    float32 GEMM at the paper shape (V = 50,257, d = 256, one thread): ``F.linear`` takes
    6.3 ms for one row and 19 ms for eight; ``W hᵀ`` (the weight as the left operand, no copy)
    12 ms for eight; one row against a contiguous copy of ``Wᵀ`` 2.8 ms. So rows ≥ 2 use
    ``(W hᵀ)ᵀ``, and a single row uses a transposed copy once the decode has run long enough:
    the copy costs about as much as :data:`COPY_AFTER` single-row steps save (the ski-rental
    rule: rent until the rent paid equals the price, then buy; never worse than twice the best
    choice in hindsight). Off CPU the head is ``F.linear``. The products equal ``F.linear``'s up
    to float32 summation order.
    """

    #: single-row steps after which the transposed copy is made (its cost in steps' savings)
    COPY_AFTER = 16

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight  # (V, d)
        self.single_rows = 0
        self._transposed: Optional[torch.Tensor] = None  # (d, V), made by the ski-rental rule

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, V)`` of states ``h`` ``(B, d)``."""
        if self.weight.device.type != "cpu":
            return torch.nn.functional.linear(h, self.weight)
        if h.shape[0] > 1:
            return torch.mm(self.weight, h.t()).t()  # (V, B) -> (B, V)
        self.single_rows += 1
        if self._transposed is None and self.single_rows > self.COPY_AFTER:
            self._transposed = self.weight.t().contiguous()
        if self._transposed is None:
            return torch.nn.functional.linear(h, self.weight)
        return h @ self._transposed  # (1, V)


class IncrementalDecoder:
    """Next-token logits of one model at one control for a sequence that grows a token a step.

    ``u`` is the model's ``(B, c)`` control (None for a discrete model). The first call reads the
    whole prompt; later calls feed the new token through the KV cache when ``use_cache`` and the
    solver allow it (:meth:`SteerFlowGPT.can_cache`), else recompute the last ``block_size``
    tokens. Only the last position reaches the LM head (:class:`VocabHead`). The first call
    checks the prompt's ids; later tokens come from sampling over the vocabulary.
    """

    def __init__(self, model, u: Optional[torch.Tensor], solver, use_cache: bool = True) -> None:
        self.model, self.u, self.solver = model, u, solver
        self.cache = model.new_cache(solver) if use_cache and model.can_cache(solver) else None
        self.head = VocabHead(model.lm_head.weight)
        self._fed = 0  # tokens of the sequence seen so far (in the cache, when there is one)

    def __call__(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, V)`` of the position after ``seq`` ``(B, T)``."""
        block = self.model.config.block_size
        first = self._fed == 0
        if self.cache is not None and seq.shape[1] > block:
            self.cache = None  # context full: recompute the last block_size tokens from now on
        if self.cache is None:
            h = self.model.last_state(seq[:, -block:], self.u, solver=self.solver,
                                      check_ids=first)
        else:
            h = self.model.last_state(seq[:, self._fed:], self.u, solver=self.solver,
                                      cache=self.cache, check_ids=first)
        self._fed = seq.shape[1]
        return self.head(h)


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
