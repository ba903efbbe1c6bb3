"""Each rule on variants of its bug it was not written against (issue 19, item 2).

Every script of ``demos/bugs/variants/`` is a small real training script (100 steps of a tiny
model) with one or two bugs; its docstring's ``Rules:`` line names the rules it must trip, and
an ``Options:`` line any ``tuidebug check`` options it needs, and a ``Not caught:`` line a
rule that misses it (kept, with why: the report is honest). Two bugs share a script where
they cannot mask each other, so that CI pays for one ``import torch`` per pair. Each goes through
the real ``tuidebug check`` (a supervisor, the probe, the history on disk). Other rules may fire
too (a NaN loss is also a non-finite gradient).
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from tests.support import DEMOS, ROOT, TUIDEBUG
from tuidebug.checks.rules import RULES

VARIANTS = DEMOS / "bugs" / "variants"


def _declared(script: Path) -> tuple[list[str], list[str]]:
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    rules: list[str] = []
    options: list[str] = []
    for line in doc.splitlines():
        if line.startswith("Rules:"):
            rules = [r.strip() for r in line.removeprefix("Rules:").split(",") if r.strip()]
        elif line.startswith("Options:"):
            options = line.removeprefix("Options:").split()
    return rules, options


SCRIPTS = sorted(p.name for p in VARIANTS.glob("[a-z]*.py"))


# Rules with fewer than two caught variants so far, and why (the issue-19 report lists them).
SHORT: dict[str, str] = {}


def test_every_variant_names_known_rules_and_every_rule_has_two() -> None:
    counts = dict.fromkeys(RULES, 0)
    for name in SCRIPTS:
        rules, _ = _declared(VARIANTS / name)
        assert rules, f"{name} has no Rules: line"
        for rule in rules:
            assert rule in RULES, f"{name}: unknown rule {rule}"
            counts[rule] += 1
    assert {rule for rule, n in counts.items() if n < 2} == set(SHORT), counts


@pytest.mark.parametrize("script", SCRIPTS)
def test_variant_trips_its_rules(run_env: dict[str, str], script: str) -> None:
    rules, options = _declared(VARIANTS / script)
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--json", "--steps", "100", *options, str(VARIANTS / script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    assert report["script_exit_code"] == 0, report["script_error"]
    fired = {a["rule"] for a in report["alerts"]}
    missing = set(rules) - fired
    assert not missing, f"{script}: {sorted(missing)} did not fire (fired: {sorted(fired)})"
    for alert in report["alerts"]:
        assert alert["why"] and alert["fix"] and alert["severity_means"]
    assert proc.returncode == 1
