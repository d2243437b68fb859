"""Step table codec: golden bytes, round trips, limits and every error path.

The golden bytes below were derived by hand from the layout documented in
``protocol/table.py`` (header field offsets, 16-byte records, 2-byte pattern
descriptors and segments, Pascal-string names); only the CRC value was taken
from ``zlib.crc32`` and it is cross-checked against a CRC-32/ISO-HDLC check
value.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import construct as c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion import build_table, compile_routine, load_routine, parse_routine, shipped_routines
from companion.techniques import CUE_VOCABULARY, TECHNIQUES
from protocol.constants import (
    NO_PATTERN,
    TABLE_FORMAT_VERSION,
    TABLE_HEADER_SIZE,
    TABLE_MAGIC,
    TABLE_RECORD_SIZE,
    Hands,
    Iterate,
    Limits,
    RecordKind,
    TableError,
    TableFlags,
    TechniqueCode,
)
from protocol.errors import TableFormatError
from protocol.layout import laid_out, layout_of, wire
from protocol.table import (
    RECORD,
    CuePattern,
    Header,
    LoopBody,
    LoopRecord,
    PatternSegment,
    StepBody,
    StepRecord,
    StepTable,
    Table,
    decode_table,
    encode_table,
    pattern_problem,
    table_crc,
    table_sections,
    validate_table,
)

SHIPPED = sorted(shipped_routines())

# --------------------------------------------------------------------------
# Helpers


def pat(*on_off: int, amplitude: int = 100, name: str = "") -> CuePattern:
    """``pat(80, 120, 80)``: alternating on/off segments starting with the motor on."""
    return CuePattern(tuple(PatternSegment(amplitude if i % 2 == 0 else 0, ms) for i, ms in enumerate(on_off)), name)


def on_pattern(*pulses: int, amplitude: int = 100) -> CuePattern:
    """Consecutive motor-on segments (no gaps), e.g. to fill 8 segments cheaply."""
    return CuePattern(tuple(PatternSegment(amplitude, ms) for ms in pulses))


def step(duration_ms: int = 1000, **kwargs) -> StepRecord:
    kwargs.setdefault("start_pattern", 0)
    return StepRecord(TechniqueCode.WARM_UP, duration_ms, **kwargs)


def table(records=None, patterns=None, *, hands: Hands = Hands.LEFT, done: int | None = 0, name: str = "t") -> StepTable:
    return StepTable(
        hands=hands,
        records=[step()] if records is None else records,
        patterns=[pat(80, name="start")] if patterns is None else patterns,
        done_pattern=done,
        name=name,
    )


def expect_error(code: TableError, func, *args, **kwargs) -> TableFormatError:
    with pytest.raises(TableFormatError) as info:
        func(*args, **kwargs)
    assert info.value.code == code, f"expected {code.name}, got {info.value.code.name}: {info.value}"
    return info.value


def with_crc(data: bytes | bytearray) -> bytes:
    """Recompute the header CRC so a test reaches the check it targets."""
    out = bytearray(data)
    out[4:8] = zlib.crc32(bytes(out[8:])).to_bytes(4, "little")
    return bytes(out)


def patch(data: bytes, offset: int, new: bytes, *, crc: bool = True) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(new)] = new
    return with_crc(out) if crc else bytes(out)


def raw_step(technique=1, iterate=0, count=1, duration=10, tick_every=0, warn_before=0, start=0, next=NO_PATTERN, tick=NO_PATTERN, warn=NO_PATTERN):
    """The bytes of a STEP record before padding, packed by hand (no validation)."""
    return struct.pack("<BBBBHHHBBBB", RecordKind.STEP, technique, iterate, count, duration, tick_every, warn_before, start, next, tick, warn)


def raw_loop(iterate=0, count=2, body_count=1, round=NO_PATTERN):
    return struct.pack("<BBBBH", RecordKind.LOOP, iterate, count, round, body_count)


def raw_table(records, *, patterns=((0, 1),), segments=((100, 8),), total_ms=1000, hands=0, done=0, names=None,
              version=TABLE_FORMAT_VERSION, header_size=TABLE_HEADER_SIZE, record_size=TABLE_RECORD_SIZE) -> bytes:
    """Bytes packed by hand from the layout in SPEC.md (no validation), with a correct size and CRC."""
    body = b"".join(record.ljust(record_size, b"\0") for record in records)
    body += b"".join(bytes(p) for p in patterns) + b"".join(bytes(s) for s in segments)
    if names is not None:
        body += b"".join(bytes([len(n.encode())]) + n.encode() for n in [names[0], *names[1]])
    size = header_size + len(body)
    header = TABLE_MAGIC + struct.pack("<IBBBBHHIBBBB", 0, version, int(TableFlags.NAMES) if names is not None else 0, header_size, record_size,
                                       size, len(records), total_ms, len(patterns), len(segments), hands, done)
    return with_crc(header + b"\0" * (header_size - TABLE_HEADER_SIZE) + body)


# --------------------------------------------------------------------------
# Golden bytes


def golden_table() -> StepTable:
    """One LOOP (per hand) around two STEP records, two patterns, names on."""
    return StepTable(
        hands=Hands.LEFT_THEN_RIGHT,
        records=[
            LoopRecord(Iterate.HAND, 2, body_count=2, round_pattern=1),
            StepRecord(TechniqueCode.WARM_UP, 45_000, tick_every_ms=22_500, start_pattern=0, tick_pattern=0),
            StepRecord(TechniqueCode.FINGER_SQUEEZE, 15_000, Iterate.FINGER, 5, warn_before_ms=5_000, start_pattern=0, next_pattern=1, warn_pattern=1),
        ],
        patterns=[CuePattern((PatternSegment(100, 80),), "start"), CuePattern((PatternSegment(100, 80), PatternSegment(0, 120), PatternSegment(60, 80)), "next")],
        done_pattern=1,
        name="Demo",
    )


# Header: magic, CRC (filled per case), version 1, flags, header size 24, record size 16,
# table size, 3 records, total 2 x (45 s + 5 x 15 s) = 240000 ms = 0x0003A980,
# 2 patterns, 4 segments, hands 2 (left then right), done pattern 1.
GOLDEN_HEADER_AFTER_CRC = "01 {flags} 18 10 {size} 0300 80a90300 02 04 02 01"
GOLDEN_RECORDS = (
    # LOOP: kind 2, iterate HAND 2, count 2, round pattern 1, body count 2 (u16), 10 bytes padding
    "02 02 02 01 0200" + "00" * 10
    # STEP: kind 1, WARM_UP 1, iterate NONE 0, count 1, duration 450 x 100 ms (0x01C2), tick every 225 (0x00E1),
    # warn 0, start 0, next none 0xFF, tick 0, warn none 0xFF, 2 bytes padding
    + "01 01 00 01 c201 e100 0000 00 ff 00 ff 0000"
    # STEP: kind 1, FINGER_SQUEEZE 7, iterate FINGER 1, count 5, duration 150 (0x0096), tick 0, warn 50 (0x0032),
    # start 0, next 1, tick none, warn 1, padding
    + "01 07 01 05 9600 0000 3200 00 01 ff 01 0000"
)
GOLDEN_PATTERNS = "00 01  01 03"  # (first segment, segment count)
GOLDEN_SEGMENTS = "64 08  64 08  00 0c  3c 08"  # (amplitude %, duration / 10 ms)
GOLDEN_NAMES = "04 44656d6f  05 7374617274  04 6e657874"  # "Demo", "start", "next" (u8 length + UTF-8)

GOLDEN_CRC_NAMES = 0x120EC3E2
GOLDEN_CRC_NO_NAMES = 0xAB85E82A


def golden_hex(*, names: bool) -> bytes:
    crc = GOLDEN_CRC_NAMES if names else GOLDEN_CRC_NO_NAMES
    size = 100 if names else 84
    header = "48437565" + crc.to_bytes(4, "little").hex() + GOLDEN_HEADER_AFTER_CRC.format(flags="01" if names else "00", size=size.to_bytes(2, "little").hex())
    text = header + GOLDEN_RECORDS + GOLDEN_PATTERNS + GOLDEN_SEGMENTS + (GOLDEN_NAMES if names else "")
    return bytes.fromhex(text.replace(" ", ""))


def test_layout_sizes_are_pinned():
    assert TABLE_MAGIC == b"HCue"
    assert Header.sizeof() == TABLE_HEADER_SIZE == 24
    assert TABLE_RECORD_SIZE == 16
    assert 1 + StepBody.sizeof() == 15  # byte 14: the step flags of format 2 (reserved, 0, in format 1)
    assert 1 + LoopBody.sizeof() == 6
    assert NO_PATTERN == 0xFF


def test_golden_bytes_with_names():
    expected = golden_hex(names=True)
    assert len(expected) == 100
    assert encode_table(golden_table()) == expected


def test_golden_bytes_without_names():
    expected = golden_hex(names=False)
    assert len(expected) == 84
    assert encode_table(golden_table(), names=False) == expected


def test_golden_crc_is_zlib_crc32_over_bytes_8_to_end():
    for names in (True, False):
        data = golden_hex(names=names)
        assert int.from_bytes(data[4:8], "little") == zlib.crc32(data[8:]) == table_crc(data)


def test_table_crc_is_crc32_iso_hdlc():
    # Standard check value of CRC-32/ISO-HDLC over b"123456789"; the first 8 bytes are not covered.
    assert table_crc(b"\xff" * 8 + b"123456789") == 0xCBF43926


def test_golden_bytes_decode_back_to_the_table():
    assert decode_table(golden_hex(names=True)) == golden_table()
    stripped = decode_table(golden_hex(names=False))
    assert stripped.has_names is False
    assert stripped.name == ""
    assert [p.name for p in stripped.patterns] == ["", ""]
    assert stripped.records == golden_table().records


def test_has_names_false_is_the_default_for_encoding():
    t = golden_table()
    t.has_names = False
    assert encode_table(t) == golden_hex(names=False)
    assert encode_table(t, names=True) == golden_hex(names=True)


def test_full_hand_massage_without_names_fits_256_bytes_and_header_is_as_expected():
    data = compile_routine(load_routine("full-hand-massage"), names=False)
    assert len(data) == 228
    assert len(data) <= 256
    header = Header.parse(data)
    assert header.magic == b"HCue"
    assert header.version == 1
    assert header.flags == 0
    assert header.header_size == 24
    assert header.record_size == 16
    assert header.table_size == 228
    assert header.record_count == 10  # one LOOP per hand + 9 steps, not unrolled
    assert header.total_ms == 2 * (45 + 90 + 50 + 75 + 75 + 50 + 75 + 50 + 45) * 1000 == 1_110_000
    # patterns in order of first use: switch, start, tick, next, warn, done
    assert header.pattern_count == 6
    assert header.segment_count == 3 + 1 + 1 + 3 + 5 + 3
    assert header.hands == int(Hands.LEFT_THEN_RIGHT)
    assert header.done_pattern == 5
    assert header.crc32 == zlib.crc32(data[8:])
    # records: the first is the per-hand loop around the other nine
    assert data[24:30] == bytes([2, 2, 2, 0, 9, 0])
    techniques = [data[24 + 16 * i + 1] for i in range(1, 10)]
    assert techniques == [1, 2, 6, 7, 8, 9, 10, 11, 12]
    descriptors = [tuple(data[184 + 2 * i : 186 + 2 * i]) for i in range(6)]
    assert descriptors == [(0, 3), (3, 1), (4, 1), (5, 3), (8, 5), (13, 3)]


@pytest.mark.parametrize("names", [True, False], ids=["names", "no-names"])
@pytest.mark.parametrize("routine", SHIPPED)
def test_the_table_declaration_parses_what_the_decoder_reads(routine, names):
    """Table, the one declaration of the layout, reads every shipped table as the band's step-by-step decoder does."""
    data = compile_routine(load_routine(routine), names=names)
    parsed = Table.parse(data)  # its Checksum verifies the CRC, Terminated the size
    decoded = decode_table(data)
    assert parsed.records == decoded.records
    assert parsed.segments == [s for p in decoded.patterns for s in p.segments]
    assert parsed.header.total_ms == decoded.total_ms and parsed.header.done_pattern == decoded.done_pattern
    name_bytes = sum(1 + len(n.encode()) for n in [decoded.name, *(p.name for p in decoded.patterns)]) if names else 0
    sections = table_sections(parsed.header)
    assert (sections.records, sections.names) == (TABLE_HEADER_SIZE, len(data) - name_bytes)
    assert sections.segments - sections.patterns == 2 * len(decoded.patterns)


