"""Session history over the protocol, on the band's real handler: the record declaration, HISTORY paging, CLEAR_HISTORY, acknowledgements."""

from __future__ import annotations

import re
import zlib
from dataclasses import replace
from pathlib import Path

import construct as c
import pytest

from companion import compile_routine, load_routine
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.faults import PowerLoss
from firmware_sim.flash import ERASE_PAGE, SECTOR_SIZE, Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.history import History
from firmware_sim.local import storage_with
from firmware_sim.pairing import OPEN_OPCODES
from firmware_sim.records import RecordRing
from firmware_sim.storage import FLASH_SIZE, HISTORY_SECTORS, Storage
from protocol.constants import ClockKind, MessageKind, Opcode, SessionOutcome, Status
from protocol.history import HISTORY_MAGIC, HISTORY_RECORD_SIZE, ROUTINE_NAME_BYTES, Session, build_record, parse_record
from protocol.messages import (
    ClearHistoryRequest,
    Empty,
    HistoryRequest,
    HistoryResponse,
    MessageError,
    decode_message,
    encode_request,
    encode_response,
    history_records_per_frame,
)

OLD_MAGIC = 0x4853
"""The first session-record layout's magic (no acknowledgement counts, a 24-byte name)."""


def a_session(i: int) -> Session:
    return Session(ClockKind.UNIX_MS, SessionOutcome.FINISHED, 1_764_655_200_000 + 60_000 * i, 30_000 + i, i, 0xC0FFEE00 + i,
                   i % 3, i % 4, i % 5, i % 6, f"routine {i}", acks_given=i % 7, acks_missed=i % 2)


def band_with_sessions(count: int, max_frame: int = 256) -> tuple[ProtocolHandler, list[Session]]:
    band = Band(storage_with(None), VirtualClock())
    for i in range(count):
        band.storage.history.record(a_session(i))
    return ProtocolHandler(band, max_frame=max_frame), band.storage.history.sessions()


def ask(handler: ProtocolHandler, request, request_id: int = 1):
    reply = handler.handle("link", encode_request(request, request_id))
    assert reply is not None
    return reply, decode_message(reply)


# --------------------------------------------------------------------------
# The record, declared once


def test_a_record_reads_back_and_its_offsets_are_the_specs():
    session = replace(a_session(5), seq=0x01020304)
    data = build_record(session)
    assert len(data) == HISTORY_RECORD_SIZE and parse_record(data) == session
    assert HISTORY_MAGIC == 0x3253 and data[0:2] == bytes([0x53, 0x32]) and data[2:6] == bytes([4, 3, 2, 1])
    assert (data[6], data[7], data[36], data[37]) == (ClockKind.UNIX_MS, SessionOutcome.FINISHED, 5 % 7, 5 % 2)
    assert data[38:60] == b"routine 5".ljust(ROUTINE_NAME_BYTES, b"\0")
    assert int.from_bytes(data[60:], "little") == zlib.crc32(data[:60])


def test_a_record_with_a_flipped_bit_or_the_old_magic_is_refused():
    data = bytearray(build_record(a_session(1)))
    data[20] ^= 0x10
    with pytest.raises(c.ChecksumError):
        parse_record(bytes(data))
    old = bytearray(build_record(a_session(1)))
    old[0:2] = OLD_MAGIC.to_bytes(2, "little")
    old[60:] = zlib.crc32(bytes(old[:60])).to_bytes(4, "little")  # a whole, valid record of the first layout
    with pytest.raises(c.ConstError):
        parse_record(bytes(old))


def test_long_names_are_cut_on_a_character_boundary_and_counts_saturate():
    session = replace(a_session(0), routine_name="Kopfschmerz-Lösung: Punkt LI4", pauses=70_000, acks_given=300)
    back = parse_record(build_record(session))
    assert back.routine_name == "Kopfschmerz-Lösung: P"  # 22 bytes: ö takes two
    assert (back.pauses, back.acks_given) == (0xFFFF, 0xFF)
    cut = parse_record(build_record(replace(a_session(0), routine_name="a" * 21 + "é")))  # é would end at byte 23
    assert cut.routine_name == "a" * 21


