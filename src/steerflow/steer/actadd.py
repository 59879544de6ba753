"""Activation addition (ActAdd, Turner et al. 2023, "Activation Addition: Steering Language Models
Without Optimization") — the inference-time baseline ODE steering is compared with.

The steering vector is the difference of residual-stream activations for contrast prompts
("Love" − "Hate", " good" − " bad", …), taken at the input of the ODE span (the input of the ODE
block, or of the discrete block at layer ``ode_span[0]`` of a baseline model) at each prompt's last
token and averaged over the pairs. Steering adds ``coef · v`` to the residual stream at that point
through a forward pre-hook, at every position (prompt and generated tokens alike — the all-position
form later work such as CAA uses; Turner et al. add at the prompt's first positions). With
``coef = 0`` the hook adds an exact zero, so the model is unchanged bit for bit.

:func:`contrastive_vector` is the CAA form of the direction (Rimsky et al. 2024, "Steering Llama 2
via Contrastive Activation Addition", Eq. 1): the mean activation over many labelled texts of one
class minus the mean over the other, instead of a handful of word pairs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from steerflow.errors import InputError

#: Contrast pairs (positive, negative). Turner et al.'s classic "Love" − "Hate" first.
DEFAULT_CONTRAST = (("Love", "Hate"), (" good", " bad"), (" great", " terrible"),
                    (" wonderful", " awful"), (" happy", " sad"), ("I love this", "I hate this"))


def injection_layer(model, layer: Optional[int] = None) -> int:
    """The layer whose input ActAdd modifies: ``ode_span[0]`` for a hybrid, else ``layer``.

    A discrete model has no ODE span; pass the layer of the hybrid it is compared with (default
    ``n_layer // 3``, which is 2 for the 6-layer paper shape, the paper's ``ode_span[0]``).
    """
    config = model.config
    if layer is None:
        layer = config.ode_span[0] if config.is_hybrid else config.n_layer // 3
    if not 0 <= layer < config.n_layer:
        raise InputError(f"ActAdd layer {layer} is outside 0 .. {config.n_layer - 1}")
    return layer


def target_module(model, layer: Optional[int] = None) -> nn.Module:
    """The module whose first input is the residual stream at the input of ``layer``."""
    layer = injection_layer(model, layer)
    if model.config.is_hybrid and layer == model.config.ode_span[0]:
        return model.ode
    if layer not in model.block_layers:
        raise InputError(f"layer {layer} lies inside the ODE span {model.config.ode_span}; "
                         f"ActAdd can act at its input (layer {model.config.ode_span[0]})")
    return model.blocks[model.block_layers.index(layer)]


@contextmanager
def capture_input(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the first positional input of ``module`` on each call, as a list of tensors."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


@torch.inference_mode()
def residual_at(model, tokenizer, text: str, layer: Optional[int] = None) -> torch.Tensor:
    """The residual stream ``(T, d)`` at the input of ``layer`` for ``text`` (u = 0)."""
    ids = tokenizer.encode(text)
    if not ids:
        raise InputError(f"contrast prompt {text!r} encodes to no tokens")
    with capture_input(target_module(model, layer)) as seen:
        model(torch.tensor([ids]))
    return seen[0][0]  # (T, d)


def steering_vector(model, tokenizer, contrast: Sequence[tuple[str, str]] = DEFAULT_CONTRAST,
                    layer: Optional[int] = None) -> torch.Tensor:
    """``v = mean_pairs(h(pos)[-1] − h(neg)[-1])``: the ActAdd direction ``(d,)`` at ``layer``."""
    if not contrast:
        raise InputError("ActAdd needs at least one contrast pair")
    diffs = [residual_at(model, tokenizer, pos, layer)[-1] - residual_at(model, tokenizer, neg, layer)[-1]
             for pos, neg in contrast]
    return torch.stack(diffs).mean(dim=0)  # (d,)


@torch.inference_mode()
def contrastive_vector(model, tokenizer, positive: Sequence[str], negative: Sequence[str],
                       layer: Optional[int] = None) -> torch.Tensor:
    """``v = mean_{x ∈ P} h̄(x) − mean_{x ∈ N} h̄(x)`` ``(d,)``, with ``h̄(x)`` the residual stream
    at ``layer``'s input averaged over the tokens of text ``x`` (CAA, Rimsky et al. 2024, Eq. 1;
    CAA takes the answer token's activation, a sentiment text has no answer token, so every token
    of it counts). Two identical sets give exactly the zero vector; swapping them negates it."""
    if not positive or not negative:
        raise InputError("a contrastive vector needs at least one text of each class")

    def class_mean(texts: Sequence[str]) -> torch.Tensor:
        total = torch.zeros(model.config.n_embd, dtype=torch.float64)
        for text in texts:
            total += residual_at(model, tokenizer, text, layer).double().mean(dim=0)
        return total / len(texts)

    return (class_mean(positive) - class_mean(negative)).to(model.wte.weight.dtype)


@contextmanager
def actadd(model, vector: torch.Tensor, coef: float, layer: Optional[int] = None) -> Iterator[None]:
    """Within the block, the residual stream at ``layer``'s input is ``h + coef · vector``."""
    module = target_module(model, layer)
    if vector.shape != (model.config.n_embd,):
        raise InputError(f"steering vector has shape {tuple(vector.shape)}, expected "
                         f"({model.config.n_embd},)")
    delta = float(coef) * vector.detach()  # (d,)

    def add(_module, args):
        h = args[0]
        return (h + delta.to(h.dtype), *args[1:])  # (B, T, d)

    handle = module.register_forward_pre_hook(add)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def mean_residual_norm(model, token_batches: Sequence[torch.Tensor], layer: Optional[int] = None) -> float:
    """Mean L2 norm of the residual stream at ``layer``'s input over the given token batches."""
    norms = []
    with capture_input(target_module(model, layer)) as seen:
        for idx in token_batches:
            model(idx)
    for h in seen:
        norms.append(h.norm(dim=-1).flatten())
    return float(torch.cat(norms).mean()) if norms else float("nan")
