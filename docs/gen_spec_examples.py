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

Part 2 (transfer protocol): it builds a simulated band on a virtual clock
holding ``nausea-pc6``, attaches a capturing link to the band's real
``ProtocolHandler`` and feeds it request frames, so every response and
notification printed is exactly what the band sends.  Each message is walked
with the offsets written in SPEC.md part 2 and checked against
``protocol.messages.decode_message`` (the raw wire values of its body class's
layout); each frame shows its CRC-16 and the COBS wire bytes.  A second band
holds a small format 2 routine whose first step and finish wait for the
wearer's press: its STATUS answers and notifications while it waits (§22.8).  Last come the BLE advertising and scan response data the band's
GATT peripheral (``firmware_sim.ble_peripheral``) builds.
"""

from __future__ import annotations

import sys
import zlib
from enum import IntEnum
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import companion
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.constants import (
    BLE_NAME_PREFIX,
    FINGERS,
    MESSAGE_HEADER_SIZE,
    NO_PATTERN,
    NO_STEP,
    PROTOCOL_VERSION,
    BandState,
    BleUuid,
    BootOutcome,
    CueKind,
    Hands,
    Iterate,
    MessageKind,
    Opcode,
    RecordKind,
    Status,
    TableError,
    TableFlags,
    TechniqueCode,
)
from protocol.framing import FrameParser, crc16, encode_frame
from protocol.messages import (
    EraseRequest,
    ErrorBody,
    InfoRequest,
    InfoResponse,
    Message,
    Request,
    ResumeRequest,
    StartRequest,
    StatusRequest,
    UploadBeginRequest,
    UploadCommitRequest,
    UploadDataRequest,
    UploadDataResponse,
    decode_message,
    encode_request,
)
from protocol.table import Header, LoopRecord, StepRecord, StepTable, table_crc, table_sections

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

    # records; each section must start where the codec's one offset function says
    sections = table_sections(Header.parse(data))
    offset = header_size
    assert offset == sections.records
    for index in range(record_count):
        d.lines.append(f"{'':>6}  -- record {index} --")
        d.lines.extend(record_rows(data, offset, record_size, index, table))
        offset += record_size

    # pattern descriptors
    assert offset == sections.patterns
    for index in range(pattern_count):
        first, count = data[offset], data[offset + 1]
        d.row(offset, 2, f"pattern[{index}] first_segment,count", f"segments {first}..{first + count - 1}")
        offset += 2
    # segments
    assert offset == sections.segments
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
    assert offset == sections.names
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
    events = list(companion.table_timeline(table))
    lines = [f"{'t_ms':>7}  {'cue':<7} {'pattern':<10} {'step':>4}  {'hand':<6} {'finger':<7} motor"]
    for event in events[:limit]:
        lines.append(
            f"{event.t_ms:>7}  {event.cue.text_id:<7} {f'{event.pattern} ' + table.pattern_label(event.pattern):<10} "
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
    print()
    transfer_examples()


# --------------------------------------------------------------------------
# Part 2: transfer protocol, captured from the band's real protocol handler


BAND_ID = 0x1A2B
BATTERY_PERCENT = 87.0  # the default of handcue-sim

# The message layouts of SPEC.md part 2 (§17, §18), written out field by field as
# (field, size in bytes).  "text" is a u8 length and that many UTF-8 bytes,
# "rest" is every remaining byte.  A dotted field names a nested decoded value.
HEADER_FIELDS = (("version", 1), ("kind", 1), ("opcode", 1), ("request_id", 1))
RESPONSE_HEAD_FIELDS = (("status", 1), ("detail", 1))
ERROR_FIELDS = (("reason", "text"),)
STATUS_FIELDS = (
    ("state", 1), ("step", 2), ("technique", 1), ("iteration", 1), ("hand", 1), ("finger", 1), ("elapsed_ms", 4),
    ("remaining_ms", 4), ("step_remaining_ms", 4), ("total_ms", 4), ("last_cue", 1), ("cues", 2), ("battery", 1),
)
REQUEST_FIELDS: dict[Opcode, tuple] = {opcode: () for opcode in Opcode}
REQUEST_FIELDS[Opcode.UPLOAD_BEGIN] = (("length", 4), ("crc32", 4))
REQUEST_FIELDS[Opcode.UPLOAD_DATA] = (("offset", 4), ("data", "rest"))
REQUEST_FIELDS[Opcode.SET_SETTINGS] = (("strength", 1),)
REQUEST_FIELDS[Opcode.SET_TIME] = (("unix_ms", 8),)
REQUEST_FIELDS[Opcode.HISTORY] = (("from_seq", 4), ("max_count", 1))
REQUEST_FIELDS[Opcode.PREVIEW] = (("strength", 1), ("kind", 1), ("segments", "rest"))
RESPONSE_FIELDS: dict[Opcode, tuple] = {
    Opcode.INFO: (
        ("band_id", 4), ("firmware.major", 1), ("firmware.minor", 1), ("firmware.patch", 1), ("protocol_version", 1),
        ("battery", 1), ("state", 1), ("max_table", 4), ("max_frame", 2), ("window", 1), ("has_routine", 1),
        ("routine_crc32", 4), ("routine_size", 2), ("routine_name", "text"), ("boot_outcome", 1),
    ),
    Opcode.UPLOAD_BEGIN: (("offset", 4), ("max_chunk", 2), ("window", 1)),
    Opcode.UPLOAD_DATA: (("offset", 4),),
    Opcode.UPLOAD_COMMIT: (("crc32", 4), ("total_ms", 4)),
    Opcode.ERASE: (),
    **{opcode: STATUS_FIELDS for opcode in (Opcode.START, Opcode.PAUSE, Opcode.RESUME, Opcode.SKIP, Opcode.STOP, Opcode.STATUS)},
    Opcode.SETTINGS: (("strength", 1),),
    Opcode.SET_SETTINGS: (("strength", 1),),
    Opcode.SET_TIME: (),
    Opcode.HISTORY: (("next_seq", 4), ("more", 1), ("records", "rest")),  # records: a u8 count, then 64-byte records (§17.10, §19.8)
    Opcode.CLEAR_HISTORY: (),
    Opcode.PREVIEW: (),
}
NOTIFICATION_FIELDS = {Opcode.STATUS: STATUS_FIELDS}
HANDS_WIRE_TEXT = ("none", "left", "right")
FINGERS_WIRE_TEXT = ("none", *FINGERS)


def named(enum: type[IntEnum], value: int) -> str:
    return f"{value} = {enum(value).name}" if value in enum._value2member_map_ else f"{value} (unknown)"


DESCRIBE = {
    "version": lambda v, m: f"{v} (PROTOCOL_VERSION)",
    "kind": lambda v, m: named(MessageKind, v),
    "opcode": lambda v, m: named(Opcode, v),
    "request_id": lambda v, m: {MessageKind.NOTIFICATION: f"{v} (always 0 in a notification)", MessageKind.RESPONSE: f"{v} (echoed)"}.get(m.kind, str(v)),
    "status": lambda v, m: named(Status, v),
    "detail": lambda v, m: named(TableError, v) if m.status == Status.TABLE_REFUSED else f"{v} (unused: 0)",
    "band_id": lambda v, m: f"0x{v:08X} (BLE name HandCue-{v:04X})",
    "firmware.major": lambda v, m: f"{v} (firmware {m.body.firmware.major}.{m.body.firmware.minor}.{m.body.firmware.patch})",
    "firmware.minor": lambda v, m: str(v),
    "firmware.patch": lambda v, m: str(v),
    "protocol_version": lambda v, m: str(v),
    "battery": lambda v, m: f"{v} %",
    "state": lambda v, m: named(BandState, v),
    "boot_outcome": lambda v, m: named(BootOutcome, v),
    "max_table": lambda v, m: f"{v} bytes",
    "max_frame": lambda v, m: f"{v} bytes per message",
    "window": lambda v, m: f"{v} UPLOAD_DATA frames in flight",
    "has_routine": lambda v, m: {0: "0 = no", 1: "1 = yes"}.get(v, str(v)),
    "routine_crc32": lambda v, m: f"0x{v:08X}",
    "routine_size": lambda v, m: f"{v} bytes",
    "length": lambda v, m: f"{v} bytes",
    "crc32": lambda v, m: f"0x{v:08X} = zlib.crc32(table)",
    "offset": lambda v, m: f"{v}" + (" (durably stored bytes)" if m.kind == MessageKind.RESPONSE else ""),
    "max_chunk": lambda v, m: f"{v} data bytes per UPLOAD_DATA",
    "total_ms": lambda v, m: f"{v} ms",
    "step": lambda v, m: "0xFFFF = none" if v == NO_STEP else f"record {v}",
    "technique": lambda v, m: f"{v} = {TechniqueCode(v).text_id}" if v else "0 = none",
    "iteration": lambda v, m: str(v),
    "hand": lambda v, m: f"{v} = {HANDS_WIRE_TEXT[v]}",
    "finger": lambda v, m: f"{v} = {FINGERS_WIRE_TEXT[v]}",
    "elapsed_ms": lambda v, m: f"{v} ms",
    "remaining_ms": lambda v, m: f"{v} ms",
    "step_remaining_ms": lambda v, m: f"{v} ms",
    "last_cue": lambda v, m: named(CueKind, v) if v else "0 = none",
    "cues": lambda v, m: str(v),
}


def message_fields(message: Message) -> tuple:
    if message.kind == MessageKind.REQUEST:
        return HEADER_FIELDS + REQUEST_FIELDS[message.opcode]
    if message.kind == MessageKind.NOTIFICATION:
        return HEADER_FIELDS + NOTIFICATION_FIELDS[message.opcode]
    body = RESPONSE_FIELDS[message.opcode] if message.status == Status.OK else ERROR_FIELDS
    return HEADER_FIELDS + RESPONSE_HEAD_FIELDS + body


def raw_body(data: bytes) -> dict:
    """The raw wire values of a message's body, read by the reference decoder with its body class's layout."""
    message = decode_message(data)
    if message.body is None:
        return {}
    head = MESSAGE_HEADER_SIZE + (2 if message.kind == MessageKind.RESPONSE else 0)
    return {k: v for k, v in type(message.body).layout.parse(data[head:]).items() if not k.startswith("_")}


def decoded(message: Message, body: dict, field: str) -> object:
    """What the reference decoder says ``field`` holds."""
    if field == "version":
        return PROTOCOL_VERSION
    if field in ("kind", "opcode", "request_id", "status", "detail", "reason"):
        return getattr(message, field)
    first, *rest = field.split(".")
    value = body[first]
    for part in rest:
        value = getattr(value, part)
    return value


def annotate(data: bytes) -> str:
    """Walk ``data`` with the offsets of SPEC.md part 2; every value must equal the decoder's."""
    message = decode_message(data)
    body = raw_body(data)
    d = Dump(data)
    offset = 0
    for field, size in message_fields(message):
        expected = decoded(message, body, field)
        if size == "text":
            length = data[offset]
            text = data[offset + 1 : offset + 1 + length].decode()
            assert text == expected, (field, text, expected)
            d.row(offset, 1 + length, field, f"len {length}, {text!r}")
            offset += 1 + length
        elif size == "rest":
            assert data[offset:] == expected, field
            d.row(offset, len(data) - offset, field, f"{len(data) - offset} bytes")
            offset = len(data)
        else:
            value = u(data, offset, size)
            assert value == expected, (field, value, expected)
            d.row(offset, size, field, DESCRIBE[field](value, message))
            offset += size
    assert offset == len(data), "bytes left over after the last field"
    return d.text()


