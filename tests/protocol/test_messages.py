"""Messages of the transfer protocol (SPEC.md part 2): golden bytes of every layout.

Every expected byte string below was written by hand from the layout tables of
SPEC.md §16-§18 (little endian, one field per string fragment), not printed by
the code under test.  Each golden is checked both ways: the encoder must produce
it from a typed message, and ``decode_message`` must read the same typed message
(and, through the raw layout, the hand-written wire values) back.
Malformed messages are checked through ``decode_message`` and through the
band's ``ProtocolHandler.handle``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import replace
from pathlib import Path
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
    BootOutcome,
    ClockKind,
    CueKind,
    MessageKind,
    Opcode,
    SessionOutcome,
    SkipScope,
    Status,
    TechniqueCode,
)
from protocol.framing import FrameParser, encode_frame
from protocol.history import Session
from protocol.messages import (
    REQUEST_TYPES,
    ClearHistoryRequest,
    Empty,
    EraseRequest,
    FirmwareVersion,
    HistoryRequest,
    HistoryResponse,
    InfoRequest,
    InfoResponse,
    MessageError,
    PauseRequest,
    PreviewRequest,
    Request,
    ResumeRequest,
    SetSettingsRequest,
    SetTimeRequest,
    SettingsRequest,
    SettingsResponse,
    SkipRequest,
    StartRequest,
    StatusReport,
    StatusRequest,
    StopRequest,
    UploadBeginRequest,
    UploadBeginResponse,
    UploadCommitRequest,
    UploadCommitResponse,
    UploadDataRequest,
    UploadDataResponse,
    code_text,
    decode_message,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)
from protocol.table import PatternSegment, table_crc

# --------------------------------------------------------------------------
# Hand-derived goldens

# STATUS body (§18.1): paused, record 0x0102, technique 7 (finger_squeeze), iteration 3,
# right hand (2), ring finger (wire 4 = FINGERS index 3 + 1), elapsed 0x00012345 ms,
# remaining 0x0A0B0C0D ms, step remaining 1000 ms, total 0xFFFFFFFF ms, last cue WARN (2),
# 0x1234 cues, battery 100 %.
STATUS_REPORT = StatusReport(state=BandState.PAUSED, step=0x0102, technique=TechniqueCode.FINGER_SQUEEZE, iteration=3, hand="right",
                             finger="ring", elapsed_ms=0x12345, remaining_ms=0x0A0B0C0D, step_remaining_ms=1000, total_ms=0xFFFFFFFF,
                             last_cue=CueKind.WARN, cues=0x1234, battery=100)
STATUS_WIRE = dict(state=2, step=0x0102, technique=7, iteration=3, hand=2, finger=4, elapsed_ms=0x12345, remaining_ms=0x0A0B0C0D,
                   step_remaining_ms=1000, total_ms=0xFFFFFFFF, last_cue=2, cues=0x1234, battery=100)
STATUS_BODY = "02" "0201" "07" "03" "02" "04" "45230100" "0d0c0b0a" "e8030000" "ffffffff" "02" "3412" "64"

INFO_VALUES = dict(band_id=0x1A2B, firmware=dict(major=1, minor=2, patch=3), protocol_version=1, battery=87, state=2, max_table=32768,
                   max_frame=512, window=8, has_routine=1, routine_crc32=0xD5BF511B, routine_size=124, routine_name="PC6",
                   boot_outcome=3)
INFO = InfoResponse(band_id=0x1A2B, firmware=FirmwareVersion(major=1, minor=2, patch=3), protocol_version=1, battery=87, state=BandState.PAUSED,
                    max_table=32768, max_frame=512, window=8, has_routine=True, routine_crc32=0xD5BF511B, routine_size=124, routine_name="PC6",
                    boot_outcome=BootOutcome.RECOVERED_PREVIOUS)
INFO_BODY = "2b1a0000" "010203" "01" "57" "02" "00800000" "0002" "08" "01" "1b51bfd5" "7c00" "03" "504336" "03"

NEXT_SEGMENTS = (PatternSegment(100, 80), PatternSegment(0, 120), PatternSegment(100, 80))
# A session record (§19.8): seq 7, Unix clock (1), stopped (2), started 2025-12-02 06:00:00 UTC, 60 s played,
# 5 s paused, routine CRC 0xDEADBEEF, 1 pause, 2 skips, 3 steps, 4 iterations, 3 acks given, 1 missed, name "PC6".
SESSION = Session(clock=ClockKind.UNIX_MS, outcome=SessionOutcome.STOPPED, start=1_764_655_200_000, played_ms=60_000, paused_ms=5_000,
                  routine_crc32=0xDEADBEEF, pauses=1, skips=2, steps=3, iterations=4, routine_name="PC6", acks_given=3, acks_missed=1, seq=7)
SESSION_HEAD = ("5332" "07000000" "01" "02" "0077a5dd9a010000" "60ea0000" "88130000" "efbeadde" "0100" "0200" "0300" "0400" "03" "01"
                "504336" + "00" * 19)
SESSION_BYTES = SESSION_HEAD + zlib.crc32(bytes.fromhex(SESSION_HEAD)).to_bytes(4, "little").hex()  # crc: CRC-32 of bytes 0..59

# (request, request id, raw wire fields, hand-written message hex)
REQUESTS: list[tuple[Request[Any], int, dict[str, Any], str]] = [
    (InfoRequest(), 0x21, {}, "01" "00" "01" "21"),
    (UploadBeginRequest(length=300, crc32=0xDEADBEEF), 0x22, dict(length=300, crc32=0xDEADBEEF), "01" "00" "02" "22" "2c010000" "efbeadde"),
    (UploadDataRequest(offset=0x01020304, data=b"\x00\xffHC"), 0x23, dict(offset=0x01020304, data=b"\x00\xffHC"),
     "01" "00" "03" "23" "04030201" "00ff4843"),
    (UploadCommitRequest(), 0x25, {}, "01" "00" "04" "25"),
    (EraseRequest(), 0x26, {}, "01" "00" "05" "26"),
    (StartRequest(), 0x27, {}, "01" "00" "06" "27"),
    (PauseRequest(), 0x28, {}, "01" "00" "07" "28"),
    (ResumeRequest(), 0x29, {}, "01" "00" "08" "29"),
    (SkipRequest(SkipScope.ITERATION), 0x2A, dict(scope=0), "01" "00" "09" "2a" "00"),
    (StopRequest(), 0x2B, {}, "01" "00" "0a" "2b"),
    (StatusRequest(), 0x2C, {}, "01" "00" "0b" "2c"),
    (SettingsRequest(), 0x2D, {}, "01" "00" "0c" "2d"),
    (SetSettingsRequest(strength=70), 0x2E, dict(strength=70), "01" "00" "0d" "2e" "46"),
    (SetTimeRequest(unix_ms=1_764_655_200_000), 0x2F, dict(unix_ms=1_764_655_200_000), "01" "00" "0e" "2f" "0077a5dd9a010000"),
    # the vocabulary's "next" (80/120/80 ms) at 70 %: strength, kind NEXT, 3 segments of (amplitude %, 10 ms units)
    (PreviewRequest(strength=70, kind=CueKind.NEXT, segments=NEXT_SEGMENTS), 0x32, dict(strength=70, kind=4, segments=list(NEXT_SEGMENTS)),
     "01" "00" "11" "32" "46" "04" "03" "6408" "000c" "6408"),
    (HistoryRequest(from_seq=0x0105, max_count=3), 0x30, dict(from_seq=0x0105, max_count=3), "01" "00" "0f" "30" "05010000" "03"),
    (ClearHistoryRequest(), 0x31, {}, "01" "00" "10" "31"),
]

# (opcode, request id, typed response, raw wire fields, hand-written message hex)
RESPONSES = [
    (Opcode.INFO, 0x21, INFO, INFO_VALUES, "01" "01" "01" "21" "00" "00" + INFO_BODY),
    (Opcode.UPLOAD_BEGIN, 0x22, UploadBeginResponse(offset=200, max_chunk=248, window=8), dict(offset=200, max_chunk=248, window=8),
     "01" "01" "02" "22" "00" "00" "c8000000" "f800" "08"),
    (Opcode.UPLOAD_DATA, 0x23, UploadDataResponse(offset=0x01020308), dict(offset=0x01020308), "01" "01" "03" "23" "00" "00" "08030201"),
    (Opcode.UPLOAD_COMMIT, 0x25, UploadCommitResponse(crc32=0xE1820AFD, total_ms=600_000), dict(crc32=0xE1820AFD, total_ms=600_000),
     "01" "01" "04" "25" "00" "00" "fd0a82e1" "c0270900"),
    (Opcode.ERASE, 0x26, Empty(), {}, "01" "01" "05" "26" "00" "00"),
    *[(opcode, request_id, STATUS_REPORT, STATUS_WIRE, "01" "01" + f"{opcode:02x}{request_id:02x}" + "00" "00" + STATUS_BODY)
      for opcode, request_id in ((Opcode.START, 0x27), (Opcode.PAUSE, 0x28), (Opcode.RESUME, 0x29), (Opcode.SKIP, 0x2A),
                                 (Opcode.STOP, 0x2B), (Opcode.STATUS, 0x2C))],
    (Opcode.SETTINGS, 0x2D, SettingsResponse(strength=100), dict(strength=100), "01" "01" "0c" "2d" "00" "00" "64"),
    (Opcode.SET_SETTINGS, 0x2E, SettingsResponse(strength=70), dict(strength=70), "01" "01" "0d" "2e" "00" "00" "46"),
    (Opcode.SET_TIME, 0x2F, Empty(), {}, "01" "01" "0e" "2f" "00" "00"),
    (Opcode.PREVIEW, 0x32, Empty(), {}, "01" "01" "11" "32" "00" "00"),
    (Opcode.HISTORY, 0x30, HistoryResponse(next_seq=8, more=True, records=[SESSION]), dict(next_seq=8, more=True, records=[SESSION]),
     "01" "01" "0f" "30" "00" "00" "08000000" "01" "01" + SESSION_BYTES),
    (Opcode.CLEAR_HISTORY, 0x31, Empty(), {}, "01" "01" "10" "31" "00" "00"),
]


def raw(message_hex: str, head: int) -> object:
    """The raw wire values of a message's body (after ``head`` header bytes), read with its class's raw layout, as plain dicts."""
    body = decode_message(bytes.fromhex(message_hex)).body
    assert body is not None
    return plain(type(body).layout.parse(bytes.fromhex(message_hex)[head:]))


def plain(value: object) -> object:
    """A decoded construct container (or typed body) as plain dicts, without construct's private keys."""
    if isinstance(value, FirmwareVersion):
        return value.to_json()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if not key.startswith("_")}
    return value


