"""Fuzzing the band's parsers (hypothesis): the step-table loader, the storage mount, the frame parser, the handler.

Invariants: no uncaught exception, a named error (with a code) for every
rejection, bounded time per input (hypothesis' deadline).  The default run is
quick; ``--hypothesis-profile=long`` runs 20,000 examples per test, and
``python -m tests.fuzz_atheris TARGET`` runs the same checks (the ``check_*``
functions) under atheris, coverage-guided, for as long as asked.
"""

from __future__ import annotations

import zlib
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion import compile_routine, load_routine
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.faults import FlashError
from firmware_sim.flash import ERASED, SECTOR_SIZE, Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from firmware_sim.storage import ENTRY_SIZE, FLASH_SIZE, SLOT_FIRST_SECTOR, BootOutcome, EntryKind, JournalEntry, Storage
from protocol.constants import MAX_FRAME_PAYLOAD, MESSAGE_HEADER_SIZE, PROTOCOL_VERSION, TABLE_HEADER_SIZE, MessageKind, Opcode, TableError
from protocol.errors import TableFormatError
from protocol.framing import FrameParser, encode_frame
from protocol.table import RecordCache, check_table_header, decode_table, table_crc

from ..conftest import SHIPPED

TABLES = [compile_routine(load_routine(name)) for name in SHIPPED]
QUICK = settings(deadline=timedelta(milliseconds=500), suppress_health_check=[HealthCheck.too_slow], derandomize=False)


# ------------------------------------------------------------------ step-table loader


def _mutated_table(draw: st.DrawFn) -> bytes:
    """A shipped table with a few bytes changed, inserted or cut, the CRC usually fixed so parsing goes deep."""
    data = bytearray(draw(st.sampled_from(TABLES)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, len(data)))
        if action == "set" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=40))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 20))]
        else:
            del data[position:]
    if draw(st.booleans()) and len(data) >= TABLE_HEADER_SIZE:
        if draw(st.booleans()):
            data[12:14] = min(len(data), 0xFFFF).to_bytes(2, "little")
        data[4:8] = table_crc(data).to_bytes(4, "little")
    return bytes(data)


tables = st.one_of(st.binary(max_size=300), st.composite(lambda draw: _mutated_table(draw))())


def check_table(data: bytes) -> None:
    """The loader returns a table or raises TableFormatError with a code; nothing else."""
    try:
        table = decode_table(data)
    except TableFormatError as exc:
        assert isinstance(exc.code, TableError) and exc.code != TableError.OK
        assert str(exc)
    else:
        assert table.records is not None


@QUICK
@given(tables)
def test_table_loader_accepts_or_names_the_fault(data):
    check_table(data)


def _outcome(data: bytes, decoded: RecordCache | None = None) -> object:
    try:
        return decode_table(data, decoded=decoded)
    except TableFormatError as exc:
        return (exc.code, str(exc))


def _feed(cache: RecordCache, data: bytes, draw: st.DrawFn) -> None:
    """``data`` fed as an upload would be: chunks in order, now and then some sent again from further back."""
    cuts = [*sorted(set(draw(st.lists(st.integers(1, max(1, len(data))), max_size=12)))), len(data)]
    start = 0
    for cut in cuts:
        if start and draw(st.integers(0, 3)) == 0:
            start = draw(st.integers(0, start))  # go-back: the bytes from here come again
        cache.feed(start, data[start:cut])
        start = max(start, cut)


@QUICK
@given(st.data())
def test_records_decoded_while_arriving_never_change_the_verdict(data):
    """COMMIT's check with the records decoded during the upload (storage.early) gives exactly the
    table or the error the check from scratch gives, also when the bytes checked are not the ones fed."""
    final = data.draw(st.one_of(st.sampled_from(TABLES), tables), label="table checked at COMMIT")
    fed = data.draw(st.sampled_from(["same", "changed", "other"]), label="bytes that arrived")
    if fed == "same":
        fed = final
    elif fed == "changed":  # damaged between arriving and COMMIT's read (flash), records included
        changed = bytearray(final)
        for _ in range(data.draw(st.integers(1, 4))):
            if changed:
                changed[data.draw(st.integers(0, len(changed) - 1))] ^= data.draw(st.integers(1, 255))
        fed = bytes(changed)
    else:
        fed = data.draw(tables)
    cache = RecordCache()
    _feed(cache, fed, data.draw)
    assert _outcome(final, cache) == _outcome(final)


