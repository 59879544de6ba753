"""The additive-injection ablation, built from a concatenation model pretrained at u = 0.

Paper 1 argues for concatenating u to the field's input ("explicit injection") against adding a
projection of u to the hidden state before the field's LayerNorm ("vanishing control"). To compare
the two fairly, the ablation must be trained exactly like the concatenation model. LM pretraining
runs at u = 0 (``lm_u="zero"``, paper 1), where neither control pathway receives a gradient: the
u-columns of the concat field's first layer multiply u = 0, and so does the additive ``u_proj``.
A pretrained concat model is therefore the pretrained additive model with the same weights, and
:func:`additive_from_concat` builds it by dropping the u-columns and adding ``u_proj`` at its
initialisation. Steering training then treats both models alike.

:func:`run_additive_ablation` builds the twin from a checkpoint folder and
:func:`write_additive_ablation` saves it; the command line is
``steerflow experiment additive-ablation CONCAT_CKPT OUT [--seed S]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import torch

from steerflow.errors import CheckpointError, ConfigError


def _check_pretrained_at_zero(checkpoint: Path) -> None:
    """Refuse a checkpoint whose LM pretraining sampled u (then the u-columns were trained)."""
    path = checkpoint / "train_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("task") == "steer":
        raise ConfigError(f"{checkpoint} is a steered model; give the pretrained model it started "
                          f"from ({cfg.get('init_from')})")
    if cfg.get("lm_u", "zero") != "zero":
        raise ConfigError(f"{checkpoint} was pretrained with lm_u={cfg['lm_u']!r}: its control "
                          f"pathway was trained, so it is not also the additive model")


def additive_from_concat(model, seed: int = 0):
    """The ``injection="add"`` model equal to ``model`` (``injection="concat"``) at u = 0.

    Every weight is copied except the u-columns of the field's first layer, which the additive
    model does not have; its ``u_proj`` gets the default ``nn.Linear`` initialisation from
    ``seed`` (what pretraining at u = 0 leaves it at).
    """
    from steerflow.model.gpt import SteerFlowGPT

    config = model.config
    if not config.is_hybrid or config.injection != "concat":
        raise ConfigError("the additive ablation is built from a hybrid with injection='concat'")
    if config.field != "mlp":
        raise ConfigError(f"additive_from_concat supports the 'mlp' field, not {config.field!r}")
    torch.manual_seed(seed)
    ablation = SteerFlowGPT(config.replace(injection="add"))
    state = dict(model.state_dict())
    key = "ode.field.fc_in.linear.weight"
    c = config.control_dim
    state[key] = state[key][:, :-c].clone()  # columns ordered [x | τ | u]: drop u
    state["ode.field.u_proj.weight"] = ablation.ode.field.u_proj.weight.detach().clone()
    ablation.load_state_dict(state, strict=True)
    ablation.tokenizer = model.tokenizer
    return ablation.eval()


def run_additive_ablation(checkpoint: Union[str, os.PathLike], seed: int = 0):
    """The additive twin of the concat checkpoint folder ``checkpoint`` (pretrained at u = 0).

    Refuses a steered checkpoint, one pretrained with a sampled u, and one saved without its
    tokenizer (the twin is steered and evaluated with the same tokenizer).
    """
    from steerflow.model.gpt import SteerFlowGPT

    src = Path(checkpoint)
    _check_pretrained_at_zero(src)
    model = SteerFlowGPT.from_pretrained(src)
    if model.tokenizer is None:
        raise CheckpointError(f"{src}: no tokenizer.json saved with the model")
    return additive_from_concat(model, seed)


def write_additive_ablation(model, out: Union[str, os.PathLike]) -> Path:
    """Save the twin as a checkpoint folder ``out`` (config, weights and tokenizer)."""
    model.save_pretrained(out)
    return Path(out)
