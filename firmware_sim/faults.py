"""The band simulator's own faults, outside the user-facing :class:`HandCueError` tree.

These are not answers a companion gets nor mistakes in a routine: they are
events inside the simulated hardware (the supply cut mid-write) and misuse of
it by the band's firmware (programming bits that are not erased, an upload
step out of order before the protocol handler maps it to a status).  Keeping
them apart means an ``except HandCueError`` in a program cannot swallow a
simulated power cut, and a test that cuts power sees it propagate.

::

    SimulatorFault
    ├── PowerLoss      the simulated supply was cut during a flash operation
    ├── FlashError     the firmware misused the flash (a bug, or a bad flash image)
    └── StorageError   an upload step arrived out of order (mapped to a status)
"""

from __future__ import annotations

__all__ = ["FlashError", "PowerLoss", "SimulatorFault", "StorageError"]


class SimulatorFault(Exception):
    """Root of the faults of the simulated band itself."""


class PowerLoss(SimulatorFault):
    """The simulated supply was cut in the middle of a flash operation."""


class FlashError(SimulatorFault):
    """A firmware bug: programming bits that are not erased, or out of range; or a flash image of the wrong size."""


class StorageError(SimulatorFault):
    """An upload step arrived out of order (the protocol handler maps it to a status)."""
