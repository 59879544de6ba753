"""``steerflow analyze flow --hf SOURCE``: paper 2's discrete-stack measurements on any supported
Hugging Face causal LM (GPT-2, Llama, Mistral, Qwen2).

The model is read as ``x_{l+1} = x_l + f_l(x_l)`` through its own decoder layers
(:mod:`~steerflow.analysis.hf_stack`), in float64, and measured as steerflow's discrete layers
are: the ratio ``‖f_l(x)‖/‖x‖`` per token, the cosine of consecutive updates, the log-norm μ of
each branch's Jacobian per sequence (Lanczos on Jacobian-vector products,
:mod:`~steerflow.analysis.lognorm`) and the growth of an input perturbation through the stack
against ``exp(Σ μ_l)``, carried by Jacobian-vector products
(:func:`~steerflow.analysis.perturbation.stack_perturbation_growth`).

Inputs: with a tokenizer in the model's folder, the WikiText-2 validation text encoded with it;
otherwise uniformly random token ids from ``seed``. ``results.json`` says which (``inputs``).
:func:`run_hf_flow` computes; :func:`write_hf_flow` writes ``results.json`` (the keys of the
hybrid analysis; those of its ODE-only studies are null), ``report.md`` and the figures
``discrete_layers.png``, ``mu_hist.png`` and ``perturbation.png``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerflow.analysis.settings import HFFlowConfig
from steerflow.errors import CheckpointError, DataError

FIGURES = ("discrete_layers.png", "mu_hist.png", "perturbation.png")
#: the studies of a hybrid's ODE block, which a discrete stack does not have (null in results.json)
ODE_ONLY = ("order", "convergence", "refinement", "contractive")
#: characters of validation text tokenised per token needed, before trying the whole split
_CHARS_PER_TOKEN = 8


@dataclass
class HFFlowResult:
    """What :func:`run_hf_flow` measured: ``results`` (results.json's content, without the figure
    names), and for the figures the μ samples and the perturbation curve."""

    results: dict[str, Any]
    mu_samples: np.ndarray
    curve: dict[str, Any]


def encode_validation_text(tokenizer, data_dir, count: int) -> list[int]:
    """The first ``count`` token ids of the WikiText-2 validation text under ``tokenizer``."""
    from steerflow.data import resolve_data_source
    from steerflow.data.texts import load_lm_texts

    text = load_lm_texts(resolve_data_source(data_dir, require=("wikitext-2",)))["valid"]
    for chars in (count * _CHARS_PER_TOKEN, None):  # a prefix is enough for most tokenizers
        ids = tokenizer(text[:chars], add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) >= count:
            return ids[:count]
    raise DataError(f"the WikiText-2 validation text gives {len(ids)} tokens, fewer than the "
                    f"{count} asked for; lower --batch-size or --seq-len")


def analysis_tokens(stack, cfg: HFFlowConfig) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token ids ``(B, T)`` to analyse and results.json's description of them."""
    from steerflow.analysis.flow import first_batch
    from steerflow.analysis.hf_stack import load_tokenizer

    vocab = stack.model.config.vocab_size
    tokenizer = load_tokenizer(stack.folder, stack.source)
    if tokenizer is None:
        generator = torch.Generator().manual_seed(cfg.seed)
        idx = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len), generator=generator)
        return idx, {"kind": "random", "seed": cfg.seed, "description": f"random token ids "
                     f"(no tokenizer in the folder), seed {cfg.seed}"}
    ids = np.asarray(encode_validation_text(tokenizer, cfg.data_dir,
                                            cfg.batch_size * cfg.seq_len + 1))
    if ids.max() >= vocab:
        raise CheckpointError(f"{stack.source}: the tokenizer gives id {ids.max()} but the model's "
                              f"vocab_size is {vocab}")
    return first_batch(ids, cfg.batch_size, cfg.seq_len), {
        "kind": "text", "tokenizer": type(tokenizer).__name__,
        "description": f"WikiText-2 validation text, {type(tokenizer).__name__}"}


def run_hf_flow(cfg: HFFlowConfig, progress: bool = True) -> HFFlowResult:
    """Load ``cfg.source``, record its residual stack on the analysis tokens and measure it
    (nothing is written)."""
    from tqdm.auto import tqdm

    from steerflow.analysis.discrete import branch_log_norms, layer_stats
    from steerflow.analysis.flow import (bound_violations, perturbation_curve,
                                         perturbation_entry, summary)
    from steerflow.analysis.hf_stack import load_hf_stack, residual_updates
    from steerflow.analysis.perturbation import stack_perturbation_growth
    from steerflow.io import json_safe

    stack = load_hf_stack(cfg.source, cfg.device, progress, cfg.seq_len)
    idx, inputs = analysis_tokens(stack, cfg)
    updates = residual_updates(stack, idx.to(cfg.device))
    estimates = [branch_log_norms([upd], cfg.lanczos_iters, cfg.seed)[0] for upd in
                 tqdm(updates, desc="analyze flow --hf: log-norms", disable=not progress,
                      leave=False)]
    growth = stack_perturbation_growth(updates, estimates, cfg.seed, cfg.tolerance)
    mu = growth.mu.cpu().numpy()  # (L, B)
    results: dict[str, Any] = {
        "source": cfg.source, "checkpoint": cfg.source, "config": json_safe(asdict(cfg)),
        "model": stack.describe(), "inputs": inputs, "tokens_analysed": int(idx.numel()),
        "discrete": {"checkpoint": [row.as_dict() for row in layer_stats(updates, estimates)]},
        "mu": {**summary(mu), "grouping": growth.grouping, "lanczos_iters": cfg.lanczos_iters,
               "per_layer": {u.label: summary(m) for u, m in zip(updates, mu)}},
        "perturbation": {"stack": perturbation_entry(growth)},
        "bound_violations": bound_violations([growth], None),  # linearised: no eps
        **{key: None for key in ODE_ONLY},
        "notes": ["a discrete stack has no ODE block: " + ", ".join(ODE_ONLY) + " are null",
                  "exp(Σμ) is the bound of the ODE the stack discretises with unit Euler steps; "
                  "each block may exceed it by O(‖J_l‖²), so growth above it marks blocks that "
                  "are not ODE-like"]}
    if results["model"]["float32_parts"]:
        results["notes"].append(f"{results['model']['float32_parts']} computes in float32 inside "
                                f"transformers: μ carries float32 roundoff (~1e-7 relative)")
    return HFFlowResult(results, mu, perturbation_curve(growth))


def write_hf_flow(result: HFFlowResult, out: Path) -> dict[str, Any]:
    """Write the figures, ``results.json`` and ``report.md`` into ``out``; return what
    results.json holds (valid JSON, with the names of the figures)."""
    from steerflow.analysis import figures
    from steerflow.analysis.report import hf_markdown_report
    from steerflow.io import atomic_write_text, json_safe, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = result.results
    discrete, mu_hist, perturbation = FIGURES
    figures.discrete_figure(out / discrete, results["discrete"])
    layers, batch = result.mu_samples.shape
    figures.mu_histogram(out / mu_hist, {f"{layers} blocks x {batch} sequences":
                                         result.mu_samples.ravel()},
                         "Log-norm of each block's residual branch (per sequence)",
                         xlabel="mu = lambda_max((J + J^T)/2) of f_l")
    figures.perturbation_figure(out / perturbation, {"stack": result.curve}, depth="layer")
    results["figures"] = sorted(p.name for p in out.glob("*.png"))
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", hf_markdown_report(results))
    return json_safe(results)