def test_records_of_the_first_layout_are_ignored_not_misread():
    flash = Flash(FLASH_SIZE)
    old_ring = RecordRing(flash, HISTORY_SECTORS, HISTORY_RECORD_SIZE, OLD_MAGIC)
    for _ in range(3):
        old_ring.append(bytes(54))
    history = History(flash, HISTORY_SECTORS)
    assert history.sessions() == []
    history.record(a_session(1))
    assert [s.routine_name for s in History(flash, HISTORY_SECTORS).sessions()] == ["routine 1"]


def test_a_newer_bands_outcome_reads_as_none_and_the_band_leaves_such_records_out():
    data = bytearray(build_record(a_session(2)))
    data[7] = 9
    data[60:] = zlib.crc32(bytes(data[:60])).to_bytes(4, "little")
    assert parse_record(bytes(data)).outcome is None and parse_record(bytes(data)).to_json()["outcome"] is None


# --------------------------------------------------------------------------
# HISTORY: pages within the band's frame


@pytest.mark.parametrize("max_frame", [256, 512, 1024])
def test_history_pages_fill_the_frame_and_cover_every_record_in_order(max_frame):
    handler, held = band_with_sessions(20, max_frame)
    per_page = history_records_per_frame(max_frame)
    assert per_page == (max_frame - 12) // HISTORY_RECORD_SIZE and per_page < 20
    got, from_seq, pages = [], 0, 0
    while True:
        reply, message = ask(handler, HistoryRequest(from_seq=from_seq), pages + 1)
        assert len(reply) <= max_frame and message.status == Status.OK
        page = message.body
        assert isinstance(page, HistoryResponse)
        got += page.records
        pages += 1
        if not page.more:
            break
        assert len(page.records) == per_page and page.next_seq == page.records[-1].seq + 1
        from_seq = page.next_seq
    assert got == held and pages == -(-20 // per_page)
    assert [s.to_json() for s in got] == [replace(a_session(i), seq=i).to_json() for i in range(20)]


def test_history_max_count_from_seq_and_an_empty_page():
    handler, held = band_with_sessions(10)
    _, message = ask(handler, HistoryRequest(from_seq=4, max_count=2))
    assert (message.body.records, message.body.next_seq, message.body.more) == (held[4:6], 6, True)
    _, last = ask(handler, HistoryRequest(from_seq=8, max_count=200), 2)
    assert (last.body.records, last.body.next_seq, last.body.more) == (held[8:], 10, False)
    _, beyond = ask(handler, HistoryRequest(from_seq=50), 3)
    assert (beyond.body.records, beyond.body.next_seq, beyond.body.more) == ([], 10, False)  # where the next record goes


def test_a_session_recorded_between_pages_comes_in_a_later_page():
    handler, _ = band_with_sessions(4)
    _, first = ask(handler, HistoryRequest())
    handler.band.storage.history.record(a_session(99))
    _, second = ask(handler, HistoryRequest(from_seq=first.body.next_seq), 2)
    assert [s.routine_name for s in first.body.records + second.body.records] == ["routine 0", "routine 1", "routine 2", "routine 3", "routine 99"]


def test_a_damaged_record_in_an_answer_is_a_malformed_message():
    handler, _ = band_with_sessions(1)
    reply, _ = ask(handler, HistoryRequest())
    damaged = bytearray(reply)
    damaged[4 + 2 + 5 + 1 + 30] ^= 1  # a byte inside the record
    with pytest.raises(MessageError, match="malformed HISTORY response"):
        decode_message(bytes(damaged))


def test_history_and_clear_need_a_paired_link_on_a_paired_band():
    # The BLE gate lets an unpaired central send only OPEN_OPCODES: session history is personal data.
    assert Opcode.HISTORY not in OPEN_OPCODES and Opcode.CLEAR_HISTORY not in OPEN_OPCODES


# --------------------------------------------------------------------------
# CLEAR_HISTORY


def test_clear_history_erases_every_record_and_the_log_goes_on():
    handler, _ = band_with_sessions(30)
    reply, message = ask(handler, ClearHistoryRequest())
    assert (message.kind, message.status) == (MessageKind.RESPONSE, Status.OK)
    assert reply == encode_response(Opcode.CLEAR_HISTORY, 1, message.body)
    _, empty = ask(handler, HistoryRequest(), 2)
    assert (empty.body.records, empty.body.more) == ([], False)
    assert Storage(handler.band.storage.flash).history.sessions() == []  # erased in flash, not just forgotten
    handler.band.storage.history.record(a_session(7))
    assert [s.routine_name for s in Storage(handler.band.storage.flash).history.sessions()] == ["routine 7"]


# --------------------------------------------------------------------------
# Acknowledgements counted by the band's session tracker


def test_note_ack_counts_into_the_session_record():
    data = compile_routine(load_routine("desk-break"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    band.note_ack(True)  # outside a session: nothing to count
    band.start()
    for given in (True, True, False, True, False):
        band.note_ack(given)
    clock.advance(4_000)
    band.stop()
    [session] = band.storage.history.sessions()
    assert (session.acks_given, session.acks_missed, session.outcome) == (3, 2, SessionOutcome.STOPPED)


# --------------------------------------------------------------------------
# SPEC.md's examples are the bytes on the wire


def test_spec_history_examples_are_the_bytes_on_the_wire():
    spec = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()
    section = spec[spec.index("### 17.10 HISTORY"):spec.index("## 18.")]
    one_liners = re.findall(r"^(?:CLEAR_)?HISTORY[^:\n]*:\s+([0-9A-F][0-9A-F ]+)$", section, flags=re.M)
    record = Session(clock=ClockKind.UNIX_MS, outcome=SessionOutcome.FINISHED, start=1_764_655_200_000, played_ms=552_000, paused_ms=12_300,
                     routine_crc32=0xD5BF511B, pauses=1, skips=0, steps=3, iterations=6, routine_name="Nausea relief (PC6)", acks_given=2, seq=41)
    assert [bytes.fromhex(line) for line in one_liners] == [
        encode_request(HistoryRequest(from_seq=0, max_count=0), 0x30), encode_request(HistoryRequest(from_seq=41), 0x31),
        encode_response(Opcode.HISTORY, 0x32, HistoryResponse(next_seq=42, more=False, records=[])),
        encode_request(ClearHistoryRequest(), 0x33), encode_response(Opcode.CLEAR_HISTORY, 0x33, Empty()),
    ]
    indented = re.findall(r"^  ([0-9A-F][0-9A-F ]+)$", section, flags=re.M)
    assert bytes.fromhex(" ".join(indented)) == encode_response(Opcode.HISTORY, 0x31, HistoryResponse(next_seq=42, more=False, records=[record]))


def test_a_power_cut_at_every_unit_of_a_clear_leaves_whole_records_and_the_log_goes_on():
    flash = Flash(FLASH_SIZE)
    history = History(flash, HISTORY_SECTORS)
    for i in range(200):  # the ring has wrapped: its first sector holds the newest records
        history.record(a_session(i))
    image, before = flash.snapshot(), history.sessions()
    next_seq = history._ring.next_seq
    units = 0
    while True:
        trial = Flash.from_image(image)
        trial.cut_power_after(units)
        try:
            History(trial, HISTORY_SECTORS).clear()
        except PowerLoss:
            rebooted = History(Flash.from_image(trial.snapshot()), HISTORY_SECTORS)
            kept = rebooted.sessions()
            assert all(session in before for session in kept), f"cut after {units} units"
            assert rebooted._ring.next_seq >= next_seq, f"cut after {units} units: a sequence number would be used again"
            rebooted.record(a_session(999))  # a cleared part way log still takes records
            assert History(rebooted._ring.flash, HISTORY_SECTORS).sessions()[-1].routine_name == "routine 999"
            units += 1
            continue
        rebooted = History(Flash.from_image(trial.snapshot()), HISTORY_SECTORS)
        assert rebooted.sessions() == [] and rebooted._ring.next_seq == next_seq + 1  # the marker kept the numbering
        break
    # every erase page of the ring one by one, and the marker record's program units
    assert units > len(HISTORY_SECTORS) * SECTOR_SIZE // ERASE_PAGE
