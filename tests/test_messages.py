"""Messages of the transfer protocol (SPEC.md part 2): golden bytes of every layout.

Every expected byte string below was written by hand from the layout tables of
SPEC.md §16-§18 (little endian, one field per string fragment), not printed by
the code under test.  Each golden is checked both ways: the encoder must produce
it, and ``decode_message`` must read the hand-written field values back.
Malformed messages are checked through ``decode_message`` and through the
band's ``ProtocolHandler.handle``.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from companion import compile_routine, load_routine
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.constants import (
    DEFAULT_UPLOAD_WINDOW,
    MAX_FRAME_PAYLOAD,
    MESSAGE_HEADER_SIZE,
    PROTOCOL_VERSION,
    BandState,
    BleUuid,
    MessageKind,
    Opcode,
    Status,
)
from protocol.framing import FrameParser, encode_frame
from protocol.messages import MessageError, StatusReport, decode_message, encode_notification, encode_request, encode_response
from protocol.table import table_crc

# --------------------------------------------------------------------------
# Hand-derived goldens

# STATUS body (§18.1): paused, record 0x0102, technique 7 (finger_squeeze), iteration 3,
# right hand (2), ring finger (wire 4 = FINGERS index 3 + 1), elapsed 0x00012345 ms,
# remaining 0x0A0B0C0D ms, step remaining 1000 ms, total 0xFFFFFFFF ms, last cue WARN (2),
# 0x1234 cues, battery 100 %.
STATUS_REPORT = StatusReport(state="paused", step=0x0102, technique="finger_squeeze", iteration=3, hand="right", finger="ring",
                             elapsed_ms=0x12345, remaining_ms=0x0A0B0C0D, step_remaining_ms=1000, total_ms=0xFFFFFFFF, last_cue="warn",
                             cues=0x1234, battery=100)
STATUS_WIRE = dict(state=2, step=0x0102, technique=7, iteration=3, hand=2, finger=4, elapsed_ms=0x12345, remaining_ms=0x0A0B0C0D,
                   step_remaining_ms=1000, total_ms=0xFFFFFFFF, last_cue=2, cues=0x1234, battery=100)
STATUS_BODY = "02" "0201" "07" "03" "02" "04" "45230100" "0d0c0b0a" "e8030000" "ffffffff" "02" "3412" "64"

INFO_VALUES = dict(band_id=0x1A2B, firmware=dict(major=1, minor=2, patch=3), protocol_version=1, battery=87, state=2, max_table=32768,
                   max_frame=512, window=8, has_routine=1, routine_crc32=0xD5BF511B, routine_size=124, routine_name="PC6")
INFO_BODY = "2b1a0000" "010203" "01" "57" "02" "00800000" "0002" "08" "01" "1b51bfd5" "7c00" "03" "504336"

# (opcode, request id, fields, hand-written message hex)
REQUESTS = [
    (Opcode.INFO, 0x21, {}, "01" "00" "01" "21"),
    (Opcode.UPLOAD_BEGIN, 0x22, dict(length=300, crc32=0xDEADBEEF), "01" "00" "02" "22" "2c010000" "efbeadde"),
    (Opcode.UPLOAD_DATA, 0x23, dict(offset=0x01020304, data=b"\x00\xffHC"), "01" "00" "03" "23" "04030201" "00ff4843"),
    (Opcode.UPLOAD_COMMIT, 0x25, {}, "01" "00" "04" "25"),
    (Opcode.ERASE, 0x26, {}, "01" "00" "05" "26"),
    (Opcode.START, 0x27, {}, "01" "00" "06" "27"),
    (Opcode.PAUSE, 0x28, {}, "01" "00" "07" "28"),
    (Opcode.RESUME, 0x29, {}, "01" "00" "08" "29"),
    (Opcode.SKIP, 0x2A, {}, "01" "00" "09" "2a"),
    (Opcode.STOP, 0x2B, {}, "01" "00" "0a" "2b"),
    (Opcode.STATUS, 0x2C, {}, "01" "00" "0b" "2c"),
]

# (opcode, request id, fields given to encode_response, decoded fields, hand-written message hex)
RESPONSES = [
    (Opcode.INFO, 0x21, INFO_VALUES, INFO_VALUES, "01" "01" "01" "21" "00" "00" + INFO_BODY),
    (Opcode.UPLOAD_BEGIN, 0x22, dict(offset=200, max_chunk=248, window=8), dict(offset=200, max_chunk=248, window=8),
     "01" "01" "02" "22" "00" "00" "c8000000" "f800" "08"),
    (Opcode.UPLOAD_DATA, 0x23, dict(offset=0x01020308), dict(offset=0x01020308), "01" "01" "03" "23" "00" "00" "08030201"),
    (Opcode.UPLOAD_COMMIT, 0x25, dict(crc32=0xE1820AFD, total_ms=600_000), dict(crc32=0xE1820AFD, total_ms=600_000),
     "01" "01" "04" "25" "00" "00" "fd0a82e1" "c0270900"),
    (Opcode.ERASE, 0x26, {}, {}, "01" "01" "05" "26" "00" "00"),
    *[(opcode, request_id, STATUS_REPORT.to_fields(), STATUS_WIRE, "01" "01" + f"{opcode:02x}{request_id:02x}" + "00" "00" + STATUS_BODY)
      for opcode, request_id in ((Opcode.START, 0x27), (Opcode.PAUSE, 0x28), (Opcode.RESUME, 0x29), (Opcode.SKIP, 0x2A),
                                 (Opcode.STOP, 0x2B), (Opcode.STATUS, 0x2C))],
]


def plain(value: Any) -> Any:
    """A decoded construct container as plain dicts, without construct's private keys."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if not key.startswith("_")}
    return value


