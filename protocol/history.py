"""The session record: one 64-byte record per session, the same bytes in the band's flash and in HISTORY answers.

Declared once, with :func:`~protocol.layout.laid_out` at fixed offsets (SPEC.md §19.8)::

    0  magic u16 = 0x3253 ("S2")   2  seq u32   6  clock u8   7  outcome u8   8  start u64
    16 played_ms u32   20 paused_ms u32   24 routine_crc32 u32   28 pauses u16   30 skips u16
    32 steps u16   34 iterations u16   36 acks_given u8   37 acks_missed u8   38 routine_name 22 bytes
    60 crc u32 = CRC-32 of bytes 0..59

:class:`Session` is the model (offsets 2..59); :data:`SESSION_RECORD` adds the
magic and computes the CRC, so a record read from flash or from the wire is
either whole and checked or refused.  The band's ring (``firmware_sim.history``)
stores these bytes as they are and the companion reads them back with the same
declaration.  Records of the first layout (magic 0x4853, no acknowledgement
counts, a 24-byte name) have another magic, so a band ignores them rather than
misread them.
"""

from __future__ import annotations

import zlib
from typing import Any

import construct as c  # type: ignore[import-untyped,unused-ignore]

from .constants import ClockKind, SessionOutcome
from .layout import Coded, Coding, Saturating, laid_out, layout_of, raw_layout_of, wire

HISTORY_RECORD_SIZE = 64
HISTORY_MAGIC = 0x3253
"""Bytes ``53 32`` ("S2"): the second session-record layout (the first, 0x4853, had no acknowledgement counts)."""
ROUTINE_NAME_BYTES = 22
COUNT_LIMIT = 0xFFFF
ACK_LIMIT = 0xFF


class CutText(Coding):
    """A string in a fixed number of zero-padded UTF-8 bytes, cut on a character boundary when longer."""

    def __init__(self, size: int) -> None:
        super().__init__(c.PaddedString(size, "utf8"))
        self.size = size

    def _decode(self, obj: str, context: Any, path: Any) -> str:
        return obj

    def _encode(self, obj: str, context: Any, path: Any) -> str:
        return obj.encode()[: self.size].decode(errors="ignore")


@laid_out
class Session:
    """One recorded session.  Codes this side does not know (a newer band) read as ``None``."""

    clock: ClockKind | None = wire(Coded(c.Int8ul, ClockKind, lenient=True), at=6)
    outcome: SessionOutcome | None = wire(Coded(c.Int8ul, SessionOutcome, lenient=True), at=7)
    start: int = wire(c.Int64ul, at=8)
    """When the session started, in the unit ``clock`` names (ms)."""
    played_ms: int = wire(c.Int32ul, at=16)
    """Routine time played (pauses excluded)."""
    paused_ms: int = wire(c.Int32ul, at=20)
    routine_crc32: int = wire(c.Int32ul, at=24)
    pauses: int = wire(Saturating(c.Int16ul, COUNT_LIMIT), at=28)
    skips: int = wire(Saturating(c.Int16ul, COUNT_LIMIT), at=30)
    steps: int = wire(Saturating(c.Int16ul, COUNT_LIMIT), at=32)
    """Step records the session got past (played through or skipped)."""
    iterations: int = wire(Saturating(c.Int16ul, COUNT_LIMIT), at=34)
    """Step iterations the session got past (played through or skipped)."""
    routine_name: str = wire(CutText(ROUTINE_NAME_BYTES), at=38)
    acks_given: int = wire(Saturating(c.Int8ul, ACK_LIMIT), at=36, default=0)
    """Acknowledgements the wearer gave (a button press while the band repeated a cue that asks for one)."""
    acks_missed: int = wire(Saturating(c.Int8ul, ACK_LIMIT), at=37, default=0)
    """Cues that asked for an acknowledgement and reached their cap of repeats without one."""
    seq: int = wire(c.Int32ul, at=2, default=0)
    """The record's sequence number: one more than the newest record's when it was written."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "clock": _name(self.clock), "start": self.start, "outcome": _name(self.outcome),
            "routine_name": self.routine_name, "routine_crc32": self.routine_crc32, "played_ms": self.played_ms,
            "paused_ms": self.paused_ms, "pauses": self.pauses, "skips": self.skips, "steps": self.steps,
            "iterations": self.iterations, "acks_given": self.acks_given, "acks_missed": self.acks_missed,
        }


def _name(code: ClockKind | SessionOutcome | None) -> str | None:
    return None if code is None else code.name.lower()


SESSION_FIELDS = layout_of(Session, start=2)
"""Bytes 2..59 of a record <-> a :class:`Session`."""
SESSION_FIELDS_RAW = raw_layout_of(Session, start=2)
"""The same bytes as raw wire values (SPEC.md's table)."""


class _Record(c.Adapter):  # type: ignore[misc,unused-ignore]
    """A whole record <-> its :class:`Session`: the magic is checked, the CRC computed and checked."""

    def _decode(self, obj: Any, context: Any, path: Any) -> Session:
        session: Session = obj.signed.value.session
        return session

    def _encode(self, obj: Session, context: Any, path: Any) -> dict[str, Any]:
        return {"signed": {"value": {"magic": HISTORY_MAGIC, "session": obj}}, "crc": None}


SESSION_RECORD: Any = _Record(c.Struct(
    "signed" / c.RawCopy(c.Struct("magic" / c.Const(HISTORY_MAGIC, c.Int16ul), "session" / SESSION_FIELDS)),
    "crc" / c.Checksum(c.Int32ul, zlib.crc32, c.this.signed.data),
))
"""A 64-byte record <-> a :class:`Session` (seq included); a wrong magic or CRC raises ``construct.ConstructError``."""
assert SESSION_RECORD.sizeof() == HISTORY_RECORD_SIZE


def build_record(session: Session) -> bytes:
    return bytes(SESSION_RECORD.build(session))


def parse_record(data: bytes) -> Session:
    """The session in a 64-byte record; ``construct.ConstructError`` if it is not a whole, valid one."""
    session: Session = SESSION_RECORD.parse(data)
    return session
