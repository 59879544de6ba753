"""Experiment 1 of paper 1 — gradient stability: baseline vs hybrid on the same data and seed.

Both models train with the same :class:`TrainConfig` (same seed, so the same batch at every
step); only ``model`` differs. From each run's ``metrics.jsonl`` and ``summary.json`` we report
the paper's Table 1 quantities and draw its Fig. 1 (loss, total grad norm, ODE grad norm, α), with
the paper's numbers beside ours. Each run lives in ``OUT/<model>/``; re-running the experiment
reuses a finished run and resumes an interrupted one.

:func:`run_gradient_stability` trains and measures; :func:`write_gradient_stability` writes
``results.json``, ``table.md`` and ``fig1.png``. The command line is
``steerflow experiment gradient-stability``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from steerflow.experiments.paper import GRADIENT_STABILITY as PAPER
from steerflow.experiments.paper import VAL_LOSS_TOLERANCE
from steerflow.io import atomic_write_text, machine_info, pyplot, save_figure, write_json
from steerflow.train.config import TrainConfig
from steerflow.train.metrics import METRICS_FILE, mean_std, read_metrics

MODELS = ("baseline", "hybrid")


def _run_is_done(cfg: TrainConfig) -> bool:
    """A finished run with the same settings can be reused as is."""
    summary, saved = cfg.out_dir / "summary.json", cfg.out_dir / "train_config.json"
    if not (summary.is_file() and saved.is_file()):
        return False
    try:
        done = json.loads(summary.read_text()).get("completed") is True
        return done and not cfg.resume_mismatch(TrainConfig.from_json(saved))
    except (ValueError, OSError):
        return False


def train_pair(base: TrainConfig, out: Path) -> dict[str, dict[str, Any]]:
    """Train (or reuse) ``OUT/baseline`` and ``OUT/hybrid``; return each run's summary."""
    from steerflow.train.loop import train

    summaries = {}
    for kind in MODELS:
        run_dir = out / kind
        cfg = base.replace(out=str(run_dir), model=kind, resume=False)
        if _run_is_done(cfg):
            summaries[kind] = json.loads((run_dir / "summary.json").read_text())
            continue
        cfg = cfg.replace(resume=(run_dir / "train_config.json").is_file())
        summaries[kind] = train(cfg).summary()
        if not summaries[kind]["completed"]:
            raise KeyboardInterrupt  # the run saved its state; the experiment stops here
    return summaries


def model_stats(summary: dict[str, Any], metrics_path: Path) -> dict[str, Any]:
    """Table-1 quantities of one run from its summary and per-step metrics."""
    train = read_metrics(metrics_path, "train")
    grad_mean, grad_std = mean_std(r["grad_norm"] for r in train)
    evals = summary.get("evals", {})
    stats: dict[str, Any] = {
        "params": summary["params"],
        "steps": summary["step"],
        "final_loss": summary["final_loss"],
        "val_loss": evals.get("valid", {}).get("loss"),
        "val_ppl": evals.get("valid", {}).get("ppl"),
        "test_loss": evals.get("test", {}).get("loss"),
        "test_ppl": evals.get("test", {}).get("ppl"),
        "test_word_ppl": evals.get("test", {}).get("word_ppl"),
        "grad_norm_mean": grad_mean,
        "grad_norm_std": grad_std,
        "vanishing_steps": summary["vanishing_steps"],
        "exploding_steps": summary["exploding_steps"],
        "skipped_steps": summary["nonfinite_steps"],
        "train_seconds": summary["seconds"],
        "cpu_s_per_step": mean_std(r.get("cpu_s") for r in train)[0],
    }
    if summary.get("alpha_end") is not None:
        ode_mean, ode_std = mean_std(r["ode_grad_norm"] for r in train)
        stats.update(ode_grad_norm_mean=ode_mean, ode_grad_norm_std=ode_std,
                     alpha_start=summary["alpha_start"], alpha_end=summary["alpha_end"])
    return stats


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's expectations, checked: no gradient events, α moved, val loss within 2 %."""
    base, hyb = results["baseline"], results["hybrid"]
    rel = None
    if base["val_loss"] and hyb["val_loss"]:
        rel = hyb["val_loss"] / base["val_loss"] - 1  # > 0: hybrid worse
    return {
        "val_loss_rel_diff": rel,
        "val_loss_within_2pct": rel is not None and rel <= VAL_LOSS_TOLERANCE,
        "no_gradient_events": all(r["vanishing_steps"] == 0 and r["exploding_steps"] == 0
                                  for r in (base, hyb)),
        "alpha_moved": abs(hyb["alpha_end"] - hyb["alpha_start"]) > 1e-3,
    }


