"""``steerflow analyze flow CKPT``: paper 2's dynamical-systems analysis of a trained hybrid."""

from __future__ import annotations

import argparse

from steerflow.cli.common import output_folder
from steerflow.errors import InputError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_parser(sub) -> None:
    p = sub.add_parser(
        "flow", help="convergence order, log-norms, perturbation growth, layer statistics, "
                     "depth refinement and the contractive field (paper 2)",
        description="Analyse a trained hybrid as a dynamical system on real validation text: "
                    "convergence order of euler/midpoint/rk4 against a float64 dopri8 reference, "
                    "the log-norm μ of the vector field (Lanczos on Jacobian-vector products), "
                    "perturbation growth against exp(∫μ dτ), how ODE-like the discrete layers are, "
                    "depth refinement of smooth vs piecewise-constant continuous transformers, and "
                    "(with --compare) a contractive-field model against the unconstrained one. "
                    "Writes results.json, report.md and PNG figures into --out.")
    p.add_argument("checkpoint", help="a hybrid checkpoint folder (with its tokenizer)")
    p.add_argument("--out", type=output_folder, default="flow_analysis",
                   help="output folder (default: flow_analysis)")
    p.add_argument("--baseline", help="a discrete baseline checkpoint for the layer statistics")
    p.add_argument("--compare", help="a second hybrid checkpoint; one of the two with "
                                     "field=contractive gives the contractive comparison")
    p.add_argument("--data-dir", help="local data folder (default: $STEERFLOW_DATA)")
    p.add_argument("--cache-dir", help="token cache (default: $STEERFLOW_CACHE or ~/.cache/steerflow)")
    p.add_argument("--controls", type=_floats, default=(-1.0, 0.0, 1.0),
                   help="values of u, comma-separated; write --controls=-1,1 when the first "
                        "is negative (default: -1,0,1)")
    p.add_argument("--methods", type=_methods, default=("euler", "midpoint", "rk4"),
                   help="fixed-step methods (default: euler,midpoint,rk4)")
    p.add_argument("--steps", type=_ints, default=(1, 2, 4, 8, 16, 32, 64),
                   help="step counts of the convergence study (default: 1,2,4,...,64)")
    p.add_argument("--ref-rtol", type=float, default=1e-12, help="dopri8 reference rtol (1e-12)")
    p.add_argument("--batch-size", type=int, default=4, help="validation sequences analysed (4)")
    p.add_argument("--lanczos-iters", type=int, default=32, help="Krylov dimension of μ estimates")
    p.add_argument("--grid-points", type=int, default=17, help="τ points of the μ/perturbation grid")
    p.add_argument("--traj-steps", type=int, default=64, help="rk4 steps of the trajectories")
    p.add_argument("--eps", type=float, default=1e-6, help="relative perturbation size (1e-6)")
    p.add_argument("--tolerance", type=float, default=1e-2,
                   help="relative slack before a bound violation is counted (1e-2)")
    p.add_argument("--loss-batches", type=int, default=10, help="validation batches for losses")
    p.add_argument("--no-refinement", dest="refinement", action="store_false",
                   help="skip the depth-refinement study (it trains two small models)")
    p.add_argument("--refinement-iters", type=int, default=300,
                   help="training iterations of each depth-refinement model (300)")
    p.add_argument("--refinement-train-steps", type=int, default=8,
                   help="Euler steps N₀ the depth models are trained with (8)")
    p.add_argument("--refinement-basis", type=int, default=3,
                   help="Legendre polynomials of the smooth depth model (3, < N₀)")
    p.add_argument("--refinement-width", type=int, default=64,
                   help="width of the depth-refinement models (64)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print results.json's content on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steerflow.analysis.flow import FlowConfig, run_flow
    from steerflow.cli.common import eprint, print_json

    cfg = FlowConfig(
        checkpoint=args.checkpoint, out=args.out, baseline=args.baseline, compare=args.compare,
        data_dir=args.data_dir, cache_dir=args.cache_dir, controls=args.controls,
        methods=args.methods, steps=args.steps, ref_rtol=args.ref_rtol,
        batch_size=args.batch_size, lanczos_iters=args.lanczos_iters,
        grid_points=args.grid_points, traj_steps=args.traj_steps, eps=args.eps,
        tolerance=args.tolerance, loss_batches=args.loss_batches, refinement=args.refinement,
        refinement_iters=args.refinement_iters,
        refinement_train_steps=args.refinement_train_steps,
        refinement_basis=args.refinement_basis, refinement_width=args.refinement_width,
        seed=args.seed, device=args.device)
    results = run_flow(cfg, progress=not (args.quiet or args.json))
    if args.json:
        print_json(_public(results))
        return 0
    order = ", ".join(f"{m} {s:.2f}" if s is not None else f"{m} n/a"
                      for m, s in results["order"].items())
    v = results["bound_violations"]
    print(f"convergence order (slope of log error vs log N): {order}")
    print(f"log-norm μ of α·F: mean {results['mu']['mean']:.4g}, max {results['mu']['max']:.4g} "
          f"({results['mu']['count']} {results['mu']['grouping']}-level estimates)")
    print(f"perturbation bound violations: {v['count']} of {v['points']} "
          f"(worst measured/bound {v['max_ratio_over_bound']:.4f})")
    if results["contractive"]:
        c = results["contractive"]
        print(f"contractive vs unconstrained: μ max {c['mu_max']['contractive']:.4g} vs "
              f"{c['mu_max']['unconstrained']:.4g}, val loss cost {c['val_loss_cost']:+.4f}")
    eprint(f"wrote {args.out}/results.json, report.md and {len(results['figures'])} figures")
    return 0


def _public(results: dict) -> dict:
    """results.json's content (already JSON-safe apart from non-finite floats)."""
    from steerflow.analysis.flow import jsonable

    return jsonable(results)
