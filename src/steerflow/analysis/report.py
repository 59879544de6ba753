"""The Markdown report of ``analyze flow`` (tables for people; results.json is for machines)."""

from __future__ import annotations

from typing import Any, Optional

from steerflow.io import format_table


def _num(x: Optional[float], fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def order_section(results: dict[str, Any]) -> list[str]:
    from steerflow.analysis.convergence import EXPECTED_ORDER

    studies = results["convergence"]
    rows = []
    for method, slope in results["order"].items():
        per_u = [_num(s["fits"][method]["slope"], ".2f") for s in studies.values()]
        used = next(iter(studies.values()))["fits"][method]["used_steps"]
        rows.append([method, f"-{EXPECTED_ORDER[method]}", _num(slope, ".2f"), *per_u,
                     ", ".join(map(str, used))])
    headers = ["method", "expected", "fitted slope (mean)", *[f"u={u}" for u in studies],
               "N used (first u)"]
    first = next(iter(studies.values()))
    return ["## 1. Convergence order", "",
            f"Error of the ODE block's end state against {first['reference']} in float64, "
            "relative to the displacement ‖H(1) − H(0)‖; slopes by least squares on log-log over "
            "the finest points above the error floor (reference gap / roundoff).", "",
            format_table(headers, rows), "", "![convergence](convergence.png)", ""]


def mu_section(results: dict[str, Any]) -> list[str]:
    mu = results["mu"]
    rows = [[f"u={u}", s["mean"], s["median"], s["p95"], s["max"], s["fraction_negative"]]
            for u, s in mu["per_u"].items()]
    rows.append(["all", mu["mean"], mu["median"], mu["p95"], mu["max"], mu["fraction_negative"]])
    return ["## 4. Log-norm μ = λ_max((J + Jᵀ)/2) of α·F", "",
            f"Per {mu['grouping']}, at {mu['tau_grid']} τ points along the trajectory of each u "
            f"(Lanczos, {mu['lanczos_iters']} Krylov vectors).", "",
            format_table(["u", "mean", "median", "p95", "max", "fraction < 0"], rows), "",
            "![mu](mu_hist.png)", ""]


def perturbation_section(results: dict[str, Any],
                         heading: str = "## 5. Perturbation growth vs exp(∫μ dτ)",
                         column: str = "u") -> list[str]:
    """The perturbation table, one row per key of ``results["perturbation"]`` (``column=u``:
    the values of u)."""
    rows = [[f"u={u}" if column == "u" else u, p["growth_at_1"]["median"], p["growth_at_1"]["max"],
             p["bound_at_1"]["median"], p["max_ratio_over_bound"], p["violations"]]
            for u, p in results["perturbation"].items()]
    v = results["bound_violations"]
    return [heading, "",
            format_table([column, "median ‖δH(1)‖/‖δH(0)‖", "max", "median bound",
                          "max measured/bound", "violations"], rows), "",
            f"Violations (measured > bound·(1 + {v['tolerance']:g})): **{v['count']}** of "
            f"{v['points']} (τ, token/sequence) points; worst measured/bound "
            f"{v['max_ratio_over_bound']:.6f}.", "", "![perturbation](perturbation.png)", ""]


def discrete_section(results: dict[str, Any],
                     heading: str = "## 3. How ODE-like are the discrete layers?") -> list[str]:
    lines = [heading, ""]
    for label, rows in results["discrete"].items():
        table = [[r["layer"], r["ratio_median"], _num(r["cos_next_median"]), _num(r["mu_mean"]),
                  _num(r["mu_max"])] for r in rows]
        lines += [f"**{label}**", "",
                  format_table(["layer", "median ‖f(x)‖/‖x‖", "median cos(f_l, f_next)",
                                "μ mean (per seq.)", "μ max"], table), ""]
    return lines + ["![discrete](discrete_layers.png)", ""]


def contractive_section(results: dict[str, Any]) -> list[str]:
    c = results.get("contractive")
    lines = ["## 6. Contractive vector field", ""]
    if not c:
        return lines + ["Not measured: " + "; ".join(results.get("notes", [])), ""]
    rows = [[k, c[k]["source"], c[k]["alpha"], c[k]["mu"]["mean"], c[k]["mu"]["max"],
             c[k]["growth_at_1"]["median"], c[k]["val_loss"]] for k in ("unconstrained", "contractive")]
    return lines + [format_table(["field", "model", "α", "μ mean", "μ max", "median growth at τ=1",
                                  "val loss"], rows), "",
                    f"Validation-loss cost of contractivity: {c['val_loss_cost']:+.4f}.", ""]


def refinement_section(results: dict[str, Any]) -> list[str]:
    r = results.get("refinement")
    lines = ["## 2. Depth refinement", "",
             "A continuous transformer dx/dτ = F(x, τ) (F a full block with depth-dependent "
             "weights) trained with N₀ Euler steps, then evaluated with N = N₀·2^j steps. "
             "`legendre`: smooth weights (3 shifted Legendre polynomials); `piecewise`: "
             "independent weights per step, kept constant over the step, from an i.i.d. "
             "(ordinary) or a depth-constant (smooth, Sander et al.) initialisation; "
             "`interpolated`: the same per-step weights interpolated linearly in τ.", ""]
    if not r:
        return lines + ["Not run (--no-refinement).", ""]
    for m in r["models"]:
        rows = [[n, loss, _num(ch), _num(gap)] for n, loss, ch, gap in
                zip(m["eval_steps"], m["val_loss"], m["state_change"] + [None],
                    m["gap_to_finest"] + [None])]
        lines += [f"**{m['label']}** (trained with N₀={m['train_steps']} Euler "
                  f"steps; {m['extra']['params']:,} parameters, relative weight change "
                  f"between steps {m['roughness']:.3f}, ‖H(1) − H(0)‖/‖H(0)‖ = "
                  f"{m['extra']['displacement_over_state']:.3g}, state-change slope "
                  f"{_num(m['order'], '.2f')})", "",
                  format_table(["N", "val loss", "‖H_N − H_2N‖ (rel.)", "‖H_N − H_finest‖ (rel.)"],
                               rows), ""]
    return lines + ["![refinement](refinement.png)", ""]


def markdown_report(results: dict[str, Any]) -> str:
    """The whole report as Markdown text."""
    head = ["# Flow analysis", "",
            f"Checkpoint `{results['checkpoint']}` (field `{results['model']['field']}`, "
            f"α = {results['model']['alpha']:.4g}); {results['tokens_analysed']} validation tokens.",
            ""]
    body = (order_section(results) + refinement_section(results) + discrete_section(results)
            + mu_section(results) + perturbation_section(results) + contractive_section(results))
    return "\n".join(head + body) + "\n"


def hf_markdown_report(results: dict[str, Any]) -> str:
    """The report of ``analyze flow --hf``: a Hugging Face decoder read as a discrete stack."""
    m, mu, inputs = results["model"], results["mu"], results["inputs"]
    head = ["# Flow analysis of a Hugging Face decoder", "",
            f"`{results['source']}` ({m['class']}, {m['layers']} blocks, d = {m['n_embd']}, "
            f"float64); {results['tokens_analysed']} tokens: {inputs['description']}.", "",
            "Each block is one residual update x_{l+1} = x_l + f_l(x_l) of the whole layer "
            "(attention and MLP), read as a unit Euler step; δH(1) is the perturbation at the "
            "last block's output. The bound exp(Σ μ_l) is the ODE reading's: each block may "
            "exceed it by O(‖J_l‖²).", "",
            f"Log-norm μ of the branches (per sequence, Lanczos, {mu['lanczos_iters']} Krylov "
            f"vectors): mean {mu['mean']:.4g}, max {mu['max']:.4g}, fraction < 0 "
            f"{mu['fraction_negative']:.2f}.", "", "![mu](mu_hist.png)", ""]
    body = (discrete_section(results, "## How ODE-like are the blocks?")
            + perturbation_section(results, "## Perturbation growth vs exp(Σ μ_l)", "through"))
    return "\n".join(head + body) + "\n"
