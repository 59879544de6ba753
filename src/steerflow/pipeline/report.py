"""``report.md`` (one page for people) and ``report.json`` (the same numbers for machines)."""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import Any, Sequence

from steerflow.experiments.paper import HEADLINE as PAPER
from steerflow.io import atomic_write_text, format_table, json_safe, machine_info, write_json
from steerflow.pipeline.paths import PATHS



def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def build_report(out: Path, settings, results: dict[str, dict], elapsed: float,
                 source: str, reused: Sequence[str] = ()) -> dict[str, Any]:
    """The ``report.json`` dict from the stages' results."""
    lm = results.get("lm", {})
    steering = results.get("steering", {})
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "data_source": source,
        "settings": dataclasses.asdict(settings),
        "elapsed_s": elapsed,
        "reused_stages": list(reused),
        "checkpoints": {"baseline": str(out / PATHS.baseline), "hybrid": str(out / PATHS.hybrid),
                        "steered": str(out / PATHS.steered)},
        "lm": {"tokenizer": lm.get("tokenizer"), "steps": lm.get("steps"),
               "baseline": lm.get("baseline", {}), "hybrid": lm.get("hybrid", {}),
               "comparison": lm.get("comparison", {})},
        "steer_training": results.get("steer", {}),
        "experts": results.get("experts", {}),
        "distill": results.get("distill", {}),
        "samples": _get(results, "samples", "samples", default=[]),
        "steering": {
            "probe": steering.get("probe", {}),
            "sweep": steering.get("sweep", {}),
            "open_ended": steering.get("open_ended", {}),
            "judge_dev_accuracy": steering.get("judge_dev_accuracy"),
            "baselines": steering.get("baselines", {}),
            "tradeoff": steering.get("tradeoff", {}),
            "targets": steering.get("targets", {}),
            "speed": steering.get("speed", {}),
            "comparisons": steering.get("comparisons", {}),
            "judges": steering.get("judges", {}),
        },
        "invariance": results.get("invariance", {}),
        "probe": results.get("probe", {}),
        "flow": results.get("flow", {}),
        "bench": results.get("bench", {}),
        "paper": PAPER,
    }
    return json_safe(report)


def write_report(out: Path, settings, results: dict[str, dict], elapsed: float,
                 reused: Sequence[str] = (), source: str = "") -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into ``out``; return the report dict."""
    report = build_report(out, settings, results, elapsed, source, reused)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))
    return report


# ----------------------------------------------------------------------------- Markdown
def _num(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.3g}%"


def headline_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, ours, paper) for every headline number."""
    base, hyb = r["lm"]["baseline"], r["lm"]["hybrid"]
    rows = [
        ("params, baseline / hybrid", f"{_num(base.get('params'), ',')} / "
         f"{_num(hyb.get('params'), ',')}", "30,503,424 / 29,781,249 (paper config)"),
        ("final train loss (mean of last 50 steps), baseline / hybrid",
         f"{_num(base.get('final_loss'))} / {_num(hyb.get('final_loss'))}",
         f"{PAPER['baseline_final_loss']} / {PAPER['hybrid_final_loss']}"),
        ("validation loss, baseline / hybrid",
         f"{_num(base.get('val_loss'))} / {_num(hyb.get('val_loss'))}", "not reported"),
        ("grad norm mean±std, baseline / hybrid",
         f"{_num(base.get('grad_norm_mean'), '.3f')}±{_num(base.get('grad_norm_std'), '.3f')} / "
         f"{_num(hyb.get('grad_norm_mean'), '.3f')}±{_num(hyb.get('grad_norm_std'), '.3f')}",
         PAPER["grad_norm"]),
        ("ODE-block grad norm mean±std",
         f"{_num(hyb.get('ode_grad_norm_mean'), '.3f')}±{_num(hyb.get('ode_grad_norm_std'), '.3f')}",
         PAPER["ode_grad_norm"]),
        ("α start → end", f"{_num(hyb.get('alpha_start'))} → {_num(hyb.get('alpha_end'))}",
         f"0.1 → {PAPER['alpha_end']}"),
        ("vanishing / exploding gradient steps (hybrid)",
         f"{_num(hyb.get('vanishing_steps'))} / {_num(hyb.get('exploding_steps'))}", "0 / 0"),
    ]
    probe = r["steering"]["probe"]
    for key in ("+1", "0", "-1"):
        p = probe.get(key, {})
        paper = PAPER["probe"][key]
        rows.append((f"probe \"The movie was\" u={key}: P(good) / P(bad)",
                     f"{_num(p.get('p_good'), '.3g')} / {_num(p.get('p_bad'), '.3g')}",
                     f"{paper[0]:.3f} / {paper[1]:.3f}"))
    for key in ("+1", "0", "-1"):
        rates = _get(r, "steering", "open_ended", key, "positive_rate", default={})
        if rates:
            text = ", ".join(f"{j} {_pct(v)}" for j, v in rates.items())
            rows.append((f"open-ended positive rate at u={key}", text, "not reported"))
    inv = r["invariance"]
    rows += [
        ("solver invariance ‖H_train − H_dopri5‖/‖H_dopri5‖", _pct(inv.get("relative_divergence")),
         _pct(PAPER["relative_divergence"])),
        ("displacement divergence ‖ΔH_train − ΔH_dopri5‖/‖ΔH_dopri5‖",
         _pct(inv.get("displacement_divergence")), "not reported"),
        ("output KL(p_train ‖ p_dopri5) / top-1 agreement",
         f"{_num(inv.get('kl'), '.3g')} / {_pct(inv.get('top1_agreement'))}", "not reported"),
    ]
    order = _get(r, "flow", "order", default={})
    if order:
        rows.append(("convergence order (fitted slopes)",
                     ", ".join(f"{m} {_num(_get(v, 'slope', default=v), '.2f')}"
                               for m, v in order.items()), "−1, −2, −4 expected (theory)"))
    bench = r["bench"]
    if bench:
        rows.append((f"latency ratio hybrid/baseline ({bench.get('config')} config)",
                     f"{_num(bench.get('latency_ratio'), '.3f')} (FLOP ratio "
                     f"{_num(bench.get('flop_ratio'), '.3f')})", f"{PAPER['latency_ratio']}"))
    return rows


