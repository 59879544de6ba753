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

Norms are Frobenius norms pooled over every token of every batch (``sqrt(Σ‖·‖²)``), so the result
does not depend on how the text is split into batches.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from steerflow.config import SolverSpec
from steerflow.errors import CheckpointError, InputError, SolverError
from steerflow.experiments.paper import INVARIANCE as PAPER
from steerflow.experiments.paper import INVARIANCE_THRESHOLD as THRESHOLD

#: the pass mark of every metric (paper 1: "above ~1 % the model would be a ResNet in disguise")
DEFAULT_CONTROLS = (-1.0, 0.0, 1.0)
DEFAULT_TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32)
#: the float32 reference: dopri5 near float32's resolution (eps ≈ 1.2e-7) without stalling
REFERENCE_SOLVER = SolverSpec(method="dopri5", steps=None, rtol=1e-6, atol=1e-7)
#: the float64 reference, the "truth" every sweep entry is measured against
FLOAT64_SOLVER = SolverSpec(method="dopri5", steps=None, rtol=1e-10, atol=1e-12,
                            max_nfe=100_000)


# --------------------------------------------------------------------------- metrics
@dataclass
class DivergenceMeter:
    """Running sums for the invariance metrics of one solver against a reference.

    Call :meth:`update` once per batch; :meth:`summary` turns the sums into ratios, so the metrics
    pool every token of every batch.
    """

    diff_sq: float = 0.0  # Σ ‖H − H_ref‖²
    ref_sq: float = 0.0  # Σ ‖H_ref‖²
    disp_sq: float = 0.0  # Σ ‖H_ref − H(0)‖²
    start_sq: float = 0.0  # Σ ‖H(0)‖²
    kl_sum: float = 0.0  # Σ_tokens KL(p ‖ p_ref)
    agree: int = 0  # tokens whose argmax matches the reference's
    tokens: int = 0
    nll_sum: float = 0.0  # Σ_tokens −log p(target)
    nll_ref_sum: float = 0.0
    nfe: list[int] = field(default_factory=list)

    def update(self, h: torch.Tensor, h_ref: torch.Tensor, h0: torch.Tensor,
               logits: Optional[torch.Tensor] = None, logits_ref: Optional[torch.Tensor] = None,
               targets: Optional[torch.Tensor] = None, nfe: Optional[int] = None) -> None:
        """Add one batch: final states ``(B, T, d)``, optional logits ``(B, T, V)`` and targets ``(B, T)``."""
        if h.shape != h_ref.shape or h0.shape != h_ref.shape:
            raise InputError(f"state shapes differ: {tuple(h.shape)}, {tuple(h_ref.shape)}, "
                             f"{tuple(h0.shape)}")
        h, h_ref, h0 = h.double(), h_ref.double(), h0.double()
        self.diff_sq += float((h - h_ref).square().sum())
        self.ref_sq += float(h_ref.square().sum())
        self.disp_sq += float((h_ref - h0).square().sum())
        self.start_sq += float(h0.square().sum())
        if nfe is not None:
            self.nfe.append(int(nfe))
        if logits is not None and logits_ref is not None:
            self._update_outputs(logits.double(), logits_ref.double(), targets)

    def _update_outputs(self, logits: torch.Tensor, logits_ref: torch.Tensor,
                        targets: Optional[torch.Tensor]) -> None:
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        logq = F.log_softmax(logits_ref, dim=-1)
        # KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), per token
        self.kl_sum += float((logp.exp() * (logp - logq)).sum())
        self.agree += int((logits.argmax(-1) == logits_ref.argmax(-1)).sum())
        self.tokens += logits.shape[0] * logits.shape[1]
        if targets is not None:
            t = targets.unsqueeze(-1)  # (B, T, 1); ids −1 are not used by eval_batches
            self.nll_sum -= float(logp.gather(-1, t).sum())
            self.nll_ref_sum -= float(logq.gather(-1, t).sum())

    def summary(self) -> dict[str, Any]:
        """The ratios: ``relative_divergence``, ``displacement_divergence``, and output metrics."""
        out: dict[str, Any] = {
            # paper 1, Exp. 3: ‖H − H_ref‖ / ‖H_ref‖
            "relative_divergence": _ratio(self.diff_sq, self.ref_sq),
            # ‖ΔH − ΔH_ref‖ / ‖ΔH_ref‖ with ΔH = H(1) − H(0); the H(0) terms cancel in the numerator
            "displacement_divergence": _ratio(self.diff_sq, self.disp_sq),
            # how much the block moves the state: ‖ΔH_ref‖ / ‖H(0)‖
            "displacement_to_state": _ratio(self.disp_sq, self.start_sq),
        }
        if self.tokens:
            out["kl"] = self.kl_sum / self.tokens
            out["top1_agreement"] = self.agree / self.tokens
            if self.nll_sum or self.nll_ref_sum:
                loss, loss_ref = self.nll_sum / self.tokens, self.nll_ref_sum / self.tokens
                out.update(loss=loss, loss_ref=loss_ref, loss_diff=loss - loss_ref,
                           relative_loss_diff=abs(loss - loss_ref) / loss_ref)
        if self.nfe:
            out["nfe_per_batch"] = sum(self.nfe) / len(self.nfe)
        return out


