"""``steerflow eval steering``: the paper's probe and sweep, open-ended steering, and baselines.

:func:`evaluate_steering` measures a steered checkpoint and the methods it is compared with on the
same prompts and the same random numbers:

* **ode** — the steered model along u (the method under test);
* **no_control** — the base model the steering started from, at u = 0;
* **actadd** — activation addition on that base model, coefficient swept;
* **additive** — the additive-injection ablation (``injection="add"``), trained like the ODE model.

The result is one JSON-ready dict; :mod:`steerflow.steer.report` renders it as Markdown and PNG.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from steerflow.errors import ConfigError, InputError
from steerflow.experiments.paper import PPL_BUDGET, STEERING_TARGETS
from steerflow.steer.settings import SteeringEvalConfig, TABLE_US

logger = logging.getLogger(__name__)

#: one-sided 95 % normal quantile: "beats" needs a rate difference this many standard errors wide
BEATS_Z = 1.645


def u_key(u: float) -> str:
    """The results.json key of a control value: ``+1``, ``0``, ``-0.5``."""
    return "0" if u == 0 else f"{u:+g}"


@dataclass
class Models:
    """The checkpoints one evaluation compares (None where not given).

    ``steer_data`` is what the steered model was trained on (``cloze``, ``sst2``, a file; from its
    ``train_config.json``): it picks which of the issue's probe targets apply to it.
    """

    steered: Any
    base: Any
    ablation: Any = None
    baseline: Any = None
    names: dict[str, str] = field(default_factory=dict)
    steer_data: Optional[str] = None


def steer_run_info(checkpoint: str | Path) -> dict[str, Any]:
    """``train_config.json`` of a ``steerflow train --task steer`` run folder, or ``{}``."""
    path = Path(checkpoint) / "train_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("task") == "steer" else {}


def load_models(checkpoint: str | Path, base: Optional[str | Path] = None,
                ablation: Optional[str | Path] = None,
                baseline: Optional[str | Path] = None) -> Models:
    """The checkpoints of one evaluation, for evaluation on the CPU. ``base`` defaults to the
    model the steering run started from (its ``train_config.json``); with none known, the steered
    model at u = 0 stands in for it."""
    from steerflow.model.hub import load_model

    steered = load_model(checkpoint)
    names = {"steered": str(checkpoint)}
    run_info = steer_run_info(checkpoint)
    base_path = base or run_info.get("init_from")
    if base_path and Path(base_path).resolve() != Path(checkpoint).resolve():
        base_model = load_model(base_path)
        names["base"] = str(base_path)
    else:
        base_model = steered
        names["base"] = f"{checkpoint} at u=0 (no --base)"
    models = Models(steered, base_model, names=names, steer_data=run_info.get("steer_data"))
    for role, path in (("ablation", ablation), ("baseline", baseline)):
        if path:
            setattr(models, role, load_model(path))
            names[role] = str(path)
    return models


# ----------------------------------------------------------------------------- probe
def probe_section(model, tokenizer, cfg: SteeringEvalConfig, intervention_for=None,
                  values: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """Table (u ∈ {+1, 0, −1}) and sweep of the probe; ``intervention_for(v)`` for ActAdd."""
    from steerflow.steer.sentiment_probe import probe, probe_sweep, sweep_values

    kw = dict(prompt=cfg.probe_prompt, words=cfg.probe_words, axis=cfg.axis)
    if intervention_for is None:
        table = probe(model, tokenizer, TABLE_US, **kw)
        sweep = probe_sweep(model, tokenizer, sweep_values(*cfg.sweep_range, cfg.sweep_points), **kw)
    else:  # ActAdd: u stays 0, the coefficient moves
        from steerflow.steer.sentiment_probe import ProbeSweep

        points = [probe(model, tokenizer, (0.0,), intervention=intervention_for(v), **kw)[0]
                  for v in values]
        for p, v in zip(points, values):
            p.u = float(v)
        sweep = ProbeSweep(points)
        table = [p for p in points if p.u in (max(values), 0.0, min(values))]
    return {"table": {u_key(p.u): p.as_dict() for p in table}, "sweep": sweep.as_dict(),
            "_sweep": sweep}


# ----------------------------------------------------------------------------- judges
def build_judges(source, cfg: SteeringEvalConfig) -> tuple[list, dict[str, float]]:
    """VADER, the SST-2 classifier (trained here, or reused from ``judge_cache``) and extras."""
    from steerflow.data import load_sst2
    from steerflow.steer.judges.factory import make_judge

    train, dev = load_sst2(source, "train"), load_sst2(source, "dev")
    kw: dict[str, Any] = {"train_pairs": train, "dev_pairs": dev, "seed": cfg.seed}
    if cfg.judge_cache:
        kw["cache_dir"] = cfg.judge_cache
    sst2 = make_judge("sst2-tfidf", **kw)
    judges = [make_judge("vader"), sst2]
    accuracy = {sst2.name: float(sst2.dev_accuracy)}
    for spec in cfg.extra_judges:
        judge = make_judge(spec)
        judges.append(judge)
        if hasattr(judge, "dev_accuracy"):
            accuracy[judge.name] = float(judge.dev_accuracy)
    return judges, accuracy


# ----------------------------------------------------------------------------- open-ended
@dataclass
class OpenEndedRun:
    """What every setting shares: prompts, their ids, sampling, judges and fluency scorers."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    tokenizer: Any
    spec: Any
    judges: list
    scorers: list
    progress: Optional[Callable[[str], None]] = None

    def setting(self, method: str, value: float, model, u=None, intervention=None) -> dict:
        """Sample, judge and score one setting; returns its JSON-ready dict."""
        from steerflow.steer.open_ended import evaluate_setting, sample_continuations

        conts = sample_continuations(model, self.tokenizer, self.prompts, u, self.spec,
                                     intervention=intervention, prompt_ids=self.prompt_ids)
        result = evaluate_setting(method, value, conts, self.judges, self.scorers, self.tokenizer)
        if self.progress is not None:
            self.progress(f"{method} {value:+g}: positive {result.positive_rate}")
        return result.as_dict()