# --------------------------------------------------------------------------
# Numbers the layouts depend on


def test_codes_and_sizes_are_the_ones_in_the_spec():
    assert (PROTOCOL_VERSION, MESSAGE_HEADER_SIZE, MAX_FRAME_PAYLOAD, DEFAULT_UPLOAD_WINDOW) == (1, 4, 256, 16)
    assert {kind.name: kind.value for kind in MessageKind} == {"REQUEST": 0, "RESPONSE": 1, "NOTIFICATION": 2}
    assert {opcode.name: opcode.value for opcode in Opcode} == {
        "INFO": 1, "UPLOAD_BEGIN": 2, "UPLOAD_DATA": 3, "UPLOAD_COMMIT": 4, "ERASE": 5, "START": 6,
        "PAUSE": 7, "RESUME": 8, "SKIP": 9, "STOP": 10, "STATUS": 11, "SETTINGS": 12, "SET_SETTINGS": 13, "SET_TIME": 14,
        "PREVIEW": 17,
        "HISTORY": 15, "CLEAR_HISTORY": 16,
    }
    assert {status.name: status.value for status in Status} == {
        "OK": 0, "UNKNOWN_REQUEST": 1, "BAD_REQUEST": 2, "UNSUPPORTED_VERSION": 3, "BAD_STATE": 4, "NO_ROUTINE": 5,
        "BUSY": 6, "TOO_LARGE": 7, "NO_UPLOAD": 8, "BAD_OFFSET": 9, "TABLE_REFUSED": 10, "FLASH_FAILURE": 11,
    }
    assert {state.name: state.value for state in BandState} == {"IDLE": 0, "RUNNING": 1, "PAUSED": 2, "FINISHED": 3, "WAITING": 4}
    assert (BleUuid.SERVICE, BleUuid.RX, BleUuid.TX) == (
        "6e400001-b5a3-f393-e0a9-e50e24dcca9e", "6e400002-b5a3-f393-e0a9-e50e24dcca9e", "6e400003-b5a3-f393-e0a9-e50e24dcca9e",
    )
    assert (BleUuid.DEVICE_INFORMATION, BleUuid.BATTERY, BleUuid.BATTERY_LEVEL) == (
        "0000180a-0000-1000-8000-00805f9b34fb", "0000180f-0000-1000-8000-00805f9b34fb", "00002a19-0000-1000-8000-00805f9b34fb",
    )


