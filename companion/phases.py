"""Where the time of a command goes: a recorder of named phases, handed down to the layers that do them.

The CLI makes one :class:`Phases` per command, timed from the first line of the ``handcue``
module (:data:`companion.cli.STARTED`), and gives it to
the transport (and so to :class:`~companion.client.BandClient`); each layer wraps the
work it does in :meth:`Phases.phase`.  ``-v`` prints the result (:meth:`Phases.lines`):
imports, loading the routine, scan, connect (and within it the host's power-on, the
link, the GATT cache check or service discovery), subscribe, MTU exchange, pairing
read, one line per request, disconnect.  A phase started inside another (in the same
task, or in a task started inside it) is its child and is printed indented under it,
so that nobody counts its time twice.  Some top-level phases overlap: the subscription,
the MTU exchange and the pairing read run behind the first requests, and nobody waits
for them.  Recording costs two clock reads per phase, so it is always on.
"""

from __future__ import annotations

import contextvars
import dataclasses
import gc
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

__all__ = ["Phase", "Phases", "Unrecorded", "freeze_what_is_loaded", "imports", "loading"]


_open: contextvars.ContextVar[dict[int, int]] = contextvars.ContextVar("companion_open_phases", default={})  # noqa: B039  (never mutated)
"""Per recorder (by ``id``), the innermost phase open in this context: a task started inside a phase inherits it."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One named stretch of work, in seconds since the recorder's origin.

    ``parent`` is the :attr:`id` of the phase it ran inside (None: a top-level phase);
    ``note`` is a detail printed after the name (e.g. the negotiated MTU).
    """

    name: str
    start: float
    end: float
    id: int = 0
    parent: int | None = None
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Phases:
    """Named phases with their times, in the order they ended (nested phases come before the outer one).

    ``origin`` is when the recording starts (by default now, on ``clock``'s scale).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, origin: float | None = None) -> None:
        self._clock = clock
        self.origin = self._clock() if origin is None else origin
        self.recorded: list[Phase] = []
        self._ids = itertools.count(1)

    def now(self) -> float:
        """Seconds since the origin, for :meth:`add`."""
        return self._clock() - self.origin

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the time the ``with`` block takes (also when it fails or is cancelled: the name then ends in
        ``(failed)`` or ``(cancelled)``).

        Phases started inside the block (in this task or in tasks it starts) are its children.
        """
        start = self.now()
        phase_id, open_phases = next(self._ids), _open.get()
        parent = open_phases.get(id(self))
        token = _open.set({**open_phases, id(self): phase_id})  # a new dict: the one other contexts hold stays as it was
        outcome = ""
        try:
            yield
        except BaseException as exc:
            # Cancelled: e.g. a background read nobody waited for, ended with the link.  (asyncio is not
            # imported here: `handcue --help` imports this module and need not pay for it.)
            asyncio = sys.modules.get("asyncio")
            outcome = " (cancelled)" if asyncio is not None and isinstance(exc, asyncio.CancelledError) else " (failed)"
            raise
        finally:
            _open.reset(token)
            self.recorded.append(Phase(name + outcome, start, self.now(), phase_id, parent))

    def add(self, name: str, start: float, end: float | None = None, note: str = "", parent: int | None = None) -> None:
        """Record a phase whose start and end are not one ``with`` block (e.g. from an event to another); times
        as :meth:`now` gives them, ``end`` now by default.  It is top-level unless ``parent`` says otherwise."""
        self.recorded.append(Phase(name, start, self.now() if end is None else end, next(self._ids), parent, note))

    def total(self, name: str) -> float:
        """Seconds spent in every phase called ``name``."""
        return sum(phase.seconds for phase in self.recorded if phase.name == name)

    def top_level_seconds(self) -> float:
        """Seconds covered by at least one top-level phase (overlapping phases counted once)."""
        covered, reach = 0.0, float("-inf")
        for phase in sorted((p for p in self.recorded if p.parent is None), key=lambda p: p.start):
            if phase.end > reach:
                covered += phase.end - max(phase.start, reach)
                reach = phase.end
        return covered

    def lines(self, *, until: float | None = None) -> list[str]:
        """One line per phase, ``  +start ms  +duration ms  name``: top-level phases by start time, each
        followed by its children (by start time), indented by two spaces per level.

        With ``until`` (seconds since the origin, e.g. :meth:`now` at the end of the command) a last line
        gives the time since the origin and how much of it no top-level phase covers.
        """
        children: dict[int | None, list[Phase]] = {}
        for phase in self.recorded:
            children.setdefault(phase.parent, []).append(phase)
        known = {phase.id for phase in self.recorded}
        roots = [phase for phase in self.recorded if phase.parent is None or phase.parent not in known]
        out: list[str] = []

        def show(phase: Phase, depth: int) -> None:
            note = f" ({phase.note})" if phase.note else ""
            out.append(f"{phase.start * 1000:8.1f} ms +{phase.seconds * 1000:7.1f} ms  {'  ' * depth}{phase.name}{note}")
            for child in sorted(children.get(phase.id, []), key=lambda p: p.start):
                show(child, depth + 1)

        for root in sorted(roots, key=lambda p: p.start):
            show(root, 0)
        if until is not None:
            gaps = until - self.top_level_seconds()
            out.append(f"{until * 1000:8.1f} ms in all; {gaps * 1000:.1f} ms of it in no phase above (click parsing the arguments, the gaps between phases)")
        return out


class Unrecorded(Phases):
    """A recorder that keeps nothing, for layers used without one."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def add(self, name: str, start: float, end: float | None = None, note: str = "", parent: int | None = None) -> None:
        pass


_freezing = False
"""Set by :func:`freeze_what_is_loaded`: :func:`loading` pauses the cyclic garbage collector."""


def freeze_what_is_loaded() -> None:
    """For a process that runs one command (the console script): move every object made so far out of
    the garbage collector's sight (:func:`gc.freeze`), and from now on do the same after each
    :func:`loading` phase, during which the collector is paused.

    What a command loads (modules, classes, functions: bleak's and bumble's are some 200 000 objects) lives
    as long as the process, and the collector's passes during the imports only traverse it: 40-70 ms of a
    known band's ``handcue status`` over bumble, one full collection among them.  Frozen objects are never
    collected, so this is for one-command processes only (tests that run commands in process leave it off)."""
    global _freezing
    _freezing = True
    gc.freeze()


@contextmanager
def loading(phases: Phases, label: str) -> Iterator[None]:
    """A phase ``label`` of imports or other start-up work that makes long-lived objects: with
    :func:`freeze_what_is_loaded` on, the collector is paused during it and what it made is frozen after."""
    with phases.phase(label):
        if not _freezing or not gc.isenabled():
            yield
            return
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            gc.enable()


def imports(phases: Phases, label: str, *modules: str) -> AbstractContextManager[None]:
    """A :func:`loading` phase ``label`` around an import of ``modules``, or none if they are all imported
    already (a ``+0.0 ms`` import line would only mislead)."""
    if all(module in sys.modules for module in modules):
        return nullcontext()
    return loading(phases, label)
