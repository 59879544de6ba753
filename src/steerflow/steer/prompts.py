"""Prompts for open-ended steering: neutral sentence openings from real text, and prompt files.

The field's protocol (DExperts, ACL 2021) steers many neutral prompts, not one. We build them from
the openings of sentences in the WikiText-2 validation and test splits — text the LM never trained
on and, unlike SST-2, not sentiment data — and keep only openings VADER scores as exactly neutral.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from steerflow.errors import DataError, InputError

_SENTENCE_END = re.compile(r"(?<=[.!?]) +")
_WORD = re.compile(r"[A-Za-z]+")


def sentence_openings(text: str, n_words: int = 5, min_sentence_words: int = 8) -> list[str]:
    """The first ``n_words`` words of each sentence of ``text``, in order of appearance, unique.

    Headings (``= Title =``) are skipped. An opening is kept only if its sentence has at least
    ``min_sentence_words`` words, it starts with a capital letter and every word is alphabetic (no
    ``<unk>``, numbers, ``@-@`` markers, quotes or brackets, which would make the prompt odd).
    """
    seen: set[str] = set()
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        for sentence in _SENTENCE_END.split(line):
            words = sentence.split()
            if len(words) < max(n_words, min_sentence_words):
                continue
            head = words[:n_words]
            if not head[0][:1].isupper() or not all(_WORD.fullmatch(w) for w in head):
                continue
            opening = " ".join(head)
            if opening not in seen:
                seen.add(opening)
                out.append(opening)
    return out


def neutral_prompts(source, n: int = 50, n_words: int = 5, seed: int = 0,
                    splits: tuple[str, ...] = ("valid", "test")) -> list[str]:
    """``n`` sentence openings of the WikiText-2 ``splits`` that VADER scores as neutral.

    Neutral means a VADER compound score of exactly 0 (no sentiment-bearing word). The selection is
    a seeded random sample of all candidates, returned in a deterministic order.
    """
    from steerflow.data import load_lm_texts
    from steerflow.steer.judges.pretrained import VaderJudge

    if n < 1:
        raise InputError(f"the number of prompts must be >= 1, got {n}")
    texts = load_lm_texts(source)
    candidates = [p for split in splits for p in sentence_openings(texts[split], n_words)]
    compound = VaderJudge().compound(candidates) if candidates else np.zeros(0)
    neutral = [p for p, c in zip(candidates, compound) if c == 0.0]
    if len(neutral) < n:
        raise DataError(f"only {len(neutral)} neutral sentence openings in WikiText-2 "
                        f"{'/'.join(splits)}; ask for fewer prompts (got {n})")
    pick = np.sort(np.random.default_rng(seed).choice(len(neutral), size=n, replace=False))
    return [neutral[i] for i in pick]


def _prompt_from_record(record, path: Path, lineno: int) -> str:
    """The prompt of one JSON line: its ``"prompt"`` (a string, or RealToxicityPrompts'
    ``{"text": ...}``), else its ``"text"``."""
    if not isinstance(record, dict):
        raise InputError(f"{path}, line {lineno}: expected a JSON object with a \"prompt\" or "
                         f"\"text\" field, got {type(record).__name__}")
    prompt = record.get("prompt", record.get("text"))
    if isinstance(prompt, dict):  # RealToxicityPrompts: {"prompt": {"text": ...}}
        prompt = prompt.get("text")
    if not isinstance(prompt, str):
        raise InputError(f"{path}, line {lineno}: a JSON line needs a string \"prompt\" or "
                         f"\"text\" field")
    return prompt


def read_prompts_file(path: str | os.PathLike) -> list[str]:
    """Prompts from a file: JSON lines with a ``"prompt"`` or ``"text"`` field, or plain text,
    one per line.

    A file whose first non-empty line starts with ``{`` is read as JSON lines (``"prompt"`` may
    also be ``{"text": ...}`` as in RealToxicityPrompts); otherwise every non-empty line is a
    prompt (its trailing newline removed).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"prompts file {path} is not UTF-8 (byte {exc.start})") from None
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise InputError(f"prompts file {path} holds no prompts")
    if not numbered[0][1].lstrip().startswith("{"):
        return [line for _, line in numbered]
    prompts = []
    for lineno, line in numbered:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
        prompts.append(_prompt_from_record(record, path, lineno))
    return prompts


def encode_prompts(tokenizer, prompts: list[str], max_tokens: Optional[int] = None) -> list[list[int]]:
    """Token ids of each prompt; an empty prompt or one of more than ``max_tokens`` is an error."""
    out = []
    for prompt, ids in zip(prompts, tokenizer.encode_batch(prompts)):
        if not ids:
            raise InputError(f"prompt {prompt!r} is empty; give at least one token")
        if max_tokens is not None and len(ids) > max_tokens:
            raise InputError(f"prompt {prompt[:40]!r} has {len(ids)} tokens; at most {max_tokens} "
                             f"fit before the new tokens in the model's context")
        out.append(ids)
    return out
