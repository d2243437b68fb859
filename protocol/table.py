"""The binary step table: layouts and model (declared once), encoder, decoder, checks.

A table is what a band stores and executes.  Layout (all little endian)::

    header     24 bytes  magic, CRC-32, version, flags, sizes, counts, total
    records    record_count x record_size   (STEP and LOOP records)
    patterns   pattern_count x 2            (first segment, segment count)
    segments   segment_count x 2            (amplitude %, duration / 10 ms)
    names      optional: routine name, then one name per pattern

``protocol/SPEC.md`` describes every byte and how a band executes it.  Each
record and segment is a model class whose fields carry their layout
(:mod:`protocol.layout`); :data:`Table` puts the sections together and computes
the counts, sizes and CRC from the content.  This module does no I/O:
:func:`encode_table` and :func:`decode_table` convert between bytes and
:class:`StepTable`, and both enforce :class:`Limits`.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import construct as c  # type: ignore[import-untyped,unused-ignore]

from .constants import (
    NO_PATTERN,
    SEGMENT_UNIT_MS,
    TABLE_BASE_VERSION,
    TABLE_FORMAT_VERSION,
    TABLE_HEADER_SIZE,
    TABLE_MAGIC,
    TABLE_READ_VERSIONS,
    TABLE_RECORD_SIZE,
    TIME_UNIT_MS,
    Ack,
    Hands,
    Iterate,
    Limits,
    RecordKind,
    StepFlags,
    TableError,
    TableFlags,
    TechniqueCode,
)
from .cues import STEP_CUE_SLOTS
from .errors import TableFormatError
from .layout import Coded, Coding, Compiled, Marker, Rebuild, Tagged, Units, laid_out, layout_of, wire

# --------------------------------------------------------------------------
# Field types: the units and markers of the bytes, as adapters

Time = Units(c.Int16ul, TIME_UNIT_MS)
"""Durations, tick intervals and warnings: u16 of 100 ms units in the bytes, ms in the model."""
PatternRef = Marker(c.Int8ul, NO_PATTERN)
"""A pattern index; 0xFF ("no pattern") is ``None`` in the model."""
TechniqueByte = Coded(c.Int8ul, TechniqueCode)
IterateByte = Coded(c.Int8ul, Iterate)
Name = c.PascalString(c.Int8ul, "utf8")


class FlagBit(Coding):
    """One bit of a flags byte as a bool in the model; the byte's other bits are reserved (written 0, read past)."""

    def __init__(self, subcon: Any, bit: int) -> None:
        super().__init__(subcon)
        self.bit = bit

    def _decode(self, obj: int, context: Any, path: Any) -> bool:
        return bool(obj & self.bit)

    def _encode(self, obj: bool, context: Any, path: Any) -> int:
        return self.bit if obj else 0


AckFlag = FlagBit(c.Int8ul, int(StepFlags.ACK))
"""A STEP record's flags byte (format 2): bit 0, the step waits for an acknowledgement."""

CRC_OFFSET = 4
CRC_START = 8
"""The CRC-32 covers every byte from offset 8 to the end of the table."""


def table_crc(data: bytes | bytearray) -> int:
    """CRC-32/ISO-HDLC (zlib's) over bytes 8.. of a table: what the header's ``crc32`` holds."""
    return zlib.crc32(bytes(data[CRC_START:]))


# --------------------------------------------------------------------------
# Records and pattern segments: model and layout in one declaration
# (offsets within the record: byte 0 is the kind, see RECORD below)


@laid_out
class StepRecord:
    """One technique, played ``count`` times for ``duration_ms`` each."""

    technique: TechniqueCode = wire(TechniqueByte, at=1)
    duration_ms: int = wire(Time, at=4)
    iterate: Iterate = wire(IterateByte, at=2, default=Iterate.NONE)
    count: int = wire(c.Int8ul, at=3, default=1)
    tick_every_ms: int = wire(Time, at=6, default=0)
    warn_before_ms: int = wire(Time, at=8, default=0)
    start_pattern: int | None = wire(PatternRef, at=10, default=None)
    next_pattern: int | None = wire(PatternRef, at=11, default=None)
    tick_pattern: int | None = wire(PatternRef, at=12, default=None)
    warn_pattern: int | None = wire(PatternRef, at=13, default=None)
    ack: bool = wire(AckFlag, at=14, default=False)
    """Format 2: after its START cue the step waits for the wearer's acknowledgement (SPEC.md §12.10)."""

    @property
    def total_ms(self) -> int:
        return self.duration_ms * self.count


