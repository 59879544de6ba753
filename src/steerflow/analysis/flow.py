"""``steerflow analyze flow``: the whole paper-2 analysis of one trained hybrid model.

1. convergence order of euler / midpoint / rk4 against a float64 dopri8 reference;
2. depth refinement of a continuous transformer with smooth vs piecewise-constant weights;
3. how ODE-like the discrete layers are (update ratios, consecutive cosines, branch log-norms);
4. the log-norm μ of α·F over tokens, τ and u;
5. perturbation growth against exp(∫μ dτ), with violations counted;
6. a contractive-field model against the unconstrained one (μ, perturbation decay, val loss).

Everything runs on real validation text (WikiText-2 through :mod:`steerflow.data`, tokenised with
the checkpoint's own tokenizer) and in float64 for the numerical parts. Outputs in ``out``:
``results.json``, ``report.md`` and the figures ``convergence.png``, ``mu_hist.png``,
``perturbation.png``, ``discrete_layers.png`` (and ``refinement.png``).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from steerflow.analysis.convergence import DEFAULT_STEPS, EXPECTED_ORDER, check_methods
from steerflow.errors import CheckpointError, InputError

#: (basis, init) of the depth-refinement models: smooth weights; independent weights per step
#: from an i.i.d. init (an ordinary stack); the same from a depth-constant init (Sander et al.)
REFINEMENT_MODELS = (("legendre", "iid"), ("piecewise", "iid"), ("piecewise", "smooth"))
FIGURES = ("convergence.png", "mu_hist.png", "perturbation.png", "discrete_layers.png")


@dataclass
class FlowConfig:
    """Options of one ``analyze flow`` run.

    Args:
        checkpoint: a hybrid checkpoint folder (its ODE block is analysed).
        out: output folder (created).
        baseline: a discrete baseline checkpoint for the "how ODE-like" layer statistics.
        compare: a second hybrid checkpoint; with one of the two using ``field="contractive"``
            the run reports the contractive comparison.
        data_dir, cache_dir: data folder (else ``$STEERFLOW_DATA``) and token cache (else
            ``$STEERFLOW_CACHE`` or ``~/.cache/steerflow``).
        controls: the values of u (every control axis set to the value).
        methods, steps: fixed-step methods and step counts of the convergence study.
        ref_rtol: tolerance of the dopri8 reference.
        batch_size: validation sequences analysed (the first window batch of the valid split).
        lanczos_iters: Krylov dimension of the log-norm estimates.
        grid_points, traj_steps: τ grid of the μ / perturbation study and the rk4 steps of its
            trajectories. eps: relative size of the perturbation. tolerance: relative slack
            before a bound violation is counted.
        loss_batches: validation batches for the losses of the contractive comparison.
        refinement: run the depth-refinement study (trains two small models).
        refinement_iters, refinement_train_steps, refinement_batch_size, refinement_width:
            its training length, N₀, batch size and width; refinement_basis: the number of
            Legendre polynomials of the smooth model (< N₀).
        seed: random start vectors, perturbations and refinement initialisation.
        device: ``cpu`` or ``cuda``.
    """

    checkpoint: str
    out: str
    baseline: Optional[str] = None
    compare: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    controls: tuple[float, ...] = (-1.0, 0.0, 1.0)
    methods: tuple[str, ...] = tuple(EXPECTED_ORDER)
    steps: tuple[int, ...] = DEFAULT_STEPS
    ref_rtol: float = 1e-12
    batch_size: int = 4
    lanczos_iters: int = 32
    grid_points: int = 17
    traj_steps: int = 64
    eps: float = 1e-6
    tolerance: float = 1e-2
    loss_batches: int = 10
    refinement: bool = True
    refinement_iters: int = 300
    refinement_train_steps: int = 8
    refinement_batch_size: int = 16
    refinement_width: int = 64
    refinement_basis: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("batch_size", "lanczos_iters", "traj_steps", "loss_batches",
                    "refinement_iters", "refinement_train_steps", "refinement_batch_size",
                    "refinement_width", "refinement_basis")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.controls:
            raise InputError("give at least one control value u")
        if any(not math.isfinite(u) for u in self.controls):
            raise InputError(f"control values must be finite, got {list(self.controls)}")
        if self.grid_points < 2 or self.traj_steps % (self.grid_points - 1):
            raise InputError(f"grid_points - 1 = {self.grid_points - 1} must divide traj_steps = "
                             f"{self.traj_steps}")
        if not 0 < self.ref_rtol < 1e-6:
            raise InputError(f"ref_rtol must be in (0, 1e-6) for a float64 reference, got "
                             f"{self.ref_rtol}")
        if not 0 < self.eps < 1e-2:
            raise InputError(f"eps must be in (0, 1e-2) (a small perturbation), got {self.eps}")
        if self.refinement_basis >= self.refinement_train_steps:
            raise InputError(f"refinement_basis={self.refinement_basis} must be < "
                             f"refinement_train_steps={self.refinement_train_steps} (a smooth "
                             f"basis as large as the step count is N₀ independent layers)")
        if self.tolerance < 0:
            raise InputError(f"tolerance must be >= 0, got {self.tolerance}")
        check_methods(self.methods, self.steps)  # before minutes of loading, not after


def default_cache_dir() -> Path:
    """``$STEERFLOW_CACHE`` or ``~/.cache/steerflow`` (the training run's default)."""
    env = os.environ.get("STEERFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerflow"


# ---------------------------------------------------------------------------- inputs
def load_hybrid(path: str, device: str, role: str):
    """A hybrid checkpoint with a tokenizer, in eval mode."""
    from steerflow.model.hub import load_model

    model = load_model(path, device)
    if model.ode is None:
        raise CheckpointError(f"{path}: {role} is a discrete model (no ODE block); analyze flow "
                              f"needs a hybrid here (pass a discrete model with --baseline)")
    _require_tokenizer(model, path)
    return model


def _require_tokenizer(model, path: str) -> None:
    if model.tokenizer is None:
        raise CheckpointError(f"{path}: the checkpoint has no tokenizer.json; save it with "
                              f"save_pretrained(..., tokenizer=...) to analyse it on real text")


def validation_tokens(tokenizer, data_dir: Optional[str], cache_dir: Optional[str],
                      progress: bool) -> dict[str, np.ndarray]:
    """WikiText-2 token arrays (train/valid) encoded with ``tokenizer``."""
    from steerflow.data import prepare_lm_data, resolve_data_source

    source = resolve_data_source(data_dir, require=("wikitext-2",))
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return prepare_lm_data(source, tokenizer, cache, progress=progress).splits


def first_batch(tokens: np.ndarray, batch_size: int, block_size: int) -> torch.Tensor:
    """The first ``batch_size`` non-overlapping validation windows ``(B, T)``."""
    from steerflow.data import eval_batches

    x, _ = next(iter(eval_batches(tokens, batch_size, block_size, max_batches=1)))
    return x


def ode_input(model, idx: torch.Tensor) -> torch.Tensor:
    """H(0): the hidden state entering the ODE block for token ids ``idx`` ``(B, T)``."""
    with torch.no_grad():
        return model.ode_input(idx)  # (B, T, d)


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

    per_u, curves, mus = {}, {}, {}
    violations, worst = 0, 0.0
    for u in cfg.controls:
        uc = control_tensor(model64, u, h0.shape[0])
        r = perturbation_growth(model64.ode, h0, uc, cfg.grid_points, cfg.traj_steps, cfg.eps,
                                cfg.lanczos_iters, cfg.seed, cfg.tolerance)
        label = _u_label(u)
        mus[label] = r.mu.cpu().numpy()
        violations += r.violations()
        worst = max(worst, r.max_ratio_over_bound)
        per_u[label] = {
            "mu": summary(r.mu),
            "lanczos_residual_max": float(r.lanczos_residual.max()),
            "growth_at_1": summary(r.ratio[-1]),
            "bound_at_1": summary(r.bound[-1]),
            "violations": r.violations(),
            "max_ratio_over_bound": r.max_ratio_over_bound,
        }
        curves[label] = {"taus": r.taus.tolist(), "ratio": r.ratio.cpu().numpy(),
                         "bound": r.bound.cpu().numpy()}
        grouping = r.grouping
    all_mu = np.concatenate([m.ravel() for m in mus.values()])
    return {
        "mu": {**summary(all_mu), "grouping": grouping, "per_u": {k: v["mu"] for k, v in per_u.items()},
               "tau_grid": cfg.grid_points, "lanczos_iters": cfg.lanczos_iters},
        "perturbation": per_u,
        "bound_violations": {"count": violations,
                             "points": int(sum(m[1:].size for m in mus.values())),
                             "max_ratio_over_bound": worst, "tolerance": cfg.tolerance,
                             "eps": cfg.eps},
        "_curves": curves, "_mu_samples": mus,
    }


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
    tokens = validation_tokens(model.tokenizer, cfg.data_dir, cfg.cache_dir, progress)
    idx = first_batch(tokens["valid"], cfg.batch_size, model.config.block_size).to(cfg.device)
    model64 = copy.deepcopy(model).double()
    return FlowInputs(model, model64, baseline, compare, tokens, idx, ode_input(model64, idx))


def comparison(inputs: FlowInputs, flow: dict[str, Any], cfg: FlowConfig
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Profiles of the checkpoint (and --compare model), the contractive comparison, and for the
    figures each model's μ samples and the --compare model's perturbation curves."""
    profiles = {"checkpoint": model_profile(inputs.model, inputs.model64, inputs.h0,
                                            inputs.tokens["valid"], cfg, flow)}
    if inputs.compare is not None:
        compare64 = copy.deepcopy(inputs.compare).double()
        profiles["compare"] = model_profile(inputs.compare, compare64,
                                            ode_input(compare64, inputs.idx),
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


def run_flow(cfg: FlowConfig, progress: bool = True) -> dict[str, Any]:
    """Run every analysis, write results.json, report.md and figures into ``cfg.out``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=6 + bool(cfg.refinement), desc="analyze flow", disable=not progress,
               leave=False)

    def stage(text: str) -> None:
        bar.set_description(f"analyze flow: {text}")
        bar.update()

    inputs = load_inputs(cfg, progress)
    model = inputs.model
    results: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "config": jsonable(asdict(cfg)),
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
    stage("writing")
    write_outputs(Path(cfg.out), results, flow, figure_data)
    bar.close()
    return results


def _load_any(path: str, device: str):
    from steerflow.model.hub import load_model

    model = load_model(path, device)
    _require_tokenizer(model, path)
    return model


def _check_same_tokenizer(model, other, label: str) -> None:
    if other is None:
        return
    _require_tokenizer(other, label)
    if other.tokenizer.content_hash() != model.tokenizer.content_hash():
        raise CheckpointError(f"{label} uses a different tokenizer ({other.tokenizer.name}) than "
                              f"CKPT ({model.tokenizer.name}); compare models trained on the same one")


def jsonable(obj: Any) -> Any:
    """``obj`` with tuples as lists, numpy scalars as numbers and non-finite floats as None."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def write_outputs(out: Path, results: dict[str, Any], flow: dict[str, Any],
                  figure_data: Optional[dict[str, Any]] = None) -> None:
    """results.json, report.md and the PNG figures."""
    from steerflow.analysis import figures
    from steerflow.analysis.report import markdown_report
    from steerflow.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    figure_data = figure_data or {}
    figures.convergence_figure(out / "convergence.png", results["convergence"])
    figures.mu_histogram(out / "mu_hist.png", {f"u={k}": v.ravel() for k, v in
                                               flow["_mu_samples"].items()},
                         f"Log-norm of alpha*F over tokens, tau and u ({flow['mu']['grouping']}s)",
                         figure_data.get("mu_by_model"))
    curves = {f"checkpoint u={u}": c for u, c in flow["_curves"].items()}
    curves.update(figure_data.get("compare_curves", {}))
    figures.perturbation_figure(out / "perturbation.png", curves)
    figures.discrete_figure(out / "discrete_layers.png", results["discrete"])
    if results.get("refinement"):
        figures.refinement_figure(out / "refinement.png", results["refinement"]["models"])
    results["figures"] = sorted(p.name for p in out.glob("*.png"))
    atomic_write_text(out / "results.json", json.dumps(jsonable(results), indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown_report(results))
