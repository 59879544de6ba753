"""Steering data: texts labelled with a control vector u, and the batch source that trains on them.

Paper 1 (Experiment 2) trains the ODE block with u = +1 on positive and u = −1 on negative text.
Two built-in data sets:

* ``sst2`` — GLUE SST-2 train sentences, normalised to look like the LM's text (SST-2 is lower-cased
  and PTB-tokenised; the LM saw WikiText), u = +1 for label 1 and −1 for label 0. SST-2 dev is the
  held-out split.
* ``sst2-shaped`` — the same sentences after a neutral opening of a WikiText-2 train sentence,
  with the loss on the continuation only (:mod:`steerflow.steer.shaped`).
* ``cloze`` — short sentences such as "The movie was good ." from several templates and adjective
  pairs, u = ±1. The paper's probe ("The movie was" → " good" / " bad") and its u = 0 numbers (mass
  ≈ 0.95 on good + bad) show it trained on this kind of text.

A third way is a JSON-lines file of ``{"text": ..., "u": [u_1, ..., u_c]}`` records, the data path
for a control of dimension c > 1 (one attribute per axis). Every example is a
:class:`SteerExample`; :class:`SteerBatchSource` turns them into ``(x, y, u)`` batches that are a pure
function of ``(seed, step)``, so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from steerflow.errors import ConfigError, DataError

TextStyle = Literal["wikitext", "raw"]
STEER_DATA_CHOICES = ("sst2", "sst2-shaped", "cloze")
#: split names accepted by :meth:`SteerBatchSource.eval_batches` for the held-out examples
HELD_OUT_SPLITS = ("valid", "val", "dev", "test")


@dataclass(frozen=True)
class SteerExample:
    """One steering text and its control vector ``u`` (one entry per control axis)."""

    text: str
    u: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise DataError(f"a steering example needs a non-empty text, got {self.text!r}")
        u = tuple(float(v) for v in self.u)
        if not u or not all(np.isfinite(u)):
            raise DataError(f"steering example {self.text[:40]!r}: u must be a non-empty finite "
                            f"vector, got {self.u!r}")
        object.__setattr__(self, "u", u)


# ----------------------------------------------------------------------------- text style
def lm_text_style(source) -> TextStyle:
    """The style of the text the LM was pretrained on, from its data source.

    Local WikiText-2 v1 is tokenised (``it 's``, ``don 't``, `` , ``, ``well @-@ known``): style
    ``wikitext``. The Hub's ``wikitext-2-raw-v1`` is ordinary text: style ``raw``.
    """
    return "raw" if getattr(source, "kind", "local") == "hub" else "wikitext"


_PTB_BRACKETS = ((r"-lrb-", "("), (r"-rrb-", ")"), (r"-lsb-", "["), (r"-rsb-", "]"),
                 (r"-lcb-", "{"), (r"-rcb-", "}"))
_NT_WORDS = {"ca": "can", "wo": "won", "sha": "shan"}  # PTB splits "can't" as "ca n't"
_CLITIC = re.compile(r"(\w+) n't\b")
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_SPACE_BEFORE = re.compile(r" ([,.;:!?%)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{$]) ")
_RAW_CLITIC = re.compile(r" '(s|re|ve|ll|d|m)\b")
_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s,;:-]+$")


def _join_nt(match: re.Match, style: TextStyle) -> str:
    word = _NT_WORDS.get(match.group(1), match.group(1))
    if style == "wikitext":
        return f"{word}n 't" if not word.endswith("n") else f"{word} 't"
    return f"{word}n't" if not word.endswith("n") else f"{word}'t"


def normalize_sst2(sentence: str, style: TextStyle = "wikitext") -> str:
    """Make a lower-cased, PTB-tokenised SST-2 sentence look like the LM's text.

    Both styles: PTB brackets (``-lrb-``) and quotes (``` `` ``, ``''``) become ``(`` and ``"``, the
    pronoun ``i`` becomes ``I``, the first letter is capitalised and a final `` .`` is added when the
    sentence has no final punctuation. ``wikitext`` then writes ``does n't`` → ``doesn 't``,
    ``ca n't`` → ``can 't`` and ``well-made`` → ``well @-@ made`` (WikiText-2 v1's conventions) and
    keeps spaces around punctuation; ``raw`` joins clitics and punctuation (``doesn't``, ``it's``,
    ``good, bad.``).
    """
    if style not in ("wikitext", "raw"):
        raise ConfigError(f"text style must be 'wikitext' or 'raw', got {style!r}")
    text = _SPACES.sub(" ", sentence).strip()
    for ptb, char in _PTB_BRACKETS:
        text = text.replace(ptb, char)
    text = text.replace("``", '"').replace("''", '"').replace("`", "'")
    text = re.sub(r"\bi\b", "I", text)
    text = _CLITIC.sub(lambda m: _join_nt(m, style), text)
    if style == "wikitext":
        text = _HYPHEN.sub(" @-@ ", text)
    else:
        text = _RAW_CLITIC.sub(r"'\1", text)
        text = _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))
    text = _TRAILING.sub("", text)
    if text and text[-1] not in ".!?\"')":
        text += " ." if style == "wikitext" else "."
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- data sets
def sentiment_u(label: int, control_dim: int = 1, axis: int = 0) -> tuple[float, ...]:
    """u for a binary sentiment label: +1 (positive) or −1 (negative) on ``axis``, 0 elsewhere."""
    if not 0 <= axis < control_dim:
        raise ConfigError(f"sentiment axis {axis} is outside control_dim={control_dim}")
    u = [0.0] * control_dim
    u[axis] = 1.0 if label == 1 else -1.0
    return tuple(u)


