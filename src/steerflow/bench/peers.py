"""steerflow against Hugging Face ``transformers``' GPT-2 (``steerflow bench --peers``).

The two run the same weights. ``transformers`` builds a ``GPT2LMHeadModel`` (its own random
init, no download, its default SDPA attention) from the config of the preset's discrete
baseline (:func:`steerflow.hf.gpt2.gpt2_config`: same width, depth, context, vocabulary, GELU
and untied head, so the same parameter count); steerflow's baseline is loaded from it through
the converter's weight mapping (:func:`steerflow.hf.gpt2.to_steerflow`), and the two models'
logits must agree (:data:`LOGITS_ATOL`) before anything is timed, so both sides compute the same
thing. The hybrid (the preset's own configuration) has no ``transformers`` twin and is timed
against the same GPT-2 of the baseline's shape.

Three figures, each timed in alternating rounds with the three models side by side
(:mod:`steerflow.bench.timing`), in eval mode under ``torch.inference_mode`` for inference:
forward latency at ``batch_size × seq_len``; KV-cache greedy generation at batch 1 and 8
(``use_cache=True`` on both sides, no end-of-sequence stop, so every call makes the same tokens);
a training step (forward, cross-entropy, backward, clipping at 1.0, fused AdamW). A ratio is
``transformers``' time ÷ steerflow's per round, median over rounds: above 1 steerflow is faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from steerflow.bench.benchmarks import make_adamw, random_ids, train_step_fn
from steerflow.bench.options import BenchOptions
from steerflow.bench.timing import paired_ratio, time_alternating
from steerflow.config import ModelConfig
from steerflow.errors import ConfigError, SteerflowError

#: float32 logits of the two implementations of one GPT-2 differ by summation order only
#: (about 1e-6 at these widths); anything above this is a different computation
LOGITS_ATOL = 1e-4
#: transformers' attention implementation the comparison asks for
ATTENTION = "sdpa"
#: the three contenders, in the order of the alternating rounds
NAMES = ("transformers", "baseline", "hybrid")


class PeerMismatch(SteerflowError, RuntimeError):
    """Two contenders that must compute the same thing do not (e.g. ``transformers``' GPT-2 and
    steerflow's baseline on its weights disagree in their logits)."""


@dataclass
class Peers:
    """``transformers``' GPT-2, steerflow's baseline on its weights, and the hybrid."""

    transformers: object
    baseline: object
    hybrid: object
    config: ModelConfig          # the hybrid's
    logits_max_abs_diff: float


def transformers_gpt2(config: ModelConfig, device: str, seed: int):
    """A ``GPT2LMHeadModel`` of the discrete ``config``'s shape, randomly initialised, in eval
    mode."""
    import torch

    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise ConfigError("bench --peers compares with transformers; install it "
                          "(pip install 'steerflow[hf]')") from None
    from steerflow.hf.gpt2 import gpt2_config

    # SDPA is transformers' default attention; named so that the run says what it timed
    hf_config = GPT2Config(**gpt2_config(config, eos_id=None), attn_implementation=ATTENTION)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_config).to(device).eval()


def build_peers(config: ModelConfig, device: str, seed: int, check_ids) -> Peers:
    """The three models; raises :class:`PeerMismatch` unless the first two agree on
    ``check_ids``."""
    import torch

    from steerflow.hf.gpt2 import gpt2_config, model_config_from_gpt2, to_steerflow
    from steerflow.model.gpt import SteerFlowGPT

    hf = transformers_gpt2(config.as_baseline(), device, seed)
    ours = model_config_from_gpt2(gpt2_config(config.as_baseline(), None), "transformers GPT-2")
    baseline = SteerFlowGPT(ours).to(device)
    state = to_steerflow(hf.state_dict(), ours, "transformers GPT-2")
    baseline.load_state_dict(state, strict=True)
    torch.manual_seed(seed)
    hybrid = SteerFlowGPT(config).to(device)
    with torch.inference_mode():
        diff = float((hf(check_ids, use_cache=False).logits - baseline.eval()(check_ids)[0])
                     .abs().max())
    if not diff <= LOGITS_ATOL:
        raise PeerMismatch(f"transformers' GPT-2 and steerflow's baseline differ by {diff:.3g} in "
                           f"their logits (tolerance {LOGITS_ATOL:g}): the weight mapping is wrong")
    return Peers(hf, baseline, hybrid.eval(), config, diff)


def _ratios(t: dict) -> tuple[dict, dict]:
    """Per model: median of transformers' time ÷ its time per round, and the IQR of those."""
    medians, spreads = {}, {}
    for name in ("baseline", "hybrid"):
        r = paired_ratio(t["transformers"], t[name])
        medians[name], spreads[name] = r.median, r.as_dict()
    return medians, spreads


# ---------------------------------------------------------------------------- forward
def bench_peer_latency(p: Peers, opts: BenchOptions, T: int) -> tuple[dict, dict]:
    """Forward latency at ``batch_size × T``: (ratio per model, detail)."""
    import torch

    idx = random_ids(p.config.vocab_size, (opts.batch_size, T), opts.device, opts.seed)

    def forward(model, hf: bool = False) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(idx, use_cache=False) if hf else model(idx)
        return run

    t = time_alternating({"transformers": forward(p.transformers, hf=True),
                          "baseline": forward(p.baseline), "hybrid": forward(p.hybrid)},
                         opts.peer_reps, opts.warmup, opts.device, opts.clock)
    ratio, spread = _ratios(t)
    return ratio, {"ms": {name: t[name].as_dict() for name in NAMES}, "ratio": spread,
                   "batch": opts.batch_size, "seq_len": T}


