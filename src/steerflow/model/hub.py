"""Checkpoint folders in the Hugging Face layout: ``config.json`` + ``model.safetensors``.

Weights are read only through safetensors; nothing is ever unpickled. Every file is written to a
temporary name and renamed into place, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence, Union

from steerflow.config import ModelConfig
from steerflow.errors import CheckpointError, ConfigError
from steerflow.io import atomic_write, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "steerflow-gpt"
#: checkpoints carry this format version; a different one is refused with a clear message
FORMAT_VERSION = 1
#: ``from_pretrained("hf:user/repo")`` downloads from the Hub; plain paths are local only
HUB_PREFIX = "hf:"
_PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")


def save_pretrained(model, directory: Union[str, os.PathLike], tokenizer=None) -> None:
    """Save ``model`` (a :class:`~steerflow.model.gpt.SteerFlowGPT`) into ``directory``."""
    from safetensors.torch import save_model

    from steerflow import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(p.isfinite().all()):
            raise CheckpointError(f"refusing to save non-finite weights ({name}) to {directory}")
    meta = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
            "steerflow_version": __version__, **model.config.to_dict()}
    metadata = {"format": "pt", "model_type": MODEL_TYPE}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_model(model, tmp, metadata=metadata))
    if tokenizer is not None:
        tokenizer.save(directory)
    # config last: a folder is a checkpoint only once its config is in place
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")


def read_config(directory: Union[str, os.PathLike]) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint folder, checked for format and version."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        pickles = [n for n in _PICKLE_NAMES if (Path(directory) / n).exists()]
        hint = (f"; found {pickles[0]}, a pickle file, which steerflow refuses to load "
                f"(it could run arbitrary code)") if pickles else ""
        raise CheckpointError(f"{path}: missing — not a steerflow checkpoint folder{hint}")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{path}: model_type is {data.get('model_type')!r}, "
                              f"expected {MODEL_TYPE!r}")
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, this steerflow reads version "
            f"{FORMAT_VERSION} (saved by steerflow {data.get('steerflow_version', '?')})")
    data.pop("model_type"), data.pop("steerflow_version", None)
    try:
        return ModelConfig.from_dict(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def from_pretrained(cls, path_or_repo: Union[str, os.PathLike], *, map_location: str = "cpu",
                    **hub_kwargs):
    """Build ``cls(config)`` and load its weights from a folder, or ``hf:<repo id>`` from the Hub."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    name = str(path_or_repo)
    if name.startswith(HUB_PREFIX):  # network access only when asked for by name
        directory = download(name[len(HUB_PREFIX):], **hub_kwargs)
    else:
        directory = Path(path_or_repo)
        if not directory.exists():
            raise CheckpointError(f"{name}: no such checkpoint folder (for a Hugging Face Hub "
                                  f"repo, write {HUB_PREFIX}{name})")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    model = cls(config)
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({exc})") from None
    except RuntimeError as exc:  # shape mismatch
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise CheckpointError(f"{weights}: weights do not match {CONFIG_NAME} ({detail})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not match {CONFIG_NAME} (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})")
    if (directory / "tokenizer.json").is_file():
        from steerflow.data.tokenizer import Tokenizer

        model.tokenizer = Tokenizer.load(directory)
    # load_model copies into the parameters where they are (CPU): move them to map_location
    model.to(map_location)
    model.eval()
    return model


def download(repo_id: str, patterns: Sequence[str] = (CONFIG_NAME, WEIGHTS_NAME, "tokenizer*.json"),
             **hub_kwargs) -> Path:
    """Fetch the files matching ``patterns`` (default: a steerflow checkpoint's safetensors, config
    and tokenizer files) of a Hub repo; never pickles."""
    import logging

    from huggingface_hub import snapshot_download

    logging.getLogger(__name__).info("downloading %s from the Hugging Face Hub", repo_id)
    try:
        return Path(snapshot_download(
            repo_id, allow_patterns=list(patterns), **hub_kwargs))
    except Exception as exc:  # network, auth, missing repo: one clear line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[0] if lines else ""  # huggingface_hub's messages run over several lines
        raise CheckpointError(f"{repo_id}: not a local folder and not downloadable from the "
                              f"Hugging Face Hub ({type(exc).__name__}: {detail})") from None


def push_to_hub(model, repo_id: str, **kwargs) -> str:
    """Save into a temporary folder and upload it with ``huggingface_hub.HfApi.upload_folder``."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, **{k: v for k, v in kwargs.items() if k == "private"})
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp)
    return str(info)


def load_model(path: Union[str, os.PathLike], device: str = "cpu"):
    """Load a checkpoint folder for evaluation (errors are one-line CheckpointErrors)."""
    from steerflow.model.gpt import SteerFlowGPT

    model = SteerFlowGPT.from_pretrained(path, map_location=device)
    return model.to(device).eval()
