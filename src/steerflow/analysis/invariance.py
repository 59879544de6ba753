"""Solver invariance test (paper 1, Experiment 3): is the learned field really continuous?

A continuous-depth block trained with one solver (4 Euler steps) should give the same output under
any accurate solver. We integrate the ODE block on real validation text with the training solver,
with dopri5 at a tight tolerance, and with a float64 reference (a float64 copy of the model, dopri5
at rtol 1e-10), and compare:

* the paper's ratio ``‖H_train(1) − H_ref(1)‖ / ‖H_ref(1)‖`` (paper: 0.068 %);
* the **displacement** ratio ``‖ΔH_train − ΔH_ref‖ / ‖ΔH_ref‖`` with ``ΔH = H(1) − H(0)``. The
  paper's ratio divides by ‖H(1)‖, which is dominated by ‖H(0)‖ when α·F is small, so it can pass
  for a field that is far from continuous; this one divides by what the block actually adds;
* at the model's output: mean ``KL(p_train ‖ p_ref)`` over tokens, top-1 agreement and the
  validation-loss difference;
* the same numbers along a tolerance sweep of dopri5 and a step-count sweep of the training method.

The metrics are those of :mod:`steerflow.analysis.divergence`; :func:`run_invariance` computes,
:func:`write_invariance` writes ``results.json``, ``table.md`` and ``invariance_sweeps.png``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from steerflow.analysis.convergence import loglog_fit
from steerflow.analysis.divergence import DivergenceMeter
from steerflow.analysis.inputs import (control_batch, float64_copy, plain_solver, require_hybrid,
                                       require_tokenizer)
from steerflow.analysis.settings import InvarianceSettings
from steerflow.config import SolverSpec
from steerflow.errors import InputError, SolverError
from steerflow.experiments.paper import INVARIANCE as PAPER
from steerflow.experiments.paper import INVARIANCE_THRESHOLD as THRESHOLD

#: the files :func:`write_invariance` writes
FILES = ("results.json", "table.md", "invariance_sweeps.png")


@dataclass(frozen=True)
class _Candidate:
    """One solver under test: a name, its spec, and whether it runs in float64."""

    name: str
    spec: SolverSpec
    float64: bool = False


def candidates(settings: InvarianceSettings, train_solver: SolverSpec) -> list[_Candidate]:
    """The solvers compared against the float64 reference: training solver (float32 and float64),
    the float32 dopri5 reference itself, the tolerance sweep and the step-count sweep."""
    sweep_method = train_solver.method if train_solver.is_fixed_step else "euler"
    out = [_Candidate("train", train_solver), _Candidate("train_float64", train_solver, True),
           _Candidate("reference", settings.reference)]
    out += [_Candidate(f"tol:{t:g}", SolverSpec(method="dopri5", steps=None, rtol=t, atol=t / 10))
            for t in settings.tolerances]
    out += [_Candidate(f"steps:{n}", SolverSpec(method=sweep_method, steps=n))
            for n in settings.steps]
    return out


@dataclass
class _Outcome:
    h1: torch.Tensor
    logits: torch.Tensor
    nfe: int


def _run(model, h0: torch.Tensor, u: torch.Tensor, spec: SolverSpec) -> _Outcome:
    solution = model.ode.solve(h0, u, plain_solver(spec))
    return _Outcome(solution.final, model.readout(solution.final), solution.stats.nfe_forward)


@torch.inference_mode()
def run_invariance(model, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   settings: InvarianceSettings = InvarianceSettings(),
                   progress: bool = False) -> dict[str, Any]:
    """Run the solver invariance test on ``batches`` of ``(x, y)`` token windows.

    Returns a JSON-ready dict: the headline metrics (``relative_divergence``,
    ``displacement_divergence``, ``kl``, ``top1_agreement``, ``loss_diff``: the worst over the
    controls, training solver against the float32 dopri5 reference), ``per_control`` detail
    (also against the float64 reference), ``tolerance_sweep``, ``steps_sweep``, the fitted
    convergence order of the step sweep, ``verdicts`` against ``settings.threshold`` and the paper's
    numbers.
    """
    from tqdm.auto import tqdm

    require_hybrid(model)
    if not batches:
        raise InputError("no validation batches to evaluate")
    model.eval()
    train_solver = plain_solver(settings.test_solver or model.config.train_solver)
    model64 = float64_copy(model)
    cands = candidates(settings, train_solver)
    meters = {(c.name, u): DivergenceMeter() for c in cands for u in settings.controls}
    main = {u: DivergenceMeter() for u in settings.controls}  # train vs float32 dopri5
    failures: dict[str, str] = {}
    work = [(x, y, u) for x, y in batches for u in settings.controls]
    for x, y, u in tqdm(work, desc="invariance", disable=not progress, leave=False):
        _compare_batch(model, model64, x, y, u, settings, cands, meters, main[u], failures)
    result = _report(settings, train_solver, cands, meters, main, failures, model, batches)
    if model.tokenizer is not None:
        result["steering_probe"] = steering_probe_by_solver(
            model, {"train": train_solver, "reference": settings.reference}, settings.controls,
            settings.axis)
    return result


def _compare_batch(model, model64, x, y, u: float, settings: InvarianceSettings,
                   cands: list[_Candidate], meters: dict, main: DivergenceMeter,
                   failures: dict[str, str]) -> None:
    """Solve one batch under control ``u`` with every candidate and update the meters."""
    h0 = model.ode_input(x)  # (B, T, d)
    h0_64 = model64.ode_input(x)
    u32 = control_batch(model, u, x.shape[0], settings.axis)
    u64 = u32.double()
    truth = _run(model64, h0_64, u64, settings.float64_reference)
    ref32 = _run(model, h0, u32, settings.reference)
    for cand in cands:
        if cand.name in failures:
            continue
        if cand.name == "reference":
            out = ref32
        else:
            try:
                out = (_run(model64, h0_64, u64, cand.spec) if cand.float64
                       else _run(model, h0, u32, cand.spec))
            except SolverError as exc:
                failures[cand.name] = str(exc)
                continue
        meters[(cand.name, u)].update(out.h1, truth.h1, h0_64, out.logits, truth.logits, y, out.nfe)
        if cand.name == "train":
            main.update(out.h1, ref32.h1, h0, out.logits, ref32.logits, y, out.nfe)


def steering_probe_by_solver(model, solvers: dict[str, SolverSpec], controls: Sequence[float],
                             axis: int = 0) -> list[dict[str, Any]]:
    """Paper 1's steering probe (P(" good") and P(" bad") after "The movie was") under each solver.

    Steering learned with one solver should survive a change of solver; a large gap between the
    rows of the training solver and of dopri5 is the same finding as a large displacement
    divergence, read at the output the paper reports.
    """
    from steerflow.steer.sentiment_probe import PROBE_PROMPT, PROBE_WORDS, word_log_probs

    tokenizer = require_tokenizer(model)
    rows = []
    for name, spec in solvers.items():
        logp = word_log_probs(model, tokenizer, PROBE_PROMPT, PROBE_WORDS, list(controls),
                              axis=axis, solver=plain_solver(spec))  # (n_u, 2)
        for u, (good, bad) in zip(controls, logp.tolist()):
            p_good, p_bad = math.exp(good), math.exp(bad)
            rows.append({"solver": name, "spec": spec.describe(), "u": u, "p_good": p_good,
                         "p_bad": p_bad, "share_good": p_good / (p_good + p_bad)})
    return rows


# --------------------------------------------------------------------------- the report
_HEADLINE = ("relative_divergence", "displacement_divergence", "kl", "top1_agreement")


def _worst(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The worst value of each headline metric over the controls (max, or min for agreement)."""
    out = {}
    for key in _HEADLINE + ("relative_loss_diff",):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = min(values) if key == "top1_agreement" else max(values)
    diffs = [r["loss_diff"] for r in rows if "loss_diff" in r]
    if diffs:
        out["loss_diff"] = max(diffs, key=abs)
    return out


