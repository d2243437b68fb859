"""The pipelined upload: BEGIN, data and COMMIT sent without waiting for each other's answers (SPEC §19.2).

In virtual time on the in-process loopback to the band's real protocol handler
(:class:`tests.e2e.test_link_robustness.Loopback`): frames the tests garble fail
their CRC on the band, as on a noisy line, and the retransmission timers run
without real waiting.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest

from benchmarks.tables import upload_table
from companion.client import BandClient
from firmware_sim.handler import REPLY_CACHE_SIZE, ProtocolHandler
from protocol.constants import DEFAULT_UPLOAD_WINDOW, MessageKind, Opcode, Status
from protocol.errors import BusyError
from protocol.framing import FrameParser, encode_frame
from protocol.messages import (
    InfoRequest,
    UploadBeginRequest,
    UploadCommitRequest,
    UploadDataRequest,
    decode_message,
    encode_request,
)

from .test_link_robustness import FULL, NAUSEA, Loopback, band_with
from .test_paced_link import run_virtual

TABLE = upload_table(8192)


def payloads(data: bytes) -> list[bytes]:
    return list(FrameParser(1024).feed(data))


class Garble:
    """Corrupts (once, or ``times`` times) the frames to the band whose message ``matches``; the band drops them (bad CRC)."""

    def __init__(self, matches: Callable[[bytes], bool], times: int = 1) -> None:
        self.matches, self.left, self.garbled = matches, times, 0

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        for piece in data.split(b"\x00"):
            if piece and self.left and self.matches(payloads(b"\x00" + piece + b"\x00")[0]):
                piece = piece[:-1] + bytes([piece[-1] ^ 0x55 or 1])  # a CRC byte: the frame stays a frame, its CRC fails
                self.left -= 1
                self.garbled += 1
            out += piece + b"\x00"
        return bytes(out[:-1])


def is_request(opcode: Opcode, where: Callable[[object], bool] = lambda body: True) -> Callable[[bytes], bool]:
    def matches(message: bytes) -> bool:
        return message[1] == MessageKind.REQUEST and message[2] == opcode and where(decode_message(message).body)
    return matches


class Answers:
    """Records (opcode, status) of every answer the band sends."""

    def __init__(self) -> None:
        self.seen: list[tuple[Opcode, Status]] = []

    def __call__(self, message: bytes) -> bytes:
        if message[1] == MessageKind.RESPONSE:
            self.seen.append((Opcode(message[2]), Status(message[4])))
        return message

    def of(self, opcode: Opcode) -> list[Status]:
        return [status for op, status in self.seen if op == opcode]


def upload(transport: Loopback, data: bytes = TABLE, **kwargs: object) -> object:
    async def job() -> object:
        async with BandClient(transport, **kwargs) as client:  # type: ignore[arg-type]
            return await client.upload(data)
    return run_virtual(job)


def sent_opcodes(transport: Loopback) -> list[list[Opcode]]:
    """The opcodes of each transport write, in order (leaving out the clock the hello sets, SET_TIME)."""
    writes = [[Opcode(message[2]) for message in payloads(data)] for data in transport.sent]
    return [write for write in writes if write != [Opcode.SET_TIME]]


# --------------------------------------------------------------------------
# BEGIN


def test_the_first_data_and_begin_share_a_write_and_commit_rides_with_the_last_frame():
    band = band_with()
    transport = Loopback(ProtocolHandler(band))
    result = upload(transport)
    writes = sent_opcodes(transport)
    assert writes[1][:2] == [Opcode.UPLOAD_BEGIN, Opcode.UPLOAD_DATA]  # after INFO: BEGIN, not waited for
    assert writes[-1][-2:] == [Opcode.UPLOAD_DATA, Opcode.UPLOAD_COMMIT]
    assert band.storage.active_table() == TABLE and result.retransmissions == 0  # type: ignore[attr-defined]


def test_progress_ends_at_the_whole_table_when_the_last_data_answer_is_lost():
    """COMMIT's answer came but the last frame's did not: the band holds every byte, and the user's
    progress says so (it once stopped one frame short, which a fleet upload under load showed)."""
    band = band_with()
    lost: list[int] = []

    def lose_last_data_answer(message: bytes) -> bytes:
        answer = decode_message(message)
        if answer.opcode == Opcode.UPLOAD_DATA and answer.status == Status.OK and answer.body.offset == len(TABLE) and not lost:
            lost.append(answer.body.offset)
            return b""
        return message

    transport = Loopback(ProtocolHandler(band), lose_last_data_answer)
    seen: list[int] = []

    async def job() -> object:
        async with BandClient(transport) as client:  # type: ignore[arg-type]
            return await client.upload(TABLE, lambda confirmed, total: seen.append(confirmed))

    run_virtual(job)
    assert lost == [len(TABLE)] and band.storage.active_table() == TABLE
    assert seen[0] == 0 and seen[-1] == len(TABLE) and seen == sorted(set(seen))  # rising, once per figure, ending at 100 %


def test_a_refused_begin_is_reported_and_the_data_behind_it_touches_no_upload():
    band = band_with(NAUSEA)
    other = upload_table(4096)
    band.storage.begin_upload(len(other), zlib.crc32(other))  # another table's upload, resumable at offset 0
    band.start()  # playing: BEGIN is refused
    answers = Answers()
    transport = Loopback(ProtocolHandler(band), answers)
    with pytest.raises(BusyError, match="a routine is playing"):
        upload(transport, FULL)
    assert answers.of(Opcode.UPLOAD_BEGIN) == [Status.BUSY]
    assert answers.of(Opcode.UPLOAD_DATA) and set(answers.of(Opcode.UPLOAD_DATA)) == {Status.NO_UPLOAD}
    upload_state = band.storage.upload
    assert upload_state is not None and (upload_state.length, upload_state.crc, upload_state.offset) == (len(other), zlib.crc32(other), 0)
    assert band.storage.active_table() == NAUSEA


def test_a_lost_begin_is_sent_again_and_so_is_the_data_behind_it():
    band = band_with()
    answers = Answers()
    garble = Garble(is_request(Opcode.UPLOAD_BEGIN))
    transport = Loopback(ProtocolHandler(band), answers, to_band=garble)
    upload(transport)
    assert garble.garbled == 1 and Status.NO_UPLOAD in answers.of(Opcode.UPLOAD_DATA)  # data that came before BEGIN
    assert band.storage.active_table() == TABLE


def test_a_lost_begin_with_the_whole_table_and_commit_behind_it_is_recovered():
    """A short table: BEGIN, its data and COMMIT in one write. BEGIN garbled: the data and COMMIT are answered
    NO_UPLOAD (nothing stored), and the upload sends all three again instead of failing."""
    band = band_with()
    answers = Answers()
    garble = Garble(is_request(Opcode.UPLOAD_BEGIN))
    transport = Loopback(ProtocolHandler(band), answers, to_band=garble)
    upload(transport, NAUSEA)
    assert garble.garbled == 1 and answers.of(Opcode.UPLOAD_COMMIT) == [Status.NO_UPLOAD, Status.OK]
    assert band.storage.active_table() == NAUSEA


def test_a_window_of_data_behind_begin_never_pushes_begins_answer_out_of_the_reply_cache():
    handler = ProtocolHandler(band_with())
    handler.attach("ble", lambda frame: None)
    begin = encode_request(UploadBeginRequest(length=len(TABLE), crc32=zlib.crc32(TABLE)), 1)
    first = handler.handle("ble", begin)
    chunk = handler.max_frame - 8
    for index in range(max(DEFAULT_UPLOAD_WINDOW, REPLY_CACHE_SIZE) + 1):  # more than a window, more than the cache holds
        handler.handle("ble", encode_request(UploadDataRequest(offset=index * chunk, data=TABLE[index * chunk : (index + 1) * chunk]), 2 + index))
    stored = handler.band.storage.upload
    assert stored is not None and stored.offset > 0
    # UPLOAD_DATA is idempotent (not kept): BEGIN's retry still gets its first answer and is not carried out again.
    assert handler.handle("ble", begin) == first and handler.band.storage.upload == stored


# --------------------------------------------------------------------------
# Data and COMMIT


def test_a_garbled_frame_mid_window_is_sent_again():
    band = band_with()
    fifth = 4 * 248  # the loopback's MTU fits the band's largest chunk: frames start at multiples of 248
    garble = Garble(is_request(Opcode.UPLOAD_DATA, lambda body: body.offset == fifth))  # type: ignore[attr-defined]
    transport = Loopback(ProtocolHandler(band), to_band=garble)
    result = upload(transport)
    assert garble.garbled == 1 and result.retransmissions > 0  # type: ignore[attr-defined]
    assert band.storage.active_table() == TABLE


def test_commit_behind_a_lost_last_frame_finds_bytes_missing_and_the_upload_still_ends_verified():
    band = band_with(NAUSEA)
    answers = Answers()
    last = Garble(is_request(Opcode.UPLOAD_DATA, lambda body: body.offset + len(body.data) == len(TABLE)))  # type: ignore[attr-defined]
    transport = Loopback(ProtocolHandler(band), answers, to_band=last)
    upload(transport)
    assert last.garbled == 1
    assert answers.of(Opcode.UPLOAD_COMMIT) == [Status.BAD_OFFSET, Status.OK]  # the band refused the incomplete table
    assert band.storage.active_table() == TABLE


def test_a_lost_commit_is_sent_again():
    band = band_with()
    garble = Garble(is_request(Opcode.UPLOAD_COMMIT))
    transport = Loopback(ProtocolHandler(band), to_band=garble)
    result = upload(transport)
    assert garble.garbled == 1 and result.commit_retried  # type: ignore[attr-defined]
    assert band.storage.active_table() == TABLE


def test_commit_never_activates_a_partial_table():
    handler = ProtocolHandler(band_with(NAUSEA))
    handler.attach("serial", lambda frame: None)
    crc = zlib.crc32(FULL)
    handler.handle("serial", encode_request(UploadBeginRequest(length=len(FULL), crc32=crc), 1))
    handler.handle("serial", encode_request(UploadDataRequest(offset=0, data=FULL[:100]), 2))
    early = decode_message(handler.handle("serial", encode_request(UploadCommitRequest(), 3)) or b"")
    assert early.status == Status.BAD_OFFSET and handler.band.storage.active_table() == NAUSEA
    handler.handle("serial", encode_request(UploadDataRequest(offset=100, data=FULL[100:]), 4))
    done = decode_message(handler.handle("serial", encode_request(UploadCommitRequest(), 5)) or b"")
    assert done.status == Status.OK and handler.band.storage.active_table() == FULL


def test_data_and_commit_need_the_links_own_accepted_begin():
    handler = ProtocolHandler(band_with(NAUSEA))
    for link in ("a", "b"):
        handler.attach(link, lambda frame: None)
    crc = zlib.crc32(FULL)
    handler.handle("a", encode_request(UploadBeginRequest(length=len(FULL), crc32=crc), 1))
    handler.detach("a")  # a's upload stays resumable
    refused = decode_message(handler.handle("b", encode_request(UploadBeginRequest(length=1 << 20, crc32=0), 1)) or b"")
    assert refused.status == Status.TOO_LARGE
    for request_id, request in enumerate((UploadDataRequest(offset=0, data=FULL[:100]), UploadCommitRequest()), 2):
        assert decode_message(handler.handle("b", encode_request(request, request_id)) or b"").status == Status.NO_UPLOAD
    assert handler.band.storage.upload is not None and handler.band.storage.upload.offset == 0
    handler.handle("b", encode_request(InfoRequest(), 9))  # a new session forgets b's BEGIN too
    assert decode_message(handler.handle("b", encode_request(UploadDataRequest(offset=0, data=FULL[:100]), 10)) or b"").status == Status.NO_UPLOAD


# --------------------------------------------------------------------------
# Old peers


def test_a_band_from_before_pipelining_gets_begin_alone_first():
    def old_firmware(message: bytes) -> bytes:
        if message[1] == MessageKind.RESPONSE and message[2] == Opcode.INFO:
            message = message[:11] + b"\x01" + message[12:]  # firmware 0.1.x
        return message

    band = band_with()
    transport = Loopback(ProtocolHandler(band), old_firmware)
    upload(transport)
    assert sent_opcodes(transport)[1] == [Opcode.UPLOAD_BEGIN] and band.storage.active_table() == TABLE


def test_a_companion_that_waits_for_every_answer_still_uploads():
    """The flow of companions from before pipelining: BEGIN, then each frame, then COMMIT, each awaited."""
    band = band_with()
    transport = Loopback(ProtocolHandler(band))

    async def job() -> None:
        async with BandClient(transport) as client:
            begin = await client.request(UploadBeginRequest(length=len(FULL), crc32=zlib.crc32(FULL)))
            offset = begin.offset
            while offset < len(FULL):
                offset = (await client.request(UploadDataRequest(offset=offset, data=FULL[offset : offset + begin.max_chunk]))).offset
            await client.request(UploadCommitRequest())

    run_virtual(job)
    assert band.storage.active_table() == FULL
    assert all(len(payloads(data)) == 1 for data in transport.sent)  # one request per write, as they send


def test_frames_behind_one_another_in_a_write_each_get_their_answer():
    handler = ProtocolHandler(band_with())
    sent: list[bytes] = []
    handler.attach("ble", sent.append)
    crc = zlib.crc32(NAUSEA)
    handler.receive("ble", encode_frame(encode_request(UploadBeginRequest(length=len(NAUSEA), crc32=crc), 1))
                    + encode_frame(encode_request(UploadDataRequest(offset=0, data=NAUSEA), 2))
                    + encode_frame(encode_request(UploadCommitRequest(), 3)))
    answers = [decode_message(message) for data in sent for message in payloads(data)]
    responses = [(m.opcode, m.status) for m in answers if m.kind == MessageKind.RESPONSE]
    assert responses == [(Opcode.UPLOAD_BEGIN, Status.OK), (Opcode.UPLOAD_DATA, Status.OK), (Opcode.UPLOAD_COMMIT, Status.OK)]
    assert handler.band.storage.active_table() == NAUSEA


# --------------------------------------------------------------------------
# On the paced radio


def test_a_full_window_queued_on_a_small_mtu_link_is_not_taken_for_lost():
    """ATT MTU 23: a window is 16 frames of 13 writes each, 35 connection events of queue at 6 packets per
    event; the retransmission timer restarts with every acknowledgement (RFC 6298), so none is sent twice."""
    from ble_stack.paced_link import LinkTiming, PacedLink
    from companion.ble.bumble_backend import BumbleCentral
    from firmware_sim.local import LocalBleBand

    from .test_ble_e2e import ADDRESS

    async def job() -> tuple[object, bytes | None]:
        link = PacedLink(LinkTiming(interval_ms=15.0, packets_per_event=6, data_length=251, phy="2M"))
        async with LocalBleBand(link=link) as local, BumbleCentral(link=link, att_mtu=23) as central, \
                BandClient.open(ADDRESS, ble=central.backend) as client:
            assert client.transport.mtu == 20
            return await client.upload(TABLE), local.band.storage.active_table()

    result, active = run_virtual(job)
    assert active == TABLE and result.retransmissions == 0 and result.frames_sent == -(-len(TABLE) // 246)  # type: ignore[attr-defined]


def test_answers_to_a_stream_of_data_leave_together_and_a_lone_request_is_answered_at_once():
    import asyncio

    from firmware_sim.handler import ACK_HOLD_S

    handler = ProtocolHandler(band_with())
    sends: list[tuple[float, list[tuple[Opcode, int]]]] = []

    async def job() -> None:
        loop = asyncio.get_running_loop()
        handler.attach("ble", lambda data: sends.append((loop.time(), [(Opcode(m[2]), m[3]) for m in payloads(data)])))
        crc = zlib.crc32(TABLE)
        handler.receive("ble", encode_frame(encode_request(UploadBeginRequest(length=len(TABLE), crc32=crc), 1)))
        for index in range(3):  # back to back, as a windowed companion sends them
            handler.receive("ble", encode_frame(encode_request(UploadDataRequest(offset=index * 200, data=TABLE[index * 200 : (index + 1) * 200]), 2 + index)))
            await asyncio.sleep(0.001)
        await asyncio.sleep(ACK_HOLD_S)
        handler.receive("ble", encode_frame(encode_request(UploadDataRequest(offset=600, data=TABLE[600:800]), 5)))
        handler.receive("ble", encode_frame(encode_request(UploadCommitRequest(), 6)))  # sends what is held first
        await asyncio.sleep(1.0)  # a lone request, long after the stream
        handler.receive("ble", encode_frame(encode_request(UploadDataRequest(offset=800, data=TABLE[800:1000]), 7)))

    run_virtual(job)
    got = [answers for _, answers in sends]
    assert got[0] == [(Opcode.UPLOAD_BEGIN, 1)]
    assert got[1] == [(Opcode.UPLOAD_DATA, 2)]  # the first of a stream goes at once
    assert got[2] == [(Opcode.UPLOAD_DATA, 3), (Opcode.UPLOAD_DATA, 4)]  # the next ones together, after the hold
    assert got[3] == [(Opcode.UPLOAD_DATA, 5), (Opcode.UPLOAD_COMMIT, 6)]  # order kept: held answer, then COMMIT's
    assert got[4] == [(Opcode.UPLOAD_DATA, 7)] and sends[4][0] - sends[3][0] >= 1.0  # alone, not held
