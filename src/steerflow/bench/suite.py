"""The benchmarks of ``steerflow bench``: hybrid vs discrete baseline, side by side in one process.

Every figure is a ratio of two contenders timed in alternating rounds on the same inputs (see
:mod:`steerflow.bench.timing`). The hybrid is the preset's own configuration (paper 1's
``mlp`` field, 4 Euler steps, adjoint gradients: the gradient-stability experiment's model) and the
baseline is :meth:`ModelConfig.as_baseline` of it. Token ids are random: the cost of a transformer
does not depend on which ids it reads.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from steerflow.bench.flops import flops_per_token
from steerflow.bench.memory import measure_step_memory
from steerflow.bench.runtime import reuse_freed_memory, set_threads
from steerflow.bench.timing import Timing, paired_ratio, synchronize, time_alternating
from steerflow.config import PRESETS, ModelConfig, SolverSpec
from steerflow.errors import ConfigError
from steerflow.io import machine_info
from steerflow.experiments.paper import BENCH_LATENCY_TARGETS as LATENCY_TARGETS
from steerflow.experiments.paper import BENCH_TARGETS as TARGETS

#: the benchmarks, in the order they run
BENCHMARKS = ("latency", "generate", "train", "memory", "mfu", "solver")



@dataclass
class BenchOptions:
    """What to run and at which shapes. :meth:`quick` gives the CI smoke-test settings."""

    config: str = "paper"
    batch_size: int = 8
    seq_len: Optional[int] = None          # default: min(128, block_size)
    reps: int = 7
    warmup: int = 2
    train_reps: int = 5
    gen_batch: Optional[int] = None        # default: batch_size
    gen_prompt: int = 16
    gen_tokens: int = 64
    gen_reps: int = 9
    memory_steps: tuple[int, int] = (4, 64)
    memory_model_scope: bool = True        # also measure whole-model training steps
    matmul_size: int = 4096
    device: str = "cpu"
    threads: Optional[int] = None
    clock: str = "wall"
    malloc: str = "reuse"                  # "reuse": keep freed memory in the heap (runtime.py)
    seed: int = 0
    only: tuple[str, ...] = BENCHMARKS
    profile: bool = False                  # also record torch.profiler top operators
    compile: bool = False                  # also time torch.compile-d forward passes
    quick: bool = False

    def __post_init__(self) -> None:
        if self.config not in PRESETS:
            raise ConfigError(f"unknown config {self.config!r}; presets are {', '.join(PRESETS)}")
        unknown = sorted(set(self.only) - set(BENCHMARKS))
        if unknown:
            raise ConfigError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        if self.gen_batch is None:
            self.gen_batch = self.batch_size
        for name in ("batch_size", "reps", "train_reps", "gen_batch", "gen_prompt", "gen_tokens",
                     "gen_reps", "matmul_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench option {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")
        if self.malloc not in ("reuse", "system"):
            raise ConfigError(f"malloc must be 'reuse' or 'system', got {self.malloc!r}")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        lo, hi = self.memory_steps
        if not 1 <= lo < hi:
            raise ConfigError(f"memory_steps must be two step counts 1 <= a < b, got {self.memory_steps}")

    @classmethod
    def quick_options(cls, **overrides) -> "BenchOptions":
        """The ``--quick`` settings: ``tiny`` config, few repetitions (well under a minute)."""
        # one thread: the tiny model is overhead-bound, and on a shared machine a second OpenMP
        # thread mostly waits at barriers for a descheduled sibling; the system allocator: tiny
        # tensors stay below glibc's mmap threshold anyway, and the caller's process (e.g. a test
        # session) keeps its allocator settings
        values = dict(config="tiny", reps=5, warmup=1, train_reps=3, gen_prompt=8, gen_tokens=16,
                      gen_reps=3, matmul_size=512, memory_model_scope=False, threads=1,
                      malloc="system", quick=True)
        values.update(overrides)
        return cls(**values)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_name(self.config)

    def resolved_seq_len(self, config: ModelConfig) -> int:
        T = self.seq_len if self.seq_len is not None else min(128, config.block_size)
        if not 1 <= T <= config.block_size:
            raise ConfigError(f"seq_len must be in [1, {config.block_size}] for config "
                              f"{self.config!r}, got {T}")
        return T


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
    """torch.profiler top operators of the forward pass and of a training step, both models."""
    import torch

    from steerflow.bench.profile import top_ops

    def forward(model) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(c.idx, solver=c.solver)
        return run

    out = {"forward": {name: top_ops(forward(m), device=opts.device)
                       for name, m in (("hybrid", c.hybrid), ("baseline", c.baseline))}}
    hybrid, baseline = build_models(config, opts.device, opts.seed)
    idx = random_ids(config.vocab_size, (opts.batch_size, T + 1), opts.device, opts.seed)
    out["train"] = {name: top_ops(train_step_fn(m, idx[:, :-1], idx[:, 1:], config.train_solver,
                                                opts.device), reps=2, device=opts.device)
                    for name, m in (("hybrid", hybrid), ("baseline", baseline))}
    return {"profile": out}


# ---------------------------------------------------------------------------- the whole run
def check_targets(result: dict, config_name: str) -> dict[str, dict]:
    """Each target of issue 8 that this run measured: value, bound and whether it is met.

    The targets are stated for the ``paper`` and ``gpt2`` shapes; other configs get none.
    """
    if config_name not in LATENCY_TARGETS:
        return {}
    targets = dict(TARGETS)
    targets["latency_ratio"] = ("<=", LATENCY_TARGETS[config_name])
    report = {}
    for key, (op, bound) in targets.items():
        if key in result:
            value = result[key]
            met = value <= bound if op == "<=" else value >= bound
            report[key] = {"value": value, "target": f"{op} {bound:g}", "met": bool(met)}
    return report


def _configure_runtime(opts: BenchOptions) -> dict:
    """Threads and allocator for this process, as the run's options ask; returns what took effect."""
    threads = set_threads(opts.threads)
    malloc = "reuse" if opts.malloc == "reuse" and reuse_freed_memory() else "system"
    return {"threads": threads, "malloc": malloc}