# --------------------------------------------------------------------------
# Numbers the layouts depend on


def test_codes_and_sizes_are_the_ones_in_the_spec():
    assert (PROTOCOL_VERSION, MESSAGE_HEADER_SIZE, MAX_FRAME_PAYLOAD, DEFAULT_UPLOAD_WINDOW) == (1, 4, 256, 8)
    assert {kind.name: kind.value for kind in MessageKind} == {"REQUEST": 0, "RESPONSE": 1, "NOTIFICATION": 2}
    assert {opcode.name: opcode.value for opcode in Opcode} == {
        "INFO": 1, "UPLOAD_BEGIN": 2, "UPLOAD_DATA": 3, "UPLOAD_COMMIT": 4, "ERASE": 5, "START": 6,
        "PAUSE": 7, "RESUME": 8, "SKIP": 9, "STOP": 10, "STATUS": 11,
    }
    assert {status.name: status.value for status in Status} == {
        "OK": 0, "UNKNOWN_REQUEST": 1, "BAD_REQUEST": 2, "UNSUPPORTED_VERSION": 3, "BAD_STATE": 4, "NO_ROUTINE": 5,
        "BUSY": 6, "TOO_LARGE": 7, "NO_UPLOAD": 8, "BAD_OFFSET": 9, "TABLE_REFUSED": 10, "FLASH_FAILURE": 11,
    }
    assert {state.name: state.value for state in BandState} == {"IDLE": 0, "RUNNING": 1, "PAUSED": 2, "FINISHED": 3}
    assert (BleUuid.SERVICE, BleUuid.RX, BleUuid.TX) == (
        "6e400001-b5a3-f393-e0a9-e50e24dcca9e", "6e400002-b5a3-f393-e0a9-e50e24dcca9e", "6e400003-b5a3-f393-e0a9-e50e24dcca9e",
    )
    assert (BleUuid.DEVICE_INFORMATION, BleUuid.BATTERY, BleUuid.BATTERY_LEVEL) == (
        "0000180a-0000-1000-8000-00805f9b34fb", "0000180f-0000-1000-8000-00805f9b34fb", "00002a19-0000-1000-8000-00805f9b34fb",
    )


def test_goldens_cover_every_opcode():
    assert sorted(opcode for opcode, *_ in REQUESTS) == sorted(Opcode)
    assert sorted(opcode for opcode, *_ in RESPONSES) == sorted(Opcode)


# --------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize(("opcode", "request_id", "fields", "golden"), REQUESTS, ids=[r[0].name for r in REQUESTS])
def test_request_golden_bytes(opcode, request_id, fields, golden):
    assert encode_request(opcode, request_id, **fields).hex() == golden


