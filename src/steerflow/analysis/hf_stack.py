"""A Hugging Face causal LM read as a residual stack ``x_{l+1} = x_l + f_l(x_l)``.

Each decoder layer of a ``transformers`` model (``GPT2Block``, ``LlamaDecoderLayer``, ...) maps
the residual stream to the next one, so its residual branch is ``f_l(x) = layer_l(x) − x``: the
attention and MLP branches together, the same update as steerflow's own
``Block.residual_branch``. We run the model once with a forward pre-hook on every layer and
record what the model passed it: the input ``x_l`` and the extra arguments (causal mask, rotary
position embeddings, position ids, cache flags). A branch calls the layer itself with those
extras fixed, so attention, RMSNorm, rotary positions and gated MLPs stay the library's code.

The model is loaded from safetensors weights only, in float64, with PyTorch's
``scaled_dot_product_attention`` (whose math kernel keeps float64 and is twice differentiable, see
:func:`~steerflow.analysis.lognorm.forward_ad_attention`). GPT-2 then runs in float64 throughout;
the Llama-style models normalise in float32 inside their RMSNorm (transformers casts there), so
their branches carry float32 roundoff (:data:`FLOAT32_PARTS`). ``transformers`` is imported
inside the functions: it is the optional extra ``steerflow[hf]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from steerflow.analysis.discrete import Update
from steerflow.errors import CheckpointError, InputError
from steerflow.model.hub import HUB_PREFIX, download

#: model_type -> the attribute of the base model that holds its decoder layers
DECODER_LAYERS = {"gpt2": "h", "llama": "layers", "mistral": "layers", "qwen2": "layers"}
#: model_type -> the part that transformers computes in float32 even in a float64 model
FLOAT32_PARTS = {"llama": "RMSNorm", "mistral": "RMSNorm", "qwen2": "RMSNorm"}
#: files whose presence means a folder has a tokenizer transformers can load
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
#: what a Hub download fetches: configs, safetensors weights, tokenizer files (never pickles)
_HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")


@dataclass
class HFStack:
    """A float64 causal LM in eval mode, its decoder layers, and where it came from."""

    model: Any
    layers: Any  # the torch.nn.ModuleList of decoder layers
    folder: Path
    source: str

    @property
    def max_positions(self) -> Optional[int]:
        """The longest sequence the position embeddings cover (None when unbounded)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def describe(self) -> dict[str, Any]:
        """What results.json says about the model."""
        config = self.model.config
        return {"architecture": config.model_type, "class": type(self.model).__name__,
                "layers": len(self.layers), "n_embd": config.hidden_size,
                "vocab_size": config.vocab_size, "max_positions": self.max_positions,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "attention": "sdpa", "dtype": "float64",
                "float32_parts": FLOAT32_PARTS.get(config.model_type)}


def _transformers():
    """The ``transformers`` module, or an InputError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise InputError("analyze flow --hf needs the transformers package: "
                         "pip install 'steerflow[hf]'") from None
    return transformers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_source(source: str) -> Path:
    """The local folder of ``source``: a folder saved by transformers, or ``hf:<repo id>``
    downloaded from the Hub (configs, safetensors weights and tokenizer files only)."""
    if source.startswith(HUB_PREFIX):
        folder = download(source[len(HUB_PREFIX):].strip(), _HUB_PATTERNS)
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"{source}: no such folder; pass a folder saved by transformers "
                                  f"(save_pretrained) or hf:<repo id>")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{source}: no config.json, so not a model saved by transformers "
                              f"(save_pretrained writes one)")
    return folder


def read_config(folder: Path, source: str):
    """The transformers config of ``folder``, checked to be a supported decoder-only LM."""
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: unreadable config.json: {_first_line(exc)}") from exc
    if config.model_type not in DECODER_LAYERS:
        names = ", ".join(config.architectures or [type(config).__name__])
        raise CheckpointError(f"{source}: architecture {config.model_type!r} ({names}) is not a "
                              f"supported decoder-only causal LM; analyze flow --hf reads "
                              f"{', '.join(DECODER_LAYERS)}")
    return config


def load_hf_stack(source: str, device: str = "cpu", progress: bool = False,
                  seq_len: Optional[int] = None) -> HFStack:
    """The causal LM of ``source`` in float64 and eval mode, without parameter gradients;
    ``seq_len`` (the sequence length to be run) is checked against its positions before the
    weights are read."""
    folder = resolve_source(source)
    config = read_config(folder, source)
    limit = getattr(config, "max_position_embeddings", None)
    if seq_len is not None and limit is not None and seq_len > limit:
        raise InputError(f"--seq-len {seq_len} exceeds the model's {limit} positions")
    transformers = _transformers()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    if not progress:
        transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, config=config, attn_implementation="sdpa", use_safetensors=True,
            local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: cannot load the model: {_first_line(exc)}") from exc
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    model = model.to(device=device, dtype=torch.float64).eval().requires_grad_(False)
    return HFStack(model, getattr(model.base_model, DECODER_LAYERS[config.model_type]), folder,
                   source)


def load_tokenizer(folder: Path, source: str):
    """The tokenizer saved beside the model, or None when the folder has none."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        return _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: unreadable tokenizer: {_first_line(exc)}") from exc


def layer_branch(layer, args: tuple, kwargs: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x ↦ layer(x, extras) − x``, the extras taken from a recorded ``layer(*args, **kwargs)``."""
    rest = args[1:] if args else ()
    extras = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def branch(x: torch.Tensor) -> torch.Tensor:
        out = layer(x, *rest, **extras)
        out = out[0] if isinstance(out, tuple) else out  # older layers return (hidden, ...)
        return out - x  # f_l(x): the layer is x + f_l(x)

    return branch


def residual_updates(stack: HFStack, idx: torch.Tensor) -> list[Update]:
    """Run the model on token ids ``idx`` ``(B, T)`` and return each decoder layer as an
    :class:`~steerflow.analysis.discrete.Update`: its input ``x_l`` ``(B, T, d)``, its update
    ``f_l(x_l)`` and its branch ``f_l`` (labels ``block 0``, ``block 1``, ...)."""
    calls: list[tuple[Any, tuple, dict]] = []

    def record(layer, args: tuple, kwargs: dict) -> None:
        calls.append((layer, args, kwargs))

    handles = [layer.register_forward_pre_hook(record, with_kwargs=True)
               for layer in stack.layers]
    try:
        with torch.no_grad():
            stack.model(input_ids=idx, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    updates = []
    for i, (layer, args, kwargs) in enumerate(calls):
        x = args[0] if args else kwargs["hidden_states"]  # (B, T, d)
        branch = layer_branch(layer, args, kwargs)
        with torch.no_grad():
            updates.append(Update(f"block {i}", x, branch(x), branch))
    return updates
