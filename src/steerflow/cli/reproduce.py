"""``steerflow reproduce``: run every paper experiment at paper scale (GPU recommended).

Paper 1 at its configuration: GPT-2 BPE, the 30.5M-parameter baseline and its hybrid, 500 LM steps
(Exp. 1), steering training and evaluation (Exp. 2), solver invariance (Exp. 3), solver probing, the
benchmark at paper shapes (Exp. 4). Prints an estimate of the duration on this machine first;
resumable stage by stage. The report has the demo's layout.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_subcommand, output_folder


def add_parser(sub) -> None:
    from steerflow.cli.demo import add_run_options

    p = add_subcommand(sub, "reproduce", __doc__)
    p.add_argument("--scale", default="paper", choices=["paper", "small", "tiny"],
                   help="paper (default); small: the recipe behind the README's steering "
                        "numbers (about 60 min on 2 cores); tiny: seconds, for CI")
    p.add_argument("--out", type=output_folder, default="runs/paper",
                   help="run folder (default runs/paper)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steerflow.cli.common import eprint
    from steerflow.cli.demo import environment, finish
    from steerflow.data import resolve_data_source
    from steerflow.pipeline.demo import REPRODUCE_SCALES, run_pipeline
    from steerflow.pipeline.estimate import estimate_seconds

    settings, env = REPRODUCE_SCALES[args.scale], environment(args)
    resolve_data_source(env.data_dir)  # bad data fails at once, not after the estimate's timing run
    estimate = estimate_seconds(settings, env)
    if not args.quiet:
        eprint(f"estimated duration on this machine: {estimate['total_s'] / 60:.0f} min "
               f"({estimate['step_s']:.2f} s per training step of the {settings.config} hybrid "
               f"on {estimate['device']}; evaluation stages extrapolated)")
    return finish(run_pipeline(args.out, settings, env, expected_s=estimate["total_s"]), args)