@pytest.mark.parametrize(("opcode", "request_id", "fields", "golden"), REQUESTS, ids=[r[0].name for r in REQUESTS])
def test_request_decodes_to_its_fields(opcode, request_id, fields, golden):
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.REQUEST, opcode, request_id)
    assert plain(message.body) == fields


def test_upload_data_may_carry_no_data():
    golden = "01" "00" "03" "24" "f8000000"
    assert encode_request(Opcode.UPLOAD_DATA, 0x24, offset=248, data=b"").hex() == golden
    assert plain(decode_message(bytes.fromhex(golden)).body) == dict(offset=248, data=b"")


def test_request_id_uses_the_whole_byte():
    assert encode_request(Opcode.STATUS, 0).hex() == "01" "00" "0b" "00"
    assert encode_request(Opcode.STATUS, 255).hex() == "01" "00" "0b" "ff"
    assert decode_message(bytes.fromhex("01000bff")).request_id == 255


def test_wire_frame_of_info_request():
    # message 01 00 01 01, CRC-16/IBM-3740 0xD164 appended little endian: 01 00 01 01 64 d1.
    # COBS: block "01" ends at the zero -> 02 01; block "01 01 64 d1" runs to the end -> 05 01 01 64 d1; delimiter 00.
    assert encode_frame(bytes.fromhex("01000101")).hex() == "02" "01" "05" "010164d1" "00"


# --------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize(("opcode", "request_id", "fields", "wire", "golden"), RESPONSES, ids=[r[0].name for r in RESPONSES])
def test_ok_response_golden_bytes(opcode, request_id, fields, wire, golden):
    assert encode_response(opcode, request_id, **fields).hex() == golden


@pytest.mark.parametrize(("opcode", "request_id", "fields", "wire", "golden"), RESPONSES, ids=[r[0].name for r in RESPONSES])
def test_ok_response_decodes_to_its_fields(opcode, request_id, fields, wire, golden):
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.RESPONSE, opcode, request_id)
    assert (message.status, message.detail, message.reason) == (Status.OK, 0, "")
    assert plain(message.body) == wire


def test_info_response_without_routine_has_an_empty_name():
    fields = dict(INFO_VALUES, state=0, has_routine=0, routine_crc32=0, routine_size=0, routine_name="")
    golden = "01" "01" "01" "07" "00" "00" "2b1a0000" "010203" "01" "57" "00" "00800000" "0002" "08" "00" "00000000" "0000" "00"
    assert encode_response(Opcode.INFO, 7, **fields).hex() == golden
    assert decode_message(bytes.fromhex(golden)).body.routine_name == ""


def test_status_body_idle_values_and_saturated_cue_count():
    report = StatusReport(state="idle", step=None, technique=None, iteration=0, hand=None, finger=None, elapsed_ms=0, remaining_ms=0,
                          step_remaining_ms=0, total_ms=600_000, last_cue=None, cues=70_000, battery=5)
    body = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "c0270900" "00" "ffff" "05"
    assert encode_response(Opcode.STATUS, 1, **report.to_fields()).hex() == "01" "01" "0b" "01" "00" "00" + body


def test_idle_status_body_reads_back_as_idle():
    body = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "c0270900" "00" "ffff" "05"
    assert StatusReport.from_body(decode_message(bytes.fromhex("01" "01" "0b" "01" "00" "00" + body)).body) == StatusReport(
        "idle", None, None, 0, None, None, 0, 0, 0, 600_000, None, 0xFFFF, 5)


def test_status_body_reads_back_as_the_same_report():
    assert StatusReport.from_body(decode_message(bytes.fromhex("01" "02" "0b" "00" + STATUS_BODY)).body) == STATUS_REPORT


def test_status_body_codes_a_companion_does_not_know_read_as_none():
    # state 9, technique 99, hand 3, finger 6, last cue 8: all beyond this protocol version's enumerations
    body = "09" "0000" "63" "00" "03" "06" "00000000" "00000000" "00000000" "00000000" "08" "0000" "64"
    report = StatusReport.from_body(decode_message(bytes.fromhex("01" "02" "0b" "00" + body)).body)
    assert (report.state, report.technique, report.hand, report.finger, report.last_cue) == ("state 9", None, None, None, None)


