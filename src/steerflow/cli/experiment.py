"""``steerflow experiment NAME``: the paper's experiments, end to end."""

from steerflow.cli.group import add_group

MEMBERS: list[tuple[str, str]] = [
    ("gradient-stability", "steerflow.cli.exp_gradient_stability"),
    ("additive-ablation", "steerflow.cli.exp_additive_ablation"),
    ("adaptive-depth", "steerflow.cli.exp_adaptive_depth"),
    ("disentangle", "steerflow.cli.exp_disentangle"),
    ("scale", "steerflow.cli.exp_scale"),
    ("fluency", "steerflow.cli.exp_fluency"),
]


def add_parser(sub) -> None:
    add_group(sub, "experiment",
              "run a paper experiment end to end (gradient-stability, additive-ablation, "
              "adaptive-depth, disentangle, scale, fluency)", MEMBERS)
