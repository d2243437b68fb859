"""Run one ``handcue`` command and write when each of its phases started and ended, without changing the companion.

``python benchmarks/phase_probe.py OUT upload full-hand-massage --to ble:HandCue-1A2B``

Run as a script (not ``-m``), so that nothing but this file runs before the first
timestamp, and it imports nothing the CLI would not (``time``, ``sys`` and ``atexit`` are
built into the interpreter).  The phases are the ones the companion records itself from
the first line of :mod:`companion.cli` (what ``handcue -v`` prints: imports, the address
check, loading the routine, scan, connect and within it the host's power-on, the link,
the GATT cache check or discovery, the MTU exchange, subscription, pairing read, each
request, disconnect, closing the host and the event loop), collected from every
:class:`companion.phases.Phases` the command makes, plus the probe's own timing of the
import of :mod:`companion.cli` (which also covers the ``companion`` package's
``__init__``, before the CLI's first line).  Written to ``OUT`` as a Python literal
(read back with :func:`ast.literal_eval`): ``started`` (the probe's first line),
``exited`` (its exit handler), ``phases`` as ``(name, start, end, id, parent, note)``.
Times are ``time.time()``, comparable with the parent's clock.
"""

from __future__ import annotations

import time

STARTED = time.time()
WALL_MINUS_PERF = STARTED - time.perf_counter()
"""Turns the companion's ``perf_counter`` times into wall-clock times."""

import atexit  # noqa: E402  (the first timestamp comes first; both are built in)
import sys  # noqa: E402
from typing import Any  # noqa: E402  (imported by the interpreter's start already)

PROBE_PHASES: list[tuple[str, float, float, int, int | None, str]] = []
RECORDERS: list[Any] = []
"""Every companion.phases.Phases the command made."""


def recorded_phases() -> list[tuple[str, float, float, int, int | None, str]]:
    """The companion's own phases on the wall clock (ids made unique per recorder); its own
    ``imports (companion CLI)`` is left out: the probe's covers it and the package's ``__init__``."""
    out = []
    for number, recorder in enumerate(RECORDERS, start=1):
        at = WALL_MINUS_PERF + recorder.origin
        for index, phase in enumerate(recorder.recorded, start=1):
            if phase.name == "imports (companion CLI)":
                continue
            # getattr: a companion from before nested phases (ids, parents, notes) can be measured too, for a before/after.
            own_parent = getattr(phase, "parent", None)
            parent = None if own_parent is None else number * 1_000_000 + own_parent
            out.append((phase.name, at + phase.start, at + phase.end, number * 1_000_000 + getattr(phase, "id", index), parent, getattr(phase, "note", "")))
    return out


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]

    def write() -> None:
        with open(out, "w", encoding="utf-8") as file:
            file.write(repr({"started": STARTED, "phases": PROBE_PHASES + recorded_phases(), "exited": time.time()}))

    atexit.register(write)
    sys.path.insert(0, __file__.rsplit("/", 2)[0] if "/" in __file__ else "..")
    start = time.time()
    import companion.cli

    PROBE_PHASES.append(("imports (companion CLI)", start, time.time(), 1, None, ""))
    from companion.phases import Phases

    made = Phases.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        RECORDERS.append(self)

    Phases.__init__ = recording  # type: ignore[method-assign]
    sys.argv = ["handcue", *argv]
    try:
        companion.cli.main()  # as the console script runs it
    except SystemExit as exc:
        if exc.code:
            raise


if __name__ == "__main__":
    main()