def test_goldens_cover_every_opcode():
    assert sorted(request.opcode for request, *_ in REQUESTS) == sorted(Opcode)
    assert sorted(opcode for opcode, *_ in RESPONSES) == sorted(Opcode)


def test_every_opcode_has_one_request_class_naming_its_response_class():
    assert sorted(REQUEST_TYPES) == sorted(Opcode)
    assert all(issubclass(kind, Request) and kind.opcode == opcode for opcode, kind in REQUEST_TYPES.items())
    assert {opcode: kind.response_type for opcode, kind in REQUEST_TYPES.items()} == {
        Opcode.INFO: InfoResponse, Opcode.UPLOAD_BEGIN: UploadBeginResponse, Opcode.UPLOAD_DATA: UploadDataResponse,
        Opcode.UPLOAD_COMMIT: UploadCommitResponse, Opcode.ERASE: Empty,
        **{opcode: StatusReport for opcode in (Opcode.START, Opcode.PAUSE, Opcode.RESUME, Opcode.SKIP, Opcode.STOP, Opcode.STATUS)},
        Opcode.SETTINGS: SettingsResponse, Opcode.SET_SETTINGS: SettingsResponse, Opcode.SET_TIME: Empty,
        Opcode.PREVIEW: Empty,
        Opcode.HISTORY: HistoryResponse, Opcode.CLEAR_HISTORY: Empty,
    }


