"""Human-friendly numbers and durations for the console (pure functions)."""

from __future__ import annotations

import math


def format_value(value: float | None) -> str:
    """A loss or scalar in a few significant digits: 0.01234, 1.234e-05, 12.35, nan."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}" if magnitude < 1 else f"{value:,.4f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """12s, 3m04s, 1h02m03s."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_rate(rate: float | None) -> str:
    """Steps per second: 1,234/s, 12.3/s, 0.05/s."""
    if rate is None:
        return "—"
    if rate >= 100:
        return f"{rate:,.0f}/s"
    if rate >= 1:
        return f"{rate:.1f}/s"
    return f"{rate:.2f}/s"
