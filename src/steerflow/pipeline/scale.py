"""The scale study (paper 1's open question "does it hold as the model grows?"): the same recipe
at several model sizes, each for the same number of pretraining tokens.

Per size (a preset name), in ``OUT/<config>/``, the end-to-end run's stages
(:mod:`steerflow.pipeline.demo`) that the question needs, resumable one by one:

1. ``lm`` — Exp. 1: a discrete baseline and a hybrid pretrained on the token budget
   (``steps = tokens // (batch × block)``, :func:`lm_steps`);
2. ``experts``, ``distill`` (and ``steer`` when the recipe has one) — the steering recipe;
3. ``steering`` — the steering evaluation (own effect: the judges' positive rate at u = +1 minus
   u = −1), ``invariance`` — Exp. 3 (displacement divergence against dopri5), and ``latency`` —
   Exp. 4's latency benchmark of hybrid against baseline at the size's shapes.

:func:`run_scale` runs (or reuses) every size and returns the ``results.json`` dict;
:func:`~steerflow.pipeline.scale_report.write_scale` writes the files.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from steerflow.config import PRESETS
from steerflow.errors import ConfigError
from steerflow.experiments.paper import SCALE as PAPER
from steerflow.pipeline.demo import SCALES, RunSettings, build_stages
from steerflow.pipeline.environment import Environment, check_names, data_source, device
from steerflow.pipeline.paths import PATHS
from steerflow.pipeline.stages import Stage, StageContext, StageRunner

#: the sizes of the study by default: ``mid`` lies between ``small`` and ``paper`` (log scale)
DEFAULT_CONFIGS = ("small", "mid", "paper")

#: The pretraining budget per size that keeps small + mid + paper near 90 minutes on 2 shared CPU
#: cores: 64 steps of 32 × 64 on small, 64 of 16 × 128 on mid, 128 of 8 × 128 on paper. From one
#: timed training step per preset (one thread, the machine shared with other jobs: rough), the
#: sizes take about 9, 21 and 58 minutes, and each further million tokens adds about 15, 47 and
#: 150 minutes; the evaluation stages are most of a size's time at this budget.
DEFAULT_TOKENS = 131_072

#: The LM batch (sequences per step) and learning rate of each size; the other presets use
#: their training defaults (``train.config.TRAIN_DEFAULTS``). ``mid`` sits between small's
#: (32, 3e-3) and paper's (8, 1e-3): 16 × 128 = small's 2,048 tokens per step.
LM_SHAPES: dict[str, tuple[int, float]] = {"mid": (16, 2e-3)}

#: The steering recipe of the ``small`` demo (DExperts' experts, then their contrast distilled
#: into the field's direct control path and an untied head), with 40 / 80 instead of 120 / 200
#: expert / distillation steps so that the paper size fits the study's time; evaluated on 50
#: neutral prompts × 2 samples, DExperts at its distillation teacher's α = 1 only. Every size
#: runs exactly this recipe.
SCALE_RECIPE = dataclasses.replace(SCALES["small"], expert_steps=40, distill_steps=80,
                                   eval_samples=2, dexperts_alphas=(1.0,))

#: the end-to-end run's stages the study keeps (the rest measure what the question does not ask)
KEPT_STAGES = ("lm", "steer", "experts", "distill", "steering", "invariance")


@dataclass(frozen=True)
class ScaleSettings:
    """What the study runs: the sizes, the pretraining budget and the recipe.

    Args:
        configs: preset names, one per size, in order (no repeats).
        tokens: pretraining tokens per model and size (the baseline and the hybrid each).
        recipe: the run settings every size shares; its ``config`` and ``lm_*`` fields are
            replaced per size (:func:`size_settings`).
        batch_size: LM sequences per step at every size (None: :func:`lm_shape`'s per size).
    """

    configs: tuple[str, ...] = DEFAULT_CONFIGS
    tokens: int = DEFAULT_TOKENS
    recipe: RunSettings = SCALE_RECIPE
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        check_names(self.configs, tuple(PRESETS), "--configs", "config",
                    "name at least one preset, e.g. small,mid,paper")
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 1:
            raise ConfigError(f"--tokens must be a positive number of tokens, got {self.tokens}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not {-1.0, 1.0} <= set(self.recipe.open_us):
            raise ConfigError("the recipe's open_us must include -1 and +1 (the own effect)")
        largest = max(self.configs, key=lambda c: _tokens_per_step(c, self.batch_size))
        batch, block, _ = lm_shape(largest, self.batch_size)
        if self.tokens < batch * block:
            raise ConfigError(f"--tokens {self.tokens:,} is less than one training step of "
                              f"{largest} ({batch} × {block} = {batch * block:,} tokens); use "
                              f"--tokens >= {batch * block:,}")


def lm_shape(config: str, batch_size: Optional[int] = None) -> tuple[int, int, float]:
    """``(batch, block, lr)`` of a size's pretraining: :data:`LM_SHAPES`, else the preset's
    training defaults; ``batch_size`` overrides the batch."""
    from steerflow.train.config import TRAIN_DEFAULTS

    defaults = TRAIN_DEFAULTS.get(config, TRAIN_DEFAULTS["small"])
    batch, lr = LM_SHAPES.get(config, (defaults["batch_size"], defaults["lr"]))
    return batch_size or batch, PRESETS[config]["block_size"], lr


def _tokens_per_step(config: str, batch_size: Optional[int]) -> int:
    batch, block, _ = lm_shape(config, batch_size)
    return batch * block


def lm_steps(tokens: int, config: str, batch_size: Optional[int] = None) -> int:
    """Optimizer steps of ``tokens`` at the size's batch × block (the last partial step dropped:
    the size trains on ``steps × batch × block <= tokens`` tokens)."""
    return tokens // _tokens_per_step(config, batch_size)


def size_settings(settings: ScaleSettings, config: str) -> RunSettings:
    """The recipe at one size: its preset, LM batch, learning rate and steps."""
    batch, _, lr = lm_shape(config, settings.batch_size)
    return dataclasses.replace(settings.recipe, config=config, lm_batch_size=batch, lm_lr=lr,
                               lm_steps=lm_steps(settings.tokens, config, settings.batch_size))


def stage_latency(s: RunSettings, env: Environment) -> Callable[[StageContext], dict]:
    """Exp. 4's latency benchmark (hybrid against its baseline, random weights) at the size's
    shapes: ``bench/results.json``."""
    def run(ctx: StageContext) -> dict:
        from steerflow.bench.options import BenchOptions
        from steerflow.bench.suite import run_bench, write_bench

        opts = BenchOptions(config=s.config, only=("latency",), device=device(env),
                            threads=env.threads, malloc="system")
        result = run_bench(opts)
        (ctx.out_dir / PATHS.bench).mkdir(parents=True, exist_ok=True)
        write_bench(result, ctx.out_dir / PATHS.bench / "results.json")
        return result
    return run


def scale_stages(s: RunSettings, env: Environment) -> list[Stage]:
    """The stages of one size: :data:`KEPT_STAGES` of the end-to-end run, then ``latency``."""
    stages = [stage for stage in build_stages(s, env) if stage.name in KEPT_STAGES]
    stages.append(Stage("latency", f"latency of hybrid vs baseline at {s.config} shapes (Exp. 4)",
                        stage_latency(s, env), 30.0, settings=["config"],
                        outputs=[f"{PATHS.bench}/results.json"]))
    return stages


def run_size(out: Path, s: RunSettings, env: Environment) -> tuple[dict[str, dict], StageRunner]:
    """Run (or resume) one size's stages in ``out``; the stages' results and the runner."""
    log = (lambda _m: None) if env.quiet else _log
    runner = StageRunner(out, scale_stages(s, env), dataclasses.asdict(s), log=log)
    return runner.run(), runner


def run_scale(settings: ScaleSettings, out: str | Path, env: Environment = Environment(),
              command: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) every size into ``out/<config>``; return the ``results.json`` dict.

    A finished size is reused as it is; an interrupted one resumes at its first unfinished stage.
    """
    from steerflow.io import machine_info

    out = Path(out)
    start = time.perf_counter()
    data_source(env)  # no data: one clear message before anything trains
    rows = []
    for i, config in enumerate(settings.configs, 1):
        if not env.quiet:
            _log(f"== size {i}/{len(settings.configs)}: {config} ==")
        s = size_settings(settings, config)
        results, runner = run_size(out / config, s, env)
        rows.append(size_row(s, results, runner, out / config))
    return {
        "experiment": "scale",
        "configs": list(settings.configs),
        "tokens": settings.tokens,
        "recipe": dataclasses.asdict(settings.recipe),
        "sizes": rows,
        "paper": PAPER,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine_info(device(env)), "torch_threads": env.threads},
        "command": command or "steerflow.pipeline.scale (Python API)",
        "elapsed_s": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------- one row per size