def test_a_response_of_another_type_is_refused_when_encoding():
    with pytest.raises(TypeError):
        encode_response(Opcode.INFO, 1, STATUS_REPORT)


# --------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize(("typed", "request_id", "fields", "golden"), REQUESTS, ids=[r[0].opcode.name for r in REQUESTS])
def test_request_golden_bytes(typed, request_id, fields, golden):
    assert encode_request(typed, request_id).hex() == golden


@pytest.mark.parametrize(("typed", "request_id", "fields", "golden"), REQUESTS, ids=[r[0].opcode.name for r in REQUESTS])
def test_request_decodes_to_its_fields(typed, request_id, fields, golden):
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.REQUEST, typed.opcode, request_id)
    assert message.body == typed
    assert raw(golden, MESSAGE_HEADER_SIZE) == fields


def test_skip_step_is_a_skip_without_a_body_and_an_unknown_scope_is_refused():
    # STEP goes as no body byte: the SKIP every band read before scopes (it skipped the whole step)
    assert encode_request(SkipRequest(SkipScope.STEP), 0x2A).hex() == "01" "00" "09" "2a"
    assert decode_message(bytes.fromhex("01" "00" "09" "2a")).body == SkipRequest(SkipScope.STEP)
    assert decode_message(bytes.fromhex("01" "00" "09" "2a" "01")).body == SkipRequest(SkipScope.STEP)
    assert SkipRequest() == SkipRequest(SkipScope.ITERATION)  # what `handcue skip` sends
    for body in ("02", "0000"):
        with pytest.raises(MessageError, match="malformed SKIP request") as caught:
            decode_message(bytes.fromhex("01" "00" "09" "2a" + body))
        assert caught.value.status == Status.BAD_REQUEST


def test_upload_data_may_carry_no_data():
    golden = "01" "00" "03" "24" "f8000000"
    assert encode_request(UploadDataRequest(offset=248, data=b""), 0x24).hex() == golden
    assert decode_message(bytes.fromhex(golden)).body == UploadDataRequest(offset=248, data=b"")


def test_request_id_uses_the_whole_byte():
    assert encode_request(StatusRequest(), 0).hex() == "01" "00" "0b" "00"
    assert encode_request(StatusRequest(), 255).hex() == "01" "00" "0b" "ff"
    assert decode_message(bytes.fromhex("01000bff")).request_id == 255


