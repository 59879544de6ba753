"""GPT-2 in `transformers`' layout ↔ steerflow: the config translation and the weight names.

``GPT2LMHeadModel`` (Radford et al. 2019) is the pre-LN GPT that steerflow's discrete model is;
the two differ only in how they are written down, and this module bridges each difference:

* its ``Conv1D`` layers store weights as ``(in, out)``, the transpose of ``nn.Linear``'s;
* its GELU is ``gelu_new`` (the tanh approximation): ``ModelConfig.gelu_approximate="tanh"``;
* its head is tied to the token embedding: ``ModelConfig.tie_weights``;
* its keys carry a ``transformer.`` prefix (absent in checkpoints saved from ``GPT2Model``).

No ``transformers`` import here: both directions are plain dictionaries of tensors and JSON.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from steerflow.config import ModelConfig
from steerflow.errors import CheckpointError, ConfigError

SUPPORTED_ARCHITECTURES = ("GPT2LMHeadModel",)
GELU_OF_ACTIVATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
ACTIVATION_OF_GELU = {"tanh": "gelu_new", "none": "gelu"}
#: nn.LayerNorm's (and GPT-2's) epsilon: the only one steerflow's blocks use
LAYER_NORM_EPS = 1e-5
#: GPT2Config's defaults for the keys we read (a config.json may leave any of them out)
DEFAULTS: dict[str, Any] = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                                n_head=12, n_inner=None, activation_function="gelu_new",
                                layer_norm_epsilon=LAYER_NORM_EPS, tie_word_embeddings=True,
                                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                                add_cross_attention=False)
#: options of GPT2Config whose other values steerflow's blocks do not compute
_FIXED = ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "add_cross_attention")
#: per block: steerflow parameter name → (transformers name, stored transposed)
BLOCK_PARAMS: dict[str, tuple[str, bool]] = {
    "ln_1.weight": ("ln_1.weight", False), "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.c_attn.weight", True), "attn.c_attn.bias": ("attn.c_attn.bias", False),
    "attn.c_proj.weight": ("attn.c_proj.weight", True), "attn.c_proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False), "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("mlp.c_fc.weight", True), "mlp.c_fc.bias": ("mlp.c_fc.bias", False),
    "mlp.c_proj.weight": ("mlp.c_proj.weight", True), "mlp.c_proj.bias": ("mlp.c_proj.bias", False),
}
#: outside the blocks: steerflow name → transformers name (the head only when untied)
OUTER_PARAMS = {"wte.weight": "wte.weight", "wpe.weight": "wpe.weight",
                "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}


def check_architecture(hf: dict, where: str) -> None:
    """Refuse a config.json that is not a GPT-2 language model, naming what is supported."""
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "gpt2" or any(a not in SUPPORTED_ARCHITECTURES for a in archs):
        found = ", ".join(archs) or f"model_type {hf.get('model_type')!r}"
        raise CheckpointError(f"{where}: {found} is not supported; steerflow converts "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)} checkpoints")


def model_config_from_gpt2(hf: dict, where: str) -> ModelConfig:
    """The discrete :class:`ModelConfig` computing what the GPT-2 ``config.json`` ``hf`` does."""
    check_architecture(hf, where)
    get = {key: hf.get(key, default) for key, default in DEFAULTS.items()}
    gelu = GELU_OF_ACTIVATION.get(get["activation_function"])
    problems = [f"activation_function={get['activation_function']!r} (steerflow has "
                f"{', '.join(GELU_OF_ACTIVATION)})"] if gelu is None else []
    if get["n_inner"] not in (None, 4 * get["n_embd"]):
        problems.append(f"n_inner={get['n_inner']} (steerflow's MLP is 4·n_embd wide)")
    if get["layer_norm_epsilon"] != LAYER_NORM_EPS:
        problems.append(f"layer_norm_epsilon={get['layer_norm_epsilon']} (steerflow uses 1e-5)")
    problems += [f"{key}={get[key]}" for key in _FIXED if get[key] != DEFAULTS[key]]
    if problems:
        raise CheckpointError(f"{where}: this GPT-2 variant is not supported: {'; '.join(problems)}")
    try:
        return ModelConfig(vocab_size=get["vocab_size"], block_size=get["n_positions"],
                           n_layer=get["n_layer"], n_head=get["n_head"], n_embd=get["n_embd"],
                           dropout=0.0, bias=True, tie_weights=bool(get["tie_word_embeddings"]),
                           ode_span=None, gelu_approximate=gelu)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def gpt2_config(config: ModelConfig, eos_id: Optional[int]) -> dict:
    """The ``config.json`` of the ``GPT2LMHeadModel`` equal to the discrete model ``config``."""
    return {"architectures": list(SUPPORTED_ARCHITECTURES), "model_type": "gpt2",
            "vocab_size": config.vocab_size, "n_positions": config.block_size,
            "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
            "n_inner": None, "activation_function": ACTIVATION_OF_GELU[config.gelu_approximate],
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "layer_norm_epsilon": LAYER_NORM_EPS,
            "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "tie_word_embeddings": config.tie_weights, "use_cache": True,
            "bos_token_id": eos_id, "eos_token_id": eos_id, "dtype": "float32",
            "torch_dtype": "float32"}


def block_prefix(config: ModelConfig, layer: int) -> str:
    """Where discrete layer ``layer``'s weights live in steerflow: ``blocks.i.``, or
    ``ode.field.layers.k.`` for a layer the depth-block field's knot ``k`` holds."""
    if config.ode_span is not None and config.ode_span[0] <= layer < config.ode_span[1]:
        return f"ode.field.layers.{layer - config.ode_span[0]}."
    before = sum(1 for i in range(layer) if config.ode_span is None
                 or not config.ode_span[0] <= i < config.ode_span[1])
    return f"blocks.{before}."