def run_bench(opts: BenchOptions, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run the selected benchmarks and return one JSON-ready dict (see ``steerflow bench``).

    Sets this process's torch threads (``opts.threads``) and, with ``opts.malloc == "reuse"``,
    its allocator thresholds (:mod:`steerflow.bench.runtime`) for the rest of its life.
    """
    import torch

    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {opts.device!r} requested but CUDA is not available")
    config = opts.model_config()
    T = opts.resolved_seq_len(config)
    runtime = _configure_runtime(opts)
    say = progress or (lambda _msg: None)
    result: dict = {
        "config": opts.config,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(opts.device),
        "shapes": {"batch_size": opts.batch_size, "seq_len": T},
        "options": {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in dataclasses.asdict(opts).items()},
        "runtime": runtime,
        "hybrid": {"layers": config.layer_layout(), "solver": config.train_solver.describe()},
    }
    hybrid, baseline = build_models(config, opts.device, opts.seed)
    contenders = Contenders(hybrid=hybrid.eval(), baseline=baseline.eval(),
                            idx=random_ids(config.vocab_size, (opts.batch_size, T), opts.device,
                                           opts.seed),
                            solver=config.train_solver)
    result["params"] = {"hybrid": hybrid.num_params(), "baseline": baseline.num_params()}
    train_timings = None
    for name in BENCHMARKS:
        if name not in opts.only:
            continue
        say(name)
        if name == "latency":
            result.update(bench_latency(contenders, config, opts))
        elif name == "generate":
            result.update(bench_generate(contenders, config, opts))
        elif name == "train":
            out = bench_train(config, opts, T, matmul="mfu" in opts.only)
            train_timings = out.pop("_train_timings")
            result.update(out)
        elif name == "memory":
            result.update(bench_memory(config, opts, T))
        elif name == "mfu":
            result.update(bench_mfu(config, opts, T, train_timings))
        elif name == "solver":
            result.update(bench_solver(contenders, config, opts))
        synchronize(opts.device)
    if opts.compile:
        say("compiled latency")
        eager = result if "latency" in result else None
        result.update(bench_compiled(contenders, config, opts, eager))
    if opts.profile:
        say("profile")
        result.update(bench_profile(contenders, config, opts, T))
    result["machine"]["load_average_end"] = machine_info(opts.device)["load_average"]
    result["targets"] = check_targets(result, opts.config)
    return result


#: the top-level keys every full run reports (each a finite positive number)
HEADLINE_KEYS = ("latency_ratio", "flop_ratio", "latency_over_flop", "generate_ratio",
                 "train_ratio", "adjoint_memory_growth", "direct_memory_growth", "mfu",
                 "solver_overhead")


def headline(result: dict) -> dict[str, float]:
    """The headline numbers of a result, for tables and checks."""
    return {k: result[k] for k in HEADLINE_KEYS if k in result and math.isfinite(result[k])}
