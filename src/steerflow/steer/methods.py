"""The decoding methods ``steerflow eval steering`` compares, run on the same prompts, the same
random numbers, the same judges and the same fluency scorers.

* **ode** — the steered model at control u = v·e_axis, one forward pass per token;
* **no_control** — the base model at u = 0;
* **guidance** — classifier-free guidance over u inside the steered model: samples
  ``z(0) + γ · (z(u) − z(−u))`` on the nucleus of ``z(0)`` at u = ±1 (Ho & Salimans 2022; the
  contrast rule of DExperts, Eq. 1), setting value ±γ;
* **dexperts** — DExperts over the base model (Liu et al., ACL 2021, Eq. 1:
  ``z_base + α · (z_expert − z_anti-expert)``), the positive direction with (POS, NEG) and the
  negative one swapped, setting value ±α;
* **actadd** — activation addition on the base model, coefficient swept; its direction is the
  CAA class-mean difference over SST-2 sentences (Rimsky et al. 2024, Eq. 1) or six word pairs;
* **additive** — the additive-injection ablation, steered by u like the ODE model.

Each setting records its generation speed: token positions decoded ÷ wall time of the sampling
calls alone, measured one setting after another in this process after an untimed warm-up per
method (:func:`speed_summary` pools them per method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from steerflow.errors import InputError
from steerflow.steer.comparison import u_key
from steerflow.steer.open_ended import Decode, SamplingSpec, model_decode
from steerflow.steer.settings import signed_values

#: guidance and DExperts steer at u = ±1 (the direction of the setting's sign)
GUIDANCE_U = 1.0


@dataclass
class OpenEndedRun:
    """What every setting shares: prompts, their ids, sampling, judges and fluency scorers."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    tokenizer: Any
    spec: SamplingSpec
    judges: list
    scorers: list
    progress: Optional[Callable[[str], None]] = None
    show: bool = True

    def setting(self, method: str, value: float, decode: Decode, intervention=None) -> dict:
        """Sample (timed), judge and score one setting; returns its JSON-ready dict."""
        from steerflow.steer.open_ended import evaluate_setting, sample_timed

        conts, timing = sample_timed(decode, self.tokenizer, self.prompts, self.prompt_ids,
                                     self.spec, intervention)
        result = evaluate_setting(method, value, conts, self.judges, self.scorers, self.tokenizer,
                                  timing=timing, seed=self.spec.seed)
        if self.progress is not None:
            self.progress(f"{method} {value:+g}: positive {result.positive_rate}, "
                          f"{result.tokens_per_s:.4g} tokens/s")
        return result.as_dict()

    @torch.inference_mode()
    def warm_up(self, decode: Decode, intervention=None) -> None:
        """One untimed decode of the first prompt, so no setting pays first-call costs."""
        from contextlib import nullcontext

        with intervention if intervention is not None else nullcontext():
            decode(torch.tensor([self.prompt_ids[0]]), self.spec.seed, None)

    def sweep(self, method: str, values: Sequence[float], decode_for: Callable[[float], Decode],
              intervention_for: Optional[Callable] = None) -> dict[str, dict]:
        """One setting per value: decoding ``decode_for(v)`` inside ``intervention_for(v)``."""
        from tqdm.auto import tqdm

        def context(v):
            return intervention_for(v) if intervention_for is not None else None

        self.warm_up(decode_for(values[-1]), context(values[-1]))
        return {u_key(v): self.setting(method, v, decode_for(v), context(v))
                for v in tqdm(values, desc=f"open-ended {method}", disable=not self.show)}


# ----------------------------------------------------------------------------- decoders
def axis_vector(model, axis: int) -> torch.Tensor:
    """The unit control ``e_axis`` ``(c,)`` of ``model``."""
    c = model.config.control_dim
    if axis >= c:
        raise InputError(f"--axis {axis} is outside the model's control_dim={c}")
    e = torch.zeros(c)
    e[axis] = 1.0
    return e


def control_decoder(model, spec: SamplingSpec, axis: int) -> Callable[[float], Decode]:
    """``v ↦`` sampling from ``model`` at u = v·e_axis (the ODE and the additive ablation)."""
    e = axis_vector(model, axis)
    return lambda v: model_decode(model, spec, v * e)


def guidance_decoder(model, spec: SamplingSpec, axis: int,
                     u: float = GUIDANCE_U) -> Callable[[float], Decode]:
    """``v ↦`` guidance with γ = |v| at u = sign(v)·u·e_axis; v = 0 is plain sampling at u = 0."""
    e = axis_vector(model, axis)
    return lambda v: model_decode(model, spec, math.copysign(u, v) * e, guidance=abs(v))


def dexperts_decoder(dexperts, spec: SamplingSpec) -> Callable[[float], Decode]:
    """``v ↦`` DExperts with α = |v| in direction sign(v); v = 0 samples the base, draw for draw."""
    def decoder(v: float) -> Decode:
        def decode(idx: torch.Tensor, seed: int, eos_id: Optional[int]) -> torch.Tensor:
            return dexperts.generate(idx, int(np.sign(v)), spec.max_new_tokens, alpha=abs(v),
                                     temperature=spec.temperature, top_k=spec.top_k,
                                     top_p=spec.top_p, seed=seed, eos_id=eos_id)
        return decode
    return decoder