def test_wire_frame_of_info_request():
    # message 01 00 01 01, CRC-16/IBM-3740 0xD164 appended little endian: 01 00 01 01 64 d1.
    # COBS: block "01" ends at the zero -> 02 01; block "01 01 64 d1" runs to the end -> 05 01 01 64 d1;
    # a delimiter 00 before (it ends any torn frame the receiver holds) and after.
    assert encode_frame(bytes.fromhex("01000101")).hex() == "00" "02" "01" "05" "010164d1" "00"


# --------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize(("opcode", "request_id", "response", "wire", "golden"), RESPONSES, ids=[r[0].name for r in RESPONSES])
def test_ok_response_golden_bytes(opcode, request_id, response, wire, golden):
    assert encode_response(opcode, request_id, response).hex() == golden


@pytest.mark.parametrize(("opcode", "request_id", "response", "wire", "golden"), RESPONSES, ids=[r[0].name for r in RESPONSES])
def test_ok_response_decodes_to_its_fields(opcode, request_id, response, wire, golden):
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.RESPONSE, opcode, request_id)
    assert (message.status, message.detail, message.reason) == (Status.OK, 0, "")
    assert message.body == response
    assert raw(golden, MESSAGE_HEADER_SIZE + 2) == wire


def test_info_response_without_routine_has_an_empty_name():
    info = replace(INFO, state=BandState.IDLE, has_routine=False, routine_crc32=0, routine_size=0, routine_name="",
                   boot_outcome=BootOutcome.ACTIVE_SLOT_CORRUPT)
    golden = "01" "01" "01" "07" "00" "00" "2b1a0000" "010203" "01" "57" "00" "00800000" "0002" "08" "00" "00000000" "0000" "00" "04"
    assert encode_response(Opcode.INFO, 7, info).hex() == golden
    assert decode_message(bytes.fromhex(golden)).body == info


def test_info_boot_outcome_from_a_newer_band_reads_as_unknown():
    body = decode_message(bytes.fromhex("01" "01" "01" "07" "00" "00" + INFO_BODY[:-2] + "09")).body
    assert isinstance(body, InfoResponse)
    assert (body.boot_outcome, body.raw("boot_outcome"), code_text(body, "boot_outcome")) == (None, 9, "unknown (9)")
    assert code_text(INFO, "boot_outcome") == "recovered-previous"


def test_status_body_idle_values_and_saturated_cue_count():
    report = StatusReport(state=BandState.IDLE, step=None, technique=None, iteration=0, hand=None, finger=None, elapsed_ms=0, remaining_ms=0,
                          step_remaining_ms=0, total_ms=600_000, last_cue=None, cues=70_000, battery=5)
    body = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "c0270900" "00" "ffff" "05"
    assert encode_response(Opcode.STATUS, 1, report).hex() == "01" "01" "0b" "01" "00" "00" + body


def test_idle_status_body_reads_back_as_idle():
    body = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "c0270900" "00" "ffff" "05"
    assert decode_message(bytes.fromhex("01" "01" "0b" "01" "00" "00" + body)).body == StatusReport(
        BandState.IDLE, None, None, 0, None, None, 0, 0, 0, 600_000, None, 0xFFFF, 5)


def test_status_body_reads_back_as_the_same_report():
    assert decode_message(bytes.fromhex("01" "02" "0b" "00" + STATUS_BODY)).body == STATUS_REPORT


def test_status_report_json_names_its_codes():
    assert STATUS_REPORT.to_json() == dict(state="paused", step=0x0102, technique="finger_squeeze", iteration=3, hand="right", finger="ring",
                                           elapsed_ms=0x12345, remaining_ms=0x0A0B0C0D, step_remaining_ms=1000, total_ms=0xFFFFFFFF,
                                           last_cue="warn", cues=0x1234, battery=100, ack_wait=None)


def test_status_body_codes_a_companion_does_not_know_read_as_none():
    # state 9, technique 99, hand 3, finger 6, last cue 8: all beyond this protocol version's enumerations
    body = "09" "0000" "63" "00" "03" "06" "00000000" "00000000" "00000000" "00000000" "08" "0000" "64"
    report = decode_message(bytes.fromhex("01" "02" "0b" "00" + body)).body
    assert (report.state, report.technique, report.hand, report.finger, report.last_cue) == (None, None, None, None, None)


