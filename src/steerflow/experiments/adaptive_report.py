"""The files of the adaptive-depth study: ``results.json``, ``table.md`` (for people) and
``adaptive_depth.png`` (the trade-off curve, the distribution of evaluations per token and depth
by position), from the result of :func:`~steerflow.experiments.adaptive_depth.run_adaptive_depth`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from steerflow.experiments.paper import ADAPTIVE_DEPTH as PAPER
from steerflow.io import format_table, pyplot, save_figure, write_study

#: the files :func:`write_adaptive_depth` writes
FILES = ("results.json", "table.md", "adaptive_depth.png")


def _pct(value: Optional[float], digits: int = 3) -> str:
    return "—" if value is None else f"{100 * value:.{digits}g} %"


def _rates(rates: dict[str, float]) -> str:
    return " / ".join(f"{100 * v:.0f}" for v in rates.values()) or "—"


def _label(row: dict[str, Any]) -> str:
    if "tolerance" in row:
        return f"per-token, rtol {row['tolerance']:g}"
    return row["solver"]


def _main_row(row: dict[str, Any], fixed: bool = False) -> tuple:
    hist = " / ".join(f"{k}: {100 * v:.0f}%" for k, v in row["evals_histogram"].items())
    speeds = (f"{row['tokens_per_s']:,.0f} / {row['ode_tokens_per_s']:,.0f} / "
              f"{row['generate_tokens_per_s'] or float('nan'):,.0f}")
    if fixed:
        return (row["solver"] + " (training grid)", f"{row['evals_per_token']:.3f}", "—", hist,
                f"{row['val_loss']:.5f}", "—", _pct(row["invariance"]["displacement_divergence"]),
                _rates(row["positive_rate"]), "—", speeds, "—")
    return (_label(row), f"{row['evals_per_token']:.3f}", _pct(row["eval_saving"]), hist,
            f"{row['val_loss']:.5f}", f"{100 * row['val_loss_rel_delta']:+.4f} %",
            _pct(row["invariance"]["displacement_divergence"]), _rates(row["positive_rate"]),
            f"{row['steering_delta']:.1f}", speeds, "yes" if row["meets_target"] else "no")


def _spread_point(result: dict[str, Any]) -> dict[str, Any]:
    """The point whose evaluations per token vary most (the most telling breakdown)."""
    return max(result["points"], key=lambda p: p["evals_std"])


def _breakdowns(result: dict[str, Any]) -> list[str]:
    point = _spread_point(result)
    lines = [f"Which tokens take more depth (rtol {point['tolerance']:g}, where the count varies "
             f"most: mean {point['evals_per_token']:.3f}, std {point['evals_std']:.3f}):", ""]
    lines += [format_table(["positions", "evals/token"],
                           [(f"{r['positions'][0]}–{r['positions'][1]}",
                             f"{r['evals_per_token']:.3f}") for r in point["by_position"]]), ""]
    lines += [format_table(["training-split count of the token", "share of tokens", "evals/token"],
                           [(f"{r['train_count'][0]:,}–{r['train_count'][1]:,}", _pct(r["share"]),
                             "—" if r["evals_per_token"] is None else f"{r['evals_per_token']:.3f}")
                            for r in point["by_frequency"]]), ""]
    us = list(point["by_u"] or {})
    lines += [f"Evaluations per token by u on the steered checkpoint ({result['steered']}):", ""]
    lines += [format_table(["rtol", *(f"u = {u}" for u in us)],
                           [(f"{p['tolerance']:g}", *(f"{p['by_u'][u]:.3f}" for u in us))
                            for p in result["points"]]), ""]
    return lines


def format_report(result: dict[str, Any]) -> str:
    """Markdown: every solver side by side, the target, the breakdowns and the paper's words."""
    fixed, targets, m = result["fixed_grid"], result["targets"], result["machine"]
    us = " / ".join(f"u = {u}" for u in fixed["positive_rate"])
    lines = [f"# Adaptive depth at inference — `{result['checkpoint']}`", "",
             f"{result['tokens']:,} validation tokens (WikiText-2) at u = 0; steering on "
             f"`{result['steered']}`: {result['prompts']} neutral prompts × {result['samples']} "
             f"samples × {result['new_tokens']} tokens (top-p 0.9, the same random numbers for "
             f"every solver), SST-2 TF-IDF judge; invariance against {result['reference']}.", "",
             format_table(["solver", "evals/token", "fewer evals", "share of tokens by evals",
                           "val loss", "Δ val loss", "displ. div. vs dopri5",
                           f"positive % ({us})", "Δ steering (points)",
                           "tokens/s forward / ODE / generate", "meets target"],
                          [_main_row(fixed, fixed=True)]
                          + [_main_row(r) for r in result["coarse"] + result["points"]]), ""]
    best = result["best"]
    goal = (f"≥ {100 * targets['eval_saving']:.0f} % fewer field evaluations than the fixed grid "
            f"({result['fixed_grid_evals_per_token']:g}/token), val loss within "
            f"{100 * targets['val_loss_rel']:g} %, steering rates within "
            f"{targets['steering_points']:g} points")
    lines.append(f"Target ({goal}): " + (
        f"**met** at rtol {best['tolerance']:g}: {best['evals_per_token']:.3f} evals/token "
        f"({_pct(best['eval_saving'])} fewer), Δ val loss "
        f"{100 * best['val_loss_rel_delta']:+.4f} %, "
        f"Δ steering {best['steering_delta']:.1f} points." if best else
        "**not met** by any tolerance; the table is the trade-off curve."))
    lines += ["", *_breakdowns(result)]
    lines += [f"Paper 1: {PAPER['statement']}.", "",
              f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
              f"torch threads: {m['torch_threads']}.", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _displacement(row: dict[str, Any]) -> float:
    return 100 * row["invariance"]["displacement_divergence"]


def plot_adaptive_depth(result: dict[str, Any], path: Path) -> Path:
    """Four panels: evaluations against tolerance, the displacement divergence from dopri5
    against evaluations, the share of tokens at each count, and evaluations by position."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    points, fixed = result["points"], result["fixed_grid"]
    tols = [p["tolerance"] for p in points]
    ax = axes[0, 0]
    ax.semilogx(tols, [p["evals_per_token"] for p in points], "o-", label="per-token")
    ax.axhline(fixed["evals_per_token"], color="k", ls="--", lw=1,
               label=f"fixed grid ({fixed['solver']})")
    ax.axhline(fixed["evals_per_token"] * (1 - result["targets"]["eval_saving"]), color="tab:red",
               ls=":", lw=1, label="target (30 % fewer)")
    ax.set(xlabel="rtol", ylabel="field evaluations per token", title="depth against tolerance")
    ax = axes[0, 1]  # the loss can move far less than its 0.2 % band: the table has it
    ax.plot([p["evals_per_token"] for p in points], [_displacement(p) for p in points], "o-",
            label="per-token")
    for row in [fixed] + result["coarse"]:
        ax.plot(row["evals_per_token"], _displacement(row), "s", label=row["solver"])
    ax.set(xlabel="field evaluations per token", ylabel="‖ΔH − ΔH_dopri5‖ / ‖ΔH_dopri5‖ (%)",
           title="distance from the exact flow against depth")
    ax = axes[1, 0]
    counts = sorted({int(k) for p in points for k in p["evals_histogram"]})
    bottom = [0.0] * len(points)
    for count in counts:
        share = [p["evals_histogram"].get(str(count), 0.0) for p in points]
        ax.bar(range(len(points)), share, bottom=bottom, label=f"{count} evals")
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_xticks(range(len(points)), [f"{t:g}" for t in tols], rotation=45)
    ax.set(xlabel="rtol", ylabel="share of tokens", title="evaluations per token")
    ax = axes[1, 1]
    for p in points:
        ax.plot([sum(r["positions"]) / 2 for r in p["by_position"]],
                [r["evals_per_token"] for r in p["by_position"]], "o-",
                label=f"rtol {p['tolerance']:g}")
    ax.set(xlabel="position in the window", ylabel="field evaluations per token",
           title="depth by position")
    for ax in axes.flat:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Adaptive depth at inference — {result['checkpoint']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_adaptive_depth(result: dict[str, Any], out: str | os.PathLike) -> list[str]:
    """Write ``results.json``, ``table.md`` and ``adaptive_depth.png`` into ``out``; return the
    file names."""
    return write_study(out, FILES, result, format_report(result), plot_adaptive_depth)
