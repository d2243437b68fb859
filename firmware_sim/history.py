"""The band's session history: one 64-byte record per session in a ring of three flash sectors.

A record is written when a session ends (finished, stopped, or restarted)
(SPEC.md §19.8)::

    magic u16 = 0x4853 ("SH")  seq u32  clock u8  outcome u8  start u64  played_ms u32  paused_ms u32
    routine_crc32 u32  pauses u16  skips u16  steps u16  iterations u16  routine_name 24 bytes  crc u32

``clock`` says what ``start`` counts: 0 = band uptime in ms (the band's clock
was never set), 1 = Unix time in ms.  Sessions a power cut ended are not
recorded.  The ring holds 192 records; erasing its oldest sector to write on
leaves at least 128, so the last 100 sessions are always kept.  A torn record
fails its CRC and is ignored; the newest complete record is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import construct as c

from .flash import Flash
from .records import RecordRing

HISTORY_RECORD_SIZE = 64
HISTORY_MAGIC = 0x4853
NAME_BYTES = 24


class Outcome(IntEnum):
    FINISHED = 1
    STOPPED = 2
    RESTARTED = 3
    """START again while a session was under way."""


class ClockKind(IntEnum):
    UPTIME_MS = 0
    UNIX_MS = 1


SessionBody = c.Struct(
    "clock" / c.Int8ul,
    "outcome" / c.Int8ul,
    "start" / c.Int64ul,
    "played_ms" / c.Int32ul,
    "paused_ms" / c.Int32ul,
    "routine_crc32" / c.Int32ul,
    "pauses" / c.Int16ul,
    "skips" / c.Int16ul,
    "steps" / c.Int16ul,
    "iterations" / c.Int16ul,
    "routine_name" / c.PaddedString(NAME_BYTES, "utf8"),
)
assert SessionBody.sizeof() == HISTORY_RECORD_SIZE - 10


@dataclass(frozen=True)
class Session:
    """One recorded session."""

    clock: ClockKind
    outcome: Outcome
    start: int
    played_ms: int
    """Routine time played (pauses excluded)."""
    paused_ms: int
    routine_crc32: int
    pauses: int
    skips: int
    steps: int
    """Step records the session got past (played through or skipped)."""
    iterations: int
    """Step iterations the session got past (played through or skipped)."""
    routine_name: str
    seq: int = -1

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "clock": self.clock.name.lower(), "outcome": self.outcome.name.lower()}


def _short_name(name: str) -> str:
    """``name`` cut to fit its 24 bytes on a character boundary."""
    return name.encode()[:NAME_BYTES].decode(errors="ignore")


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

    def record(self, session: Session) -> int:
        """Append ``session``; returns its sequence number."""
        fields = {key: value for key, value in session.__dict__.items() if key != "seq"}
        fields["routine_name"] = _short_name(session.routine_name)
        return self._ring.append(SessionBody.build(fields))

    def sessions(self) -> list[Session]:
        """Every session held, oldest first; a record with codes this band does not know is left out."""
        out = []
        for raw in self._ring.in_order():
            try:
                body = SessionBody.parse(raw[6:-4])
                out.append(Session(ClockKind(body.clock), Outcome(body.outcome), body.start, body.played_ms, body.paused_ms,
                                   body.routine_crc32, body.pauses, body.skips, body.steps, body.iterations,
                                   body.routine_name, int.from_bytes(raw[2:6], "little")))
            except (ValueError, c.ConstructError, UnicodeDecodeError):
                continue
        return out
