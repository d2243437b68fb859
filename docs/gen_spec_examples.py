"""Print the worked examples of protocol/SPEC.md from the real code.

Run from the repository root::

    python docs/gen_spec_examples.py > /tmp/examples.txt

It compiles the shipped ``nausea-pc6`` routine with and without the name
section and prints an annotated hex dump (offset, bytes, field, decoded
value), one LOOP record of ``desk-break``, the CRC catalogue check and the
first motor events of the timeline.  With names, only the rows that
differ from the names-free dump are printed.  The dump walks the bytes with the
offsets written in SPEC.md (not with the codec's construct layouts) and
asserts that every value agrees with ``companion.read_table``, so a drift
between the specification and the code fails loudly here.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import companion
from protocol.constants import FINGERS, NO_PATTERN, CueKind, Hands, Iterate, RecordKind, TableFlags, TechniqueCode
from protocol.table import LoopRecord, StepRecord, StepTable

ROW = "{offset:>6}  {hex:<17} {field:<34} {value}"


def u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def ref(value: int) -> str:
    return "none (0xFF)" if value == NO_PATTERN else f"pattern {value}"


class Dump:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lines: list[str] = [ROW.format(offset="offset", hex="bytes", field="field", value="value"), "-" * 80]

    def row(self, offset: int, size: int, field: str, value: str) -> None:
        raw = self.data[offset : offset + size]
        hex_text = raw.hex(" ")
        if len(hex_text) > 17:  # long runs (names): show the bytes on their own lines
            self.lines.append(ROW.format(offset=offset, hex=f"({size} bytes)", field=field, value=value))
            for start in range(0, size, 16):
                self.lines.append(f"{'':>6}  {raw[start : start + 16].hex(' ')}")
            return
        self.lines.append(ROW.format(offset=offset, hex=hex_text, field=field, value=value))

    def text(self) -> str:
        return "\n".join(self.lines)


def dump_table(data: bytes) -> str:
    table = companion.read_table(data)
    d = Dump(data)

    # header
    assert data[0:4] == b"HCue"
    d.row(0, 4, "magic", '"HCue"')
    crc = u(data, 4, 4)
    assert crc == zlib.crc32(data[8:])
    d.row(4, 4, "crc32", f"0x{crc:08X} = CRC-32 of bytes 8..{len(data) - 1}")
    d.row(8, 1, "version", str(data[8]))
    flags = data[9]
    d.row(9, 1, "flags", f"0x{flags:02X}" + (" (NAMES)" if flags & TableFlags.NAMES else " (no name section)"))
    header_size, record_size = data[10], data[11]
    d.row(10, 1, "header_size", str(header_size))
    d.row(11, 1, "record_size", str(record_size))
    assert u(data, 12, 2) == len(data)
    d.row(12, 2, "table_size", f"{u(data, 12, 2)} bytes")
    record_count = u(data, 14, 2)
    assert record_count == len(table.records)
    d.row(14, 2, "record_count", str(record_count))
    total = u(data, 16, 4)
    assert total == table.total_ms
    d.row(16, 4, "total_ms", f"{total} ms")
    pattern_count, segment_count = data[20], data[21]
    assert pattern_count == len(table.patterns)
    d.row(20, 1, "pattern_count", str(pattern_count))
    d.row(21, 1, "segment_count", str(segment_count))
    assert Hands(data[22]) == table.hands
    d.row(22, 1, "hands", f"{data[22]} = {Hands(data[22]).name}")
    d.row(23, 1, "done_pattern", ref(data[23]))

    # records
    offset = header_size
    for index in range(record_count):
        d.lines.append(f"{'':>6}  -- record {index} --")
        d.lines.extend(record_rows(data, offset, record_size, index, table))
        offset += record_size

    # pattern descriptors
    for index in range(pattern_count):
        first, count = data[offset], data[offset + 1]
        d.row(offset, 2, f"pattern[{index}] first_segment,count", f"segments {first}..{first + count - 1}")
        offset += 2
    # segments
    segment_index = 0
    for pattern_index, pattern in enumerate(table.patterns):
        for segment in pattern.segments:
            amplitude, units = data[offset], data[offset + 1]
            assert (amplitude, units * 10) == (segment.amplitude, segment.duration_ms)
            state = f"on {amplitude} %" if amplitude else "off"
            d.row(offset, 2, f"segment[{segment_index}] (pattern {pattern_index})", f"{state}, {units} x 10 ms = {units * 10} ms")
            offset += 2
            segment_index += 1
    # names
    if flags & TableFlags.NAMES:
        for label, name in [("routine name", table.name), *((f"pattern[{i}] name", p.name) for i, p in enumerate(table.patterns))]:
            length = data[offset]
            assert data[offset + 1 : offset + 1 + length].decode() == name
            d.row(offset, 1 + length, label, f"len {length}, {name!r}")
            offset += 1 + length
    assert offset == len(data)
    return d.text()


def record_rows(data: bytes, offset: int, record_size: int, index: int, table: StepTable) -> list[str]:
    sub = Dump(data)
    sub.lines = []
    kind = data[offset]
    record = table.records[index]
    if kind == RecordKind.STEP:
        assert isinstance(record, StepRecord)
        iterate = Iterate(data[offset + 2])
        sub.row(offset + 0, 1, "kind", "1 = STEP")
        sub.row(offset + 1, 1, "technique", f"{data[offset + 1]} = {TechniqueCode(data[offset + 1]).text_id}")
        sub.row(offset + 2, 1, "iterate", f"{data[offset + 2]} = {iterate.name}")
        sub.row(offset + 3, 1, "count", str(data[offset + 3]))
        for field, at in (("duration", 4), ("tick_every", 6), ("warn_before", 8)):
            units = u(data, offset + at, 2)
            sub.row(offset + at, 2, field, f"{units} x 100 ms = {units * 100} ms")
        assert u(data, offset + 4, 2) * 100 == record.duration_ms
        for field, at in (("start_pattern", 10), ("next_pattern", 11), ("tick_pattern", 12), ("warn_pattern", 13)):
            sub.row(offset + at, 1, field, ref(data[offset + at]))
        used = 14
    else:
        assert kind == RecordKind.LOOP and isinstance(record, LoopRecord)
        sub.row(offset + 0, 1, "kind", "2 = LOOP")
        sub.row(offset + 1, 1, "iterate", f"{data[offset + 1]} = {Iterate(data[offset + 1]).name}")
        sub.row(offset + 2, 1, "count", str(data[offset + 2]))
        sub.row(offset + 3, 1, "round_pattern", ref(data[offset + 3]))
        sub.row(offset + 4, 2, "body_count", f"{u(data, offset + 4, 2)} records")
        assert u(data, offset + 4, 2) == record.body_count
        used = 6
    sub.row(offset + used, record_size - used, "reserved", "0")
    assert not any(data[offset + used : offset + record_size])
    return sub.lines


def timeline_rows(data: bytes, limit: int) -> str:
    table = companion.read_table(data)
    events = companion.table_timeline(table)
    lines = [f"{'t_ms':>7}  {'cue':<7} {'pattern':<10} {'step':>4}  {'hand':<6} {'finger':<7} motor"]
    for event in events[:limit]:
        lines.append(
            f"{event.t_ms:>7}  {event.cue:<7} {f'{event.pattern} ' + table.pattern_label(event.pattern):<10} "
            f"{'-' if event.step is None else event.step:>4}  {event.hand or '-':<6} {event.finger or '-':<7} "
            f"{event.amplitude} % for {event.duration_ms} ms"
        )
    lines.append(f"... {len(events)} motor events in all; total_ms {table.total_ms}")
    return "\n".join(lines)


PREEMPT_ROUTINE = """
name = "Preemption"
hands = "left"
[[steps]]
technique = "handshake"
duration = "2 s"
warn_before = "0.2 s"
[[steps]]
technique = "combing"
duration = "1 s"
start = "tick"
"""


def main() -> None:
    routine = companion.load_routine("nausea-pc6")
    without = companion.compile_routine(routine, names=False)
    with_names = companion.compile_routine(routine, names=True)

    print("== CRC catalogue check: zlib.crc32(b'123456789') ==")
    print(f"0x{zlib.crc32(b'123456789'):08X}")
    print()
    print(f"== nausea-pc6, names=False: {len(without)} bytes ==")
    print(without.hex())
    print()
    plain = dump_table(without)
    print(plain)
    print()
    print(f"== nausea-pc6, names=True: {len(with_names)} bytes (rows equal to the dump above left out) ==")
    print(with_names.hex())
    print()
    plain_rows = set(plain.splitlines()[2:])
    print("\n".join(line for line in dump_table(with_names).splitlines() if line not in plain_rows))
    print()

    desk = companion.compile_routine(companion.load_routine("desk-break"), names=False)
    table = companion.read_table(desk)
    print("== desk-break, names=False: record 0 (LOOP) and record 2 (STEP, iterate FINGER) ==")
    header_size, record_size = desk[10], desk[11]
    for index in (0, 2):
        offset = header_size + index * record_size
        print(f"{'':>6}  -- record {index}: {desk[offset : offset + record_size].hex(' ')} --")
        print("\n".join(record_rows(desk, offset, record_size, index, table)))
    print()

    print("== timeline of nausea-pc6 (first 16 motor events) ==")
    print(timeline_rows(with_names, 16))
    print()
    print("== merge: desk-break cues from 150 s to 170 s (LOOP round cue SWITCH=6 beats STEP start cue START=3) ==")
    desk_named = companion.read_table(companion.compile_routine(companion.load_routine("desk-break")))
    for cue in companion.table_cues(desk_named):
        if 150_000 <= cue.t_ms <= 170_000:
            label = desk_named.pattern_label(cue.pattern)
            print(f"{cue.t_ms:>7}  {cue.kind.name:<7} pattern {cue.pattern} {label:<7} step {cue.step}  hand {cue.hand}")
    print()
    print("== preemption: a 2 s step warning 200 ms before its end, then the next step ==")
    print(PREEMPT_ROUTINE.strip())
    routine, diagnostics = companion.parse_routine(PREEMPT_ROUTINE, "preempt.toml")
    assert routine is not None, diagnostics
    print(timeline_rows(companion.compile_routine(routine), 99))
    print()
    print("== CueKind ==")
    print(", ".join(f"{kind.name}={int(kind)}" for kind in CueKind))
    print("== fingers by iteration index ==")
    print(", ".join(f"{i}={name}" for i, name in enumerate(FINGERS)))


if __name__ == "__main__":
    main()