def test_status_notification_golden_bytes():
    golden = "01" "02" "0b" "00" + STATUS_BODY  # no status/detail bytes; request id 0
    assert encode_notification(Opcode.STATUS, **STATUS_REPORT.to_fields()).hex() == golden
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id, message.status) == (MessageKind.NOTIFICATION, Opcode.STATUS, 0, Status.OK)
    assert plain(message.body) == STATUS_WIRE


@pytest.mark.parametrize(
    ("opcode", "request_id", "status", "detail", "reason", "golden"),
    [
        (Opcode.PAUSE, 0x28, Status.BAD_STATE, 0, "idle", "01" "01" "07" "28" "04" "00" "04" "69646c65"),
        (Opcode.UPLOAD_COMMIT, 0x25, Status.TABLE_REFUSED, 7, "rec 0", "01" "01" "04" "25" "0a" "07" "05" "7265632030"),
        (Opcode.START, 0x27, Status.NO_ROUTINE, 0, "", "01" "01" "06" "27" "05" "00" "00"),
        (Opcode.UPLOAD_DATA, 0x23, Status.FLASH_FAILURE, 0, "é", "01" "01" "03" "23" "0b" "00" "02" "c3a9"),
    ],
)
def test_error_response_golden_bytes(opcode, request_id, status, detail, reason, golden):
    assert encode_response(opcode, request_id, status, detail, reason).hex() == golden
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.RESPONSE, opcode, request_id)
    assert (message.status, message.detail, message.reason) == (status, detail, reason)
    assert plain(message.body) == {}


def test_error_reason_is_cut_to_255_bytes_on_a_character_boundary():
    message = encode_response(Opcode.INFO, 1, Status.BUSY, reason="é" * 200)  # 400 bytes of UTF-8
    assert message[:7].hex() == "01" "01" "01" "01" "06" "00" "fe"  # 127 characters = 254 bytes
    assert message[7:] == "é".encode() * 127
    ascii_message = encode_response(Opcode.INFO, 1, Status.BUSY, reason="a" * 300)
    assert ascii_message[:7].hex() == "01" "01" "01" "01" "06" "00" "ff" and ascii_message[7:] == b"a" * 255


def test_error_status_replaces_the_ok_body():
    # An INFO error carries no INFO fields at all, only the reason.
    assert encode_response(Opcode.INFO, 3, Status.UNSUPPORTED_VERSION, reason="v").hex() == "01" "01" "01" "03" "03" "00" "01" "76"


# --------------------------------------------------------------------------
# Malformed messages: decode_message


@pytest.mark.parametrize("data", ["", "01", "0100", "010001"])
def test_short_header_is_bad_request(data):
    with pytest.raises(MessageError) as error:
        decode_message(bytes.fromhex(data))
    assert (error.value.status, error.value.opcode, error.value.request_id) == (Status.BAD_REQUEST, 0, 0)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_is_unsupported_version(version):
    with pytest.raises(MessageError) as error:
        decode_message(bytes([version, 0, Opcode.STATUS, 5]))
    assert (error.value.status, error.value.opcode, error.value.request_id) == (Status.UNSUPPORTED_VERSION, Opcode.STATUS, 5)


@pytest.mark.parametrize(
    ("data", "opcode"),
    [
        ("01" "00" "63" "05", 0x63),  # unknown opcode
        ("01" "00" "00" "05", 0),  # opcode 0 is not assigned
        ("01" "00" "0c" "05", 12),  # the first opcode after STATUS
        ("01" "03" "01" "05", 1),  # unknown message kind
        ("01" "02" "01" "05", 1),  # a notification other than STATUS
    ],
)
def test_unknown_opcode_or_kind_is_unknown_request(data, opcode):
    with pytest.raises(MessageError) as error:
        decode_message(bytes.fromhex(data))
    assert (error.value.status, error.value.opcode, error.value.request_id) == (Status.UNKNOWN_REQUEST, opcode, 5)