def run_gradient_stability(base: TrainConfig, out: str | os.PathLike,
                           command: Optional[str] = None) -> dict[str, Any]:
    """Train (or reuse) both models as ``base`` says; return the content of ``results.json``.

    ``base.model`` and ``base.out`` are ignored: the runs go to ``out/baseline`` and
    ``out/hybrid``. :func:`write_gradient_stability` writes the files.
    """
    import torch

    from steerflow.train.distributed import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = train_pair(base, out)
    stats = {k: model_stats(summaries[k], out / k / METRICS_FILE) for k in MODELS}
    saved = TrainConfig.from_json(out / "hybrid" / "train_config.json")
    machine = {**machine_info(str(resolve_device(base.device))),
               "torch_threads": base.threads or torch.get_num_threads()}  # what the runs used
    return {
        "experiment": "gradient-stability",
        "config": base.config,
        "steps": base.steps,
        "batch_size": base.batch_size,
        "lr": base.lr,
        "seed": base.seed,
        "tokenizer": saved.tokenizer,
        "model_overrides": base.model_overrides,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "command": command or "steerflow.experiments.gradient_stability (Python API)",
        **stats,
        "comparison": compare(stats),
        "paper": PAPER,
    }


def write_gradient_stability(results: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write ``results.json``, ``table.md`` and ``fig1.png`` (the curves are read from the runs'
    ``metrics.jsonl`` in ``out``); return ``out``."""
    out = Path(out)
    write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", format_table(results))
    plot_figure(out, results)
    return out


# ---------------------------------------------------------------------------- table
def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else format(value, spec)
    return str(value)


def _pm(stats: dict[str, Any], key: str) -> str:
    mean, std = stats.get(f"{key}_mean"), stats.get(f"{key}_std")
    return "—" if mean is None else f"{_fmt(mean, '.3f')} ± {_fmt(std, '.3f')}"


def _alpha(stats: dict[str, Any]) -> str:
    if stats.get("alpha_end") is None:
        return "—"
    return f"{stats['alpha_start']:.3f} → {stats['alpha_end']:.3f}"


def format_table(results: dict[str, Any]) -> str:
    """Markdown: ours (both models) beside the paper's Table 1, then the checks."""
    b, h = results["baseline"], results["hybrid"]
    pb, ph = PAPER["baseline"], PAPER["hybrid"]
    rows = [
        ("parameters", _fmt(b["params"]), _fmt(h["params"]), _fmt(pb["params"]), _fmt(ph["params"])),
        ("final loss (mean of last 50 steps)", _fmt(b["final_loss"], ".3f"),
         _fmt(h["final_loss"], ".3f"), _fmt(pb["final_loss"], ".3f"), _fmt(ph["final_loss"], ".3f")),
        ("validation loss", _fmt(b["val_loss"], ".3f"), _fmt(h["val_loss"], ".3f"), "—", "—"),
        ("validation perplexity", _fmt(b["val_ppl"], ".1f"), _fmt(h["val_ppl"], ".1f"), "—", "—"),
        ("test perplexity (token / word)", f"{_fmt(b['test_ppl'], '.1f')} / {_fmt(b['test_word_ppl'], '.1f')}",
         f"{_fmt(h['test_ppl'], '.1f')} / {_fmt(h['test_word_ppl'], '.1f')}", "—", "—"),
        ("grad norm (mean ± std)", _pm(b, "grad_norm"), _pm(h, "grad_norm"),
         _pm(pb, "grad_norm"), _pm(ph, "grad_norm")),
        ("ODE-block grad norm", "—", _pm(h, "ode_grad_norm"), "—", _pm(ph, "ode_grad_norm")),
        ("α (start → end)", "—", _alpha(h), "—", _alpha(ph)),
        ("vanishing / exploding steps", f"{b['vanishing_steps']} / {b['exploding_steps']}",
         f"{h['vanishing_steps']} / {h['exploding_steps']}", "0 / 0", "0 / 0"),
        ("wall time incl. evaluation (s)", _fmt(b["train_seconds"], ".0f"),
         _fmt(h["train_seconds"], ".0f"), "—", "—"),
        ("CPU seconds per training step", _fmt(b["cpu_s_per_step"], ".2f"),
         _fmt(h["cpu_s_per_step"], ".2f"), "—", "—"),
    ]
    c = results["comparison"]
    m = results["machine"]
    lines = [
        f"# Gradient stability — `{results['config']}` config, {results['steps']} steps",
        "",
        f"Ours: WikiText-2, tokenizer `{results['tokenizer']}`, batch {results['batch_size']}, "
        f"lr {results['lr']:g}, seed {results['seed']}. Paper: `paper` config, "
        f"{PAPER['steps']} steps, GPT-2 BPE.",
        "",
        "| | baseline (ours) | hybrid (ours) | baseline (paper) | hybrid (paper) |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"- hybrid vs baseline validation loss: {_fmt(_pct(c['val_loss_rel_diff']))} "
        f"(within 2 %: {_fmt(c['val_loss_within_2pct'])})",
        f"- no vanishing/exploding steps: {_fmt(c['no_gradient_events'])}; "
        f"α moved: {_fmt(c['alpha_moved'])}",
        "",
        f"Measured {results['date']} on {m['cpu']} ({m['cores']} cores"
        f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}), torch {m['torch']}, "
        f"torch threads: {m['torch_threads']}.",
        f"Command: `{results['command']}`",
        "",
    ]
    return "\n".join(lines)


