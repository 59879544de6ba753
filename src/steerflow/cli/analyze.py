"""``steerflow analyze KIND CKPT``: dynamical-systems analyses (paper 2)."""

from steerflow.cli.group import add_group

MEMBERS: list[tuple[str, str]] = [
    ("flow", "steerflow.cli.analyze_flow"),
]


def add_parser(sub) -> None:
    add_group(sub, "analyze", "analyse a transformer as a dynamical system (flow: convergence "
              "order, one-sided Lipschitz, perturbation growth)", MEMBERS)
