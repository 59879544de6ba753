"""Tokenizer files in `transformers`' layout ↔ steerflow's :class:`~steerflow.data.Tokenizer`.

A folder saved by ``transformers`` holds ``tokenizer.json`` (a ``tokenizers`` serialisation, which
steerflow's tokenizer wraps as it is) and, for GPT-2's BPE, often also ``vocab.json`` +
``merges.txt`` (OpenAI's ``encoder.json`` + ``vocab.bpe`` under other names). Exporting writes
``tokenizer.json`` and a ``tokenizer_config.json`` that ``AutoTokenizer`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from steerflow.config import ModelConfig
from steerflow.data.tokenizer import EOS_TOKEN, TOKENIZER_FILE, Tokenizer, gpt2_from_files
from steerflow.errors import CheckpointError, DataError
from steerflow.io import atomic_write_text

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def read_hf_tokenizer(folder: Path, name: str) -> Optional[Tokenizer]:
    """The tokenizer saved in a ``transformers`` folder, named ``name``; None when it has none.

    Raises:
        DataError: the files are corrupt or have no ``<|endoftext|>`` token.
    """
    path = folder / TOKENIZER_FILE
    if path.is_file():
        import tokenizers

        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on parse errors
            raise DataError(f"{path}: not a readable tokenizer.json ({exc})") from None
        return Tokenizer(backend, name)
    if (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        return gpt2_from_files(folder / VOCAB_FILE, folder / MERGES_FILE)
    return None


def check_tokenizer(tokenizer: Tokenizer, config: ModelConfig, where: str) -> None:
    """The tokenizer must give exactly the model's ids ``0 .. vocab_size-1``."""
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{where}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size "
            f"is {config.vocab_size}; they must match (is it the model's own tokenizer?)")


def write_hf_tokenizer(tokenizer: Tokenizer, directory: Path, block_size: int) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` for ``AutoTokenizer.from_pretrained``."""
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOS_TOKEN,
                "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "model_max_length": block_size,
                "add_prefix_space": False, "clean_up_tokenization_spaces": False}
    atomic_write_text(directory / TOKENIZER_FILE, tokenizer.to_json())
    atomic_write_text(directory / TOKENIZER_CONFIG_FILE, json.dumps(settings, indent=2) + "\n")
