"""Import a `transformers` GPT-2 checkpoint as a steerflow model, exactly.

:func:`convert_hf` reads a folder saved by ``transformers`` (``config.json``,
``model.safetensors`` — sharded or not — and the tokenizer files), or ``hf:<repo id>`` from the
Hub, and builds the :class:`~steerflow.model.gpt.SteerFlowGPT` that computes the same logits:

* without ``ode_span`` the discrete model, block for block;
* with ``ode_span=(A, B)`` layers A … B−1 become one ODE block with the ``depth-block`` field
  (:mod:`steerflow.model.depth_field`): its knots are those layers, α = 1, and the solvers are
  Euler with B − A steps, which reproduces the layers exactly; u's weights start at zero.

``transformers`` itself is not needed: weights are read with safetensors, and a folder holding
only pickles (``pytorch_model.bin``) is refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import torch

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import CheckpointError, ConfigError
from steerflow.hf import CONVERT_FIELDS
from steerflow.hf.gpt2 import model_config_from_gpt2, to_steerflow
from steerflow.hf.tokenizer import check_tokenizer, read_hf_tokenizer
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.hub import HUB_PREFIX, download

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
#: what ``hf:<repo id>`` fetches: config, safetensors weights (one file or shards), tokenizer
HUB_FILES = ("config.json", WEIGHTS, WEIGHTS_INDEX, "model-*-of-*.safetensors", "tokenizer.json",
             "vocab.json", "merges.txt")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


@dataclasses.dataclass
class Conversion:
    """A converted model (tokenizer attached when the source had one) and what was done."""

    model: SteerFlowGPT
    source: str
    architecture: str
    layers: list[str]
    tokenizer: Optional[str]
    #: max |H_euler − H_layers| / max |H_layers| of the ODE block against the layers it replaces
    span_error: Optional[float] = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        return {"source": self.source, "architecture": self.architecture,
                "layers": self.layers, "params": self.model.num_params(),
                "tokenizer": self.tokenizer, "span_error": self.span_error,
                "config": self.model.config.to_dict(), "notes": self.notes}


def parse_span(text: str) -> tuple[int, int]:
    """``--ode-span A:B`` → ``(A, B)``."""
    start, sep, end = str(text).partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise ConfigError(f"--ode-span {text!r}: expected START:END, e.g. 4:8 (layers 4-7 become "
                          f"the ODE block)") from None


def resolve_source(source: str, log: Callable[[str], None]) -> Path:
    """A local folder, or the files :data:`HUB_FILES` of ``hf:<repo id>`` downloaded from the Hub."""
    if source.startswith(HUB_PREFIX):
        repo = source[len(HUB_PREFIX):]
        log(f"fetching {repo} from the Hugging Face Hub: {', '.join(HUB_FILES)} (those present)")
        return download(repo, HUB_FILES)
    folder = Path(source)
    if not folder.is_dir():
        raise CheckpointError(f"{source}: no such folder (for a Hugging Face Hub repo, write "
                              f"{HUB_PREFIX}{source})")
    return folder


def read_hf_config(folder: Path) -> dict:
    """``config.json`` of a ``transformers`` folder, as a dictionary."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing — not a folder saved by transformers' "
                              f"save_pretrained")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards its index names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif (folder / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))
            files = [folder / name for name in sorted(set(index["weight_map"].values()))]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{folder / WEIGHTS_INDEX}: not a safetensors index") from None
    else:
        pickles = [n for n in _PICKLES if (folder / n).exists()]
        hint = (f"; found {pickles[0]}, which steerflow refuses to load (pickles can run code): "
                f"re-save it with save_pretrained(safe_serialization=True)") if pickles else ""
        raise CheckpointError(f"{folder / WEIGHTS}: missing{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({exc})") from None
    return tensors


def hybrid_config(config: ModelConfig, span: tuple[int, int], field: str) -> ModelConfig:
    """``config`` with layers ``span`` as one ODE block that the (B−A)-step Euler solve makes
    equal to them: the depth-block field, α = 1 and Euler with one step per layer."""
    if field not in CONVERT_FIELDS:
        raise ConfigError(f"field {field!r} cannot hold pretrained layers; use "
                          f"{', '.join(CONVERT_FIELDS)}")
    spanned = config.replace(ode_span=span)  # ModelConfig checks 0 <= A < B <= n_layer
    steps = span[1] - span[0]
    # field_hidden: the knot blocks' MLP width, as `steerflow info` reports it
    return spanned.replace(field=field, alpha_init=1.0, field_hidden=4 * config.n_embd,
                           eval_solver=SolverSpec(method="euler", steps=steps),
                           train_solver=SolverSpec(method="euler", steps=steps, adjoint=True))


@torch.no_grad()
def load_weights(model: SteerFlowGPT, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``tensors`` (steerflow names) into ``model``, checking every shape."""
    state = model.state_dict()
    for name, value in tensors.items():
        if state[name].shape != value.shape:
            raise CheckpointError(f"{where}: {name} has shape {tuple(value.shape)}, config.json "
                                  f"gives {tuple(state[name].shape)}")
        state[name].copy_(value)


@torch.no_grad()
def span_error(model: SteerFlowGPT, tokens: int = 8, seed: int = 0) -> float:
    """Relative max difference between the ODE block's own Euler solve and its knot layers
    applied in turn, on random hidden states: ~1e-7 in float32 when the conversion is exact."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(1, min(tokens, model.config.block_size), model.config.n_embd, generator=gen)
    layers = h
    for block in model.ode.field.layers:
        layers = block(layers)
    solved = model.ode(h, model.control(None, 1), model.config.eval_solver)
    return float((solved - layers).abs().max() / layers.abs().max())


def convert_hf(source: str, ode_span: Optional[tuple[int, int]] = None,
               field: str = "depth-block", log: Callable[[str], None] = lambda _: None
               ) -> Conversion:
    """The steerflow model equal to the GPT-2 checkpoint ``source`` (folder or ``hf:<repo id>``)."""
    folder = resolve_source(source, log)
    hf = read_hf_config(folder)
    where = str(folder)
    config = model_config_from_gpt2(hf, where)
    if ode_span is not None:
        config = hybrid_config(config, ode_span, field)
    tensors = read_hf_weights(folder)
    name = source[len(HUB_PREFIX):] if source.startswith(HUB_PREFIX) else folder.resolve().name
    tokenizer = read_hf_tokenizer(folder, f"hf:{name}")
    if tokenizer is not None:
        check_tokenizer(tokenizer, config, where)
    model = SteerFlowGPT(config)
    load_weights(model, to_steerflow(tensors, config, where), where)
    model.tokenizer = tokenizer
    model.eval()
    result = Conversion(model=model, source=source, architecture="GPT2LMHeadModel",
                        layers=config.layer_layout(),
                        tokenizer=None if tokenizer is None else tokenizer.name)
    if model.ode is not None:
        result.span_error = span_error(model)
    if tokenizer is None:
        result.notes.append("no tokenizer files (tokenizer.json, or vocab.json + merges.txt) in "
                            "the source: generate needs one saved with the model")
    return result
