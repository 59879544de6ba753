"""Solver probing (paper 1, §5.3 and Figs. 3-4): what does an adaptive solver see in the field?

Three measurements on a trained hybrid:

* **NFE against u** for dopri5 and adaptive_heun. torchdiffeq takes one step size for a whole
  batch, controlled by the RMS of the error estimate over every element of the batch, so a batch
  solve's NFE belongs to no single example. We report both: NFE **per batch** (one solve of the
  batch) and NFE **per example** (each sequence solved alone), and the relative difference of the
  two solvers' counts (paper: within 15 %).
* **NFE against tolerance** (rtol = 1e-3 … 1e-7, atol = rtol/10) for each u (paper: 14 → 26 NFE
  for a 1000× tighter tolerance), with the fitted growth exponent of NFE in 1/rtol.
* **Linear probes** (logistic regression, stratified k-fold cross-validation) on mean-pooled hidden
  states at τ = 0, …, 1 for SST-2 sentiment, under u = 0.

The paper's numbers are stored beside ours in every result.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from steerflow.analysis.convergence import loglog_fit
from steerflow.analysis.inputs import control_batch, require_hybrid, require_tokenizer
from steerflow.analysis.settings import PROBE_SOLVER, ProbeSettings
from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.experiments.paper import SOLVER_PROBING as PAPER

#: the figures :func:`write_figures` draws (the last only when the linear probes ran)
FIGURES = ("fig3.png", "fig4.png", "probe_accuracy.png")


# --------------------------------------------------------------------------- NFE counting
@dataclass
class NFECount:
    """Function evaluations and steps of one solve (``steps`` = accepted + rejected)."""

    nfe: int
    accepted: int
    rejected: int

    @property
    def steps(self) -> int:
        return self.accepted + self.rejected


def count_nfe(model, h0: torch.Tensor, u: torch.Tensor, spec: SolverSpec) -> NFECount:
    """Solve ``H(0)`` ``(B, T, d)`` under ``u`` ``(B, c)`` once and return its cost."""
    stats = model.ode.solve(h0, u, spec.replace(adjoint=False)).stats
    return NFECount(stats.nfe_forward, stats.accepted_steps, stats.rejected_steps)


def count_nfe_per_example(model, h0: torch.Tensor, u: torch.Tensor,
                          spec: SolverSpec) -> list[NFECount]:
    """One solve per example (row of ``h0``), so each gets its own step sizes."""
    return [count_nfe(model, h0[i: i + 1], u[i: i + 1], spec) for i in range(h0.shape[0])]


def _nfe_row(model, h0s: Sequence[torch.Tensor], u_value: float, spec: SolverSpec,
             max_examples: int, axis: int) -> dict[str, Any]:
    """Per-batch and per-example NFE of ``spec`` under a scalar control, over batches ``h0s``."""
    batch = [count_nfe(model, h0, control_batch(model, u_value, h0.shape[0], axis), spec)
             for h0 in h0s]
    examples = torch.cat(list(h0s))[:max_examples]  # (N, T, d)
    each = count_nfe_per_example(
        model, examples, control_batch(model, u_value, examples.shape[0], axis), spec)
    return {
        "u": u_value, "method": spec.method, "rtol": spec.rtol, "atol": spec.atol,
        "nfe_per_batch": statistics.fmean(c.nfe for c in batch),
        "steps_per_batch": statistics.fmean(c.steps for c in batch),
        "rejected_per_batch": statistics.fmean(c.rejected for c in batch),
        "nfe_per_example": statistics.fmean(c.nfe for c in each),
        "nfe_per_example_std": statistics.pstdev(c.nfe for c in each),
        "nfe_per_example_min": min(c.nfe for c in each),
        "nfe_per_example_max": max(c.nfe for c in each),
        "steps_per_example": statistics.fmean(c.steps for c in each),
        "batches": len(batch), "examples": len(each),
    }


def nfe_vs_control(model, h0s: Sequence[torch.Tensor], settings: ProbeSettings,
                   progress: bool = False) -> list[dict[str, Any]]:
    """NFE per batch and per example for every method and every u in ``settings.us``."""
    from tqdm.auto import tqdm

    work = [(m, u) for m in settings.methods for u in settings.us]
    rows = []
    for method, u in tqdm(work, desc="NFE vs u", disable=not progress, leave=False):
        spec = SolverSpec(method=method, steps=None, rtol=settings.rtol, atol=settings.atol)
        rows.append(_nfe_row(model, h0s, u, spec, settings.max_examples, settings.axis))
    return rows


def nfe_vs_tolerance(model, h0s: Sequence[torch.Tensor], settings: ProbeSettings,
                     method: str = "dopri5", progress: bool = False) -> list[dict[str, Any]]:
    """NFE of ``method`` at every tolerance (atol = rtol/10) for each u in ``tolerance_us``."""
    from tqdm.auto import tqdm

    work = [(u, t) for u in settings.tolerance_us for t in settings.tolerances]
    rows = []
    for u, tol in tqdm(work, desc="NFE vs tolerance", disable=not progress, leave=False):
        spec = SolverSpec(method=method, steps=None, rtol=tol, atol=tol / 10)
        rows.append(_nfe_row(model, h0s, u, spec, settings.max_examples, settings.axis))
    return rows


def solver_agreement(rows: list[dict[str, Any]], a: str = "adaptive_heun",
                     b: str = "dopri5") -> list[dict[str, Any]]:
    """Per u: ``|x_a − x_b| / x_b`` for NFE and for steps, per batch and per example."""
    by_key = {(r["method"], r["u"]): r for r in rows}
    out = []
    for u in sorted({r["u"] for r in rows}):
        if (a, u) not in by_key or (b, u) not in by_key:
            continue
        ra, rb = by_key[(a, u)], by_key[(b, u)]
        row: dict[str, Any] = {"u": u}
        for key in ("nfe_per_batch", "nfe_per_example", "steps_per_batch", "steps_per_example"):
            row[key] = abs(ra[key] - rb[key]) / rb[key]
        out.append(row)
    return out


def growth_exponent(tolerances: Sequence[float], nfes: Sequence[float]) -> Optional[float]:
    """Least-squares slope of log NFE against log(1/rtol): NFE ∝ rtol^(−slope); < 1 is sublinear."""
    slope, _ = loglog_fit([1 / t for t in tolerances], nfes)
    return slope


def tolerance_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per u: NFE at the loosest tolerance, at a 1000× tighter one (if swept), and the exponent."""
    out = []
    for u in sorted({r["u"] for r in rows}):
        mine = sorted((r for r in rows if r["u"] == u), key=lambda r: -r["rtol"])
        loose = mine[0]
        tighter = [r for r in mine if math.isclose(r["rtol"], loose["rtol"] / 1000, rel_tol=1e-6)]
        out.append({
            "u": u, "rtol_loose": loose["rtol"], "nfe_loose": loose["nfe_per_batch"],
            "nfe_1000x_tighter": tighter[0]["nfe_per_batch"] if tighter else None,
            "nfe_loose_per_example": loose["nfe_per_example"],
            "nfe_1000x_tighter_per_example": tighter[0]["nfe_per_example"] if tighter else None,
            "growth_exponent": growth_exponent([r["rtol"] for r in mine],
                                               [r["nfe_per_batch"] for r in mine]),
        })
    return out


