"""Open-ended steering evaluation, the field's protocol (DExperts, Liu et al., ACL 2021).

Neutral prompts × K samples × N new tokens by nucleus sampling under one steering setting; each
continuation (without its prompt) is judged by independent sentiment judges; fluency is the
perplexity of the continuation given its prompt under an unsteered scorer model (u = 0); diversity
is distinct-1/2/3. A *setting* is anything that changes generation — a control value u, an ActAdd
coefficient — so every method goes through the same sampling, judging and scoring code.
"""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, ContextManager, Optional, Sequence

import numpy as np
import torch

from steerflow.errors import InputError


@dataclass(frozen=True)
class SamplingSpec:
    """How continuations are sampled: ``samples`` per prompt, nucleus ``top_p``, ``seed``."""

    samples: int = 4
    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: Optional[float] = 0.9
    top_k: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"samples must be >= 1, got {self.samples}")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top_k must be >= 1, got {self.top_k}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")


@dataclass
class Continuation:
    """One sampled continuation: ``text`` and ``tokens`` exclude the prompt (and any EOS)."""

    prompt_index: int
    sample: int
    prompt: str
    text: str
    tokens: list[int]


def _length_groups(prompt_ids: Sequence[list[int]]) -> dict[int, list[int]]:
    """Prompt indices grouped by token length, so each group decodes as one unpadded batch."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        groups.setdefault(len(ids), []).append(i)
    return dict(sorted(groups.items()))


def _generate_group(model, ids: list[list[int]], u, spec: SamplingSpec, solver, eos,
                    length: int) -> list[list[int]]:
    """New tokens ``(len(ids) · samples, N)`` for prompts that all have ``length`` tokens."""
    idx = torch.tensor(ids).repeat_interleave(spec.samples, dim=0)  # (B, T)
    seq = model.generate(idx, u if model.config.is_hybrid else None, spec.max_new_tokens,
                         temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p,
                         seed=spec.seed * 100_003 + length, solver=solver, eos_id=eos)
    return seq[:, length:].tolist()


def _strip_eos(tokens: list[int], eos_id: Optional[int]) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id is not None and eos_id in tokens else tokens


@torch.inference_mode()
def sample_continuations(model, tokenizer, prompts: Sequence[str], u=None,
                         spec: SamplingSpec = SamplingSpec(),
                         intervention: Optional[ContextManager] = None, solver=None,
                         prompt_ids: Optional[Sequence[list[int]]] = None) -> list[Continuation]:
    """``spec.samples`` continuations of every prompt under control ``u`` (and ``intervention``).

    Prompts of equal token length decode together. Each group's random generator is seeded from
    ``(spec.seed, prompt length)`` only, so every setting sees the same random numbers (common
    random numbers make differences between settings less noisy) and the output is reproducible.
    """
    from steerflow.steer.prompts import encode_prompts

    if prompt_ids is None:
        prompt_ids = encode_prompts(tokenizer, list(prompts),
                                    model.config.block_size - spec.max_new_tokens)
    out: list[Continuation] = []
    eos = getattr(tokenizer, "eos_id", None)
    with intervention if intervention is not None else nullcontext():
        groups = {length: _generate_group(model, [prompt_ids[i] for i in members], u, spec,
                                          solver, eos, length)
                  for length, members in _length_groups(prompt_ids).items()}
    for length, members in _length_groups(prompt_ids).items():
        new = groups[length]  # (len(members) · samples, N)
        for row, (i, k) in enumerate(itertools.product(members, range(spec.samples))):
            tokens = _strip_eos(new[row], eos)
            out.append(Continuation(i, k, prompts[i], tokenizer.decode(tokens), tokens))
    out.sort(key=lambda c: (c.prompt_index, c.sample))
    return out


@torch.inference_mode()
def continuation_nll(model, prompt_ids: Sequence[list[int]], cont_ids: Sequence[list[int]],
                     batch_size: int = 64, pad_id: int = 0) -> tuple[float, int]:
    """Summed ``−log p(continuation | prompt)`` under ``model`` at u = 0, and the token count.

    Sequences are right-padded (a causal model never looks right, so padding changes nothing) and
    cut to the model's context from the left.
    """
    total, count = 0.0, 0
    pairs = [(p, c) for p, c in zip(prompt_ids, cont_ids) if c]
    block = model.config.block_size
    for first in range(0, len(pairs), batch_size):
        chunk = pairs[first: first + batch_size]
        seqs = [(p + c)[-(block + 1):] for p, c in chunk]
        n_cont = [min(len(c), len(s) - 1) for (p, c), s in zip(chunk, seqs)]
        T = max(len(s) for s in seqs) - 1
        x = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
        y = torch.full((len(seqs), T), -1, dtype=torch.long)  # (B, T)
        for row, (s, n) in enumerate(zip(seqs, n_cont)):
            x[row, : len(s) - 1] = torch.tensor(s[:-1])
            y[row, len(s) - 1 - n: len(s) - 1] = torch.tensor(s[-n:])  # continuation targets only
        logits, _ = model(x)  # u = None: zero control, the unsteered model
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y,
                                                ignore_index=-1, reduction="sum")
        total += float(nll)
        count += int((y >= 0).sum())
    return total, count


@dataclass
class Scorer:
    """A fluency scorer: a model (run at u = 0) and its tokenizer."""

    name: str
    model: Any
    tokenizer: Any

    def perplexity(self, continuations: Sequence[Continuation], gen_tokenizer) -> float:
        """``exp(Σ NLL / Σ tokens)`` of the continuations given their prompts, pooled over all."""
        same = (getattr(gen_tokenizer, "content_hash", None) is not None
                and self.tokenizer.content_hash() == gen_tokenizer.content_hash())
        prompts = self.tokenizer.encode_batch([c.prompt for c in continuations])
        conts = ([c.tokens for c in continuations] if same else
                 self.tokenizer.encode_batch([c.text for c in continuations]))
        nll, n = continuation_nll(self.model, prompts, conts, pad_id=self.tokenizer.eos_id)
        return math.exp(nll / n) if n else float("nan")


def judge_summary(texts: Sequence[str], judges: Sequence) -> dict[str, Any]:
    """Positive rate per judge, and the agreement (and Cohen's kappa) of each pair of judges."""
    from steerflow.steer.judges.agreement import cohens_kappa, judge_agreement

    labels = {j.name: np.asarray(j.is_positive(list(texts)), dtype=bool) for j in judges}
    out: dict[str, Any] = {"positive_rate": {name: float(v.mean()) for name, v in labels.items()}}
    pairs = list(itertools.combinations(labels, 2))
    out["agreement"] = {f"{a}|{b}": judge_agreement(labels[a], labels[b]) for a, b in pairs}
    out["kappa"] = {f"{a}|{b}": cohens_kappa(labels[a], labels[b]) for a, b in pairs}
    return out


@dataclass
class SettingResult:
    """Everything measured for one steering setting (``method`` at ``value``)."""

    method: str
    value: float
    n: int
    positive_rate: dict[str, float]
    agreement: dict[str, float]
    kappa: dict[str, float]
    perplexity: dict[str, float]
    distinct: dict[str, float]
    examples: list[dict] = field(default_factory=list)

    @property
    def mean_positive_rate(self) -> float:
        """Positive rate averaged over the judges."""
        return float(np.mean(list(self.positive_rate.values())))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        main = next(iter(self.perplexity.values()), float("nan"))
        out.update(perplexity=main, perplexities=self.perplexity, **self.distinct,
                   mean_positive_rate=self.mean_positive_rate)
        return out


def evaluate_setting(method: str, value: float, continuations: Sequence[Continuation], judges,
                     scorers: Sequence[Scorer], gen_tokenizer, n_examples: int = 3) -> SettingResult:
    """Judge, score and measure the diversity of one setting's continuations.

    ``perplexity`` is keyed by scorer name; the first scorer is the headline one.
    """
    from steerflow.steer.text_metrics import distinct_scores

    if not continuations:
        raise InputError(f"{method}={value}: no continuations to evaluate")
    texts = [c.text for c in continuations]
    summary = judge_summary(texts, judges)
    ppl = {s.name: s.perplexity(continuations, gen_tokenizer) for s in scorers}
    examples = [{"prompt": c.prompt, "text": c.text} for c in continuations[:n_examples]]
    return SettingResult(method, float(value), len(texts), summary["positive_rate"],
                         summary["agreement"], summary["kappa"], ppl, distinct_scores(texts),
                         examples)