def size_row(s: RunSettings, results: dict[str, dict], runner: StageRunner,
             out: Path) -> dict[str, Any]:
    """The per-size numbers of ``results.json`` from the stages' results."""
    lm, steering = results["lm"], results["steering"]
    batch, block, _ = lm_shape(s.config, s.lm_batch_size)
    base, hyb = lm["baseline"], lm["hybrid"]
    rates = {u: steering["open_ended"][u]["positive_rate"] for u in ("+1", "-1")}
    invariance, bench = results["invariance"], results["latency"]
    return {
        "config": s.config,
        "params": base["params"],
        "params_hybrid": hyb["params"],
        "tokens": s.lm_steps * batch * block,
        "lm_steps": s.lm_steps, "batch_size": batch, "block_size": block,
        "tokenizer": lm["tokenizer"],
        "gradient_events": sum(m[k] for m in (base, hyb)  # Exp. 1's events, both models
                               for k in ("vanishing_steps", "exploding_steps")),
        "gradient_events_by_model": {name: {k: m[k] for k in ("vanishing_steps",
                                                              "exploding_steps", "skipped_steps")}
                                     for name, m in (("baseline", base), ("hybrid", hyb))},
        "alpha_start": hyb.get("alpha_start"), "alpha_end": hyb.get("alpha_end"),
        "val_loss_baseline": base["val_loss"], "val_loss_hybrid": hyb["val_loss"],
        "val_loss_ratio": _ratio(hyb["val_loss"], base["val_loss"]),
        "own_effect": own_effect(steering),
        "own_effect_by_judge": {j: rates["+1"][j] - rates["-1"][j]
                                for j in rates["+1"] if j in rates["-1"]},
        "positive_rate": rates,
        "displacement_divergence": invariance["displacement_divergence"],
        "relative_divergence": invariance["relative_divergence"],
        "latency_ratio": bench["latency_ratio"],
        "wall_s": sum(runner.elapsed.values()),
        "stage_s": dict(runner.elapsed),
        "reused_stages": list(runner.reused),
        "out": str(out),
    }


def own_effect(steering: dict[str, Any]) -> float:
    """Positive rate at u = +1 minus at u = −1: the classifier judges' mean rate where the
    evaluation has classifier judges, else the mean over every judge."""
    ends = [steering["open_ended"][u] for u in ("+1", "-1")]
    if all(e.get("classifier_positive_rate") is not None for e in ends):
        return ends[0]["classifier_positive_rate"] - ends[1]["classifier_positive_rate"]
    means = [sum(e["positive_rate"].values()) / len(e["positive_rate"]) for e in ends]
    return means[0] - means[1]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
