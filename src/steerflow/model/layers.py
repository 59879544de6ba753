"""Discrete transformer layers: causal self-attention with a KV cache, the GELU MLP, the pre-LN block."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.config import ModelConfig


class KVCache:
    """Keys and values of one attention layer for the tokens seen so far: ``(B, n_head, T, hd)``.

    With a ``capacity`` (the context length, as :meth:`SteerFlowGPT.new_cache` gives) the first
    append allocates buffers for that many positions and later appends write into them, so a
    decoding step copies its own token's keys and values only, not the whole cache
    (``torch.cat`` would copy all ``T`` cached positions at every step). Appends beyond the
    capacity, or without one, grow the buffers to fit.
    """

    __slots__ = ("capacity", "length", "_k", "_v")

    def __init__(self, capacity: Optional[int] = None) -> None:
        self.capacity = capacity
        self.length = 0
        self._k: Optional[torch.Tensor] = None  # (B, n_head, allocated, hd)
        self._v: Optional[torch.Tensor] = None

    @property
    def k(self) -> Optional[torch.Tensor]:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> Optional[torch.Tensor]:
        return None if self._v is None else self._v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``k``, ``v`` ``(B, n_head, T, hd)`` after the cached positions; return all."""
        end = self.length + k.size(2)
        if self._k is None or end > self._k.size(2):
            self._k, self._v = self._grow(self._k, k, end), self._grow(self._v, v, end)
        self._k[:, :, self.length: end] = k
        self._v[:, :, self.length: end] = v
        self.length = end
        return self._k[:, :, :end], self._v[:, :, :end]

    def _grow(self, old: Optional[torch.Tensor], new: torch.Tensor, end: int) -> torch.Tensor:
        B, H, _, D = new.shape
        buf = new.new_empty(B, H, max(end, self.capacity or 0), D)
        if old is not None and self.length:
            buf[:, :, : self.length] = old[:, :, : self.length]
        return buf


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        y = causal_attention(self.c_attn(x), self.n_head, cache,
                             self.dropout if self.training else 0.0)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


def causal_attention(qkv: torch.Tensor, n_head: int, cache: Optional[KVCache] = None,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Causal multi-head attention of packed projections ``qkv`` ``(B, T, 3C)`` → ``(B, T, C)``.

    With ``cache`` the T new positions follow the cached ones and their keys and values are
    appended to it.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
    v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
    past = 0
    if cache is not None:
        past = cache.length
        k, v = cache.append(k, v)
    if past == 0:
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    elif T == 1:
        # one new token attends to every cached position: no mask needed
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    else:
        # T new tokens after `past` cached ones: query i sees keys 0 .. past + i
        mask = torch.ones(T, past + T, dtype=torch.bool, device=qkv.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)


class MLP(nn.Module):
    """The transformer's position-wise MLP: ``Linear(d, 4d) → GELU → Linear(4d, d)`` (GELU exact,
    or GPT-2's tanh approximation with ``config.gelu_approximate="tanh"``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def residual_branch(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """``f_l(x)`` such that the block is ``x + f_l(x)`` (paper 2's Euler-step view)."""
        h = x + self.attn(self.ln_1(x), cache)
        return h + self.mlp(self.ln_2(h)) - x

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))