@pytest.mark.parametrize(
    ("data", "opcode"),
    [
        ("01" "00" "02" "05" "2c0100", Opcode.UPLOAD_BEGIN),  # length cut short, no crc32
        ("01" "00" "02" "05" "2c010000" "efbead", Opcode.UPLOAD_BEGIN),  # crc32 cut short
        ("01" "00" "02" "05" "2c010000" "efbeadde" "00", Opcode.UPLOAD_BEGIN),  # a byte too many
        ("01" "00" "03" "05" "040302", Opcode.UPLOAD_DATA),  # offset cut short
        ("01" "00" "01" "05" "00", Opcode.INFO),  # an empty body must be empty
        ("01" "00" "0b" "05" "00", Opcode.STATUS),
        ("01" "01" "0b" "05" "00", Opcode.STATUS),  # response without detail
        ("01" "01" "03" "05" "00" "00" "080302", Opcode.UPLOAD_DATA),  # ack cut short
        ("01" "01" "03" "05" "00" "00" "08030201" "00", Opcode.UPLOAD_DATA),  # ack with a byte too many
        ("01" "01" "01" "05" "00" "00" + INFO_BODY[:-2], Opcode.INFO),  # name cut short
        ("01" "01" "01" "05" "00" "00" + INFO_BODY[:-6] + "ff4336", Opcode.INFO),  # name not UTF-8
        ("01" "01" "07" "05" "04" "00", Opcode.PAUSE),  # error without its reason length
        ("01" "01" "07" "05" "04" "00" "05" "69646c65", Opcode.PAUSE),  # reason shorter than its length
        ("01" "02" "0b" "00" + STATUS_BODY[:-2], Opcode.STATUS),  # notification without battery
    ],
)
def test_truncated_or_overlong_body_is_bad_request(data, opcode):
    with pytest.raises(MessageError) as error:
        decode_message(bytes.fromhex(data))
    assert (error.value.status, error.value.opcode, error.value.request_id) == (Status.BAD_REQUEST, opcode, int(data[6:8], 16))


def test_unknown_status_in_a_response_is_an_error():
    message = decode_message(bytes.fromhex("01" "01" "0b" "05" "2a" "00" "01" "78"))  # status 42 from newer firmware
    assert message.status != Status.OK and message.reason == "x"


# --------------------------------------------------------------------------
# The band's handler: malformed input gets an error response, stray messages none


@pytest.fixture
def handler() -> ProtocolHandler:
    band = Band(storage_with(compile_routine(load_routine("nausea-pc6"))), VirtualClock())
    return ProtocolHandler(band)


def error_head(response: bytes | None) -> str:
    """The first six bytes (header, status, detail) of an error response; checks the reason is well formed."""
    assert response is not None
    assert response[6] == len(response) - 7 > 0, "a reason of reason-length bytes, not empty"
    response[7:].decode()
    return response[:6].hex()


@pytest.mark.parametrize(
    ("data", "head"),
    [
        ("", "01" "01" "00" "00" "02" "00"),  # short: opcode 0, id 0
        ("0100", "01" "01" "00" "00" "02" "00"),
        ("02000b05", "01" "01" "0b" "05" "03" "00"),  # answered in the band's own version 1
        ("01006305", "01" "01" "63" "05" "01" "00"),
        ("01000005", "01" "01" "00" "05" "01" "00"),
        ("01000205" "2c0100", "01" "01" "02" "05" "02" "00"),
        ("01000305" "040302", "01" "01" "03" "05" "02" "00"),
        ("01000105" "00", "01" "01" "01" "05" "02" "00"),
    ],
)
def test_handler_answers_malformed_requests(handler, data, head):
    assert error_head(handler.handle("serial", bytes.fromhex(data))) == head


@pytest.mark.parametrize(
    "data",
    [
        "01" "01" "0b" "05" "00" "00" + STATUS_BODY,  # a response
        "01" "02" "0b" "00" + STATUS_BODY,  # a notification
        "01" "01" "0b" "05",  # a malformed response
        "02" "01" "0b" "05",  # a response in another version
        "01" "03" "01" "05",  # an unknown kind
    ],
)
def test_handler_ignores_everything_but_requests(handler, data):
    assert handler.handle("serial", bytes.fromhex(data)) is None


