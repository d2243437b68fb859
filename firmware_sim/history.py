"""The band's session history: one 64-byte record per session in a ring of three flash sectors.

The record is declared once, in :mod:`protocol.history` (SPEC.md §19.8); this
module keeps it power-safe in flash and counts what goes into it while a
session is under way (:class:`SessionTracker`).

A record is written when a session ends (finished, stopped, or restarted).
``clock`` says what ``start`` counts: band uptime in ms (the band's clock was
never set) or Unix time in ms.  Sessions a power cut ended are not recorded.
The ring holds 192 records; erasing its oldest sector to write on leaves at
least 128, so the last 100 sessions are always kept.  A torn record fails its
CRC and is ignored; the newest complete record is never lost.  Records of the
first layout (another magic) are ignored, not misread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import construct as c

from protocol.constants import ClockKind, SessionOutcome
from protocol.history import HISTORY_MAGIC, HISTORY_RECORD_SIZE, Session, build_record, parse_record

from .flash import Flash
from .records import RecordRing

__all__ = ["HISTORY_MAGIC", "HISTORY_RECORD_SIZE", "ClockKind", "History", "Outcome", "Session", "SessionTracker"]

Outcome = SessionOutcome
"""How a session ended (the name the band's code uses)."""


@dataclass
class SessionTracker:
    """What the band counts while a session is under way, for its history record."""

    start_ms: int
    """Band time (ms since boot) the session began."""
    wall_start_ms: int | None = None
    """The same instant in Unix ms, if the band's clock was set then (taken at the start, so a clock set
    again mid-session, or a band clock that drifts from the companion's, cannot move it)."""
    pauses: int = 0
    skips: int = 0
    paused_ms: int = 0
    steps: int = 0
    iterations: int = 0
    acks_given: int = 0
    acks_missed: int = 0
    position: tuple[int, int, int] | None = None
    """(record, iteration, routine time it began) of the step iteration playing."""

    def note_ack(self, given: bool) -> None:
        """A cue that asks for an acknowledgement is done with: ``given`` when the wearer pressed the button
        while the band repeated it, else (its cap of repeats reached without a press) missed.

        The acknowledgement code calls this once per such cue (through :meth:`firmware_sim.band.Band.note_ack`).
        """
        if given:
            self.acks_given += 1
        else:
            self.acks_missed += 1


class History:
    """The session log, mounted from ``sectors`` of ``flash``."""

    def __init__(self, flash: Flash, sectors: range) -> None:
        self._ring = RecordRing(flash, sectors, HISTORY_RECORD_SIZE, HISTORY_MAGIC)

    @property
    def capacity(self) -> int:
        return self._ring.slots

    @property
    def torn(self) -> int:
        return self._ring.torn

    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
        return self._ring.next_seq

    def record(self, session: Session) -> int:
        """Append ``session`` (its ``seq`` is the ring's to give); returns its sequence number."""
        record = build_record(replace(session, seq=self._ring.next_seq))
        # The ring frames the body with the same magic, sequence number and CRC-32 the declaration computes.
        return self._ring.append(record[6:-4])

    def sessions(self, from_seq: int = 0) -> list[Session]:
        """Every session held from ``from_seq`` on, oldest first; a record with codes this band does not know is left out."""
        out = []
        for raw in self._ring.in_order():
            try:
                session = parse_record(raw)
            except (c.ConstructError, UnicodeDecodeError):
                continue
            if session.clock is not None and session.outcome is not None and session.seq >= from_seq:
                out.append(session)
        return out

    def clear(self) -> None:
        """Erase every record (CLEAR_HISTORY).  Sequence numbers go on from where they were, across a power cut
        and reboots: a marker record with outcome 0 (which :meth:`sessions` leaves out) keeps the last one."""
        self._ring.clear(marker=bytes(HISTORY_RECORD_SIZE - 10))
