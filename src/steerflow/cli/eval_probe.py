"""``steerflow eval probe CKPT``: solver probing: NFE against u and tolerance, linear probes over
depth τ.

Measure what adaptive solvers see in the learned field: dopri5 and adaptive_heun NFE against the
control u (per batch and per example), dopri5 NFE against tolerance, and logistic-regression probes
of SST-2 sentiment on hidden states at depths τ of the ODE block. Writes results.json, table.md,
fig3.png, fig4.png and probe_accuracy.png to --out, with the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse

from steerflow.analysis.settings import ProbeSettings, field_defaults
from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, positive_float,
                                  positive_int)


def add_parser(sub) -> None:
    p = add_subcommand(sub, "probe", __doc__)
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (config.json + model.safetensors)")
    add_data_flags(p)
    p.add_argument("--batches", type=positive_int, default=2,
                   help="validation batches for NFE counting (default: 2)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="windows per batch (default: 8)")
    # the defaults of the settings' flags come from ProbeSettings (set_defaults below)
    p.add_argument("--examples", type=positive_int,
                   help="windows solved one by one for per-example NFE (default: 16)")
    p.add_argument("--us", type=float, nargs="+", metavar="U",
                   help="controls for NFE against u (default: -2 … 2 in steps of 0.5)")
    p.add_argument("--methods", nargs="+",
                   help="adaptive solvers for NFE against u (default: dopri5 adaptive_heun)")
    p.add_argument("--rtol", type=positive_float, help="rtol for NFE against u (default: 1e-3)")
    p.add_argument("--atol", type=positive_float, help="atol for NFE against u (default: 1e-4)")
    p.add_argument("--tolerances", type=positive_float, nargs="+", metavar="RTOL",
                   help="dopri5 rtol sweep, atol = rtol/10 (default: 1e-3 … 1e-7)")
    p.add_argument("--tolerance-us", type=float, nargs="+", metavar="U",
                   help="controls for the tolerance sweep (default: -1 0 1)")
    p.add_argument("--taus", type=float, nargs="+", metavar="TAU",
                   help="depths for the linear probes, from 0 to 1 (default: 0 … 1 incl. 0.5, 0.67)")
    p.add_argument("--probe-limit", type=positive_int,
                   help="use only the first N SST-2 dev sentences (default: all 872)")
    p.add_argument("--folds", type=positive_int,
                   help="cross-validation folds of the probes (default: 5)")
    p.add_argument("--no-probes", action="store_true", help="skip the linear probes")
    p.add_argument("--axis", type=int, help="control axis u is placed on (default: 0)")
    add_common_flags(p, out="folder for results.json, table.md and figures",
                     json="print one JSON object instead of tables")
    defaults = field_defaults(ProbeSettings)
    p.set_defaults(func=run, examples=defaults.pop("max_examples"), **defaults)


def run(args: argparse.Namespace) -> int:
    from steerflow.analysis.inputs import load_hybrid_with_batches, sst2_dev
    from steerflow.analysis.solver_probing import format_report, run_probe, write_probe
    from steerflow.cli.common import eprint, print_json, torch_threads

    settings = ProbeSettings(
        us=tuple(args.us), methods=tuple(args.methods), rtol=args.rtol, atol=args.atol,
        tolerances=tuple(args.tolerances), tolerance_us=tuple(args.tolerance_us),
        max_examples=args.examples, taus=tuple(args.taus), probe_limit=args.probe_limit,
        folds=args.folds, axis=args.axis)
    with torch_threads(args.threads):
        model, batches = load_hybrid_with_batches(args.checkpoint, args.device, args.data_dir,
                                                  args.cache_dir, args.batch_size, args.batches,
                                                  progress=not args.quiet)
        pairs = None if args.no_probes else sst2_dev(args.data_dir)
        result = run_probe(model, batches, pairs, settings, progress=not args.quiet)
        meta = {"checkpoint": str(args.checkpoint)}
        data = write_probe(result, args.out, meta) if args.out else {**meta, **result.as_dict()}
    if args.json:
        print_json(data)
    else:
        print(format_report(result))
        if args.out:
            eprint(f"wrote {args.out}/results.json, table.md, {', '.join(data['figures'])}")
    return 0
