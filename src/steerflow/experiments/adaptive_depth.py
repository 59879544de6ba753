"""Adaptive depth at inference: how many field evaluations does each token need?

Paper 1 trains the ODE block on a fixed grid (4 Euler steps) and leaves dynamic step counts at
inference open. The ``mlp`` field is position-wise, so every token can take its own steps
(:mod:`steerflow.model.per_token`). For each tolerance of that per-token solver, beside the
training solver's fixed grid and uniformly coarser grids, on the same validation windows and the
same random numbers, we measure:

* field evaluations per token: mean, distribution, and by position in the window, by the token's
  frequency in the training split and by u (on the steered checkpoint);
* the validation loss, and solver invariance against a dopri5 reference
  (:class:`~steerflow.analysis.divergence.DivergenceMeter`: displacement divergence, KL, top-1);
* steering rates of the steered checkpoint: the SST-2 classifier's positive rate of open-ended
  continuations of neutral prompts at u = ±1 (KV-cache generation through the solver under test)
  and the paper's probe share P(good) / (P(good) + P(bad)) after "The movie was";
* throughput: tokens/s of the whole forward pass, of the ODE solve alone, and of generation.

:func:`run_adaptive_depth` measures;
:func:`~steerflow.experiments.adaptive_report.write_adaptive_depth` writes ``results.json``,
``table.md`` and ``adaptive_depth.png``. The command line is
``steerflow experiment adaptive-depth``.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from steerflow.analysis.divergence import DivergenceMeter
from steerflow.analysis.inputs import Batches, control_batch, plain_solver, require_hybrid
from steerflow.config import SolverSpec
from steerflow.errors import ConfigError, InputError
from steerflow.experiments.adaptive_settings import AdaptiveDepthSettings
from steerflow.experiments.paper import ADAPTIVE_DEPTH as PAPER
from steerflow.experiments.paper import ADAPTIVE_DEPTH_TARGETS as TARGETS

_INVARIANCE_KEYS = ("relative_divergence", "displacement_divergence", "kl", "top1_agreement")


@dataclass
class DepthInputs:
    """What the study reads: the checkpoint and its validation windows, the steered checkpoint
    (the same model when none is given), training-split token counts, neutral prompts, the judge."""

    model: Any
    batches: Batches
    steered: Any
    counts: np.ndarray
    prompts: list[str]
    judge: Any
    checkpoint: str = ""
    steered_path: str = ""


def _checked(model, path) -> Any:
    require_hybrid(model)
    if not model.ode.field.position_wise:
        raise ConfigError(f"{path}: the per-token solver needs a position-wise field (mlp, "
                          f"contractive); this checkpoint's field is {model.config.field!r}")
    return model


def load_inputs(checkpoint, settings: AdaptiveDepthSettings, steered=None,
                data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                device: str = "cpu", progress: bool = False) -> DepthInputs:
    """Load both checkpoints, WikiText-2 (valid windows, train counts), neutral prompts and the
    SST-2 TF-IDF judge (trained once, cached under ``cache_dir/judges/sst2-tfidf``)."""
    from steerflow.analysis.inputs import require_tokenizer, token_splits
    from steerflow.data import eval_batches, load_sst2, resolve_data_source
    from steerflow.data.cache import resolve_cache_dir
    from steerflow.model.hub import load_model
    from steerflow.steer.judges.sst2 import load_or_train
    from steerflow.steer.prompts import neutral_prompts

    model = _checked(load_model(checkpoint, device), checkpoint)
    other = model if steered is None else _checked(load_model(steered, device), steered)
    tokenizer = require_tokenizer(model, str(checkpoint))
    if require_tokenizer(other, str(steered)).content_hash() != tokenizer.content_hash():
        raise InputError(f"{steered}: the steered checkpoint's tokenizer differs from "
                         f"{checkpoint}'s; the study reads the same windows with both")
    splits = token_splits(tokenizer, data_dir, cache_dir, progress)
    batches = [(x.to(device), y.to(device)) for x, y in eval_batches(
        splits["valid"], settings.batch_size, model.config.block_size, settings.batches)]
    counts = np.bincount(splits["train"], minlength=model.config.vocab_size)
    source = resolve_data_source(data_dir, require=("wikitext-2", "sst2"))
    judge = load_or_train(resolve_cache_dir(cache_dir) / "judges" / "sst2-tfidf",
                          lambda: load_sst2(source, "train"), lambda: load_sst2(source, "dev"))
    prompts = neutral_prompts(source, settings.prompts, seed=settings.seed)
    return DepthInputs(model, batches, other, counts, prompts, judge, str(checkpoint),
                       str(steered if steered is not None else checkpoint))


def study_solvers(model, settings: AdaptiveDepthSettings) -> dict[str, SolverSpec]:
    """``fixed`` (the training solver, no adjoint), ``euler:N`` (coarser uniform grids) and
    ``tol:T`` (the per-token solver on the training grid) by name."""
    train = plain_solver(model.config.train_solver)
    grid = settings.grid or (train.steps if train.is_fixed_step else None)
    if grid is None:
        raise InputError(f"the checkpoint's training solver ({train.describe()}) has no grid; "
                         f"pass --grid N")
    out = {"fixed": train}
    out.update({f"euler:{n}": SolverSpec(method="euler", steps=n) for n in settings.coarse_steps
                if SolverSpec(method="euler", steps=n) != train})
    out.update({f"tol:{t!r}": settings.per_token(t, grid) for t in settings.tolerances})
    return out


# --------------------------------------------------------------------------- measuring
@dataclass
class _Tally:
    """One solver on the validation windows: divergence sums, evaluations of every token
    (a ``(B, T)`` tensor per batch) and the seconds of the solve and of the readout."""

    meter: DivergenceMeter = field(default_factory=DivergenceMeter)
    evals: list = field(default_factory=list)
    ode_s: float = 0.0
    readout_s: float = 0.0


def token_evals(solution, shape) -> torch.Tensor:
    """Field evaluations of every token ``(B, T)``: the per-token solver's count, else the
    solve's (every token takes all of them)."""
    if solution.stats.token_evals is not None:
        return solution.stats.token_evals
    return torch.full(tuple(shape), solution.stats.nfe_forward, dtype=torch.long)


