"""Break conditions: when should the run pause by itself?

A condition is a short expression a person types in the console or passes with ``--break-on``:

    loss > 2.5          loss nonfinite        grad_norm >= 10
    step == 500         nonfinite             lr < 1e-6

``nonfinite`` alone means "the loss, or any logged scalar, is NaN or infinite". A condition on a
scalar that a step did not log is false for that step. Parsing never evaluates code.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from tuidebug.wire.messages import StepPoint

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_COMPARISON = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_NONFINITE = re.compile(r"^\s*(?:([A-Za-z_][\w./-]*)\s+)?(?:nonfinite|nan)\s*$")


class ConditionError(ValueError):
    """The text is not a condition; the message says what is expected."""


@dataclass(frozen=True)
class Condition:
    """One parsed break condition."""

    text: str
    name: str | None  # "step", "loss", a scalar's name; None with nonfinite: any value
    op: str  # one of _OPERATORS, or "nonfinite"
    value: float = 0.0

    def holds(self, point: StepPoint) -> bool:
        """True when the condition holds at this step's point."""
        if self.op == "nonfinite":
            if self.name is None:
                values = [point.loss, *point.scalars.values()]
            else:
                values = [_lookup(point, self.name)]
            return any(v is not None and not math.isfinite(v) for v in values)
        current = _lookup(point, self.name or "")
        if current is None or math.isnan(current):
            return False
        return _OPERATORS[self.op](current, self.value)


def _lookup(point: StepPoint, name: str) -> float | None:
    if name == "step":
        return float(point.step)
    if name == "loss":
        return point.loss
    return point.scalars.get(name)


def parse_condition(text: str) -> Condition:
    """Parse ``text`` or raise ``ConditionError`` with a one-line reason."""
    match = _NONFINITE.match(text)
    if match:
        return Condition(text.strip(), match.group(1), "nonfinite")
    match = _COMPARISON.match(text)
    if not match:
        raise ConditionError(
            f"not a condition: {text!r} (try `loss > 2.5`, `step == 500`, `loss nonfinite`)"
        )
    name, op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        raise ConditionError(f"{raw!r} is not a number in {text!r}") from None
    return Condition(text.strip(), name, op, value)