def test_the_table_declaration_checks_the_crc():
    data = bytearray(encode_table(golden_table()))
    data[-1] ^= 0x01
    with pytest.raises(c.ChecksumError):
        Table.parse(bytes(data))


# --------------------------------------------------------------------------
# Round trips of the shipped routines


@pytest.mark.parametrize("names", [True, False], ids=["names", "no-names"])
@pytest.mark.parametrize("routine_id", SHIPPED)
def test_shipped_routine_round_trips_byte_exact(routine_id, names):
    data = compile_routine(load_routine(routine_id), names=names)
    decoded = decode_table(data)
    assert decoded.has_names is names
    assert encode_table(decoded) == data
    assert encode_table(decode_table(encode_table(decoded))) == data


@pytest.mark.parametrize("routine_id", SHIPPED)
def test_shipped_routine_decodes_to_the_compiled_table(routine_id):
    built = build_table(load_routine(routine_id))
    assert decode_table(encode_table(built)) == built


def test_there_are_four_shipped_routines():
    assert SHIPPED == ["desk-break", "full-hand-massage", "headache-li4", "nausea-pc6"]


@pytest.mark.parametrize("names", [True, False], ids=["names", "no-names"])
@pytest.mark.parametrize("routine_id", SHIPPED)
def test_flipping_any_single_byte_is_refused(routine_id, names):
    data = compile_routine(load_routine(routine_id), names=names)
    for offset in range(len(data)):
        for mask in (0x01, 0xFF):
            corrupt = bytearray(data)
            corrupt[offset] ^= mask
            with pytest.raises(TableFormatError):
                decode_table(bytes(corrupt))


