"""The files of the disentanglement study: ``results.json``, ``results.md`` (for people) and
``disentangle.png`` (heat maps of the grid), from the result of
:func:`~steerflow.pipeline.disentangle.run_disentangle`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

from steerflow.io import format_table, pyplot, save_figure, write_study

#: the files :func:`write_disentangle` writes
FILES = ("results.json", "results.md", "disentangle.png")


def _num(value: Optional[float], digits: int = 2, signed: bool = True) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(ci: Optional[Sequence[float]]) -> str:
    return "—" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _met(target: Optional[dict]) -> str:
    return "—" if target is None else ("**met**" if target["met"] else "not met")


def grid_table(cells: dict[str, dict], axes: Sequence[str]) -> str:
    """One row per cell: u, each attribute's rate (with its interval) and the perplexity."""
    rows = [(f"({', '.join(f'{v:+g}' for v in c['u'])})",
             *(f"{c['rates'][a]:.2f} {_ci(c['rate_ci'][a])}" for a in axes),
             _num(c["perplexity"], 1, signed=False)) for c in cells.values()]
    return format_table([f"u = ({', '.join(axes)})", *(f"{a} rate" for a in axes),
                         "perplexity (base LM)"], rows)


def effects_table(comparison: dict[str, dict], axes: Sequence[str]) -> str:
    """Own effect and cross-talk (with intervals) of every method side by side."""
    names = {"joint": "two-axis ODE (joint)", "single_axis": "two single-axis ODE models",
             "actadd_sum": "ActAdd, two vectors summed"}
    rows = []
    for key, label in names.items():
        found = comparison[key]
        own = " / ".join(_num(found["own_effect"].get(a)) for a in axes)
        cross = " / ".join(f"{_num(v)} {_ci(found['cross_talk_ci'].get(k))}"
                           for k, v in found["cross_talk"].items())
        rows.append((label, own, cross))
    return format_table(["method", f"own effect ({' / '.join(axes)})",
                         f"cross-talk ({' / '.join(f'{a}->{b}' for a in axes for b in axes if a != b)})"],
                        rows)


def _offset_lines(result: dict[str, Any]) -> list[str]:
    """What each judge reads into human text at the other attribute's poles (the cross-talk a
    model shows that moves its text no further than human text differs between the poles)."""
    if "judge_offset" not in result:
        return []
    parts = ", ".join(f"{k} {_num(v)} {_ci(result['judge_offset_ci'][k])}"
                      for k, v in result["judge_offset"].items())
    return [f"Judge offsets on held-out human text (judge B's rate at A's +1 pole minus at its "
            f"−1 pole; sentiment: positive vs negative SST-2 dev reviews, register: SST-2 dev "
            f"reviews half positive, half negative, vs WikiText-2 valid; windows of 6–20 "
            f"words): {parts}. A model whose axis A moved B no further than human text does "
            f"would show exactly this cross-talk.", ""]