def test_an_uploaded_table_is_checked_at_commit_without_decoding_its_records_again(monkeypatch):
    """Storage decodes each record as its bytes are written; COMMIT reuses them all (and still checks everything)."""
    import protocol.table

    data = TABLES[1]
    storage = Storage(Flash(FLASH_SIZE))
    storage.begin_upload(len(data), zlib.crc32(data))
    for offset in range(0, len(data), 37):
        storage.write_chunk(offset, data[offset : offset + 37])
    count = check_table_header(data).record_count
    assert count > 1 and sorted(storage.early.records) == list(range(count))
    decoded_at_commit: list[bytes] = []
    real = protocol.table._decode_record
    monkeypatch.setattr(protocol.table, "_decode_record", lambda raw: decoded_at_commit.append(raw) or real(raw))
    assert storage.commit() == data and storage.active_table() == data
    assert decoded_at_commit == []


# ------------------------------------------------------------------ storage mount


def _entry(kind: int, slot: int, length: int, seq: int, value: int) -> bytes:
    body = JournalEntry.build(dict(kind=kind, slot=slot, length=length, seq=seq, value=value, entry_crc=0))[:12]
    return body + zlib.crc32(body).to_bytes(4, "little")


ENTRY_STYLES = ["valid", "valid", "valid", "torn", "garbage"]
journal_entries = st.lists(
    st.tuples(
        st.sampled_from(ENTRY_STYLES), st.sampled_from([*EntryKind, 0, 7, 255]), st.sampled_from([0, 1, 2, 0x80, 0x81, 0xFF]),
        st.sampled_from([0, 1, 279, 32768, 32769, 0xFFFF]), st.integers(0, 40), st.sampled_from([0, 100, 279, 0xFFFFFFFF, zlib.crc32(TABLES[0])]),
        st.integers(0, 15), st.binary(min_size=ENTRY_SIZE, max_size=ENTRY_SIZE),
    ),
    max_size=12,
)
SLOT_CONTENTS = [b"", TABLES[0], TABLES[-1], b"\x00" * 64]


def flash_image(sectors: tuple[list, list], slots: tuple[int, int], flips: list[tuple[int, int]]) -> bytes:
    """Erased flash with journal entries (valid CRCs over odd fields, torn, or garbage), slot contents and bit flips."""
    image = bytearray([ERASED]) * FLASH_SIZE
    for sector, entries in enumerate(sectors):
        for index, (style, kind, slot, length, seq, value, torn_at, garbage) in enumerate(entries):
            entry = _entry(kind, slot, length, seq, value)
            if style == "torn":
                entry = entry[:torn_at].ljust(ENTRY_SIZE, b"\xff")
            elif style == "garbage":
                entry = garbage
            start = sector * SECTOR_SIZE + index * ENTRY_SIZE
            image[start : start + ENTRY_SIZE] = entry
    for slot, content in enumerate(slots):
        start = SLOT_FIRST_SECTOR[slot] * SECTOR_SIZE
        image[start : start + len(SLOT_CONTENTS[content])] = SLOT_CONTENTS[content]
    for offset, bit in flips:
        image[offset] ^= 1 << bit
    return bytes(image)


flash_recipes = st.tuples(
    st.tuples(journal_entries, journal_entries),
    st.tuples(st.integers(0, len(SLOT_CONTENTS) - 1), st.integers(0, len(SLOT_CONTENTS) - 1)),
    st.lists(st.tuples(st.integers(0, FLASH_SIZE - 1), st.integers(0, 7)), max_size=4),
)


def check_mount(image: bytes) -> None:
    """Any image mounts, says what it found, hands out only verified tables, and still takes a new routine."""
    storage = Storage(Flash.from_image(image))
    report = storage.boot_report
    assert isinstance(report.outcome, BootOutcome)
    held = storage.active_table()
    if held is not None:
        assert zlib.crc32(held) == storage.active.crc
        decode_table(held)
    else:
        assert report.outcome not in (BootOutcome.RECOVERED_PREVIOUS,)
    # and the band stays usable: it takes a new routine, at worst after refusing a resume over damaged bytes
    data = TABLES[0]
    for attempt in range(2):
        try:
            offset = storage.begin_upload(len(data), zlib.crc32(data))
            if offset < len(data):
                storage.write_chunk(offset, data[offset:])
            storage.commit()
            break
        except (TableFormatError, FlashError):
            assert attempt == 0 and storage.upload is None  # the refused upload is forgotten: the next one starts over
    assert Storage(storage.flash).active_table() == data


@QUICK
@given(flash_recipes)
def test_storage_mounts_any_image_and_never_hands_out_a_bad_table(recipe):
    check_mount(flash_image(*recipe))