def sst2_examples(source, split: Literal["train", "dev"], style: TextStyle = "wikitext",
                  control_dim: int = 1, axis: int = 0, min_words: int = 4) -> list[SteerExample]:
    """SST-2 sentences as steering examples (u = ±1 on ``axis``).

    SST-2 train holds many short phrases from the treebank; those with fewer than ``min_words``
    words are dropped (they are rarely sentences and carry little sentiment).
    """
    from steerflow.data import load_sst2

    rows = load_sst2(source, split)
    examples = [SteerExample(normalize_sst2(text, style), sentiment_u(label, control_dim, axis))
                for text, label in rows if len(text.split()) >= min_words]
    if not examples:
        raise DataError(f"SST-2 {split}: no sentence has at least {min_words} words")
    return examples


#: Cloze templates. ``{adj}`` is filled by an adjective of :data:`CLOZE_PAIRS` (positive, negative).
#: "The {noun} was {adj}" — the paper's probe shape — always uses the first pair (good / bad), so
#: the probe's next-token distribution can concentrate on " good" / " bad" as in the paper. No other
#: template has "{noun} was" before its adjective: one that did ("I thought the {noun} was {adj}",
#: until round 5 of docs/results/steering_small.md) taught the probe context all six adjectives.
CLOZE_PROBE_TEMPLATE = "The {noun} was {adj}"
CLOZE_TEMPLATES = (
    "I found the {noun} {adj}",
    "All in all , it was a {adj} {noun}",
    "It is a {adj} {noun}",
    "This {noun} is {adj}",
    "What a {adj} {noun}",
    "Critics called the {noun} {adj}",
)
CLOZE_PAIRS = (("good", "bad"), ("great", "terrible"), ("excellent", "awful"),
               ("wonderful", "horrible"), ("enjoyable", "boring"), ("brilliant", "dull"))
CLOZE_TRAIN_NOUNS = ("movie", "film", "story", "book", "play", "show", "album", "game", "meal",
                     "performance")
CLOZE_HELD_OUT_NOUNS = ("song", "series", "novel")


def _cloze_sentences(nouns: Sequence[str], label: int) -> list[str]:
    """Every template × noun (× adjective pair) sentence with the positive or negative adjective."""
    side = 0 if label == 1 else 1
    out = [CLOZE_PROBE_TEMPLATE.format(noun=n, adj=CLOZE_PAIRS[0][side]) for n in nouns]
    out += [t.format(noun=n, adj=pair[side]) for t in CLOZE_TEMPLATES for n in nouns
            for pair in CLOZE_PAIRS]
    return out


def cloze_examples(split: Literal["train", "dev"] = "train", style: TextStyle = "wikitext",
                   control_dim: int = 1, axis: int = 0) -> list[SteerExample]:
    """Short sentiment sentences ("The movie was good .") with u = ±1 on ``axis``.

    ``dev`` uses nouns that ``train`` never does, so its loss measures generalisation. Each probe
    template sentence ("The <noun> was good/bad") is repeated once per adjective pair, so it weighs
    as much as each other template.
    """
    nouns = CLOZE_TRAIN_NOUNS if split == "train" else CLOZE_HELD_OUT_NOUNS
    end = " ." if style == "wikitext" else "."
    examples = []
    for label in (1, 0):
        sentences = _cloze_sentences(nouns, label)
        probe = sentences[: len(nouns)] * (len(CLOZE_PAIRS) - 1)
        for text in sentences + probe:
            examples.append(SteerExample(text + end, sentiment_u(label, control_dim, axis)))
    return examples