@laid_out
class LoopRecord:
    """Repeat the next ``body_count`` records ``count`` times."""

    iterate: Iterate = wire(IterateByte, at=1)
    count: int = wire(c.Int8ul, at=2)
    body_count: int = wire(c.Int16ul, at=4)
    round_pattern: int | None = wire(PatternRef, at=3, default=None)


@laid_out
class PatternSegment:
    """Motor at ``amplitude`` percent (0 = off) for ``duration_ms``."""

    amplitude: int = wire(c.Int8ul, at=0)
    duration_ms: int = wire(Units(c.Int8ul, SEGMENT_UNIT_MS), at=1)

    @property
    def is_on(self) -> bool:
        return self.amplitude > 0


TableRecord = StepRecord | LoopRecord

StepBody = layout_of(StepRecord, start=1)
LoopBody = layout_of(LoopRecord, start=1)
RECORD = Tagged(c.Int8ul, {RecordKind.STEP: (StepRecord, StepBody), RecordKind.LOOP: (LoopRecord, LoopBody)})
"""A record: its kind byte, then the layout of that kind; parses to (and builds from) the model class."""
assert 1 + max(StepBody.sizeof(), LoopBody.sizeof()) <= TABLE_RECORD_SIZE


def record_kind(record: TableRecord) -> RecordKind:
    """The kind byte :data:`RECORD` writes for ``record``."""
    return RecordKind(RECORD.kinds[type(record)])


SEGMENT = layout_of(PatternSegment)
PatternDescriptor = c.Struct("first_segment" / c.Int8ul, "segment_count" / c.Int8ul)
NameSection = c.Struct("routine" / Name, "patterns" / c.Array(c.this._.header.pattern_count, Name))
PATTERN_DESCRIPTOR_SIZE: int = PatternDescriptor.sizeof()
SEGMENT_SIZE: int = SEGMENT.sizeof()


@dataclass(frozen=True)
class CuePattern:
    """A haptic cue: a short sequence of on/off segments."""

    segments: tuple[PatternSegment, ...]
    name: str = ""

    @property
    def duration_ms(self) -> int:
        return sum(s.duration_ms for s in self.segments)

    def describe(self) -> str:
        """The on/off notation of the cue vocabulary, e.g. ``80/120/80``."""
        return "/".join(str(s.duration_ms) for s in self.segments)


# --------------------------------------------------------------------------
# The whole table.  Building needs only the content (records, patterns, names,
# hands, done cue): every count, size, offset, the total and the CRC are
# computed by the declaration.  A newer companion may write a longer header or
# longer records; an older band skips the bytes it does not know.

Header = c.Struct(
    "magic" / c.Const(TABLE_MAGIC),
    "crc32" / c.Default(c.Int32ul, 0),  # written last, by the Checksum at the end of Table
    "version" / Rebuild(c.Int8ul, lambda this: _format_version(this._.records, this._.done_ack)),
    "flags" / Rebuild(c.Int8ul, lambda this: (int(TableFlags.NAMES) if this._.with_names else 0) | (int(TableFlags.ACK_DONE) if this._.done_ack else 0)),
    "header_size" / c.Default(c.Int8ul, TABLE_HEADER_SIZE),
    "record_size" / c.Default(c.Int8ul, TABLE_RECORD_SIZE),
    "table_size" / Rebuild(c.Int16ul, lambda this: _content_size(this._)),
    "record_count" / Rebuild(c.Int16ul, lambda this: len(this._.records)),
    "total_ms" / Rebuild(c.Int32ul, lambda this: _total_ms(this._.records)),
    "pattern_count" / Rebuild(c.Int8ul, lambda this: len(this._.patterns)),
    "segment_count" / Rebuild(c.Int8ul, lambda this: len(_all_segments(this._.patterns))),
    "hands" / c.Int8ul,
    "done_pattern" / PatternRef,
)
assert Header.sizeof() == TABLE_HEADER_SIZE

