"""PNG figures of the analyses: flow analysis (paper 2), solver invariance (paper 1, Exp. 3) and
solver probing (paper 1, Figs. 3-4). Set-up and saving go through :mod:`steerflow.io`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from steerflow.io import pyplot as _pyplot
from steerflow.io import save_figure as _save


def convergence_figure(path: Path, studies: dict[str, dict]) -> None:
    """Error vs N on log-log axes, one line per (method, u), with the fitted slopes in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors = {"euler": "tab:blue", "midpoint": "tab:orange", "rk4": "tab:green"}
    styles = ["-", "--", ":", "-."]
    floors = []
    for i, (u_label, study) in enumerate(studies.items()):
        floors.append(study["floor"])
        for method, errors in study["errors"].items():
            fit = study["fits"][method]
            slope = "n/a" if fit["slope"] is None else f"{fit['slope']:.2f}"
            ax.loglog(study["steps"], np.maximum(errors, 1e-300), styles[i % len(styles)],
                      marker="o", ms=3, color=colors.get(method),
                      label=f"{method}, u={u_label}: slope {slope}")
    ax.axhline(max(floors), color="grey", lw=0.8, ls=":", label="error floor (reference/roundoff)")
    ax.set_xlabel("steps N")
    ax.set_ylabel("|H_N(1) - H_ref(1)| / |H(1) - H(0)|")
    ax.set_title("Convergence order of the ODE block (float64, dopri8 reference)")
    ax.legend(fontsize=6, ncol=1)
    _save(fig, path)


