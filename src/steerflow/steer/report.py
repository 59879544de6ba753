"""Rendering a steering evaluation: ``results.json``, a Markdown report, ``fig2.png`` and
``tradeoff.png`` (target-sentiment rate against continuation perplexity for every method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerflow.experiments.paper import STEERING_PROBE
from steerflow.io import atomic_write_text, format_table, json_safe, pyplot, save_figure, write_json
from steerflow.steer.evaluate import BEATS_Z, u_key


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without private (``_``-prefixed) entries, non-finite floats as null."""
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if not str(k).startswith("_")}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    return json_safe(clean(results))


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md``, ``fig2.png`` and ``tradeoff.png`` into ``out``."""
    from steerflow.steer.sentiment_probe import plot_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "fig2.png", out / "tradeoff.png"]
    write_json(paths[0], to_json(results))
    atomic_write_text(paths[1], markdown(results))
    sweeps = {k: v for k, v in results.get("_sweeps", {}).items() if not k.startswith("actadd")}
    plot_sweep(sweeps, paths[2])
    plot_tradeoff(results, paths[3])
    return paths


# ----------------------------------------------------------------------------- tables
def probe_table(results: dict[str, Any]) -> str:
    """Paper 1, Table 2 beside the paper's numbers."""
    paper = STEERING_PROBE
    rows = []
    for key in ("+1", "0", "-1"):
        p = results["probe"][key]
        rows.append((f"u={key}", p["p_good"], p["p_bad"], p["share"], *paper[key]))
    return format_table(["control", "P(good)", "P(bad)", "share", "paper P(good)", "paper P(bad)"],
                        rows)


def open_ended_rows(results: dict[str, Any]) -> list[tuple]:
    """One row per (method, value): positive rates, agreement, perplexities, distinct-n."""
    judges = results["judges"]["names"]
    sections = [("ode", results["open_ended"])]
    base = results["baselines"]
    sections.append(("no_control", base["no_control"]["open_ended"]))
    sections.append(("actadd", base["actadd"]["open_ended"]))
    if "additive" in base:
        sections.append(("additive", base["additive"]["open_ended"]))
    rows = []
    for method, settings in sections:
        for s in settings.values():
            ppl = s["perplexities"]
            agree = next(iter(s["agreement"].values()), float("nan"))
            rows.append((method, u_key(s["value"]), *[s["positive_rate"][j] for j in judges],
                         agree, ppl.get("unsteered"), ppl.get("baseline", "—"),
                         s["distinct_1"], s["distinct_2"], s["distinct_3"]))
    return rows


def open_ended_table(results: dict[str, Any]) -> str:
    judges = results["judges"]["names"]
    headers = ["method", "u / coef", *[f"positive ({j})" for j in judges], "agreement",
               "ppl (unsteered)", "ppl (baseline)", "dist-1", "dist-2", "dist-3"]
    return format_table(headers, open_ended_rows(results))


def tradeoff_table(results: dict[str, Any]) -> str:
    trade = results["tradeoff"]
    rows = []
    for method, best in trade["best"].items():
        for direction in ("positive", "negative"):
            b = best[direction]
            rows.append((method, direction, *(("—", "—", "—") if b is None else
                                              (b["rate"], u_key(b["value"]), b["perplexity"]))))
    return format_table(["method", "target", "best rate", "at u / coef", "perplexity"], rows)


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    for name, check in results["targets"].items():
        value = check["value"]
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
        rows.append((name, value, "yes" if check["met"] else "NO"))
    return format_table(["target", "measured", "met"], rows)


def _steer_data_line(results: dict[str, Any]) -> str:
    data = results.get("steer_data")
    if data in ("cloze", "sst2"):
        kind = "raw P(good) / P(bad)" if data == "cloze" else "the restricted share"
        return f"Steering data: {data}, so the probe targets are on {kind}.\n"
    return "Steering data unknown: both the cloze and the SST-2 probe targets are shown.\n"


