"""``steerflow eval KIND CKPT``: evaluations of a trained checkpoint."""

from steerflow.cli.group import add_group

#: (kind, module) — each module defines add_parser(subparsers) and run(args)
MEMBERS: list[tuple[str, str]] = [
    ("steering", "steerflow.cli.eval_steering"),
    ("invariance", "steerflow.cli.eval_invariance"),
    ("probe", "steerflow.cli.eval_probe"),
]


def add_parser(sub) -> None:
    add_group(sub, "eval", "evaluate a checkpoint: steering, solver invariance, solver probing",
              MEMBERS)
