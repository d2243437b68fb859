"""Run one ``handcue`` command and write when each of its phases started and ended (JSON), without changing the companion.

``python benchmarks/phase_probe.py OUT.json upload full-hand-massage --to ble:HandCue-1A2B``

Run as a script (not ``-m``), so that nothing but this file is imported before the
first timestamp.  The link phases are the ones the companion records itself (what
``handcue -v`` prints: scan, connect, GATT cache check or discovery, subscription,
pairing read, MTU exchange, each request), collected from every
:class:`companion.phases.Phases` the command makes; the CPU phases around them are
found by wrapping, in this process only, the functions that do them (the CLI import,
loading the routine, the bumble host's power-on, the transports' disconnect).  For a
``ble:`` address, bleak and bumble are imported before the command runs; their import
time is reported as its own phase (the CLI pays it lazily, on first BLE use).  Times are
``time.time()``, comparable with the parent's clock.
"""

from __future__ import annotations

import time

STARTED = time.time()

import atexit  # noqa: E402  (the first timestamp comes first)
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
PHASES: list[tuple[str, float, float]] = []


def wrap_async(owner: Any, name: str, phase: str | Any, *, classmethod_: bool = False) -> None:
    """Time every call of the coroutine function ``owner.name`` as ``phase`` (a string, or a function of the arguments)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return await original(*args, **kwargs)
        finally:
            label = phase if isinstance(phase, str) else phase(*args, **kwargs)
            if label:
                PHASES.append((label, start, time.time()))

    setattr(owner, name, classmethod(lambda cls, *a, **k: timed(*a, **k)) if classmethod_ else timed)


def wrap_sync(owner: Any, name: str, phase: str) -> None:
    """Time every call of the function ``owner.name`` as ``phase``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES.append((phase, start, time.time()))

    setattr(owner, name, timed)


RECORDERS: list[Any] = []
"""Every companion.phases.Phases the command made, with the time.time() of its origin."""


def recorded_phases() -> list[tuple[str, float, float]]:
    """The companion's own phases, on the wall clock."""
    return [(phase.name, at + phase.start, at + phase.end) for recorder, at in RECORDERS for phase in recorder.recorded]


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    atexit.register(lambda: Path(out).write_text(json.dumps({"started": STARTED, "phases": PHASES + recorded_phases(), "exited": time.time()})))
    start = time.time()
    import companion.cli

    PHASES.append(("imports (companion CLI)", start, time.time()))
    from companion.phases import Phases

    made = Phases.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        RECORDERS.append((self, time.time() - (self._clock() - self.origin)))

    Phases.__init__ = recording  # type: ignore[method-assign]
    from companion import tables
    from companion.transport import serial as serial_transport

    wrap_sync(tables, "load_table_or_routine", "load and compile the routine")

    wrap_async(serial_transport.SerialTransport, "connect", "open serial port")
    wrap_async(serial_transport.SerialTransport, "disconnect", "disconnect")
    if any(arg.startswith("ble:") for arg in argv):
        wrap_ble()
    sys.argv = ["handcue", *argv]
    try:
        companion.cli.main()  # as the console script runs it
    except SystemExit as exc:
        if exc.code:
            raise


def wrap_ble() -> None:
    start = time.time()
    import bleak  # noqa: F401
    import bumble.device  # noqa: F401

    from companion.ble import bumble_backend
    from companion.transport import ble as ble_transport

    PHASES.append(("imports (bleak, bumble; lazy in the CLI)", start, time.time()))
    wrap_async(bumble_backend._CentralStack, "create", "HCI transport and host power-on", classmethod_=True)
    wrap_async(ble_transport.BleTransport, "disconnect", "disconnect")


if __name__ == "__main__":
    main()
