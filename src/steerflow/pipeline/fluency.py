"""The fluency study: which base gives the most fluency per CPU-minute of pretraining?

Every steering method is capped by the fluency of the base it steers (the steering issue's
finding 4), and the CPU budget of ``steerflow demo`` is fixed. This study trains candidate
hybrids — the ``small`` preset and one change of width, depth, context, tokenizer, learning rate
or training text at a time — each for the same *CPU time*, not the same steps, and compares them
by the validation perplexity they reach.

Per candidate, in ``OUT/<candidate>/``, one resumable stage (:class:`~steerflow.pipeline.stages
.StageRunner`):

1. ``calibrate/`` — a few training steps; the median CPU seconds of a step after the first two
   (``time.process_time``: the CPU time of every thread, so it does not depend on how busy the
   machine's other cores are);
2. ``m<minutes>/`` per budget — pretraining for ``steps = budget / (CPU s per step)`` steps (with
   the candidate's cosine schedule ending there), then the loss on the *whole* WikiText-2
   validation split.

Then (unless asked not to) a ``combined`` candidate: every single change that beat the preset at
the largest budget, together (:func:`combined_candidate`) — whether the gains add up.

Candidates have different tokenizers, so the headline number is the **word-level perplexity**
``exp(total NLL / words)`` of the validation split (WikiText-2's standard measure; whitespace
words of the split, the same for every tokenizer), beside the measured CPU-minutes of the run
(the sum of its steps' CPU seconds: the budget is met only as well as the calibration predicts,
so the table shows what was spent).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from steerflow.errors import ConfigError
from steerflow.pipeline.environment import Environment, check_names, device, train_config
from steerflow.pipeline.stages import Stage, StageContext, StageRunner


@dataclass(frozen=True)
class Candidate:
    """One base to pretrain: ``small`` with some ModelConfig and TrainConfig fields changed.

    Args:
        name: file-system-safe identifier (the candidate's folder).
        what: the change, for people.
        model: ModelConfig overrides (``TrainConfig.model_overrides``).
        train: TrainConfig fields (``tokenizer``, ``block_size``, ``batch_size``, ``lr``, ...).
    """

    name: str
    what: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


#: The search: ``small`` (6 layers, d = 128, 4 heads, context 64, ``bpe:4096``, 32 sequences of
#: 64 tokens per step, lr 3e-3) and one axis changed at a time. Changes of context keep the
#: tokens per step (2,048); SST-2 text replaces a quarter of the rows by SST-2 training sentences
#: (unlabelled: ``lm_u_dropout = 1`` sets their u to 0), the text the steering evaluation's
#: continuations look like.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("small", "the preset (6 × 128, context 64, bpe:4096, batch 32, lr 3e-3)"),
    Candidate("wide", "d = 192 (6 heads)", model=dict(n_embd=192, n_head=6, field_hidden=192)),
    Candidate("narrow", "d = 96 (3 heads)", model=dict(n_embd=96, n_head=3, field_hidden=96)),
    Candidate("shallow", "4 layers", model=dict(n_layer=4)),
    Candidate("deep", "8 layers", model=dict(n_layer=8)),
    Candidate("context128", "context 128, 16 sequences per step",
              train=dict(block_size=128, batch_size=16)),
    Candidate("batch16", "16 sequences per step (twice the steps)", train=dict(batch_size=16)),
    Candidate("bpe2048", "bpe:2048 tokenizer", train=dict(tokenizer="bpe:2048")),
    Candidate("bpe8192", "bpe:8192 tokenizer", train=dict(tokenizer="bpe:8192")),
    Candidate("lr6e-3", "learning rate 6e-3", train=dict(lr=6e-3)),
    Candidate("sst2-text", "a quarter of the rows SST-2 sentences",
              train=dict(lm_u="conditional", lm_u_share=0.25, lm_u_dropout=1.0)),
)
CANDIDATE_NAMES = tuple(c.name for c in CANDIDATES)

#: The budgets (CPU-minutes of pretraining per candidate): about the demo's hybrid LM (2.4) and
#: twice it.
DEFAULT_MINUTES = (2.5, 5.0)


@dataclass(frozen=True)
class FluencySettings:
    """What the study runs.

    Args:
        candidates: names from :data:`CANDIDATES`, the reference first (no repeats).
        minutes: CPU-minute budgets of pretraining per candidate.
        calibration_steps: training steps timed to set each candidate's step count (>= 3).
        warmup_fraction: the share of a run's steps spent warming up the learning rate.
        seed: the training seed of every candidate (same data order).
        config: the preset every candidate changes.
    """

    candidates: tuple[str, ...] = CANDIDATE_NAMES
    minutes: tuple[float, ...] = DEFAULT_MINUTES
    calibration_steps: int = 6
    warmup_fraction: float = 0.1
    seed: int = 1337
    config: str = "small"

    def __post_init__(self) -> None:
        check_names(self.candidates, CANDIDATE_NAMES, "--candidates", "candidate",
                    f"name at least one of {', '.join(CANDIDATE_NAMES)}")
        if not self.minutes or any(not (isinstance(m, (int, float)) and math.isfinite(m)
                                        and m > 0) for m in self.minutes):
            raise ConfigError(f"--minutes must be positive numbers of CPU-minutes, got "
                              f"{list(self.minutes)}")
        if len(set(self.minutes)) != len(self.minutes):
            raise ConfigError(f"--minutes repeats a budget: {list(self.minutes)}")
        if self.calibration_steps < 3:
            raise ConfigError(f"calibration_steps must be >= 3, got {self.calibration_steps}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


def candidate(name: str) -> Candidate:
    """The candidate called ``name``."""
    return {c.name: c for c in CANDIDATES}[name]


def steps_for(minutes: float, cpu_s_per_step: float) -> int:
    """Training steps that spend ``minutes`` CPU-minutes at ``cpu_s_per_step`` (at least 1)."""
    return max(1, int(minutes * 60 / cpu_s_per_step))


def budget_folder(minutes: float) -> str:
    """The run folder of one budget, e.g. ``m2.5``."""
    return f"m{minutes:g}"


# ----------------------------------------------------------------------------- one candidate
def candidate_config(s: FluencySettings, cand: Candidate, env: Environment, out: Path,
                     steps: int, eval_batches: int):
    """The TrainConfig of one run of ``cand``: the hybrid, ``steps`` steps into ``out``, the
    validation loss at the end only, over at most ``eval_batches`` batches; an interrupted run
    resumes (a finished one is reused as it is)."""
    return train_config(s, env, out=str(out), task="lm", model="hybrid", steps=steps,
                        resume=(out / "train_config.json").is_file(),
                        warmup_steps=max(1, int(s.warmup_fraction * steps)),
                        model_overrides=dict(cand.model), eval_interval=steps,
                        eval_batches=eval_batches, test_batches=1, save_every=steps,
                        keep_checkpoints=1, **cand.train)


def cpu_seconds(run_dir: Path) -> list[float]:
    """The CPU seconds of each training step of a run, in order (``metrics.jsonl``)."""
    from steerflow.train.metrics import read_metrics

    return [float(r["cpu_s"]) for r in read_metrics(run_dir / "metrics.jsonl", "train")]


def calibrate(s: FluencySettings, cand: Candidate, env: Environment, out: Path) -> float:
    """Median CPU seconds per training step of ``cand`` (its first two steps are warm-up)."""
    from steerflow.pipeline.environment import train_to_completion

    run_dir = out / "calibrate"
    train_to_completion(candidate_config(s, cand, env, run_dir, s.calibration_steps, 1))
    return statistics.median(cpu_seconds(run_dir)[2:])


#: enough validation batches for the whole split at every candidate's shape
WHOLE_SPLIT = 10**6


def stage_candidate(s: FluencySettings, cand: Candidate, env: Environment
                    ) -> Callable[[StageContext], dict]:
    """Calibrate ``cand``, then pretrain and evaluate it at every budget."""
    def run(ctx: StageContext) -> dict:
        from steerflow.pipeline.environment import train_to_completion

        out = ctx.out_dir / cand.name
        per_step = calibrate(s, cand, env, out)
        points = []
        for minutes in s.minutes:
            run_dir = out / budget_folder(minutes)
            steps = steps_for(minutes, per_step)
            summary = train_to_completion(candidate_config(s, cand, env, run_dir, steps,
                                                           WHOLE_SPLIT))
            valid = summary["evals"]["valid"]
            spent = cpu_seconds(run_dir)
            points.append({"budget_minutes": minutes, "steps": steps,
                           "cpu_minutes": sum(spent) / 60, "wall_s": summary["seconds"],
                           "val_loss": valid["loss"], "val_ppl": valid["ppl"],
                           "val_word_ppl": valid.get("word_ppl"), "val_tokens": valid["tokens"],
                           "alpha_end": summary["alpha_end"], "params": summary["params"]})
        return {"calibration_cpu_s_per_step": per_step, "points": points}
    return run


def fluency_stages(s: FluencySettings, env: Environment, cands: list[Candidate]) -> list[Stage]:
    """One stage per candidate, in order."""
    shared = list(dataclasses.asdict(s))
    return [Stage(c.name, f"{c.name}: {c.what}", stage_candidate(s, c, env),
                  estimate_s=60.0 * sum(s.minutes) / max(1, env.threads or 2) + 60.0,
                  outputs=[f"{c.name}/{budget_folder(m)}/summary.json" for m in s.minutes],
                  settings=shared + [f"candidate:{c.name}"])
            for c in cands]


def stage_settings(s: FluencySettings, cands: list[Candidate]) -> dict[str, Any]:
    """What the stages' fingerprints cover: the settings, and each candidate's definition (a
    changed candidate runs again)."""
    return {**dataclasses.asdict(s), **{f"candidate:{c.name}": dataclasses.asdict(c) for c in cands}}


#: the name of the candidate that combines the single changes that helped
COMBINED = "combined"


def combined_candidate(rows: list[dict[str, Any]]) -> Optional[Candidate]:
    """The changes that beat the reference (the first row) at the largest budget, together: the
    best first, each taken whole and only if it sets nothing an earlier one set (d = 192 and
    d = 96 cannot both apply). None when fewer than two changes combine."""
    def last(row: dict[str, Any]) -> float:
        return _word_ppl(row["points"][-1])

    reference, parts = rows[0], []
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for row in sorted(rows[1:], key=last):
        clash = set(row["model"]) & set(model) or set(row["train"]) & set(train)
        if last(row) < last(reference) and not clash:
            parts.append(row["name"])
            model.update(row["model"])
            train.update(row["train"])
    if len(parts) < 2:
        return None
    return Candidate(COMBINED, " + ".join(parts), model=model, train=train)


# ----------------------------------------------------------------------------- the study
def run_fluency(settings: FluencySettings, out: str | Path, env: Environment = Environment(),
                command: Optional[str] = None, combine: bool = True) -> dict[str, Any]:
    """Run (or resume) every candidate into ``out/<candidate>``, then (with ``combine``) the
    candidate of :func:`combined_candidate`; return the ``results.json`` dict.

    A finished candidate is reused; an interrupted one resumes its unfinished run.
    """
    from steerflow.data import resolve_data_source
    from steerflow.io import machine_info

    out = Path(out)
    start = time.perf_counter()
    resolve_data_source(env.data_dir, require=required_data(settings))  # one clear message first
    log = (lambda _m: None) if env.quiet else _log
    cands = [candidate(name) for name in settings.candidates]
    rows, reused = _run_candidates(settings, env, out, cands, log)
    combo = combined_candidate(rows) if combine else None
    if combo is not None:
        more, more_reused = _run_candidates(settings, env, out, [combo], log)
        rows, reused = rows + more, reused + more_reused
    return {
        "experiment": "fluency",
        "config": settings.config,
        "minutes": list(settings.minutes),
        "candidates": rows,
        "best": best_by_budget(rows, settings.minutes),
        "reused": reused,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine_info(device(env)), "torch_threads": env.threads},
        "command": command or "steerflow.pipeline.fluency (Python API)",
        "elapsed_s": time.perf_counter() - start,
    }


def _run_candidates(s: FluencySettings, env: Environment, out: Path, cands: list[Candidate],
                    log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[str]]:
    """Run (or reuse) ``cands``; their rows and the names of those reused."""
    runner = StageRunner(out, fluency_stages(s, env, cands), stage_settings(s, cands), log=log)
    results = runner.run()
    return [candidate_row(c, results[c.name]) for c in cands], list(runner.reused)


def required_data(s: FluencySettings) -> tuple[str, ...]:
    """The datasets the candidates read: WikiText-2, and SST-2 where a candidate trains on it."""
    labelled = any(candidate(n).train.get("lm_u") == "conditional" for n in s.candidates)
    return ("wikitext-2", "sst2") if labelled else ("wikitext-2",)


def candidate_row(cand: Candidate, result: dict[str, Any]) -> dict[str, Any]:
    """A candidate's row of ``results.json``: what it changes and its points."""
    points = result["points"]
    return {"name": cand.name, "what": cand.what, "model": cand.model, "train": cand.train,
            "params": points[0]["params"],
            "cpu_s_per_step": result["calibration_cpu_s_per_step"], "points": points}


def best_by_budget(rows: list[dict[str, Any]], minutes: tuple[float, ...]) -> dict[str, Any]:
    """Per budget (``"2.5"``): the candidate of lowest validation word perplexity and its ratio
    to the first candidate's (the reference)."""
    best = {}
    for i, m in enumerate(minutes):
        ranked = sorted(rows, key=lambda r: _word_ppl(r["points"][i]))
        reference = _word_ppl(rows[0]["points"][i])
        top = ranked[0]
        best[f"{m:g}"] = {"candidate": top["name"],
                          "val_word_ppl": _word_ppl(top["points"][i]),
                          "ratio_to_reference": _word_ppl(top["points"][i]) / reference,
                          "ranking": [r["name"] for r in ranked]}
    return best


def _word_ppl(point: dict[str, Any]) -> float:
    value = point.get("val_word_ppl")
    return math.inf if value is None else float(value)


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
