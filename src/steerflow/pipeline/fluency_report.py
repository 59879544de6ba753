"""The files of the fluency study: ``results.json``, ``results.md`` (one row per candidate, a
column per budget) and ``fluency.png`` (validation word perplexity against measured CPU-minutes,
one line per candidate), from the result of :func:`~steerflow.pipeline.fluency.run_fluency`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from steerflow.io import format_table, measured_footer, pyplot, save_figure, write_study

#: the files :func:`write_fluency` writes
FILES = ("results.json", "results.md", "fluency.png")


def _ppl(value: Any) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _row(r: dict[str, Any], reference: dict[str, Any]) -> tuple:
    cells = [f"`{r['name']}`", r["what"], f"{r['params'] / 1e6:.2f} M",
             f"{r['cpu_s_per_step']:.2f}"]
    for p, ref in zip(r["points"], reference["points"]):
        ratio = (p["val_word_ppl"] / ref["val_word_ppl"]
                 if p.get("val_word_ppl") and ref.get("val_word_ppl") else math.nan)
        cells.append(f"{_ppl(p['val_word_ppl'])} ({ratio:.2f} ×; {p['steps']} steps, "
                     f"{p['cpu_minutes']:.2f} CPU-min; token ppl {_ppl(p['val_ppl'])})")
    return tuple(cells)


def format_report(result: dict[str, Any]) -> str:
    """Markdown: one row per candidate and budget column, the best per budget, the machine."""
    rows = result["candidates"]
    headers = ["candidate", "change from the preset", "params", "CPU s / step"] + [
        f"{b:g} CPU-min: word ppl (÷ {rows[0]['name']})" for b in result["minutes"]]
    best = [f"- {b} CPU-minutes: **`{v['candidate']}`**, word perplexity {v['val_word_ppl']:.1f} "
            f"({v['ratio_to_reference']:.3f} × `{rows[0]['name']}`); ranking "
            f"{' < '.join(v['ranking'])}" for b, v in result["best"].items()]
    lines = [
        f"# Fluency per CPU-minute — hybrids of `{result['config']}` and one change each", "",
        "Each candidate pretrains a hybrid on WikiText-2 for the same CPU time (the steps its "
        "calibration says the budget buys; cosine schedule to that step), then is scored on the "
        "whole WikiText-2 validation split. Word perplexity = exp(total NLL / whitespace words), "
        "comparable across tokenizers; CPU-minutes are the run's measured CPU time "
        "(all threads).", "",
        format_table(headers, [_row(r, rows[0]) for r in rows]), "",
        "Best per budget:", "", *best, "",
        *measured_footer(result, "reused candidates"),
    ]
    return "\n".join(lines)


def plot_fluency(result: dict[str, Any], path: Path) -> Path:
    """Validation word perplexity against measured CPU-minutes, one line per candidate (the
    reference bold and black), the legend beside the axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours: one per candidate
    for i, r in enumerate(result["candidates"]):
        xs = [p["cpu_minutes"] for p in r["points"]]
        ys = [p["val_word_ppl"] if p.get("val_word_ppl") else math.nan for p in r["points"]]
        # tab20 holds 10 pairs (dark, light): the dark ones first, then the light ones
        style = (dict(color="black", lw=2.5) if i == 0
                 else dict(color=colors[(2 * i + (2 * i) // 20) % 20]))
        ax.plot(xs, ys, "o-", label=f"{r['name']}: {r['what']}", **style)
    ax.set_yscale("log")
    ax.set(xlabel="CPU-minutes of pretraining (measured)",
           ylabel="WikiText-2 validation word perplexity",
           title=f"Fluency per CPU-minute ({result['config']} and one change each)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_fluency(result: dict[str, Any], out: str | os.PathLike) -> list[str]:
    """Write ``results.json``, ``results.md`` and ``fluency.png`` into ``out``; return the
    names."""
    return write_study(out, FILES, result, format_report(result), plot_fluency)