def hex_lines(data: bytes, indent: str = "    ") -> list[str]:
    return [indent + data[start : start + 16].hex(" ") for start in range(0, len(data), 16)] or [indent + "(none)"]


def frame_text(message: bytes, wire: bytes) -> str:
    """The CRC and the COBS wire bytes of one message (asserting the framing layout of §15)."""
    crc = crc16(message)
    assert wire == encode_frame(message), "the band's frame differs from encode_frame"
    assert wire[0] == wire[-1] == 0 and 0 not in wire[1:-1]
    assert FrameParser(1024).feed(wire) == [message]
    lines = [f"CRC-16/IBM-3740 over the {len(message)} message bytes = 0x{crc:04X}, appended little endian: {crc.to_bytes(2, 'little').hex(' ')}",
             f"wire: 00 || COBS(message || CRC) || 00 = {len(wire)} bytes"]
    return "\n".join(lines + hex_lines(wire))


def show(title: str, message: bytes, wire: bytes | None = None) -> None:
    """Print one message: hex, field-by-field dump, frame."""
    print(f"-- {title} --")
    print(f"message, {len(message)} bytes:")
    print("\n".join(hex_lines(message)))
    print(annotate(message))
    print(frame_text(message, encode_frame(message) if wire is None else wire))
    print()


