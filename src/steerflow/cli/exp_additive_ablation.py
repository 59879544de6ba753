"""``steerflow experiment additive-ablation CKPT OUT``: write the additive-injection twin of a
concat checkpoint pretrained at u = 0.

Write the additive-injection twin of a concat checkpoint pretrained at u = 0: every weight is copied
except the u-columns of the field's first layer; u_proj gets its default initialisation from --seed.
Both models are equal at u = 0, so steering training then treats them alike.
"""

from __future__ import annotations

import argparse

from steerflow.cli.common import add_subcommand, output_folder


def add_parser(sub) -> None:
    p = add_subcommand(sub, "additive-ablation", __doc__)
    p.add_argument("checkpoint", help="a pretrained hybrid (injection=concat) folder")
    p.add_argument("out", type=output_folder, help="folder for the injection=add checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of u_proj's initialisation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steerflow.steer.ablation import run_additive_ablation, write_additive_ablation

    out = write_additive_ablation(run_additive_ablation(args.checkpoint, args.seed), args.out)
    print(f"wrote {out} (injection=add, from {args.checkpoint})")
    return 0
