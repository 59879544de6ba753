"""Open-ended steering evaluation, the field's protocol (DExperts, Liu et al., ACL 2021).

Neutral prompts × K samples × N new tokens by nucleus sampling under one steering setting; each
continuation (without its prompt) is judged by independent sentiment judges; fluency is the
perplexity of the continuation given its prompt under an unsteered scorer model (u = 0); diversity
is distinct-1/2/3. A *setting* is anything that changes generation — a control value u, an ActAdd
coefficient, a guidance or DExperts weight — so every method goes through the same sampling,
judging and scoring code: a method is a *decode* function ``decode(idx, seed, eos_id) -> ids``
(:func:`model_decode` for a model's own ``generate``). Every positive rate carries a 95 %
cluster-bootstrap interval over prompts (:mod:`steerflow.steer.intervals`), and every setting the
generation speed of its sampling alone (tokens decoded ÷ wall time).
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager, Optional, Sequence

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


#: a decoding method: ``decode(idx (B, T), seed, eos_id) -> (B, T + new)`` token ids
Decode = Callable[[torch.Tensor, int, Optional[int]], torch.Tensor]


def model_decode(model, spec: SamplingSpec, u=None, solver=None,
                 guidance: Optional[float] = None) -> Decode:
    """``model.generate`` under control ``u`` (ignored by a discrete model) with ``spec``'s
    sampling; ``guidance`` = γ contrasts the model at ``u`` and ``−u`` (:meth:`SteerFlowGPT.generate`)."""
    def decode(idx: torch.Tensor, seed: int, eos_id: Optional[int]) -> torch.Tensor:
        return model.generate(idx, u if model.config.is_hybrid else None, spec.max_new_tokens,
                              temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p,
                              seed=seed, solver=solver, eos_id=eos_id, guidance=guidance)
    return decode


@dataclass
class Timing:
    """Generation speed of one setting: token positions decoded and the wall time of sampling."""

    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def _length_groups(prompt_ids: Sequence[list[int]]) -> dict[int, list[int]]:
    """Prompt indices grouped by token length, so each group decodes as one unpadded batch."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        groups.setdefault(len(ids), []).append(i)
    return dict(sorted(groups.items()))


def group_seed(spec: SamplingSpec, length: int) -> int:
    """The seed of the prompts with ``length`` tokens: a function of (seed, length) only, so every
    method and setting draws the same random numbers (common random numbers)."""
    return spec.seed * 100_003 + length


def _strip_eos(tokens: list[int], eos_id: Optional[int]) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id is not None and eos_id in tokens else tokens


@torch.inference_mode()
def sample_timed(decode: Decode, tokenizer, prompts: Sequence[str],
                 prompt_ids: Sequence[list[int]], spec: SamplingSpec,
                 intervention: Optional[ContextManager] = None
                 ) -> tuple[list[Continuation], Timing]:
    """``spec.samples`` continuations of every prompt by ``decode`` (inside ``intervention``),
    and the :class:`Timing` of the decoding calls alone (not encoding, decoding to text or
    judging). Prompts of equal token length decode together as one unpadded batch."""
    eos = getattr(tokenizer, "eos_id", None)
    groups, tokens, seconds = {}, 0, 0.0
    with intervention if intervention is not None else nullcontext():
        for length, members in _length_groups(prompt_ids).items():
            idx = torch.tensor([prompt_ids[i] for i in members]).repeat_interleave(
                spec.samples, dim=0)  # (B, T)
            start = time.perf_counter()
            seq = decode(idx, group_seed(spec, length), eos)  # (B, T + new)
            seconds += time.perf_counter() - start
            tokens += seq.shape[0] * (seq.shape[1] - length)
            groups[length] = seq[:, length:].tolist()
    out: list[Continuation] = []
    for length, members in _length_groups(prompt_ids).items():
        new = groups[length]  # (len(members) · samples, N)
        for row, (i, k) in enumerate(itertools.product(members, range(spec.samples))):
            cont = _strip_eos(new[row], eos)
            out.append(Continuation(i, k, prompts[i], tokenizer.decode(cont), cont))
    out.sort(key=lambda c: (c.prompt_index, c.sample))
    return out, Timing(tokens, seconds)


def sample_continuations(model, tokenizer, prompts: Sequence[str], u=None,
                         spec: SamplingSpec = SamplingSpec(),
                         intervention: Optional[ContextManager] = None, solver=None,
                         prompt_ids: Optional[Sequence[list[int]]] = None,
                         decode: Optional[Decode] = None) -> list[Continuation]:
    """``spec.samples`` continuations of every prompt under control ``u`` (and ``intervention``),
    or by ``decode`` when given (then ``model`` only bounds the prompt length).

    Each group of prompts of one token length is seeded from ``(spec.seed, prompt length)`` only
    (:func:`group_seed`), so every setting sees the same random numbers (common random numbers
    make differences between settings less noisy) and the output is reproducible.
    """
    from steerflow.steer.prompts import encode_prompts

    if prompt_ids is None:
        prompt_ids = encode_prompts(tokenizer, list(prompts),
                                    model.config.block_size - spec.max_new_tokens)
    decode = decode or model_decode(model, spec, u, solver)
    return sample_timed(decode, tokenizer, prompts, prompt_ids, spec, intervention)[0]


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


