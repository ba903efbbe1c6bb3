"""``[tool.tuidebug]`` in the script's nearest ``pyproject.toml``.

Keys (all optional)::

    [tool.tuidebug]
    ignore = ["bias-before-batchnorm"]   # rule ids to silence
    fail-on = "warning"                   # tuidebug check's default threshold
    sample-every = 20                     # steps between sampled steps
    expect = ["loss < 0.5", "loss decreases"]   # tuidebug check's expectations (checks/expect.py)

    [tool.tuidebug.rules.update-ratio]    # per rule: severity and thresholds
    severity = "info"
    low = 1e-6

A missing or unreadable file is no configuration; on Python 3.10 ``tomli`` is used when it is
installed, else the file is skipped.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("tuidebug.probe")


@dataclass
class ChecksConfig:
    ignore: set[str] = field(default_factory=set)
    fail_on: str = "warning"
    sample_every: int | None = None
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    expect: list[str] = field(default_factory=list)
    source: str = ""

    def option(self, rule: str, key: str, default: float) -> float:
        """A rule's numeric setting, or ``default``."""
        value = self.rules.get(rule, {}).get(key, default)
        return float(value) if isinstance(value, (int, float)) else default

    def severity(self, rule: str, default: str) -> str:
        value = self.rules.get(rule, {}).get("severity")
        return value if value in ("info", "warning", "error") else default


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start``."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10 only
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            return {}
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def load_config(start: Path) -> ChecksConfig:
    """Read ``[tool.tuidebug]`` from the nearest pyproject.toml (never raises)."""
    path = find_pyproject(start)
    if path is None:
        return ChecksConfig()
    try:
        table = _load_toml(path).get("tool", {}).get("tuidebug", {})
    except (OSError, ValueError) as error:
        log.warning("tuidebug: cannot read %s: %s", path, error)
        return ChecksConfig()
    if not isinstance(table, dict):
        return ChecksConfig()
    config = ChecksConfig(source=str(path))
    ignore = table.get("ignore", [])
    if isinstance(ignore, list):
        config.ignore = {str(item) for item in ignore}
    fail_on = table.get("fail-on", table.get("fail_on"))
    if fail_on in ("info", "warning", "error"):
        config.fail_on = fail_on
    every = table.get("sample-every", table.get("sample_every"))
    if isinstance(every, int) and every > 0:
        config.sample_every = every
    expect = table.get("expect", [])
    if isinstance(expect, str):
        expect = [expect]
    if isinstance(expect, list):
        config.expect = [str(item) for item in expect]
    rules = table.get("rules", {})
    if isinstance(rules, dict):
        config.rules = {str(k): v for k, v in rules.items() if isinstance(v, dict)}
    return config
