"""``steerflow eval steering``: the paper's probe and sweep, open-ended steering, and baselines.

:func:`evaluate_steering` measures a steered checkpoint and the methods it is compared with on the
same prompts, the same random numbers, the same judges and the same fluency scorers
(:mod:`steerflow.steer.methods`): the ODE along u, no control, guidance over u, DExperts (with two
expert checkpoints), ActAdd on the base model and the additive-injection ablation. Every positive
rate carries a 95 % cluster-bootstrap interval, every setting its generation speed; the methods
are compared at matched perplexity (:mod:`steerflow.steer.comparison`).

The result is one JSON-ready dict; :mod:`steerflow.steer.report` renders it as Markdown and PNG.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from steerflow.errors import ConfigError, InputError
from steerflow.steer.comparison import (BEATS_Z, comparisons, method_settings, ode_beats,  # noqa: F401
                                        rate_difference_z, target_checks, tradeoff, u_key)
from steerflow.steer.settings import SteeringEvalConfig, TABLE_US

logger = logging.getLogger(__name__)


@dataclass
class Models:
    """The checkpoints one evaluation compares (None where not given).

    ``steer_data`` is what the steered model was trained on (``cloze``, ``sst2``, a file; from its
    ``train_config.json``): it picks which of the issue's probe targets apply to it. ``dexperts``
    is a :class:`~steerflow.steer.dexperts.DExperts` over the base model and two expert
    checkpoints; ``scorer`` an independently trained discrete LM scoring fluency.
    """

    steered: Any
    base: Any
    ablation: Any = None
    baseline: Any = None
    names: dict[str, str] = field(default_factory=dict)
    steer_data: Optional[str] = None
    dexperts: Any = None
    scorer: Any = None


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
                baseline: Optional[str | Path] = None,
                dexperts: Optional[Sequence[str | Path]] = None,
                scorer: Optional[str | Path] = None) -> Models:
    """The checkpoints of one evaluation, for evaluation on the CPU. ``base`` defaults to the
    model the steering run started from (its ``train_config.json``); with none known, the steered
    model at u = 0 stands in for it. ``dexperts`` = (POS, NEG) expert checkpoints, run as DExperts
    over the base; ``scorer`` an independently trained discrete LM (checked by
    :func:`check_scorer`)."""
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
    for role, path in (("ablation", ablation), ("baseline", baseline), ("scorer", scorer)):
        if path:
            setattr(models, role, load_model(path))
            names[role] = str(path)
    if dexperts is not None:
        models.dexperts = load_dexperts(base_model, names["base"], dexperts)
        names["dexperts_positive"], names["dexperts_negative"] = map(str, dexperts)
    check_scorer(models)
    return models


def load_dexperts(base, base_name: str, experts: Sequence[str | Path]):
    """:class:`~steerflow.steer.dexperts.DExperts` over ``base`` with the expert checkpoints
    ``(POS, NEG)``; experts with another tokenizer than the base are refused, naming both."""
    from steerflow.model.hub import load_model
    from steerflow.steer.dexperts import DExperts

    if len(experts) != 2 or not all(str(p).strip() for p in experts):
        raise InputError(f"--dexperts takes two expert checkpoints POS,NEG (positive expert "
                         f"first), got {','.join(map(str, experts))!r}")
    pos, neg = (load_model(p) for p in experts)
    return DExperts(base, pos, neg, names=(f"the base {base_name}", f"the positive expert "
                                           f"{experts[0]}", f"the negative expert {experts[1]}"))


def check_scorer(models: Models) -> None:
    """The fluency scorer must be a discrete LM with a tokenizer that generates nothing here."""
    scorer = models.scorer
    if scorer is None:
        return
    name = models.names.get("scorer", "the scorer")
    compared = [("steered", models.steered, "steered"), ("base", models.base, "base"),
                ("ablation", models.ablation, "ablation")]
    if models.dexperts is not None:
        compared += [("positive expert", models.dexperts.expert, "dexperts_positive"),
                     ("negative expert", models.dexperts.anti_expert, "dexperts_negative")]
    for role, model, key in compared:
        path = models.names.get(key)
        if model is scorer or (path is not None and Path(path).resolve() == Path(name).resolve()):
            raise InputError(f"--scorer {name} is the {role} model; score fluency with an LM "
                             f"trained apart from the models compared")
    if scorer.config.is_hybrid:
        raise InputError(f"--scorer {name} is a hybrid (ODE) model; give an independently "
                         f"trained discrete LM")
    if scorer.tokenizer is None:
        raise InputError(f"--scorer {name} has no tokenizer.json; the scorer re-tokenizes the "
                         f"text it scores")


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
def judges_for(source, cfg: SteeringEvalConfig):
    """The :class:`~steerflow.steer.judges.panel.JudgePanel` of an evaluation: VADER, the SST-2
    classifier and MiniLM trained on SST-2 (cached in ``cfg.judge_cache``), and the extras."""
    from steerflow.data import load_sst2
    from steerflow.steer.judges.panel import judge_panel

    return judge_panel(load_sst2(source, "train"), load_sst2(source, "dev"), seed=cfg.seed,
                       cache=cfg.judge_cache, minilm=cfg.minilm, extra=cfg.extra_judges)


def build_judges(source, cfg: SteeringEvalConfig) -> tuple[list, dict[str, float]]:
    """The judges of :func:`judges_for` and the dev accuracy of each trained one."""
    panel = judges_for(source, cfg)
    return panel.judges, panel.dev_accuracy


# ----------------------------------------------------------------------------- prompts
def prompt_room(model, cfg: SteeringEvalConfig) -> int:
    """How many prompt tokens fit before ``cfg.max_new_tokens`` new ones in ``model``'s context."""
    block = model.config.block_size
    if cfg.max_new_tokens >= block:
        raise InputError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for a prompt in "
                         f"the model's context of {block} tokens; use at most {block - 1}")
    return block - cfg.max_new_tokens