def _compact(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_compact(v)}" for k, v in value.items()) + ")"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The human-readable report of one steering evaluation."""
    s = results["settings"]
    sweep = results["sweep"]
    trade = results["tradeoff"]
    parts = [
        "# Steering evaluation", "",
        "Checkpoints: " + ", ".join(f"{k} = `{v}`" for k, v in results["checkpoints"].items()), "",
        f"## Probe (paper 1, Table 2): next token after {s['probe_prompt']!r}", "",
        probe_table(results), "",
        "Ceiling: the highest probability any residual stream can give each word through the "
        "frozen final LayerNorm and head (gradient ascent; steering that keeps them frozen cannot "
        "exceed it): " + ", ".join(f"P({w}) ≤ {p:.3g}" for w, p in
                                   results.get("probe_ceiling", {}).items()) + ".", "",
        f"Sweep u ∈ [{s['sweep_range'][0]:g}, {s['sweep_range'][1]:g}], {s['sweep_points']} points: "
        f"share monotone = {sweep['monotone']} (largest step against the direction "
        f"{sweep['max_violation']['share']:.2g}). Figure: `fig2.png`.", "",
        "## Open-ended steering", "",
        f"{len(results['prompts'])} neutral WikiText-2 valid/test sentence openings × "
        f"{s['samples']} samples × {s['max_new_tokens']} new tokens, nucleus p = {s['top_p']}, "
        f"temperature {s['temperature']}, seed {s['seed']}. Judges: "
        + ", ".join(results["judges"]["names"]) + "; SST-2 classifier dev accuracy "
        f"{results['judge_dev_accuracy']:.3f}. Perplexity of the continuation given its prompt "
        "under the unsteered base model (u = 0)"
        + (" and under the discrete baseline." if "baseline" in results["checkpoints"] else "."),
        "",
        open_ended_table(results), "",
        f"ActAdd: steering vector at the input of layer {results['baselines']['actadd']['layer']}"
        f", norm {results['baselines']['actadd']['vector_norm']:.3g} (mean residual-stream norm "
        f"there on the prompts: {results['baselines']['actadd'].get('residual_norm', float('nan')):.3g}"
        f"); the coefficient multiplies it.", "",
        f"## At matched perplexity (≤ {trade['budget']:g} × {trade['reference_perplexity']:.4g} "
        f"= {trade['perplexity_limit']:.4g})", "",
        tradeoff_table(results), "",
        f"The ODE beats ActAdd when its best rate exceeds ActAdd's by more than {BEATS_Z} binomial "
        "standard errors in both directions (one-sided 95 %; `z` in the targets table). "
        "Figure: `tradeoff.png`.", "",
        "## Targets (issue 5)", "", _steer_data_line(results), targets_table(results), "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- figure
def plot_tradeoff(results: dict[str, Any], path: str | Path) -> None:
    """Target-sentiment rate against perplexity, one curve per method, one panel per direction."""
    plt = pyplot()

    base = results["baselines"]
    methods = {"ODE (u)": results["open_ended"], "ActAdd (coef)": base["actadd"]["open_ended"]}
    if "additive" in base:
        methods["additive injection (u)"] = base["additive"]["open_ended"]
    limit = results["tradeoff"]["perplexity_limit"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (direction, sign) in zip(axes, (("positive", 1), ("negative", -1))):
        for i, (name, settings) in enumerate(methods.items()):
            pts = sorted((s["perplexity"], s["mean_positive_rate"] if sign > 0 else
                          1 - s["mean_positive_rate"], s["value"])
                         for s in settings.values() if sign * s["value"] >= 0)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=4, color=f"C{i}",
                    label=name)
            for x, y, v in pts:
                ax.annotate(f"{v:g}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        nc = base["no_control"]["open_ended"]["0"]
        rate = nc["mean_positive_rate"] if sign > 0 else 1 - nc["mean_positive_rate"]
        ax.plot([nc["perplexity"]], [rate], "k*", ms=10, label="no control")
        ax.axvline(limit, color="grey", ls=":", label=f"{results['tradeoff']['budget']:g}× u=0 ppl")
        ax.set(xlabel="continuation perplexity (unsteered model)",
               ylabel=f"{direction} rate (mean of judges)", ylim=(0, 1),
               title=f"target: {direction}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