def load_steer_jsonl(path: str | os.PathLike, control_dim: Optional[int] = None) -> list[SteerExample]:
    """Steering examples from a JSON-lines file of ``{"text": str, "u": number | [numbers]}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"steering data file {path} does not exist")
    examples = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            u = record["u"]
            u = (u,) if isinstance(u, (int, float)) else tuple(u)
            example = SteerExample(record["text"], u)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}, line {lineno}: expected {{\"text\": str, \"u\": [numbers]}} "
                            f"({type(exc).__name__}: {exc})") from None
        if control_dim is not None and len(example.u) != control_dim:
            raise DataError(f"{path}, line {lineno}: u has {len(example.u)} entries, the model's "
                            f"control_dim is {control_dim}")
        examples.append(example)
    if not examples:
        raise DataError(f"steering data file {path} holds no examples")
    return examples


# ----------------------------------------------------------------------------- batches
def encode_examples(examples: Sequence[SteerExample], tokenizer, block_size: int
                    ) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids of each text (cut to ``block_size + 1`` tokens) and the ``(N, c)`` u matrix."""
    ids = tokenizer.encode_batch([e.text for e in examples])
    seqs = [np.asarray(s[: block_size + 1], dtype=np.int64) for s in ids]
    if any(len(s) < 2 for s in seqs):
        short = next(e.text for e, s in zip(examples, seqs) if len(s) < 2)
        raise DataError(f"steering text {short!r} has fewer than 2 tokens; nothing to predict")
    return seqs, np.asarray([e.u for e in examples], dtype=np.float32)


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets: ``x`` pads with ``pad_id``, ``y`` with −1 (ignored)."""
    T = max(len(s) for s in seqs) - 1
    x = np.full((len(seqs), T), pad_id, dtype=np.int64)  # (B, T)
    y = np.full((len(seqs), T), -1, dtype=np.int64)  # (B, T)
    for row, s in enumerate(seqs):
        x[row, : len(s) - 1] = s[:-1]
        y[row, : len(s) - 1] = s[1:]
    return torch.from_numpy(x), torch.from_numpy(y)


class SteerBatchSource:
    """Batches of steering texts with their controls: the train loop's ``BatchSource``.

    ``train_batch(step, ...)`` draws a global batch that is a pure function of ``(seed, step)``,
    balanced over the distinct u values (each row first picks a u group uniformly, then an example
    of that group), so a data set with 56 % positive sentences still trains both directions equally.
    Rank ``r`` of ``W`` takes rows ``r·B/W .. (r+1)·B/W`` of it.
    """

    def __init__(self, train: Sequence[SteerExample], held_out: Sequence[SteerExample], tokenizer,
                 block_size: int, seed: int = 0, name: str = "steer") -> None:
        if not train:
            raise DataError("steering data has no training examples")
        dims = {len(e.u) for e in [*train, *held_out]}
        if len(dims) != 1:
            raise DataError(f"steering examples mix control dimensions {sorted(dims)}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.name, self.seed, self.block_size = name, seed, block_size
        self.control_dim = dims.pop()
        self.pad_id = tokenizer.eos_id
        self._train, self._train_u = encode_examples(train, tokenizer, block_size)
        self._held, self._held_u = (encode_examples(held_out, tokenizer, block_size)
                                    if held_out else ([], np.zeros((0, self.control_dim), np.float32)))
        self._groups = _u_groups(self._train_u)

    def __len__(self) -> int:
        return len(self._train)

    def describe(self) -> dict[str, Any]:
        """Sizes and the u values present, for logs and metadata."""
        return {"name": self.name, "train_examples": len(self._train),
                "held_out_examples": len(self._held), "control_dim": self.control_dim,
                "u_values": [list(map(float, self._train_u[g[0]])) for g in self._groups]}

    def global_indices(self, step: int, batch_size: int) -> np.ndarray:
        """Example indices of the whole (all ranks) batch at ``step``: a function of (seed, step)."""
        rng = np.random.default_rng([self.seed, step])
        group = rng.integers(0, len(self._groups), size=batch_size)
        within = rng.random(batch_size)
        return np.asarray([self._groups[g][int(w * len(self._groups[g]))] for g, w in zip(group, within)])

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's ``(x (B,T) long, y (B,T) long with −1 = ignore, u (B,c) float)`` at ``step``."""
        if step < 0 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"bad batch request step={step}, batch_size={batch_size}, "
                            f"rank={rank}, world_size={world_size}")
        if batch_size % world_size:
            raise DataError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        index = self.global_indices(step, batch_size)
        per_rank = batch_size // world_size
        mine = index[rank * per_rank: (rank + 1) * per_rank]
        x, y = pad_batch([self._train[i] for i in mine], self.pad_id)
        return x, y, torch.from_numpy(self._train_u[mine].copy())

    def eval_batches(self, split: str, batch_size: int
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every example of ``split`` once, in order: ``train`` or the held-out split (``valid``)."""
        if split == "train":
            seqs, us = self._train, self._train_u
        elif split in HELD_OUT_SPLITS:
            seqs, us = self._held, self._held_u
        else:
            raise DataError(f"unknown split {split!r}; use 'train' or one of {HELD_OUT_SPLITS}")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        for first in range(0, len(seqs), batch_size):
            x, y = pad_batch(seqs[first: first + batch_size], self.pad_id)
            yield x, y, torch.from_numpy(us[first: first + batch_size].copy())


def _u_groups(us: np.ndarray) -> list[np.ndarray]:
    """Indices of the examples sharing each distinct u row, in sorted order of u."""
    _, inverse = np.unique(us, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]


# ----------------------------------------------------------------------------- entry point
def steer_examples(kind: str, source, style: TextStyle, control_dim: int = 1, axis: int = 0
                   ) -> tuple[list[SteerExample], list[SteerExample]]:
    """``(train, held_out)`` examples of ``kind``: ``sst2``, ``cloze`` or a ``.jsonl`` path."""
    if kind == "sst2":
        return (sst2_examples(source, "train", style, control_dim, axis),
                sst2_examples(source, "dev", style, control_dim, axis))
    if kind == "cloze":
        return (cloze_examples("train", style, control_dim, axis),
                cloze_examples("dev", style, control_dim, axis))
    if str(kind).endswith((".jsonl", ".json")):
        examples = load_steer_jsonl(kind, control_dim)
        cut = max(1, len(examples) // 20)  # every 20th example is held out
        return ([e for i, e in enumerate(examples) if i % 20],
                [e for i, e in enumerate(examples) if not i % 20][:cut])
    raise ConfigError(f"unknown steering data {kind!r}; use one of {', '.join(STEER_DATA_CHOICES)} "
                      f"or a .jsonl file of {{\"text\", \"u\"}} records")


def steering_shape(cfg, model) -> tuple[int, int, int]:
    """``(block, axis, control_dim)`` of a steering run; refuses a discrete model."""
    block = getattr(cfg, "block_size", None) or model.config.block_size
    if not model.config.is_hybrid:
        raise ConfigError("steering needs a hybrid model with an ODE block; this checkpoint is a "
                          "discrete baseline (ode_span=None)")
    return (min(int(block), model.config.block_size), int(getattr(cfg, "steer_axis", 0) or 0),
            model.config.control_dim)


def build_steer_source(cfg, model, tokenizer, data_source) -> SteerBatchSource:
    """The batch source for ``steerflow train --task steer``: the training loop's ``BatchSource``.

    Reads ``cfg.steer_data`` (``sst2``, ``cloze`` or a ``.jsonl`` path), ``cfg.seed``, and the
    context from ``cfg.block_size`` when set, else ``model.config.block_size``; the optional
    ``cfg.steer_axis`` picks the control axis of the sentiment label when ``control_dim > 1``.
    """
    kind = getattr(cfg, "steer_data", None) or "sst2"
    block, axis, control_dim = steering_shape(cfg, model)
    seed = int(getattr(cfg, "seed", 0))
    train, held = steer_examples(kind, data_source, lm_text_style(data_source), control_dim, axis)
    return SteerBatchSource(train, held, tokenizer, block, seed=seed, name=str(kind))


class PlainTextSource(SteerBatchSource):
    """Labelled texts trained as plain language-model text (u = None): an expert's data."""

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        x, y, _ = super().train_batch(step, batch_size, rank, world_size)
        return x, y, None

    def eval_batches(self, split: str, batch_size: int):
        for x, y, _ in super().eval_batches(split, batch_size):
            yield x, y, None


def build_expert_source(cfg, model, tokenizer, data_source) -> PlainTextSource:
    """``steerflow train --task expert``: the SST-2 sentences of label ``cfg.expert_label`` (their
    dev sentences held out), for a DExperts expert (label 1) or anti-expert (label −1). With a
    ``.jsonl`` ``cfg.steer_data``, the texts of that file whose first u entry is the label
    (every 20th held out): an expert of any attribute labelled ±1."""
    block = min(int(cfg.block_size or model.config.block_size), model.config.block_size)
    style = lm_text_style(data_source)
    kind = getattr(cfg, "steer_data", None) or "sst2"
    jsonl = str(kind).endswith((".jsonl", ".json"))
    train, held = (steer_examples(kind, data_source, style, control_dim=None) if jsonl else
                   (sst2_examples(data_source, split, style) for split in ("train", "dev")))
    keep = [[e for e in part if e.u[0] == cfg.expert_label] for part in (train, held)]
    if not keep[0]:
        raise DataError(f"{kind}: no text labelled {cfg.expert_label:+d} for the expert")
    name = Path(kind).stem if jsonl else "sst2"
    return PlainTextSource(*keep, tokenizer, block, seed=cfg.seed,
                           name=f"{name}-{'positive' if cfg.expert_label > 0 else 'negative'}")