def _make_run(models: Models, source, cfg: SteeringEvalConfig, judges) -> OpenEndedRun:
    from steerflow.steer.open_ended import SamplingSpec, Scorer
    from steerflow.steer.prompts import encode_prompts, neutral_prompts

    tok = models.steered.tokenizer
    block = models.steered.config.block_size
    if cfg.max_new_tokens >= block:
        raise InputError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for a prompt in "
                         f"the model's context of {block} tokens; use at most {block - 1}")
    prompts = neutral_prompts(source, cfg.prompts, cfg.prompt_words, cfg.seed)
    spec = SamplingSpec(cfg.samples, cfg.max_new_tokens, cfg.temperature, cfg.top_p, None, cfg.seed)
    ids = encode_prompts(tok, prompts, models.steered.config.block_size - cfg.max_new_tokens)
    scorers = [Scorer("unsteered", models.base, models.base.tokenizer)]
    if models.baseline is not None:
        scorers.append(Scorer("baseline", models.baseline, models.baseline.tokenizer))
    return OpenEndedRun(prompts, ids, tok, spec, judges, scorers)


def _sweep_settings(run: OpenEndedRun, method: str, values: Sequence[float], model,
                    progress: bool = True, u_for: Optional[Callable] = None,
                    intervention_for: Optional[Callable] = None) -> dict[str, dict]:
    """One open-ended setting per value: control ``u_for(v)`` and/or ``intervention_for(v)``."""
    from tqdm.auto import tqdm

    out = {}
    for v in tqdm(values, desc=f"open-ended {method}", disable=not progress):
        out[u_key(v)] = run.setting(method, v, model, u=u_for(v) if u_for else None,
                                    intervention=intervention_for(v) if intervention_for else None)
    return out


# ----------------------------------------------------------------------------- comparison
def tradeoff(methods: dict[str, dict[str, dict]], reference_ppl: float,
             budget: float = PPL_BUDGET) -> dict[str, Any]:
    """Best target-sentiment rate of each method within a perplexity budget, per direction.

    The target rate of a setting is its judge-averaged positive rate for the positive direction
    (settings with value ≥ 0) and one minus it for the negative direction (value ≤ 0). The budget
    is ``budget × reference_ppl`` (the unsteered model's u = 0 continuations), i.e. "at matched
    perplexity": each method may use any of its settings that stay that fluent.
    """
    limit = budget * reference_ppl
    out: dict[str, Any] = {"reference_perplexity": reference_ppl, "budget": budget,
                           "perplexity_limit": limit, "best": {}}
    for name, settings in methods.items():
        best = {}
        for direction, sign in (("positive", 1), ("negative", -1)):
            ok = [s for s in settings.values()
                  if sign * s["value"] >= 0 and s["perplexity"] <= limit]
            rates = [s["mean_positive_rate"] if sign > 0 else 1 - s["mean_positive_rate"]
                     for s in ok]
            i = int(np.argmax(rates)) if rates else -1
            best[direction] = ({"rate": rates[i], "value": ok[i]["value"],
                                "perplexity": ok[i]["perplexity"], "n": ok[i].get("n")}
                               if rates else None)
        out["best"][name] = best
    return out


