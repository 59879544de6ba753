"""SteerFlowGPT: one GPT class for the discrete baseline and the continuous-depth hybrid.

Paper 1's sandwich: embeddings → discrete blocks → ODE block (replacing ``ode_span``) → discrete
blocks → final LayerNorm → untied LM head. With ``config.ode_span=None`` it is a plain GPT.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import InputError
from steerflow.model.decoding import (IncrementalDecoder, check_sampling, check_seed,
                                      check_weight, decode_tokens, sample_contrast, sample_next)
from steerflow.model.layers import Block, KVCache
from steerflow.model.ode_block import ODEBlock

ControlLike = Union[None, float, int, torch.Tensor, list, tuple]


#: the largest |u| a model accepts: u is trained on values of order 1, and a float32 field
#: overflows long before |u| reaches float32's range (the generation fuzz found 1e24)
U_MAX = 1e4


@dataclass
class GenerationCache:
    """KV caches for incremental decoding: one per discrete block, and for an attention vector
    field on a fixed-step solver one per vector-field evaluation of the ODE solve."""

    blocks: list[KVCache]
    ode: Optional[list[KVCache]] = None
    length: int = 0


@dataclass
class ParamCounts:
    total: int
    ode: int
    embeddings: int
    head: int
    discrete_blocks: int
    per_layer: dict[str, int] = field(default_factory=dict)


class SteerFlowGPT(nn.Module):
    """GPT-style decoder whose middle layers may be a controlled Neural ODE.

    Example::

        config = ModelConfig.from_name("tiny")
        model = SteerFlowGPT(config)
        logits, loss = model(idx, u=1.0, targets=idx)

    The sandwich is exposed piece by piece, so analysis code never indexes ``blocks``::

        h0 = model.ode_input(idx)                  # embeddings + blocks before the ODE, H(0)
        h1 = model.ode(h0, model.control(u, B), solver)   # H(1) = H(0) + ∫ α F dτ
        logits = model.readout(h1)                 # blocks after the ODE, ln_f, head

    **Which solver runs** (the one rule, in :meth:`resolve_solver`): the ``solver`` argument of
    ``forward``/``generate``/``stream`` when it is given; otherwise ``config.train_solver`` while
    the module is in training mode and ``config.eval_solver`` in eval mode. Pass ``solver=`` to
    make a call's solver independent of the mode.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        #: the original layer number of each discrete block (e.g. [0, 1, 4, 5])
        self.block_layers = [
            i for i in range(config.n_layer)
            if config.ode_span is None or not config.ode_span[0] <= i < config.ode_span[1]
        ]
        self.blocks = nn.ModuleList(Block(config) for _ in self.block_layers)
        self.ode = ODEBlock(config) if config.is_hybrid else None
        #: how many discrete blocks run before the ODE block
        self.n_before = config.ode_span[0] if config.is_hybrid else config.n_layer
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.tokenizer = None  # attached by from_pretrained / training, saved with the model
        self._init_weights()
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight

    def _init_weights(self) -> None:
        # GPT-2 init (nanoGPT): N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer).
        for block in self.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(block.attn.c_proj.weight, std=std)
            nn.init.normal_(block.mlp.c_proj.weight, std=std)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    # ------------------------------------------------------------------ inputs
    def control(self, u: ControlLike, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """Normalise ``u`` to shape ``(B, c)``: None → zeros; scalar → every row and axis;
        ``(B,)`` when c = 1; ``(c,)`` or ``(1, c)`` → every row; ``(B, c)`` as is."""
        c = self.config.control_dim
        device = device or self.wte.weight.device
        dtype = dtype or self.wte.weight.dtype
        if u is None:
            return torch.zeros(batch_size, c, device=device, dtype=dtype)
        if isinstance(u, bool):
            raise InputError("u must be a number or a float tensor, not a bool")
        if isinstance(u, (int, float)):
            u = torch.tensor(float(u))
        elif isinstance(u, (list, tuple)):
            try:
                u = torch.tensor(u, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InputError(f"u must be a list of numbers, got {u!r} ({exc})") from None
        if not isinstance(u, torch.Tensor):
            raise InputError(f"u must be a number or a tensor, got {type(u).__name__}")
        if not u.is_floating_point():
            raise InputError(f"u must be a floating-point tensor, got dtype {u.dtype}")
        if not bool(torch.isfinite(u).all()):
            raise InputError("u contains NaN or inf")
        if bool((u.abs() > U_MAX).any()):
            raise InputError(f"|u| must be at most {U_MAX:g} (the control is trained on values of "
                             f"order 1; larger ones overflow the field), got {float(u.abs().max()):g}")
        u = u.to(device=device, dtype=dtype)
        if u.ndim == 0:
            return u.expand(batch_size, c)
        if u.ndim == 1 and c == 1 and u.shape[0] == batch_size:
            return u.unsqueeze(1)
        if u.ndim == 1 and u.shape[0] == c:
            return u.unsqueeze(0).expand(batch_size, c)
        if u.ndim == 2 and u.shape[1] == c and u.shape[0] in (1, batch_size):
            return u.expand(batch_size, c)
        raise InputError(
            f"u has shape {tuple(u.shape)}; expected a scalar, ({batch_size},) when control_dim=1, "
            f"({c},) or ({batch_size}, {c}) for batch size {batch_size} and control_dim={c}"
        )

    def _check_idx(self, idx: torch.Tensor, past: int = 0) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.long, torch.int32, torch.int64):
            raise InputError(f"idx must be an integer tensor of token ids, got "
                             f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if idx.ndim != 2:
            raise InputError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        if idx.numel():
            lo, hi = torch.stack(torch.aminmax(idx)).tolist()  # one pass, one host sync
            if lo < 0 or hi >= self.config.vocab_size:
                raise InputError(
                    f"token ids must lie in [0, {self.config.vocab_size}); got min {lo}, max {hi}")
        if past + idx.shape[1] > self.config.block_size:
            raise InputError(
                f"sequence of {past + idx.shape[1]} tokens exceeds the context length "
                f"{self.config.block_size}")

    def resolve_solver(self, solver: Optional[SolverSpec] = None) -> SolverSpec:
        """The solver a call runs: ``solver`` if given, else the config's solver for the mode
        (``train_solver`` in training mode, ``eval_solver`` in eval mode)."""
        if solver is not None:
            if not isinstance(solver, SolverSpec):
                raise InputError(f"solver must be a SolverSpec, got {type(solver).__name__}")
            return solver
        return self.config.train_solver if self.training else self.config.eval_solver

    # ------------------------------------------------------------------ forward
    def forward(self, idx: torch.Tensor, u: ControlLike = None,
                targets: Optional[torch.Tensor] = None, solver: Optional[SolverSpec] = None,
                cache: Optional[GenerationCache] = None):
        """Logits ``(B, T, V)`` for token ids ``idx`` ``(B, T)`` under control ``u``.

        Returns ``(logits, loss)``; ``loss`` is the mean next-token cross-entropy when ``targets``
        is given (ids ``-1`` are ignored), else None. ``solver`` overrides the config's
        train/eval solver. ``cache`` decodes incrementally (see :meth:`generate`).
        """
        past = cache.length if cache is not None else 0
        self._check_idx(idx, past)
        x = self.embed(idx, past)
        x = self.hidden_states(x, u, solver, cache)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                raise InputError(f"targets must have the shape of idx {tuple(idx.shape)}, got "
                                 f"{tuple(getattr(targets, 'shape', ())) or type(targets).__name__}")
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def last_state(self, idx: torch.Tensor, u: ControlLike = None,
                   solver: Optional[SolverSpec] = None, cache: Optional[GenerationCache] = None,
                   check_ids: bool = True) -> torch.Tensor:
        """``ln_f`` of the residual stream at the last position ``(B, d)``: what the LM head reads
        to predict the token after ``idx`` ``(B, T)``. Decoding needs no logits at the other
        positions (for a 16-token prompt, :meth:`forward` would run the head 16 times).

        ``check_ids=False`` skips the token-range check (one reduction and one host sync), for
        ids the caller already checked or sampled from this model's vocabulary.
        """
        past = cache.length if cache is not None else 0
        if check_ids:
            self._check_idx(idx, past)
        elif past + idx.shape[1] > self.config.block_size:
            raise InputError(f"sequence of {past + idx.shape[1]} tokens exceeds the context "
                             f"length {self.config.block_size}")
        x = self.hidden_states(self.embed(idx, past), u, solver, cache)  # (B, T, d)
        return self.ln_f(x[:, -1])  # (B, d)

    def embed(self, idx: torch.Tensor, past: int = 0) -> torch.Tensor:
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, d)

    @property
    def blocks_before(self) -> nn.ModuleList:
        """The discrete blocks that run before the ODE block (all of them in a plain GPT)."""
        return self.blocks[: self.n_before]

    @property
    def blocks_after(self) -> nn.ModuleList:
        """The discrete blocks that run after the ODE block (none in a plain GPT)."""
        return self.blocks[self.n_before:]

    def ode_input(self, idx: torch.Tensor, past: int = 0) -> torch.Tensor:
        """H(0) ``(B, T, d)`` for token ids ``idx`` ``(B, T)``: embeddings and the blocks before
        the ODE block (for a plain GPT: the whole residual stream before ``ln_f``)."""
        x = self.embed(idx, past)  # (B, T, d)
        for block in self.blocks_before:
            x = block(x)
        return x

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` from the ODE block's output H(1) ``(B, T, d)``: the blocks after
        the ODE block, ``ln_f`` and the head."""
        for block in self.blocks_after:
            h = block(h)
        return self.lm_head(self.ln_f(h))

    def hidden_states(self, x: torch.Tensor, u: ControlLike = None,
                      solver: Optional[SolverSpec] = None,
                      cache: Optional[GenerationCache] = None) -> torch.Tensor:
        """The residual stream after the last block (before ``ln_f``), from embeddings ``x``."""
        caches = cache.blocks if cache is not None else [None] * len(self.blocks)
        for block, kv in zip(self.blocks[: self.n_before], caches[: self.n_before]):
            x = block(x, kv)
        if self.ode is not None:
            uc = self.control(u, x.shape[0], x.device, x.dtype)
            x = self.ode(x, uc, self.resolve_solver(solver),
                         caches=cache.ode if cache is not None else None)
        for block, kv in zip(self.blocks[self.n_before:], caches[self.n_before:]):
            x = block(x, kv)
        if cache is not None:
            cache.length += x.shape[1]
        return x

    # ------------------------------------------------------------------ generation
    def can_cache(self, solver: SolverSpec) -> bool:
        """Whether KV-cache decoding is exact for this solver (see :meth:`generate`)."""
        if self.ode is None or self.ode.field.position_wise:
            return True
        # per-evaluation KV caches exist only on the fused fixed-step path (ODEBlock.solve)
        return solver.is_fixed_step and solver.fused

    def new_cache(self, solver: SolverSpec) -> GenerationCache:
        ode = None
        if self.ode is not None and not self.ode.field.position_wise:
            ode = [KVCache(self.config.block_size)
                   for _ in range(solver.steps * solver.evals_per_step)]
        return GenerationCache(blocks=[KVCache(self.config.block_size) for _ in self.blocks],
                               ode=ode)

    @torch.inference_mode()
    def stream(self, idx: torch.Tensor, u: ControlLike = None, max_new_tokens: int = 20, *,
               temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, greedy: bool = False, seed: Optional[int] = None,
               solver: Optional[SolverSpec] = None, use_cache: bool = True,
               eos_id: Optional[int] = None, guidance: Optional[float] = None
               ) -> Iterator[torch.Tensor]:
        """Yield the next token ids ``(B,)`` one step at a time (see :meth:`generate`)."""
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        check_seed(seed)
        weight = None if guidance is None else check_weight("guidance", guidance)
        if weight is not None and self.ode is None:
            raise InputError("guidance contrasts the model at u and -u; this is a discrete "
                             "baseline without a control")
        self._check_idx(idx)
        if idx.shape[1] == 0:
            raise InputError("the prompt is empty; give at least one token")
        solver = self.resolve_solver(solver)
        uc = self.control(u, idx.shape[0])
        generator = None
        if seed is not None:
            generator = torch.Generator(device=idx.device).manual_seed(int(seed))
        if weight:  # guidance: one batched pass at u = 0, u and -u (rows stacked in that order)
            decoder = IncrementalDecoder(self, torch.cat([torch.zeros_like(uc), uc, -uc]),
                                         solver, use_cache)

            def next_token(seq: torch.Tensor) -> torch.Tensor:
                logits = decoder(seq.repeat(3, 1))  # (3B, V)
                return sample_contrast(*logits.chunk(3), weight, temperature, top_k, top_p,
                                       greedy, generator)
        else:  # γ = 0 is plain sampling at u = 0, draw for draw
            decoder = IncrementalDecoder(self, uc if weight is None else torch.zeros_like(uc),
                                         solver, use_cache)

            def next_token(seq: torch.Tensor) -> torch.Tensor:
                return sample_next(decoder(seq), temperature, top_k, top_p, greedy, generator)
        yield from decode_tokens(next_token, idx, max_new_tokens, eos_id)

    def generate(self, idx: torch.Tensor, u: ControlLike = None, max_new_tokens: int = 20, *,
                 temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, greedy: bool = False, seed: Optional[int] = None,
                 solver: Optional[SolverSpec] = None, use_cache: bool = True,
                 eos_id: Optional[int] = None, guidance: Optional[float] = None) -> torch.Tensor:
        """Continue ``idx`` ``(B, T)`` by ``max_new_tokens`` tokens under control ``u``.

        Sampling: ``temperature`` > 0, optional ``top_k`` and nucleus ``top_p`` ∈ (0, 1], or
        ``greedy``; ``seed`` makes it reproducible. Decoding uses KV caches for the discrete
        blocks. The ``mlp`` field is position-wise, so the ODE integrates the new token only
        (exact for fixed-step solvers; for adaptive solvers the step size is then chosen for the
        new token alone, which differs from a full recompute by at most the tolerance). The
        ``block`` field keeps one KV cache per vector-field evaluation on fixed-step solvers and
        recomputes the whole window on adaptive ones. Once the context is full, generation
        recomputes on the last ``block_size`` tokens. Returns ``(B, T + max_new_tokens)`` ids.

        ``guidance`` = γ ≥ 0 samples from ``z(0) + γ · (z(u) − z(−u))`` on the nucleus of
        ``z(0)`` (classifier-free guidance over u, DExperts' rule inside one model:
        :func:`~steerflow.model.decoding.sample_contrast`); the three controls run as one batch
        with one KV cache. ``guidance=0`` is plain sampling at u = 0.
        """
        new = list(self.stream(idx, u, max_new_tokens, temperature=temperature, top_k=top_k,
                               top_p=top_p, greedy=greedy, seed=seed, solver=solver,
                               use_cache=use_cache, eos_id=eos_id, guidance=guidance))
        if not new:
            return idx
        return torch.cat([idx, torch.stack(new, dim=1)], dim=1)

    # ------------------------------------------------------------------ bookkeeping
    def param_counts(self) -> ParamCounts:
        """Parameter counts (shared tensors counted once)."""
        def count(module: Optional[nn.Module]) -> int:
            return 0 if module is None else sum(p.numel() for p in module.parameters())

        total = sum(p.numel() for p in self.parameters())  # parameters() de-duplicates ties
        per_layer = {f"block {layer}": count(b) for layer, b in zip(self.block_layers, self.blocks)}
        if self.ode is not None:
            per_layer["ode"] = count(self.ode)
        head = 0 if self.config.tie_weights else self.lm_head.weight.numel()
        return ParamCounts(total=total, ode=count(self.ode),
                           embeddings=count(self.wte) + count(self.wpe), head=head,
                           discrete_blocks=sum(count(b) for b in self.blocks), per_layer=per_layer)

    def num_params(self) -> int:
        return self.param_counts().total

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: Union[str, os.PathLike], tokenizer=None,
                        format: str = "steerflow") -> None:
        """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) atomically.

        ``format="transformers"`` writes ``transformers``' layout instead: a ``GPT2LMHeadModel``
        folder for a discrete model, remote code for a hybrid (:mod:`steerflow.hf.export`).
        """
        from steerflow.hf.export import check_format, export_transformers
        from steerflow.model.hub import save_pretrained

        check_format(format)
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if format == "transformers":
            export_transformers(self, directory, tokenizer)
        else:
            save_pretrained(self, directory, tokenizer)

    @classmethod
    def from_pretrained(cls, path_or_repo: Union[str, os.PathLike], *, map_location: str = "cpu",
                        **hub_kwargs) -> "SteerFlowGPT":
        """Load a model saved by :meth:`save_pretrained` from a folder or a Hub repo id."""
        from steerflow.model.hub import from_pretrained

        return from_pretrained(cls, path_or_repo, map_location=map_location, **hub_kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the saved model folder to the Hugging Face Hub (needs a network and a token)."""
        from steerflow.model.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)
