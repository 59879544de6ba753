"""The benchmarks of ``steerflow bench``, one function each: hybrid vs discrete baseline.

Every figure is a ratio of two contenders timed in alternating rounds on the same inputs (see
:mod:`steerflow.bench.timing`). The hybrid is the preset's own configuration (paper 1's
``mlp`` field, 4 Euler steps, adjoint gradients: the gradient-stability experiment's model) and the
baseline is :meth:`ModelConfig.as_baseline` of it. Token ids are random: the cost of a transformer
does not depend on which ids it reads. :func:`steerflow.bench.suite.run_bench` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from steerflow.bench.flops import flops_per_token
from steerflow.bench.memory import measure_step_memory
from steerflow.bench.options import BenchOptions
from steerflow.bench.timing import Timing, paired_ratio, synchronize, time_alternating
from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError


@dataclass
class Contenders:
    """The two models (eval mode) and the inputs every inference benchmark shares."""

    hybrid: object
    baseline: object
    idx: object          # (B, T) token ids
    solver: SolverSpec   # the training solver (paper 1: Euler, 4 steps)


def build_models(config: ModelConfig, device: str, seed: int):
    """Hybrid and baseline of the same shape, both initialised from ``seed``."""
    import torch

    from steerflow.model.gpt import SteerFlowGPT

    torch.manual_seed(seed)
    hybrid = SteerFlowGPT(config).to(device)
    torch.manual_seed(seed)
    baseline = SteerFlowGPT(config.as_baseline()).to(device)
    return hybrid, baseline


def random_ids(vocab_size: int, shape: Sequence[int], device: str, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, tuple(shape), generator=gen).to(device)


# ---------------------------------------------------------------------------- latency
def bench_latency(c: Contenders, config: ModelConfig, opts: BenchOptions) -> dict:
    """Forward pass (inference mode) hybrid / baseline, with the analytic FLOP ratio beside it."""
    import torch

    def forward(model) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(c.idx, solver=c.solver)
        return run

    t = time_alternating({"hybrid": forward(c.hybrid), "baseline": forward(c.baseline)},
                         opts.reps, opts.warmup, opts.device, opts.clock)
    T = c.idx.shape[1]
    h, b = flops_per_token(config, T, c.solver), flops_per_token(config.as_baseline(), T)
    ratio = paired_ratio(t["hybrid"], t["baseline"])
    flop_ratio = h.forward / b.forward
    return {
        "latency_ratio": ratio.median,
        "flop_ratio": flop_ratio,
        "latency_over_flop": ratio.median / flop_ratio,
        "latency": {"hybrid": t["hybrid"].as_dict(), "baseline": t["baseline"].as_dict(),
                    "ratio": ratio.as_dict(),
                    "gflops_per_batch": {"hybrid": h.forward * c.idx.numel() / 1e9,
                                         "baseline": b.forward * c.idx.numel() / 1e9}},
    }


def bench_compiled(c: Contenders, config: ModelConfig, opts: BenchOptions,
                   eager: Optional[dict] = None) -> dict:
    """Forward latency of ``torch.compile``-d models; compile time (the first call) apart.

    ``eager`` is :func:`bench_latency`'s result, for the compiled / eager speed-up of each model.
    """
    import time

    import torch

    compiled = {"hybrid": torch.compile(c.hybrid), "baseline": torch.compile(c.baseline)}
    compile_s = {}
    for name, model in compiled.items():
        synchronize(opts.device)
        start = time.perf_counter()
        with torch.inference_mode():
            model(c.idx, solver=c.solver)
        synchronize(opts.device)
        compile_s[name] = time.perf_counter() - start  # wall clock: compilation is not all CPU

    def forward(model) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(c.idx, solver=c.solver)
        return run

    t = time_alternating({name: forward(m) for name, m in compiled.items()}, opts.reps,
                         opts.warmup, opts.device, opts.clock)
    ratio = paired_ratio(t["hybrid"], t["baseline"])
    out = {"latency_ratio": ratio.median, "ratio": ratio.as_dict(), "compile_s": compile_s,
           "hybrid": t["hybrid"].as_dict(), "baseline": t["baseline"].as_dict()}
    if eager is not None:
        out["speedup_over_eager"] = {
            name: eager["latency"][name]["median_ms"] / (t[name].median * 1e3) for name in t}
    return {"compiled": out}


# ---------------------------------------------------------------------------- generation
def bench_generate(c: Contenders, config: ModelConfig, opts: BenchOptions) -> dict:
    """Greedy generation tokens/s: KV cache hybrid / baseline, and KV cache / full recompute."""
    prompt = random_ids(config.vocab_size, (opts.gen_batch, opts.gen_prompt), opts.device,
                        opts.seed + 1)
    new = min(opts.gen_tokens, config.block_size - opts.gen_prompt)
    if new < 1:
        raise ConfigError(f"gen_prompt={opts.gen_prompt} leaves no room in the context "
                          f"{config.block_size}")

    def gen(model, use_cache: bool) -> Callable[[], None]:
        def run() -> None:
            model.generate(prompt, max_new_tokens=new, greedy=True, solver=c.solver,
                           use_cache=use_cache)
        return run

    # the headline pair gets all the rounds; full recompute (4-10x slower) only a few
    t = time_alternating({"hybrid_cache": gen(c.hybrid, True),
                          "baseline_cache": gen(c.baseline, True)},
                         opts.gen_reps, min(opts.warmup, 1), opts.device, opts.clock)
    t.update(time_alternating({"hybrid_recompute": gen(c.hybrid, False),
                               "baseline_recompute": gen(c.baseline, False)},
                              min(opts.gen_reps, 3), 0, opts.device, opts.clock))
    tokens = new * opts.gen_batch
    ratio = paired_ratio(t["hybrid_cache"], t["baseline_cache"], invert=True)
    return {
        "generate_ratio": ratio.median,
        "generate": {
            "tokens_per_s": {name: tokens / timing.median for name, timing in t.items()},
            "ratio": ratio.as_dict(),
            "cache_speedup": {
                model: t[f"{model}_recompute"].median / t[f"{model}_cache"].median
                for model in ("hybrid", "baseline")},
            "batch": opts.gen_batch, "prompt_tokens": opts.gen_prompt, "new_tokens": new,
            "reps": opts.gen_reps,
        },
    }


# ---------------------------------------------------------------------------- training
def make_adamw(params, lr: float = 1e-4):
    """AdamW with the fused kernel (one pass over each parameter instead of a dozen ``foreach``
    passes: about 4x faster on CPU at the paper shapes), falling back where it is unsupported."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr)


