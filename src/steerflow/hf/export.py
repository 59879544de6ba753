"""Export a steerflow model to `transformers`' layout: ``save_pretrained(DIR, format="transformers")``.

* A discrete model becomes a plain ``GPT2LMHeadModel`` folder (``config.json``,
  ``model.safetensors``): ``AutoModelForCausalLM.from_pretrained(DIR)`` computes the same logits,
  with no steerflow installed.
* A continuous-depth model follows the Hub's convention for custom architectures: ``config.json``
  names the classes of ``modeling_steerflow.py`` (copied from
  :mod:`steerflow.hf.modeling_steerflow`) in ``auto_map``, so
  ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` loads it (steerflow must be
  installed), and ``generate(..., u=...)`` steers.

With a tokenizer, ``tokenizer.json`` and ``tokenizer_config.json`` come along (``AutoTokenizer``,
``pipeline("text-generation")``). Weights are safetensors; every file is written atomically.
No ``transformers`` import here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import torch

from steerflow.errors import CheckpointError, ConfigError
from steerflow.hf.gpt2 import gpt2_config, to_gpt2
from steerflow.hf.tokenizer import write_hf_tokenizer
from steerflow.io import atomic_write, atomic_write_text

FORMATS = ("steerflow", "transformers")
WEIGHTS_NAME = "model.safetensors"
REMOTE_MODULE = "modeling_steerflow"
#: the ``model_type`` of an exported continuous-depth model (steerflow's own folders say
#: ``steerflow-gpt``: the two layouts cannot be mistaken for each other)
REMOTE_MODEL_TYPE = "steerflow"
#: the remote model's submodule holding the SteerFlowGPT: its weights are ``model.<name>``
REMOTE_PREFIX = "model."


def export_transformers(model, directory: Union[str, os.PathLike], tokenizer=None) -> Path:
    """Write ``model`` (a :class:`~steerflow.model.gpt.SteerFlowGPT`) to ``directory`` in
    ``transformers``' layout; returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    eos_id = None if tokenizer is None else tokenizer.eos_id
    if model.config.is_hybrid:
        # cloned: a tied head is stored twice (safetensors refuses shared tensors)
        tensors = {REMOTE_PREFIX + k: v.detach().float().cpu().clone()
                   for k, v in model.state_dict().items()}
        config = remote_config(model.config, eos_id)
    else:
        tensors = to_gpt2(model.state_dict(), model.config)
        config = gpt2_config(model.config, eos_id)
    _check_finite(tensors, directory)
    _write_weights(directory / WEIGHTS_NAME, tensors)
    if model.config.is_hybrid:
        source = Path(__file__).with_name(f"{REMOTE_MODULE}.py").read_text(encoding="utf-8")
        atomic_write_text(directory / f"{REMOTE_MODULE}.py", source)
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, directory, model.config.block_size)
    # config last: a folder is a model only once its config is in place
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    return directory


def remote_config(config, eos_id: Optional[int]) -> dict:
    """``config.json`` of an exported continuous-depth model: the Hub keys, ``auto_map`` naming
    the remote classes, and steerflow's :class:`~steerflow.config.ModelConfig` under ``steerflow``."""
    from steerflow import __version__

    return {"architectures": ["SteerFlowForCausalLM"], "model_type": REMOTE_MODEL_TYPE,
            "auto_map": {"AutoConfig": f"{REMOTE_MODULE}.SteerFlowConfig",
                         "AutoModelForCausalLM": f"{REMOTE_MODULE}.SteerFlowForCausalLM"},
            "steerflow": config.to_dict(), "steerflow_version": __version__,
            "vocab_size": config.vocab_size, "bos_token_id": eos_id, "eos_token_id": eos_id,
            # the SteerFlowGPT ties its own head; transformers must not tie anything else
            "tie_word_embeddings": False, "use_cache": False, "dtype": "float32",
            "torch_dtype": "float32"}


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")


def _check_finite(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    for name, tensor in tensors.items():
        if not bool(tensor.isfinite().all()):
            raise CheckpointError(f"refusing to export non-finite weights ({name}) to {directory}")


def _write_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
