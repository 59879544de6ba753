"""What the solver and flow studies read: checked checkpoints, real validation text, controls.

Every study runs on real text encoded with the checkpoint's own tokenizer: WikiText-2 windows
from the data folder (``data_dir``, else ``$STEERFLOW_DATA``, else the Hub) through the token
cache (``cache_dir``, else :func:`~steerflow.data.cache.default_cache_dir`).
"""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch

from steerflow.config import SolverSpec
from steerflow.errors import CheckpointError, InputError

Batches = list[tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- checks
def require_hybrid(model) -> None:
    """Raise unless ``model`` has an ODE block."""
    if getattr(model, "ode", None) is None:
        raise CheckpointError("this checkpoint is a discrete baseline (no ODE block); solver "
                              "evaluations need a hybrid model")


def require_tokenizer(model, where: Optional[str] = None):
    """The tokenizer saved with the checkpoint, checked against the model's vocabulary;
    ``where`` (the checkpoint's path) starts the error message when given."""
    prefix = f"{where}: " if where else ""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError(f"{prefix}the checkpoint has no tokenizer.json; save the model with "
                              "its tokenizer (save_pretrained(dir, tokenizer=...))")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{prefix}tokenizer has {tokenizer.vocab_size} tokens but the "
                              f"model's vocab_size is {model.config.vocab_size}")
    return tokenizer


# --------------------------------------------------------------------------- model pieces
def control_batch(model, u: float, batch_size: int, axis: int = 0) -> torch.Tensor:
    """``u · e_axis`` for every row, shape ``(B, c)``, in the model's dtype."""
    c = model.config.control_dim
    if not 0 <= axis < c:
        raise InputError(f"control axis {axis} is outside control_dim={c}")
    out = torch.zeros(batch_size, c, dtype=model.wte.weight.dtype, device=model.wte.weight.device)
    out[:, axis] = float(u)
    return out


def plain_solver(spec: SolverSpec) -> SolverSpec:
    """``spec`` for inference: no adjoint (nothing is differentiated)."""
    return spec.replace(adjoint=False)


def float64_copy(model):
    """A float64 copy of ``model`` in eval mode for reference solves (the original is untouched;
    the tokenizer is shared, not copied)."""
    tokenizer, model.tokenizer = getattr(model, "tokenizer", None), None
    try:
        twin = copy.deepcopy(model).double().eval()
    finally:
        model.tokenizer = tokenizer
    twin.tokenizer = tokenizer
    return twin


# --------------------------------------------------------------------------- text
def token_splits(tokenizer, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """WikiText-2 token arrays (``train``/``valid``/``test``) encoded with ``tokenizer``."""
    from steerflow.data import prepare_lm_data, resolve_data_source
    from steerflow.data.cache import resolve_cache_dir

    source = resolve_data_source(data_dir, require=("wikitext-2",))
    cache = resolve_cache_dir(cache_dir)
    return prepare_lm_data(source, tokenizer, cache, progress=progress).splits


def validation_batches(model, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                       batch_size: int = 8, max_batches: Optional[int] = 8,
                       split: str = "valid", progress: bool = False) -> Batches:
    """Windows of real WikiText-2 text ``(x, y)``, each ``(B, T)``, encoded with the model's
    tokenizer and placed on the model's device."""
    from steerflow.data import eval_batches

    splits = token_splits(require_tokenizer(model), data_dir, cache_dir, progress)
    if split not in splits:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(splits)}")
    device = model.wte.weight.device
    return [(x.to(device), y.to(device)) for x, y in
            eval_batches(splits[split], batch_size, model.config.block_size, max_batches)]


def load_hybrid_with_batches(checkpoint, device: str, data_dir: Optional[str] = None,
                             cache_dir: Optional[str] = None, batch_size: int = 8,
                             max_batches: Optional[int] = 8, split: str = "valid",
                             progress: bool = False):
    """The hybrid checkpoint at ``checkpoint`` on ``device`` and its :func:`validation_batches`:
    the inputs of the solver invariance test and of solver probing."""
    from steerflow.model.hub import load_model

    model = load_model(checkpoint, device)
    require_hybrid(model)
    return model, validation_batches(model, data_dir, cache_dir, batch_size, max_batches, split,
                                     progress)


def sst2_dev(data_dir: Optional[str] = None) -> list[tuple[str, int]]:
    """SST-2 dev ``(sentence, label)`` pairs from the data folder (or the Hub)."""
    from steerflow.data import load_sst2, resolve_data_source

    return load_sst2(resolve_data_source(data_dir, require=("sst2",)), "dev")