def mu_histogram(path: Path, samples: dict[str, np.ndarray], title: str,
                 by_model: Optional[dict[str, np.ndarray]] = None,
                 xlabel: str = "mu = lambda_max((J + J^T)/2) of alpha*F") -> None:
    """Histogram of log-norm samples per u; with ``by_model`` (≥ 2 models) a second panel
    compares the models (all u pooled)."""
    plt = _pyplot()
    panels = [(samples, title)]
    if by_model and len(by_model) > 1:
        panels.append((by_model, "Log-norm by model (all u)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (series, text) in zip(axes[0], panels):
        everything = np.concatenate([v for v in series.values() if v.size])
        bins = np.linspace(min(everything.min(), 0.0), max(everything.max(), 0.0), 60)
        for label, values in series.items():
            ax.hist(values, bins=bins, alpha=0.5, label=label, density=True)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(text, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def perturbation_figure(path: Path, curves: dict[str, dict], depth: str = "tau") -> None:
    """Measured ‖δH(τ)‖/‖δH(0)‖ against the bound exp(∫μ) (median and worst token), per u;
    ``depth`` names the x axis (``layer`` for a discrete stack)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, c) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        taus = np.asarray(c["taus"])
        ratio, bound = np.asarray(c["ratio"]), np.asarray(c["bound"])  # (K, P)
        axes[0].plot(taus, np.median(ratio, 1), color=color, label=f"{label}: measured (median)")
        axes[0].plot(taus, np.median(bound, 1), color=color, ls="--",
                     label=f"{label}: exp(int mu) (median)")
        axes[1].plot(taus, (ratio / bound).max(1), color=color, label=f"{label}: max over tokens")
    spread = max(max(np.asarray(c["bound"]).max(), np.asarray(c["ratio"]).max())
                 / min(np.asarray(c["bound"]).min(), np.asarray(c["ratio"]).min())
                 for c in curves.values())
    if spread > 10:  # log scale only when the curves span more than a decade
        axes[0].set_yscale("log")
    axes[0].set_xlabel(depth)
    axes[0].set_ylabel(f"|dH({depth})| / |dH(0)|")
    axes[0].set_title("Perturbation growth vs log-norm bound")
    axes[0].legend(fontsize=6)
    axes[1].axhline(1.0, color="black", lw=0.8)
    axes[1].set_xlabel(depth)
    axes[1].set_ylabel("measured / bound")
    axes[1].set_title("Bound check (<= 1: the bound holds)")
    axes[1].legend(fontsize=6)
    _save(fig, path)


def discrete_figure(path: Path, tables: dict[str, Sequence[dict]]) -> None:
    """Per-layer ‖f_l(x)‖/‖x‖ (log scale) and cosine of consecutive updates, one row per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(tables), 2, figsize=(10, 3.2 * len(tables)), squeeze=False)
    for (label, rows), (ax_ratio, ax_cos) in zip(tables.items(), axes):
        x = np.arange(len(rows))
        ax_ratio.bar(x, [r["ratio_median"] for r in rows], color="tab:blue")
        ax_ratio.set_yscale("log")
        ax_ratio.set_xticks(x, [r["layer"] for r in rows], fontsize=8)
        ax_ratio.set_ylabel("median |f_l(x)| / |x|")
        ax_ratio.set_title(f"{label}: size of each residual update", fontsize=10)
        ax_cos.bar(x[:-1], [r["cos_next_median"] for r in rows[:-1]], color="tab:orange")
        ax_cos.set_xticks(x[:-1], [f"{a['layer']}->{b['layer']}" for a, b in zip(rows, rows[1:])],
                          fontsize=7, rotation=20)
        ax_cos.set_ylim(-1, 1)
        ax_cos.axhline(0, color="black", lw=0.6)
        ax_cos.set_ylabel("median cos of consecutive updates")
        ax_cos.set_title(f"{label}: alignment of consecutive updates", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def refinement_figure(path: Path, results: Sequence[dict]) -> None:
    """State change and validation loss against the number of Euler steps N."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        n = np.asarray(r["eval_steps"])
        order = "n/a" if r["order"] is None else f"{r['order']:.2f}"
        axes[0].loglog(n[:-1], r["state_change"], marker="o",
                       label=f"{r['label']}: |H_N - H_2N|, slope {order}")
        axes[0].loglog(n[:-1], r["gap_to_finest"], marker="x", ls="--",
                       label=f"{r['label']}: |H_N - H_finest|")
        axes[1].semilogx(n, r["val_loss"], marker="o",
                         label=f"{r['label']} (trained at N={r['train_steps']})")
    axes[0].set_xlabel("Euler steps N")
    axes[0].set_ylabel("relative to |H(1) - H(0)|")
    axes[0].set_title("Hidden-state refinement")
    axes[1].set_xlabel("Euler steps N")
    axes[1].set_ylabel("validation loss")
    axes[1].set_title("Loss under refinement")
    for ax in axes:
        ax.legend(fontsize=7)
    _save(fig, path)


# --------------------------------------------------------------------------- solver invariance
def invariance_sweeps_figure(path: Path, result: dict[str, Any], paper_divergence: float) -> None:
    """Displacement divergence against Euler steps (log-log) and against dopri5 NFE, per u."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, u in enumerate(result["controls"]):
        steps = [r for r in result["steps_sweep"] if r["u"] == u]
        left.loglog([r["steps"] for r in steps], [r["displacement_divergence"] for r in steps],
                    marker="o", color=f"C{i}", label=f"u={u:+g}, displacement")
        left.loglog([r["steps"] for r in steps], [r["relative_divergence"] for r in steps],
                    marker="x", ls="--", color=f"C{i}", label=f"u={u:+g}, relative (paper)")
        tols = [r for r in result["tolerance_sweep"] if r["u"] == u]
        right.loglog([r["nfe_per_batch"] for r in tols],
                     [max(r["displacement_divergence"], 1e-12) for r in tols],
                     marker="o", color=f"C{i}", label=f"u={u:+g}")
    for ax in (left, right):
        ax.axhline(result["threshold"], color="red", ls=":", label="1% threshold")
        ax.axhline(paper_divergence, color="gray", ls=":", label="paper 0.068%")
    left.set(xlabel="steps of the training method", ylabel="divergence from float64 reference",
             title="Step sweep")
    right.set(xlabel="dopri5 NFE per batch (rtol sweep)", ylabel="displacement divergence",
              title="Tolerance sweep")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- solver probing
def nfe_vs_u_figure(path: Path, rows: list[dict[str, Any]], paper: dict[str, Any]) -> None:
    """Fig. 3: NFE against u per method, per example (mean ± std) and per batch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["u"])
        us = [r["u"] for r in mine]
        color = f"C{i}"
        ax.errorbar(us, [r["nfe_per_example"] for r in mine],
                    yerr=[r["nfe_per_example_std"] for r in mine], color=color, marker="o",
                    capsize=3, label=f"{method}, per example (mean ± std)")
        ax.plot(us, [r["nfe_per_batch"] for r in mine], color=color, ls="--", marker="s",
                label=f"{method}, per batch")
    ax.hlines(paper["dopri5_nfe_negative_u"], -2, 0, colors="gray", ls=":")
    ax.hlines(paper["dopri5_nfe_positive_u"], 0, 2, colors="gray", ls=":",
              label="paper, dopri5 (≈20 for u<0, ≈14 for u>0)")
    ax.set(xlabel="control u", ylabel="function evaluations (NFE)",
           title="NFE against control (Fig. 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def nfe_vs_tolerance_figure(path: Path, rows: list[dict[str, Any]]) -> None:
    """Fig. 4: NFE against rtol (log scale) per u, per batch and per example."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, u in enumerate(sorted({r["u"] for r in rows})):
        mine = sorted((r for r in rows if r["u"] == u), key=lambda r: r["rtol"])
        tols = [r["rtol"] for r in mine]
        ax.plot(tols, [r["nfe_per_batch"] for r in mine], color=f"C{i}", marker="o",
                label=f"u={u:+g}, per batch")
        ax.plot(tols, [r["nfe_per_example"] for r in mine], color=f"C{i}", ls="--", marker="x",
                label=f"u={u:+g}, per example")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="rtol (atol = rtol/10)", ylabel="function evaluations (NFE)",
           title="NFE against tolerance (Fig. 4; paper: 14 → 26 for 1000× tighter)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def probe_accuracy_figure(path: Path, probes: dict[str, Any]) -> None:
    """Linear-probe accuracy against τ with the majority-class baseline."""
    plt = _pyplot()
    rows = probes["by_tau"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([r["tau"] for r in rows], [r["accuracy"] for r in rows],
                yerr=[r["accuracy_std"] for r in rows], marker="o", capsize=3,
                label=f"logistic regression, {probes['folds']}-fold CV")
    ax.axhline(probes["majority_baseline"], color="gray", ls=":", label="majority class")
    ax.set(xlabel="depth τ inside the ODE block", ylabel="SST-2 dev accuracy",
           title=f"Linear probes on hidden states (u = {probes['u']:g})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
