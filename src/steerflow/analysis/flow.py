"""``steerflow analyze flow``: the whole paper-2 analysis of one trained hybrid model.

1. convergence order of euler / midpoint / rk4 against a float64 dopri8 reference;
2. depth refinement of a continuous transformer with smooth vs piecewise-constant weights;
3. how ODE-like the discrete layers are (update ratios, consecutive cosines, branch log-norms);
4. the log-norm μ of α·F over tokens, τ and u;
5. perturbation growth against exp(∫μ dτ), with violations counted;
6. a contractive-field model against the unconstrained one (μ, perturbation decay, val loss).

Everything runs on real validation text (WikiText-2 through :mod:`steerflow.data`, tokenised with
the checkpoint's own tokenizer) and in float64 for the numerical parts. :func:`run_flow` computes;
:func:`write_flow` writes ``results.json``, ``report.md`` and the figures ``convergence.png``,
``mu_hist.png``, ``perturbation.png``, ``discrete_layers.png`` (and ``refinement.png``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from steerflow.analysis.inputs import require_tokenizer, token_splits
from steerflow.analysis.settings import FlowConfig
from steerflow.errors import CheckpointError

#: (basis, init) of the depth-refinement models: smooth weights; independent weights per step
#: from an i.i.d. init (an ordinary stack); the same from a depth-constant init (Sander et al.)
REFINEMENT_MODELS = (("legendre", "iid"), ("piecewise", "iid"), ("piecewise", "smooth"))
FIGURES = ("convergence.png", "mu_hist.png", "perturbation.png", "discrete_layers.png")


# ---------------------------------------------------------------------------- inputs
def load_hybrid(path: str, device: str, role: str):
    """A hybrid checkpoint with a tokenizer, in eval mode."""
    from steerflow.model.hub import load_model

    model = load_model(path, device)
    if model.ode is None:
        raise CheckpointError(f"{path}: {role} is a discrete model (no ODE block); analyze flow "
                              f"needs a hybrid here (pass a discrete model with --baseline)")
    require_tokenizer(model, path)
    return model


def first_batch(tokens: np.ndarray, batch_size: int, block_size: int) -> torch.Tensor:
    """The first ``batch_size`` non-overlapping validation windows ``(B, T)``."""
    from steerflow.data import eval_batches

    x, _ = next(iter(eval_batches(tokens, batch_size, block_size, max_batches=1)))
    return x


def ode_input64(model64, idx: torch.Tensor) -> torch.Tensor:
    """H(0) ``(B, T, d)`` of a float64 model for token ids ``idx`` ``(B, T)``, without gradients."""
    with torch.no_grad():
        return model64.ode_input(idx)


def validation_loss(model, tokens: np.ndarray, batches: int, batch_size: int = 16) -> float:
    """Mean next-token loss over the first ``batches`` validation batches (eval solver, u = 0)."""
    from steerflow.data import eval_batches

    losses = []
    with torch.no_grad():
        for x, y in eval_batches(tokens, batch_size, model.config.block_size, max_batches=batches):
            device = model.wte.weight.device
            losses.append(float(model(x.to(device), targets=y.to(device))[1]))
    return float(np.mean(losses))


# ---------------------------------------------------------------------------- studies
def summary(values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, std, min, quantiles, max and the fraction of negative values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p05": float(q[0]), "median": float(q[1]), "p95": float(q[2]), "max": float(v.max()),
            "fraction_negative": float((v < 0).mean()), "count": int(v.size)}


def control_tensor(model64, u: float, batch: int) -> torch.Tensor:
    """u ``(B, c)`` with every control axis at value ``u`` (float64)."""
    return model64.control(float(u), batch, model64.wte.weight.device, torch.float64)


def convergence_part(model64, h0: torch.Tensor, cfg: FlowConfig) -> dict[str, Any]:
    """Convergence studies per u and the per-method slope (mean over u)."""
    from steerflow.analysis.convergence import ode_block_convergence

    studies = {}
    for u in cfg.controls:
        uc = control_tensor(model64, u, h0.shape[0])
        studies[_u_label(u)] = ode_block_convergence(model64.ode, h0, uc, cfg.methods, cfg.steps,
                                                     cfg.ref_rtol).as_dict()
    order = {}
    for method in cfg.methods:
        slopes = [s["fits"][method]["slope"] for s in studies.values()]
        slopes = [s for s in slopes if s is not None]
        order[method] = float(np.mean(slopes)) if slopes else None
    return {"order": order, "convergence": studies}


def flow_part(model64, h0: torch.Tensor, cfg: FlowConfig) -> dict[str, Any]:
    """μ along the trajectories and perturbation growth vs the bound, per u."""
    from steerflow.analysis.perturbation import perturbation_growth

    growth = {_u_label(u): perturbation_growth(
        model64.ode, h0, control_tensor(model64, u, h0.shape[0]), cfg.grid_points, cfg.traj_steps,
        cfg.eps, cfg.lanczos_iters, cfg.seed, cfg.tolerance) for u in cfg.controls}
    per_u = {label: perturbation_entry(r) for label, r in growth.items()}
    mus = {label: r.mu.cpu().numpy() for label, r in growth.items()}
    all_mu = np.concatenate([m.ravel() for m in mus.values()])
    return {
        "mu": {**summary(all_mu), "grouping": next(iter(growth.values())).grouping,
               "per_u": {k: v["mu"] for k, v in per_u.items()},
               "tau_grid": cfg.grid_points, "lanczos_iters": cfg.lanczos_iters},
        "perturbation": per_u,
        "bound_violations": bound_violations(list(growth.values()), cfg.eps),
        "_curves": {label: perturbation_curve(r) for label, r in growth.items()},
        "_mu_samples": mus,
    }


def perturbation_entry(r) -> dict[str, Any]:
    """results.json's summary of one :class:`~steerflow.analysis.perturbation.PerturbationResult`
    (``*_at_1``: at the end of the flow, or of the stack)."""
    return {"mu": summary(r.mu), "lanczos_residual_max": float(r.lanczos_residual.max()),
            "growth_at_1": summary(r.ratio[-1]), "bound_at_1": summary(r.bound[-1]),
            "violations": r.violations(), "max_ratio_over_bound": r.max_ratio_over_bound}


def perturbation_curve(r) -> dict[str, Any]:
    """The measured ratio and its bound on the grid, for the perturbation figure."""
    return {"taus": r.taus.tolist(), "ratio": r.ratio.cpu().numpy(), "bound": r.bound.cpu().numpy()}


def bound_violations(growth: list, eps: Optional[float]) -> dict[str, Any]:
    """Violations (measured > bound·(1 + tolerance)) over every τ > 0 point of ``growth``
    (``eps``: the perturbation's relative size; None for a linearised one)."""
    return {"count": sum(r.violations() for r in growth),
            "points": int(sum(r.ratio[1:].numel() for r in growth)),
            "max_ratio_over_bound": max(r.max_ratio_over_bound for r in growth),
            "tolerance": growth[0].tolerance, "eps": eps}


def discrete_part(models: dict[str, Any], idx: torch.Tensor, cfg: FlowConfig) -> dict[str, Any]:
    """Layer statistics of each model (float64) on the same validation windows."""
    from steerflow.analysis.discrete import discrete_layer_stats

    return {label: [row.as_dict() for row in
                    discrete_layer_stats(m, idx.to(m.wte.weight.device), None,
                                         cfg.lanczos_iters, cfg.seed)]
            for label, m in models.items()}


def model_profile(model, model64, h0: torch.Tensor, tokens: np.ndarray, cfg: FlowConfig,
                  flow: Optional[dict] = None) -> dict[str, Any]:
    """μ, perturbation decay at τ = 1 and validation loss of one hybrid model."""
    flow = flow if flow is not None else flow_part(model64, h0, cfg)
    ratio_at_1 = np.concatenate([c["ratio"][-1] for c in flow["_curves"].values()])
    return {"field": model.config.field, "alpha": float(model.ode.alpha.detach().mean()),
            "mu": {k: v for k, v in flow["mu"].items() if k != "per_u"},
            "growth_at_1": summary(ratio_at_1),
            "bound_violations": flow["bound_violations"]["count"],
            "val_loss": validation_loss(model, tokens, cfg.loss_batches),
            "_mu_samples": np.concatenate([m.ravel() for m in flow["_mu_samples"].values()]),
            "_curves": flow["_curves"]}


def contractive_part(profiles: dict[str, dict]) -> Optional[dict[str, Any]]:
    """The comparison when exactly one of two profiled models uses the contractive field."""
    if len(profiles) != 2:
        return None
    kinds = {label: p["field"] for label, p in profiles.items()}
    contractive = [k for k, f in kinds.items() if f == "contractive"]
    if len(contractive) != 1:
        return None
    (c_label,) = contractive
    (u_label,) = [k for k in profiles if k != c_label]
    c, u = profiles[c_label], profiles[u_label]
    return {"contractive": {"source": c_label, **c}, "unconstrained": {"source": u_label, **u},
            "val_loss_cost": c["val_loss"] - u["val_loss"],
            "mu_max": {"contractive": c["mu"]["max"], "unconstrained": u["mu"]["max"]},
            "median_growth_at_1": {"contractive": c["growth_at_1"]["median"],
                                   "unconstrained": u["growth_at_1"]["median"]}}


def refinement_part(tokens: dict[str, np.ndarray], vocab_size: int, block: int, cfg: FlowConfig,
                    progress: Optional[Callable[[str], None]]) -> dict[str, Any]:
    """Train smooth (Legendre) and piecewise-constant depth models and refine each."""
    from steerflow.analysis.refinement import DepthConfig, refinement_study
    from steerflow.data import eval_batches, lm_batch

    depth_cfg = DepthConfig(vocab_size=vocab_size, block_size=block, n_embd=cfg.refinement_width,
                            n_head=max(1, cfg.refinement_width // 32),
                            basis_size=cfg.refinement_basis)
    train = tokens["train"]
    batch = lambda i: lm_batch(train, i, cfg.refinement_batch_size, block, cfg.seed)  # noqa: E731
    val = list(eval_batches(tokens["valid"], 16, block, max_batches=cfg.loss_batches))
    results = []
    for basis, init in REFINEMENT_MODELS:
        label = f"refinement: training {basis} ({init} init)"
        if progress:
            progress(label)

        def report(i: int, loss: float, label: str = label) -> None:
            if progress and ((i + 1) % 10 == 0 or i + 1 == cfg.refinement_iters):
                progress(f"{label} {i + 1}/{cfg.refinement_iters}, loss {loss:.3f}")

        results += [r.as_dict() for r in refinement_study(
            basis, depth_cfg, batch, val, train_steps=cfg.refinement_train_steps,
            iters=cfg.refinement_iters, seed=cfg.seed, init=init, progress=report)]
    return {"models": results, "eval_batches": len(val), "block_size": block}


def _u_label(u: float) -> str:
    return f"{u:+g}"


# ---------------------------------------------------------------------------- the run
@dataclass
class FlowInputs:
    """The loaded models (and float64 copies), token arrays, analysed windows and H(0)."""

    model: Any
    model64: Any
    baseline: Optional[Any]
    compare: Optional[Any]
    tokens: dict[str, np.ndarray]
    idx: torch.Tensor
    h0: torch.Tensor


def load_inputs(cfg: FlowConfig, progress: bool) -> FlowInputs:
    """Load the checkpoints (checked for a shared tokenizer) and the validation windows."""
    model = load_hybrid(cfg.checkpoint, cfg.device, "CKPT")
    baseline = _load_any(cfg.baseline, cfg.device) if cfg.baseline else None
    compare = load_hybrid(cfg.compare, cfg.device, "--compare") if cfg.compare else None
    for label, other in (("--baseline", baseline), ("--compare", compare)):
        _check_same_tokenizer(model, other, label)
    tokens = token_splits(model.tokenizer, cfg.data_dir, cfg.cache_dir, progress)
    idx = first_batch(tokens["valid"], cfg.batch_size, model.config.block_size).to(cfg.device)
    model64 = copy.deepcopy(model).double()
    return FlowInputs(model, model64, baseline, compare, tokens, idx, ode_input64(model64, idx))


def comparison(inputs: FlowInputs, flow: dict[str, Any], cfg: FlowConfig
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Profiles of the checkpoint (and --compare model), the contractive comparison, and for the
    figures each model's μ samples and the --compare model's perturbation curves."""
    profiles = {"checkpoint": model_profile(inputs.model, inputs.model64, inputs.h0,
                                            inputs.tokens["valid"], cfg, flow)}
    if inputs.compare is not None:
        compare64 = copy.deepcopy(inputs.compare).double()
        profiles["compare"] = model_profile(inputs.compare, compare64,
                                            ode_input64(compare64, inputs.idx),
                                            inputs.tokens["valid"], cfg)
    figure_data = {"mu_by_model": {f"{label} ({p['field']})": p.pop("_mu_samples")
                                   for label, p in profiles.items()},
                   "compare_curves": {}}
    for label, p in profiles.items():
        curves = p.pop("_curves")
        if label != "checkpoint":
            figure_data["compare_curves"] = {f"{label} ({p['field']}) u={u}": c
                                             for u, c in curves.items()}
    return {"profiles": profiles, "contractive": contractive_part(profiles)}, figure_data


@dataclass
class FlowResult:
    """What :func:`run_flow` measured: ``results`` (results.json's content, without the figure
    names :func:`write_flow` adds), and the curves and samples the figures draw."""

    results: dict[str, Any]
    flow: dict[str, Any]
    figure_data: dict[str, Any] = field(default_factory=dict)


def run_flow(cfg: FlowConfig, progress: bool = True) -> FlowResult:
    """Run every analysis of ``cfg`` on its checkpoints (nothing is written)."""
    from tqdm.auto import tqdm

    from steerflow.io import json_safe

    bar = tqdm(total=5 + bool(cfg.refinement), desc="analyze flow", disable=not progress,
               leave=False)

    def stage(text: str) -> None:
        bar.set_description(f"analyze flow: {text}")
        bar.update()

    inputs = load_inputs(cfg, progress)
    model = inputs.model
    results: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "config": json_safe(asdict(cfg)),
                               "model": {"field": model.config.field,
                                         "alpha": float(model.ode.alpha.detach().mean()),
                                         "ode_span": list(model.config.ode_span)},
                               "tokens_analysed": int(inputs.idx.numel()), "notes": []}
    stage("convergence order")
    results.update(convergence_part(inputs.model64, inputs.h0, cfg))
    stage("log-norms and perturbations")
    flow = flow_part(inputs.model64, inputs.h0, cfg)
    results.update({k: v for k, v in flow.items() if not k.startswith("_")})
    stage("discrete layers")
    discrete_models = {"checkpoint": inputs.model64}
    if inputs.baseline is not None:
        discrete_models["baseline"] = copy.deepcopy(inputs.baseline).double()
        results["baseline_val_loss"] = validation_loss(inputs.baseline, inputs.tokens["valid"],
                                                       cfg.loss_batches)
    results["discrete"] = discrete_part(discrete_models, inputs.idx, cfg)
    stage("model comparison")
    compared, figure_data = comparison(inputs, flow, cfg)
    results.update(compared)
    if results["contractive"] is None:
        results["notes"].append("no contractive comparison: pass --compare CKPT where exactly one "
                                "of the two models uses field=contractive")
    results["refinement"] = None
    if cfg.refinement:
        stage("depth refinement")
        results["refinement"] = refinement_part(inputs.tokens, model.config.vocab_size,
                                                model.config.block_size, cfg, bar.set_description)
    bar.close()
    return FlowResult(results, flow, figure_data)


def _load_any(path: str, device: str):
    from steerflow.model.hub import load_model

    model = load_model(path, device)
    require_tokenizer(model, path)
    return model


def _check_same_tokenizer(model, other, label: str) -> None:
    if other is None:
        return
    require_tokenizer(other, label)
    if other.tokenizer.content_hash() != model.tokenizer.content_hash():
        raise CheckpointError(f"{label} uses a different tokenizer ({other.tokenizer.name}) than "
                              f"CKPT ({model.tokenizer.name}); compare models trained on the same one")


def write_flow(result: FlowResult, out: Path) -> dict[str, Any]:
    """Write the PNG figures, ``results.json`` and ``report.md`` into ``out``; return what
    results.json holds (``result.results`` with the names of the figures in ``out``, valid JSON)."""
    from steerflow.analysis import figures
    from steerflow.analysis.report import markdown_report
    from steerflow.io import atomic_write_text, json_safe, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, flow, figure_data = result.results, result.flow, result.figure_data
    convergence, mu_hist, perturbation, discrete = FIGURES
    figures.convergence_figure(out / convergence, results["convergence"])
    figures.mu_histogram(out / mu_hist, {f"u={k}": v.ravel() for k, v in
                                         flow["_mu_samples"].items()},
                         f"Log-norm of alpha*F over tokens, tau and u ({flow['mu']['grouping']}s)",
                         figure_data.get("mu_by_model"))
    curves = {f"checkpoint u={u}": c for u, c in flow["_curves"].items()}
    curves.update(figure_data.get("compare_curves", {}))
    figures.perturbation_figure(out / perturbation, curves)
    figures.discrete_figure(out / discrete, results["discrete"])
    if results.get("refinement"):
        figures.refinement_figure(out / "refinement.png", results["refinement"]["models"])
    results["figures"] = sorted(p.name for p in out.glob("*.png"))
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", markdown_report(results))
    return json_safe(results)
