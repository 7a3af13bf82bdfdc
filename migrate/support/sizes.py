"""Sizes for people: `12.5 MB`, not `12491776`."""

from __future__ import annotations

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(size: int | float) -> str:
    """Decimal units as `docker images` prints them: 999 B, 12.5 MB, 1.06 GB."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
