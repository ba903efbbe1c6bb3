"""The rule groups against the catalogue: every rule has one home, and no group imports the
engine (the groups reach it through ``groups.base.Engine`` only)."""

from __future__ import annotations

import ast
from pathlib import Path

import tuidebug.checks.groups as groups_package
from tuidebug.checks.groups import GROUPS
from tuidebug.checks.rules import RULES


def test_every_rule_is_owned_by_exactly_one_group() -> None:
    owners: dict[str, list[str]] = {}
    for group in GROUPS:
        for rule in group.rules:
            owners.setdefault(rule, []).append(group.__name__)
    assert set(owners) == set(RULES)
    assert {rule: names for rule, names in owners.items() if len(names) > 1} == {}


def test_no_group_imports_the_engine() -> None:
    folder = Path(groups_package.__file__).parent
    imported: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        imported[path.name] = names
    assert "base.py" in imported and "losses.py" in imported
    assert {name: mods for name, mods in imported.items() if "tuidebug.checks.engine" in mods} == {}