def _recipe(s: dict[str, Any]) -> str:
    """The steering recipe of the run in words (:mod:`steerflow.pipeline.steering`)."""
    parts = []
    if s.get("steer_steps"):
        what = "the ODE and discrete blocks" if s.get("steer_train_discrete") else "the ODE block"
        parts.append(f"trained {what} to follow u on `{s['steer_data']}` ({s['steer_steps']} steps)")
    if s.get("expert_steps"):
        parts.append(f"fine-tuned DExperts' expert and anti-expert on positive / negative SST-2 "
                     f"({s['expert_steps']} steps each)")
    if s.get("distill_steps"):
        teacher = "DExperts" if s.get("expert_steps") else "the model's guidance over u"
        parts.append(f"distilled {teacher} (weight {s['distill_gamma']:g}) into one pass at u "
                     f"({s['distill_steps']} steps)")
    return ", then ".join(parts)


def markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        "# steerflow run report", "",
        f"{r['date']} · {r['machine'].get('cpu', '?')} · torch {r['machine'].get('torch', '?')} · "
        f"{_num(r['elapsed_s'] / 60, '.1f')} min · data: {r['data_source']}", "",
        f"Trained a discrete baseline and a hybrid (`{s['config']}` preset, tokenizer "
        f"`{r['lm'].get('tokenizer')}`, {r['lm'].get('steps')} LM steps each), then {_recipe(s)}. ",
        "The paper's numbers come from its own configuration (6 layers, d=256, GPT-2 BPE); "
        "ours are for the preset named above.", "",
        "## Headline numbers", "",
        format_table(["quantity", "steerflow", "paper 1"], headline_rows(r)), "",
    ]
    if r["samples"]:
        lines += ["## Sample generations", "",
                  format_table(["prompt", "u", "continuation"],
                               [(x["prompt"], f"{x['u']:+g}", x["text"].replace("|", "\\|")
                                 .replace("\n", " ")) for x in r["samples"]]), ""]
    figures = [("lm/fig1.png", "loss, gradient norms and α over training (Exp. 1)"),
               ("steering/fig2.png", "probe sweep over u (Exp. 2, Fig. 2)"),
               ("steering/tradeoff.png", "target-sentiment rate against perplexity per method"),
               ("invariance/invariance_sweeps.png",
                "divergence against tolerance and step count (Exp. 3)"),
               ("probe/fig3.png", "NFE against u (Fig. 3)"),
               ("probe/fig4.png", "NFE against tolerance (Fig. 4)")]
    lines += ["## Figures", ""] + [f"- [{title}]({path})" for path, title in figures] + [""]
    lines += ["## Details", "",
              "- `lm/table.md`, `lm/results.json` — gradient stability",
              "- `steering/results.md`, `steering/results.json` — steering evaluation",
              "- `invariance/table.md`, `probe/table.md`, `bench/results.json`",
              f"- checkpoints: `{r['checkpoints']['baseline']}`, `{r['checkpoints']['hybrid']}`, "
              f"`{r['checkpoints']['steered']}` (usable with `steerflow generate`)", ""]
    return "\n".join(lines)
