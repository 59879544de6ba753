"""DExperts: decoding-time steering with an expert and an anti-expert beside the base model.

Liu et al., ACL 2021, "DExperts: Decoding-Time Controlled Text Generation with Experts and
Anti-Experts", Eq. 1:

    z̃_t = z_t^base + α · (z_t^expert − z_t^anti-expert)

sampled on the nucleus of the base (:func:`~steerflow.model.decoding.sample_contrast`). The three
models are any :class:`~steerflow.model.gpt.SteerFlowGPT` checkpoints that share one tokenizer;
each runs at u = 0 with its own KV cache. The steering direction picks the roles: u = +1 uses
(expert, anti-expert), u = −1 swaps them, u = 0 (or α = 0) is plain sampling from the base.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional, Sequence, Union

import torch

from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.model.decoding import (IncrementalDecoder, check_sampling, check_seed,
                                      check_weight, decode_tokens, sample_contrast, sample_next)

DIRECTIONS = (-1, 0, 1)


def check_same_tokenizer(models: Sequence, names: Sequence[str]) -> None:
    """Refuse models whose vocabularies or tokenizers differ (naming the two checkpoints).

    Tokenizers are compared by :meth:`~steerflow.data.tokenizer.Tokenizer.content_hash`; a model
    without a tokenizer only matches another without one.
    """
    first, first_name = models[0], names[0]
    for model, name in zip(models[1:], names[1:]):
        if model.config.vocab_size != first.config.vocab_size:
            raise InputError(f"{name} has a vocabulary of {model.config.vocab_size} ids but "
                             f"{first_name} has {first.config.vocab_size}; DExperts needs models "
                             f"with the same tokenizer")
        mine, theirs = _tokenizer_digest(model), _tokenizer_digest(first)
        if mine != theirs:
            raise InputError(f"{name} and {first_name} have different tokenizers "
                             f"({_describe(model)} vs {_describe(first)}); DExperts needs models "
                             f"with the same tokenizer")


def _tokenizer_digest(model) -> Optional[str]:
    return None if model.tokenizer is None else model.tokenizer.content_hash()


def _describe(model) -> str:
    tok = model.tokenizer
    return "no tokenizer" if tok is None else f"{tok.name}, sha256 {tok.content_hash()[:12]}"


class DExperts:
    """A base model steered at decoding time by an expert / anti-expert pair (module docstring).

    Example::

        steer = DExperts.load("runs/lm", "runs/expert-pos", "runs/expert-neg")
        out = steer.generate(idx, direction=1, alpha=2.0, max_new_tokens=20, top_p=0.9, seed=0)
    """

    def __init__(self, base, expert, anti_expert,
                 names: Sequence[str] = ("base", "expert", "anti-expert")) -> None:
        self.base, self.expert, self.anti_expert = base, expert, anti_expert
        self.names = tuple(names)
        check_same_tokenizer([base, expert, anti_expert], self.names)

    @classmethod
    def load(cls, base: Union[str, os.PathLike], expert: Union[str, os.PathLike],
             anti_expert: Union[str, os.PathLike], device: str = "cpu") -> "DExperts":
        """The three checkpoint folders, loaded for evaluation (one-line errors)."""
        from steerflow.model.hub import load_model

        paths = (base, expert, anti_expert)
        return cls(*(load_model(p, device) for p in paths), names=[str(p) for p in paths])

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def pair(self, direction: int):
        """``(plus, minus)`` for a direction: +1 → (expert, anti-expert), −1 → swapped."""
        if isinstance(direction, bool) or direction not in DIRECTIONS:
            raise InputError(f"DExperts direction must be -1, 0 or 1, got {direction!r}")
        return ((self.expert, self.anti_expert) if direction > 0
                else (self.anti_expert, self.expert))

    @torch.inference_mode()
    def stream(self, idx: torch.Tensor, direction: int = 1, max_new_tokens: int = 20, *,
               alpha: float = 1.0, temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, greedy: bool = False, seed: Optional[int] = None,
               solver: Optional[SolverSpec] = None, use_cache: bool = True,
               eos_id: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Yield the next token ids ``(B,)`` one step at a time (see :meth:`generate`)."""
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        check_seed(seed)
        weight = check_weight("alpha", alpha)
        plus, minus = self.pair(direction) if direction else (None, None)
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2:
            raise InputError(f"idx must be a (B, T) tensor of token ids, got "
                             f"{tuple(getattr(idx, 'shape', ())) or type(idx).__name__}")
        if idx.shape[1] == 0:
            raise InputError("the prompt is empty; give at least one token")
        # each model's forward checks the ids' dtype and range on the first step
        generator = None
        if seed is not None:
            generator = torch.Generator(device=idx.device).manual_seed(int(seed))
        base = self._decoder(self.base, solver, use_cache)
        if weight and direction:
            plus_logits = self._decoder(plus, solver, use_cache)
            minus_logits = self._decoder(minus, solver, use_cache)

            def next_token(seq: torch.Tensor) -> torch.Tensor:
                return sample_contrast(base(seq), plus_logits(seq), minus_logits(seq), weight,
                                       temperature, top_k, top_p, greedy, generator)
        else:  # α = 0 or u = 0: plain sampling from the base, draw for draw

            def next_token(seq: torch.Tensor) -> torch.Tensor:
                return sample_next(base(seq), temperature, top_k, top_p, greedy, generator)
        yield from decode_tokens(next_token, idx, max_new_tokens, eos_id)

    @staticmethod
    def _decoder(model, solver: Optional[SolverSpec], use_cache: bool) -> IncrementalDecoder:
        """Logits of ``model`` at u = 0 with its own solver unless ``solver`` is given."""
        return IncrementalDecoder(model, None, model.resolve_solver(solver), use_cache)

    def generate(self, idx: torch.Tensor, direction: int = 1, max_new_tokens: int = 20, *,
                 alpha: float = 1.0, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, greedy: bool = False, seed: Optional[int] = None,
                 solver: Optional[SolverSpec] = None, use_cache: bool = True,
                 eos_id: Optional[int] = None) -> torch.Tensor:
        """Continue ``idx`` ``(B, T)`` by ``max_new_tokens`` tokens sampled from Eq. 1.

        ``direction`` +1 steers towards the expert, −1 towards the anti-expert, 0 samples the
        base; ``alpha`` = α ≥ 0. The sampling flags mean what they mean in
        :meth:`SteerFlowGPT.generate`, and with α = 0 or direction 0 the draws are exactly the
        base's ``generate(idx, None, ...)``. Returns ``(B, T + max_new_tokens)`` ids (fewer when
        every row reached ``eos_id``).
        """
        new = list(self.stream(idx, direction, max_new_tokens, alpha=alpha,
                               temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                               seed=seed, solver=solver, use_cache=use_cache, eos_id=eos_id))
        if not new:
            return idx
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1)