def test_handler_info_golden(handler):
    table = compile_routine(load_routine("nausea-pc6"))
    response = handler.handle("serial", bytes.fromhex("01000107"))
    name = "4e61757365612072656c69656620285043362" "9"  # "Nausea relief (PC6)", 19 bytes
    expected = ("01" "01" "01" "07" "00" "00" "2b1a0000" "000100" "01" "64" "00" "00800000" "0001" "08" "01"
                + zlib.crc32(table).to_bytes(4, "little").hex() + "7c00" "13" + name)
    assert response.hex() == expected


def test_handler_upload_exchange_golden(handler):
    table = compile_routine(load_routine("nausea-pc6"), names=False)
    crc = zlib.crc32(table)
    begin = handler.handle("serial", encode_request(Opcode.UPLOAD_BEGIN, 1, length=76, crc32=crc))
    assert begin.hex() == "01" "01" "02" "01" "00" "00" "00000000" "f800" "08"  # offset 0, max_chunk 256-8, window 8
    ahead = handler.handle("serial", encode_request(Opcode.UPLOAD_DATA, 2, offset=40, data=table[40:]))
    assert ahead.hex() == "01" "01" "03" "02" "00" "00" "00000000"  # out of order: dropped, durable offset 0
    first = handler.handle("serial", encode_request(Opcode.UPLOAD_DATA, 3, offset=0, data=table[:40]))
    assert first.hex() == "01" "01" "03" "03" "00" "00" "28000000"
    again = handler.handle("serial", encode_request(Opcode.UPLOAD_DATA, 4, offset=0, data=table[:40]))
    assert again.hex() == "01" "01" "03" "04" "00" "00" "28000000"  # duplicate: dropped, same ack
    resumed = handler.handle("serial", encode_request(Opcode.UPLOAD_BEGIN, 5, length=76, crc32=crc))
    assert resumed.hex() == "01" "01" "02" "05" "00" "00" "28000000" "f800" "08"  # same length and CRC: resume at 40
    rest = handler.handle("serial", encode_request(Opcode.UPLOAD_DATA, 6, offset=40, data=table[40:]))
    assert rest.hex() == "01" "01" "03" "06" "00" "00" "4c000000"
    commit = handler.handle("serial", encode_request(Opcode.UPLOAD_COMMIT, 7))
    assert commit.hex() == "01" "01" "04" "07" "00" "00" + crc.to_bytes(4, "little").hex() + "c0270900"
    erase = handler.handle("serial", encode_request(Opcode.ERASE, 8))
    assert erase.hex() == "01" "01" "05" "08" "00" "00"


def test_handler_refused_table_golden(handler):
    bad = bytearray(compile_routine(load_routine("nausea-pc6"), names=False))
    bad[25] = 99  # technique 99 does not exist
    bad[4:8] = table_crc(bad).to_bytes(4, "little")
    handler.handle("serial", encode_request(Opcode.UPLOAD_BEGIN, 1, length=len(bad), crc32=zlib.crc32(bad)))
    handler.handle("serial", encode_request(Opcode.UPLOAD_DATA, 2, offset=0, data=bytes(bad)))
    assert error_head(handler.handle("serial", encode_request(Opcode.UPLOAD_COMMIT, 3))) == "01" "01" "04" "03" "0a" "07"  # BAD_RECORD
    # the refused upload is forgotten
    assert error_head(handler.handle("serial", encode_request(Opcode.UPLOAD_COMMIT, 4))) == "01" "01" "04" "04" "08" "00"