# ----------------------------------------------------------------------------- ActAdd direction
def caa_texts(pairs: Sequence[tuple[str, int]], tokenizer, n: int, seed: int,
              max_tokens: int) -> tuple[list[str], list[str]]:
    """A seeded sample of at most ``n`` sentences per class (positive, negative) from labelled
    ``pairs``, among those of 1 to ``max_tokens`` tokens (the model reads each in one window)."""
    texts = [t for t, _ in pairs]
    lengths = [len(ids) for ids in tokenizer.encode_batch(texts)]
    rng = np.random.default_rng(seed)
    out = []
    for label in (1, 0):
        pool = [t for (t, y), k in zip(pairs, lengths) if y == label and 0 < k <= max_tokens]
        if not pool:
            raise InputError(f"no SST-2 train sentence of label {label} fits in {max_tokens} "
                             f"tokens; the CAA direction needs both classes")
        pick = np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
        out.append([pool[i] for i in pick])
    return out[0], out[1]


def actadd_direction(base, source, kind: str = "caa", sentences: int = 500,
                     seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """ActAdd's steering vector on ``base`` and how it was made: ``caa`` — class means over
    ``sentences`` SST-2 train sentences per class (:func:`~steerflow.steer.actadd.contrastive_vector`),
    ``pairs`` — the six word pairs (:func:`~steerflow.steer.actadd.steering_vector`)."""
    from steerflow.steer.actadd import DEFAULT_CONTRAST, contrastive_vector, steering_vector

    if kind == "pairs":
        return steering_vector(base, base.tokenizer), {"vector": "pairs",
                                                      "pairs": len(DEFAULT_CONTRAST)}
    from steerflow.data import load_sst2

    pos, neg = caa_texts(load_sst2(source, "train"), base.tokenizer, sentences, seed,
                         base.config.block_size)
    vector = contrastive_vector(base, base.tokenizer, pos, neg)
    return vector, {"vector": "caa", "sentences": {"positive": len(pos), "negative": len(neg)},
                    "seed": seed}


# ----------------------------------------------------------------------------- the sweeps
def run_methods(run: OpenEndedRun, models, cfg, vector: torch.Tensor) -> dict[str, dict]:
    """Every method's open-ended settings, ``{method: {value key: setting}}`` (module docstring):
    ``ode`` over ``cfg.open_us``, ``no_control`` at 0, ``guidance`` over ±``cfg.guidance_gammas``,
    ``dexperts`` over ±``cfg.dexperts_alphas`` when ``models.dexperts`` is set, ``actadd`` over
    ``cfg.actadd_coefs`` with ``vector``, ``additive`` when ``models.ablation`` is set."""
    from steerflow.steer.actadd import actadd

    steered, base, spec = models.steered, models.base, run.spec
    out = {"ode": run.sweep("ode", cfg.open_us, control_decoder(steered, spec, cfg.axis))}
    out["no_control"] = run.sweep("no_control", (0.0,), lambda v: model_decode(base, spec))
    out["guidance"] = run.sweep("guidance", signed_values(cfg.guidance_gammas),
                                guidance_decoder(steered, spec, cfg.axis))
    if models.dexperts is not None:
        out["dexperts"] = run.sweep("dexperts", signed_values(cfg.dexperts_alphas),
                                    dexperts_decoder(models.dexperts, spec))
    out["actadd"] = run.sweep("actadd", cfg.actadd_coefs, lambda v: model_decode(base, spec),
                              intervention_for=lambda c: actadd(base, vector, c))
    if models.ablation is not None:
        out["additive"] = run.sweep("additive", cfg.open_us,
                                    control_decoder(models.ablation, spec, cfg.axis))
    return out


def speed_summary(methods: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Generation speed per method, pooled over its steering settings (value ≠ 0; ``no_control``
    has only its u = 0 one): ``Σ tokens / Σ sampling seconds``; and ``ode_over_<method>``, the
    ODE's speed over each other method's (above 1: the single ODE pass is faster)."""
    out: dict[str, Any] = {"unit": "generated tokens per second of sampling wall time",
                           "threads": torch.get_num_threads(), "methods": {}}
    for name, settings in methods.items():
        chosen = [s for s in settings.values() if s["value"] != 0] or list(settings.values())
        tokens = sum(s["generated_tokens"] for s in chosen)
        seconds = sum(s["sampling_s"] for s in chosen)
        out["methods"][name] = {"tokens_per_s": tokens / seconds if seconds > 0 else math.nan,
                                "tokens": tokens, "seconds": seconds, "settings": len(chosen)}
    if "ode" in out["methods"]:
        ode = out["methods"]["ode"]["tokens_per_s"]
        for name, speed in out["methods"].items():
            if name != "ode":
                out[f"ode_over_{name}"] = ode / speed["tokens_per_s"]
    return out