Table = c.Struct(
    "header" / Header,
    "header_extra" / c.Default(c.Bytes(c.this.header.header_size - TABLE_HEADER_SIZE), b""),
    "records" / c.Array(c.this.header.record_count, c.Padded(c.this.header.record_size, RECORD)),
    "descriptors" / Rebuild(c.Array(c.this.header.pattern_count, PatternDescriptor), lambda this: _descriptors(this.patterns)),
    "segments" / Rebuild(c.Array(c.this.header.segment_count, SEGMENT), lambda this: _all_segments(this.patterns)),
    "names" / Rebuild(c.If(c.this.header.flags & int(TableFlags.NAMES), NameSection), lambda this: _names(this)),
    c.Terminated,
    "crc32" / c.Pointer(CRC_OFFSET, c.Checksum(c.Int32ul, table_crc, lambda this: this._io.getvalue())),
)
"""Build from ``dict(header=dict(hands=..., done_pattern=...), records=[...], patterns=[CuePattern...], name=..., with_names=..., done_ack=...)``."""


def _format_version(records: Sequence[TableRecord], done_ack: bool) -> int:
    """Format 2 only when the table asks for an acknowledgement: every other table keeps the bytes of format 1."""
    uses_ack = done_ack or any(isinstance(record, StepRecord) and record.ack for record in records)
    return TABLE_FORMAT_VERSION if uses_ack else TABLE_BASE_VERSION


def _all_segments(patterns: Sequence[CuePattern]) -> list[PatternSegment]:
    return [segment for pattern in patterns for segment in pattern.segments]


def _descriptors(patterns: Sequence[CuePattern]) -> list[dict[str, int]]:
    firsts = [0]
    for pattern in patterns:
        firsts.append(firsts[-1] + len(pattern.segments))
    return [dict(first_segment=first, segment_count=len(p.segments)) for first, p in zip(firsts, patterns, strict=False)]


def _names(content: Any) -> dict[str, Any] | None:
    return dict(routine=content.name, patterns=[p.name for p in content.patterns]) if content.with_names else None


def _content_size(content: Any) -> int:
    """The table's size: where its sections end (as :func:`table_sections` says), plus the name section."""
    counts = c.Container(header_size=TABLE_HEADER_SIZE, record_size=TABLE_RECORD_SIZE, record_count=len(content.records),
                         pattern_count=len(content.patterns), segment_count=len(_all_segments(content.patterns)))
    names = _names(content)
    return table_sections(counts).names + (0 if names is None else sum(len(Name.build(n)) for n in [names["routine"], *names["patterns"]]))


def _total_ms(records: list[TableRecord]) -> int:
    return sum(node.total_ms for node in build_tree(records))


@dataclass(frozen=True)
class Sections:
    """Where the sections of a table start (byte offsets), as its header says."""

    records: int
    record_size: int
    patterns: int
    segments: int
    names: int
    """The end of the fixed-size sections: the name section, if any, or the end of the table."""

    def record(self, index: int) -> int:
        return self.records + index * self.record_size

    def pattern(self, index: int) -> int:
        return self.patterns + index * PATTERN_DESCRIPTOR_SIZE

    def segment(self, index: int) -> int:
        return self.segments + index * SEGMENT_SIZE


def table_sections(header: Any) -> Sections:
    """The section offsets of a table from its parsed :data:`Header`; the one place they are computed."""
    patterns = header.header_size + header.record_count * header.record_size
    segments = patterns + PATTERN_DESCRIPTOR_SIZE * header.pattern_count
    return Sections(header.header_size, header.record_size, patterns, segments, segments + SEGMENT_SIZE * header.segment_count)


# --------------------------------------------------------------------------
# Model of a whole table


@dataclass
class StepTable:
    """A decoded (or to-be-encoded) step table."""

    hands: Hands
    records: list[TableRecord]
    patterns: list[CuePattern] = field(default_factory=list)
    done_pattern: int | None = None
    name: str = ""
    has_names: bool = True
    done_ack: bool = False
    """Format 2: after the DONE cue the band waits for the wearer's acknowledgement (SPEC.md §12.10)."""

    @property
    def total_ms(self) -> int:
        return _total_ms(self.records)

    @property
    def format_version(self) -> int:
        """The format version its bytes carry: 2 when it asks for an acknowledgement, else 1."""
        return _format_version(self.records, self.done_ack)

    def pattern_label(self, index: int | None) -> str:
        """A pattern's name, or ``#index`` when the table carries no names."""
        if index is None:
            return "-"
        return self.patterns[index].name or f"#{index}"


