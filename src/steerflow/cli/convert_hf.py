"""``steerflow convert hf SOURCE``: a transformers GPT-2 checkpoint as a steerflow model, exactly.

SOURCE is a folder saved by transformers' save_pretrained (config.json, model.safetensors, the
tokenizer files) or hf:<repo id>, fetched from the Hugging Face Hub (the network is used only then,
and the command says what it fetches). GPT2LMHeadModel checkpoints are supported. Without
--ode-span the result is the discrete model with the same logits. --ode-span A:B makes layers A to
B-1 one ODE block whose depth-block field has those layers' weights at its Euler grid points and
smooth weights in between: the checkpoint's (B-A)-step Euler solve gives the same logits, adaptive
solvers integrate the smooth field, and u changes nothing until steering training. The tokenizer is
saved with the model, so steerflow generate, eval and train --task steer work on --out.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_common_flags, add_subcommand


def add_parser(sub) -> None:
    from steerflow.hf import CONVERT_FIELDS

    p = add_subcommand(sub, "hf", __doc__)
    p.add_argument("source", help="a folder saved by transformers, or hf:<repo id> (network)")
    p.add_argument("--ode-span", metavar="A:B", default=None,
                   help="layers A to B-1 become one ODE block (default: the discrete model)")
    p.add_argument("--field", choices=CONVERT_FIELDS, default=CONVERT_FIELDS[0],
                   help=f"the ODE block's vector field (default: {CONVERT_FIELDS[0]})")
    add_common_flags(p, out="folder for the steerflow checkpoint", out_required=True,
                     device=None, json="print the conversion summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import eprint, print_json, torch_threads
    from steerflow.hf.convert import convert_hf, parse_span

    span = None if args.ode_span is None else parse_span(args.ode_span)
    log = (lambda _: None) if args.quiet else eprint
    with torch_threads(args.threads):
        result = convert_hf(args.source, span, args.field, log=log)
    result.model.save_pretrained(args.out)
    if args.json:
        print_json({**result.summary(), "out": args.out})
        return 0
    print(f"converted {result.architecture} {args.source} -> {args.out}")
    print(f"  layers: {', '.join(result.layers)}")
    print(f"  params {result.model.num_params():,}; tokenizer "
          f"{result.tokenizer or 'none'}")
    if result.span_error is not None:
        config = result.model.config
        start, end = config.ode_span
        print(f"  ODE block: its solve ({config.eval_solver.describe()}) reproduces layers "
              f"{start}-{end - 1} (max relative difference {result.span_error:.1e}); u's "
              f"weights start at zero")
    for note in result.notes:
        print(f"  note: {note}")
    return 0