def prompts_from_file(cfg: SteeringEvalConfig,
                      model) -> Optional[tuple[list[str], dict[str, Any]]]:
    """The first ``cfg.prompts`` prompts of ``cfg.prompts_file`` and where they came from, or
    None without a file. A bad file, an empty prompt or one too long for ``model`` with the new
    tokens is one clear :class:`InputError`, before any training."""
    from steerflow.steer.prompts import encode_prompts, read_prompts_file

    if not cfg.prompts_file:
        return None
    in_file = read_prompts_file(cfg.prompts_file)
    prompts = in_file[: cfg.prompts]
    try:
        encode_prompts(model.tokenizer, prompts, prompt_room(model, cfg))
    except InputError as exc:
        raise InputError(f"--prompts-file {cfg.prompts_file}: {exc}") from None
    info = {"kind": "file", "path": str(cfg.prompts_file), "in_file": len(in_file),
            "used": len(prompts)}
    return prompts, info


def _make_run(models: Models, source, cfg: SteeringEvalConfig, judges,
              from_file: Optional[tuple[list[str], dict]] = None):
    from steerflow.steer.methods import OpenEndedRun
    from steerflow.steer.open_ended import SamplingSpec, Scorer
    from steerflow.steer.prompts import encode_prompts, neutral_prompts

    tok = models.steered.tokenizer
    room = prompt_room(models.steered, cfg)
    if from_file is None:
        prompts = neutral_prompts(source, cfg.prompts, cfg.prompt_words, cfg.seed)
        info = {"kind": "wikitext-2", "splits": ["valid", "test"], "used": len(prompts)}
    else:
        prompts, info = from_file
    spec = SamplingSpec(cfg.samples, cfg.max_new_tokens, cfg.temperature, cfg.top_p, None, cfg.seed)
    ids = encode_prompts(tok, prompts, room)
    scorers = [Scorer("unsteered", models.base, models.base.tokenizer)]
    if models.baseline is not None:
        scorers.append(Scorer("baseline", models.baseline, models.baseline.tokenizer))
    if models.scorer is not None:
        scorers.append(Scorer("scorer", models.scorer, models.scorer.tokenizer))
    return OpenEndedRun(prompts, ids, tok, spec, judges, scorers, show=cfg.progress), info


