"""``steerflow convert KIND SOURCE``: turn checkpoints of other libraries into steerflow models."""

from steerflow.cli.group import add_group

#: (kind, module) — each module defines add_parser(subparsers) and run(args)
MEMBERS: list[tuple[str, str]] = [
    ("hf", "steerflow.cli.convert_hf"),
]


def add_parser(sub) -> None:
    add_group(sub, "convert", "turn another library's checkpoint into a steerflow model (hf: a "
              "transformers GPT-2, exactly)", MEMBERS)