def to_steerflow(tensors: dict[str, torch.Tensor], config: ModelConfig,
                 where: str) -> dict[str, torch.Tensor]:
    """GPT-2 weights (``transformer.``-prefixed or not) under steerflow's names for ``config``."""
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items()}

    def take(name: str) -> torch.Tensor:
        if name not in plain:
            raise CheckpointError(f"{where}: weight {name!r} is missing")
        return plain[name]

    out = {ours: take(theirs) for ours, theirs in OUTER_PARAMS.items()}
    if not config.tie_weights:
        out["lm_head.weight"] = take("lm_head.weight")
    for layer in range(config.n_layer):
        prefix = block_prefix(config, layer)
        for ours, (theirs, transposed) in BLOCK_PARAMS.items():
            weight = take(f"h.{layer}.{theirs}")
            out[prefix + ours] = weight.t() if transposed else weight
    return out


def to_gpt2(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The discrete model's weights under ``GPT2LMHeadModel``'s names (contiguous, float32).

    A model without biases (``bias=False``) gets zero biases, which compute the same function.
    """
    if config.is_hybrid:
        raise ConfigError("only a discrete model maps onto GPT2LMHeadModel's layers")
    shapes = {"ln_1.bias": (config.n_embd,), "attn.c_attn.bias": (3 * config.n_embd,),
              "attn.c_proj.bias": (config.n_embd,), "ln_2.bias": (config.n_embd,),
              "mlp.c_fc.bias": (4 * config.n_embd,), "mlp.c_proj.bias": (config.n_embd,),
              "ln_f.bias": (config.n_embd,)}

    def get(name: str) -> torch.Tensor:
        short = name.split(".", 2)[-1] if name.startswith("blocks.") else name
        value = state.get(name)
        return torch.zeros(shapes[short]) if value is None else value.detach().float().cpu()

    out = {f"transformer.{theirs}": get(ours) for ours, theirs in OUTER_PARAMS.items()}
    if not config.tie_weights:
        out["lm_head.weight"] = get("lm_head.weight")
    for layer in range(config.n_layer):
        for ours, (theirs, transposed) in BLOCK_PARAMS.items():
            weight = get(f"blocks.{layer}.{ours}")
            out[f"transformer.h.{layer}.{theirs}"] = weight.t() if transposed else weight
    return {k: v.contiguous() for k, v in out.items()}
