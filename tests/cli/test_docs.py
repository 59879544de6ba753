"""docs/cli.md is the parsers' own --help: regenerate it when a flag changes."""

from pathlib import Path

from steerflow.cli.docs import command_paths, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_in_sync_with_the_parsers():
    assert DOC.read_text() == render(), (
        "docs/cli.md is stale: run `python -m steerflow.cli.docs > docs/cli.md`")


def test_every_subcommand_has_a_section_with_its_usage():
    text = render()
    for path in command_paths():
        name = " ".join(["steerflow", *path])
        assert f"## `{name}`" in text
        assert f"usage: {name}" in text
