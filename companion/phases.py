"""Where the time of a command goes: a recorder of named phases, handed down to the layers that do them.

The CLI makes one :class:`Phases` per command and gives it to the transport (and so to
:class:`~companion.client.BandClient`); each layer wraps the work it does in
:meth:`Phases.phase`.  ``-v`` prints the result (imports, scan, connect, the GATT cache
check or service discovery, subscribe, MTU exchange, pairing read, then one line per
request), by start time.  Some phases overlap: the subscription, the MTU exchange and the
pairing read run behind the first requests, and nobody waits for them.  Recording costs
two clock reads per phase, so it is always on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Phase", "Phases", "Unrecorded"]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One named stretch of work, in seconds since the recorder was made."""

    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Phases:
    """Named phases with their times, in the order they ended (nested phases come before the outer one)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.origin = self._clock()
        self.recorded: list[Phase] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the time the ``with`` block takes (also when it fails: the name then ends in ``(failed)``)."""
        start = self._clock() - self.origin
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self.recorded.append(Phase(f"{name} (failed)" if failed else name, start, self._clock() - self.origin))

    def total(self, name: str) -> float:
        """Seconds spent in every phase called ``name``."""
        return sum(phase.seconds for phase in self.recorded if phase.name == name)

    def lines(self) -> list[str]:
        """One line per phase, by start time: ``  +start ms  duration ms  name``."""
        return [f"{phase.start * 1000:8.1f} ms +{phase.seconds * 1000:7.1f} ms  {phase.name}"
                for phase in sorted(self.recorded, key=lambda phase: phase.start)]


class Unrecorded(Phases):
    """A recorder that keeps nothing, for layers used without one."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield
