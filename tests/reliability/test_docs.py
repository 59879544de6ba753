"""docs/reliability.md points at tests by name: every one it names must exist, so the page cannot
silently promise a proof that was renamed or deleted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
#: ``tests/x/test_y.py::test_z`` optionally followed by ``[case id]``
REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]+)\])?")
#: a bare ``[command/case]`` id, which the page uses for rows of the bad-input table
CASE = re.compile(r"`\[([a-z][\w -]*/[\w-]+)\]`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_test_named_in_the_reliability_page_exists():
    text = DOC.read_text(encoding="utf-8")
    refs = REF.findall(text)
    assert len(refs) > 50, "the page should point at its proofs"
    missing = []
    for file, name, case in refs:
        path = ROOT / file
        if not path.is_file() or name not in _test_names(path):
            missing.append(f"{file}::{name}")
        elif case and f'"{case}"' not in path.read_text(encoding="utf-8"):
            missing.append(f"{file}::{name}[{case}]")
    assert missing == []


def test_every_bad_input_case_named_in_the_page_exists():
    cases = CASE.findall(DOC.read_text(encoding="utf-8"))
    assert len(cases) > 10
    table = (ROOT / "tests" / "reliability" / "test_cli_bad_input.py").read_text(encoding="utf-8")
    assert [c for c in cases if f'("{c}",' not in table] == []