def test_status_notification_golden_bytes():
    golden = "01" "02" "0b" "00" + STATUS_BODY  # no status/detail bytes; request id 0
    assert encode_notification(STATUS_REPORT).hex() == golden
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id, message.status) == (MessageKind.NOTIFICATION, Opcode.STATUS, 0, Status.OK)
    assert message.body == STATUS_REPORT
    assert raw(golden, MESSAGE_HEADER_SIZE) == STATUS_WIRE


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
    assert encode_error(opcode, request_id, status, detail, reason).hex() == golden
    message = decode_message(bytes.fromhex(golden))
    assert (message.kind, message.opcode, message.request_id) == (MessageKind.RESPONSE, opcode, request_id)
    assert (message.status, message.detail, message.reason) == (status, detail, reason)
    assert message.body is None


def test_error_reason_is_cut_to_255_bytes_on_a_character_boundary():
    message = encode_error(Opcode.INFO, 1, Status.BUSY, reason="é" * 200)  # 400 bytes of UTF-8
    assert message[:7].hex() == "01" "01" "01" "01" "06" "00" "fe"  # 127 characters = 254 bytes
    assert message[7:] == "é".encode() * 127
    ascii_message = encode_error(Opcode.INFO, 1, Status.BUSY, reason="a" * 300)
    assert ascii_message[:7].hex() == "01" "01" "01" "01" "06" "00" "ff" and ascii_message[7:] == b"a" * 255


def test_error_status_replaces_the_ok_body():
    # An INFO error carries no INFO fields at all, only the reason.
    assert encode_error(Opcode.INFO, 3, Status.UNSUPPORTED_VERSION, reason="v").hex() == "01" "01" "01" "03" "03" "00" "01" "76"


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
        ("01" "00" "40" "05", 0x40),  # an opcode no band has
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
        ("01" "01" "01" "05" "00" "00" + INFO_BODY[:-4], Opcode.INFO),  # name cut short, no boot outcome
        ("01" "01" "01" "05" "00" "00" + INFO_BODY[:-8] + "ff4336" "03", Opcode.INFO),  # name not UTF-8
        ("01" "01" "01" "05" "00" "00" + INFO_BODY[:-2], Opcode.INFO),  # boot outcome missing (an older band's INFO)
        ("01" "01" "01" "05" "00" "00" + INFO_BODY + "00", Opcode.INFO),  # a byte too many after the boot outcome
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


def test_handler_serves_every_request_class_from_its_table(handler):
    assert set(handler._serve) == set(REQUEST_TYPES.values())


def test_handler_info_golden(handler):
    table = compile_routine(load_routine("nausea-pc6"))
    response = handler.handle("serial", bytes.fromhex("01000107"))
    name = "4e61757365612072656c69656620285043362" "9"  # "Nausea relief (PC6)", 19 bytes
    expected = ("01" "01" "01" "07" "00" "00" "2b1a0000" "000200" "01" "64" "00" "00800000" "0001" "10" "01"
                + zlib.crc32(table).to_bytes(4, "little").hex() + "7c00" "13" + name + "00")  # boot_outcome BLANK: this band booted on erased flash, then took the upload
    assert response.hex() == expected