# ------------------------------------------------------------------ frame parser


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut in pieces of the given sizes (cycled; each at least 1 byte)."""
    pieces, position, index = [], 0, 0
    while position < len(data):
        size = max(1, sizes[index % len(sizes)]) if sizes else len(data)
        pieces.append(data[position : position + size])
        position += size
        index += 1
    return pieces


def check_frames(items: list[tuple[str, bytes]], sizes: list[int]) -> None:
    """Frames and garbage fed in any chunking: the same messages as fed whole, and every intact frame among them."""
    stream = bytearray()
    expected = []
    for what, payload in items:
        if what == "frame":
            stream += b"\x00" + encode_frame(payload)  # a delimiter first: garbage before cannot swallow it
            if len(payload) <= MAX_FRAME_PAYLOAD:
                expected.append(payload)
        else:
            stream += payload
    whole = FrameParser().feed(bytes(stream))
    parser = FrameParser()
    pieces = [message for chunk in chunked(bytes(stream), sizes) for message in parser.feed(chunk)]
    assert pieces == whole
    # every intact frame comes out, in order (garbage may add frames of its own, never remove one)
    found = iter(whole)
    assert all(any(message == got for got in found) for message in expected)


chunk_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=20)


@QUICK
@given(
    st.lists(st.one_of(st.binary(min_size=1, max_size=300).map(lambda m: ("frame", m)), st.binary(max_size=50).map(lambda g: ("garbage", g))), max_size=12),
    chunk_sizes,
)
def test_frame_parser_any_chunking(items, sizes):
    check_frames(items, sizes)


# ------------------------------------------------------------------ the band's handler


STATES = ["no routine", "idle", "running", "paused", "finished", "uploading"]


def band_in(state: str) -> tuple[Band, ProtocolHandler, list[bytes]]:
    clock = VirtualClock()
    data = TABLES[0]
    band = Band(storage_with(None if state == "no routine" else data), clock)
    handler = ProtocolHandler(band)
    sent: list[bytes] = []
    handler.attach("fuzz", sent.append)
    if state in ("running", "paused", "finished"):
        band.start()
    if state == "paused":
        clock.set(1500)
        band.pause()
    if state == "finished":
        band.skip()
        while (deadline := band.next_deadline()) is not None:
            clock.set(deadline)
            band.process()
    if state == "uploading":
        other = TABLES[-1]
        band.storage.begin_upload(len(other), zlib.crc32(other))
        band.storage.write_chunk(0, other[:50])
    sent.clear()
    return band, handler, sent


def responses(sent: list[bytes]) -> list[bytes]:
    parser = FrameParser(4096)
    messages = [m for frame in sent for m in parser.feed(frame)]
    return [m for m in messages if m[1] == MessageKind.RESPONSE]


messages = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2, 255]),
        st.sampled_from([*MessageKind, 3, 255]),
        st.one_of(st.sampled_from(list(Opcode)), st.integers(0, 255)),
        st.integers(0, 255),
        st.binary(max_size=260),
    ).map(lambda t: bytes(t[:4]) + t[4]),
)


def check_handler(state: str, batch: list[bytes]) -> None:
    """Each message framed and fed to the band in ``state``: one answer per request, echoing opcode and id."""
    band, handler, sent = band_in(state)
    for message in batch:
        sent.clear()
        handler.receive("fuzz", encode_frame(message))  # the byte-level entry the serial port uses
        answers = responses(sent)
        if len(message) >= MESSAGE_HEADER_SIZE and message[1] == MessageKind.REQUEST:
            assert len(answers) == 1, message.hex()
            assert answers[0][2:4] == message[2:4]  # the same opcode and request id
        elif len(message) >= MESSAGE_HEADER_SIZE:
            assert answers == []  # stray responses and notifications get no answer
        else:
            assert len(answers) <= 1
    # whatever came before, the band still answers and never holds a table that fails its check
    sent.clear()
    handler.receive("fuzz", encode_frame(bytes([PROTOCOL_VERSION, MessageKind.REQUEST, Opcode.INFO, 9])))
    assert len(responses(sent)) == 1
    held = band.storage.active_table()
    assert held is None or zlib.crc32(held) == band.storage.active.crc


@QUICK
@given(st.sampled_from(STATES), st.lists(messages, min_size=1, max_size=8))
def test_handler_answers_every_request_exactly_once_in_every_state(state, batch):
    check_handler(state, batch)


def check_noise(state: str, noise: bytes, sizes: list[int]) -> None:
    """Raw bytes in any chunking never break the band: after a delimiter it answers again."""
    _, handler, sent = band_in(state)
    for chunk in chunked(noise, sizes):
        handler.receive("fuzz", chunk)
    sent.clear()
    handler.receive("fuzz", b"\x00" + encode_frame(bytes([PROTOCOL_VERSION, MessageKind.REQUEST, Opcode.STATUS, 1])))
    assert len(responses(sent)) == 1  # a delimiter resynchronises the band after any garbage


@QUICK
@given(st.sampled_from(STATES), st.binary(max_size=600), chunk_sizes)
def test_handler_survives_raw_bytes_in_any_chunking(state, noise, sizes):
    check_noise(state, noise, sizes)
