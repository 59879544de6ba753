"""``steerflow analyze flow CKPT``: convergence order, log-norms, perturbation growth, layer
statistics, depth refinement and the contractive field (paper 2).

Analyse a trained hybrid as a dynamical system on real validation text: convergence order of
euler/midpoint/rk4 against a float64 dopri8 reference, the log-norm μ of the vector field (Lanczos
on Jacobian-vector products), perturbation growth against exp(∫μ dτ), how ODE-like the discrete
layers are, depth refinement of smooth vs piecewise-constant continuous transformers, and (with
--compare) a contractive-field model against the unconstrained one. Writes results.json, report.md
and PNG figures into --out.

With --hf SOURCE instead of CKPT (a folder saved by transformers, or hf:<repo id> from the Hub)
it reads a GPT-2, Llama, Mistral or Qwen2 causal LM as a discrete residual stack through its own
decoder layers and measures what applies to one: update ratios, cosines of consecutive updates,
branch log-norms and perturbation growth against exp(Σμ). Its text is WikiText-2 validation
encoded with the folder's tokenizer, or random token ids (--seed) when it has none; of the
options only --batch-size, --seq-len, --lanczos-iters, --tolerance, --seed, --data-dir and the
common ones apply.
"""

from __future__ import annotations

import argparse

from steerflow.analysis.settings import FlowConfig, HFFlowConfig, field_defaults
from steerflow.cli.common import add_common_flags, add_data_flags, add_subcommand
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
    p = add_subcommand(sub, "flow", __doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("checkpoint", nargs="?", help="a hybrid checkpoint folder (with its "
                                                      "tokenizer)")
    source.add_argument("--hf", metavar="SOURCE",
                        help="analyse a Hugging Face causal LM instead: a folder saved by "
                             "transformers or hf:<repo id> (needs steerflow[hf])")
    p.add_argument("--baseline", help="a discrete baseline checkpoint for the layer statistics")
    p.add_argument("--compare", help="a second hybrid checkpoint; one of the two with "
                                     "field=contractive gives the contractive comparison")
    add_data_flags(p)
    p.add_argument("--controls", type=_floats,
                   help="values of u, comma-separated; write --controls=-1,1 when the first "
                        "is negative (default: -1,0,1)")
    p.add_argument("--methods", type=_methods,
                   help="fixed-step methods (default: euler,midpoint,rk4)")
    p.add_argument("--steps", type=_ints,
                   help="step counts of the convergence study (default: 1,2,4,...,64)")
    p.add_argument("--ref-rtol", type=float, help="dopri8 reference rtol (1e-12)")
    p.add_argument("--batch-size", type=int, help="validation sequences analysed (4)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence with --hf (64)")
    p.add_argument("--lanczos-iters", type=int, help="Krylov dimension of μ estimates")
    p.add_argument("--grid-points", type=int, help="τ points of the μ/perturbation grid")
    p.add_argument("--traj-steps", type=int, help="rk4 steps of the trajectories")
    p.add_argument("--eps", type=float, help="relative perturbation size (1e-6)")
    p.add_argument("--tolerance", type=float,
                   help="relative slack before a bound violation is counted (1e-2)")
    p.add_argument("--loss-batches", type=int, help="validation batches for losses")
    p.add_argument("--no-refinement", dest="refinement", action="store_false",
                   help="skip the depth-refinement study (it trains two small models)")
    p.add_argument("--refinement-iters", type=int,
                   help="training iterations of each depth-refinement model (300)")
    p.add_argument("--refinement-train-steps", type=int,
                   help="Euler steps N₀ the depth models are trained with (8)")
    p.add_argument("--refinement-basis", type=int,
                   help="Legendre polynomials of the smooth depth model (3, < N₀)")
    p.add_argument("--refinement-width", type=int, help="width of the depth-refinement models (64)")
    p.add_argument("--seed", type=int, help="seed (0)")
    add_common_flags(p, out="output folder", out_default="flow_analysis", threads=False,
                     json="print results.json's content on stdout")
    # every default above comes from FlowConfig (and --seq-len's from HFFlowConfig)
    p.set_defaults(func=run, **{**field_defaults(HFFlowConfig), **field_defaults(FlowConfig)})


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from steerflow.analysis.flow import run_flow, write_flow
    from steerflow.cli.common import eprint, print_json

    if args.hf is not None:
        return run_hf(args)
    if args.seq_len != HFFlowConfig.seq_len:
        raise InputError("--seq-len applies to --hf; a checkpoint is analysed on windows of its "
                         "block_size")
    cfg = FlowConfig(**{f.name: getattr(args, f.name) for f in fields(FlowConfig)
                        if hasattr(args, f.name)})
    results = write_flow(run_flow(cfg, progress=not (args.quiet or args.json)), cfg.out)
    if args.json:
        print_json(results)
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


def run_hf(args: argparse.Namespace) -> int:
    """``analyze flow --hf SOURCE``: a Hugging Face decoder as a discrete residual stack."""
    from dataclasses import fields

    from steerflow.analysis.hf_flow import run_hf_flow, write_hf_flow
    from steerflow.cli.common import eprint, print_json

    hf_names = {f.name for f in fields(HFFlowConfig)}
    for name, default in field_defaults(FlowConfig).items():  # --no-refinement is moot here
        if name not in hf_names | {"refinement"} and getattr(args, name) != default:
            raise InputError(f"--{name.replace('_', '-')} applies to hybrid checkpoints, not --hf")
    cfg = HFFlowConfig(source=args.hf,
                       **{name: getattr(args, name) for name in hf_names - {"source"}})
    results = write_hf_flow(run_hf_flow(cfg, progress=not (args.quiet or args.json)), cfg.out)
    if args.json:
        print_json(results)
        return 0
    rows, mu, v = results["discrete"]["checkpoint"], results["mu"], results["bound_violations"]
    print(f"{len(rows)} blocks of {results['model']['class']} on {results['inputs']['kind']} "
          f"tokens: median ‖f_l(x)‖/‖x‖ {rows[0]['ratio_median']:.3g} (first) to "
          f"{rows[-1]['ratio_median']:.3g} (last)")
    print(f"log-norm μ of the block branches: mean {mu['mean']:.4g}, max {mu['max']:.4g} "
          f"({mu['count']} sequence-level estimates)")
    print(f"perturbation growth above exp(Σμ): {v['count']} of {v['points']} "
          f"(worst measured/bound {v['max_ratio_over_bound']:.4f})")
    eprint(f"wrote {args.out}/results.json, report.md and {len(results['figures'])} figures")
    return 0
