"""docs/RELIABILITY.md is a list of promises: each row's numbers are asserted by its tests."""

from __future__ import annotations

import ast
import functools
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
DOC = ROOT / "docs" / "RELIABILITY.md"

_TEST_NAME = re.compile(r"`(test_\w+\.py)::(test_\w+)`")
_NUMBER = re.compile(r"`(-?\d[\d,]*(?:\.\d+)?)`")


def rows() -> list[list[str]]:
    """The table's rows, as lists of cells: fault, behaviour, numbers, tests."""
    table = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "test_" in line]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]


@functools.cache
def module_tree(module: str) -> ast.Module:
    return ast.parse((ROOT / "tests" / module).read_text())


def functions(module: str) -> dict[str, ast.AST]:
    tree = module_tree(module)
    return {
        node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def numbers_in(node: ast.AST) -> set[float]:
    return {
        float(leaf.value)
        for leaf in ast.walk(node)
        if isinstance(leaf, ast.Constant)
        and isinstance(leaf.value, int | float)
        and not isinstance(leaf.value, bool)
    }


def asserted_numbers(module: str, node: ast.AST) -> set[float]:
    """Every number written in a test: in its asserts, the bounds they compare with, its
    parametrization, or a module-level table of cases it reads (a bound is often named
    first, then asserted)."""
    found = numbers_in(node)
    used = {leaf.id for leaf in ast.walk(node) if isinstance(leaf, ast.Name)}
    for statement in module_tree(module).body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(target, ast.Name) and target.id in used for target in targets):
                found |= numbers_in(statement)
    return found


def test_table_has_every_row_shape() -> None:
    """The table has its 4 columns and at least 30 rows, each naming a test and a number."""
    table = rows()
    assert len(table) >= 30
    for row in table:
        assert len(row) == 4, row
        assert _TEST_NAME.search(row[3]), row[0]
        assert _NUMBER.search(row[2]), row[0]


def test_every_promised_number_is_asserted_by_a_named_test() -> None:
    """Each number a row promises is written in one of the tests the row names."""
    for fault, _, numbers, tests in rows():
        names = _TEST_NAME.findall(tests)
        asserted: set[float] = set()
        for module, function in names:
            defined = functions(module)
            assert function in defined, f"{module}::{function} (row: {fault})"
            asserted |= asserted_numbers(module, defined[function])
        for number in _NUMBER.findall(numbers):
            value = float(number.replace(",", ""))
            assert value in asserted, f"row {fault!r}: no named test asserts {number}"