def test_longer_header_and_records_are_skipped_by_the_decoder():
    data = compile_routine(load_routine("desk-break"), names=True)
    reference = decode_table(data)
    header = Header.parse(data)
    n = header.record_count
    records_end = 24 + 16 * n
    wider = bytearray(data[:24])
    wider[10], wider[11] = 28, 20
    wider += b"\xaa" * 4
    for i in range(n):
        wider += data[24 + 16 * i : 40 + 16 * i] + b"\0" * 4
    wider += data[records_end:]
    wider[12:14] = len(wider).to_bytes(2, "little")
    assert decode_table(with_crc(wider)) == reference


# --------------------------------------------------------------------------
# Hypothesis: random valid tables

names_st = st.text(st.characters(codec="utf-8"), max_size=16)  # at most 64 UTF-8 bytes


@st.composite
def patterns_st(draw) -> CuePattern:
    n = draw(st.integers(1, Limits.MAX_SEGMENTS_PER_PATTERN))
    ons = [True] + [draw(st.booleans()) for _ in range(n - 2)] + ([True] if n > 1 else [])
    segments = []
    for on in ons:
        if on:
            segments.append(PatternSegment(draw(st.integers(1, 100)), draw(st.integers(3, 10)) * 10))
        else:
            segments.append(PatternSegment(0, draw(st.integers(10, 12)) * 10))  # 8 segments: at most 920 ms
    return CuePattern(tuple(segments), draw(names_st))


@st.composite
def step_tables(draw) -> StepTable:
    hands = draw(st.sampled_from(list(Hands)))
    patterns = draw(st.lists(patterns_st(), min_size=1, max_size=6))
    ref = st.integers(0, len(patterns) - 1)
    opt_ref = st.none() | ref
    records: list = []

    def iterate_and_count(bound: frozenset) -> tuple[Iterate, int]:
        iterate = draw(st.sampled_from([i for i in Iterate if i == Iterate.NONE or i not in bound]))
        if iterate == Iterate.FINGER:
            return iterate, draw(st.integers(1, 5))
        if iterate == Iterate.HAND:
            return iterate, len(hands.order)
        return iterate, draw(st.integers(1, 3) | st.just(Limits.MAX_COUNT))

    def emit_step(bound: frozenset) -> None:
        iterate, count = iterate_and_count(bound)
        units = draw(st.integers(10, 600) | st.just(Limits.MAX_STEP_UNITS))
        tick_units = draw(st.just(0) | st.integers(10, max(10, units)))
        warn_units = draw(st.just(0) | st.integers(1, units - 1))
        records.append(
            StepRecord(
                technique=draw(st.sampled_from(list(TechniqueCode))),
                duration_ms=units * 100,
                iterate=iterate,
                count=count,
                tick_every_ms=tick_units * 100,
                warn_before_ms=warn_units * 100,
                start_pattern=draw(opt_ref),
                next_pattern=draw(opt_ref),
                tick_pattern=draw(ref) if tick_units else None,
                warn_pattern=draw(ref) if warn_units else None,
            )
        )

    def emit_items(depth: int, bound: frozenset) -> None:
        for _ in range(draw(st.integers(1, 3))):
            if depth < Limits.MAX_LOOP_NESTING and len(records) < 40 and draw(st.booleans()):
                iterate, count = iterate_and_count(bound)
                position = len(records)
                records.append(None)
                emit_items(depth + 1, bound | {iterate})
                records[position] = LoopRecord(iterate, count, len(records) - position - 1, draw(opt_ref))
            else:
                emit_step(bound)

    emit_items(0, frozenset())
    return StepTable(hands, records, patterns, draw(opt_ref), draw(names_st), True)


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FAST
@given(step_tables())
def test_random_tables_round_trip(t):
    if t.total_ms > Limits.MAX_TOTAL_MS:
        expect_error(TableError.LIMIT, encode_table, t)
        return
    data = encode_table(t)
    decoded = decode_table(data)
    assert decoded == t
    assert encode_table(decoded) == data
    assert Header.parse(data).total_ms == t.total_ms

    bare = encode_table(t, names=False)
    stripped = decode_table(bare)
    assert stripped == StepTable(t.hands, t.records, [CuePattern(p.segments) for p in t.patterns], t.done_pattern, "", False)
    assert encode_table(stripped) == bare
    name_bytes = 1 + len(t.name.encode()) + sum(1 + len(p.name.encode()) for p in t.patterns)
    assert len(data) == len(bare) + name_bytes


