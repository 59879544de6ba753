"""Rendering a steering evaluation: ``results.json``, a Markdown report (with the methods table:
positive rate per judge with its 95 % interval, perplexities, distinct-n, tokens/s), ``fig2.png``
and ``tradeoff.png`` (target-sentiment rate against continuation perplexity for every method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerflow.experiments.paper import STEERING_PROBE
from steerflow.io import atomic_write_text, format_table, json_safe, pyplot, save_figure, write_json
from steerflow.steer.comparison import BEATS_Z, method_settings, target_positive_rate, u_key


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


def _rate_cell(rate, ci) -> str:
    """``0.52 [0.41, 0.63]``: a rate and its 95 % interval."""
    if rate is None:
        return "—"
    if not ci or None in ci:
        return f"{rate:.3g}"
    return f"{rate:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"


def _scorers(results: dict[str, Any]) -> list[str]:
    """The perplexity scorers of the run, in the order they were given."""
    return [name for name in ("unsteered", "baseline", "scorer")
            if name == "unsteered" or name in results["checkpoints"]]


def open_ended_rows(results: dict[str, Any]) -> list[tuple]:
    """One row per (method, setting): positive rate per judge with its 95 % interval, the
    classifier mean, perplexity under each scorer, distinct-1/2/3 and generation tokens/s."""
    judges = results["judges"]["names"]
    rows = []
    for method, settings in method_settings(results).items():
        for s in settings.values():
            ppl = s["perplexities"]
            cis = s.get("positive_rate_ci", {})
            rows.append((method, u_key(s["value"]),
                         *[_rate_cell(s["positive_rate"][j], cis.get(j)) for j in judges],
                         _rate_cell(s.get("classifier_positive_rate"),
                                    s.get("classifier_positive_rate_ci")),
                         *[ppl.get(name, "—") for name in _scorers(results)],
                         s["distinct_1"], s["distinct_2"], s["distinct_3"],
                         s.get("tokens_per_s") or "—"))
    return rows


def open_ended_table(results: dict[str, Any]) -> str:
    """The methods table (:func:`open_ended_rows`)."""
    judges = results["judges"]["names"]
    headers = ["method", "setting", *[f"positive ({j}) [95% CI]" for j in judges],
               "positive (classifiers) [95% CI]", *[f"ppl ({n})" for n in _scorers(results)],
               "dist-1", "dist-2", "dist-3", "tokens/s"]
    return format_table(headers, open_ended_rows(results))


def speed_table(results: dict[str, Any]) -> str:
    """Generation speed per method and the ODE's speed over each."""
    speed = results["speed"]
    rows = [(m, v["tokens_per_s"], v["tokens"], v["seconds"], speed.get(f"ode_over_{m}", "—"))
            for m, v in speed["methods"].items()]
    return format_table(["method", "tokens/s", "tokens", "sampling s", "ODE speed ÷ this"], rows)


def tradeoff_table(results: dict[str, Any], key: str = "tradeoff") -> str:
    """Each method's best target rate within the perplexity budget, per direction."""
    trade = results[key]
    rows = []
    for method, best in trade["best"].items():
        for direction in ("positive", "negative"):
            b = best[direction]
            rows.append((method, direction, *(("—", "—", "—") if b is None else
                                              (_rate_cell(b["rate"], b.get("ci")),
                                               u_key(b["value"]), b["perplexity"]))))
    return format_table(["method", "target", "best rate [95% CI]", "at setting", "perplexity"],
                        rows)


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


def _prompts_line(results: dict[str, Any]) -> str:
    s, source = results["settings"], results.get("prompt_source", {})
    if source.get("kind") == "file":
        where = (f"prompts from `{source['path']}` (the first {source['used']} of "
                 f"{source['in_file']})")
    else:
        where = f"{len(results['prompts'])} neutral WikiText-2 valid/test sentence openings"
    return (f"{where} × {s['samples']} samples × {s['max_new_tokens']} new tokens, nucleus "
            f"p = {s['top_p']}, temperature {s['temperature']}, seed {s['seed']}; every method "
            "decodes the same prompts with the same random numbers.")


def _judges_line(results: dict[str, Any]) -> str:
    judges = results["judges"]
    gates = judges.get("gates", [n for n in judges["names"] if n != "vader"])
    accuracy = ", ".join(f"{k} {v:.3f}" for k, v in judges["dev_accuracy"].items())
    line = (f"Judges: {', '.join(judges['names'])} (SST-2 dev accuracy: {accuracy}). The targets "
            f"and the method comparison use the classifier judges only ({', '.join(gates)}); "
            "VADER, a lexicon, is reported beside them. Intervals: 95 % cluster bootstrap over "
            "prompts (BCa).")
    for name, reason in judges.get("skipped", {}).items():
        line += f"\n\n**Judge {name} skipped**: {reason}."
    return line


