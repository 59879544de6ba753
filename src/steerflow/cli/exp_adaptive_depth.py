"""``steerflow experiment adaptive-depth CKPT``: adaptive depth at inference: a step count per
token, against the training solver's fixed grid.

Integrate the ODE block with the per-token solver (every token of the position-wise mlp field
takes its own Euler steps on the training grid, chosen by a Heun–Euler error estimate) at each
tolerance, beside the fixed grid and coarser uniform grids, on real validation text: field
evaluations per token (mean, distribution, by position, token frequency and u), validation loss,
solver invariance against dopri5, tokens/s, and the steering rates of a steered checkpoint
(--steered, default CKPT: the SST-2 judge's positive rate of open-ended continuations at u = ±1
and the paper's probe). Writes results.json, table.md and adaptive_depth.png to --out.
"""

from __future__ import annotations

import argparse
import shlex

from steerflow.analysis.settings import field_defaults
from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, echo_flags,
                                  positive_float, positive_int)
from steerflow.experiments.adaptive_settings import AdaptiveDepthSettings

#: flags echoed into results.json's "command" (the call that produced the numbers)
_ECHO = ("steered", "tolerances", "grid", "coarse_steps", "batches", "batch_size", "controls",
         "prompts", "samples", "new_tokens", "seed", "threads", "out")


def add_parser(sub) -> None:
    p = add_subcommand(sub, "adaptive-depth", __doc__)
    p.add_argument("checkpoint", help="a hybrid checkpoint folder with a position-wise field")
    p.add_argument("--steered", help="a steered checkpoint with the same tokenizer for the "
                                     "steering rates and depth by u (default: CHECKPOINT)")
    add_data_flags(p)
    # the defaults come from AdaptiveDepthSettings (set_defaults below)
    p.add_argument("--tolerances", type=positive_float, nargs="+", metavar="RTOL",
                   help="per-token rtol sweep, atol = rtol/10 (default: 1e-5 … 1e-1)")
    p.add_argument("--grid", type=positive_int,
                   help="the per-token solver's finest grid (default: the training solver's steps)")
    p.add_argument("--coarse-steps", type=positive_int, nargs="*", metavar="N",
                   help="uniform Euler grids measured beside it (default: 1 2)")
    p.add_argument("--batches", type=positive_int, help="validation batches (default: 16)")
    p.add_argument("--batch-size", type=positive_int, help="windows per batch (default: 16)")
    p.add_argument("--controls", type=float, nargs="+", metavar="U",
                   help="u values for depth by u; the non-zero ones for steering (default: -1 0 1)")
    p.add_argument("--prompts", type=positive_int, help="neutral prompts (default: 50)")
    p.add_argument("--samples", type=positive_int, help="samples per prompt (default: 2)")
    p.add_argument("--new-tokens", type=positive_int, help="tokens per sample (default: 20)")
    p.add_argument("--seed", type=int, help="prompt choice and sampling seed (default: 0)")
    add_common_flags(p, out="folder for results.json, table.md and adaptive_depth.png",
                     json="print results.json on stdout instead of the table")
    p.set_defaults(func=run, **{k: v for k, v in field_defaults(AdaptiveDepthSettings).items()
                                if k not in ("reference", "axis", "position_bins",
                                             "frequency_bins")})


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import report_study, torch_threads
    from steerflow.experiments.adaptive_depth import load_inputs, run_adaptive_depth
    from steerflow.experiments.adaptive_report import format_report, write_adaptive_depth

    settings = AdaptiveDepthSettings(
        tolerances=tuple(args.tolerances), grid=args.grid, coarse_steps=tuple(args.coarse_steps),
        batches=args.batches, batch_size=args.batch_size, controls=tuple(args.controls),
        prompts=args.prompts, samples=args.samples, new_tokens=args.new_tokens, seed=args.seed)
    with torch_threads(args.threads):
        inputs = load_inputs(args.checkpoint, settings, args.steered, args.data_dir,
                             args.cache_dir, args.device, progress=not args.quiet)
        result = run_adaptive_depth(inputs, settings, progress=not args.quiet,
                                    command=command_line(args))
    written = write_adaptive_depth(result, args.out) if args.out else []
    return report_study(result, format_report(result), written, args.out, args.json)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (for the record in results.json)."""
    parts = ["steerflow", "experiment", "adaptive-depth", shlex.quote(str(args.checkpoint))]
    parts += echo_flags(args, _ECHO)
    return " ".join(parts)