# Random routine TOML: nested hand/finger/repeat blocks, every cue (built-in and custom), every duration form.
PLAIN_TECHNIQUES = [t for t in TECHNIQUES if not TECHNIQUES[t].acupressure]
ACUPRESSURE_TECHNIQUES = [t for t in TECHNIQUES if TECHNIQUES[t].acupressure]
CUSTOM_PATTERNS = {"nudge": "40/120/40", "soft": {"on_off": "90/100/30", "amplitude": 40, "meaning": "gentle"}}
CUE_NAMES = [*CUE_VOCABULARY, *CUSTOM_PATTERNS]


def toml_str(text: str) -> str:
    escaped = "".join(f"\\u{ord(ch):04X}" if ord(ch) < 0x20 or ord(ch) == 0x7F or ch in '"\\' else ch for ch in text)
    return f'"{escaped}"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


@st.composite
def duration_text(draw, seconds: int) -> tuple[object, int]:
    """A way of writing ``seconds`` (or ``seconds`` + 0.5) and the milliseconds it means."""
    form = draw(st.integers(0, 7))
    minutes, rest = divmod(seconds, 60)
    texts = {
        0: seconds,
        1: f"{seconds} s",
        2: f"{minutes}:{rest:02d}",
        3: f"{minutes} min {rest} s" if minutes else f"{rest} sec",
        4: f"{seconds * 1000} ms",
        5: f"{minutes} minutes {rest} seconds" if minutes else f"{rest} seconds",
        6: str(seconds),
    }
    if form == 7:
        return f"{seconds}.5 s", seconds * 1000 + 500
    return texts[form], seconds * 1000


@st.composite
def routine_docs(draw):
    """(TOML text, number of steps, number of blocks, total ms computed independently)."""
    hands = draw(st.sampled_from(["left", "right", "both", "left-right", "right-left"]))
    two = hands not in ("left", "right")
    count = {"steps": 0, "blocks": 0}

    def cue():
        return draw(st.sampled_from([*CUE_NAMES, False]))

    def make_step(bound: frozenset) -> tuple[dict, int]:
        count["steps"] += 1
        technique = draw(st.sampled_from(PLAIN_TECHNIQUES))
        seconds = draw(st.integers(20, 150))
        duration, ms = draw(duration_text(seconds))
        value: dict = {"technique": technique, "duration": duration}
        mode = draw(st.sampled_from(["default", "none", "finger", "hand", "repeat"]))
        default_each = TECHNIQUES[technique].defaults.for_each
        if mode == "default" and default_each in bound:
            mode = "none"
        if (mode == "finger" and "finger" in bound) or (mode == "hand" and (not two or "hand" in bound)):
            mode = "none"
        iterations = 1
        if mode in ("none", "finger", "hand"):
            value["for_each"] = mode
            iterations = {"none": 1, "finger": 5, "hand": 2}[mode]
        elif mode == "repeat":
            iterations = value["repeat"] = draw(st.integers(1, 4))
        elif default_each == "finger":
            iterations = 5
        if draw(st.booleans()):
            value["start"] = cue()
        if draw(st.booleans()):
            value["next"] = cue()
        if draw(st.booleans()):
            value["tick"] = cue()
            value["tick_every"] = draw(st.integers(1, seconds))
        if draw(st.booleans()):
            value["warn"] = cue()
            value["warn_before"] = draw(st.integers(1, seconds - 1))
        return value, ms * iterations

    def make_items(bound: frozenset, depth: int) -> tuple[list, int]:
        items, total = [], 0
        for _ in range(draw(st.integers(1, 3))):
            free = [each for each in ("finger", "hand") if each not in bound and (each == "finger" or two)] + ["repeat"]
            if depth < 4 and draw(st.integers(0, depth + 1)) == 0:
                count["blocks"] += 1
                each = draw(st.sampled_from(free))
                if each == "repeat":
                    rounds = draw(st.integers(1, 3))
                    block: dict = {"repeat": rounds}
                else:
                    rounds = 5 if each == "finger" else 2
                    block = {"for_each": each}
                if draw(st.booleans()):
                    block["next"] = cue()
                block["steps"], inner = make_items(bound | {each}, depth + 1)
                items.append(block)
                total += rounds * inner
            else:
                value, ms = make_step(bound)
                items.append(value)
                total += ms
        return items, total

    steps, total = make_items(frozenset(), 0)
    for technique in draw(st.lists(st.sampled_from(ACUPRESSURE_TECHNIQUES), unique=True, max_size=2)):
        count["steps"] += 1
        minutes = draw(st.integers(5, 15))
        steps.append({"technique": technique, "duration": f"{minutes} min", "for_each": "hand" if two else "none"})
        total += minutes * 60_000 * (2 if two else 1)
    lines = [f"name = {toml_value(draw(names_st.filter(str.strip)))}", f'hands = "{hands}"', f"patterns = {toml_value(CUSTOM_PATTERNS)}"]
    if draw(st.booleans()):
        lines.append(f"finish = {toml_value(cue())}")
    lines.append(f"steps = {toml_value(steps)}")
    return "\n".join(lines) + "\n", count["steps"], count["blocks"], total


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(routine_docs())
def test_random_routines_compile_and_round_trip(doc):
    text, n_steps, n_blocks, total_ms = doc
    routine, diagnostics = parse_routine(text, "random.toml")
    assert routine is not None, "\n".join(str(d) for d in diagnostics) + "\n" + text
    built = build_table(routine)
    assert len(built.records) == n_steps + n_blocks
    assert sum(isinstance(r, LoopRecord) for r in built.records) == n_blocks
    assert built.total_ms == routine.total_ms == total_ms
    data = compile_routine(routine)
    assert compile_routine(parse_routine(text, "random.toml")[0]) == data
    assert decode_table(data) == built
    assert encode_table(decode_table(data)) == data
    bare = compile_routine(routine, names=False)
    assert encode_table(decode_table(bare)) == bare
    assert len(bare) < len(data)


