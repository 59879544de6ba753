"""``steerflow bench``: benchmark the hybrid against the discrete baseline, side by side.

Time the hybrid (the preset's ODE configuration) against its discrete baseline in one process:
forward latency with the analytic FLOP ratio, KV-cache generation, training throughput, peak
training-step memory with 4 vs 64 Euler steps (adjoint and direct backprop), MFU against a measured
matmul peak, and torchdiffeq's per-step overhead against the fused loop. --peers times steerflow
against what a user would pick instead: transformers' GPT2LMHeadModel on the same weights
(forward, KV-cache generation at batch 1 and 8, training), single-pass ODE steering against
guidance, DExperts and ActAdd, and the command line's start-up. Runs alternate between the
contenders; figures are medians with spreads.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_subcommand, positive_int
from steerflow.errors import InputError


def _benchmark_list(text: str) -> tuple[str, ...]:
    from steerflow.bench.options import ALL_BENCHMARKS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_BENCHMARKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {unknown or [text]}; choose from {', '.join(ALL_BENCHMARKS)}")
    return names


def add_parser(sub) -> None:
    p = add_subcommand(sub, "bench", __doc__)
    p.add_argument("--config", choices=["tiny", "small", "paper", "gpt2"], default=None,
                   help="preset to benchmark (default: paper; tiny with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="the CI smoke test: tiny config, few repetitions, under a minute")
    p.add_argument("--batch-size", type=positive_int, default=8, help="sequences per batch (8)")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="tokens per sequence (default: min(128, context length))")
    p.add_argument("--gen-batch", type=positive_int, default=None,
                   help="sequences generated at once (default: --batch-size)")
    p.add_argument("--reps", type=positive_int, default=None,
                   help="timed rounds of the latency, solver, generation and peer benchmarks "
                        "(default 7, 7, 9, 5; quick 5, 5, 3, 3)")
    p.add_argument("--peers", action="store_true",
                   help="time steerflow against transformers' GPT-2 (same weights), the steering "
                        "methods and the command line's start-up instead (= --only "
                        "peers,steer_speed,startup)")
    p.add_argument("--only", type=_benchmark_list, default=None,
                   help="comma-separated subset of: latency,generate,train,memory,mfu,solver,"
                        "peers,steer_speed,startup")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 with --quick)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time (default) or process CPU time, which excludes waiting for a core "
                        "on a machine shared with other jobs (CPU only)")
    p.add_argument("--malloc", choices=["reuse", "system"], default=None,
                   help="reuse: keep freed tensor memory in glibc's heap instead of unmapping it "
                        "(default; quick: system)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile-d forward passes (compile time reported apart)")
    p.add_argument("--profile", action="store_true",
                   help="also record torch.profiler top operators of the forward pass and the "
                        "training step, hybrid beside baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace):
    from steerflow.bench.options import BENCHMARKS, PEER_BENCHMARKS, BenchOptions

    if args.peers and args.only:
        raise InputError("--peers is --only peers,steer_speed,startup; give one of the two")
    only = args.only or (PEER_BENCHMARKS if args.peers else BENCHMARKS)
    overrides = {"batch_size": args.batch_size, "seq_len": args.seq_len, "device": args.device,
                 "clock": args.clock, "only": only, "profile": args.profile,
                 "compile": args.compile}
    if args.threads:
        overrides["threads"] = args.threads
    if args.gen_batch:
        overrides["gen_batch"] = args.gen_batch
    if args.malloc:
        overrides["malloc"] = args.malloc
    if args.config:
        overrides["config"] = args.config
    if args.reps:
        overrides["reps"] = overrides["gen_reps"] = overrides["peer_reps"] = args.reps
    if not args.device.startswith(("cpu", "cuda")):
        raise InputError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.quick:
        return BenchOptions.quick_options(**overrides)
    return BenchOptions(**overrides)


def run(args: argparse.Namespace) -> int:
    from steerflow.bench.report import format_report
    from steerflow.bench.suite import run_bench, write_bench
    from steerflow.cli.common import eprint, print_json

    opts = _options(args)
    result = run_bench(opts, progress=lambda name: eprint(f"steerflow bench: {name} ..."))
    if args.out:
        write_bench(result, args.out)
    if args.json:
        print_json(result)
    else:
        print(format_report(result))
    return 0
