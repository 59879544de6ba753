"""Steered generation speed (``steerflow bench --peers``): single-pass ODE steering against the
decoding-time methods a user would steer with instead.

All on the preset's hybrid as the base, one prompt at a time (batch 1, as the steering evaluation
samples), nucleus sampling (top-p 0.9, seeded), the same prompt and the same number of new
tokens (no end-of-sequence stop), timed in alternating rounds:

* **unsteered** — the base at u = 0;
* **ode** — the same model at u = 1 with the control path the steering recipe trains (the mlp
  field's ``W_o u``, :func:`recipe_model`): one forward pass per token;
* **guidance** — guidance over u (:meth:`SteerFlowGPT.generate` with ``guidance``): the
  conditionals at u = 0, u and −u as one batch of three rows;
* **dexperts** — DExperts (:class:`~steerflow.steer.dexperts.DExperts`): the base, an expert and
  an anti-expert, three models of the base's shape (copies of it with perturbed weights: their
  cost is that of trained experts), each with its own KV cache;
* **actadd** — activation addition (:func:`~steerflow.steer.actadd.actadd`) of a fixed vector at
  the ODE block's input (a random direction: what it is does not change the cost).

Speeds are new tokens per second of generation wall time; ``ode_over_dexperts`` and
``ode_over_unsteered`` are medians of per-round ratios.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable

from steerflow.bench.options import BenchOptions
from steerflow.bench.peers import PeerMismatch, new_tokens
from steerflow.bench.timing import paired_ratio, time_alternating
from steerflow.config import ModelConfig

METHODS = ("unsteered", "ode", "guidance", "dexperts", "actadd")
#: the sampling every method uses
TOP_P = 0.9
#: the steering strengths (they do not change the cost): u, guidance γ, DExperts α, ActAdd c
U, GAMMA, ALPHA, COEF = 1.0, 2.0, 1.0, 4.0
#: std of the noise that makes the expert and anti-expert differ from the base
EXPERT_NOISE = 0.01


def recipe_model(base):
    """A copy of ``base`` with the steering recipe's control path ``W_o u`` (randomly set) where
    its field has one: the model ``steerflow demo`` steers in one pass."""
    import torch

    model = copy.deepcopy(base)
    field = model.ode.field if model.ode is not None else None
    if field is None or not hasattr(field, "add_control_out"):
        return model  # other fields take u through their own inputs
    field.add_control_out(model.config.control_dim, model.config.control_gain)
    with torch.no_grad():
        field.u_out.linear.weight.copy_(
            torch.randn(field.u_out.linear.weight.shape, generator=torch.Generator().manual_seed(0)))
    return model.to(next(base.parameters()).device).eval()


def perturbed_copy(model, seed: int):
    """A copy of ``model`` with N(0, EXPERT_NOISE²) added to every weight (same shape, same
    cost)."""
    import torch

    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in twin.parameters():
            param.add_(torch.randn(param.shape, generator=gen).to(param) * EXPERT_NOISE)
    return twin


def steering_calls(base, opts: BenchOptions, prompt, new: int) -> dict[str, Callable[[], object]]:
    """One generation call per method (module docstring), each of ``new`` tokens after
    ``prompt``."""
    import torch

    from steerflow.steer.actadd import actadd
    from steerflow.steer.dexperts import DExperts

    dexperts = DExperts(base, perturbed_copy(base, opts.seed + 1),
                        perturbed_copy(base, opts.seed + 2))
    vector = torch.randn(base.config.n_embd, generator=torch.Generator().manual_seed(opts.seed))
    vector = vector / vector.norm()  # (d,), unit length
    kw = dict(max_new_tokens=new, top_p=TOP_P, seed=opts.seed)

    steered = recipe_model(base)

    def generate(u: float, guidance=None, context=nullcontext, model=base) -> Callable[[], object]:
        def run():
            with context():
                return model.generate(prompt, u=u, guidance=guidance, **kw)
        return run

    return {
        "unsteered": generate(0.0),
        "ode": generate(U, model=steered),
        "guidance": generate(U, guidance=GAMMA),
        "dexperts": lambda: dexperts.generate(prompt, direction=1, alpha=ALPHA, **kw),
        "actadd": generate(0.0, context=lambda: actadd(base, vector.to(prompt.device), COEF)),
    }


def run_steer_speed(config: ModelConfig, opts: BenchOptions) -> dict:
    """Tokens/s of each method and the ODE's ratios: ``{"steer_speed": {...}}``."""
    import torch

    from steerflow.bench.benchmarks import random_ids
    from steerflow.model.gpt import SteerFlowGPT

    torch.manual_seed(opts.seed)
    base = SteerFlowGPT(config).to(opts.device).eval()
    prompt = random_ids(config.vocab_size, (1, opts.gen_prompt), opts.device, opts.seed + 3)
    new = new_tokens(config, opts)
    calls = steering_calls(base, opts, prompt, new)
    for name, call in calls.items():  # every method makes the same number of tokens
        out = call()
        if out.shape != (1, opts.gen_prompt + new):
            raise PeerMismatch(f"{name} generated {out.shape[1] - opts.gen_prompt} tokens where "
                               f"{new} were asked")
    t = time_alternating(calls, opts.peer_reps, min(opts.warmup, 1), opts.device, opts.clock)
    over_dexperts = paired_ratio(t["dexperts"], t["ode"])
    over_unsteered = paired_ratio(t["unsteered"], t["ode"])
    return {"steer_speed": {
        **{name: new / t[name].median for name in METHODS},
        "ode_over_dexperts": over_dexperts.median,
        "ode_over_unsteered": over_unsteered.median,
        "detail": {"ms": {name: t[name].as_dict() for name in METHODS},
                   "ode_over_dexperts": over_dexperts.as_dict(),
                   "ode_over_unsteered": over_unsteered.as_dict(),
                   "unit": "new tokens per second of generation wall time",
                   "batch": 1, "prompt_tokens": opts.gen_prompt, "new_tokens": new,
                   "sampling": f"top-p {TOP_P}, temperature 1, seeded",
                   "settings": {"u": U, "guidance": GAMMA, "dexperts_alpha": ALPHA,
                                "actadd_coef": COEF}},
    }}
