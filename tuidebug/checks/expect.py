"""Expectations on a checked run's curves: ``tuidebug check --expect "loss < 0.5"``.

The guide's "ML test in CI": run N steps, then check the loss. An expectation is one of::

    loss < 0.5            the loss at the end of the run (see below) compared with a number
    val_loss <= 1.0       any scalar the script logged (dbg.step(val_loss=...), self.log, ...)
    loss@100 < 1.2        the value at step 100 (the last one logged at or before it)
    loss decreases        the end value is lower than the start value

"At the end" means, for ``loss`` (one value per step, noisy from batch to batch), the mean of
the last ``TAIL`` steps' losses; for any other scalar (logged now and then, usually an average
already, e.g. once an epoch), its last logged value. "decreases" compares the same end value
with the start: the mean of the first ``TAIL`` losses, or a scalar's first logged value.

Parsing reuses the break conditions' parser (``probe/conditions.py``); nothing is evaluated as
code. Values come from the run's stored history (rank 0's steps).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from tuidebug.probe.conditions import _OPERATORS, ConditionError, parse_condition

TAIL = 10
_AT_STEP = re.compile(r"^\s*([A-Za-z_][\w./-]*)@(\d+)(.*)$")
_DECREASES = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s+decreases\s*$")


class ExpectationError(ValueError):
    """The text is not an expectation; the message says what is expected."""


@dataclass(frozen=True)
class Expectation:
    text: str
    name: str  # "loss" or a logged scalar's name
    op: str  # one of conditions._OPERATORS, or "decreases"
    value: float = 0.0
    step: int | None = None  # ``name@step``: at that step; None: at the end of the run


@dataclass(frozen=True)
class Verdict:
    expectation: Expectation
    ok: bool
    value: float | None  # what was compared (None: no value to compare)
    reason: str  # one line: what was measured, and how

    def as_dict(self) -> dict[str, Any]:
        return {
            "expect": self.expectation.text,
            "ok": self.ok,
            "value": self.value,
            "reason": self.reason,
        }


def parse_expectation(text: str) -> Expectation:
    """Parse ``text`` or raise ``ExpectationError`` with a one-line reason."""
    match = _DECREASES.match(text)
    if match:
        return Expectation(text.strip(), match.group(1), "decreases")
    step: int | None = None
    body = text
    match = _AT_STEP.match(text)
    if match:
        step = int(match.group(2))
        body = match.group(1) + match.group(3)
    try:
        condition = parse_condition(body)
    except ConditionError as error:
        raise ExpectationError(
            f"not an expectation: {text!r} (try `loss < 0.5`, `val_loss@100 < 1.2`, "
            "`loss decreases`)"
        ) from error
    if condition.op == "nonfinite" or condition.name in (None, "step"):
        raise ExpectationError(f"not an expectation: {text!r} (compare a loss or a scalar)")
    return Expectation(text.strip(), condition.name, condition.op, condition.value, step)


def series(points: list[Any], name: str) -> list[tuple[int, float]]:
    """(step, value) of ``name`` in ``points`` (StepPoints), in step order, NaN kept."""
    found = []
    for point in points:
        value = point.loss if name == "loss" else point.scalars.get(name)
        if value is not None:
            found.append((point.step, float(value)))
    found.sort(key=lambda item: item[0])
    return found


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _summary(name: str, values: list[tuple[int, float]], at_end: bool) -> tuple[float, str]:
    """The end (or start) value of a series, and where it was read."""
    if name == "loss":
        part = values[-TAIL:] if at_end else values[:TAIL]
        first, last = part[0][0], part[-1][0]
        where = f"mean of steps {first}-{last}" if len(part) > 1 else f"step {first}"
        return sum(v for _, v in part) / len(part), where
    step, value = values[-1] if at_end else values[0]
    return value, f"{'last' if at_end else 'first'} logged, step {step}"


def judge(expectation: Expectation, points: list[Any]) -> Verdict:
    """Judge one expectation on a run's step points."""
    name = expectation.name
    values = series(points, name)
    if not values:
        what = "no loss was recorded" if name == "loss" else f"{name} was never logged"
        return Verdict(expectation, False, None, f"{expectation.text}: {what}")
    if expectation.op == "decreases":
        if len(values) < 2:
            return Verdict(expectation, False, None, f"{expectation.text}: only one value")
        start, start_where = _summary(name, values, at_end=False)
        end, end_where = _summary(name, values, at_end=True)
        ok = math.isfinite(end) and end < start
        return Verdict(
            expectation,
            ok,
            end,
            f"{expectation.text}: {name} {_fmt(start)} ({start_where}) -> {_fmt(end)} "
            f"({end_where})",
        )
    if expectation.step is not None:
        before = [(s, v) for s, v in values if s <= expectation.step]
        if not before:
            return Verdict(
                expectation,
                False,
                None,
                f"{expectation.text}: no {name} at or before step {expectation.step} "
                f"(first at step {values[0][0]})",
            )
        if values[-1][0] < expectation.step and name == "loss":
            return Verdict(
                expectation,
                False,
                None,
                f"{expectation.text}: the run ended at step {values[-1][0]}",
            )
        step, value = before[-1]
        where = f"step {step}"
    else:
        value, where = _summary(name, values, at_end=True)
    # NaN compares false with everything, so a NaN loss fails `loss < 0.5` and `loss > 0`.
    ok = not math.isnan(value) and _OPERATORS[expectation.op](value, expectation.value)
    return Verdict(
        expectation,
        ok,
        value,
        f"{expectation.text}: {name} = {_fmt(value)} ({where})",
    )