def train_step_fn(model, idx, targets, solver: SolverSpec, device: str) -> Callable[[], None]:
    """One optimisation step: forward, cross-entropy, backward, clip at 1.0, AdamW, zero_grad.

    On CUDA the forward runs under bf16 autocast, as training on a GPU would.
    """
    import torch

    model.train()
    opt = make_adamw(model.parameters())
    autocast = device.startswith("cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(idx, targets=targets, solver=solver)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_train(config: ModelConfig, opts: BenchOptions, T: int, matmul: bool = False) -> dict:
    """Training tokens/s hybrid (adjoint, the paper's setting) / baseline; direct backprop beside.

    With ``matmul``, a large matmul joins the alternating rounds, for :func:`bench_mfu`.
    """
    hybrid, baseline = build_models(config, opts.device, opts.seed)
    direct, _ = build_models(config, opts.device, opts.seed)
    idx = random_ids(config.vocab_size, (opts.batch_size, T + 1), opts.device, opts.seed)
    x, y = idx[:, :-1], idx[:, 1:]
    solver = config.train_solver
    fns = {"hybrid": train_step_fn(hybrid, x, y, solver, opts.device),
           "baseline": train_step_fn(baseline, x, y, solver, opts.device),
           "hybrid_direct": train_step_fn(direct, x, y, solver.replace(adjoint=False),
                                          opts.device)}
    if matmul:
        fns["matmul"] = matmul_fn(opts.matmul_size, opts.device)[0]
    t = time_alternating(fns, opts.train_reps, min(opts.warmup, 1), opts.device, opts.clock)
    tokens = opts.batch_size * T
    ratio = paired_ratio(t["hybrid"], t["baseline"], invert=True)
    h = flops_per_token(config, T, solver)
    b = flops_per_token(config.as_baseline(), T)
    return {
        "train_ratio": ratio.median,
        "train": {
            "tokens_per_s": {name: tokens / t[name].median for name in fns if name != "matmul"},
            "step_ms": {name: t[name].as_dict() for name in fns if name != "matmul"},
            "ratio": ratio.as_dict(),
            "ratio_direct": paired_ratio(t["hybrid_direct"], t["baseline"], invert=True).median,
            "flop_ratio": h.training / b.training,
            "solver": solver.describe(),
        },
        "_train_timings": t,
    }


# ---------------------------------------------------------------------------- memory
def bench_memory(config: ModelConfig, opts: BenchOptions, T: int) -> dict:
    """Peak memory of a training step with many / few Euler steps, adjoint and direct backprop."""
    lo, hi = opts.memory_steps
    scopes = ("ode", "model") if opts.memory_model_scope else ("ode",)
    peaks: dict[str, dict[str, float]] = {}
    growth: dict[str, float] = {}
    method = ""
    for scope in scopes:
        for mode, adjoint in (("adjoint", True), ("direct", False)):
            mb = {}
            for steps in (lo, hi):
                m = measure_step_memory(config, SolverSpec(method="euler", steps=steps,
                                                           adjoint=adjoint),
                                        scope, batch_size=opts.batch_size, seq_len=T,
                                        device=opts.device, seed=opts.seed)
                mb[str(steps)] = m.peak_mb
                method = m.method
            peaks[f"{scope}_{mode}"] = mb
            growth[f"{scope}_{mode}"] = mb[str(hi)] / mb[str(lo)]
    out = {
        "adjoint_memory_growth": growth["ode_adjoint"],
        "direct_memory_growth": growth["ode_direct"],
        "memory": {"peak_mb": peaks, "growth": growth, "steps": [lo, hi], "method": method,
                   "scope": "ode = the ODE block's forward + backward; model = a whole training "
                            "step (forward, loss, backward, AdamW)"},
    }
    return out


# ---------------------------------------------------------------------------- MFU
def matmul_fn(n: int, device: str) -> tuple[Callable[[], object], float, str]:
    """An ``n × n`` matmul in the training dtype (fp32 on CPU, bf16 on CUDA), with its FLOPs."""
    import torch

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return (lambda: torch.mm(a, b)), 2.0 * n**3, str(dtype).replace("torch.", "")


def bench_mfu(config: ModelConfig, opts: BenchOptions, T: int,
              train_timings: Optional[dict[str, Timing]] = None) -> dict:
    """Achieved training FLOP/s (analytic count) / the measured peak of a large matmul.

    The matmul is timed in the same alternating rounds as the training steps (see
    :func:`bench_train`), so each round's MFU compares a step and the peak under the same load;
    the figure is the median over rounds. The peak is also reported as the fastest matmul seen.
    """
    if train_timings is None or "matmul" not in train_timings:
        train_timings = bench_train(config, opts, T, matmul=True)["_train_timings"]
    dtype = "bfloat16" if opts.device.startswith("cuda") else "float32"
    mm_flops = 2.0 * opts.matmul_size**3
    mm = train_timings["matmul"]
    tokens = opts.batch_size * T
    counts = {"hybrid": flops_per_token(config, T),
              "baseline": flops_per_token(config.as_baseline(), T),
              "hybrid_direct": flops_per_token(config, T, adjoint=False)}
    mfu = {}
    for name, count in counts.items():
        # per round: (FLOPs / step time) / (matmul FLOPs / matmul time)
        r = paired_ratio(mm, train_timings[name])
        mfu[name] = count.training * tokens / mm_flops * r.median
    return {
        "mfu": mfu["hybrid"],
        "mfu_detail": {
            "mfu": mfu,
            "achieved_gflops": {k: v.training * tokens / train_timings[k].median / 1e9
                                for k, v in counts.items()},
            "peak_gflops": mm_flops / mm.median / 1e9,
            "fastest_peak_gflops": mm_flops / min(mm.samples) / 1e9,
            "peak_matmul": {"n": opts.matmul_size, "dtype": dtype, **mm.as_dict()},
            "training_flops_per_token": {k: v.training for k, v in counts.items()},
        },
    }


# ---------------------------------------------------------------------------- solver overhead
def bench_solver(c: Contenders, config: ModelConfig, opts: BenchOptions) -> dict:
    """The ODE block alone: torchdiffeq's fixed-grid solver / steerflow's fused loop (same steps)."""
    import torch

    block = c.hybrid.ode
    B, T = c.idx.shape
    gen = torch.Generator().manual_seed(opts.seed)
    h = torch.randn(B, T, config.n_embd, generator=gen).to(opts.device)  # (B, T, d)
    u = torch.zeros(B, config.control_dim, device=opts.device)            # (B, c)
    fused = c.solver.replace(adjoint=False, fused=True)
    plain = c.solver.replace(adjoint=False, fused=False)

    def solve(spec: SolverSpec) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                block(h, u, spec)
        return run

    t = time_alternating({"torchdiffeq": solve(plain), "fused": solve(fused)},
                         opts.reps, opts.warmup, opts.device, opts.clock)
    ratio = paired_ratio(t["torchdiffeq"], t["fused"])
    return {
        "solver_overhead": ratio.median,
        "solver": {"torchdiffeq": t["torchdiffeq"].as_dict(), "fused": t["fused"].as_dict(),
                   "ratio": ratio.as_dict(), "solver": fused.describe(),
                   "max_abs_diff": _solver_difference(block, h, u, plain, fused)},
    }


def _solver_difference(block, h, u, plain: SolverSpec, fused: SolverSpec) -> float:
    """max |H(1)_torchdiffeq − H(1)_fused|: the two timed paths compute the same thing."""
    import torch

    with torch.inference_mode():
        return float((block(h, u, plain) - block(h, u, fused)).abs().max())


# ---------------------------------------------------------------------------- profile
def bench_profile(c: Contenders, config: ModelConfig, opts: BenchOptions, T: int) -> dict:
    """torch.profiler top operators of the forward pass, of KV-cache generation (the
    :func:`bench_generate` call) and of a training step, both models."""
    import torch

    from steerflow.bench.profile import top_ops

    def forward(model) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(c.idx, solver=c.solver)
        return run

    prompt = random_ids(config.vocab_size, (opts.gen_batch, opts.gen_prompt), opts.device,
                        opts.seed + 1)
    new = max(1, min(opts.gen_tokens, config.block_size - opts.gen_prompt))

    def generate(model) -> Callable[[], None]:
        return lambda: model.generate(prompt, max_new_tokens=new, greedy=True, solver=c.solver)

    models = (("hybrid", c.hybrid), ("baseline", c.baseline))
    out = {"forward": {name: top_ops(forward(m), device=opts.device) for name, m in models},
           "generate": {name: top_ops(generate(m), reps=1, device=opts.device)
                        for name, m in models}}
    hybrid, baseline = build_models(config, opts.device, opts.seed)
    idx = random_ids(config.vocab_size, (opts.batch_size, T + 1), opts.device, opts.seed)
    out["train"] = {name: top_ops(train_step_fn(m, idx[:, :-1], idx[:, 1:], config.train_solver,
                                                opts.device), reps=2, device=opts.device)
                    for name, m in (("hybrid", hybrid), ("baseline", baseline))}
    return {"profile": out}