# ----------------------------------------------------------------------------- main entry
def evaluate_steering(models: Models, source, cfg: SteeringEvalConfig,
                      log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Probe, sweep, open-ended evaluation of every method, speed and comparisons; a JSON-ready
    dict (``results.json``).

    Private ``_sweep`` entries (ProbeSweep objects for plotting) are removed by
    :func:`steerflow.steer.report.to_json`.
    """
    from steerflow.steer.methods import run_methods

    _check_models(models)
    say = log or (lambda msg: None)
    results: dict[str, Any] = {"checkpoints": dict(models.names), "steer_data": models.steer_data,
                               "settings": _settings(cfg)}
    from_file = prompts_from_file(cfg, models.steered)  # a bad prompts file fails before training

    # the judges first: a bad SST-2 file or judge spec fails before minutes of probing
    say("training the judges")
    panel = judges_for(source, cfg)
    results["judge_dev_accuracy"] = panel.dev_accuracy["sst2-tfidf"]
    results["judges"] = {"names": panel.names, "dev_accuracy": panel.dev_accuracy,
                         "gates": panel.gates, "skipped": panel.skipped}
    for name, reason in panel.skipped.items():
        say(f"judge {name} skipped: {reason}")

    say("probe and sweep")
    section = probe_section(models.steered, models.steered.tokenizer, cfg)
    results["probe"], results["sweep"] = section["table"], section["sweep"]
    results["probe_ceiling"] = _ceiling(models.steered, cfg)
    results["_sweeps"] = {"ode": section["_sweep"]}
    say(f"ActAdd direction ({cfg.actadd_vector}) and the baselines' probes")
    baselines, vector = _baseline_probes(models, source, cfg, results["_sweeps"])

    run, results["prompt_source"] = _make_run(models, source, cfg, panel.judges, from_file)
    results["prompts"] = run.prompts
    baselines["actadd"]["residual_norm"] = _residual_norm(models.base, run.prompt_ids)
    if models.dexperts is not None:
        from steerflow.steer.head_span import contrast_head_span

        dx = models.dexperts
        baselines["dexperts"]["head_span"] = contrast_head_span(
            models.base, dx.expert, dx.anti_expert, run.prompt_ids)
    say("open-ended generation, one method after another")
    methods = run_methods(run, models, cfg, vector)
    results["open_ended"] = methods.pop("ode")
    for name, settings in methods.items():
        baselines[name]["open_ended"] = settings
    results["baselines"] = baselines
    results.update(compare_methods(results))
    return results


def _check_models(models: Models) -> None:
    if models.steered.tokenizer is None:
        raise ConfigError("the checkpoint has no tokenizer (tokenizer.json); steerflow's "
                          "trainer saves one with the model")
    if not models.steered.config.is_hybrid:
        raise ConfigError("eval steering needs a hybrid (ODE) checkpoint: u steers it and "
                          "guidance contrasts it at ±u; this one is discrete")
    _check_tokenizers(models)
    check_scorer(models)


def _baseline_probes(models: Models, source, cfg: SteeringEvalConfig,
                     sweeps: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The baselines' entries before open-ended generation (the probe of no control, ActAdd and
    the ablation; what guidance and DExperts run with) and ActAdd's steering vector."""
    from steerflow.steer.actadd import actadd, injection_layer
    from steerflow.steer.methods import GUIDANCE_U, actadd_direction

    base = models.base
    vector, vector_info = actadd_direction(base, source, cfg.actadd_vector, cfg.caa_sentences,
                                           cfg.seed)
    act = probe_section(base, base.tokenizer, cfg, lambda c: actadd(base, vector, c),
                        cfg.actadd_coefs)
    sweeps["actadd (coef)"] = act["_sweep"]
    baselines: dict[str, Any] = {
        "no_control": {"probe": _probe_at_zero(base, cfg)},
        "actadd": {"layer": injection_layer(base), "vector_norm": float(vector.norm()),
                   **vector_info, "probe": act["table"], "sweep": act["sweep"]},
        "guidance": {"u": GUIDANCE_U, "gammas": list(cfg.guidance_gammas)},
    }
    if models.dexperts is not None:
        baselines["dexperts"] = {"alphas": list(cfg.dexperts_alphas),
                                 "experts": {"positive": models.names.get("dexperts_positive"),
                                             "negative": models.names.get("dexperts_negative")}}
    if models.ablation is not None:
        abl = probe_section(models.ablation, models.ablation.tokenizer, cfg)
        baselines["additive"] = {"probe": abl["table"], "sweep": abl["sweep"]}
        sweeps["additive"] = abl["_sweep"]
    return baselines, vector


def _residual_norm(model, prompt_ids: Sequence[list[int]]) -> float:
    """Mean residual-stream norm at ActAdd's layer on the prompts (the scale of its vector)."""
    import torch

    from steerflow.steer.actadd import mean_residual_norm

    return mean_residual_norm(model, [torch.tensor([ids]) for ids in prompt_ids])


def compare_methods(results: dict[str, Any]) -> dict[str, Any]:
    """``speed``, ``tradeoff`` (and ``tradeoff_scorer`` under an independent scorer),
    ``comparisons`` and ``targets`` of results whose methods have run."""
    from steerflow.steer.methods import speed_summary

    methods = method_settings(results)
    compared = {m: v for m, v in methods.items() if m != "no_control"}
    reference = results["baselines"]["no_control"]["open_ended"]["0"]
    out: dict[str, Any] = {"speed": speed_summary(methods),
                           "tradeoff": tradeoff(compared, reference["perplexity"])}
    out["comparisons"] = comparisons(out["tradeoff"])
    if "scorer" in reference["perplexities"]:
        out["tradeoff_scorer"] = tradeoff(compared, reference["perplexities"]["scorer"],
                                          scorer="scorer")
    out["targets"] = target_checks({**results, **out})
    return out


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


def _settings(cfg: SteeringEvalConfig) -> dict[str, Any]:
    data = asdict(cfg)
    data.pop("progress", None)
    return data