@dataclass
class Node:
    """A record with the records of its loop body (empty for a step)."""

    index: int
    record: TableRecord
    children: list[Node] = field(default_factory=list)

    @property
    def total_ms(self) -> int:
        if isinstance(self.record, StepRecord):
            return self.record.total_ms
        return self.record.count * sum(child.total_ms for child in self.children)

    @property
    def longest_ms(self) -> int:
        """:attr:`total_ms` plus every acknowledgement wait reaching its cap (format 2: one per play of a step that waits)."""
        if isinstance(self.record, StepRecord):
            return self.record.total_ms + (self.record.count * Ack.GIVE_UP_MS if self.record.ack else 0)
        return self.record.count * sum(child.longest_ms for child in self.children)

    # What protocol.iterations walks: a step, or a loop over its body.

    @property
    def iterate(self) -> Iterate:
        return self.record.iterate

    @property
    def count(self) -> int:
        return self.record.count

    @property
    def duration_ms(self) -> int:
        """One iteration: the step's duration, or one pass through the loop's body."""
        if isinstance(self.record, StepRecord):
            return self.record.duration_ms
        return sum(child.total_ms for child in self.children)

    @property
    def body(self) -> list[Node] | None:
        return self.children if isinstance(self.record, LoopRecord) else None


# --------------------------------------------------------------------------
# Structure


def build_tree(records: list[TableRecord]) -> list[Node]:
    """Nest the flat record list by loop bodies; checks the loop structure."""
    position = 0

    def parse_block(end: int, depth: int, bound: frozenset[Iterate]) -> list[Node]:
        nonlocal position
        nodes: list[Node] = []
        while position < end:
            index = position
            record = records[index]
            position += 1
            node = Node(index, record)
            if isinstance(record, LoopRecord):
                if depth + 1 > Limits.MAX_LOOP_NESTING:
                    raise _bad(TableError.BAD_NESTING, f"record {index}: loops nest deeper than {Limits.MAX_LOOP_NESTING}")
                body_end = index + 1 + record.body_count
                if record.body_count < 1 or body_end > end:
                    raise _bad(TableError.BAD_NESTING, f"record {index}: loop body of {record.body_count} records leaves its enclosing block")
                _check_binding(index, record.iterate, bound)
                node.children = parse_block(body_end, depth + 1, bound | {record.iterate})
            else:
                _check_binding(index, record.iterate, bound)
            nodes.append(node)
        return nodes

    return parse_block(len(records), 0, frozenset())


def _check_binding(index: int, iterate: Iterate, bound: frozenset[Iterate]) -> None:
    if iterate != Iterate.NONE and iterate in bound:
        raise _bad(TableError.BAD_NESTING, f"record {index}: iterates over {iterate.name.lower()} inside a loop that already does")


# --------------------------------------------------------------------------
# Checks


def _bad(code: TableError, message: str) -> TableFormatError:
    return TableFormatError(code, message)


def validate_table(table: StepTable) -> None:
    """Raise :class:`TableFormatError` unless ``table`` respects every limit."""
    _validate(table)


