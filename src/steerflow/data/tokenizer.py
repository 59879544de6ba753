"""Byte-level BPE tokenizers: GPT-2's (from the original OpenAI files) or one trained here.

Specs accepted by :func:`build_tokenizer`:

* ``gpt2`` — GPT-2's 50,257-token BPE, built from ``gpt2-tokenizer/{encoder.json,vocab.bpe}``
  of a local source (or ``gpt2/tokenizer.json`` from the Hub). Encodes identically to GPT-2.
* ``bpe:N`` — a byte-level BPE with ``N`` tokens (256 byte tokens, ``<|endoftext|>`` and merges)
  trained deterministically on the WikiText-2 train split (or on given texts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from steerflow.data.source import DataSource
from steerflow.errors import DataError
from steerflow.io import atomic_write_text

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
#: Smallest ``N`` for ``bpe:N``: 256 byte tokens + ``<|endoftext|>`` + at least three merges.
MIN_BPE_VOCAB = 260
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer_meta.json"
VALID_SPECS = f"'gpt2' or 'bpe:N' with N an integer >= {MIN_BPE_VOCAB} (e.g. 'bpe:4096')"
_BPE_SPEC = re.compile(r"bpe:(\d+)")


class Tokenizer:
    """A byte-level BPE tokenizer: a thin typed wrapper around ``tokenizers.Tokenizer``.

    Special tokens in the text (``<|endoftext|>``) are encoded as their single id, as in GPT-2.
    """

    def __init__(self, backend: tokenizers.Tokenizer, name: str) -> None:
        eos = backend.token_to_id(EOS_TOKEN)
        if eos is None:
            raise DataError(f"tokenizer {name!r} has no {EOS_TOKEN} token")
        self._backend = backend
        self._name = name
        self._eos_id = eos

    @property
    def name(self) -> str:
        """The spec this tokenizer was built from, e.g. ``gpt2`` or ``bpe:4096``."""
        return self._name

    @property
    def vocab_size(self) -> int:
        """Number of token ids (including special tokens); ids are ``0 .. vocab_size - 1``."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        """The id of ``<|endoftext|>``."""
        return self._eos_id

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying Hugging Face ``tokenizers.Tokenizer``."""
        return self._backend

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no prefix space and no special tokens are added)."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel."""
        return [
            enc.ids for enc in self._backend.encode_batch(list(texts), add_special_tokens=False)
        ]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; ``decode(encode(x)) == x`` for any string ``x``."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        """The serialized ``tokenizer.json`` content."""
        return self._backend.to_str()

    def content_hash(self) -> str:
        """sha256 (hex) of :meth:`to_json`; changes whenever the tokenization can change."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_meta.json`` into ``directory``; return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "vocab_size": self.vocab_size, "sha256": self.content_hash()}
        atomic_write_text(directory / TOKENIZER_FILE, self.to_json())
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Tokenizer:
        """Load a tokenizer written by :meth:`save`.

        Raises:
            DataError: a file is missing, is not valid JSON, or does not match its metadata.
        """
        directory = Path(directory)
        meta = _read_meta(directory / META_FILE)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(f"tokenizer file {path} is missing")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on parse errors
            raise DataError(f"tokenizer file {path} is corrupt: {exc}") from exc
        tokenizer = cls(backend, meta["name"])
        if meta.get("sha256") not in (None, tokenizer.content_hash()):
            raise DataError(
                f"tokenizer file {path} does not match the hash in {directory / META_FILE}"
            )
        return tokenizer

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size})"