def rate_difference_z(mine: dict, theirs: dict) -> float:
    """z-score of ``mine["rate"] − theirs["rate"]`` for two independent samples of sizes ``n``.

    The binomial standard error ``sqrt(p(1 − p)/n)`` of each rate; for a rate averaged over judges
    that label the same samples it is an upper bound, so the z-score is conservative. Without
    ``n`` (older results) the difference counts as exact.
    """
    diff = mine["rate"] - theirs["rate"]
    var = (sum(r["rate"] * (1 - r["rate"]) / r["n"] for r in (mine, theirs))
           if mine.get("n") and theirs.get("n") else 0.0)
    if var > 0:
        return diff / math.sqrt(var)
    return math.copysign(math.inf, diff) if diff else 0.0  # no sampling error known: exact


def ode_beats(trade: dict[str, Any], other: str, z: float = BEATS_Z) -> Optional[bool]:
    """Whether the ODE's best rate within the budget beats ``other``'s in both directions.

    Beating means a difference wider than ``z`` standard errors (default: one-sided 95 %); a
    direction where ``other`` has no setting within the budget is won by having one.
    """
    best = trade["best"]
    if "ode" not in best or other not in best:
        return None
    for direction in ("positive", "negative"):
        mine, theirs = best["ode"][direction], best[other][direction]
        if mine is None:
            return False
        if theirs is not None and rate_difference_z(mine, theirs) <= z:
            return False
    return True


