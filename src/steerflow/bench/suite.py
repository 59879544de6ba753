"""``steerflow bench`` as a library: :func:`run_bench` runs the selected benchmarks
(:mod:`steerflow.bench.benchmarks`) in one process and :func:`write_bench` saves the result.

The hybrid is the preset's own configuration and the baseline :meth:`ModelConfig.as_baseline` of
it; every figure is a ratio of the two timed side by side, with the machine it ran on.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from pathlib import Path
from typing import Callable, Optional, Union

from steerflow.bench.benchmarks import (Contenders, bench_compiled, bench_generate, bench_latency,
                                        bench_memory, bench_mfu, bench_profile, bench_solver,
                                        bench_train, build_models, random_ids)
from steerflow.bench.options import BENCHMARKS, BenchOptions
from steerflow.bench.runtime import reuse_freed_memory, set_threads
from steerflow.bench.timing import synchronize
from steerflow.errors import ConfigError
from steerflow.experiments.paper import BENCH_LATENCY_TARGETS as LATENCY_TARGETS
from steerflow.experiments.paper import BENCH_PEER_TARGETS as PEER_TARGETS
from steerflow.experiments.paper import BENCH_STARTUP_TARGETS as STARTUP_TARGETS
from steerflow.experiments.paper import BENCH_TARGETS as TARGETS
from steerflow.io import machine_info, write_json


# ---------------------------------------------------------------------------- the whole run
def lookup(result: dict, key: str):
    """``result["a"]["b"]`` for the dotted key ``"a.b"``; None where it is missing."""
    value = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_targets(result: dict, config_name: str) -> dict[str, dict]:
    """Each target that this run measured: value, bound and whether it is met.

    The model targets are stated for the ``paper`` and ``gpt2`` shapes (other configs get
    none); the start-up targets for any config.
    """
    targets = dict(STARTUP_TARGETS)
    if config_name in LATENCY_TARGETS:
        targets.update(TARGETS)
        targets.update(PEER_TARGETS)
        targets["latency_ratio"] = ("<=", LATENCY_TARGETS[config_name])
    report = {}
    for key, (op, bound) in targets.items():
        value = lookup(result, key)
        if isinstance(value, (int, float)):
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
    own = [name for name in BENCHMARKS if name in opts.only]
    if own or opts.compile or opts.profile:
        result.update(_run_own(config, opts, T, own, say))
    result.update(run_peer_benchmarks(config, opts, T, say))
    result["machine"]["load_average_end"] = machine_info(opts.device)["load_average"]
    result["targets"] = check_targets(result, opts.config)
    return result


def _run_own(config, opts: BenchOptions, T: int, names: list[str],
             say: Callable[[str], None]) -> dict:
    """The benchmarks of the hybrid against its own baseline (``names``), in :data:`BENCHMARKS`
    order, then the compiled forward and the profile when ``opts`` asks for them."""
    hybrid, baseline = build_models(config, opts.device, opts.seed)
    contenders = Contenders(hybrid=hybrid.eval(), baseline=baseline.eval(),
                            idx=random_ids(config.vocab_size, (opts.batch_size, T), opts.device,
                                           opts.seed),
                            solver=config.train_solver)
    result: dict = {"params": {"hybrid": hybrid.num_params(), "baseline": baseline.num_params()}}
    train_timings = None
    for name in names:
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
    return result


def run_peer_benchmarks(config, opts: BenchOptions, T: int, say: Callable[[str], None]) -> dict:
    """The ``--peers`` benchmarks that ``opts.only`` names: against transformers, the steering
    methods, the command line's start-up."""
    result: dict = {}
    if "peers" in opts.only:
        from steerflow.bench.peers import run_peers

        result.update(run_peers(config, opts, T, say))
    if "steer_speed" in opts.only:
        from steerflow.bench.steer_speed import run_steer_speed

        say("steered generation")
        result.update(run_steer_speed(config, opts))
    if "startup" in opts.only:
        from steerflow.bench.startup import run_startup

        say("start-up")
        result.update(run_startup(opts))
    return result


#: the top-level keys every full run reports (each a finite positive number)
HEADLINE_KEYS = ("latency_ratio", "flop_ratio", "latency_over_flop", "generate_ratio",
                 "train_ratio", "adjoint_memory_growth", "direct_memory_growth", "mfu",
                 "solver_overhead")
#: the (dotted) keys every ``--peers`` run reports (each a finite positive number)
PEER_KEYS = tuple(f"peers.{model}.{figure}" for model in ("baseline", "hybrid")
                  for figure in ("latency", "generate_b1", "generate_b8", "train")) + tuple(
    f"steer_speed.{key}" for key in ("ode", "guidance", "dexperts", "actadd", "unsteered",
                                     "ode_over_dexperts", "ode_over_unsteered")) + tuple(
    f"startup.{key}" for key in ("time_to_first_token_s", "help_s", "import_s"))


def headline(result: dict) -> dict[str, float]:
    """The headline numbers of a result, for tables and checks."""
    return {k: result[k] for k in HEADLINE_KEYS if k in result and math.isfinite(result[k])}


def write_bench(result: dict, path: Union[str, os.PathLike]) -> Path:
    """Write a :func:`run_bench` result as JSON (non-finite numbers as ``null``) to ``path``
    atomically; return the path."""
    path = Path(path)
    write_json(path, result)
    return path