def format_report(result: dict[str, Any]) -> str:
    """Markdown: the targets, the grid, the comparison, the judges and the paper's words."""
    axes, targets, m = result["axes"], result["targets"], result["machine"]
    acc = ", ".join(f"{a} {result['axis_judge_accuracy'][a]:.3f}" for a in axes)
    tv = result["target_values"]
    corner = targets.get("corner_ppl")
    lines = [f"# Disentangled control — {len(axes)} axes: {', '.join(axes)}", "",
             f"{result['prompts']} neutral WikiText-2 prompts × {result['samples']} samples × "
             f"{result['new_tokens']} tokens (top-p 0.9, the same random numbers in every cell); "
             f"held-out judge accuracy: {acc}.", "",
             format_table(["target", "measured", "met"], [
                 (f"own effect ≥ {tv['own_effect']:g}",
                  ", ".join(f"{a} {_num(v)}" for a, v in result["own_effect"].items()),
                  _met(targets["own_effect"])),
                 (f"abs(cross-talk) and its 95 % interval ≤ {tv['cross_talk']:g}",
                  ", ".join(f"{k} {_num(v)} {_ci(result['cross_talk_ci'][k])}"
                            for k, v in result["cross_talk"].items()), _met(targets["cross_talk"])),
                 *([] if "cross_talk_beyond_judge" not in targets else [(
                     "the same after each judge's offset on human text (below)",
                     ", ".join(f"{k} {_num(v)} {_ci(result['cross_talk_beyond_judge_ci'][k])}"
                               for k, v in result["cross_talk_beyond_judge"].items()),
                     _met(targets["cross_talk_beyond_judge"]))]),
                 (f"corner perplexity ≤ {tv['corner_ppl_ratio']:g} × centre",
                  "—" if corner is None else ", ".join(f"({k}) {v:.2f}×"
                                                        for k, v in corner["value"].items()),
                  _met(corner))]), "",
             *_offset_lines(result),
             "The joint model on the grid:", "", grid_table(result["cells"], axes), "",
             "Against one model per attribute and against summed ActAdd vectors "
             f"(coefficient {result['actadd']['coef']:g} per unit of u):", "",
             effects_table(result["comparison"], axes), "",
             "ActAdd on the grid:", "", grid_table(result["actadd"]["cells"], axes), "",
             f"Paper 1: {result['paper']['statement']}.", "",
             f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
             f"torch threads: {m['torch_threads']}; {result['seconds'] / 60:.1f} min "
             f"({', '.join(result['reused']) or 'no'} stages reused).",
             f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _heat(ax, cells: dict[str, dict], axes: Sequence[str], value, title: str, vmin=None,
          vmax=None, fmt: str = "{:.2f}", cmap: str = "RdBu_r"):
    """One 3 × 3 heat map: u_0 down the rows, u_1 across the columns."""
    values = sorted({c["u"][0] for c in cells.values()})
    grid = [[next(value(c) for c in cells.values() if c["u"] == [r, col]) for col in values]
            for r in values]
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "—" if v is None else fmt.format(v), ha="center", va="center",
                    fontsize=9)
    ticks = [f"{v:+g}" for v in values]
    ax.set_xticks(range(len(values)), ticks)
    ax.set_yticks(range(len(values)), ticks)
    ax.set(xlabel=f"u_{axes[1]}", ylabel=f"u_{axes[0]}", title=title)
    return image


def plot_disentangle(result: dict[str, Any], path: Path) -> Path:
    """Heat maps of the grid: each attribute's rate and the perplexity, for the joint model
    (top row) and for summed ActAdd (bottom row)."""
    plt = pyplot()
    axes = result["axes"]
    fig, panels = plt.subplots(2, len(axes) + 1, figsize=(4.2 * (len(axes) + 1), 7.5))
    for row, (name, cells) in enumerate((("two-axis ODE", result["cells"]),
                                         ("ActAdd sum", result["actadd"]["cells"]))):
        for col, attribute in enumerate(axes):
            image = _heat(panels[row, col], cells, axes, lambda c, a=attribute: c["rates"][a],
                          f"{name}: {attribute} rate", 0.0, 1.0)
            fig.colorbar(image, ax=panels[row, col], fraction=0.046)
        image = _heat(panels[row, -1], cells, axes, lambda c: c["perplexity"],
                      f"{name}: perplexity (base LM)", fmt="{:.1f}", cmap="viridis")
        fig.colorbar(image, ax=panels[row, -1], fraction=0.046)
    fig.suptitle(f"Disentangled control: u = ({', '.join(axes)})")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_disentangle(result: dict[str, Any], out: str | os.PathLike) -> list[str]:
    """Write ``results.json``, ``results.md`` and ``disentangle.png`` into ``out``; return the
    file names."""
    return write_study(out, FILES, result, format_report(result), plot_disentangle)