def target_checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it is met.

    The probe targets are per steering data: raw P(good) / P(bad) for a model trained on
    ``cloze`` (the paper's Table 2 replication), the restricted share for one trained on ``sst2``;
    both when ``results["steer_data"]`` is anything else or unknown.
    """
    table = results["probe"]
    plus, minus = table["+1"], table["-1"]
    data = results.get("steer_data")
    checks: dict[str, Any] = {}
    t = STEERING_TARGETS
    if data != "sst2":
        checks["cloze_p_good_at_+1>=0.98"] = {"value": plus["p_good"],
                                              "met": plus["p_good"] >= t["cloze_p_good_at_+1"]}
        checks["cloze_p_bad_at_-1>=0.95"] = {"value": minus["p_bad"],
                                             "met": minus["p_bad"] >= t["cloze_p_bad_at_-1"]}
    if data != "cloze":
        checks["sst2_share_at_+1>=0.95"] = {"value": plus["share"],
                                            "met": plus["share"] >= t["sst2_share_at_+1"]}
        checks["sst2_share_at_-1<=0.05"] = {"value": minus["share"],
                                            "met": minus["share"] <= t["sst2_share_at_-1"]}
    checks["sweep_monotone"] = {"value": results["sweep"]["max_violation"]["share"],
                                "met": results["sweep"]["monotone"]}
    oe = results.get("open_ended", {})
    if {"+1", "-1", "0"} <= set(oe):
        pos, neg, ref = oe["+1"], oe["-1"], oe["0"]
        checks["open_ended_positive_at_+1>=0.90_all_judges"] = {
            "value": pos["positive_rate"],
            "met": min(pos["positive_rate"].values()) >= t["open_ended_positive_at_+1"]}
        checks["open_ended_positive_at_-1<=0.10_all_judges"] = {
            "value": neg["positive_rate"],
            "met": max(neg["positive_rate"].values()) <= t["open_ended_positive_at_-1"]}
        ratio = max(pos["perplexity"], neg["perplexity"]) / ref["perplexity"]
        checks["perplexity_at_+-1<=1.25x_u0"] = {"value": ratio, "met": ratio <= PPL_BUDGET}
    if "tradeoff" in results:
        beats = ode_beats(results["tradeoff"], "actadd")
        if beats is not None:
            best = results["tradeoff"]["best"]
            rates = {m: {d: (b[d]["rate"] if b[d] else None) for d in ("positive", "negative")}
                     for m, b in best.items() if m in ("ode", "actadd")}
            rates["z"] = {d: rate_difference_z(best["ode"][d], best["actadd"][d])
                          for d in ("positive", "negative")
                          if best["ode"][d] is not None and best["actadd"][d] is not None}
            checks["ode_beats_actadd_at_matched_perplexity"] = {"value": rates, "met": beats}
    return checks


# ----------------------------------------------------------------------------- main entry
def evaluate_steering(models: Models, source, cfg: SteeringEvalConfig,
                      log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Probe, sweep, open-ended evaluation and baselines; a JSON-ready dict (``results.json``).

    Private ``_sweep`` entries (ProbeSweep objects for plotting) are removed by
    :func:`steerflow.steer.report.to_json`.
    """
    from steerflow.steer.actadd import actadd, injection_layer, mean_residual_norm, steering_vector

    steered, base = models.steered, models.base
    tok = steered.tokenizer
    if tok is None:
        raise ConfigError("the checkpoint has no tokenizer (tokenizer.json); steerflow's "
                          "trainer saves one with the model")
    if not steered.config.is_hybrid:
        raise ConfigError("eval steering needs a hybrid (ODE) checkpoint; this one is discrete")
    _check_tokenizers(models)
    say = log or (lambda msg: None)
    results: dict[str, Any] = {"checkpoints": dict(models.names), "steer_data": models.steer_data,
                               "settings": _settings(cfg)}

    # the judges first: a bad SST-2 file or judge spec fails before minutes of probing
    say("training the SST-2 judge")
    source_judges, accuracy = build_judges(source, cfg)
    results["judge_dev_accuracy"] = accuracy[next(iter(accuracy))]
    results["judges"] = {"names": [j.name for j in source_judges], "dev_accuracy": accuracy}

    say("probe and sweep")
    section = probe_section(steered, tok, cfg)
    results["probe"], results["sweep"] = section["table"], section["sweep"]
    results["probe_ceiling"] = _ceiling(steered, cfg)
    results["_sweeps"] = {"ode": section["_sweep"]}

    vector = steering_vector(base, base.tokenizer)
    layer = injection_layer(base)
    act = probe_section(base, base.tokenizer, cfg, lambda c: actadd(base, vector, c), cfg.actadd_coefs)
    baselines: dict[str, Any] = {
        "no_control": {"probe": _probe_at_zero(base, cfg)},
        "actadd": {"layer": layer, "vector_norm": float(vector.norm()), "probe": act["table"],
                   "sweep": act["sweep"]},
    }
    results["_sweeps"]["actadd (coef)"] = act["_sweep"]
    if models.ablation is not None:
        abl = probe_section(models.ablation, models.ablation.tokenizer, cfg)
        baselines["additive"] = {"probe": abl["table"], "sweep": abl["sweep"]}
        results["_sweeps"]["additive"] = abl["_sweep"]

    run = _make_run(models, source, cfg, source_judges)
    results["prompts"] = run.prompts
    import torch

    baselines["actadd"]["residual_norm"] = mean_residual_norm(
        base, [torch.tensor([ids]) for ids in run.prompt_ids])
    show = cfg.progress
    results["open_ended"] = _sweep_settings(run, "ode", cfg.open_us, steered, show,
                                            u_for=lambda v: v * _axis_vector(steered, cfg.axis))
    baselines["no_control"]["open_ended"] = {"0": run.setting("no_control", 0.0, base)}
    baselines["actadd"]["open_ended"] = _sweep_settings(
        run, "actadd", cfg.actadd_coefs, base, show,
        intervention_for=lambda c: actadd(base, vector, c))
    if models.ablation is not None:
        baselines["additive"]["open_ended"] = _sweep_settings(
            run, "additive", cfg.open_us, models.ablation, show,
            u_for=lambda v: v * _axis_vector(models.ablation, cfg.axis))
    results["baselines"] = baselines

    methods = {"ode": results["open_ended"], "actadd": baselines["actadd"]["open_ended"]}
    if models.ablation is not None:
        methods["additive"] = baselines["additive"]["open_ended"]
    reference = baselines["no_control"]["open_ended"]["0"]["perplexity"]
    results["tradeoff"] = tradeoff(methods, reference)
    results["targets"] = target_checks(results)
    return results


def _check_tokenizers(models: Models) -> None:
    """The generating models must share one tokenizer: they decode the same prompt ids."""
    ref = models.steered.tokenizer.content_hash()
    for role in ("base", "ablation"):
        model = getattr(models, role)
        if model is not None and (model.tokenizer is None or model.tokenizer.content_hash() != ref):
            raise ConfigError(f"the {role} checkpoint {models.names.get(role, '')} has another "
                              f"tokenizer than the steered one; steering is compared on one "
                              f"tokenizer (the --baseline scorer may differ)")


def _ceiling(model, cfg: SteeringEvalConfig) -> dict[str, float]:
    """Highest reachable P(word) through the frozen ln_f + head, per probe word (see probe.py)."""
    from steerflow.steer.sentiment_probe import probability_ceiling

    return {w.strip(): probability_ceiling(model, model.tokenizer, w) for w in cfg.probe_words}


def _probe_at_zero(model, cfg: SteeringEvalConfig) -> dict[str, float]:
    """The probe of ``model`` at u = 0 alone (the batch shape of ActAdd's probe, so coefficient 0
    reproduces it bit for bit)."""
    from steerflow.steer.sentiment_probe import probe

    point = probe(model, model.tokenizer, (0.0,), prompt=cfg.probe_prompt, words=cfg.probe_words,
                  axis=cfg.axis)[0]
    return point.as_dict()


def _axis_vector(model, axis: int):
    import torch

    c = model.config.control_dim
    if axis >= c:
        raise InputError(f"--axis {axis} is outside the model's control_dim={c}")
    e = torch.zeros(c)
    e[axis] = 1.0
    return e


def _settings(cfg: SteeringEvalConfig) -> dict[str, Any]:
    data = asdict(cfg)
    data.pop("progress", None)
    return data
