"""``steerflow demo``: the main job: train, steer, evaluate and report (≈10 min on 2 CPU cores).

Prepare WikiText-2 and SST-2, train a discrete baseline and a hybrid LM, train the ODE block to
follow u, generate at u = -1, 0, +1, run the paper probe and an open-ended evaluation with two
judges, the solver invariance test, solver probing, and a quick benchmark; write report.md,
report.json, figures and checkpoints into --out. Re-running with the same --out reuses finished
stages, so an interrupted demo resumes.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_common_flags, add_data_flags, add_subcommand, output_folder


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``demo`` and ``reproduce``: the data folders and the common flags."""
    add_data_flags(p)
    add_common_flags(p, device="auto", json="print report.json on stdout at the end")


def add_parser(sub) -> None:
    p = add_subcommand(sub, "demo", __doc__)
    p.add_argument("--out", type=output_folder, default="runs/demo",
                   help="run folder (default runs/demo)")
    p.add_argument("--config", default="small", choices=["tiny", "small"],
                   help="small: the real demo (default); tiny: a smoke run in about a minute")
    add_run_options(p)
    p.set_defaults(func=run)


def environment(args: argparse.Namespace):
    from steerflow.pipeline.demo import Environment

    return Environment(data_dir=args.data_dir, cache_dir=args.cache_dir,
                       device=args.device or "auto", threads=args.threads, quiet=bool(args.quiet))


def finish(report: dict, args: argparse.Namespace) -> int:
    from steerflow.cli.common import eprint, print_json

    if args.json:
        print_json(report)
    elif not args.quiet:
        eprint(f"report: {args.out}/report.md ({report['elapsed_s'] / 60:.1f} min)")
    return 0


def run(args: argparse.Namespace) -> int:
    from steerflow.pipeline.demo import SCALES, run_pipeline

    report = run_pipeline(args.out, SCALES[args.config], environment(args))
    return finish(report, args)