def judge_labels(texts: Sequence[str], judges: Sequence) -> dict[str, np.ndarray]:
    """Each judge's positive / negative verdict on every text, keyed by judge name."""
    return {j.name: np.asarray(j.is_positive(list(texts)), dtype=bool) for j in judges}


def summarise_labels(labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Positive rate per judge, and the agreement (and Cohen's kappa) of each pair of judges."""
    from steerflow.steer.judges.agreement import cohens_kappa, judge_agreement

    out: dict[str, Any] = {"positive_rate": {name: float(v.mean()) for name, v in labels.items()}}
    pairs = list(itertools.combinations(labels, 2))
    out["agreement"] = {f"{a}|{b}": judge_agreement(labels[a], labels[b]) for a, b in pairs}
    out["kappa"] = {f"{a}|{b}": cohens_kappa(labels[a], labels[b]) for a, b in pairs}
    return out


def judge_summary(texts: Sequence[str], judges: Sequence) -> dict[str, Any]:
    """Positive rate per judge, and the agreement (and Cohen's kappa) of each pair of judges."""
    return summarise_labels(judge_labels(texts, judges))


def prompt_intervals(scores: np.ndarray, prompt_index: Sequence[int],
                     seed: int = 0) -> tuple[float, float]:
    """95 % cluster-bootstrap interval of the mean of per-sample ``scores`` (0/1 verdicts or
    scores in [0, 1]), resampling prompts (:func:`steerflow.steer.intervals.rate_interval`)."""
    from steerflow.steer.intervals import rate_interval

    per_prompt: dict[int, list[float]] = {}
    for i, score in zip(prompt_index, scores):
        per_prompt.setdefault(int(i), []).append(float(score))
    return rate_interval(list(per_prompt.values()), seed=seed)


@dataclass
class SettingResult:
    """Everything measured for one steering setting (``method`` at ``value``).

    ``positive_rate_ci`` holds each judge's 95 % interval; ``classifier_positive_rate`` is the
    positive rate averaged over the classifier judges (VADER excluded), the rate the method
    comparison and the targets use, with its interval. ``tokens_per_s`` is the generation speed
    of the sampling alone.
    """

    method: str
    value: float
    n: int
    positive_rate: dict[str, float]
    agreement: dict[str, float]
    kappa: dict[str, float]
    perplexity: dict[str, float]
    distinct: dict[str, float]
    examples: list[dict] = field(default_factory=list)
    positive_rate_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    classifier_judges: list[str] = field(default_factory=list)
    classifier_positive_rate: float = float("nan")
    classifier_positive_rate_ci: Optional[tuple[float, float]] = None
    generated_tokens: Optional[int] = None
    sampling_s: Optional[float] = None
    tokens_per_s: Optional[float] = None

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
                     scorers: Sequence[Scorer], gen_tokenizer, n_examples: int = 3,
                     timing: Optional[Timing] = None, seed: int = 0) -> SettingResult:
    """Judge, score and measure the diversity of one setting's continuations.

    ``perplexity`` is keyed by scorer name; the first scorer is the headline one. Intervals
    resample prompts with bootstrap ``seed``; ``timing`` (from :func:`sample_timed`) gives the
    setting's generation speed.
    """
    from steerflow.steer.text_metrics import distinct_scores

    if not continuations:
        raise InputError(f"{method}={value}: no continuations to evaluate")
    texts = [c.text for c in continuations]
    prompt_index = [c.prompt_index for c in continuations]
    labels = judge_labels(texts, judges)
    summary = summarise_labels(labels)
    gates = [j.name for j in judges if getattr(j, "classifier", True)]
    gate_scores = (np.mean([labels[g] for g in gates], axis=0) if gates
                   else np.full(len(texts), np.nan))
    ppl = {s.name: s.perplexity(continuations, gen_tokenizer) for s in scorers}
    examples = [{"prompt": c.prompt, "text": c.text} for c in continuations[:n_examples]]
    result = SettingResult(method, float(value), len(texts), summary["positive_rate"],
                           summary["agreement"], summary["kappa"], ppl, distinct_scores(texts),
                           examples)
    result.positive_rate_ci = {name: prompt_intervals(v, prompt_index, seed)
                               for name, v in labels.items()}
    result.classifier_judges = gates
    if gates:
        result.classifier_positive_rate = float(gate_scores.mean())
        result.classifier_positive_rate_ci = prompt_intervals(gate_scores, prompt_index, seed)
    if timing is not None:
        result.generated_tokens, result.sampling_s = timing.tokens, timing.seconds
        result.tokens_per_s = timing.tokens_per_s
    return result