def test_handler_upload_exchange_golden(handler):
    table = compile_routine(load_routine("nausea-pc6"), names=False)
    crc = zlib.crc32(table)
    begin = handler.handle("serial", encode_request(UploadBeginRequest(length=76, crc32=crc), 1))
    assert begin.hex() == "01" "01" "02" "01" "00" "00" "00000000" "f800" "10"  # offset 0, max_chunk 256-8, window 16
    ahead = handler.handle("serial", encode_request(UploadDataRequest(offset=40, data=table[40:]), 2))
    assert ahead.hex() == "01" "01" "03" "02" "00" "00" "00000000"  # out of order: dropped, durable offset 0
    first = handler.handle("serial", encode_request(UploadDataRequest(offset=0, data=table[:40]), 3))
    assert first.hex() == "01" "01" "03" "03" "00" "00" "28000000"
    again = handler.handle("serial", encode_request(UploadDataRequest(offset=0, data=table[:40]), 4))
    assert again.hex() == "01" "01" "03" "04" "00" "00" "28000000"  # duplicate: dropped, same ack
    resumed = handler.handle("serial", encode_request(UploadBeginRequest(length=76, crc32=crc), 5))
    assert resumed.hex() == "01" "01" "02" "05" "00" "00" "28000000" "f800" "10"  # same length and CRC: resume at 40
    rest = handler.handle("serial", encode_request(UploadDataRequest(offset=40, data=table[40:]), 6))
    assert rest.hex() == "01" "01" "03" "06" "00" "00" "4c000000"
    commit = handler.handle("serial", encode_request(UploadCommitRequest(), 7))
    assert commit.hex() == "01" "01" "04" "07" "00" "00" + crc.to_bytes(4, "little").hex() + "c0270900"
    erase = handler.handle("serial", encode_request(EraseRequest(), 8))
    assert erase.hex() == "01" "01" "05" "08" "00" "00"


def test_handler_refused_table_golden(handler):
    bad = bytearray(compile_routine(load_routine("nausea-pc6"), names=False))
    bad[25] = 99  # technique 99 does not exist
    bad[4:8] = table_crc(bad).to_bytes(4, "little")
    handler.handle("serial", encode_request(UploadBeginRequest(length=len(bad), crc32=zlib.crc32(bad)), 1))
    handler.handle("serial", encode_request(UploadDataRequest(offset=0, data=bytes(bad)), 2))
    assert error_head(handler.handle("serial", encode_request(UploadCommitRequest(), 3))) == "01" "01" "04" "03" "0a" "07"  # BAD_RECORD
    # the refused upload is forgotten
    assert error_head(handler.handle("serial", encode_request(UploadCommitRequest(), 4))) == "01" "01" "04" "04" "08" "00"


@pytest.mark.parametrize(
    ("requests", "head"),
    [
        ([PauseRequest()], "01" "01" "07" "09" "04" "00"),  # BAD_STATE: idle
        ([UploadDataRequest(offset=0, data=b"x")], "01" "01" "03" "09" "08" "00"),  # NO_UPLOAD
        ([UploadBeginRequest(length=32769, crc32=0)], "01" "01" "02" "09" "07" "00"),  # TOO_LARGE
        ([UploadBeginRequest(length=2, crc32=0), UploadDataRequest(offset=0, data=b"abc")], "01" "01" "03" "09" "09" "00"),  # BAD_OFFSET
        ([UploadBeginRequest(length=2, crc32=0), UploadCommitRequest()], "01" "01" "04" "09" "09" "00"),  # incomplete
        ([StartRequest(), EraseRequest()], "01" "01" "05" "09" "06" "00"),  # BUSY while playing
        ([UploadBeginRequest(length=2, crc32=0), UploadDataRequest(offset=0, data=b"ab"), StartRequest(),
          UploadCommitRequest()], "01" "01" "04" "09" "06" "00"),  # BUSY while playing
    ],
)
def test_handler_error_statuses(handler, requests, head):
    *setup, request = requests
    for setup_request in setup:
        assert handler.handle("serial", encode_request(setup_request, 1))[4] == Status.OK
    assert error_head(handler.handle("serial", encode_request(request, 9))) == head


def test_handler_no_routine():
    handler = ProtocolHandler(Band(Storage(Flash(FLASH_SIZE)), VirtualClock()))
    for request in (StartRequest(), PauseRequest(), ResumeRequest(), SkipRequest(), StopRequest()):
        assert error_head(handler.handle("serial", encode_request(request, 3))) == "01" "01" + f"{request.opcode:02x}" + "03" "05" "00"
    idle = "00" "ffff" "00" "00" "00" "00" "00000000" "00000000" "00000000" "00000000" "00" "0000" "64"
    assert handler.handle("serial", encode_request(StatusRequest(), 4)).hex() == "01" "01" "0b" "04" "00" "00" + idle


