"""The rule x script table for issue 19's report (item 7): every gallery demo, clean demo and
variant through the real ``tuidebug check --json``, with the rules each must trip, whether they
fired, and what else fired. Not a test (no ``test_`` prefix): a report, run by hand.

The lists are the tests' own (test_check_gallery.GALLERY and CLEAN, test_rule_variants.SCRIPTS
and their docstrings' ``Rules:``/``Options:`` lines), with the tests' options (gallery
``--steps 60``, variants ``--steps 100``), so the table says what CI checks.

    .venv/bin/python tests/checks/rule_report.py [--only SUBSTRING]

Runs one script at a time (several minutes); runs go to a private TUIDEBUG_HOME, removed after.
Exit code 1 when an expected rule did not fire or a clean demo raised a warning or worse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.checks.test_check_gallery import BUGS, CLEAN, GALLERY, check
from tests.checks.test_rule_variants import SCRIPTS, VARIANTS, _declared
from tests.support import DEMOS


@dataclass
class Case:
    name: str  # as shown: the path under demos/
    kind: str  # gallery, clean, variant
    path: Path
    args: list[str]
    options: list[str]
    expected: list[str]  # rules that must fire; none for a clean demo


def cases() -> list[Case]:
    found = [
        Case(f"bugs/{name}", "gallery", BUGS / name, args, ["--steps", "60"], [rule])
        for name, (rule, args) in GALLERY.items()
    ]
    found += [Case(name, "clean", DEMOS / name, args, [], []) for name, args in CLEAN]
    for name in SCRIPTS:
        rules, options = _declared(VARIANTS / name)
        found.append(
            Case(
                f"bugs/variants/{name}",
                "variant",
                VARIANTS / name,
                [],
                ["--steps", "100", *options],
                rules,
            )
        )
    return found


def row(case: Case, caught: str, others: str) -> str:
    expected = ", ".join(case.expected) or "-"
    return f"| {case.name} | {case.kind} | {expected} | {caught} | {others} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only the scripts whose name has this")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="td-report-", dir="/tmp"))
    os.environ["TUIDEBUG_HOME"] = str(base / "h")
    os.environ["TUIDEBUG_RUNTIME_DIR"] = str(base / "r")
    rows = [
        "| script | kind | rule expected | caught | other rules that fired |",
        "|---|---|---|---|---|",
    ]
    bad = 0
    try:
        for case in cases():
            if args.only not in case.name:
                continue
            try:
                _code, report = check(case.path, *case.args, options=tuple(case.options))
            except Exception as error:  # a crash or a timeout is a row too, not the end
                rows.append(row(case, "error", f"{error!r:.80}"))
                bad += 1
                continue
            alerts = report["alerts"]
            fired = {a["rule"] for a in alerts}
            if case.kind == "clean":
                loud = sorted({a["rule"] for a in alerts if a["severity"] != "info"})
                caught = "quiet" if not loud else "FALSE ALARM"
                bad += bool(loud)
            else:
                missing = [r for r in case.expected if r not in fired]
                caught = "yes" if not missing else "no: " + ", ".join(missing)
                bad += bool(missing)
            if report.get("script_exit_code") not in (0, None):
                caught += f" (script exit {report['script_exit_code']})"
            others = ", ".join(sorted(fired - set(case.expected))) or "-"
            rows.append(row(case, caught, others))
            print(rows[-1], file=sys.stderr, flush=True)  # progress, as it goes
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