def _validate(table: StepTable) -> int:
    """:func:`validate_table`, returning the routine's total duration (ms)."""
    if not 1 <= len(table.records) <= Limits.MAX_RECORDS:
        raise _bad(TableError.LIMIT, f"{len(table.records)} records; a table holds 1 to {Limits.MAX_RECORDS}")
    if len(table.patterns) > Limits.MAX_PATTERNS:
        raise _bad(TableError.LIMIT, f"{len(table.patterns)} cue patterns; at most {Limits.MAX_PATTERNS}")
    segment_total = sum(len(p.segments) for p in table.patterns)
    if segment_total > Limits.MAX_SEGMENTS:
        raise _bad(TableError.LIMIT, f"{segment_total} pattern segments; at most {Limits.MAX_SEGMENTS}")
    for index, pattern in enumerate(table.patterns):
        problem = pattern_problem(pattern)
        if problem:
            raise _bad(TableError.BAD_PATTERN, f"pattern {index}: {problem}")
    for name in [table.name, *(p.name for p in table.patterns)]:
        if len(name.encode()) > Limits.MAX_NAME_BYTES:
            raise _bad(TableError.BAD_NAMES, f"name {name[:20]!r}...: longer than {Limits.MAX_NAME_BYTES} bytes")
    hand_count = len(table.hands.order)

    def check_ref(index: int, what: str, ref: int | None) -> None:
        if ref is not None and not 0 <= ref < len(table.patterns):
            raise _bad(TableError.BAD_RECORD, f"record {index}: {what} pattern {ref} does not exist")

    def check_count(index: int, iterate: Iterate, count: int) -> None:
        if not 1 <= count <= Limits.MAX_COUNT:
            raise _bad(TableError.BAD_RECORD, f"record {index}: count {count}; allowed 1 to {Limits.MAX_COUNT}")
        if iterate == Iterate.FINGER and count > 5:
            raise _bad(TableError.BAD_RECORD, f"record {index}: {count} fingers; a hand has 5")
        if iterate == Iterate.HAND and count != hand_count:
            raise _bad(TableError.BAD_RECORD, f"record {index}: iterates over {count} hands; the routine treats {hand_count}")

    for index, record in enumerate(table.records):
        check_count(index, record.iterate, record.count)
        if isinstance(record, LoopRecord):
            check_ref(index, "round", record.round_pattern)
            continue
        step_ms = record.duration_ms
        if not Limits.MIN_STEP_MS <= step_ms <= Limits.MAX_STEP_UNITS * TIME_UNIT_MS:
            raise _bad(TableError.BAD_RECORD, f"record {index}: duration {step_ms} ms; allowed {Limits.MIN_STEP_MS} to {Limits.MAX_STEP_UNITS * TIME_UNIT_MS} ms")
        for what, value in (("duration", step_ms), ("tick interval", record.tick_every_ms), ("warning", record.warn_before_ms)):
            if value % TIME_UNIT_MS or value < 0:
                raise _bad(TableError.BAD_RECORD, f"record {index}: {what} {value} ms is not a multiple of {TIME_UNIT_MS} ms")
        if record.warn_before_ms >= step_ms:
            raise _bad(TableError.BAD_RECORD, f"record {index}: warning {record.warn_before_ms} ms before the end of a {step_ms} ms step")
        max_units_ms = Limits.MAX_STEP_UNITS * TIME_UNIT_MS
        if record.tick_every_ms > max_units_ms or record.warn_before_ms > max_units_ms:
            raise _bad(TableError.BAD_RECORD, f"record {index}: tick interval or warning over {max_units_ms} ms")
        if record.tick_every_ms and record.tick_every_ms < Limits.MIN_STEP_MS:
            raise _bad(TableError.BAD_RECORD, f"record {index}: tick every {record.tick_every_ms} ms; at least {Limits.MIN_STEP_MS} ms")
        if bool(record.tick_every_ms) != (record.tick_pattern is not None):
            raise _bad(TableError.BAD_RECORD, f"record {index}: a tick needs both an interval and a pattern")
        if bool(record.warn_before_ms) != (record.warn_pattern is not None):
            raise _bad(TableError.BAD_RECORD, f"record {index}: a warning needs both a lead time and a pattern")
        for cue in STEP_CUE_SLOTS:
            check_ref(index, cue.slot or "", getattr(record, cue.pattern_field))
        if record.ack and record.start_pattern is None:
            raise _bad(TableError.BAD_RECORD, f"record {index}: waits for an acknowledgement but has no start cue to repeat")
    check_ref(-1, "done", table.done_pattern)
    if table.done_ack and table.done_pattern is None:
        raise _bad(TableError.BAD_RECORD, "the finish waits for an acknowledgement but has no done cue to repeat")
    tree = build_tree(table.records)
    total = sum(node.total_ms for node in tree)
    if total > Limits.MAX_TOTAL_MS:
        raise _bad(TableError.LIMIT, f"routine lasts {total} ms; at most {Limits.MAX_TOTAL_MS} ms")
    # Routine time (STATUS, history) counts acknowledgement waits too: it must fit in u32 even if nobody presses.
    longest = sum(node.longest_ms for node in tree) + (Ack.GIVE_UP_MS if table.done_ack else 0)
    if longest > Limits.MAX_TOTAL_MS:
        raise _bad(TableError.LIMIT, f"routine lasts up to {longest} ms if no acknowledgement comes (each waits up to "
                                     f"{Ack.GIVE_UP_MS // 1000} s); at most {Limits.MAX_TOTAL_MS} ms")
    return total


