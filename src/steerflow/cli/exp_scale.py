"""``steerflow experiment scale``: the same recipe at several model sizes: does it hold as the
model grows?

Per size (a preset; default small, mid, paper: about 2.2 M, 9.0 M and 30.5 M parameters), in
OUT/<config>/: Exp. 1 pretraining of a baseline and a hybrid on --tokens tokens each (steps =
tokens // (batch x block)), the steering recipe (DExperts' experts distilled into one pass at u),
the steering evaluation, solver invariance and the latency of hybrid against baseline. Reports
per size the parameter count, tokens, gradient events, alpha start -> end, hybrid / baseline
validation loss, steering own effect (judges' positive rate at u = +1 minus u = -1),
displacement divergence, latency ratio and wall time; writes results.json, results.md and
scale.png (each metric against parameter count) to --out. Resumable stage by stage: run the same
command again and finished stages and sizes are reused.

Duration: with the default 131,072 tokens, about 90 minutes for small + mid + paper on 2 shared
CPU cores (roughly 9, 21 and 58 minutes; each further million tokens adds about 15, 47 and 150
minutes). The gpt2 preset (124 M) runs the same study on a GPU: steerflow experiment scale
--configs small,mid,paper,gpt2 --tokens 2000000 --device cuda --out runs/scale-gpu; on this CPU its size alone would take about 10 hours at
the default budget and about a day per further million tokens (a training step of its baseline
and hybrid costs about 90 ms per token here, 10 times paper's).
--estimate prints an estimate for this machine from one timed training step per size.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import (add_common_flags, add_data_flags, add_subcommand, echo_flags,
                                  positive_int)

#: flags echoed into results.json's "command" (the call that produced the numbers)
_ECHO = ("configs", "tokens", "batch_size", "expert_steps", "distill_steps", "threads", "device",
         "out")


def add_parser(sub) -> None:
    from steerflow.pipeline.scale import DEFAULT_CONFIGS, DEFAULT_TOKENS

    p = add_subcommand(sub, "scale", __doc__)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"comma-separated presets, smallest first (default: "
                        f"{','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                   help=f"pretraining tokens per model and size (default: {DEFAULT_TOKENS:,}, "
                        f"about 90 minutes on 2 CPU cores)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="LM sequences per step at every size (default: each preset's: small 32, "
                        "mid 16, paper 8, gpt2 32)")
    p.add_argument("--expert-steps", type=positive_int, default=None,
                   help="steps of each DExperts expert (default: 40)")
    p.add_argument("--distill-steps", type=positive_int, default=None,
                   help="distillation steps (default: 80)")
    p.add_argument("--estimate", action="store_true",
                   help="time one training step per size, print the estimated duration, exit")
    add_data_flags(p)
    add_common_flags(p, out="study folder: one subfolder per size, results.json, results.md, "
                            "scale.png", out_default="runs/scale", device="auto",
                     json="print results.json on stdout instead of the table")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):
    """The :class:`~steerflow.pipeline.scale.ScaleSettings` the flags ask for."""
    import dataclasses

    from steerflow.pipeline.scale import SCALE_RECIPE, ScaleSettings

    recipe = dataclasses.replace(
        SCALE_RECIPE, **{k: getattr(args, k) for k in ("expert_steps", "distill_steps")
                         if getattr(args, k) is not None})
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    return ScaleSettings(configs=configs, tokens=args.tokens, recipe=recipe,
                         batch_size=args.batch_size)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import report_study
    from steerflow.pipeline.environment import Environment
    from steerflow.pipeline.scale import run_scale
    from steerflow.pipeline.scale_report import format_report, write_scale

    settings = settings_from(args)  # bad flags fail here, before any work
    env = Environment(data_dir=args.data_dir, cache_dir=args.cache_dir,
                      device=args.device or "auto", threads=args.threads, quiet=bool(args.quiet))
    if args.estimate:
        return print_estimate(settings, env)
    result = run_scale(settings, args.out, env, command=command_line(args))
    written = write_scale(result, args.out)
    return report_study(result, format_report(result), written, args.out, args.json)


def print_estimate(settings, env) -> int:
    """Print the estimated minutes of each size on this machine (one timed step per size)."""
    from steerflow.pipeline.estimate import estimate_seconds
    from steerflow.pipeline.scale import size_settings

    total = 0.0
    for config in settings.configs:
        s = size_settings(settings, config)
        estimate = estimate_seconds(s, env)
        total += estimate["total_s"]
        print(f"{config}: {s.lm_steps} LM steps of {s.lm_batch_size} sequences, about "
              f"{estimate['total_s'] / 60:.0f} min ({estimate['step_s']:.2f} s per hybrid "
              f"training step on {estimate['device']})")
    print(f"all sizes: about {total / 60:.0f} min")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the parsed flags (for the record in results.json)."""
    return " ".join(["steerflow", "experiment", "scale"] + echo_flags(args, _ECHO))
