"""``steerflow eval invariance CKPT``: solver invariance test: training solver vs dopri5 vs a
float64 reference.

Integrate the ODE block on real validation text with the checkpoint's training solver, with dopri5
at a tight tolerance and with a float64 reference, for each control u; report the paper's relative
divergence, the displacement divergence, KL / top-1 agreement / loss difference at the output,
tolerance and step sweeps, and a verdict per metric against 1%.
"""

from __future__ import annotations

import argparse

from steerflow.analysis.settings import REFERENCE_FLAG, InvarianceSettings, field_defaults
from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, positive_float,
                                  positive_int)


def add_parser(sub) -> None:
    p = add_subcommand(sub, "invariance", __doc__)
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (config.json + model.safetensors)")
    add_data_flags(p)
    p.add_argument("--split", choices=["valid", "test"], default="valid",
                   help="WikiText-2 split to evaluate on (default: valid)")
    p.add_argument("--batches", type=positive_int, default=4,
                   help="number of validation batches (default: 4)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="windows per batch (default: 8)")
    # the defaults of the settings' flags come from InvarianceSettings (set_defaults below)
    p.add_argument("--controls", type=float, nargs="+", metavar="U",
                   help="control values u (default: -1 0 1)")
    p.add_argument("--axis", type=int, help="control axis u is placed on (default: 0)")
    p.add_argument("--solver",
                   help="solver under test, e.g. euler:4 (default: the checkpoint's training solver)")
    p.add_argument("--reference", help="float32 reference solver, rtol after the colon, atol = "
                                       f"rtol/10 (default: {REFERENCE_FLAG})")
    p.add_argument("--tolerances", type=positive_float, nargs="+", metavar="RTOL",
                   help="dopri5 tolerance sweep (default: 1e-3 … 1e-8)")
    p.add_argument("--steps", type=positive_int, nargs="+", metavar="N",
                   help="step-count sweep of the training method (default: 1 … 32)")
    p.add_argument("--threshold", type=positive_float,
                   help="pass mark of every metric (default: 0.01 = 1%%)")
    add_common_flags(p, out="folder for results.json, table.md and invariance_sweeps.png",
                     json="print one JSON object instead of tables")
    p.set_defaults(func=run, **{**field_defaults(InvarianceSettings), "reference": REFERENCE_FLAG})


def run(args: argparse.Namespace) -> int:
    from steerflow.analysis.inputs import load_hybrid_with_batches
    from steerflow.analysis.invariance import FILES, format_report, run_invariance, write_invariance
    from steerflow.cli.common import eprint, print_json, torch_threads
    from steerflow.config import SolverSpec

    settings = InvarianceSettings(
        controls=tuple(args.controls),
        test_solver=SolverSpec.parse(args.solver) if args.solver else None,
        reference=SolverSpec.parse(args.reference),
        tolerances=tuple(args.tolerances), steps=tuple(args.steps), threshold=args.threshold,
        axis=args.axis)
    with torch_threads(args.threads):
        model, batches = load_hybrid_with_batches(args.checkpoint, args.device, args.data_dir,
                                                  args.cache_dir, args.batch_size, args.batches,
                                                  args.split, progress=not args.quiet)
        result = {"checkpoint": str(args.checkpoint), "split": args.split,
                  **run_invariance(model, batches, settings, progress=not args.quiet)}
        if args.out:
            write_invariance(result, args.out)
    if args.json:
        print_json(result)
    else:
        print(format_report(result))
        if args.out:
            eprint(f"wrote {args.out}/{', '.join(FILES)}")
    return 0
