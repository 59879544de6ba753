"""``steerflow experiment disentangle``: can two axes of u steer two attributes independently?

From nothing to ``results.json``, stage by stage (each resumable, :mod:`steerflow.pipeline.stages`;
training stages also resume mid-run from their checkpoints):

1. ``judges`` — the SST-2 sentiment judge and the register judge (movie review vs encyclopedic,
   :mod:`steerflow.steer.judges.register`) with their held-out accuracies; the register
   experts' texts (:mod:`steerflow.steer.register`).
2. ``lm`` — the hybrid LM, with ``control_dim`` = 2 and the axis names in its config.
3. ``experts`` — DExperts' expert and anti-expert of each attribute, fine-tuned from the LM.
4. ``joint`` — both contrasts distilled into one pass at u ∈ [−1, 1]²
   (:mod:`steerflow.steer.multi_axis`), the steering issue's recipe on two axes.
5. ``single`` — for comparison, one model per attribute distilled from its own pair alone.
6. ``grid`` — the joint model on the 3 × 3 grid u ∈ {−1, 0, +1}²: each attribute's rate,
   own effect, cross-talk with intervals, perplexity per cell under the unsteered LM
   (:mod:`steerflow.experiments.disentangle_grid`), and the targets.
7. ``single_grid`` — each single-axis model at u = ±e on its own axis.
8. ``actadd`` — the LM with the sum of two ActAdd (CAA) vectors, on the same grid.
9. ``judge_offsets`` — each judge on held-out human text at the other attribute's poles: the
   cross-talk the judge reads in by itself (:func:`~steerflow.experiments.disentangle_grid.judge_offsets`).

:func:`run_disentangle` runs them and returns the content of ``results.json``;
:func:`~steerflow.experiments.disentangle_report.write_disentangle` writes the files.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any, Optional

from steerflow.experiments.disentangle_settings import DisentangleSettings
from steerflow.pipeline.environment import (Environment, cache_dir, load, train_config,
                                            train_to_completion)
from steerflow.pipeline.stages import Stage, StageContext, StageRunner

LM = "lm"
JOINT = "joint"
REGISTER_DATA = "register/experts.jsonl"
#: the data folder's parts the study reads (no GPT-2 tokenizer: the presets it runs train BPE)
REQUIRED_DATA = ("wikitext-2", "sst2")

#: seconds of each stage at the ``small`` scale on 2 CPU cores, from the steering recipe's
#: timings (250 LM steps ≈ 3 min, a 120-step expert ≈ 1.2 min, 200 distillation steps ≈ 2 min
#: with a 3-model teacher, 50 prompts × 4 samples × 20 tokens ≈ 6 s of sampling): the joint
#: model's teacher runs 5 models, the grid 9 cells of 200 prompts × 4 samples (≈ 24 s each)
SMALL_SECONDS = dict(judges=45, lm=180, experts=290, joint=270, single=240, grid=240,
                     single_grid=110, actadd=250, judge_offsets=5)


def expert_dirs(axis: str) -> tuple[str, str]:
    """Where attribute ``axis``'s expert (u = +1) and anti-expert (u = −1) are written."""
    return f"experts/{axis}/positive", f"experts/{axis}/negative"


def single_dir(axis: str) -> str:
    return f"single/{axis}"


def source_of(env: Environment):
    from steerflow.data import resolve_data_source

    return resolve_data_source(env.data_dir, require=REQUIRED_DATA)


def stage_seconds(s: DisentangleSettings) -> dict[str, float]:
    """Each stage's expected seconds: :data:`SMALL_SECONDS` scaled by the stage's work against
    the ``small`` preset's (steps, prompts × samples × tokens); ``tiny`` models run ≈ 20× faster."""
    small = DisentangleSettings()
    size = 1.0 if s.config == "small" else (0.05 if s.config == "tiny" else 20.0)
    sampling = (s.prompts * s.samples * s.new_tokens) / (small.prompts * small.samples
                                                         * small.new_tokens)
    ratio = dict(judges=1.0, lm=s.lm_steps / small.lm_steps,
                 experts=s.expert_steps / small.expert_steps,
                 joint=s.joint_steps / small.joint_steps,
                 single=s.single_steps / small.single_steps,
                 grid=sampling, single_grid=sampling, actadd=sampling, judge_offsets=1.0)
    fixed = ("judges", "judge_offsets")  # judge inference on text: the same at every size
    return {k: SMALL_SECONDS[k] * ratio[k] * (1.0 if k in fixed else size) for k in ratio}