def _read_meta(path: Path) -> dict:
    """Parse ``tokenizer_meta.json``; it must hold at least a string ``name``."""
    if not path.is_file():
        raise DataError(f"tokenizer metadata file {path} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"tokenizer metadata file {path} is corrupt: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise DataError(f"tokenizer metadata file {path} has no string field 'name'")
    return meta


def parse_spec(spec: str) -> int | None:
    """Validate a tokenizer spec: ``None`` for ``gpt2``, the vocabulary size ``N`` for ``bpe:N``."""
    if spec == "gpt2":
        return None
    match = _BPE_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise DataError(f"unknown tokenizer spec {spec!r}; valid forms: {VALID_SPECS}")
    size = int(match.group(1))
    if size < MIN_BPE_VOCAB:
        raise DataError(f"tokenizer spec {spec!r} is too small; valid forms: {VALID_SPECS}")
    return size


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
    """A tokenizer with GPT-2's byte-level pre-tokenizer (no prefix space) and decoder."""
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return backend


def gpt2_from_files(encoder_json: Path, vocab_bpe: Path) -> Tokenizer:
    """GPT-2's tokenizer from OpenAI's ``encoder.json`` (token -> id) and ``vocab.bpe`` (merges)."""
    for path in (encoder_json, vocab_bpe):
        if not path.is_file():
            raise DataError(f"GPT-2 tokenizer file {path} is missing")
    try:
        model = models.BPE.from_file(str(encoder_json), str(vocab_bpe))
    except Exception as exc:  # tokenizers raises a bare Exception on parse errors
        raise DataError(
            f"GPT-2 tokenizer files {encoder_json}, {vocab_bpe} are corrupt: {exc}"
        ) from exc
    backend = _byte_level(model)
    backend.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])
    tokenizer = Tokenizer(backend, "gpt2")
    if tokenizer.vocab_size != GPT2_VOCAB_SIZE or tokenizer.eos_id != GPT2_VOCAB_SIZE - 1:
        raise DataError(
            f"{encoder_json} gives {tokenizer.vocab_size} ids with {EOS_TOKEN}={tokenizer.eos_id}; "
            f"GPT-2 has {GPT2_VOCAB_SIZE} with {EOS_TOKEN}={GPT2_VOCAB_SIZE - 1}"
        )
    return tokenizer


def _gpt2_from_hub() -> Tokenizer:
    """GPT-2's tokenizer downloaded from the Hugging Face Hub (``gpt2/tokenizer.json``)."""
    logger.info("Fetching the GPT-2 tokenizer (gpt2/tokenizer.json) from the Hugging Face Hub")
    try:
        backend = tokenizers.Tokenizer.from_pretrained("gpt2")
    except Exception as exc:  # network and Hub errors come in many types
        raise DataError(
            f"could not fetch the GPT-2 tokenizer from the Hugging Face Hub: {exc}"
        ) from exc
    return Tokenizer(backend, "gpt2")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE with ``vocab_size`` tokens on ``texts`` (deterministic).

    The vocabulary is ``<|endoftext|>`` (id 0), the 256 byte tokens, then merges in order. A
    corpus too small to supply enough merges gives fewer tokens (logged as a warning).
    """
    backend = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = Tokenizer(backend, f"bpe:{vocab_size}")
    if tokenizer.vocab_size < vocab_size:
        logger.warning(
            "bpe:%d: the training corpus only supports %d tokens", vocab_size, tokenizer.vocab_size
        )
    return tokenizer


def build_tokenizer(
    spec: str, source: DataSource, train_texts: Iterable[str] | None = None
) -> Tokenizer:
    """Build the tokenizer named by ``spec`` (``gpt2`` or ``bpe:N``) from ``source``.

    Args:
        spec: ``gpt2`` or ``bpe:N``.
        source: Where GPT-2's files, or the WikiText-2 train split for ``bpe:N``, come from.
        train_texts: Texts to train ``bpe:N`` on instead of the WikiText-2 train split
            (ignored for ``gpt2``).

    Raises:
        DataError: the spec is invalid (the message lists valid forms) or files are missing.
    """
    size = parse_spec(spec)
    if size is None:
        if source.kind == "hub":
            return _gpt2_from_hub()
        return gpt2_from_files(
            source.path("gpt2-tokenizer", "encoder.json"),
            source.path("gpt2-tokenizer", "vocab.bpe"),
        )
    if train_texts is None:
        from steerflow.data.texts import load_lm_texts

        train_texts = load_lm_texts(source)["train"].splitlines(keepends=True)
    return train_bpe(train_texts, size)