def pattern_problem(pattern: CuePattern) -> str | None:
    """Why ``pattern`` breaks the cue-vocabulary limits, or None if it is fine."""
    segments = pattern.segments
    if not 1 <= len(segments) <= Limits.MAX_SEGMENTS_PER_PATTERN:
        return f"{len(segments)} segments; a cue has 1 to {Limits.MAX_SEGMENTS_PER_PATTERN}"
    if not (segments[0].is_on and segments[-1].is_on):
        return "must start and end with the motor on"
    for segment in segments:
        if segment.duration_ms % SEGMENT_UNIT_MS or not 0 < segment.duration_ms <= 255 * SEGMENT_UNIT_MS:
            return f"segment of {segment.duration_ms} ms; segments are 10 ms steps from 10 to 2550 ms"
        if not 0 <= segment.amplitude <= Limits.MAX_AMPLITUDE:
            return f"amplitude {segment.amplitude}; allowed 0 to {Limits.MAX_AMPLITUDE} %"
        if segment.is_on and segment.duration_ms < Limits.MIN_PULSE_MS:
            return f"pulse of {segment.duration_ms} ms is too short to feel (at least {Limits.MIN_PULSE_MS} ms)"
        if not segment.is_on and segment.duration_ms < Limits.MIN_GAP_MS:
            return f"gap of {segment.duration_ms} ms blurs two pulses into one (at least {Limits.MIN_GAP_MS} ms)"
    if pattern.duration_ms > Limits.MAX_PATTERN_MS:
        return f"lasts {pattern.duration_ms} ms; a cue lasts at most {Limits.MAX_PATTERN_MS} ms"
    return None


# --------------------------------------------------------------------------
# Codec


def encode_table(table: StepTable, *, names: bool | None = None) -> bytes:
    """The bytes of ``table``; ``names=False`` strips the name section."""
    validate_table(table)
    with_names = table.has_names if names is None else names
    content = dict(
        header=dict(hands=int(table.hands), done_pattern=table.done_pattern),
        records=table.records, patterns=table.patterns, name=table.name, with_names=with_names, done_ack=table.done_ack,
    )
    data: bytes = Table.build(content)
    if len(data) > Limits.MAX_TABLE_BYTES:
        raise _bad(TableError.LIMIT, f"table of {len(data)} bytes; at most {Limits.MAX_TABLE_BYTES}")
    return data


def check_table_header(data: bytes, versions: Sequence[int] = TABLE_READ_VERSIONS) -> Any:
    """Check what a band checks before parsing records: length, magic, version, size, CRC; the parsed :data:`Header`.

    ``versions``: the format versions the reader knows (a band of format 1 only: ``(1,)``).
    """
    if len(data) < TABLE_HEADER_SIZE:
        raise _bad(TableError.TOO_SHORT, f"{len(data)} bytes is shorter than the {TABLE_HEADER_SIZE}-byte header")
    if data[:4] != TABLE_MAGIC:
        raise _bad(TableError.BAD_MAGIC, f"does not start with {TABLE_MAGIC!r}: not a HandCue table")
    header = Header.parse(data)  # one header a call: parsing it plainly (~40 us) beats compiling it (~1.4 ms)
    if header.version not in versions:
        known = " and ".join(str(v) for v in versions)
        raise _bad(TableError.BAD_VERSION, f"format version {header.version}; this reader knows version{'s' if len(versions) > 1 else ''} {known}")
    if header.header_size < TABLE_HEADER_SIZE or header.record_size < TABLE_RECORD_SIZE:
        raise _bad(TableError.BAD_SIZE, f"header size {header.header_size} / record size {header.record_size} below {TABLE_HEADER_SIZE} / {TABLE_RECORD_SIZE}")
    if header.table_size != len(data):
        raise _bad(TableError.BAD_SIZE, f"header says {header.table_size} bytes, got {len(data)}")
    if len(data) > Limits.MAX_TABLE_BYTES:
        raise _bad(TableError.LIMIT, f"table of {len(data)} bytes; at most {Limits.MAX_TABLE_BYTES}")
    actual = table_crc(data)
    if actual != header.crc32:
        raise _bad(TableError.BAD_CRC, f"CRC-32 is 0x{actual:08X}, header says 0x{header.crc32:08X}: the table is corrupt")
    return header