@pytest.mark.parametrize(
    ("requests", "head"),
    [
        ([(Opcode.PAUSE, {})], "01" "01" "07" "09" "04" "00"),  # BAD_STATE: idle
        ([(Opcode.UPLOAD_DATA, dict(offset=0, data=b"x"))], "01" "01" "03" "09" "08" "00"),  # NO_UPLOAD
        ([(Opcode.UPLOAD_BEGIN, dict(length=32769, crc32=0))], "01" "01" "02" "09" "07" "00"),  # TOO_LARGE
        ([(Opcode.UPLOAD_BEGIN, dict(length=2, crc32=0)), (Opcode.UPLOAD_DATA, dict(offset=0, data=b"abc"))], "01" "01" "03" "09" "09" "00"),  # BAD_OFFSET
        ([(Opcode.UPLOAD_BEGIN, dict(length=2, crc32=0)), (Opcode.UPLOAD_COMMIT, {})], "01" "01" "04" "09" "09" "00"),  # incomplete
        ([(Opcode.START, {}), (Opcode.ERASE, {})], "01" "01" "05" "09" "06" "00"),  # BUSY while playing
        ([(Opcode.UPLOAD_BEGIN, dict(length=2, crc32=0)), (Opcode.UPLOAD_DATA, dict(offset=0, data=b"ab")), (Opcode.START, {}),
          (Opcode.UPLOAD_COMMIT, {})], "01" "01" "04" "09" "06" "00"),  # BUSY while playing
    ],
)
def test_handler_error_statuses(handler, requests, head):
    *setup, (opcode, fields) = requests
    for setup_opcode, setup_fields in setup:
        assert handler.handle("serial", encode_request(setup_opcode, 1, **setup_fields))[4] == Status.OK
    assert error_head(handler.handle("serial", encode_request(opcode, 9, **fields))) == head


def test_handler_no_routine():
    handler = ProtocolHandler(Band(Storage(Flash(FLASH_SIZE)), VirtualClock()))
    for opcode in (Opcode.START, Opcode.PAUSE, Opcode.RESUME, Opcode.SKIP, Opcode.STOP):
        assert error_head(handler.handle("serial", encode_request(opcode, 3))) == "01" "01" + f"{opcode:02x}" + "03" "05" "00"
    idle = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "00000000" "00" "0000" "64"
    assert handler.handle("serial", encode_request(Opcode.STATUS, 4)).hex() == "01" "01" "0b" "04" "00" "00" + idle


def test_handler_busy_for_a_second_link_during_an_upload(handler):
    sent: list[bytes] = []
    handler.attach("serial", sent.append)
    handler.attach("ble", sent.append)
    handler.handle("serial", encode_request(Opcode.UPLOAD_BEGIN, 1, length=2, crc32=0))
    assert error_head(handler.handle("ble", encode_request(Opcode.UPLOAD_BEGIN, 2, length=2, crc32=0))) == "01" "01" "02" "02" "06" "00"
    assert error_head(handler.handle("ble", encode_request(Opcode.UPLOAD_DATA, 3, offset=0, data=b"ab"))) == "01" "01" "03" "03" "06" "00"


def test_notifications_go_out_before_the_response_on_every_link(handler):
    serial: list[bytes] = []
    ble: list[bytes] = []
    handler.attach("serial", serial.append)
    handler.attach("ble", ble.append)
    handler.receive("serial", encode_frame(encode_request(Opcode.START, 9)))
    started = "01" "00" "00" "04" "00" "01" "00" "00000000" "c0270900" "e0930400" "c0270900" "03" "0100" "64"
    notification = encode_frame(bytes.fromhex("01" "02" "0b" "00" + started))
    assert serial == [notification, notification, encode_frame(bytes.fromhex("01" "01" "06" "09" "00" "00" + started))]
    assert ble == [notification, notification]  # the other link hears the notifications, not the response


def test_upload_of_zero_bytes_is_a_bad_request(handler):
    response = handler.handle("serial", encode_request(Opcode.UPLOAD_BEGIN, 4, length=0, crc32=0))
    assert error_head(response) == "01" "01" "02" "04" "02" "00"


def test_erase_announces_the_new_state(handler):
    sent: list[bytes] = []
    handler.attach("serial", sent.append)
    handler.band.start()
    handler.band.stop()
    sent.clear()
    response = handler.handle("serial", encode_request(Opcode.ERASE, 5))
    assert decode_message(response).status == Status.OK
    messages = [decode_message(m) for m in FrameParser().feed(b"".join(sent))]
    assert [m.kind for m in messages] == [MessageKind.NOTIFICATION]
    assert StatusReport.from_body(messages[0].body).state == "idle"