def test_handler_busy_for_a_second_link_during_an_upload(handler):
    sent: list[bytes] = []
    handler.attach("serial", sent.append)
    handler.attach("ble", sent.append)
    handler.handle("serial", encode_request(UploadBeginRequest(length=2, crc32=0), 1))
    assert error_head(handler.handle("ble", encode_request(UploadBeginRequest(length=2, crc32=0), 2))) == "01" "01" "02" "02" "06" "00"
    assert error_head(handler.handle("ble", encode_request(UploadDataRequest(offset=0, data=b"ab"), 3))) == "01" "01" "03" "03" "06" "00"


def test_notifications_go_out_before_the_response_on_every_link(handler):
    serial: list[bytes] = []
    ble: list[bytes] = []
    handler.attach("serial", serial.append)
    handler.attach("ble", ble.append)
    handler.receive("serial", encode_frame(encode_request(StartRequest(), 9)))
    started = "01" "00" "00" "04" "00" "01" "00" "00000000" "c0270900" "e0930400" "c0270900" "03" "0100" "64"
    notification = encode_frame(bytes.fromhex("01" "02" "0b" "00" + started))
    # The requesting link gets its chunk's frames in one send: the notifications, then the response.
    assert serial == [notification + notification + encode_frame(bytes.fromhex("01" "01" "06" "09" "00" "00" + started))]
    assert ble == [notification, notification]  # the other link hears the notifications, not the response


def test_answers_to_the_requests_of_one_chunk_go_out_in_one_send(handler):
    sent: list[bytes] = []
    handler.attach("ble", sent.append)
    handler.receive("ble", encode_frame(encode_request(InfoRequest(), 1)) + encode_frame(encode_request(StatusRequest(), 2)))
    assert len(sent) == 1
    assert [decode_message(m).request_id for m in FrameParser(1024).feed(sent[0])] == [1, 2]


def test_upload_of_zero_bytes_is_a_bad_request(handler):
    response = handler.handle("serial", encode_request(UploadBeginRequest(length=0, crc32=0), 4))
    assert error_head(response) == "01" "01" "02" "04" "02" "00"


def test_erase_announces_the_new_state(handler):
    sent: list[bytes] = []
    handler.attach("serial", sent.append)
    handler.band.start()
    handler.band.stop()
    sent.clear()
    response = handler.handle("serial", encode_request(EraseRequest(), 5))
    assert decode_message(response).status == Status.OK
    messages = [decode_message(m) for m in FrameParser().feed(b"".join(sent))]
    assert [m.kind for m in messages] == [MessageKind.NOTIFICATION]
    assert messages[0].body.state == BandState.IDLE


def test_spec_skip_examples_are_the_bytes_the_companion_sends():
    spec = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()
    examples = dict(re.findall(r"^SKIP, scope (\w+) \(.*\), id 0x2A: +([0-9A-F ]+)$", spec, flags=re.M))
    assert examples == {scope.name: encode_request(SkipRequest(scope), 0x2A).hex(" ").upper() for scope in SkipScope}


def test_spec_settings_examples_are_the_bytes_on_the_wire():
    spec = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()
    found = re.findall(r"^(?:SET_)?SETTINGS[^:\n]*:\s+([0-9A-F][0-9A-F ]+)$", spec, flags=re.M)
    assert [bytes.fromhex(line) for line in found] == [
        encode_request(SettingsRequest(), 0x2D), encode_response(Opcode.SETTINGS, 0x2D, SettingsResponse(strength=100)),
        encode_request(SetSettingsRequest(strength=70), 0x2E), encode_response(Opcode.SET_SETTINGS, 0x2E, SettingsResponse(strength=70)),
    ]


def test_handler_skips_by_the_scope_byte(handler):
    assert handler.handle("serial", encode_request(StartRequest(), 1))[4] == Status.OK
    # SKIP 00 on the left wrist of nausea-pc6: on to the right wrist
    response = handler.handle("serial", bytes.fromhex("01" "00" "09" "02" "00"))
    status = decode_message(response).body
    assert (status.state, status.hand, status.iteration) == (BandState.RUNNING, "right", 1)
    response = handler.handle("serial", bytes.fromhex("01" "00" "09" "03"))  # no byte: past the step, the routine ends
    assert decode_message(response).body.state == BandState.FINISHED
    assert error_head(handler.handle("serial", bytes.fromhex("01" "00" "09" "04" "07"))) == "01" "01" "09" "04" "02" "00"  # BAD_REQUEST