# --------------------------------------------------------------------------
# Limits at the boundary: the limit passes, one unit past fails


def encodes(t: StepTable) -> bytes:
    data = encode_table(t)
    assert decode_table(data) == t
    return data


def test_max_records():
    encodes(table([step()] * Limits.MAX_RECORDS))
    expect_error(TableError.LIMIT, encode_table, table([step()] * (Limits.MAX_RECORDS + 1)))
    expect_error(TableError.LIMIT, encode_table, table([]))


def test_max_records_in_bytes():
    raw = raw_table([raw_step()] * Limits.MAX_RECORDS, total_ms=1000 * Limits.MAX_RECORDS)
    assert len(decode_table(raw).records) == Limits.MAX_RECORDS
    expect_error(TableError.LIMIT, decode_table, raw_table([raw_step()] * (Limits.MAX_RECORDS + 1), total_ms=1000 * (Limits.MAX_RECORDS + 1)))
    expect_error(TableError.LIMIT, decode_table, raw_table([], total_ms=0))


def test_max_patterns():
    encodes(table(patterns=[pat(80)] * Limits.MAX_PATTERNS))
    expect_error(TableError.LIMIT, encode_table, table(patterns=[pat(80)] * (Limits.MAX_PATTERNS + 1)))


def test_max_patterns_in_bytes():
    n = Limits.MAX_PATTERNS
    assert len(decode_table(raw_table([raw_step()], patterns=[(i, 1) for i in range(n)], segments=[(100, 8)] * n)).patterns) == n
    n += 1
    expect_error(TableError.LIMIT, decode_table, raw_table([raw_step()], patterns=[(i, 1) for i in range(n)], segments=[(100, 8)] * n))


def test_max_segments():
    full = on_pattern(*[30] * 8)
    seven = on_pattern(*[30] * 7)
    at_limit = [full] * 31 + [seven]
    assert sum(len(p.segments) for p in at_limit) == Limits.MAX_SEGMENTS == 255
    data = encodes(table(patterns=at_limit))
    assert Header.parse(data).segment_count == 255
    over = [full] * 32
    assert sum(len(p.segments) for p in over) == 256
    assert len(over) <= Limits.MAX_PATTERNS
    expect_error(TableError.LIMIT, encode_table, table(patterns=over))


def test_max_segments_per_pattern():
    encodes(table(patterns=[on_pattern(*[30] * 8)]))
    mixed = CuePattern((*pat(30, 100, 30, 100, 30, 100, 30).segments, PatternSegment(50, 30)))
    assert len(mixed.segments) == 8
    encodes(table(patterns=[mixed]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[on_pattern(*[30] * 9)]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[CuePattern(())]))


def test_segments_per_pattern_in_bytes():
    assert decode_table(raw_table([raw_step()], patterns=[(0, 8)], segments=[(100, 3)] * 8)).patterns[0] == on_pattern(*[30] * 8)
    expect_error(TableError.BAD_PATTERN, decode_table, raw_table([raw_step()], patterns=[(0, 9)], segments=[(100, 3)] * 9))


def nested_loops(depth: int) -> list:
    return [LoopRecord(Iterate.NONE, 2, depth - i) for i in range(depth)] + [step()]


def test_max_loop_nesting():
    assert Limits.MAX_LOOP_NESTING == 4
    data = encodes(table(nested_loops(4)))
    assert decode_table(data).total_ms == 16 * 1000
    expect_error(TableError.BAD_NESTING, encode_table, table(nested_loops(5)))


def test_max_loop_nesting_in_bytes():
    loops = [raw_loop(body_count=4 - i) for i in range(4)]
    assert decode_table(raw_table([*loops, raw_step()], total_ms=16_000)).total_ms == 16_000
    loops = [raw_loop(body_count=5 - i) for i in range(5)]
    expect_error(TableError.BAD_NESTING, decode_table, raw_table([*loops, raw_step()], total_ms=32_000))


