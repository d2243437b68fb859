"""The binary step table: layouts (construct), model, encoder, decoder, checks.

A table is what a band stores and executes.  Layout (all little endian)::

    header     24 bytes  magic, CRC-32, version, flags, sizes, counts, total
    records    record_count x record_size   (STEP and LOOP records)
    patterns   pattern_count x 2            (first segment, segment count)
    segments   segment_count x 2            (amplitude %, duration / 10 ms)
    names      optional: routine name, then one name per pattern

``protocol/SPEC.md`` describes every byte and how a band executes it.  This
module does no I/O: :func:`encode_table` and :func:`decode_table` convert
between bytes and :class:`StepTable`, and both enforce :class:`Limits`.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import construct as c

from .constants import (
    NO_PATTERN,
    PATTERN_DESCRIPTOR_SIZE,
    SEGMENT_SIZE,
    SEGMENT_UNIT_MS,
    TABLE_FORMAT_VERSION,
    TABLE_HEADER_SIZE,
    TABLE_MAGIC,
    TABLE_RECORD_SIZE,
    TIME_UNIT_MS,
    Hands,
    Iterate,
    Limits,
    RecordKind,
    TableError,
    TableFlags,
    TechniqueCode,
)
from .errors import TableFormatError

# --------------------------------------------------------------------------
# Layouts

CRC_OFFSET = 4
CRC_START = 8
"""The CRC-32 covers every byte from offset 8 to the end of the table."""

Header = c.Struct(
    "magic" / c.Const(TABLE_MAGIC),
    "crc32" / c.Int32ul,
    "version" / c.Int8ul,
    "flags" / c.Int8ul,
    "header_size" / c.Int8ul,
    "record_size" / c.Int8ul,
    "table_size" / c.Int16ul,
    "record_count" / c.Int16ul,
    "total_ms" / c.Int32ul,
    "pattern_count" / c.Int8ul,
    "segment_count" / c.Int8ul,
    "hands" / c.Int8ul,
    "done_pattern" / c.Int8ul,
)
assert Header.sizeof() == TABLE_HEADER_SIZE

StepBody = c.Struct(
    "technique" / c.Int8ul,
    "iterate" / c.Int8ul,
    "count" / c.Int8ul,
    "duration" / c.Int16ul,
    "tick_every" / c.Int16ul,
    "warn_before" / c.Int16ul,
    "start_pattern" / c.Int8ul,
    "next_pattern" / c.Int8ul,
    "tick_pattern" / c.Int8ul,
    "warn_pattern" / c.Int8ul,
)
LoopBody = c.Struct(
    "iterate" / c.Int8ul,
    "count" / c.Int8ul,
    "round_pattern" / c.Int8ul,
    "body_count" / c.Int16ul,
)
Record = c.Struct(
    "kind" / c.Int8ul,
    "body"
    / c.Switch(
        c.this.kind,
        {int(RecordKind.STEP): StepBody, int(RecordKind.LOOP): LoopBody},
        default=c.Error,
    ),
)
assert 1 + StepBody.sizeof() <= TABLE_RECORD_SIZE and 1 + LoopBody.sizeof() <= TABLE_RECORD_SIZE

PatternDescriptor = c.Struct("first_segment" / c.Int8ul, "segment_count" / c.Int8ul)
Segment = c.Struct("amplitude" / c.Int8ul, "duration" / c.Int8ul)
Name = c.PascalString(c.Int8ul, "utf8")

Table = c.Struct(
    "header" / Header,
    # A newer companion may write a longer header or longer records; an older
    # band skips the bytes it does not know.
    "header_extra" / c.Bytes(c.this.header.header_size - TABLE_HEADER_SIZE),
    "records" / c.Array(c.this.header.record_count, c.Padded(c.this.header.record_size, Record)),
    "patterns" / c.Array(c.this.header.pattern_count, PatternDescriptor),
    "segments" / c.Array(c.this.header.segment_count, Segment),
    "names"
    / c.If(
        c.this.header.flags & int(TableFlags.NAMES),
        c.Struct("routine" / Name, "patterns" / c.Array(c.this._.header.pattern_count, Name)),
    ),
    c.Terminated,
)

# --------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class PatternSegment:
    """Motor at ``amplitude`` percent (0 = off) for ``duration_ms``."""

    amplitude: int
    duration_ms: int

    @property
    def is_on(self) -> bool:
        return self.amplitude > 0


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


@dataclass(frozen=True)
class StepRecord:
    """One technique, played ``count`` times for ``duration_ms`` each."""

    technique: TechniqueCode
    duration_ms: int
    iterate: Iterate = Iterate.NONE
    count: int = 1
    tick_every_ms: int = 0
    warn_before_ms: int = 0
    start_pattern: int | None = None
    next_pattern: int | None = None
    tick_pattern: int | None = None
    warn_pattern: int | None = None

    @property
    def total_ms(self) -> int:
        return self.duration_ms * self.count


@dataclass(frozen=True)
class LoopRecord:
    """Repeat the next ``body_count`` records ``count`` times."""

    iterate: Iterate
    count: int
    body_count: int
    round_pattern: int | None = None


TableRecord = StepRecord | LoopRecord


@dataclass
class StepTable:
    """A decoded (or to-be-encoded) step table."""

    hands: Hands
    records: list[TableRecord]
    patterns: list[CuePattern] = field(default_factory=list)
    done_pattern: int | None = None
    name: str = ""
    has_names: bool = True

    @property
    def total_ms(self) -> int:
        return sum(node.total_ms for node in build_tree(self.records))

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


def walk(nodes: list[Node]) -> Iterator[Node]:
    """Every node in record order."""
    for node in nodes:
        yield node
        yield from walk(node.children)


# --------------------------------------------------------------------------
# Checks


def _bad(code: TableError, message: str) -> TableFormatError:
    return TableFormatError(code, message)


def validate_table(table: StepTable) -> None:
    """Raise :class:`TableFormatError` unless ``table`` respects every limit."""
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
        for what, ref in (("start", record.start_pattern), ("next", record.next_pattern), ("tick", record.tick_pattern), ("warn", record.warn_pattern)):
            check_ref(index, what, ref)
    check_ref(-1, "done", table.done_pattern)
    total = sum(node.total_ms for node in build_tree(table.records))
    if total > Limits.MAX_TOTAL_MS:
        raise _bad(TableError.LIMIT, f"routine lasts {total} ms; at most {Limits.MAX_TOTAL_MS} ms")


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


def _ref_out(ref: int | None) -> int:
    return NO_PATTERN if ref is None else ref


def _ref_in(value: int) -> int | None:
    return None if value == NO_PATTERN else value


def encode_table(table: StepTable, *, names: bool | None = None) -> bytes:
    """The bytes of ``table``; ``names=False`` strips the name section."""
    validate_table(table)
    with_names = table.has_names if names is None else names
    records = []
    for record in table.records:
        if isinstance(record, StepRecord):
            body = dict(
                technique=int(record.technique),
                iterate=int(record.iterate),
                count=record.count,
                duration=record.duration_ms // TIME_UNIT_MS,
                tick_every=record.tick_every_ms // TIME_UNIT_MS,
                warn_before=record.warn_before_ms // TIME_UNIT_MS,
                start_pattern=_ref_out(record.start_pattern),
                next_pattern=_ref_out(record.next_pattern),
                tick_pattern=_ref_out(record.tick_pattern),
                warn_pattern=_ref_out(record.warn_pattern),
            )
            records.append(dict(kind=int(RecordKind.STEP), body=body))
        else:
            body = dict(
                iterate=int(record.iterate),
                count=record.count,
                round_pattern=_ref_out(record.round_pattern),
                body_count=record.body_count,
            )
            records.append(dict(kind=int(RecordKind.LOOP), body=body))
    descriptors, segments = [], []
    for pattern in table.patterns:
        descriptors.append(dict(first_segment=len(segments), segment_count=len(pattern.segments)))
        segments.extend(dict(amplitude=s.amplitude, duration=s.duration_ms // SEGMENT_UNIT_MS) for s in pattern.segments)
    header = dict(
        crc32=0,
        version=TABLE_FORMAT_VERSION,
        flags=int(TableFlags.NAMES) if with_names else 0,
        header_size=TABLE_HEADER_SIZE,
        record_size=TABLE_RECORD_SIZE,
        table_size=0,
        record_count=len(records),
        total_ms=table.total_ms,
        pattern_count=len(descriptors),
        segment_count=len(segments),
        hands=int(table.hands),
        done_pattern=_ref_out(table.done_pattern),
    )
    name_section = dict(routine=table.name, patterns=[p.name for p in table.patterns]) if with_names else None
    content = dict(header=header, header_extra=b"", records=records, patterns=descriptors, segments=segments, names=name_section)
    data = bytearray(Table.build(content))
    if len(data) > Limits.MAX_TABLE_BYTES:
        raise _bad(TableError.LIMIT, f"table of {len(data)} bytes; at most {Limits.MAX_TABLE_BYTES}")
    data[12:14] = len(data).to_bytes(2, "little")
    data[CRC_OFFSET:CRC_START] = table_crc(data).to_bytes(4, "little")
    return bytes(data)


def table_crc(data: bytes | bytearray) -> int:
    """CRC-32/ISO-HDLC (zlib's) over bytes 8.. of a table."""
    return zlib.crc32(bytes(data[CRC_START:]))


def check_table_header(data: bytes) -> c.Container:
    """Check what a band checks before parsing records: length, magic, version, size, CRC."""
    if len(data) < TABLE_HEADER_SIZE:
        raise _bad(TableError.TOO_SHORT, f"{len(data)} bytes is shorter than the {TABLE_HEADER_SIZE}-byte header")
    if data[:4] != TABLE_MAGIC:
        raise _bad(TableError.BAD_MAGIC, f"does not start with {TABLE_MAGIC!r}: not a HandCue table")
    header = Header.parse(data)
    if header.version != TABLE_FORMAT_VERSION:
        raise _bad(TableError.BAD_VERSION, f"format version {header.version}; this code reads version {TABLE_FORMAT_VERSION}")
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


def decode_table(data: bytes) -> StepTable:
    """Parse and check a table; raise :class:`TableFormatError` on any fault."""
    header = check_table_header(data)
    parsed = _parse_sections(data, header)
    patterns = []
    expected_first = 0
    for index, descriptor in enumerate(parsed.patterns):
        if descriptor.first_segment != expected_first:
            raise _bad(TableError.BAD_PATTERN, f"pattern {index} starts at segment {descriptor.first_segment}, expected {expected_first}")
        expected_first += descriptor.segment_count
        if expected_first > len(parsed.segments):
            raise _bad(TableError.BAD_PATTERN, f"pattern {index} runs past the segment table")
        segments = tuple(
            PatternSegment(s.amplitude, s.duration * SEGMENT_UNIT_MS)
            for s in parsed.segments[descriptor.first_segment : expected_first]
        )
        name = parsed.names.patterns[index] if parsed.names else ""
        patterns.append(CuePattern(segments, name))
    if expected_first != len(parsed.segments):
        raise _bad(TableError.BAD_PATTERN, f"{len(parsed.segments) - expected_first} segments belong to no pattern")
    try:
        records = [_record_from(index, r) for index, r in enumerate(parsed.records)]
        hands = Hands(header.hands)
    except ValueError as exc:
        raise _bad(TableError.BAD_RECORD, str(exc)) from exc
    table = StepTable(
        hands=hands,
        records=records,
        patterns=patterns,
        done_pattern=_ref_in(header.done_pattern),
        name=parsed.names.routine if parsed.names else "",
        has_names=parsed.names is not None,
    )
    validate_table(table)
    if table.total_ms != header.total_ms:
        raise _bad(TableError.BAD_RECORD, f"header total {header.total_ms} ms, records add up to {table.total_ms} ms")
    return table


# Compiled copies of the layouts above, for decoding speed (same definitions).
_RECORD = Record.compile()
_DESCRIPTOR = PatternDescriptor.compile()
_SEGMENT = Segment.compile()


def _parse_sections(data: bytes, header: c.Container) -> c.Container:
    """Parse the sections after the header, as :data:`Table` lays them out, section by section."""
    record_size, pattern_count = header.record_size, header.pattern_count
    records_end = header.header_size + header.record_count * record_size
    patterns_end = records_end + PATTERN_DESCRIPTOR_SIZE * pattern_count
    segments_end = patterns_end + SEGMENT_SIZE * header.segment_count
    if segments_end > len(data):
        raise _bad(TableError.BAD_SIZE, f"the table ends at byte {len(data)}, inside its records, patterns or segments (which end at {segments_end})")
    records = []
    for index in range(header.record_count):
        start = header.header_size + index * record_size
        kind = data[start]
        if kind not in RecordKind._value2member_map_:
            raise _bad(TableError.BAD_RECORD, f"record {index}: unknown kind {kind}")
        records.append(_RECORD.parse(data[start : start + record_size]))
    descriptors = [_DESCRIPTOR.parse(data[o : o + PATTERN_DESCRIPTOR_SIZE]) for o in range(records_end, patterns_end, PATTERN_DESCRIPTOR_SIZE)]
    segments = [_SEGMENT.parse(data[o : o + SEGMENT_SIZE]) for o in range(patterns_end, segments_end, SEGMENT_SIZE)]
    names = None
    stream = io.BytesIO(data[segments_end:])
    try:
        if header.flags & int(TableFlags.NAMES):
            names = c.Container(routine=Name.parse_stream(stream), patterns=[Name.parse_stream(stream) for _ in range(pattern_count)])
    except (c.ConstructError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())  # construct's messages span lines; keep one
        raise _bad(TableError.BAD_RECORD, f"malformed name section: {detail}") from exc
    trailing = len(stream.read())
    if trailing:
        raise _bad(TableError.BAD_RECORD, f"{trailing} bytes after the end of the table")
    return c.Container(records=records, patterns=descriptors, segments=segments, names=names)


def _record_from(index: int, parsed: c.Container) -> TableRecord:
    body = parsed.body
    try:
        if parsed.kind == RecordKind.STEP:
            return StepRecord(
                technique=TechniqueCode(body.technique),
                duration_ms=body.duration * TIME_UNIT_MS,
                iterate=Iterate(body.iterate),
                count=body.count,
                tick_every_ms=body.tick_every * TIME_UNIT_MS,
                warn_before_ms=body.warn_before * TIME_UNIT_MS,
                start_pattern=_ref_in(body.start_pattern),
                next_pattern=_ref_in(body.next_pattern),
                tick_pattern=_ref_in(body.tick_pattern),
                warn_pattern=_ref_in(body.warn_pattern),
            )
        return LoopRecord(
            iterate=Iterate(body.iterate),
            count=body.count,
            body_count=body.body_count,
            round_pattern=_ref_in(body.round_pattern),
        )
    except ValueError as exc:
        raise ValueError(f"record {index}: {exc}") from exc