def _measure(model, h0, u, spec: SolverSpec, tally: _Tally, ref: torch.Tensor,
             ref_logits: torch.Tensor, y: torch.Tensor) -> None:
    start = time.perf_counter()
    solution = model.ode.solve(h0, u, spec)
    solved = time.perf_counter()
    logits = model.readout(solution.final)  # (B, T, V)
    tally.ode_s += solved - start
    tally.readout_s += time.perf_counter() - solved
    tally.evals.append(token_evals(solution, h0.shape[:2]))
    tally.meter.update(solution.final, ref, h0, logits, ref_logits, y)


@torch.inference_mode()
def lm_pass(model, batches: Batches, solvers: dict[str, SolverSpec], reference: SolverSpec,
            progress: bool = False) -> tuple[dict[str, _Tally], float]:
    """Every solver on every window at u = 0 against ``reference``; H(0) is computed once per
    window (its seconds are returned beside the tallies)."""
    from tqdm.auto import tqdm

    tallies = {name: _Tally() for name in solvers}
    before_s = 0.0
    for x, y in tqdm(batches, desc="validation", disable=not progress, leave=False):
        start = time.perf_counter()
        h0 = model.ode_input(x)  # (B, T, d)
        before_s += time.perf_counter() - start
        u = control_batch(model, 0.0, x.shape[0])
        ref = model.ode.solve(h0, u, reference).final
        ref_logits = model.readout(ref)
        for name, spec in solvers.items():
            _measure(model, h0, u, spec, tallies[name], ref, ref_logits, y)
    return tallies, before_s


@torch.inference_mode()
def depth_by_u(model, batches: Batches, solvers: dict[str, SolverSpec],
               settings: AdaptiveDepthSettings) -> dict[str, dict[str, float]]:
    """Mean field evaluations per token of every per-token solver at each control u."""
    sums = {name: {u: 0.0 for u in settings.controls} for name, s in solvers.items()
            if s.is_per_token}
    tokens = 0
    for x, _ in batches:
        h0 = model.ode_input(x)
        tokens += x.numel()
        for u in settings.controls:
            uc = control_batch(model, u, x.shape[0], settings.axis)
            for name in sums:
                sums[name][u] += float(token_evals(model.ode.solve(h0, uc, solvers[name]),
                                                   x.shape).sum())
    return {name: {f"{u:+g}": total / tokens for u, total in row.items()}
            for name, row in sums.items()}


