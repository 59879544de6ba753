"""The end-to-end run behind ``steerflow demo`` and ``steerflow reproduce``.

Stages: prepare data → train baseline and hybrid LMs (paper 1, Exp. 1) → steering training →
sample generations → steering evaluation (paper probe, sweep, open-ended with judges, ActAdd) →
solver invariance (Exp. 3) → solver probing → flow analysis (paper 2) → benchmark (Exp. 4) →
``report.md`` / ``report.json``. Every stage is resumable (:mod:`steerflow.pipeline.stages`), and
training stages resume from their own checkpoints when interrupted mid-run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from steerflow.errors import ConfigError
from steerflow.pipeline.environment import (Environment, data_source, device, train_config,
                                            train_to_completion)
from steerflow.pipeline.paths import PATHS
from steerflow.pipeline.stages import Stage, StageContext, StageRunner
from steerflow.pipeline.steering import (SAMPLE_PROMPTS, SAMPLE_US, stage_distill, stage_experts,
                                         stage_samples, stage_steer, stage_steering_eval,
                                         steer_output)

__all__ = ["Environment", "REPRODUCE_SCALES", "RunSettings", "SCALES", "SAMPLE_PROMPTS", "SAMPLE_US", "build_stages",
           "run_pipeline", "stage_seconds"]

@dataclass(frozen=True)
class RunSettings:
    """Sizes of every stage. :data:`SCALES` holds the named presets.

    ``lm_steps``/``lm_batch_size``/``lm_lr`` of None take the training defaults of ``config``.
    The ``steer_*``, ``expert_*`` and ``distill_*`` fields are the steering recipe
    (:mod:`steerflow.pipeline.steering`); a ``*_steps`` of None skips that stage (at least one of
    ``steer_steps`` and ``distill_steps`` must be set).
    """

    config: str = "small"
    lm_steps: Optional[int] = None
    lm_batch_size: Optional[int] = None
    lm_lr: Optional[float] = None
    #: ModelConfig fields both LMs change from the preset (``steerflow experiment fluency``'s
    #: winner, e.g. ``{"n_layer": 4}``); every later stage starts from these LMs
    lm_model: dict = dataclasses.field(default_factory=dict)
    test_batches: Optional[int] = None
    #: validation batches of the LMs' periodic evaluations (TrainConfig.eval_batches)
    lm_eval_batches: int = 20
    # the steering stage (pipeline/steering.py)
    steer_data: str = "sst2"
    steer_discriminative: float = 0.0
    steer_consistency: float = 0.0
    steer_train_discrete: bool = False
    steer_final_norm: bool = False
    steer_anchor: float = 0.0
    control_gain: Optional[float] = None
    control_out: bool = False
    control_adapter: int = 0
    control_only: bool = False
    train_head: bool = False
    # ... and its optimisation
    steer_steps: Optional[int] = 200
    steer_batch_size: int = 32
    steer_lr: float = 3e-3
    # DExperts' experts (None: no such stage) and the distillation stage (None: none)
    expert_steps: Optional[int] = None
    expert_lr: float = 1e-3
    expert_batch_size: Optional[int] = None  # None: steer_batch_size
    distill_steps: Optional[int] = None
    distill_gamma: float = 2.0
    distill_on_policy: float = 0.5
    distill_batch_size: int = 16
    distill_lr: float = 1e-3
    distill_block_size: Optional[int] = None
    distill_top_p: Optional[float] = None
    # samples and the steering evaluation
    eval_prompts: int = 50
    eval_samples: int = 4
    eval_new_tokens: int = 20
    sweep_points: int = 21
    # the swept settings of each method
    open_us: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    actadd_coefs: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
    guidance_gammas: tuple[float, ...] = (2.0,)
    dexperts_alphas: tuple[float, ...] = (2.0,)
    eval_minilm: bool = True
    # solver invariance and solver probing
    invariance_batches: int = 2
    probe_batches: int = 1
    probe_examples: int = 8
    probe_sentences: int = 400
    # the flow analysis (paper 2)
    flow_batch_size: int = 2
    flow_lanczos_iters: int = 16
    flow_grid_points: int = 9
    flow_traj_steps: int = 32
    flow_loss_batches: int = 5
    flow_refinement: bool = True
    flow_refinement_iters: int = 150
    # the contractive-field hybrid the flow analysis compares with (paper 2); False: no such stage
    contractive: bool = True
    contractive_steps: Optional[int] = None
    bench_quick: bool = True
    seed: int = 1337

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            floor = 0 if f.name == "control_adapter" else 1  # a rank of 0: no adapter
            if (isinstance(value, int) and not isinstance(value, bool) and f.name != "seed"
                    and value < floor):
                raise ConfigError(f"{f.name} must be >= {floor}, got {value}")
        if not (self.steer_steps or self.distill_steps):
            raise ConfigError("a run needs a steering stage (steer_steps) or a distillation "
                              "stage (distill_steps)")


SCALES: dict[str, RunSettings] = {
    # CI smoke run: seconds per stage
    "tiny": RunSettings(config="tiny", lm_steps=30, test_batches=4, steer_data="cloze",
                        steer_steps=30, steer_batch_size=16, expert_steps=3, distill_steps=4,
                        distill_batch_size=4, control_gain=10.0, control_out=True, guidance_gammas=(1.0,), eval_minilm=False, eval_prompts=4, eval_samples=2,
                        eval_new_tokens=8, sweep_points=5, open_us=(-1.0, 0.0, 1.0),
                        actadd_coefs=(-4.0, 0.0, 4.0), invariance_batches=1, probe_examples=2,
                        probe_sentences=60, flow_batch_size=1, flow_lanczos_iters=6,
                        flow_grid_points=3, flow_traj_steps=8, flow_loss_batches=2,
                        flow_refinement=False),
    # the README's main job: at most 10 minutes on 2 CPU cores, trimmed evaluations. The steering
    # recipe (the steering issue): DExperts' expert and anti-expert, then their contrast at
    # α = 1.5 on the base's nucleus (what DExperts samples) distilled into one pass through the
    # field's zero-initialised control path W_o u and an untied head (the u-gated adapter fits
    # the teacher better but breaks solver invariance: docs/results/steering_small.md, round 7)
    "small": RunSettings(config="small", lm_steps=130, contractive=False, test_batches=20,
                         lm_eval_batches=10, steer_steps=None, expert_steps=100,
                         expert_batch_size=16, distill_steps=100, distill_gamma=1.5,
                         distill_on_policy=0.0, distill_lr=1e-2, distill_block_size=64,
                         distill_top_p=0.9, control_gain=3.0, control_out=True,
                         control_only=True, train_head=True,
                         eval_samples=3, open_us=(-1.0, -0.5, 0.0, 0.5, 1.0),
                         actadd_coefs=(-8.0, 0.0, 8.0), guidance_gammas=(),
                         dexperts_alphas=(1.0,), invariance_batches=1,
                         probe_sentences=200, flow_refinement=False),
    # paper 1 at its configuration (GPT-2 BPE, 30.5M-parameter baseline, 500 LM steps)
    "paper": RunSettings(config="paper", lm_steps=500, steer_steps=500, eval_prompts=100,
                         open_us=(-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0),
                         actadd_coefs=(-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0),
                         eval_samples=4, invariance_batches=8, probe_batches=4,
                         probe_examples=32, probe_sentences=872, flow_batch_size=8,
                         flow_lanczos_iters=32, flow_grid_points=17, flow_traj_steps=64,
                         flow_loss_batches=10, flow_refinement_iters=600, bench_quick=False),
}

#: ``steerflow reproduce --scale``: the paper at its size, and the recipe behind the README's
#: headline steering numbers on ``small`` — the demo's recipe on a longer-trained base, stronger
#: experts, a longer distillation, and the steering issue's evaluation protocol (200 prompts ×
#: 4 samples, DExperts' α and ActAdd's coefficient swept).
REPRODUCE_SCALES: dict[str, RunSettings] = {
    "paper": SCALES["paper"],
    "small": dataclasses.replace(
        SCALES["small"], lm_steps=600, test_batches=40, lm_eval_batches=20, contractive=True,
        contractive_steps=100, expert_steps=300, expert_batch_size=32, distill_steps=300,
        eval_prompts=200, eval_samples=4,
        open_us=(-1.0, -0.75, -0.5, 0.0, 0.5, 0.75, 1.0),
        actadd_coefs=(-16.0, -8.0, 0.0, 8.0, 16.0), dexperts_alphas=(0.5, 1.0, 1.5),
        invariance_batches=2),
    "tiny": SCALES["tiny"],
}

# ----------------------------------------------------------------------------- stages
def stage_lm(s: RunSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.experiments.gradient_stability import (run_gradient_stability,
                                                              write_gradient_stability)

        base = train_config(s, env, out=str(ctx.out_dir / PATHS.lm), steps=s.lm_steps,
                             batch_size=s.lm_batch_size, lr=s.lm_lr, test_batches=s.test_batches,
                             eval_batches=s.lm_eval_batches, model_overrides=dict(s.lm_model))
        results = run_gradient_stability(base, ctx.out_dir / PATHS.lm,
                                         command="steerflow demo (stage lm)")
        write_gradient_stability(results, ctx.out_dir / PATHS.lm)
        return {"source": data_source(env).describe(), "tokenizer": results["tokenizer"],
                "steps": results["steps"], "baseline": results["baseline"],
                "hybrid": results["hybrid"], "comparison": results["comparison"],
                "paper": results["paper"]}
    return run


def _steered_with_batches(ctx: StageContext, env: Environment, max_batches: int):
    """The steered model and ``max_batches`` WikiText-2 validation batches for a solver study."""
    from steerflow.analysis.inputs import load_hybrid_with_batches

    return load_hybrid_with_batches(ctx.out_dir / PATHS.steered, device(env), env.data_dir,
                                    env.cache_dir, max_batches=max_batches)


def stage_invariance(s: RunSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.analysis.invariance import run_invariance, write_invariance

        model, batches = _steered_with_batches(ctx, env, s.invariance_batches)
        result = run_invariance(model, batches, progress=not env.quiet)
        write_invariance(result, ctx.out_dir / PATHS.invariance)
        return result
    return run


def stage_probe(s: RunSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.analysis.inputs import sst2_dev
        from steerflow.analysis.settings import ProbeSettings
        from steerflow.analysis.solver_probing import run_probe, write_probe

        model, batches = _steered_with_batches(ctx, env, s.probe_batches)
        pairs = sst2_dev(env.data_dir)[: s.probe_sentences]
        settings = ProbeSettings(max_examples=s.probe_examples, seed=s.seed)
        result = run_probe(model, batches, pairs, settings, progress=not env.quiet)
        write_probe(result, ctx.out_dir / PATHS.probe)
        return result.as_dict()
    return run


def stage_contractive(s: RunSettings, env: Environment):
    """A hybrid LM with the contractive vector field, trained like the hybrid (paper 2 option)."""
    def run(ctx: StageContext) -> dict:
        out = ctx.out_dir / PATHS.contractive
        cfg = train_config(s, env, out=str(out), model="hybrid",
                           model_overrides={"field": "contractive"},
                           steps=s.contractive_steps or s.lm_steps, batch_size=s.lm_batch_size,
                           lr=s.lm_lr, test_batches=s.test_batches,
                           resume=(out / "train_config.json").is_file())
        summary = train_to_completion(cfg)
        return {"steps": summary["step"], "final_loss": summary["final_loss"],
                "val_loss": summary.get("evals", {}).get("valid", {}).get("loss")}
    return run


def stage_flow(s: RunSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.analysis.flow import run_flow, write_flow
        from steerflow.analysis.settings import FlowConfig

        cfg = FlowConfig(checkpoint=str(ctx.out_dir / PATHS.steered),
                         out=str(ctx.out_dir / PATHS.flow),
                         baseline=str(ctx.out_dir / PATHS.baseline),
                         compare=str(ctx.out_dir / PATHS.contractive) if s.contractive else None,
                         data_dir=env.data_dir, cache_dir=env.cache_dir,
                         batch_size=s.flow_batch_size, lanczos_iters=s.flow_lanczos_iters,
                         grid_points=s.flow_grid_points, traj_steps=s.flow_traj_steps,
                         loss_batches=s.flow_loss_batches,
                         refinement=s.flow_refinement, refinement_iters=s.flow_refinement_iters,
                         seed=s.seed, device=device(env))
        return write_flow(run_flow(cfg, progress=not env.quiet), cfg.out)
    return run


def stage_bench(s: RunSettings, env: Environment):
    def run(ctx: StageContext) -> dict:
        from steerflow.bench.options import BenchOptions
        from steerflow.bench.suite import run_bench, write_bench

        where = device(env)
        opts = (BenchOptions.quick_options(device=where) if s.bench_quick
                else BenchOptions(config=s.config, device=where))
        result = run_bench(opts)
        (ctx.out_dir / PATHS.bench).mkdir(parents=True, exist_ok=True)
        write_bench(result, ctx.out_dir / PATHS.bench / "results.json")
        return result
    return run


#: Seconds per stage on 2 CPU cores. ``small``: the demo (``steerflow demo``, quiet, 2 threads,
#: empty cache, 2026-12-05: 9.6 min in all; the contractive LM from the 50-step run of an earlier
#: demo). ``paper``: the complete ``reproduce --scale paper`` run (≈ 285 min, read off its
#: ``stages/*.json``; the CPU was shared with other runs for part of it). The evaluation stages
#: weigh far more at paper scale (the flow stage's depth-refinement study trains at GPT-2
#: vocabulary size), so one table scaled by a factor cannot serve both.
STAGE_SECONDS = {
    "small": dict(lm=204, contractive=66, steer=75, experts=70, distill=78, samples=1,
                  steering=167, invariance=12, probe=20, flow=17, bench=3),
    "paper": dict(lm=4080, contractive=2585, steer=1103, samples=12, steering=1567,
                  invariance=1907, probe=543, flow=5112, bench=126),
}


def stage_seconds(config: str) -> dict[str, float]:
    """The expected seconds of each stage for ``config``: measured for ``small`` and ``paper``,
    0.1 × ``small`` for ``tiny``, 20 × ``small`` (the benchmark 600 s) for any other config."""
    if config in STAGE_SECONDS:
        return dict(STAGE_SECONDS[config])
    scale = 0.1 if config == "tiny" else 20.0
    seconds = {name: t * scale for name, t in STAGE_SECONDS["small"].items()}
    if config != "tiny":
        seconds["bench"] = 600.0
    return seconds


def build_stages(s: RunSettings, env: Environment) -> list[Stage]:
    """The stages of one run, with duration estimates for the ETA (:func:`stage_seconds`).

    Training stages come first: a changed evaluation setting re-runs only the evaluations.
    """
    t = stage_seconds(s.config)
    lm_settings = ["config", "lm_steps", "lm_batch_size", "lm_lr", "lm_model", "test_batches",
                   "lm_eval_batches", "seed"]
    stages = [
        Stage("lm", "train baseline and hybrid LMs (gradient stability, paper Exp. 1)",
              stage_lm(s, env), t["lm"], settings=lm_settings,
              outputs=[f"{PATHS.baseline}/model.safetensors", f"{PATHS.hybrid}/model.safetensors",
                       f"{PATHS.lm}/results.json"]),
    ]
    if s.contractive:
        stages.append(Stage(
            "contractive", "train a hybrid with the contractive vector field (paper 2)",
            stage_contractive(s, env), t["contractive"], settings=["contractive_steps"],
            outputs=[f"{PATHS.contractive}/model.safetensors"]))
    if s.steer_steps:
        stages.append(Stage(
            "steer", f"steering training on {s.steer_data} (paper Exp. 2)", stage_steer(s, env),
            t["steer"], settings=["steer_data", "steer_discriminative", "steer_consistency",
                                  "steer_train_discrete", "steer_final_norm", "steer_anchor",
                                  "control_gain", "control_out", "control_adapter",
                                  "control_only", "train_head", "steer_steps",
                                  "steer_batch_size", "steer_lr"],
            outputs=[f"{steer_output(s)}/model.safetensors"]))
    if s.expert_steps:
        stages.append(Stage(
            "experts", "DExperts' expert and anti-expert (positive / negative SST-2)",
            stage_experts(s, env), t.get("experts", t["steer"]),
            settings=["expert_steps", "expert_lr", "expert_batch_size", "steer_batch_size"],
            outputs=[f"{PATHS.expert_positive}/model.safetensors",
                     f"{PATHS.expert_negative}/model.safetensors"]))
    if s.distill_steps:
        stages.append(Stage(
            "distill", f"distill {'DExperts' if s.expert_steps else 'guidance'} "
                       f"(weight {s.distill_gamma:g}) into one pass at u",
            stage_distill(s, env), t.get("distill", t["steer"]),
            settings=[f.name for f in dataclasses.fields(s) if f.name.startswith("distill_")]
            + ["control_gain", "control_out", "control_adapter", "control_only", "train_head"],
            outputs=[f"{PATHS.steered}/model.safetensors"]))
    stages += [
        Stage("samples", "sample generations at u = -1, 0, +1", stage_samples(s, env),
              t["samples"], settings=["eval_new_tokens"]),
        Stage("steering", "steering evaluation: probe, sweep, open-ended, ActAdd",
              stage_steering_eval(s, env), t["steering"],
              settings=["eval_prompts", "eval_samples", "eval_new_tokens", "sweep_points",
                        "open_us", "actadd_coefs", "guidance_gammas", "dexperts_alphas",
                        "eval_minilm"],
              outputs=[f"{PATHS.steering}/results.json"]),
        Stage("invariance", "solver invariance (paper Exp. 3)", stage_invariance(s, env),
              t["invariance"], settings=["invariance_batches"],
              outputs=[f"{PATHS.invariance}/results.json"]),
        Stage("probe", "solver probing: NFE vs u and tolerance, linear probes",
              stage_probe(s, env), t["probe"],
              settings=["probe_batches", "probe_examples", "probe_sentences"],
              outputs=[f"{PATHS.probe}/results.json"]),
        Stage("flow", "flow analysis: convergence order, log-norms, perturbations (paper 2)",
              stage_flow(s, env), t["flow"],
              settings=[f.name for f in dataclasses.fields(s) if f.name.startswith("flow_")]
              + ["contractive"],
              outputs=[f"{PATHS.flow}/results.json"]),
        Stage("bench", "benchmark hybrid vs baseline (paper Exp. 4)", stage_bench(s, env),
              t["bench"], settings=["bench_quick"],
              outputs=[f"{PATHS.bench}/results.json"]),
    ]
    return stages


def run_pipeline(out: str | Path, settings: RunSettings, env: Environment = Environment(),
                 expected_s: Optional[float] = None) -> dict[str, Any]:
    """Run (or resume) every stage into ``out`` and write ``report.md`` and ``report.json``.

    ``expected_s`` (e.g. :func:`~steerflow.pipeline.estimate.estimate_seconds`' ``total_s``)
    rescales the stages' built-in estimates so that the progress ETA starts from it.
    """
    from steerflow.pipeline.report import write_report

    out = Path(out)
    start = time.perf_counter()
    data_source(env)  # fail fast, with the one clear message, when no data can be found
    stages = build_stages(settings, env)
    if expected_s is not None and expected_s > 0:
        factor = expected_s / sum(stage.estimate_s for stage in stages)
        stages = [dataclasses.replace(stage, estimate_s=stage.estimate_s * factor)
                  for stage in stages]
    runner = StageRunner(out, stages, dataclasses.asdict(settings),
                         log=(lambda _m: None) if env.quiet else _log)
    results = runner.run()
    elapsed = time.perf_counter() - start
    return write_report(out, settings, results, elapsed, reused=runner.reused,
                        source=data_source(env).describe())


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