def test_max_count():
    encodes(table([step(count=Limits.MAX_COUNT)]))
    encodes(table([LoopRecord(Iterate.NONE, Limits.MAX_COUNT, 1), step()]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(count=Limits.MAX_COUNT + 1)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([LoopRecord(Iterate.NONE, Limits.MAX_COUNT + 1, 1), step()]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(count=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([LoopRecord(Iterate.NONE, 0, 1), step()]))


def test_count_in_bytes():
    assert decode_table(raw_table([raw_step(count=255)], total_ms=255_000)).records[0].count == 255
    expect_error(TableError.BAD_RECORD, decode_table, raw_table([raw_step(count=0)], total_ms=0))
    expect_error(TableError.BAD_RECORD, decode_table, raw_table([raw_loop(count=0), raw_step()], total_ms=0))


def test_finger_count_is_at_most_five():
    encodes(table([step(iterate=Iterate.FINGER, count=5, next_pattern=0)]))
    encodes(table([LoopRecord(Iterate.FINGER, 5, 1), step()]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(iterate=Iterate.FINGER, count=6)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([LoopRecord(Iterate.FINGER, 6, 1), step()]))


def test_hand_count_must_match_the_hands():
    encodes(table([step(iterate=Iterate.HAND, count=2)], hands=Hands.RIGHT_THEN_LEFT))
    encodes(table([step(iterate=Iterate.HAND, count=1)], hands=Hands.RIGHT))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(iterate=Iterate.HAND, count=1)], hands=Hands.LEFT_THEN_RIGHT))
    expect_error(TableError.BAD_RECORD, encode_table, table([LoopRecord(Iterate.HAND, 2, 1), step()], hands=Hands.LEFT))


def test_step_duration_limits():
    longest = Limits.MAX_STEP_UNITS * 100
    assert longest == 6_553_500
    encodes(table([step(Limits.MIN_STEP_MS)]))
    encodes(table([step(longest)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(Limits.MIN_STEP_MS - 100)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(longest + 100)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(1050)]))  # not a 100 ms multiple


def test_step_duration_in_bytes():
    assert decode_table(raw_table([raw_step(duration=0xFFFF)], total_ms=6_553_500)).records[0].duration_ms == 6_553_500
    expect_error(TableError.BAD_RECORD, decode_table, raw_table([raw_step(duration=9)], total_ms=900))


def test_tick_interval_and_warning_limits():
    encodes(table([step(5000, tick_every_ms=1000, tick_pattern=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, tick_every_ms=900, tick_pattern=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, tick_every_ms=1050, tick_pattern=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, tick_every_ms=1000)]))  # interval, no pattern
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, tick_pattern=0)]))  # pattern, no interval
    encodes(table([step(5000, warn_before_ms=4900, warn_pattern=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, warn_before_ms=5000, warn_pattern=0)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, warn_before_ms=1000)]))
    expect_error(TableError.BAD_RECORD, encode_table, table([step(5000, warn_pattern=0)]))


def test_min_pulse():
    assert Limits.MIN_PULSE_MS == 30
    assert pattern_problem(pat(30)) is None
    assert "too short" in pattern_problem(pat(20))
    encodes(table(patterns=[pat(30)]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[pat(20)]))
    expect_error(TableError.BAD_PATTERN, decode_table, raw_table([raw_step()], segments=[(100, 2)]))


def test_min_gap():
    assert Limits.MIN_GAP_MS == 100
    assert pattern_problem(pat(50, 100, 50)) is None
    assert "blurs" in pattern_problem(pat(50, 90, 50))
    encodes(table(patterns=[pat(50, 100, 50)]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[pat(50, 90, 50)]))
    expect_error(TableError.BAD_PATTERN, decode_table, raw_table([raw_step()], patterns=[(0, 3)], segments=[(100, 5), (0, 9), (100, 5)]))


def test_max_pattern_duration():
    assert Limits.MAX_PATTERN_MS == 1000
    assert pattern_problem(pat(400, 200, 400)) is None
    assert "at most 1000 ms" in pattern_problem(pat(400, 200, 410))
    encodes(table(patterns=[pat(1000)]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[pat(1010)]))


def test_pattern_must_start_and_end_on_and_segments_are_10_ms_steps():
    assert "start and end" in pattern_problem(pat(80, 120))
    assert "start and end" in pattern_problem(CuePattern((PatternSegment(0, 100), PatternSegment(100, 80))))
    assert "10 ms steps" in pattern_problem(pat(85))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[pat(80, 120)]))


def test_max_amplitude():
    assert Limits.MAX_AMPLITUDE == 100
    encodes(table(patterns=[pat(80, amplitude=100)]))
    expect_error(TableError.BAD_PATTERN, encode_table, table(patterns=[pat(80, amplitude=101)]))
    expect_error(TableError.BAD_PATTERN, decode_table, raw_table([raw_step()], segments=[(101, 8)]))


def test_max_name_bytes():
    encodes(table(name="n" * 64, patterns=[pat(80, name="é" * 32)]))
    expect_error(TableError.BAD_NAMES, encode_table, table(name="n" * 65))
    expect_error(TableError.BAD_NAMES, encode_table, table(patterns=[pat(80, name="é" * 32 + "x")]))


def test_name_too_long_in_bytes():
    assert decode_table(raw_table([raw_step()], names=("r" * 64, ["p"]))).name == "r" * 64
    expect_error(TableError.BAD_NAMES, decode_table, raw_table([raw_step()], names=("r" * 65, ["p"])))
    expect_error(TableError.BAD_NAMES, decode_table, raw_table([raw_step()], names=("r", ["p" * 65])))


def test_max_total_duration():
    # 255 x 255 rounds of a 66 s step: 4 291 650 000 ms fits in u32; 66.1 s does not.
    fits = table([LoopRecord(Iterate.NONE, 255, 2), LoopRecord(Iterate.NONE, 255, 1), step(66_000)])
    assert fits.total_ms == 4_291_650_000 <= Limits.MAX_TOTAL_MS
    encodes(fits)
    over = table([LoopRecord(Iterate.NONE, 255, 2), LoopRecord(Iterate.NONE, 255, 1), step(66_100)])
    assert over.total_ms > Limits.MAX_TOTAL_MS
    expect_error(TableError.LIMIT, encode_table, over)


def wide_table(extra_header: int) -> bytes:
    """1023 records of 32 bytes, 2 one-segment patterns, no names: 32768 + extra_header bytes."""
    return raw_table([raw_step()] * 1023, patterns=[(0, 1), (1, 1)], segments=[(100, 8)] * 2, total_ms=1_023_000,
                     header_size=TABLE_HEADER_SIZE + extra_header, record_size=32)


def test_max_table_bytes_in_bytes():
    at_limit = wide_table(0)
    assert len(at_limit) == Limits.MAX_TABLE_BYTES == 32 * 1024
    assert len(decode_table(at_limit).records) == 1023
    over = wide_table(1)
    assert len(over) == Limits.MAX_TABLE_BYTES + 1
    expect_error(TableError.LIMIT, decode_table, over)