def verdicts(metrics: dict[str, float], threshold: float = THRESHOLD) -> dict[str, dict[str, Any]]:
    """Pass/fail of each metric against ``threshold``: divergences, KL (nats), top-1 disagreement
    and relative loss difference must all stay at or below it."""
    checks = {
        "relative_divergence": metrics.get("relative_divergence"),
        "displacement_divergence": metrics.get("displacement_divergence"),
        "kl": metrics.get("kl"),
        "top1_disagreement": (None if metrics.get("top1_agreement") is None
                              else 1.0 - metrics["top1_agreement"]),
        "relative_loss_diff": metrics.get("relative_loss_diff"),
    }
    return {name: {"value": value, "threshold": threshold, "pass": bool(value <= threshold)}
            for name, value in checks.items() if value is not None}


def convergence_order(steps: Sequence[int], errors: Sequence[Optional[float]]) -> Optional[float]:
    """Convergence order: minus the least-squares slope of log(error) against log(steps)."""
    slope, _ = loglog_fit(steps, errors)
    return None if slope is None else -slope


def _report(settings, train_solver, cands, meters, main, failures, model, batches) -> dict[str, Any]:
    per_control = []
    for u in settings.controls:
        row = {"u": u, **main[u].summary()}
        for name in ("train", "train_float64", "reference"):
            if name not in failures:
                row[f"{name}_vs_float64"] = meters[(name, u)].summary()
        per_control.append(row)
    headline = _worst(per_control)
    tol_rows = [{"rtol": c.spec.rtol, "atol": c.spec.atol, "u": u, **meters[(c.name, u)].summary()}
                for c in cands if c.name.startswith("tol:") and c.name not in failures
                for u in settings.controls]
    step_rows = [{"method": c.spec.method, "steps": c.spec.steps, "u": u,
                  **meters[(c.name, u)].summary()}
                 for c in cands if c.name.startswith("steps:") and c.name not in failures
                 for u in settings.controls]
    orders = {}
    for u in settings.controls:
        rows = [r for r in step_rows if r["u"] == u]
        orders[str(u)] = convergence_order([r["steps"] for r in rows],
                                   [r["displacement_divergence"] for r in rows])
    tokens = sum(int(x.numel()) for x, _ in batches)
    return {
        "train_solver": train_solver.describe(),
        "reference": settings.reference.describe() + ", float32",
        "float64_reference": settings.float64_reference.describe() + ", float64",
        "controls": list(settings.controls),
        "tokens_per_control": tokens,
        "alpha": float(model.ode.alpha.detach().double().mean()),
        **headline,
        "per_control": per_control,
        "tolerance_sweep": tol_rows,
        "steps_sweep": step_rows,
        "steps_convergence_order": orders,
        "failed_solvers": failures,
        "threshold": settings.threshold,
        "verdicts": verdicts(headline, settings.threshold),
        "paper": dict(PAPER),
    }


