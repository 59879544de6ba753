"""``steerflow experiment disentangle``: two control axes, two attributes — does each axis steer its
own attribute and leave the other alone?

From nothing to results.json: trains a hybrid LM with a two-dimensional u (axis names in its
config), DExperts' expert and anti-expert of each attribute (sentiment: positive / negative SST-2;
register: movie-review SST-2 / encyclopedic WikiText-2 text), distils both contrasts into one
pass at u (the steering issue's recipe with one expert pair per axis, u drawn per axis with rows
where one axis moves alone) and, for comparison, one single-axis model per attribute. Then
samples the 3 x 3 grid u in {-1, 0, +1}^2 on neutral prompts: each attribute's rate per cell by
its judge (the SST-2 classifier; a register classifier trained on held-apart text, held-out
accuracy reported), own effect (attribute A's rate change when only u_A moves from -1 to +1),
cross-talk A->B (B's change then) with 95 % bootstrap intervals, perplexity per cell under the
unsteered LM, the targets (own effect >= 0.6, |cross-talk| <= 0.05 with its interval, corner
perplexity <= 1.3 x the centre's), the same grid for two summed ActAdd vectors, and each judge's
offset on held-out human text at the other attribute's poles (the cross-talk a judge reads in by
itself; the cross-talk beyond it is reported beside the raw one). Every stage
is resumable: run the same command again to continue. Writes results.json, results.md and
disentangle.png to --out; --scale small is the issue's study (about 26 minutes on 2 cores),
--scale tiny a smoke run.
"""

from __future__ import annotations

import argparse
import shlex

from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, echo_flags,
                                  positive_float, positive_int)
from steerflow.errors import InputError
from steerflow.experiments.disentangle_settings import ATTRIBUTES, SCALES, parse_axes


def _axes(text: str) -> tuple[str, ...]:
    try:
        return parse_axes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    p = add_subcommand(sub, "disentangle", __doc__)
    p.add_argument("--scale", choices=list(SCALES), default="small",
                   help="the study's size: small (the issue's: 200 prompts x 4 samples) or tiny "
                        "(a smoke run) (default: small)")
    p.add_argument("--axes", type=_axes, default=None, metavar="A,B",
                   help=f"the attribute of control axis 0 and 1, from {', '.join(ATTRIBUTES)} "
                        f"(default: {','.join(ATTRIBUTES)})")
    p.add_argument("--prompts", type=positive_int, help="neutral prompts (default: the scale's)")
    p.add_argument("--samples", type=positive_int,
                   help="samples per prompt and cell (default: the scale's)")
    p.add_argument("--alpha", dest="distill_alpha", type=positive_float, metavar="A",
                   help="the teachers' strength at |u| = 1 on every axis, DExperts' alpha "
                        "(default: the scale's, 1.5); lower trades own effect for fluency")
    p.add_argument("--orthogonal", action="store_true", default=None,
                   help="the joint model's teacher with each axis's logit shift orthogonal to "
                        "the earlier axes' in the base's Fisher metric (first-order zero "
                        "cross-talk of the experts' evidence; default: the contrasts as they are)")
    add_data_flags(p)
    add_common_flags(p, out="run folder: models, stage records, results.json, results.md, "
                            "disentangle.png", out_required=True, device="auto",
                     json="print results.json on stdout instead of the table")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):
    """The scale's settings with the flags that override it."""
    changes = {k: getattr(args, k) for k in ("axes", "prompts", "samples", "orthogonal",
                                             "distill_alpha")
               if getattr(args, k, None) is not None}
    return SCALES[args.scale].replace(**changes)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import report_study, torch_threads
    from steerflow.experiments.disentangle_report import format_report, write_disentangle
    from steerflow.pipeline.disentangle import run_disentangle
    from steerflow.pipeline.environment import Environment

    settings = settings_from(args)
    env = Environment(data_dir=args.data_dir, cache_dir=args.cache_dir,
                      device=args.device or "auto", threads=args.threads,
                      quiet=bool(args.quiet or args.json))
    with torch_threads(args.threads):
        result = run_disentangle(args.out, settings, env, command=command_line(args),
                                 scale=args.scale)
    written = write_disentangle(result, args.out)
    return report_study(result, format_report(result), written, args.out, args.json)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (for the record in results.json)."""
    parts = ["steerflow", "experiment", "disentangle", "--scale", args.scale,
             "--out", shlex.quote(str(args.out))]
    if args.axes:
        parts += ["--axes", ",".join(args.axes)]
    if args.orthogonal:
        parts.append("--orthogonal")
    if args.distill_alpha is not None:
        parts += ["--alpha", f"{args.distill_alpha:g}"]
    return " ".join(parts + echo_flags(args, ("prompts", "samples", "threads")))