def one_line(message: bytes) -> str:
    """A short summary of a message: kind, opcode, id, status, and the field values."""
    m = decode_message(message)
    text = f"{m.kind.name.lower()} {m.opcode.name} id {m.request_id}"
    if m.kind == MessageKind.RESPONSE:
        text += f" {m.status.name}"
        if m.status != Status.OK:
            return text + f" detail {m.detail} reason {m.reason!r}"
    fields = {k: f"{len(v)} bytes" if isinstance(v, bytes) else f"0x{v:08X}" if "crc32" in k else v for k, v in raw_body(message).items()}
    return text + (" " + " ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")


class Bench:
    """A simulated band on a virtual clock, its protocol handler, and a link that captures what it sends."""

    def __init__(self, table: bytes) -> None:
        self.clock = VirtualClock()
        storage = Storage(Flash(FLASH_SIZE))
        storage.begin_upload(len(table), zlib.crc32(table))
        storage.write_chunk(0, table)
        storage.commit()
        storage = Storage(storage.flash)  # power the band up holding the routine: its boot found it intact
        self.band = Band(storage, self.clock, band_id=BAND_ID, battery_percent=BATTERY_PERCENT)
        self.handler = ProtocolHandler(self.band)
        self.sent: list[bytes] = []
        self.handler.attach("serial", self.sent.append)

    def send(self, wire: bytes) -> list[tuple[bytes, bytes]]:
        """Feed wire bytes to the band; returns what it sent back as (message, wire frame) pairs."""
        self.handler.receive("serial", wire)
        return self.collect()

    def request(self, request: Request, request_id: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        message = encode_request(request, request_id)
        return message, self.send(encode_frame(message))

    def collect(self) -> list[tuple[bytes, bytes]]:
        replies = []
        for wire in self.sent:  # the frames the band sends for one received chunk go out together
            messages = FrameParser(1024).feed(wire)
            assert b"".join(encode_frame(message) for message in messages) == wire, "whole frames, one after another"
            replies.extend((message, encode_frame(message)) for message in messages)
        self.sent.clear()
        return replies


def only_response(replies: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    assert len(replies) == 1 and decode_message(replies[0][0]).kind == MessageKind.RESPONSE, replies
    return replies[0]


def transfer_examples() -> None:
    nausea = companion.load_routine("nausea-pc6")
    with_names = companion.compile_routine(nausea, names=True)
    without = companion.compile_routine(nausea, names=False)

    print("== Part 2: CRC-16/IBM-3740 catalogue check: crc16(b'123456789') ==")
    print(f"0x{crc16(b'123456789'):04X}")
    print()

    bench = Bench(with_names)
    print(f"== Part 2: band 0x{BAND_ID:04X}, battery {BATTERY_PERCENT:g} %, holding nausea-pc6 with names "
          f"({len(with_names)} bytes, CRC-32 0x{zlib.crc32(with_names):08X}), idle ==")
    print()

    # INFO
    request, replies = bench.request(InfoRequest(), 1)
    show("INFO request, id 1 (companion -> band)", request)
    response, wire = only_response(replies)
    show("INFO response (band -> companion)", response, wire)

    # UPLOAD_BEGIN: replace the routine with the names-free table of §13.2
    crc = zlib.crc32(without)
    request, replies = bench.request(UploadBeginRequest(length=len(without), crc32=crc), 2)
    show(f"UPLOAD_BEGIN request, id 2: the {len(without)}-byte table of §13.2", request)
    response, wire = only_response(replies)
    show("UPLOAD_BEGIN response: start at offset 0, chunks of at most max_chunk, window", response, wire)

    # UPLOAD_DATA with a lost frame and go-back-N (40-byte chunks to keep the example short)
    chunk = 40
    print(f"== UPLOAD_DATA in {chunk}-byte chunks (a real companion sends all {len(without)} bytes in one frame) ==")
    first = encode_request(UploadDataRequest(offset=0, data=without[:chunk]), 3)
    second = encode_request(UploadDataRequest(offset=chunk, data=without[chunk:]), 4)
    damaged = bytearray(encode_frame(first))
    position = 21  # the same byte of the message as before the leading delimiter
    damaged[position] = 0xFF if damaged[position] != 0xFF else 0xFE  # line noise; stays non-zero
    before = bench.handler.stats
    replies = bench.send(bytes(damaged) + encode_frame(second))
    after = bench.handler.stats
    dropped = {key: getattr(after, key) - getattr(before, key) for key in ("bad_crc", "bad_cobs", "oversized") if getattr(after, key) != getattr(before, key)}
    assert sum(dropped.values()) == 1
    print(f"companion sends id 3 (offset 0, {chunk} bytes) and id 4 (offset {chunk}, {len(without) - chunk} bytes) back to back;")
    print(f"byte {position} of frame id 3 is damaged on the line: the band drops it, counts it ({', '.join(f'{k} +{v}' for k, v in dropped.items())}) and sends nothing.")
    response, _ = only_response(replies)
    ack = decode_message(response).body
    assert isinstance(ack, UploadDataResponse) and ack.offset == 0
    print(f"id 4 arrives out of order: dropped, acknowledged with the durable offset: {response.hex(' ')}")
    print(f"    = {one_line(response)}")
    print(f"the ack of id 4 ({ack.offset}) does not cover id 4 (ends at {len(without)}): the companion goes back to offset 0.")
    print()
    request, replies = bench.request(UploadDataRequest(offset=0, data=without[:chunk]), 5)
    show(f"UPLOAD_DATA request, id 5: offset 0, {chunk} bytes (table bytes 0..{chunk - 1})", request)
    response, wire = only_response(replies)
    show(f"UPLOAD_DATA response (cumulative ack): {chunk} bytes stored", response, wire)
    request, replies = bench.request(UploadDataRequest(offset=chunk, data=without[chunk:]), 6)
    response, _ = only_response(replies)
    print(f"id 6 (offset {chunk}, {len(without) - chunk} bytes): {request.hex(' ')}")
    print(f"    ack: {response.hex(' ')} = {one_line(response)}")
    print()

    # UPLOAD_COMMIT, accepted
    request, replies = bench.request(UploadCommitRequest(), 7)
    show("UPLOAD_COMMIT request, id 7", request)
    assert [decode_message(m).kind for m, _ in replies] == [MessageKind.NOTIFICATION, MessageKind.RESPONSE]
    notification, _ = replies[0]
    print("the band reloads and first sends a STATUS notification (§18.2), then the response:")
    print(f"    {notification.hex(' ')}")
    print(f"    = {one_line(notification)}")
    print()
    response, wire = replies[1]
    show("UPLOAD_COMMIT response: verified, stored, active", response, wire)

    # UPLOAD_COMMIT, refused
    bad = bytearray(without)
    bad[25] = 99  # record 0's technique byte names no technique ...
    bad[4:8] = table_crc(bad).to_bytes(4, "little")  # ... in a table whose own CRC is right
    bad_crc = zlib.crc32(bad)
    print("== a refused table: §13.2 with record 0's technique byte (offset 25) set to 99 and the table CRC fixed ==")
    for typed, request_id in ((UploadBeginRequest(length=len(bad), crc32=bad_crc), 8), (UploadDataRequest(offset=0, data=bytes(bad)), 9)):
        request, replies = bench.request(typed, request_id)
        response, _ = only_response(replies)
        print(f"{one_line(request)}")
        print(f"    -> {one_line(response)}")
    print()
    request, replies = bench.request(UploadCommitRequest(), 10)
    show("UPLOAD_COMMIT request, id 10", request)
    response, wire = only_response(replies)
    show("UPLOAD_COMMIT response: TABLE_REFUSED, detail = TableError", response, wire)
    request, replies = bench.request(InfoRequest(), 11)
    info = decode_message(only_response(replies)[0]).body
    assert isinstance(info, InfoResponse) and info.routine_crc32 == crc
    print(f"INFO id 11 afterwards: routine_crc32 0x{info.routine_crc32:08X}, routine_size {info.routine_size}: the table of id 7 stays active.")
    print()

    # START: notifications, then the response
    request, replies = bench.request(StartRequest(), 12)
    show("START request, id 12", request)
    kinds = [decode_message(m).kind for m, _ in replies]
    assert kinds == [MessageKind.NOTIFICATION, MessageKind.NOTIFICATION, MessageKind.RESPONSE], kinds
    print("the band sends, in this order:")
    print(f"    notification for the START cue:        {replies[0][0].hex(' ')}")
    print(f"    notification for the state change:     {replies[1][0].hex(' ')}")
    print("    then the response:")
    print()
    response, wire = replies[2]
    show("START response: the STATUS body after the command", response, wire)

    # A notification at the first tick
    bench.clock.set(30_000)
    bench.band.process()
    [(notification, wire)] = bench.collect()
    show("STATUS notification at routine time 30000 ms (first TICK cue; sent unasked)", notification, wire)

    # Errors
    request, replies = bench.request(ResumeRequest(), 13)
    show("RESUME request, id 13, while the band is running", request)
    response, wire = only_response(replies)
    show("error response: BAD_STATE, no body but the reason", response, wire)

    print("== more error responses (header, status, detail | reason) ==")
    erase = encode_request(EraseRequest(), 14)
    cases = [
        ("ERASE while a routine plays", erase),
        ("UPLOAD_COMMIT while a routine plays, no upload", encode_request(UploadCommitRequest(), 15)),
        ("protocol version 2", bytes([2, MessageKind.REQUEST, Opcode.STATUS, 16])),
        ("opcode 0x0F (unknown)", bytes([PROTOCOL_VERSION, MessageKind.REQUEST, 0x0F, 17])),
        ("UPLOAD_BEGIN with 3 of its 8 body bytes", encode_request(UploadBeginRequest(length=len(without), crc32=crc), 18)[:7]),
        ("INFO with a trailing byte", encode_request(InfoRequest(), 19) + b"\x00"),
        ("2 bytes (shorter than the header)", bytes([PROTOCOL_VERSION, MessageKind.REQUEST])),
        ("a response sent to the band", bytes([PROTOCOL_VERSION, MessageKind.RESPONSE, Opcode.STATUS, 20, 0, 0])),
    ]
    for label, message in cases:
        replies = bench.send(encode_frame(message))
        print(f"{label}: {message.hex(' ')}")
        if not replies:
            print("    -> no answer (the band only answers requests)")
            continue
        # Raw bytes: the reference decoder cannot decode a response naming an opcode it does not know.
        assert len(replies) == 1
        response = replies[0][0]
        echoed = (message[2], message[3]) if len(message) >= 4 else (0, 0)  # too short: opcode 0, id 0
        assert (response[0], response[1], response[2], response[3]) == (PROTOCOL_VERSION, MessageKind.RESPONSE, *echoed)
        reason = ErrorBody.parse(response[6:]).reason
        print(f"    -> {response[:6].hex(' ')} | {response[6]:02x} {reason!r}")
        print(f"       = {named(Status, response[4])}")
    print()
    ack_wait_examples()
    ble_advertising_examples()


ACK_ROUTINE = """
name = "ack example"
hands = "left"
finish_ack = true
[[steps]]
technique = "warm_up"
duration = 10
ack = true
[[steps]]
technique = "palm_spread"
duration = 20
"""
"""Step 1 (10 s) and the finish wait for the wearer's press (§12.10)."""


def ack_wait_examples() -> None:
    """STATUS while the band waits for the wearer's press: state WAITING (4), step_remaining_ms = time to the give-up."""
    from companion.routine import checked, parse_routine
    from firmware_sim.band import Button

    table = companion.compile_routine(checked(*parse_routine(ACK_ROUTINE, "ack.toml")), names=False)
    bench = Bench(table)
    print(f"== Part 2: acknowledgement waits (§12.10): the band holds a {len(table)}-byte format 2 table whose step 1 "
          "(warm_up, 10 s, left hand) and finish wait for a press ==")
    print()
    _, replies = bench.request(StartRequest(), 21)
    kinds = [decode_message(m).kind for m, _ in replies]
    assert kinds == [MessageKind.NOTIFICATION, MessageKind.NOTIFICATION, MessageKind.RESPONSE], kinds
    assert all(decode_message(m).body.state == BandState.WAITING for m, _ in replies)  # type: ignore[union-attr]
    print("START, id 21: step 1 fires its START cue and waits; the band sends, in this order:")
    print(f"    notification for the START cue:        {replies[0][0].hex(' ')}")
    print(f"    notification for the state change:     {replies[1][0].hex(' ')}")
    print(f"    the response:                          {replies[2][0].hex(' ')}")
    print()
    bench.clock.set(18_000)
    bench.band.process()
    repeats = bench.collect()  # the repeats at 5, 10 and 15 s: one notification each
    assert len(repeats) == 3
    _, replies = bench.request(StatusRequest(), 22)
    response, wire = only_response(replies)
    show("STATUS response, id 22, at routine time 18000 ms: waiting for a press, the band gives up in 42000 ms", response, wire)
    bench.band.press(Button.PRESS)
    [(notification, wire)] = bench.collect()
    assert decode_message(notification).body.state == BandState.RUNNING  # type: ignore[union-attr]
    print("the wearer presses at 18000 ms: the state notification (no cue), step 1's 10 s run from now:")
    print(f"    {notification.hex(' ')}")
    print(f"    = {one_line(notification)}")
    print()
    bench.clock.set(18_000 + 30_000)
    bench.band.process()
    done = bench.collect()
    print("at 48000 ms step 2 ends and the finish waits: the DONE cue's notification, then the state's (step 0xFFFF):")
    for message, _ in done[-2:]:
        assert decode_message(message).body.state == BandState.WAITING  # type: ignore[union-attr]
        print(f"    {message.hex(' ')}")
    print(f"    = {one_line(done[-1][0])}")
    print()
    bench.clock.set(18_000 + 30_000 + 60_000)
    bench.band.process()
    finished = bench.collect()
    print("nobody presses: at 108000 ms (60000 ms after the first DONE cue) the band gives up and finishes:")
    print(f"    {finished[-1][0].hex(' ')}")
    print(f"    = {one_line(finished[-1][0])}")
    print()


AD_TYPES = {0x01: "Flags", 0x07: "Complete List of 128-bit Service UUIDs", 0x09: "Complete Local Name", 0x16: "Service Data - 16-bit UUID"}


def ad_rows(data: bytes) -> list[str]:
    """Walk the AD structures (length, type, value) of advertising or scan response data."""
    lines = []
    offset = 0
    while offset < len(data):
        length, ad_type = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 1 + length]
        if ad_type == 0x01:
            meaning = f"0x{value[0]:02X}: LE General Discoverable, BR/EDR not supported"
            assert value == b"\x06"
        elif ad_type == 0x07:
            uuid = value[::-1].hex()
            uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
            assert uuid == BleUuid.SERVICE
            meaning = f"{uuid} (BleUuid.SERVICE, bytes little endian)"
        elif ad_type == 0x16:
            assert value[:2] == (0x180F).to_bytes(2, "little")
            meaning = f"UUID 0x180F (Battery), level {value[2]} %"
        elif ad_type == 0x09:
            meaning = repr(value.decode())
        else:
            raise AssertionError(f"unexpected AD type 0x{ad_type:02X}")
        lines.append(f"{offset:>6}  len {length:>2}  type 0x{ad_type:02X} {AD_TYPES[ad_type]}")
        lines.extend(f"{'':>8}{value[start : start + 16].hex(' ')}" for start in range(0, len(value), 16))
        lines.append(f"{'':>8}= {meaning}")
        offset += 1 + length
    assert offset == len(data)
    return lines


def ble_advertising_examples() -> None:
    from firmware_sim.ble_peripheral import LEGACY_ADV_MAX, build_advertising_data, build_scan_response_data

    name = f"{BLE_NAME_PREFIX}{BAND_ID:04X}"
    advertising = build_advertising_data(battery_percent=round(BATTERY_PERCENT))
    scan_response = build_scan_response_data(name)
    assert len(advertising) <= LEGACY_ADV_MAX and len(scan_response) <= LEGACY_ADV_MAX
    print(f"== Part 2: BLE advertising data of band 0x{BAND_ID:04X} (battery {BATTERY_PERCENT:g} %), {len(advertising)} bytes ==")
    print(advertising.hex(" "))
    print("\n".join(ad_rows(advertising)))
    print(f"== Part 2: BLE scan response data, {len(scan_response)} bytes ==")
    print(scan_response.hex(" "))
    print("\n".join(ad_rows(scan_response)))


if __name__ == "__main__":
    main()