def format_report(result: dict[str, Any]) -> str:
    """Markdown tables for people: headline with verdicts, per control, and both sweeps."""
    from steerflow.io import format_table

    lines = [f"Solver invariance: training solver **{result['train_solver']}** vs "
             f"**{result['reference']}** (truth: {result['float64_reference']}); "
             f"{result['tokens_per_control']} validation tokens per u, α = {result['alpha']:.4g}.",
             "", "Headline (worst over u):", ""]
    paper = {"relative_divergence": _pct(PAPER["relative_divergence"])}
    rows = [(name, _fmt(v["value"], name), _pct(v["threshold"]) if "kl" not in name
             else f"{v['threshold']:g} nats", "PASS" if v["pass"] else "FAIL", paper.get(name, "—"))
            for name, v in result["verdicts"].items()]
    lines += [format_table(["metric", "ours", "threshold", "verdict", "paper"], rows), ""]
    lines += ["Per control (train vs float32 dopri5 | train vs float64 | float32 dopri5 vs float64):", ""]
    rows = []
    for r in result["per_control"]:
        t64, ref64 = r.get("train_float64_vs_float64", {}), r.get("reference_vs_float64", {})
        tv = r.get("train_vs_float64", {})
        rows.append((f"{r['u']:+g}", _pct(r["relative_divergence"]),
                     _pct(r["displacement_divergence"]), _fmt(r.get("kl"), "kl"),
                     _pct(r.get("top1_agreement")), _fmt(r.get("loss_diff"), "loss"),
                     _pct(tv.get("displacement_divergence")), _pct(t64.get("displacement_divergence")),
                     _pct(ref64.get("displacement_divergence")), _pct(r.get("displacement_to_state"))))
    lines += [format_table(["u", "rel. div.", "displ. div.", "KL", "top-1 agree", "Δloss",
                            "displ. vs f64", "displ. (f64 arithmetic)", "dopri5 ref displ. err.",
                            "‖ΔH‖/‖H(0)‖"], rows), ""]
    lines += ["Tolerance sweep (dopri5, atol = rtol/10, float32, vs float64 reference):", ""]
    lines += [format_table(["rtol", "u", "NFE/batch", "rel. div.", "displ. div.", "KL", "top-1"],
                           [(f"{r['rtol']:g}", f"{r['u']:+g}", _fmt(r.get("nfe_per_batch"), "nfe"),
                             _pct(r["relative_divergence"]), _pct(r["displacement_divergence"]),
                             _fmt(r.get("kl"), "kl"), _pct(r.get("top1_agreement")))
                            for r in result["tolerance_sweep"]]), ""]
    lines += ["Step sweep (float32, vs float64 reference):", ""]
    lines += [format_table(["method", "steps", "u", "rel. div.", "displ. div.", "KL", "top-1", "Δloss"],
                           [(r["method"], r["steps"], f"{r['u']:+g}", _pct(r["relative_divergence"]),
                             _pct(r["displacement_divergence"]), _fmt(r.get("kl"), "kl"),
                             _pct(r.get("top1_agreement")), _fmt(r.get("loss_diff"), "loss"))
                            for r in result["steps_sweep"]]), ""]
    if result.get("steering_probe"):
        lines += ['Steering probe, next word after "The movie was" (paper: u=+1 → P(good) 98.0%, '
                  'u=−1 → P(bad) 88.1%):', ""]
        lines += [format_table(["solver", "u", "P(good)", "P(bad)", "good / (good + bad)"],
                               [(r["spec"], f"{r['u']:+g}", _pct(r["p_good"]), _pct(r["p_bad"]),
                                 _pct(r["share_good"])) for r in result["steering_probe"]]), ""]
    orders = ", ".join(f"u={u}: {o:.2f}" if o is not None else f"u={u}: n/a"
                       for u, o in result["steps_convergence_order"].items())
    lines.append(f"Fitted convergence order of the displacement error over steps: {orders}")
    for name, msg in result["failed_solvers"].items():
        lines.append(f"Solver {name} failed: {msg}")
    return "\n".join(lines)


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.4g}%"


def _fmt(value: Optional[float], kind: str) -> str:
    if value is None:
        return "—"
    if kind in ("relative_divergence", "displacement_divergence", "top1_disagreement",
                "relative_loss_diff"):
        return _pct(value)
    if kind == "nfe":
        return f"{value:.1f}"
    return f"{value:.3g}"


def write_invariance(result: dict[str, Any], out: Path) -> list[str]:
    """Write ``results.json`` (``result`` as JSON), ``table.md`` (:func:`format_report`) and
    ``invariance_sweeps.png`` into ``out``; return the file names."""
    from steerflow.analysis.figures import invariance_sweeps_figure
    from steerflow.io import atomic_write_text, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, table, sweeps = FILES
    write_json(out / results, result)
    atomic_write_text(out / table, format_report(result) + "\n")
    invariance_sweeps_figure(out / sweeps, result, PAPER["relative_divergence"])
    return list(FILES)
