"""``steerflow eval probe CKPT``: solver probing (NFE vs u, NFE vs tolerance, linear probes)."""

from __future__ import annotations

import argparse

from steerflow.cli.common import output_folder, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="solver probing: NFE against u and tolerance, linear probes over depth τ",
        description="Measure what adaptive solvers see in the learned field: dopri5 and "
                    "adaptive_heun NFE against the control u (per batch and per example), dopri5 "
                    "NFE against tolerance, and logistic-regression probes of SST-2 sentiment on "
                    "hidden states at depths τ of the ODE block. Writes results.json, table.md, "
                    "fig3.png, fig4.png and probe_accuracy.png to --out, with the paper's numbers "
                    "beside ours.")
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--data-dir", default=None,
                   help="data folder with wikitext-2/ and sst2/ (default: $STEERFLOW_DATA, else "
                        "the Hub)")
    p.add_argument("--cache-dir", default=None,
                   help="token cache folder (default: $STEERFLOW_CACHE or ~/.cache/steerflow)")
    p.add_argument("--batches", type=positive_int, default=2,
                   help="validation batches for NFE counting (default: 2)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="windows per batch (default: 8)")
    p.add_argument("--examples", type=positive_int, default=16,
                   help="windows solved one by one for per-example NFE (default: 16)")
    p.add_argument("--us", type=float, nargs="+", metavar="U",
                   default=[-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0],
                   help="controls for NFE against u (default: -2 … 2 in steps of 0.5)")
    p.add_argument("--methods", nargs="+", default=["dopri5", "adaptive_heun"],
                   help="adaptive solvers for NFE against u (default: dopri5 adaptive_heun)")
    p.add_argument("--rtol", type=positive_float, default=1e-3,
                   help="rtol for NFE against u (default: 1e-3)")
    p.add_argument("--atol", type=positive_float, default=1e-4,
                   help="atol for NFE against u (default: 1e-4)")
    p.add_argument("--tolerances", type=positive_float, nargs="+", metavar="RTOL",
                   default=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
                   help="dopri5 rtol sweep, atol = rtol/10 (default: 1e-3 … 1e-7)")
    p.add_argument("--tolerance-us", type=float, nargs="+", metavar="U", default=[-1.0, 0.0, 1.0],
                   help="controls for the tolerance sweep (default: -1 0 1)")
    p.add_argument("--taus", type=float, nargs="+", metavar="TAU",
                   default=[0.0, 1 / 6, 1 / 3, 0.5, 0.67, 5 / 6, 1.0],
                   help="depths for the linear probes, from 0 to 1 (default: 0 … 1 incl. 0.5, 0.67)")
    p.add_argument("--probe-limit", type=positive_int, default=None,
                   help="use only the first N SST-2 dev sentences (default: all 872)")
    p.add_argument("--folds", type=positive_int, default=5,
                   help="cross-validation folds of the probes (default: 5)")
    p.add_argument("--no-probes", action="store_true", help="skip the linear probes")
    p.add_argument("--axis", type=int, default=0, help="control axis u is placed on (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for small "
                        "models on a busy machine)")
    p.add_argument("--out", type=output_folder, default=None,
                   help="folder for results.json, table.md and figures")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from steerflow.cli.common import eprint, json_safe, load_model, print_json
    from steerflow.eval.invariance import require_hybrid, validation_batches
    from steerflow.eval.probe import ProbeSettings, format_report, run_probe, write_figures
    from steerflow.io import atomic_write_text

    settings = ProbeSettings(
        us=tuple(args.us), methods=tuple(args.methods), rtol=args.rtol, atol=args.atol,
        tolerances=tuple(args.tolerances), tolerance_us=tuple(args.tolerance_us),
        max_examples=args.examples, taus=tuple(args.taus), probe_limit=args.probe_limit,
        folds=args.folds, axis=args.axis)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, args.device)
    require_hybrid(model)
    batches = validation_batches(model, args.data_dir, args.cache_dir, args.batch_size,
                                 args.batches, progress=not args.quiet)
    batches = [(x.to(args.device), y.to(args.device)) for x, y in batches]
    pairs = None if args.no_probes else _sst2_dev(args.data_dir)
    result = run_probe(model, batches, pairs, settings, progress=not args.quiet)
    data = {"checkpoint": str(args.checkpoint), **result.as_dict()}
    report = format_report(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        figures = write_figures(result, out)
        data["figures"] = figures
        atomic_write_text(out / "results.json", json.dumps(json_safe(data), indent=2) + "\n")
        atomic_write_text(out / "table.md", report + "\n")
    if args.json:
        print_json(data)
    else:
        print(report)
        if args.out:
            eprint(f"wrote {args.out}/results.json, table.md, {', '.join(data['figures'])}")
    return 0


def _sst2_dev(data_dir):
    from steerflow.data import load_sst2, resolve_data_source

    return load_sst2(resolve_data_source(data_dir, require=("sst2",)), "dev")