def steering_rates(inputs: DepthInputs, solvers: dict[str, SolverSpec],
                   settings: AdaptiveDepthSettings, progress: bool = False
                   ) -> dict[str, dict[str, Any]]:
    """Per solver: the judge's positive rate of open-ended continuations at each non-zero u,
    the probe share at every u, and the generation tokens/s (KV-cache decoding)."""
    from tqdm.auto import tqdm

    from steerflow.steer.open_ended import SamplingSpec, model_decode, sample_timed
    from steerflow.steer.prompts import encode_prompts
    from steerflow.steer.sentiment_probe import control_vectors, word_log_probs
    from steerflow.steer.settings import PROBE_PROMPT, PROBE_WORDS

    model, tokenizer = inputs.steered, inputs.steered.tokenizer
    spec = SamplingSpec(samples=settings.samples, max_new_tokens=settings.new_tokens,
                        seed=settings.seed)
    ids = encode_prompts(tokenizer, inputs.prompts, model.config.block_size - spec.max_new_tokens)
    out = {}
    for name, solver in tqdm(solvers.items(), desc="steering", disable=not progress, leave=False):
        rates, tokens, seconds = {}, 0, 0.0
        for u in settings.steering_us:
            u_vec = control_vectors([u], model.config.control_dim, settings.axis)  # (1, c)
            conts, timing = sample_timed(model_decode(model, spec, u_vec, solver), tokenizer,
                                         inputs.prompts, ids, spec)
            rates[f"{u:+g}"] = float(np.mean(inputs.judge.is_positive([c.text for c in conts])))
            tokens, seconds = tokens + timing.tokens, seconds + timing.seconds
        logp = word_log_probs(model, tokenizer, PROBE_PROMPT, PROBE_WORDS, settings.controls,
                              axis=settings.axis, solver=solver)  # (n_u, 2)
        share = {f"{u:+g}": float(1 / (1 + np.exp(bad - good)))
                 for u, (good, bad) in zip(settings.controls, logp.tolist())}
        out[name] = {"positive_rate": rates, "probe_share_good": share,
                     "generate_tokens_per_s": tokens / seconds if seconds else None}
    return out


# --------------------------------------------------------------------------- breakdowns
def evals_histogram(evals: torch.Tensor) -> dict[str, float]:
    """Share of tokens at each evaluation count (keys are counts)."""
    counts = torch.bincount(evals.reshape(-1))
    return {str(k): float(c) / evals.numel() for k, c in enumerate(counts.tolist()) if c}


def by_position(evals: list[torch.Tensor], bins: int) -> list[dict[str, Any]]:
    """Mean evaluations per token over position ranges of the window."""
    per_position = torch.cat(evals).double().mean(dim=0)  # (T,)
    edges = np.linspace(0, len(per_position), min(bins, len(per_position)) + 1).round().astype(int)
    return [{"positions": [int(lo), int(hi) - 1],
             "evals_per_token": float(per_position[lo:hi].mean())}
            for lo, hi in zip(edges[:-1], edges[1:])]


def frequency_edges(counts: np.ndarray, batches: Batches, bins: int) -> np.ndarray:
    """Training-split counts that cut the evaluated tokens into ``bins`` equal shares (rarest
    first); ties may make a share larger."""
    seen = counts[torch.cat([x.reshape(-1) for x, _ in batches]).cpu().numpy()]
    return np.quantile(seen, np.linspace(0, 1, bins + 1))