def _ratio(num_sq: float, den_sq: float) -> float:
    return math.sqrt(num_sq / den_sq) if den_sq > 0 else (0.0 if num_sq == 0 else math.inf)


def relative_divergence(h: torch.Tensor, h_ref: torch.Tensor) -> float:
    """Paper 1's Exp. 3 metric ``‖H − H_ref‖ / ‖H_ref‖`` (Frobenius norms over the whole tensor)."""
    meter = DivergenceMeter()
    meter.update(h, h_ref, torch.zeros_like(h_ref))
    return meter.summary()["relative_divergence"]


def displacement_divergence(h: torch.Tensor, h_ref: torch.Tensor, h0: torch.Tensor) -> float:
    """``‖(H − H0) − (H_ref − H0)‖ / ‖H_ref − H0‖``: the error relative to what the block adds."""
    meter = DivergenceMeter()
    meter.update(h, h_ref, h0)
    return meter.summary()["displacement_divergence"]


def output_divergence(logits: torch.Tensor, logits_ref: torch.Tensor,
                      targets: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Mean ``KL(p ‖ p_ref)``, top-1 agreement (and losses when ``targets`` is given)."""
    meter = DivergenceMeter()
    zeros = torch.zeros(1)
    meter.update(zeros, zeros, zeros, logits, logits_ref, targets)
    summary = meter.summary()
    return {k: summary[k] for k in summary if k not in (
        "relative_divergence", "displacement_divergence", "displacement_to_state")}


# --------------------------------------------------------------------------- model pieces
def ode_input(model, idx: torch.Tensor) -> torch.Tensor:
    """H(0) for token ids ``idx`` ``(B, T)`` (:meth:`SteerFlowGPT.ode_input`)."""
    return model.ode_input(idx)


def readout(model, h1: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, T, V)`` from H(1) (:meth:`SteerFlowGPT.readout`)."""
    return model.readout(h1)


def control_batch(model, u: float, batch_size: int, axis: int = 0) -> torch.Tensor:
    """``u · e_axis`` for every row, shape ``(B, c)``, in the model's dtype."""
    c = model.config.control_dim
    if not 0 <= axis < c:
        raise InputError(f"control axis {axis} is outside control_dim={c}")
    out = torch.zeros(batch_size, c, dtype=model.wte.weight.dtype, device=model.wte.weight.device)
    out[:, axis] = float(u)
    return out


def require_hybrid(model) -> None:
    """Raise unless ``model`` has an ODE block."""
    if getattr(model, "ode", None) is None:
        raise CheckpointError("this checkpoint is a discrete baseline (no ODE block); solver "
                              "evaluations need a hybrid model")


def plain_solver(spec: SolverSpec) -> SolverSpec:
    """``spec`` for inference: no adjoint (nothing is differentiated)."""
    return spec.replace(adjoint=False)


def float64_copy(model):
    """A float64 copy of ``model`` for reference solves (the original is untouched)."""
    tokenizer, model.tokenizer = model.tokenizer, None  # the tokenizer need not be copied
    try:
        twin = copy.deepcopy(model).double().eval()
    finally:
        model.tokenizer = tokenizer
    twin.tokenizer = tokenizer
    return twin


# --------------------------------------------------------------------------- data
def default_cache_dir() -> Path:
    """Where prepared token arrays live: ``$STEERFLOW_CACHE`` or ``~/.cache/steerflow``."""
    return Path(os.environ.get("STEERFLOW_CACHE") or Path.home() / ".cache" / "steerflow")


def validation_batches(model, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                       batch_size: int = 8, max_batches: Optional[int] = 8,
                       split: str = "valid", progress: bool = False
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Windows of real WikiText-2 text ``(x, y)``, each ``(B, T)``, encoded with the model's tokenizer.

    The data folder comes from ``data_dir`` or ``$STEERFLOW_DATA`` (or the Hub); the token cache
    from ``cache_dir`` or :func:`default_cache_dir`.
    """
    from steerflow.data import eval_batches, prepare_lm_data, resolve_data_source

    tokenizer = require_tokenizer(model)
    source = resolve_data_source(data_dir, require=("wikitext-2",))
    prepared = prepare_lm_data(source, tokenizer, cache_dir or default_cache_dir(), progress=progress)
    if split not in prepared.splits:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(prepared.splits)}")
    return list(eval_batches(prepared.splits[split], batch_size, model.config.block_size,
                             max_batches))


def require_tokenizer(model):
    """The tokenizer saved with the checkpoint, checked against the model's vocabulary."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError("the checkpoint has no tokenizer.json; save the model with its "
                              "tokenizer (save_pretrained(dir, tokenizer=...))")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's "
                              f"vocab_size is {model.config.vocab_size}")
    return tokenizer