# ---------------------------------------------------------------------------- generation
def new_tokens(config: ModelConfig, opts: BenchOptions) -> int:
    """``peer_gen_tokens``, or as many as the context leaves after the prompt."""
    new = min(opts.peer_gen_tokens, config.block_size - opts.gen_prompt)
    if new < 1:
        raise ConfigError(f"gen_prompt={opts.gen_prompt} leaves no room in the context "
                          f"{config.block_size}")
    return new


def _transformers_generate(model, prompt, new: int) -> Callable[[], object]:
    import torch
    from transformers import GenerationConfig

    # greedy, exactly `new` tokens (no end-of-sequence id to stop at), the KV cache on
    gen = GenerationConfig(max_new_tokens=new, do_sample=False, use_cache=True,
                           eos_token_id=None, bos_token_id=None, pad_token_id=0)
    mask = torch.ones_like(prompt)

    def run():
        with torch.inference_mode():
            return model.generate(prompt, attention_mask=mask, generation_config=gen)
    return run


def bench_peer_generate(p: Peers, opts: BenchOptions, batch: int) -> tuple[dict, dict]:
    """Greedy KV-cache generation at ``batch`` sequences: (ratio per model, detail)."""
    prompt = random_ids(p.config.vocab_size, (batch, opts.gen_prompt), opts.device, opts.seed + 1)
    new = new_tokens(p.config, opts)

    def ours(model) -> Callable[[], object]:
        return lambda: model.generate(prompt, max_new_tokens=new, greedy=True, use_cache=True)

    fns = {"transformers": _transformers_generate(p.transformers, prompt, new),
           "baseline": ours(p.baseline), "hybrid": ours(p.hybrid)}
    theirs, mine = fns["transformers"](), fns["baseline"]()
    if theirs.shape != mine.shape:
        raise PeerMismatch(f"transformers generated {tuple(theirs.shape)} ids where steerflow "
                           f"generated {tuple(mine.shape)}")
    t = time_alternating(fns, opts.peer_reps, min(opts.warmup, 1), opts.device, opts.clock)
    ratio, spread = _ratios(t)
    tokens = batch * new
    return ratio, {"tokens_per_s": {name: tokens / t[name].median for name in NAMES},
                   "ratio": spread, "batch": batch, "prompt_tokens": opts.gen_prompt,
                   "new_tokens": new,
                   # same weights, greedy: equal unless float32 rounding splits a near-tie
                   "same_tokens_as_transformers": float((theirs == mine).float().mean())}


# ---------------------------------------------------------------------------- training
def _transformers_step(model, idx) -> Callable[[], None]:
    """transformers' own loss: ``labels=idx`` (shifted inside), as a user trains it."""
    import torch

    model.train()
    opt = make_adamw(model.parameters())

    def step() -> None:
        loss = model(idx, labels=idx, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_peer_train(p: Peers, opts: BenchOptions, T: int) -> tuple[dict, dict]:
    """Training tokens/s at ``batch_size × T`` (the models' weights move: run it last)."""
    idx = random_ids(p.config.vocab_size, (opts.batch_size, T + 1), opts.device, opts.seed)
    x, y = idx[:, :-1], idx[:, 1:]
    fns = {"transformers": _transformers_step(p.transformers, x),
           "baseline": train_step_fn(p.baseline, x, y, p.baseline.config.train_solver,
                                     opts.device),
           "hybrid": train_step_fn(p.hybrid, x, y, p.config.train_solver, opts.device)}
    t = time_alternating(fns, opts.peer_reps, min(opts.warmup, 1), opts.device, opts.clock)
    ratio, spread = _ratios(t)
    tokens = opts.batch_size * T
    return ratio, {"tokens_per_s": {name: tokens / t[name].median for name in NAMES},
                   "step_ms": {name: t[name].as_dict() for name in NAMES}, "ratio": spread,
                   "hybrid_solver": p.config.train_solver.describe()}


# ---------------------------------------------------------------------------- the run
def run_peers(config: ModelConfig, opts: BenchOptions, T: int,
              say: Callable[[str], None] = lambda _m: None) -> dict:
    """Every peer figure: ``{"peers": {"baseline": {...}, "hybrid": {...}, ...}}`` (module doc)."""
    import transformers

    p = build_peers(config, opts.device, opts.seed,
                    random_ids(config.vocab_size, (2, min(T, 16)), opts.device, opts.seed + 2))
    figures: dict[str, dict] = {"baseline": {}, "hybrid": {}}
    detail: dict[str, dict] = {}

    def keep(key: str, measured: tuple[dict, dict]) -> None:
        ratio, detail[key] = measured
        for name in figures:
            figures[name][key] = ratio[name]

    say("peers: forward")
    keep("latency", bench_peer_latency(p, opts, T))
    for batch in opts.peer_gen_batches:
        say(f"peers: generation, batch {batch}")
        keep(f"generate_b{batch}", bench_peer_generate(p, opts, batch))
    say("peers: training")
    keep("train", bench_peer_train(p, opts, T))
    return {"peers": {
        **figures,
        "detail": detail,
        "agreement": {"logits_max_abs_diff": p.logits_max_abs_diff, "tolerance": LOGITS_ATOL},
        "transformers": {"version": transformers.__version__, "model": "GPT2LMHeadModel",
                         "attention": ATTENTION,
                         "params": p.transformers.num_parameters()},
        "params": {"baseline": p.baseline.num_params(), "hybrid": p.hybrid.num_params()},
        "ratio": "transformers' time / steerflow's, per round (above 1: steerflow is faster)",
    }}
