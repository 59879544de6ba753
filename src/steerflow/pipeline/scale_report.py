"""The files of the scale study: ``results.json``, ``results.md`` (one row per size, the paper's
numbers at its one size beside them) and ``scale.png`` (each metric against parameter count, log
x), from the result of :func:`~steerflow.pipeline.scale.run_scale`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from steerflow.experiments.paper import INVARIANCE_THRESHOLD, VAL_LOSS_TOLERANCE
from steerflow.io import format_table, measured_footer, pyplot, save_figure, write_study

#: the files :func:`write_scale` writes
FILES = ("results.json", "results.md", "scale.png")

#: (key of a size's row, axis label) for each panel of the figure
METRICS = (
    ("gradient_events", "gradient events (vanishing + exploding, both models)"),
    ("alpha_end", "α at the end of pretraining"),
    ("val_loss_ratio", "validation loss, hybrid ÷ baseline"),
    ("own_effect", "steering own effect (positive rate u=+1 − u=−1)"),
    ("displacement_divergence", "displacement divergence vs dopri5"),
    ("latency_ratio", "latency, hybrid ÷ baseline"),
    ("wall_s", "wall time of the size (min)"),
)


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.3g} %"


def _row(r: dict[str, Any]) -> tuple:
    judges = ", ".join(f"{j} {_num(v, '+.2f')}" for j, v in r["own_effect_by_judge"].items())
    return (f"`{r['config']}`", f"{r['params'] / 1e6:.2f} M", f"{r['tokens']:,}",
            str(r["gradient_events"]),
            f"{_num(r['alpha_start'], '.4g')} → {_num(r['alpha_end'], '.4g')}", _num(r["val_loss_ratio"], ".4f"),
            f"{_num(r['own_effect'], '+.2f')} ({judges})", _pct(r["displacement_divergence"]),
            _num(r["latency_ratio"], ".3f"), f"{r['wall_s'] / 60:.1f}")


def _paper_row(p: dict[str, Any]) -> tuple:
    return (f"paper 1 (`{p['config']}`)", f"{p['params'] / 1e6:.2f} M", "≈ 512,000 (500 steps)",
            str(p["gradient_events"]), f"{p['alpha_start']:g} → {p['alpha_end']:g}",
            f"{p['final_loss_ratio']:.4f} (final train loss)", "not reported",
            f"not reported (relative: {_pct(p['relative_divergence'])})",
            f"{p['latency_ratio']:g}", "—")


def format_report(result: dict[str, Any]) -> str:
    """Markdown: one row per size, the paper's row, the recipe and the machine."""
    r0 = result["recipe"]
    headers = ["size", "params (baseline)", "tokens", "gradient events", "α start → end",
               "val loss hybrid ÷ baseline", "own effect (judges)", "displacement divergence",
               "latency ratio", "wall (min)"]
    lines = [
        f"# Scale — {', '.join(result['configs'])}: a budget of {result['tokens']:,} "
        "pretraining tokens per model", "",
        "Per size: a discrete baseline and a hybrid pretrained on the same tokens (Exp. 1), the "
        f"steering recipe ({r0['expert_steps']} steps of DExperts' expert and anti-expert, "
        f"{r0['distill_steps']} steps distilling their contrast at α = {r0['distill_gamma']:g} "
        "into one pass at u), the steering evaluation "
        f"({r0['eval_prompts']} neutral prompts × {r0['eval_samples']} samples × "
        f"{r0['eval_new_tokens']} tokens; own effect = positive rate at u = +1 minus u = −1, "
        "mean of the classifier judges), solver invariance against dopri5 (Exp. 3) and the "
        "latency of the hybrid against its baseline at the size's shapes (Exp. 4).", "",
        format_table(headers, [_row(r) for r in result["sizes"]]
                     + [_paper_row(result["paper"])]), "",
        f"Targets: no gradient events; validation loss within {100 * VAL_LOSS_TOLERANCE:g} % of "
        f"the baseline's; divergence below {100 * INVARIANCE_THRESHOLD:g} % (paper 1's bound for "
        "a true ODE).", "",
        f"{result['paper']['statement']}.", "",
        *measured_footer(result, "reused stages"),
    ]
    return "\n".join(lines)


def plot_scale(result: dict[str, Any], path: Path) -> Path:
    """One panel per metric of :data:`METRICS` against the baseline's parameter count (log x),
    the paper's value at its size where it reports one."""
    plt = pyplot()
    sizes, paper = result["sizes"], result["paper"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    params = [r["params"] for r in sizes]
    xlim = (min(params) / 2, max(params + [paper["params"]]) * 2)  # every panel: the same x
    for ax, (key, label) in zip(axes.flat, METRICS):
        scale = 1 / 60 if key == "wall_s" else 1.0
        values = [math.nan if r[key] is None else r[key] * scale for r in sizes]
        ax.plot(params, values, "o-", label="steerflow")
        for x, y, r in zip(params, values, sizes):
            ax.annotate(r["config"], (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if key == "displacement_divergence":
            ax.plot(params, [r["relative_divergence"] for r in sizes], "s--", ms=4,
                    label="relative divergence")
            ax.axhline(INVARIANCE_THRESHOLD, color="tab:red", ls=":", lw=1, label="1 % bound")
        if key == "val_loss_ratio":
            ax.axhline(1 + VAL_LOSS_TOLERANCE, color="tab:red", ls=":", lw=1, label="+2 % bound")
        paper_key = {"displacement_divergence": "relative_divergence"}.get(key, key)
        if isinstance(paper.get(paper_key), (int, float)):
            ax.plot([paper["params"]], [paper[paper_key]], "k*", ms=10,
                    label=f"paper 1 ({paper_key.replace('_', ' ')})")
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel="parameters (baseline)", title=label)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes.flat[-1].axis("off")
    fig.suptitle(f"Scale — a budget of {result['tokens']:,} pretraining tokens per model")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_scale(result: dict[str, Any], out: str | os.PathLike) -> list[str]:
    """Write ``results.json``, ``results.md`` and ``scale.png`` into ``out``; return the names."""
    return write_study(out, FILES, result, format_report(result), plot_scale)
