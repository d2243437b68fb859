"""Run one ``handcue`` command and write when each of its phases started and ended (JSON), without changing the companion.

``python benchmarks/phase_probe.py OUT.json upload full-hand-massage --to ble:HandCue-1A2B``

Run as a script (not ``-m``), so that nothing but this file is imported before the
first timestamp.  The phases are found by wrapping, in this process only, the
functions that do each step (bleak's scanner, bumble's connect, MTU exchange and
discovery, the transports' connect and disconnect, the phases ``BandClient`` records per request).  For a
``ble:`` address, bleak and bumble are imported before the command runs, to install
the wrappers; their import time is measured and reported as its own phase (the CLI
pays it lazily, on first BLE use).  Times are ``time.time()``, comparable with the parent's clock.
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


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    atexit.register(lambda: Path(out).write_text(json.dumps({"started": STARTED, "phases": PHASES, "exited": time.time()})))
    start = time.time()
    import companion.cli

    PHASES.append(("imports (companion CLI)", start, time.time()))
    from companion import tables
    from companion.transport import serial as serial_transport

    wrap_sync(tables, "load_table_or_routine", "load and compile the routine")

    wrap_async(serial_transport.SerialTransport, "connect", "open serial port")
    wrap_async(serial_transport.SerialTransport, "disconnect", "disconnect")
    wrap_phases()
    if any(arg.startswith("ble:") for arg in argv):
        wrap_ble()
    try:
        companion.cli.cli.main(args=argv, prog_name="handcue", standalone_mode=True)
    except SystemExit as exc:
        if exc.code:
            raise


def wrap_phases() -> None:
    """Time the phases the client records for each request (``UPLOAD_BEGIN`` and ``UPLOAD_COMMIT`` too: the
    upload sends them without ``request``, pipelined with the data), named by opcode."""
    import contextlib

    from companion.phases import Phases
    from protocol.constants import Opcode

    original = Phases.phase
    names = {opcode.name for opcode in Opcode}

    @contextlib.contextmanager
    def timed(self: Phases, name: str) -> Any:
        start = time.time()
        try:
            with original(self, name):
                yield
        finally:
            if name in names:
                PHASES.append((name, start, time.time()))

    Phases.phase = timed  # type: ignore[method-assign]


def wrap_ble() -> None:
    start = time.time()
    import bleak
    from bumble.device import Device, Peer

    from companion.ble import bumble_backend
    from companion.transport import ble as ble_transport

    PHASES.append(("imports (bleak, bumble; lazy in the CLI)", start, time.time()))
    wrap_async(bumble_backend._CentralStack, "create", "HCI transport and host power-on", classmethod_=True)
    for finder in ("find_device_by_name", "find_device_by_address", "find_device_by_filter"):
        wrap_async(bleak.BleakScanner, finder, "scan until seen", classmethod_=True)
    wrap_async(Device, "connect", "connect")
    wrap_async(Peer, "request_mtu", "MTU exchange")
    wrap_async(bumble_backend.BumbleClient, "_discover", "service discovery")
    wrap_async(bumble_backend.BumbleClient, "_read_gap_name", "service discovery")
    wrap_async(bumble_backend.BumbleClient, "read_gatt_char", "read pairing state")
    wrap_async(bumble_backend.BumbleClient, "start_notify", "subscribe to TX")
    wrap_async(ble_transport.BleTransport, "disconnect", "disconnect")


if __name__ == "__main__":
    main()
