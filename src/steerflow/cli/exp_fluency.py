"""``steerflow experiment fluency``: which base gives the most fluency per CPU-minute?

Pretrains candidate hybrids for the same CPU time each: the small preset, and the preset with one
change each — width (d = 192, d = 96), depth (4, 8 layers), context (128 tokens), batch (16
sequences), tokenizer (bpe:2048, bpe:8192), learning rate (6e-3) or training text (a quarter of
the rows SST-2 sentences). Each candidate first times a few training steps, then trains for the
steps each --minutes budget buys (CPU time of all threads, which other jobs on the machine move
less than wall time) and is scored on the whole WikiText-2 validation split by word-level
perplexity (comparable across tokenizers). Last, a "combined" candidate takes every change that
beat the preset at the largest budget together (unless --no-combine). Writes results.json,
results.md and fluency.png (perplexity against measured CPU-minutes) to --out; resumable
candidate by candidate.

Duration: the sum of the budgets per candidate plus about a minute each, divided by the
threads in use: measured 54.5 minutes for the 11 single changes with the defaults ((2.5 + 5)
CPU-minutes each) and 5 more for the combined candidate, on 2 cores.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, echo_flags,
                                  positive_float)

#: flags echoed into results.json's "command" (the call that produced the numbers)
_ECHO = ("candidates", "minutes", "seed", "threads", "device", "out")


def add_parser(sub) -> None:
    from steerflow.pipeline.fluency import CANDIDATE_NAMES, DEFAULT_MINUTES

    p = add_subcommand(sub, "fluency", __doc__)
    p.add_argument("--candidates", default=None, metavar="A,B,...",
                   help=f"comma-separated candidates, the reference first (default: all: "
                        f"{','.join(CANDIDATE_NAMES)})")
    p.add_argument("--minutes", type=positive_float, nargs="+", default=None, metavar="M",
                   help=f"CPU-minute budgets of pretraining per candidate (default: "
                        f"{' '.join(f'{m:g}' for m in DEFAULT_MINUTES)})")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: 1337)")
    p.add_argument("--no-combine", dest="combine", action="store_false",
                   help="skip the last candidate, the helpful changes together")
    add_data_flags(p)
    add_common_flags(p, out="study folder: one subfolder per candidate, results.json, "
                            "results.md, fluency.png", out_default="runs/fluency",
                     device="auto", json="print results.json on stdout instead of the table")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):
    """The :class:`~steerflow.pipeline.fluency.FluencySettings` the flags ask for."""
    from steerflow.pipeline.fluency import FluencySettings

    given = {}
    if args.candidates is not None:
        given["candidates"] = tuple(c.strip() for c in args.candidates.split(",") if c.strip())
    if args.minutes is not None:
        given["minutes"] = tuple(args.minutes)
    if args.seed is not None:
        given["seed"] = args.seed
    return FluencySettings(**given)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import report_study
    from steerflow.pipeline.environment import Environment
    from steerflow.pipeline.fluency import run_fluency
    from steerflow.pipeline.fluency_report import format_report, write_fluency

    settings = settings_from(args)  # bad flags fail here, before any work
    env = Environment(data_dir=args.data_dir, cache_dir=args.cache_dir,
                      device=args.device or "auto", threads=args.threads, quiet=bool(args.quiet))
    result = run_fluency(settings, args.out, env, command=command_line(args),
                         combine=args.combine)
    written = write_fluency(result, args.out)
    return report_study(result, format_report(result), written, args.out, args.json)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (for the record in results.json)."""
    no_combine = [] if args.combine else ["--no-combine"]
    return " ".join(["steerflow", "experiment", "fluency"] + echo_flags(args, _ECHO) + no_combine)