# --------------------------------------------------------------------------
# Every error code of decode_table


@pytest.fixture
def good() -> bytes:
    return compile_routine(load_routine("nausea-pc6"))


def test_error_too_short(good):
    expect_error(TableError.TOO_SHORT, decode_table, good[:23])
    expect_error(TableError.TOO_SHORT, decode_table, b"")
    expect_error(TableError.TOO_SHORT, decode_table, b"HCue")


def test_error_bad_magic(good):
    expect_error(TableError.BAD_MAGIC, decode_table, patch(good, 0, b"HCuf"))
    expect_error(TableError.BAD_MAGIC, decode_table, patch(good, 0, b"hcue"))


def test_error_bad_version(good):
    expect_error(TableError.BAD_VERSION, decode_table, patch(good, 8, b"\x03"))
    expect_error(TableError.BAD_VERSION, decode_table, patch(good, 8, b"\x00"))
    decode_table(patch(good, 8, b"\x02"))  # format 2 reads format 1's bytes alike
    error = expect_error(TableError.BAD_VERSION, decode_table, patch(good, 8, b"\x02"), versions=(1,))  # a band of format 1 only
    assert "format version 2; this reader knows version 1" in str(error)


def test_error_bad_crc(good):
    expect_error(TableError.BAD_CRC, decode_table, patch(good, 30, bytes([good[30] ^ 0x40]), crc=False))
    expect_error(TableError.BAD_CRC, decode_table, patch(good, 4, bytes([good[4] ^ 1]), crc=False))
    expect_error(TableError.BAD_CRC, decode_table, patch(good, len(good) - 1, b"X", crc=False))


def test_error_bad_size(good):
    size = len(good)
    expect_error(TableError.BAD_SIZE, decode_table, patch(good, 12, (size + 1).to_bytes(2, "little")))
    expect_error(TableError.BAD_SIZE, decode_table, patch(good, 12, (size - 1).to_bytes(2, "little")))
    expect_error(TableError.BAD_SIZE, decode_table, good[:-1])
    expect_error(TableError.BAD_SIZE, decode_table, good + b"\0")
    expect_error(TableError.BAD_SIZE, decode_table, patch(good, 10, bytes([TABLE_HEADER_SIZE - 1])))
    expect_error(TableError.BAD_SIZE, decode_table, patch(good, 11, bytes([TABLE_RECORD_SIZE - 1])))


def test_error_limit(good):
    expect_error(TableError.LIMIT, decode_table, wide_table(1))
    expect_error(TableError.LIMIT, decode_table, raw_table([], total_ms=0))
    n = Limits.MAX_PATTERNS + 1
    expect_error(TableError.LIMIT, decode_table, raw_table([raw_step()], patterns=[(i, 1) for i in range(n)], segments=[(100, 8)] * n))


def test_error_bad_record(good):
    bad = TableError.BAD_RECORD
    expect_error(bad, decode_table, raw_table([raw_step(technique=0)]))
    expect_error(bad, decode_table, raw_table([raw_step(technique=len(TechniqueCode) + 1)]))
    expect_error(bad, decode_table, raw_table([raw_step(iterate=3)]))
    expect_error(bad, decode_table, raw_table([raw_loop(iterate=3), raw_step()], total_ms=2000))
    expect_error(bad, decode_table, raw_table([raw_step()], hands=4))
    expect_error(bad, decode_table, raw_table([raw_step(start=1)]))  # pattern 1 of 1 does not exist
    expect_error(bad, decode_table, raw_table([raw_step()], done=1))
    expect_error(bad, decode_table, raw_table([raw_loop(round=5), raw_step()], total_ms=2000))
    expect_error(bad, decode_table, raw_table([raw_step()], total_ms=1100))  # header total disagrees
    expect_error(bad, decode_table, patch(good, 16, (600_100).to_bytes(4, "little")))
    expect_error(bad, decode_table, raw_table([raw_step(iterate=1, count=6)], total_ms=6000))
    expect_error(bad, decode_table, raw_table([raw_step(iterate=2, count=2)], total_ms=2000))  # hands = left only
    expect_error(bad, decode_table, raw_table([raw_step(tick_every=10)]))  # tick interval without a pattern
    expect_error(bad, decode_table, raw_table([raw_step(warn_before=10, warn=0)]))  # warning as long as the step
    expect_error(bad, decode_table, raw_table([raw_step(duration=20, tick_every=9, tick=0)], total_ms=2000))
    truncated_name = bytearray(raw_table([raw_step()], names=("abc", ["p"])))
    truncated_name[-2] = 9  # the last name claims 9 bytes, 1 is left
    expect_error(bad, decode_table, with_crc(truncated_name))


@pytest.mark.parametrize("kind", [0, 3, 0xFF])
def test_error_bad_record_unknown_kind(good, kind):
    data = patch(good, 24, bytes([kind]))
    try:
        decode_table(data)
    except TableFormatError as exc:
        assert exc.code == TableError.BAD_RECORD
    except Exception as exc:  # report the wrong exception without a long construct traceback
        pytest.fail(f"raised {type(exc).__name__} instead of TableFormatError(BAD_RECORD): {exc}", pytrace=False)
    else:
        pytest.fail("an unknown record kind was accepted", pytrace=False)


def test_error_bad_pattern(good):
    bad = TableError.BAD_PATTERN
    expect_error(bad, decode_table, raw_table([raw_step()], patterns=[(1, 1)], segments=[(100, 8), (100, 8)]))  # skips segment 0
    expect_error(bad, decode_table, raw_table([raw_step()], patterns=[(0, 2)], segments=[(100, 8)]))  # runs past the segments
    expect_error(bad, decode_table, raw_table([raw_step()], patterns=[(0, 1)], segments=[(100, 8), (100, 8)]))  # orphan segment
    expect_error(bad, decode_table, raw_table([raw_step()], patterns=[(0, 0), (0, 1)], segments=[(100, 8)]))  # empty pattern
    expect_error(bad, decode_table, patch(good, 24 + 16 + 5 * 2 + 1, b"\x02"))  # start pattern: 80 ms -> 20 ms pulse