def decode_table(data: bytes, versions: Sequence[int] = TABLE_READ_VERSIONS, *, decoded: RecordCache | None = None) -> StepTable:
    """Parse and check a table; raise :class:`TableFormatError` on any fault.

    The checks run in the order of SPEC.md §11, section by section, so a
    table with several faults always gets the same :class:`TableError`.
    ``versions``: the format versions the reader knows (:func:`check_table_header`).
    In a format 1 table the acknowledgement bits are reserved and read past.
    ``decoded``: records decoded while the bytes arrived (:class:`RecordCache`); each is used
    only where the table holds the very bytes it was decoded from, so the result is the same.
    """
    header = check_table_header(data, versions)
    sections = table_sections(header)
    if sections.names > len(data):
        raise _bad(TableError.BAD_SIZE, f"the table ends at byte {len(data)}, inside its records, patterns or segments (which end at {sections.names})")
    records, record_fault = _read_records(data, header.record_count, sections, decoded)
    if not reads_ack(header):
        records = [without_ack(record) for record in records]
    descriptors = [_DESCRIPTOR.parse(data[o : o + PATTERN_DESCRIPTOR_SIZE]) for o in range(sections.patterns, sections.segments, PATTERN_DESCRIPTOR_SIZE)]
    segments = [_SEGMENT.parse(data[o : o + SEGMENT_SIZE]) for o in range(sections.segments, sections.names, SEGMENT_SIZE)]
    names = _read_names(data[sections.names :], header)
    patterns = []
    expected_first = 0
    for index, descriptor in enumerate(descriptors):
        if descriptor.first_segment != expected_first:
            raise _bad(TableError.BAD_PATTERN, f"pattern {index} starts at segment {descriptor.first_segment}, expected {expected_first}")
        expected_first += descriptor.segment_count
        if expected_first > len(segments):
            raise _bad(TableError.BAD_PATTERN, f"pattern {index} runs past the segment table")
        patterns.append(CuePattern(tuple(segments[descriptor.first_segment : expected_first]), names.patterns[index] if names else ""))
    if expected_first != len(segments):
        raise _bad(TableError.BAD_PATTERN, f"{len(segments) - expected_first} segments belong to no pattern")
    if record_fault:
        raise _bad(TableError.BAD_RECORD, record_fault)
    try:
        hands = Hands(header.hands)
    except ValueError as exc:
        raise _bad(TableError.BAD_RECORD, str(exc)) from exc
    table = StepTable(hands, records, patterns, header.done_pattern, names.routine if names else "", names is not None, done_ack(header))
    total_ms = _validate(table)
    if total_ms != header.total_ms:
        raise _bad(TableError.BAD_RECORD, f"header total {header.total_ms} ms, records add up to {total_ms} ms")
    return table


def reads_ack(header: Any) -> bool:
    """Whether a table with this :data:`Header` carries acknowledgement bits (format 2); in format 1 they are reserved."""
    return bool(header.version >= TABLE_FORMAT_VERSION)


def done_ack(header: Any) -> bool:
    """Whether the routine's finish waits for an acknowledgement (flags bit 1 of a format 2 table)."""
    return reads_ack(header) and bool(header.flags & int(TableFlags.ACK_DONE))


def without_ack(record: TableRecord) -> TableRecord:
    """``record`` as a format 1 reader sees it: byte 14 of a STEP record is reserved there."""
    return replace(record, ack=False) if isinstance(record, StepRecord) and record.ack else record


VERSION_FEATURES = {2: ("acknowledgement", "remove ack from the routine")}
"""What each format version after 1 adds, and how a routine does without it."""


def unsupported_version_text(version: int) -> str | None:
    """The one line for a band that refused a table of format ``version`` with BAD_VERSION (None for a version without news)."""
    if version not in VERSION_FEATURES:
        return None
    feature, instead = VERSION_FEATURES[version]
    return f"this band's firmware does not support {feature} (table format {version}); update it or {instead}"


def table_name(data: bytes) -> str:
    """The routine name of a table already verified (``decode_table``), read from its name section alone."""
    header = check_table_header(data)
    names = _read_names(data[table_sections(header).names :], header)
    return str(names.routine) if names else ""


