"""``steerflow eval invariance CKPT``: the solver invariance test (paper 1, Experiment 3)."""

from __future__ import annotations

import argparse

from steerflow.cli.common import output_folder, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "invariance",
        help="solver invariance test: training solver vs dopri5 vs a float64 reference",
        description="Integrate the ODE block on real validation text with the checkpoint's "
                    "training solver, with dopri5 at a tight tolerance and with a float64 "
                    "reference, for each control u; report the paper's relative divergence, the "
                    "displacement divergence, KL / top-1 agreement / loss difference at the output, "
                    "tolerance and step sweeps, and a verdict per metric against 1%.")
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--data-dir", default=None,
                   help="data folder with wikitext-2/ (default: $STEERFLOW_DATA, else the Hub)")
    p.add_argument("--cache-dir", default=None,
                   help="token cache folder (default: $STEERFLOW_CACHE or ~/.cache/steerflow)")
    p.add_argument("--split", choices=["valid", "test"], default="valid",
                   help="WikiText-2 split to evaluate on (default: valid)")
    p.add_argument("--batches", type=positive_int, default=4,
                   help="number of validation batches (default: 4)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="windows per batch (default: 8)")
    p.add_argument("--controls", type=float, nargs="+", default=[-1.0, 0.0, 1.0], metavar="U",
                   help="control values u (default: -1 0 1)")
    p.add_argument("--axis", type=int, default=0, help="control axis u is placed on (default: 0)")
    p.add_argument("--solver", default=None,
                   help="solver under test, e.g. euler:4 (default: the checkpoint's training solver)")
    p.add_argument("--reference", default="dopri5:1e-6",
                   help="float32 reference solver, rtol after the colon, atol = rtol/10 "
                        "(default: dopri5:1e-6)")
    p.add_argument("--tolerances", type=positive_float, nargs="+",
                   default=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], metavar="RTOL",
                   help="dopri5 tolerance sweep (default: 1e-3 … 1e-8)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16, 32],
                   metavar="N", help="step-count sweep of the training method (default: 1 … 32)")
    p.add_argument("--threshold", type=positive_float, default=0.01,
                   help="pass mark of every metric (default: 0.01 = 1%%)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for small "
                        "models on a busy machine)")
    p.add_argument("--out", type=output_folder, default=None,
                   help="folder for results.json, table.md and invariance_sweeps.png")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from steerflow.cli.common import eprint, json_safe, load_model, print_json
    from steerflow.config import SolverSpec
    from steerflow.eval.invariance import (
        InvarianceSettings, format_report, plot_sweeps, require_hybrid, run_invariance,
        validation_batches)
    from steerflow.io import atomic_write_text

    settings = InvarianceSettings(
        controls=tuple(args.controls),
        test_solver=SolverSpec.parse(args.solver) if args.solver else None,
        reference=SolverSpec.parse(args.reference),
        tolerances=tuple(args.tolerances), steps=tuple(args.steps), threshold=args.threshold,
        axis=args.axis)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, args.device)
    require_hybrid(model)
    batches = validation_batches(model, args.data_dir, args.cache_dir, args.batch_size,
                                 args.batches, args.split, progress=not args.quiet)
    batches = [(x.to(args.device), y.to(args.device)) for x, y in batches]
    result = {"checkpoint": str(args.checkpoint), "split": args.split,
              **run_invariance(model, batches, settings, progress=not args.quiet)}
    report = format_report(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(json_safe(result), indent=2) + "\n")
        atomic_write_text(out / "table.md", report + "\n")
        plot_sweeps(result, out / "invariance_sweeps.png")
    if args.json:
        print_json(result)
    else:
        print(report)
        if args.out:
            eprint(f"wrote {args.out}/results.json, table.md, invariance_sweeps.png")
    return 0
