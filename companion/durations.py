"""Durations as people read them (``5 min``, ``1 min 30.5 s``): the one formatter, light to import.

It lives apart from :mod:`companion.routine` (which parses routine files, with the technique library
and the checker) so that ``handcue status`` and ``start`` print a band's times without importing
those: about 6 ms of every such command.
"""

from __future__ import annotations

__all__ = ["format_ms"]


def format_ms(ms: int) -> str:
    """``300000`` -> ``5 min``, ``90500`` -> ``1 min 30.5 s``."""
    minutes, rest = divmod(ms, 60_000)
    seconds = rest / 1000
    seconds_text = f"{seconds:g} s" if seconds else ""
    if minutes and seconds_text:
        return f"{minutes} min {seconds_text}"
    return f"{minutes} min" if minutes else seconds_text or "0 s"