# --------------------------------------------------------------------------- linear probes
def encode_sentences(tokenizer, sentences: Sequence[str], block_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(N, L)`` right-padded with EOS, and a mask ``(N, L)`` of the real tokens.

    Sentences longer than ``block_size`` tokens are cut to their first ``block_size`` tokens.
    """
    ids = [tokenizer.encode(s)[:block_size] for s in sentences]
    if any(len(x) == 0 for x in ids):
        raise InputError("a probe sentence encodes to no tokens")
    length = max(len(x) for x in ids)
    out = torch.full((len(ids), length), tokenizer.eos_id, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.bool)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = True
    return out, mask


@torch.inference_mode()
def depth_features(model, idx: torch.Tensor, mask: torch.Tensor, taus: Sequence[float],
                   solver: SolverSpec = PROBE_SOLVER, u: float = 0.0, axis: int = 0,
                   batch_size: int = 64) -> np.ndarray:
    """Mean-pooled hidden states of the ODE block at each τ, shape ``(len(taus), N, d)``.

    Padding is on the right and attention is causal, so the real tokens' states do not depend
    on it; only the real tokens (``mask``) enter the mean.
    """
    require_hybrid(model)
    chunks = []
    for start in range(0, idx.shape[0], batch_size):
        x, m = idx[start: start + batch_size], mask[start: start + batch_size]
        h0 = model.ode_input(x)  # (B, L, d)
        uc = control_batch(model, u, x.shape[0], axis)
        states = model.ode.solve(h0, uc, solver.replace(adjoint=False), taus=list(taus)).states
        w = m.to(states.dtype)[None, :, :, None]  # (1, B, L, 1)
        chunks.append(((states * w).sum(2) / w.sum(2)).double())  # (K, B, d)
    return torch.cat(chunks, dim=1).numpy()


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5,
                   seed: int = 0) -> tuple[float, float]:
    """Stratified k-fold accuracy (mean, std) of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels)
    if len(counts) < 2 or counts.min() < folds:
        raise InputError(f"each class needs at least {folds} examples for {folds}-fold probing; "
                         f"got class counts {counts.tolist()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, features, labels, cv=cv, scoring="accuracy")
    return float(scores.mean()), float(scores.std())


def probe_over_depth(model, pairs: Sequence[tuple[str, int]], settings: ProbeSettings
                     ) -> dict[str, Any]:
    """Linear-probe sentiment accuracy at each τ of ``settings.taus`` on ``(sentence, label)`` pairs."""
    pairs = list(pairs)[: settings.probe_limit] if settings.probe_limit else list(pairs)
    labels = np.array([label for _, label in pairs])
    idx, mask = encode_sentences(require_tokenizer(model), [s for s, _ in pairs],
                                 model.config.block_size)
    feats = depth_features(model, idx, mask, settings.taus, settings.probe_solver,
                           settings.probe_u, settings.axis)
    rows = []
    for tau, f in zip(settings.taus, feats):
        mean, std = probe_accuracy(f, labels, settings.folds, settings.seed)
        rows.append({"tau": float(tau), "accuracy": mean, "accuracy_std": std})
    return {"u": settings.probe_u, "solver": settings.probe_solver.describe(),
            "sentences": len(pairs), "folds": settings.folds,
            "majority_baseline": float(np.bincount(labels).max() / len(labels)), "by_tau": rows}


# --------------------------------------------------------------------------- the whole probe
@dataclass
class ProbeResult:
    """Everything :func:`run_probe` measured, JSON-ready through :meth:`as_dict`."""

    nfe_vs_u: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    nfe_vs_tolerance: list[dict[str, Any]]
    tolerance_summary: list[dict[str, Any]]
    probes: Optional[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.meta, "nfe_vs_u": self.nfe_vs_u, "solver_agreement": self.agreement,
                "nfe_vs_tolerance": self.nfe_vs_tolerance,
                "tolerance_summary": self.tolerance_summary, "linear_probes": self.probes,
                "paper": dict(PAPER)}


@torch.inference_mode()
def run_probe(model, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
              probe_pairs: Optional[Sequence[tuple[str, int]]],
              settings: ProbeSettings = ProbeSettings(), progress: bool = False) -> ProbeResult:
    """NFE vs u, NFE vs tolerance on the token windows ``batches``; linear probes on ``probe_pairs``
    (skipped when None)."""
    require_hybrid(model)
    if not batches:
        raise InputError("no text batches for NFE probing")
    model.eval()
    h0s = [model.ode_input(x) for x, _ in batches]  # each (B, T, d)
    by_u = nfe_vs_control(model, h0s, settings, progress)
    by_tol = nfe_vs_tolerance(model, h0s, settings, progress=progress)
    probes = probe_over_depth(model, probe_pairs, settings) if probe_pairs else None
    meta = {"rtol": settings.rtol, "atol": settings.atol,
            "windows": sum(int(x.shape[0]) for x, _ in batches),
            "tokens_per_window": int(batches[0][0].shape[1]),
            "nfe_definitions": {
                "per_batch": "one solve of a whole batch (torchdiffeq: one step size for the batch)",
                "per_example": "each window solved alone; mean over windows"}}
    return ProbeResult(by_u, solver_agreement(by_u), by_tol, tolerance_summary(by_tol), probes,
                       meta)


# --------------------------------------------------------------------------- files
def write_figures(result: ProbeResult, out: Path) -> list[str]:
    """fig3.png, fig4.png and probe_accuracy.png (when probes ran) in ``out``; returns the names."""
    from steerflow.analysis.figures import (nfe_vs_tolerance_figure, nfe_vs_u_figure,
                                            probe_accuracy_figure)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nfe_vs_u, nfe_vs_tolerance, accuracy = FIGURES
    nfe_vs_u_figure(out / nfe_vs_u, result.nfe_vs_u, PAPER)
    nfe_vs_tolerance_figure(out / nfe_vs_tolerance, result.nfe_vs_tolerance)
    names = [nfe_vs_u, nfe_vs_tolerance]
    if result.probes:
        probe_accuracy_figure(out / accuracy, result.probes)
        names.append(accuracy)
    return names


def write_probe(result: ProbeResult, out: Path, extra: Optional[dict[str, Any]] = None
                ) -> dict[str, Any]:
    """Write the figures (:func:`write_figures`), ``results.json`` (``extra`` keys first, then
    :meth:`ProbeResult.as_dict` and the figure names) and ``table.md`` (:func:`format_report`)
    into ``out``; return what results.json holds."""
    from steerflow.io import atomic_write_text, write_json

    out = Path(out)
    data = {**(extra or {}), **result.as_dict(), "figures": write_figures(result, out)}
    write_json(out / "results.json", data)
    atomic_write_text(out / "table.md", format_report(result) + "\n")
    return data


def format_report(result: ProbeResult) -> str:
    """Markdown tables: NFE vs u, solver agreement, NFE vs tolerance, probe accuracy, paper beside."""
    from steerflow.io import format_table

    lines = [f"Solver probing on {result.meta['windows']} validation windows of "
             f"{result.meta['tokens_per_window']} tokens (rtol={result.meta['rtol']:g}, "
             f"atol={result.meta['atol']:g}). NFE per batch = one solve of the whole batch; "
             "per example = each window solved alone.", "", "NFE against u (Fig. 3):", ""]
    lines.append(format_table(
        ["method", "u", "NFE/batch", "NFE/example (mean ± std)", "steps/batch", "steps/example"],
        [(r["method"], f"{r['u']:+g}", f"{r['nfe_per_batch']:.1f}",
          f"{r['nfe_per_example']:.1f} ± {r['nfe_per_example_std']:.1f}",
          f"{r['steps_per_batch']:.1f}", f"{r['steps_per_example']:.1f}")
         for r in result.nfe_vs_u]))
    lines += ["", "Paper: dopri5 NFE ≈20 for u<0, ≈14 for u>0.", "",
              "adaptive_heun vs dopri5, |x_heun − x_dopri5| / x_dopri5 (paper: within 15%):", ""]
    lines.append(format_table(
        ["u", "NFE/batch", "NFE/example", "steps/batch", "steps/example"],
        [(f"{r['u']:+g}", *(f"{100 * r[k]:.1f}%" for k in (
            "nfe_per_batch", "nfe_per_example", "steps_per_batch", "steps_per_example")))
         for r in result.agreement]))
    lines += ["", "NFE against tolerance, dopri5, atol = rtol/10 (Fig. 4):", ""]
    lines.append(format_table(
        ["u", "rtol", "NFE/batch", "NFE/example"],
        [(f"{r['u']:+g}", f"{r['rtol']:g}", f"{r['nfe_per_batch']:.1f}",
          f"{r['nfe_per_example']:.1f}") for r in result.nfe_vs_tolerance]))
    lines += [""]
    lines.append(format_table(
        ["u", "NFE at loosest rtol", "NFE at 1000× tighter", "exponent (NFE ∝ rtol^−k)", "paper"],
        [(f"{r['u']:+g}", f"{r['nfe_loose']:.1f}",
          "—" if r["nfe_1000x_tighter"] is None else f"{r['nfe_1000x_tighter']:.1f}",
          "—" if r["growth_exponent"] is None else f"{r['growth_exponent']:.3f}", "14 → 26")
         for r in result.tolerance_summary]))
    if result.probes:
        p = result.probes
        lines += ["", f"Linear probes, SST-2 dev ({p['sentences']} sentences, {p['folds']}-fold CV, "
                      f"u={p['u']:g}, states from {p['solver']}); majority class "
                      f"{100 * p['majority_baseline']:.1f}%:", ""]
        lines.append(format_table(
            ["τ", "accuracy", "std"],
            [(f"{r['tau']:.3g}", f"{100 * r['accuracy']:.1f}%", f"{100 * r['accuracy_std']:.1f}%")
             for r in p["by_tau"]]))
    return "\n".join(lines)