# --------------------------------------------------------------------------- the test
@dataclass(frozen=True)
class InvarianceSettings:
    """What to compare. ``test_solver=None`` means the checkpoint's training solver."""

    controls: tuple[float, ...] = DEFAULT_CONTROLS
    test_solver: Optional[SolverSpec] = None
    reference: SolverSpec = REFERENCE_SOLVER
    float64_reference: SolverSpec = FLOAT64_SOLVER
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    steps: tuple[int, ...] = DEFAULT_STEPS
    threshold: float = THRESHOLD
    axis: int = 0

    def __post_init__(self) -> None:
        if not self.controls:
            raise InputError("give at least one control value u")
        if any(not math.isfinite(u) for u in self.controls):
            raise InputError(f"control values must be finite, got {self.controls}")
        if any(not (t > 0 and math.isfinite(t)) for t in self.tolerances):
            raise InputError(f"tolerances must be positive, got {self.tolerances}")
        if any(n < 1 for n in self.steps):
            raise InputError(f"step counts must be >= 1, got {self.steps}")
        if not self.threshold > 0:
            raise InputError(f"threshold must be > 0, got {self.threshold}")


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
    return _Outcome(solution.final, readout(model, solution.final), solution.stats.nfe_forward)


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
    h0 = ode_input(model, x)  # (B, T, d)
    h0_64 = ode_input(model64, x)
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
    from steerflow.steer.probe import PROBE_PROMPT, PROBE_WORDS, word_log_probs

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


def fit_order(steps: Sequence[int], errors: Sequence[float]) -> Optional[float]:
    """Convergence order: minus the least-squares slope of log(error) against log(steps)."""
    pairs = [(math.log(n), math.log(e)) for n, e in zip(steps, errors)
             if e is not None and e > 0 and math.isfinite(e)]
    if len(pairs) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pairs)
    return -sxy / sxx


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
        orders[str(u)] = fit_order([r["steps"] for r in rows],
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


def plot_sweeps(result: dict[str, Any], path: Path) -> None:
    """Displacement divergence against Euler steps (log-log) and against dopri5 NFE, per u."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steerflow.io import atomic_write

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
        ax.axhline(PAPER["relative_divergence"], color="gray", ls=":", label="paper 0.068%")
    left.set(xlabel="steps of the training method", ylabel="divergence from float64 reference",
             title="Step sweep")
    right.set(xlabel="dopri5 NFE per batch (rtol sweep)", ylabel="displacement divergence",
              title="Tolerance sweep")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