# ----------------------------------------------------------------------------- the judges
def judges_for(s: DisentangleSettings, env: Environment) -> dict[str, Any]:
    """The judge of each attribute (cached under the cache folder's ``judges/``)."""
    from steerflow.data import load_sst2
    from steerflow.steer.judges.register import load_or_train_register
    from steerflow.steer.judges.sst2 import load_or_train

    source, folder = source_of(env), cache_dir(env) / "judges"
    makers = {"sentiment": lambda: load_or_train(folder / "sst2-tfidf",
                                                  lambda: load_sst2(source, "train"),
                                                  lambda: load_sst2(source, "dev")),
              "register": lambda: load_or_train_register(folder / "register-tfidf", source,
                                                         s.judge_texts)}
    return {axis: makers[axis]() for axis in s.axes}


def stage_judges(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.steer.register import write_expert_data

        judges = judges_for(s, env)
        write_expert_data(source_of(env), ctx.out_dir / REGISTER_DATA, s.expert_texts, s.seed)
        return {"axis_judge_accuracy": {a: j.dev_accuracy for a, j in judges.items()},
                "judges": {a: {"name": j.name, **j.meta} for a, j in judges.items()}}
    return run


# ----------------------------------------------------------------------------- training
def _summary(summary: dict) -> dict:
    return {"steps": summary["step"], "final_loss": summary["final_loss"],
            "seconds": summary.get("seconds"),
            "valid_loss": summary.get("evals", {}).get("valid", {}).get("loss")}


def stage_lm(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        out = ctx.out_dir / LM
        cfg = train_config(s, env, out=str(out), task="lm", model="hybrid",
                           model_overrides={"control_dim": len(s.axes),
                                            "control_axes": list(s.axes)},
                           steps=s.lm_steps, batch_size=s.lm_batch_size, lr=s.lm_lr,
                           test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        return _summary(train_to_completion(cfg))
    return run


def stage_experts(s: DisentangleSettings, env: Environment):
    """Sentiment: positive / negative SST-2; register: the movie-review / encyclopedic texts."""
    def run(ctx: StageContext) -> dict:
        rows = {}
        for axis in s.axes:
            data = {"steer_data": str(ctx.out_dir / REGISTER_DATA)} if axis == "register" else {}
            for label, rel in zip((1, -1), expert_dirs(axis)):
                out = ctx.out_dir / rel
                cfg = train_config(s, env, out=str(out), task="expert", expert_label=label,
                                   init_from=str(ctx.out_dir / LM), steps=s.expert_steps,
                                   batch_size=s.expert_batch_size, lr=s.expert_lr,
                                   test_batches=s.test_batches,
                                   resume=(out / "train_config.json").is_file(), **data)
                rows[f"{axis}/{'positive' if label > 0 else 'negative'}"] = _summary(
                    train_to_completion(cfg))
        return rows
    return run


def _distill(s: DisentangleSettings, env: Environment, run_dir: Path, rel: str, teacher: str,
             steps: int, axis: int = 0, orthogonal: bool = False) -> dict:
    """The steering recipe's distillation (``pipeline.steering.stage_distill``, on-policy share
    0): the field's control paths and an untied head learn ``teacher`` in one pass at u."""
    out = run_dir / rel
    cfg = train_config(s, env, out=str(out), task="distill", init_from=str(run_dir / LM),
                       distill_teacher=teacher, distill_alpha=s.distill_alpha,
                       distill_top_p=s.distill_top_p, distill_orthogonal=orthogonal,
                       steer_axis=axis,
                       control_gain=s.control_gain, control_out=True,
                       control_adapter=s.control_adapter, control_only=True,
                       train_head=True, distill_on_policy=0.0, ode_consistency=0.0,
                       steps=steps, batch_size=s.distill_batch_size,
                       block_size=s.distill_block_size, lr=s.distill_lr, weight_decay=0.0,
                       test_batches=s.test_batches,
                       resume=(out / "train_config.json").is_file())
    return {**_summary(train_to_completion(cfg)), "teacher": teacher}


def teacher_spec(run_dir: Path, axes) -> str:
    """The multi-axis DExperts teacher of ``axes``: one expert pair per axis, in axis order."""
    pairs = [",".join(str(run_dir / d) for d in expert_dirs(axis)) for axis in axes]
    return "dexperts:" + ";".join(pairs)


def stage_joint(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        return _distill(s, env, ctx.out_dir, JOINT, teacher_spec(ctx.out_dir, s.axes),
                        s.joint_steps, orthogonal=s.orthogonal)
    return run


def stage_single(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        return {axis: _distill(s, env, ctx.out_dir, single_dir(axis),
                               teacher_spec(ctx.out_dir, [axis]), s.single_steps, axis=a)
                for a, axis in enumerate(s.axes)}
    return run


# ----------------------------------------------------------------------------- measuring
def _grid_inputs(s: DisentangleSettings, env: Environment, ctx: StageContext):
    """(prompts, sampling spec, judges, scorer at u = 0 = the unsteered LM)."""
    from steerflow.steer.open_ended import SamplingSpec, Scorer
    from steerflow.steer.prompts import neutral_prompts

    prompts = neutral_prompts(source_of(env), s.prompts, seed=s.seed)
    spec = SamplingSpec(samples=s.samples, max_new_tokens=s.new_tokens, seed=s.seed)
    lm = load(ctx.out_dir, LM, env).eval()
    return prompts, spec, judges_for(s, env), Scorer("base", lm, lm.tokenizer)


def _study(cells: dict, axes, seed: int) -> dict:
    from steerflow.experiments.disentangle_grid import check_targets, effects, summarise
    from steerflow.experiments.paper import DISENTANGLE_TARGETS

    table = summarise(cells, seed=seed)
    found = effects(cells, axes, seed)
    return {"cells": table, **found, "targets": check_targets(found, table, DISENTANGLE_TARGETS)}


def stage_grid(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.experiments.disentangle_grid import grid_cells, measure, model_sampler

        prompts, spec, judges, scorer = _grid_inputs(s, env, ctx)
        model = load(ctx.out_dir, JOINT, env).eval()
        cells = measure(model_sampler(model, prompts, spec), grid_cells(len(s.axes)), judges,
                        scorer, model.tokenizer, progress=not env.quiet, desc="joint grid")
        return {**_study(cells, s.axes, s.seed), "control_axes": list(model.config.control_axes)}
    return run


def stage_single_grid(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.experiments.disentangle_grid import axis_cells, measure, model_sampler

        prompts, spec, judges, scorer = _grid_inputs(s, env, ctx)
        out = {}
        for a, axis in enumerate(s.axes):
            model = load(ctx.out_dir, single_dir(axis), env).eval()
            cells = measure(model_sampler(model, prompts, spec), axis_cells(len(s.axes), a),
                            judges, scorer, model.tokenizer, progress=not env.quiet,
                            desc=f"single {axis}")
            out[axis] = _study(cells, s.axes, s.seed)
        return out
    return run


def actadd_vectors(s: DisentangleSettings, env: Environment, base, run_dir: Path) -> list:
    """The CAA direction ``(d,)`` of each attribute on ``base``: the class-mean difference of its
    residual stream over ``actadd_sentences`` texts per class (positive / negative SST-2 train;
    the register experts' movie-review / encyclopedic texts)."""
    from steerflow.steer.actadd import contrastive_vector
    from steerflow.steer.data import load_steer_jsonl
    from steerflow.steer.methods import actadd_direction, caa_texts

    vectors = []
    for axis in s.axes:
        if axis == "sentiment":
            vector, _ = actadd_direction(base, source_of(env), "caa", s.actadd_sentences, s.seed)
        else:
            pairs = [(e.text, int(e.u[0] > 0)) for e in load_steer_jsonl(run_dir / REGISTER_DATA)]
            pos, neg = caa_texts(pairs, base.tokenizer, s.actadd_sentences, s.seed,
                                 base.config.block_size)
            vector = contrastive_vector(base, base.tokenizer, pos, neg)
        vectors.append(vector)
    return vectors


def stage_actadd(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.experiments.disentangle_grid import actadd_sampler, grid_cells, measure

        prompts, spec, judges, scorer = _grid_inputs(s, env, ctx)
        base = load(ctx.out_dir, LM, env).eval()
        vectors = actadd_vectors(s, env, base, ctx.out_dir)
        cells = measure(actadd_sampler(base, prompts, spec, vectors, s.actadd_coef),
                        grid_cells(len(s.axes)), judges, scorer, base.tokenizer,
                        progress=not env.quiet, desc="ActAdd grid")
        return {**_study(cells, s.axes, s.seed), "coef": s.actadd_coef,
                "vector_norms": {a: float(v.norm()) for a, v in zip(s.axes, vectors)}}
    return run


def stage_judge_offsets(s: DisentangleSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.experiments.disentangle_grid import judge_offsets
        from steerflow.steer.register import held_out_poles

        poles = {axis: held_out_poles(source_of(env), axis, s.seed) for axis in s.axes}
        found = judge_offsets(poles, judges_for(s, env), s.seed)
        return {**found, "texts": {a: [len(t) for t in p] for a, p in poles.items()}}
    return run


# ----------------------------------------------------------------------------- the run
def build_stages(s: DisentangleSettings, env: Environment) -> list[Stage]:
    """The study's stages with their estimates (:func:`stage_seconds`), the settings each
    depends on and the files that must exist for a finished record to be reused."""
    t = stage_seconds(s)
    model = "model.safetensors"
    lm = ["config", "axes", "lm_steps", "lm_batch_size", "lm_lr", "test_batches", "seed"]
    distill = ["distill_alpha", "distill_top_p", "distill_batch_size", "distill_lr",
               "distill_block_size", "control_gain", "control_adapter"]
    grid = ["prompts", "samples", "new_tokens", "judge_texts"]
    experts = [f"{d}/{model}" for axis in s.axes for d in expert_dirs(axis)]
    return [
        Stage("judges", "the attributes' judges and the register experts' texts",
              stage_judges(s, env), t["judges"], settings=["axes", "judge_texts", "expert_texts"],
              outputs=[REGISTER_DATA]),
        Stage("lm", f"train the hybrid LM with one control axis per attribute ({s.lm_steps} "
                    f"steps)", stage_lm(s, env), t["lm"], settings=lm, outputs=[f"{LM}/{model}"]),
        Stage("experts", "DExperts' expert and anti-expert of each attribute",
              stage_experts(s, env), t["experts"],
              settings=["expert_steps", "expert_batch_size", "expert_lr"], outputs=experts),
        Stage("joint", f"distill both contrasts into one pass at u in [-1, 1]^{len(s.axes)}",
              stage_joint(s, env), t["joint"], settings=["joint_steps", "orthogonal", *distill],
              outputs=[f"{JOINT}/{model}"]),
        Stage("single", "distill each contrast alone (single-axis models, for comparison)",
              stage_single(s, env), t["single"], settings=["single_steps"],
              outputs=[f"{single_dir(a)}/{model}" for a in s.axes]),
        Stage("grid", "the joint model on the 3 x 3 grid of u", stage_grid(s, env), t["grid"],
              settings=grid),
        Stage("single_grid", "each single-axis model at u = -1, +1 on its axis",
              stage_single_grid(s, env), t["single_grid"], settings=[]),
        Stage("actadd", "the LM with two ActAdd vectors summed, on the same grid",
              stage_actadd(s, env), t["actadd"], settings=["actadd_coef", "actadd_sentences"]),
        Stage("judge_offsets", "each judge on human text at the other attribute's poles",
              stage_judge_offsets(s, env), t["judge_offsets"], settings=[]),
    ]


def _comparison(grid: dict, singles: dict, actadd: dict, axes) -> dict[str, Any]:
    """Own effect and cross-talk of the joint model beside the single-axis models' and summed
    ActAdd's, and the corner perplexity ratio of the joint model and ActAdd."""
    single = {"own_effect": {a: singles[a]["own_effect"].get(a) for a in axes},
              "cross_talk": {k: v for a in axes for k, v in singles[a]["cross_talk"].items()},
              "cross_talk_ci": {k: v for a in axes for k, v in singles[a]["cross_talk_ci"].items()}}
    pick = ("own_effect", "cross_talk", "cross_talk_ci")
    return {"joint": {k: grid[k] for k in pick}, "single_axis": single,
            "actadd_sum": {k: actadd[k] for k in pick},
            "corner_ppl_ratio": {name: r["targets"].get("corner_ppl", {}).get("value")
                                 for name, r in (("joint", grid), ("actadd_sum", actadd))}}


def run_disentangle(out: str | Path, settings: DisentangleSettings = DisentangleSettings(),
                    env: Environment = Environment(), command: Optional[str] = None,
                    scale: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) every stage into ``out``; the content of ``results.json``."""
    import sys

    import torch

    from steerflow.experiments.disentangle_grid import beyond_judge, check_targets
    from steerflow.experiments.paper import DISENTANGLE, DISENTANGLE_TARGETS
    from steerflow.io import machine_info
    from steerflow.pipeline.environment import device

    out = Path(out)
    source_of(env)  # fail fast with the one clear message when the data is missing
    stages = build_stages(settings, env)
    log = (lambda _m: None) if env.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    runner = StageRunner(out, stages, dataclasses.asdict(settings), log=log)
    start = time.perf_counter()
    r = runner.run()
    grid, offsets = r["grid"], r["judge_offsets"]
    beyond = beyond_judge(grid, offsets)
    return {
        "experiment": "disentangle", "scale": scale, "axes": list(settings.axes),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine_info(device(env)), "torch_threads": torch.get_num_threads()},
        "command": command or "steerflow.pipeline.disentangle (Python API)",
        "settings": dataclasses.asdict(settings),
        "prompts": settings.prompts, "samples": settings.samples,
        "new_tokens": settings.new_tokens,
        "axis_judge_accuracy": r["judges"]["axis_judge_accuracy"],
        "judges": r["judges"]["judges"],
        "control_axes": grid["control_axes"],
        "own_effect": grid["own_effect"], "own_effect_ci": grid["own_effect_ci"],
        "cross_talk": grid["cross_talk"], "cross_talk_ci": grid["cross_talk_ci"],
        "judge_offset": offsets["judge_offset"], "judge_offset_ci": offsets["judge_offset_ci"],
        "judge_offset_texts": offsets["texts"], **beyond,
        "cells": grid["cells"],
        "perplexity": {k: c["perplexity"] for k, c in grid["cells"].items()},
        "targets": check_targets({**grid, **beyond}, grid["cells"], DISENTANGLE_TARGETS),
        "target_values": dict(DISENTANGLE_TARGETS),
        "comparison": _comparison(grid, r["single_grid"], r["actadd"], settings.axes),
        "single_axis": r["single_grid"], "actadd": r["actadd"],
        "training": {name: r[name] for name in ("lm", "experts", "joint", "single")},
        "stage_seconds": dict(runner.elapsed), "estimate_s": stage_seconds(settings),
        "reused": list(runner.reused), "seconds": time.perf_counter() - start,
        "paper": dict(DISENTANGLE),
    }
