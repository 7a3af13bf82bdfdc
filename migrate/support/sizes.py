"""Sizes for people: `12.5 MB`, not `12491776`; one home for both unit systems."""

from __future__ import annotations

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _scaled(size: int | float, units: tuple[str, ...], step: int) -> tuple[float, str]:
    value = float(size)
    for unit in units[:-1]:
        if abs(value) < step:
            return value, unit
        value /= step
    return value, units[-1]


def human_bytes(size: int | float) -> str:
    """Decimal units as `docker images` prints them: 999 B, 12.5 MB, 1.06 GB."""
    value, unit = _scaled(size, _DECIMAL, 1000)
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"


def human_binary_bytes(size: int | float) -> str:
    """Binary units with one decimal (the plan report's disk figures): 1.5 GiB."""
    value, unit = _scaled(size, _BINARY, 1024)
    return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
