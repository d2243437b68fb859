"""HandCue performance benchmarks: ``python -m benchmarks``.

One module per benchmark (:mod:`.compactness`, :mod:`.serial_upload`,
:mod:`.ble_upload`, :mod:`.simulator`, :mod:`.companion_cli`).  Each exposes
``TITLE``, ``METHOD`` (markdown) and ``run(...) -> Report``; the keyword
arguments of ``run`` choose the configuration, and the defaults are the full
benchmark.  ``python -m benchmarks`` runs them all in one process, prints a
summary table and writes ``docs/performance.md``.

Every benchmark stops by itself and uses only local resources: a pty served
by a ``handcue-sim`` subprocess, bumble's in-process virtual BLE link, and
subprocesses of this interpreter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC_PATH = REPO / "docs" / "performance.md"


@dataclass
class Row:
    """One line of the summary table."""

    metric: str
    value: str
    target: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "MISSED")


@dataclass
class Report:
    """What one benchmark measured."""

    name: str
    title: str
    method: str
    rows: list[Row]
    details: str = ""
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one character per column (l or r), default: first left, rest right."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f} ms"


def ratio(value: float) -> str:
    return f"{value:.2f}x"