def by_frequency(evals: list[torch.Tensor], batches: Batches, counts: np.ndarray,
                 edges: np.ndarray) -> list[dict[str, Any]]:
    """Mean evaluations per token by how often the token occurs in the training split."""
    seen = counts[torch.cat([x.reshape(-1) for x, _ in batches]).cpu().numpy()]
    flat = torch.cat([e.reshape(-1) for e in evals]).double().numpy()
    which = np.clip(np.searchsorted(edges, seen, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        mask = which == b
        rows.append({"train_count": [int(edges[b]), int(edges[b + 1])],
                     "share": float(mask.mean()),
                     "evals_per_token": float(flat[mask].mean()) if mask.any() else None})
    return rows


def _row(spec: SolverSpec, tally: _Tally, before_s: float, inputs: DepthInputs,
         settings: AdaptiveDepthSettings, edges: np.ndarray) -> dict[str, Any]:
    evals = torch.cat([e.reshape(-1) for e in tally.evals])
    summary = tally.meter.summary()
    return {"solver": spec.describe(),
            "evals_per_token": float(evals.double().mean()),
            "evals_std": float(evals.double().std()) if evals.numel() > 1 else 0.0,
            "evals_histogram": evals_histogram(evals),
            "val_loss": summary["loss"],
            "invariance": {k: summary[k] for k in _INVARIANCE_KEYS},
            "tokens_per_s": evals.numel() / (before_s + tally.ode_s + tally.readout_s),
            "ode_tokens_per_s": evals.numel() / tally.ode_s,
            "by_position": by_position(tally.evals, settings.position_bins),
            "by_frequency": by_frequency(tally.evals, inputs.batches, inputs.counts, edges)}


def compare_to_fixed(row: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The row's differences from the fixed grid and whether it meets the targets."""
    loss_delta = row["val_loss"] - fixed["val_loss"]
    points = [abs(row["positive_rate"][u] - fixed["positive_rate"][u]) * 100
              for u in fixed["positive_rate"]]
    probe = [abs(row["probe_share_good"][u] - fixed["probe_share_good"][u]) * 100
             for u in fixed["probe_share_good"]]
    saving = 1 - row["evals_per_token"] / fixed["evals_per_token"]
    steering_delta = max(points) if points else 0.0
    return {"eval_saving": saving, "val_loss_delta": loss_delta,
            "val_loss_rel_delta": loss_delta / fixed["val_loss"],
            "steering_delta": steering_delta, "probe_delta": max(probe),
            "meets_target": bool(saving >= TARGETS["eval_saving"]
                                 and abs(loss_delta) <= TARGETS["val_loss_rel"] * fixed["val_loss"]
                                 and steering_delta <= TARGETS["steering_points"])}


def run_adaptive_depth(inputs: DepthInputs,
                       settings: AdaptiveDepthSettings = AdaptiveDepthSettings(),
                       progress: bool = False, command: Optional[str] = None) -> dict[str, Any]:
    """Measure every solver of :func:`study_solvers` on ``inputs``; the content of
    ``results.json``: ``points`` (one per tolerance), ``fixed_grid`` (the training solver),
    ``coarse`` (uniform Euler grids), ``fixed_grid_evals_per_token``, ``best`` (the fewest
    evaluations that meet the targets, or None) and the paper's statement."""
    from steerflow.io import machine_info

    solvers = study_solvers(inputs.model, settings)
    tallies, before_s = lm_pass(inputs.model, inputs.batches, solvers, settings.reference, progress)
    per_u = depth_by_u(inputs.steered, inputs.batches, solvers, settings)
    steering = steering_rates(inputs, solvers, settings, progress)
    edges = frequency_edges(inputs.counts, inputs.batches, settings.frequency_bins)
    rows = {name: {**_row(spec, tallies[name], before_s, inputs, settings, edges),
                   **steering[name], "by_u": per_u.get(name)} for name, spec in solvers.items()}
    fixed = rows.pop("fixed")
    for row in rows.values():
        row.update(compare_to_fixed(row, fixed))
    points = [{"tolerance": t, **rows[f"tol:{t!r}"]} for t in settings.tolerances]
    meeting = [p for p in points if p["meets_target"]]
    return {
        "experiment": "adaptive-depth",
        "checkpoint": inputs.checkpoint, "steered": inputs.steered_path,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine_info("cpu"), "torch_threads": torch.get_num_threads()},
        "command": command or "steerflow.experiments.adaptive_depth (Python API)",
        "tokens": int(sum(x.numel() for x, _ in inputs.batches)),
        "prompts": len(inputs.prompts), "samples": settings.samples,
        "new_tokens": settings.new_tokens, "reference": settings.reference.describe(),
        "fixed_grid_evals_per_token": fixed["evals_per_token"],
        "fixed_grid": fixed,
        "coarse": [{"steps": int(n.split(":")[1]), **rows[n]} for n in rows
                   if n.startswith("euler:")],
        "points": points,
        "best": min(meeting, key=lambda p: p["evals_per_token"]) if meeting else None,
        "targets": dict(TARGETS),
        "paper": dict(PAPER),
    }