def _scorer_line(results: dict[str, Any]) -> str:
    names = results["checkpoints"]
    extra = [f"the discrete baseline `{names['baseline']}`"] if "baseline" in names else []
    if "scorer" in names:
        extra.append(f"the independent scorer `{names['scorer']}` (re-tokenizing the text when "
                     "its tokenizer differs)")
    return ("Perplexity of the continuation given its prompt under the unsteered base model "
            "(u = 0)" + (" and under " + " and ".join(extra) if extra else "") + ".")


def _methods_line(results: dict[str, Any]) -> str:
    base = results["baselines"]
    act = base["actadd"]
    vector = (f"the CAA direction (class means over {act['sentences']['positive']} + "
              f"{act['sentences']['negative']} SST-2 train sentences)"
              if act.get("vector") == "caa" else "the word-pair direction")
    text = (f"ActAdd: {vector} at the input of layer {act['layer']}, norm "
            f"{act['vector_norm']:.3g} (mean residual-stream norm there on the prompts: "
            f"{act.get('residual_norm', float('nan')):.3g}); the coefficient multiplies it.")
    if "guidance" in base:
        text += (f" Guidance: z(0) + γ·(z(u) − z(−u)) at u = ±{base['guidance']['u']:g}, "
                 "setting ±γ.")
    if "dexperts" in base:
        e = base["dexperts"]["experts"]
        text += (f" DExperts: z_base + α·(z_expert − z_anti-expert), expert `{e['positive']}` "
                 f"and anti-expert `{e['negative']}` (swapped for the negative direction), "
                 "setting ±α.")
    return text


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
        "## Open-ended steering: the methods", "",
        _prompts_line(results), "", _judges_line(results), "", _scorer_line(results), "",
        open_ended_table(results), "", _methods_line(results), "",
    ]
    if "speed" in results:
        parts += ["## Generation speed", "",
                  "Tokens decoded per second of sampling wall time (not judging or scoring), "
                  "measured one method after another in one process on the same prompts after a "
                  f"warm-up, {results['speed'].get('threads')} CPU thread(s); pooled over each "
                  "method's steering settings.", "", speed_table(results), ""]
    parts += [
        f"## At matched perplexity (≤ {trade['budget']:g} × {trade['reference_perplexity']:.4g} "
        f"= {trade['perplexity_limit']:.4g})", "",
        tradeoff_table(results), "",
        f"The ODE beats a method when its best rate exceeds that method's by more than {BEATS_Z} "
        "binomial standard errors in both directions (one-sided 95 %): "
        + "; ".join(f"{m}: {'yes' if c['met'] else 'no'}"
                    for m, c in results.get("comparisons", {}).items() if c) + ". "
        "Figure: `tradeoff.png`.", "",
    ]
    if "tradeoff_scorer" in results:
        t = results["tradeoff_scorer"]
        parts += [f"Under the independent scorer (≤ {t['budget']:g} × "
                  f"{t['reference_perplexity']:.4g} = {t['perplexity_limit']:.4g}):", "",
                  tradeoff_table(results, "tradeoff_scorer"), ""]
    parts += ["## Targets (issue 5)", "", _steer_data_line(results), targets_table(results), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- figure
def plot_tradeoff(results: dict[str, Any], path: str | Path) -> None:
    """Target-sentiment rate against perplexity, one curve per method, one panel per direction."""
    plt = pyplot()

    labels = {"ode": "ODE (u)", "guidance": "guidance over u (±γ)", "dexperts": "DExperts (±α)",
              "actadd": "ActAdd (coef)", "additive": "additive injection (u)"}
    methods = {labels.get(m, m): v for m, v in method_settings(results).items()
               if m != "no_control"}
    limit = results["tradeoff"]["perplexity_limit"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (direction, sign) in zip(axes, (("positive", 1), ("negative", -1))):
        for i, (name, settings) in enumerate(methods.items()):
            pts = sorted((s["perplexity"], target_positive_rate(s) if sign > 0 else
                          1 - target_positive_rate(s), s["value"])
                         for s in settings.values() if sign * s["value"] >= 0)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=4, color=f"C{i}",
                    label=name)
            for x, y, v in pts:
                ax.annotate(f"{v:g}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        nc = results["baselines"]["no_control"]["open_ended"]["0"]
        rate = target_positive_rate(nc) if sign > 0 else 1 - target_positive_rate(nc)
        ax.plot([nc["perplexity"]], [rate], "k*", ms=10, label="no control")
        ax.axvline(limit, color="grey", ls=":", label=f"{results['tradeoff']['budget']:g}× u=0 ppl")
        ax.set(xlabel="continuation perplexity (unsteered model)",
               ylabel=f"{direction} rate (mean of classifier judges)", ylim=(0, 1),
               title=f"target: {direction}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
