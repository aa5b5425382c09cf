"""docs/RELIABILITY.md is the fault test list: every test it names exists."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
DOC = ROOT / "docs" / "RELIABILITY.md"


def test_every_row_names_an_existing_test() -> None:
    """Each row of the table names at least one test, and each named test is defined."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "test_" in line]
    assert len(rows) >= 25
    for row in rows:
        names = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", row)
        assert names, row
        for module, function in names:
            path = ROOT / "tests" / module
            assert path.is_file(), module
            if function:
                defined = {
                    node.name
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                assert function in defined, f"{module}::{function}"
