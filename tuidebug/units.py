"""Sizes for people, the same everywhere (console, ``tuidebug ls``/``ckpt``, the probe's
notices): one formatter, so a checkpoint is "3.2 MiB" in the browser and in ``ckpt ls``."""

from __future__ import annotations


def fmt_bytes(value: float) -> str:
    """Bytes for a person: ``512 B``, ``3.2 MiB``, ``1.50 GiB``, ``2.00 TiB``."""
    if value >= 1 << 40:
        return f"{value / (1 << 40):.2f} TiB"
    if value >= 1 << 30:
        return f"{value / (1 << 30):.2f} GiB"
    if value >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    if value >= 1 << 10:
        return f"{value / (1 << 10):.1f} KiB"
    return f"{value:.0f} B"