def test_error_bad_nesting():
    bad = TableError.BAD_NESTING
    expect_error(bad, decode_table, raw_table([raw_loop(body_count=0), raw_step()]))
    expect_error(bad, decode_table, raw_table([raw_loop(body_count=2), raw_step()]))
    inner_leaves = [raw_loop(body_count=2), raw_loop(body_count=2), raw_step(), raw_step()]
    expect_error(bad, decode_table, raw_table(inner_leaves))
    expect_error(bad, decode_table, raw_table([raw_loop(iterate=1, count=5, body_count=1), raw_step(iterate=1, count=5)], total_ms=25_000))
    expect_error(bad, decode_table, raw_table([raw_loop(iterate=1, count=5, body_count=2), raw_loop(iterate=1, count=5, body_count=1), raw_step()]))
    loops = [raw_loop(body_count=5 - i) for i in range(5)]
    expect_error(bad, decode_table, raw_table([*loops, raw_step()], total_ms=32_000))


def test_error_bad_nesting_from_validate():
    expect_error(TableError.BAD_NESTING, validate_table, table([LoopRecord(Iterate.NONE, 2, 0), step()]))
    expect_error(TableError.BAD_NESTING, validate_table, table([LoopRecord(Iterate.NONE, 2, 2), step()]))
    expect_error(TableError.BAD_NESTING, validate_table, table([LoopRecord(Iterate.HAND, 2, 1), step(iterate=Iterate.HAND, count=2)], hands=Hands.LEFT_THEN_RIGHT))


def test_error_bad_names(good):
    expect_error(TableError.BAD_NAMES, decode_table, raw_table([raw_step()], names=("x" * 65, ["p"])))


def test_name_section_that_is_not_utf8_is_bad_record(good):
    # SPEC §11 step 8: a malformed name section is BAD_RECORD; BAD_NAMES only means "longer than 64 bytes".
    corrupt = bytearray(good)
    corrupt[good.index(b"Nausea")] = 0xFF
    expect_error(TableError.BAD_RECORD, decode_table, with_crc(corrupt))


def test_every_table_error_code_is_covered():
    """Guard: the tests above name every refusal code except OK."""
    covered = {TableError.TOO_SHORT, TableError.BAD_MAGIC, TableError.BAD_VERSION, TableError.BAD_CRC, TableError.BAD_SIZE,
               TableError.LIMIT, TableError.BAD_RECORD, TableError.BAD_PATTERN, TableError.BAD_NESTING, TableError.BAD_NAMES}
    assert covered == set(TableError) - {TableError.OK}
    assert [int(code) for code in TableError] == list(range(11))


# --------------------------------------------------------------------------
# The declaration helpers (protocol.layout)


def test_a_layout_whose_offsets_leave_a_gap_is_refused():
    @laid_out
    class Gappy:
        first: int = wire(c.Int8ul, at=0)
        second: int = wire(c.Int8ul, at=2)

    with pytest.raises(ValueError, match=r"Gappy.second is declared at offset 2; the fields before it end at 1"):
        layout_of(Gappy)


def test_record_layouts_read_units_markers_and_enums_into_the_model():
    data = bytes.fromhex("01 07 01 05 9600 0000 3200 00 01 ff 01 00".replace(" ", ""))
    record = RECORD.parse(data)
    assert record == StepRecord(TechniqueCode.FINGER_SQUEEZE, 15_000, Iterate.FINGER, 5, warn_before_ms=5_000, start_pattern=0, next_pattern=1,
                                warn_pattern=1)
    assert type(record.technique) is TechniqueCode and type(record.iterate) is Iterate and record.tick_pattern is None
    assert RECORD.build(record) == data
    acked = RECORD.parse(data[:14] + b"\xfd")  # flags byte: bit 0 is ACK, the other bits are reserved
    assert acked.ack is True and RECORD.build(acked) == data[:14] + b"\x01"
    with pytest.raises(c.MappingError, match="1050 ms is not a multiple of 100 ms"):
        RECORD.build(step(1050))


def test_layouts_compile_only_once_it_pays_and_from_the_same_declarations():
    """Importing the codec, building a table, checking its header and decoding a small table compile no
    layout (``handcue status`` and ``handcue upload`` pay nothing for them: compiling costs more than the
    few parses it would speed up); a layout used often enough is compiled, from the same declaration, and
    parses the golden bytes to what the declared layout gives."""
    code = (
        "import construct\n"
        "calls = []\n"
        "original = construct.Construct.compile\n"
        "def counting(self, *args, **kwargs):\n"
        "    calls.append(self)\n"
        "    return original(self, *args, **kwargs)\n"
        "construct.Construct.compile = counting\n"
        "import protocol.messages, protocol.table\n"
        "from companion import compile_routine, load_routine\n"
        "data = compile_routine(load_routine('full-hand-massage'))\n"
        "protocol.table.check_table_header(data)\n"
        "protocol.table.decode_table(data)\n"
        "print(len(calls))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"]
    from protocol import table

    golden = golden_hex(names=True)
    header = table.Compiled(table.Header, compile_after=3)
    plain = table.Header.parse(golden[:TABLE_HEADER_SIZE])
    assert [header.parse(golden[:TABLE_HEADER_SIZE]) for _ in range(2)] == [plain, plain] and header.compiled is None
    assert header.parse(golden[:TABLE_HEADER_SIZE]) == plain and header.compiled is not None  # the third use compiled it
    assert header.parse(golden[:TABLE_HEADER_SIZE]) == plain
    often = table.Compiled(table.Header)
    for _ in range(table.Compiled.COMPILE_AFTER):
        assert often.parse(golden[:TABLE_HEADER_SIZE]) == plain
    assert often.compiled is not None
    assert decode_table(golden) == golden_table()  # through the module's own layouts