def _pct(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value * 100:+.2f} %"


# ---------------------------------------------------------------------------- figure
def plot_figure(out: Path, results: dict[str, Any]) -> Path:
    """``fig1.png``: training loss, total grad norm, ODE grad norm and α against the step."""
    plt = pyplot()
    curves = {k: read_metrics(out / k / METRICS_FILE, "train") for k in MODELS}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colors = {"baseline": "tab:blue", "hybrid": "tab:orange"}
    for kind, records in curves.items():
        steps = [r["step"] for r in records]
        axes[0, 0].plot(steps, [_num(r["loss"]) for r in records], color=colors[kind], label=kind)
        axes[0, 1].plot(steps, [_num(r["grad_norm"]) for r in records], color=colors[kind],
                        label=kind, lw=0.8)
    hybrid = curves["hybrid"]
    hsteps = [r["step"] for r in hybrid]
    axes[1, 0].plot(hsteps, [_num(r["ode_grad_norm"]) for r in hybrid], color=colors["hybrid"],
                    lw=0.8, label="hybrid (ours)")
    ph = PAPER["hybrid"]
    axes[1, 0].axhline(ph["ode_grad_norm_mean"], color="k", ls="--", lw=1,
                       label=f"paper mean {ph['ode_grad_norm_mean']}±{ph['ode_grad_norm_std']}")
    alpha0 = results["hybrid"].get("alpha_start")
    axes[1, 1].plot([0] + hsteps, [_num(alpha0)] + [_num(r["alpha"]) for r in hybrid],
                    color=colors["hybrid"], label="hybrid (ours)")
    axes[1, 1].axhline(ph["alpha_start"], color="k", ls=":", lw=1,
                       label=f"paper α at step 0 ({ph['alpha_start']})")
    axes[1, 1].axhline(ph["alpha_end"], color="k", ls="--", lw=1,
                       label=f"paper α at step {PAPER['steps']} ({ph['alpha_end']})")
    titles = ("training loss", "total grad norm (before clipping)", "ODE-block grad norm", "α")
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 1].set_yscale("log")
    axes[1, 0].set_yscale("log")
    fig.suptitle(f"Gradient stability — {results['config']} config, {results['steps']} steps "
                 f"(paper: Table 1 / Fig. 1)")
    fig.tight_layout()
    path = out / "fig1.png"
    save_figure(fig, path, dpi=110)
    return path


def _num(value: Any) -> float:
    """A metric value as a float (NaN for the strings JSON uses for non-finite numbers)."""
    return float(value) if isinstance(value, (int, float)) else math.nan