# Compiled copies of the layouts a decode reads many times (every record, descriptor and segment), for speed
# (same definitions), compiled once they are used often enough to pay for it (protocol.layout.Compiled): a
# command that decodes no table, or one small table (``handcue status`` numbering the steps), compiles none.
# The header is read once per table, so it is parsed plainly: compiling it would cost as much as 35 parses.
_RECORD = Compiled(RECORD)
_DESCRIPTOR = Compiled(PatternDescriptor)
_SEGMENT = Compiled(SEGMENT)


def _read_records(data: bytes, count: int, sections: Sections, decoded: RecordCache | None = None) -> tuple[list[TableRecord], str | None]:
    """The records, and the first value an enum lacks (reported after the pattern checks, as SPEC §11 orders)."""
    records: list[TableRecord] = []
    fault = None
    size = sections.record_size
    early = decoded.records if decoded is not None else {}
    for index in range(count):
        start = sections.record(index)
        kind = data[start]
        if kind not in RecordKind._value2member_map_:
            raise _bad(TableError.BAD_RECORD, f"record {index}: unknown kind {kind}")
        raw = data[start : start + size]
        known = early.get(index)
        outcome = known[1] if known is not None and known[0] == raw else _decode_record(raw)
        if isinstance(outcome, str):
            fault = fault or f"record {index}: {outcome}"
        else:
            records.append(outcome)
    return records, fault


def _decode_record(raw: bytes) -> TableRecord | str:
    """One record's bytes decoded, or the text of the enum value they lack."""
    try:
        record: TableRecord = _RECORD.parse(raw)
    except ValueError as exc:
        return str(exc)
    return record


class RecordCache:
    """A table's step records decoded while its bytes arrive, for :func:`decode_table` at the end.

    A band receives a table over many connection events and checks it when
    UPLOAD_COMMIT comes; decoding each record as soon as its bytes are in spreads
    most of that check over the upload, so COMMIT's answer can leave at the next
    connection event. Feed it the bytes in order (:meth:`feed`, any chunking; a
    jump back forgets what lay past it). Nothing here is trusted: ``decode_table``
    uses a record only where the final table holds the same bytes, and runs every
    check of SPEC §11 itself.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.records: dict[int, tuple[bytes, TableRecord | str]] = {}
        """Record index -> (its bytes, the record or the fault text they decode to)."""
        self._sections: Sections | None = None
        self._count = 0

    def feed(self, offset: int, chunk: bytes) -> None:
        """The table's bytes at ``offset``: decode every record they complete."""
        if offset > len(self.received):
            return  # a gap: the bytes after it cannot be placed; decode_table reads those records itself
        if offset < len(self.received):  # sent again from further back: forget what it replaces
            del self.received[offset:]
            if offset < TABLE_HEADER_SIZE:
                self._sections, self._count = None, 0
            self.records = {i: known for i, known in self.records.items()
                            if self._sections is not None and self._sections.record(i) + self._sections.record_size <= offset}
        self.received += chunk
        if self._sections is None and len(self.received) >= TABLE_HEADER_SIZE:
            try:
                header = Header.parse(bytes(self.received[:TABLE_HEADER_SIZE]))
            except c.ConstructError:
                return  # not a header decode_table accepts either
            if header.record_size < TABLE_RECORD_SIZE or header.header_size < TABLE_HEADER_SIZE:
                return  # decode_table refuses it; nothing worth decoding early
            self._sections, self._count = table_sections(header), header.record_count
        sections = self._sections
        if sections is None:
            return
        size, have = sections.record_size, len(self.received)
        index = len(self.records)
        while index < self._count and sections.record(index) + size <= have:
            start = sections.record(index)
            raw = bytes(self.received[start : start + size])
            if raw[0] not in RecordKind._value2member_map_:
                return  # an unknown kind: decode_table stops there with the right error
            self.records[index] = (raw, _decode_record(raw))
            index += 1


def _read_names(rest: bytes, header: Any) -> Any:
    """The name section (None without one); nothing may follow it."""
    stream = io.BytesIO(rest)
    names = None
    try:
        if header.flags & int(TableFlags.NAMES):
            names = c.Container(routine=Name.parse_stream(stream), patterns=[Name.parse_stream(stream) for _ in range(header.pattern_count)])
    except (c.ConstructError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())  # construct's messages span lines; keep one
        raise _bad(TableError.BAD_RECORD, f"malformed name section: {detail}") from exc
    trailing = len(stream.read())
    if trailing:
        raise _bad(TableError.BAD_RECORD, f"{trailing} bytes after the end of the table")
    return names
