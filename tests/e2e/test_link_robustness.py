"""Noisy, slow and strange links: retries, adaptive timers and chunks, tolerant decoding (issue 11, parts 1-3).

Two benches: the real pty path (a `handcue-sim` process, optionally behind the
faulty cable of :mod:`tests.e2e.link_relay`) for what is about the link, and an
in-process loopback to the band's real protocol handler, whose answers a test
may rewrite, for what is about a strange band.
"""

from __future__ import annotations

import asyncio
import os
import termios
import time
import zlib
from collections.abc import Callable

import pytest

from benchmarks.tables import upload_table
from companion import compile_routine, load_routine
from companion.cli_band import describe_status
from companion.client import BandAnswerError, BandClient, BandTimeout
from companion.rtt import MIN_RTO_S, RoundTripTimer
from companion.transport.base import Transport
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.constants import DEFAULT_UPLOAD_WINDOW, MessageKind, Opcode
from protocol.errors import BadRequestError, BusyError
from protocol.framing import FrameParser, encode_frame
from protocol.messages import (
    InfoRequest,
    SkipRequest,
    StartRequest,
    UploadBeginRequest,
    UploadDataRequest,
    decode_message,
    encode_request,
)

from .link_relay import ByteFaults, DropFrames, PtyRelay
from .test_serial_e2e import Sim

TIMEOUT = 30
NAUSEA = compile_routine(load_routine("nausea-pc6"))
FULL = compile_routine(load_routine("full-hand-massage"))


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def is_answer(opcode: Opcode) -> Callable[[bytes], bool]:
    return lambda message: message[1] == MessageKind.RESPONSE and message[2] == opcode


# --------------------------------------------------------------------------
# In-process bench: the band's real handler behind a transport whose answers a test may rewrite


class Loopback(Transport):
    """A link straight into a :class:`ProtocolHandler`; ``answers`` may rewrite (or lose: b"") each message it sends back."""

    def __init__(self, handler: ProtocolHandler, answers: Callable[[bytes], bytes] = lambda m: m,
                 to_band: Callable[[bytes], bytes] = lambda b: b) -> None:
        super().__init__("loop:")
        self.handler, self.answers, self.to_band = handler, answers, to_band
        self.parser = FrameParser(1024)
        self.sent: list[bytes] = []

    @property
    def mtu(self) -> int:
        return 4096

    @property
    def min_rto(self) -> float:
        return 0.03  # a call away

    async def connect(self, timeout: float) -> None:
        self.handler.attach("loop", self._from_band)

    def _from_band(self, frame: bytes) -> None:
        for message in self.parser.feed(frame):
            message = self.answers(message)
            if message:
                asyncio.get_running_loop().call_soon(self._deliver, encode_frame(message))

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        self.handler.receive("loop", self.to_band(data))

    async def disconnect(self) -> None:
        self.handler.detach("loop")
        self._deliver_end("closed")


def band_with(table: bytes | None = None) -> Band:
    return Band(storage_with(table) if table else Storage(Flash(FLASH_SIZE)), VirtualClock())


def rewrite(opcode: Opcode, change: Callable[[bytearray], bytes | bytearray]) -> Callable[[bytes], bytes]:
    def answers(message: bytes) -> bytes:
        return bytes(change(bytearray(message))) if is_answer(opcode)(message) else message
    return answers


def at(offset: int, value: int) -> Callable[[bytearray], bytearray]:
    def change(message: bytearray) -> bytearray:
        message[offset] = value
        return message
    return change


async def loop_upload(transport: Loopback, data: bytes, **kwargs) -> object:
    async with BandClient(transport, **kwargs) as client:
        return await client.upload(data)


# --------------------------------------------------------------------------
# 1. Framing that resynchronises; retries that never repeat an action


def test_a_torn_frame_never_swallows_the_next_request(tmp_path):
    band = Sim(tmp_path)

    async def job():
        async with BandClient.open(band.address) as client:
            torn = encode_frame(encode_request(StartRequest(), 77))[:-4]  # the cable was pulled mid-frame
            await client.transport.send(torn)
            started = time.monotonic()
            info = await client.info()
            return info, client.retries, time.monotonic() - started

    try:
        info, retries, took = run(job())
    finally:
        band.stop()
    assert info.protocol_version == 1
    assert retries == 0 and took < 0.5  # answered at the first try: the torn frame did not swallow it


def test_a_repeated_state_changing_request_gets_its_first_answer_and_is_not_done_again():
    band = band_with(FULL)
    handler = ProtocolHandler(band)
    first = handler.handle("serial", encode_request(StartRequest(), 5))
    skip = encode_request(SkipRequest(), 6)
    skipped = handler.handle("serial", skip)
    step = band.status().step
    assert handler.handle("serial", skip) == skipped  # the retry of a lost answer
    assert band.status().step == step  # ... did not skip a second step
    assert handler.handle("serial", encode_request(StartRequest(), 5)) == first
    # The same id on another link, or with other bytes, is a new request.
    assert handler.handle("ble", skip) != skipped and band.status().step != step


def test_info_starts_a_session_so_an_old_sessions_answer_is_never_replayed():
    band = band_with(NAUSEA)
    handler = ProtocolHandler(band)
    events: list[dict] = []
    band.listeners.append(events.append)
    handler.handle("serial", encode_request(StartRequest(), 1))
    handler.handle("serial", encode_request(InfoRequest(), 9))  # the next session says hello
    handler.handle("serial", encode_request(StartRequest(), 1))  # its first START happens to reuse id 1
    assert sum(1 for e in events if e.get("event") == "state" and e.get("state") == "running") == 2


def test_a_retried_hello_does_not_make_a_retried_request_run_twice():
    """The hello's INFO and a SKIP behind it lost their answers: INFO's retry comes first, then SKIP's."""
    band = band_with(FULL)
    handler = ProtocolHandler(band)
    handler.handle("serial", encode_request(StartRequest(), 4))
    info, skip = encode_request(InfoRequest(), 5), encode_request(SkipRequest(), 6)
    handler.handle("serial", info)
    skipped = handler.handle("serial", skip)
    where = band.status()
    handler.handle("serial", info)  # INFO again, same id and bytes: a retry, the same session
    assert handler.handle("serial", skip) == skipped  # the first answer again
    now = band.status()
    assert (now.step, now.iteration, now.hand, now.finger) == (where.step, where.iteration, where.hand, where.finger)  # skipped once


def test_a_commit_whose_answer_was_lost_is_recognised_as_done(tmp_path):
    band = Sim(tmp_path)
    lose = DropFrames(is_answer(Opcode.UPLOAD_COMMIT))

    async def job():
        async with PtyRelay(band.port, to_companion=lose) as relay, BandClient.open(f"serial:{relay.path}") as client:
            result = await client.upload(FULL)
            return result, await client.info(), client.dropped_responses

    try:
        result, info, _ = run(job())
    finally:
        band.stop()
    assert len(lose.lost) == 1  # the band's first answer to COMMIT never arrived
    assert result.commit_retried and result.crc32 == zlib.crc32(FULL)
    assert result.frames_sent == 2 and result.retransmissions == 0  # the table was not sent again
    assert info.routine_crc32 == zlib.crc32(FULL)


def test_a_commit_answer_lost_and_forgotten_by_the_band_is_recognised_by_info():
    """The band rebooted (or forgot) after committing: the retry gets NO_UPLOAD, INFO shows the new table."""
    band = band_with()
    handler = ProtocolHandler(band)
    lost = False

    def answers(message: bytes) -> bytes:
        nonlocal lost
        if is_answer(Opcode.UPLOAD_COMMIT)(message) and not lost:
            lost = True
            handler._replies.clear()  # the band forgot what it answered
            return b""
        return message

    result = run(loop_upload(Loopback(handler, answers), FULL))
    assert result.commit_retried and band.storage.active_table() == FULL


# --------------------------------------------------------------------------
# 2. Timeouts that follow the link


def test_round_trip_timer_follows_samples_and_backs_off():
    timer = RoundTripTimer()
    assert timer.rto == 1.0
    timer.sample(2.5)  # a band that answers in 2.5 s
    assert timer.rto == pytest.approx(2.5 + 4 * 1.25)
    for _ in range(200):
        timer.sample(0.001)
    assert timer.rto == MIN_RTO_S
    timer.expired()
    timer.expired()
    assert timer.rto == 4 * MIN_RTO_S
    timer.sample(0.001)
    assert timer.rto == MIN_RTO_S


@pytest.mark.parametrize(("baud", "table"), [(1200, NAUSEA), (9600, FULL)], ids=["1200-nausea", "9600-full"])
def test_upload_completes_at_low_baud(tmp_path, baud, table):
    band = Sim(tmp_path, "--baud", str(baud))

    async def job():
        async with BandClient.open(f"{band.address}?baud={baud}") as client:
            return await client.upload(table), await client.info()

    try:
        result, info = run(job())
    finally:
        band.stop()
    assert result.crc32 == info.routine_crc32 == zlib.crc32(table)


def test_upload_and_erase_honour_the_timeout():
    master, slave = os.openpty()  # a port with nothing behind it

    async def job():
        client = BandClient.open(f"serial:{os.ttyname(slave)}", timeout=0.3, hello=False)
        async with client:
            started = time.monotonic()
            with pytest.raises(BandTimeout, match=r"UPLOAD_BEGIN within 0\.3 s"):
                await client.upload(NAUSEA)
            with pytest.raises(BandTimeout, match=r"ERASE within 0\.3 s"):
                await client.erase()
            return time.monotonic() - started

    try:
        took = asyncio.run(asyncio.wait_for(job(), 5))
    finally:
        os.close(master)
        os.close(slave)
    assert took < 1.5


def test_band_answers_at_once_after_a_failed_upload(tmp_path):
    """Retransmissions never outrun the wire, so a failed upload leaves no backlog for the band to chew through."""
    band = Sim(tmp_path, "--baud", "9600")
    answers = ByteFaults()
    table = upload_table(4096)

    async def job():
        async with PtyRelay(band.port, to_companion=answers) as relay, BandClient.open(f"serial:{relay.path}?baud=9600", timeout=0.4) as client:
            def cut_after_begin(confirmed: int, total: int) -> None:
                answers.cut = True  # from now on every acknowledgement is lost
            started = time.monotonic()
            with pytest.raises(BandTimeout, match="did not acknowledge upload data at offset 0"):
                await client.upload(table, cut_after_begin)
            failed = time.monotonic() - started
            answers.cut = False
            started = time.monotonic()
            await client.request(InfoRequest(), timeout=2)
            return failed, time.monotonic() - started

    try:
        failed, next_answer = run(job())
    finally:
        band.stop()
    assert failed < 6
    assert next_answer < 0.5


def test_a_refusal_known_at_begin_comes_before_any_data_is_stored():
    band = band_with(NAUSEA)  # its clock stands still: the routine keeps playing
    transport = Loopback(ProtocolHandler(band))
    progress: list[int] = []

    async def job():
        async with BandClient(transport) as client:
            await client.start()
            with pytest.raises(BusyError, match="a routine is playing"):
                await client.upload(FULL, lambda confirmed, total: progress.append(confirmed))

    run(job())
    # Refused at UPLOAD_BEGIN: the data sent behind it (before its answer) stored nothing, no progress was reported.
    assert progress == [] and band.storage.upload is None and band.storage.active_table() == NAUSEA


# --------------------------------------------------------------------------
# 3. Strange bands, noisy links


def test_unknown_codes_read_as_unknown_n():
    band = band_with(NAUSEA)
    transport = Loopback(ProtocolHandler(band), rewrite(Opcode.INFO, at(15, 9)))

    async def job():
        async with BandClient(transport) as client:
            info = await client.info()
            client.transport.answers = rewrite(Opcode.START, at(6 + 3, 77))  # technique byte of the STATUS body
            return info, await client.start()

    info, status = run(job())
    assert info.state is None and info.state_text == "unknown (9)" and info.to_json()["state"] == "unknown (9)"
    assert status.technique is None and status.to_json()["technique"] == "unknown (77)"
    assert "unknown (77)" in describe_status(status)


def test_an_unknown_status_code_names_itself():
    transport = Loopback(ProtocolHandler(band_with()), rewrite(Opcode.START, at(4, 99)))

    async def job():
        async with BandClient(transport) as client:
            await client.start()

    with pytest.raises(BadRequestError, match=r"START with status unknown \(99\): the band holds no routine"):
        run(job())


@pytest.mark.parametrize(
    ("opcode", "offset", "value", "words"),
    [
        (Opcode.UPLOAD_BEGIN, 10, 0, "chunks of at most 0 bytes"),  # max_chunk = 0 (low byte; 248 < 256)
        (Opcode.UPLOAD_BEGIN, 12, 0, "a window of 0 frames"),
        (Opcode.INFO, 21, 0, "offers frames of 0 bytes"),  # max_frame high byte: 256 -> 0
    ],
)
def test_unusable_band_limits_get_a_clear_error_never_a_hang(opcode, offset, value, words):
    transport = Loopback(ProtocolHandler(band_with()), rewrite(opcode, at(offset, value)))
    with pytest.raises(BandAnswerError, match=words):
        run(loop_upload(transport, NAUSEA))
    opcodes = [decode_message(m).opcode for f in transport.sent for m in FrameParser(1024).feed(f)]
    # hello, then only what went before BEGIN's answer (BEGIN, the first window of data, and COMMIT
    # behind it when the table fits that window): nothing sent again, no loop
    assert opcodes.count(Opcode.INFO) == 1 and opcodes.count(Opcode.UPLOAD_BEGIN) <= 1
    assert opcodes.count(Opcode.UPLOAD_DATA) <= DEFAULT_UPLOAD_WINDOW and opcodes.count(Opcode.UPLOAD_COMMIT) <= 1


def test_a_malformed_answer_names_the_request():
    transport = Loopback(ProtocolHandler(band_with()), rewrite(Opcode.UPLOAD_BEGIN, lambda m: m[:-2]))
    with pytest.raises(BandAnswerError, match=r"UPLOAD_BEGIN \(request id \d+\) with a message this companion cannot read"):
        run(loop_upload(transport, NAUSEA))


def test_the_commit_crc_must_equal_the_tables():
    transport = Loopback(ProtocolHandler(band_with()), rewrite(Opcode.UPLOAD_COMMIT, at(6, 0x5A)))
    with pytest.raises(BandAnswerError, match=f"the table's is 0x{zlib.crc32(NAUSEA):08X}"):
        run(loop_upload(transport, NAUSEA))


def test_noisy_link_shrinks_chunks_and_never_exhausts_request_ids():
    """1 % of the bytes to the band corrupted: fixed 248-byte chunks would mostly fail; adaptive ones get through."""
    band = band_with()
    noise = ByteFaults(seed=11, corrupt=0.01)
    transport = Loopback(ProtocolHandler(band), to_band=noise)
    table = upload_table(8000)
    result = run(loop_upload(transport, table))
    assert band.storage.active_table() == table and result.retransmissions > 0
    sizes = [len(decode_message(m).body.data) for f in transport.sent for m in FrameParser(1024).feed(f)
             if decode_message(m).opcode == Opcode.UPLOAD_DATA]
    assert min(sizes) < 64 < max(sizes)  # smaller when frames kept failing, larger when clean again


@pytest.mark.parametrize(("seed", "corrupt"), [(3, 0.002)])
def test_upload_through_a_corrupting_cable(tmp_path, seed, corrupt):
    band = Sim(tmp_path)
    table = upload_table(8192)

    async def job():
        up, down = ByteFaults(seed=seed, corrupt=corrupt), ByteFaults(seed=seed + 100, corrupt=corrupt)
        async with PtyRelay(band.port, to_band=up, to_companion=down) as relay, BandClient.open(f"serial:{relay.path}") as client:
            result = await client.upload(table)
            return result, await client.info(), up.corrupted + down.corrupted

    try:
        result, info, corrupted = run(job())
    finally:
        band.stop()
    assert corrupted > 0 and info.routine_crc32 == result.crc32 == zlib.crc32(table)


def test_data_frames_send_what_they_say():
    """Guard for the bench itself: an UPLOAD_DATA the loopback carries is the table slice it names."""
    transport = Loopback(ProtocolHandler(band_with()))
    run(loop_upload(transport, NAUSEA))
    for frame in transport.sent:
        for message in FrameParser(1024).feed(frame):
            body = decode_message(message).body
            if isinstance(body, UploadDataRequest):
                assert NAUSEA[body.offset : body.offset + len(body.data)] == body.data
            assert not isinstance(body, UploadBeginRequest) or body.crc32 == zlib.crc32(NAUSEA)


def test_a_flushed_line_is_not_a_closed_port():
    """A cable pull flushes the line: the port was readable, then holds nothing, and a raw tty reads 0 bytes.

    That is no end of file: the transport keeps reading (found by the soak: uploads failed with
    "the port was closed" while the port was open).  A port whose other end is gone still ends.
    """
    from companion.transport.base import TransportClosed
    from companion.transport.serial import SerialTransport

    master, slave = os.openpty()
    path = os.ttyname(slave)

    async def job():
        transport = SerialTransport(f"serial:{path}", path)
        await transport.connect(1.0)
        try:
            os.write(master, b"lost")
            termios.tcflush(slave, termios.TCIOFLUSH)  # the line is flushed after it became readable
            transport._on_readable()  # the wakeup that finds no bytes
            os.write(master, b"kept")
            got = await asyncio.wait_for(transport.receive(), 2)
            os.close(master)
            with pytest.raises(TransportClosed, match="the port was closed"):
                while True:
                    await asyncio.wait_for(transport.receive(), 2)
            return got
        finally:
            await transport.disconnect()

    try:
        assert run(job()) == b"kept"
    finally:
        os.close(slave)


def test_a_link_lost_mid_upload_leaves_no_unretrieved_future():
    """The soak's log showed "Future exception was never retrieved" for the frames still in flight when a port closed."""
    import gc

    from companion.transport.base import TransportClosed

    handler = ProtocolHandler(band_with())
    data_frames = 0

    def lose_the_link(data: bytes) -> bytes:
        nonlocal data_frames
        if any(decode_message(m).opcode == Opcode.UPLOAD_DATA for m in FrameParser(1024).feed(data)):
            data_frames += 1
            if data_frames == 3:  # a window in flight, no answer yet: the port goes away
                asyncio.get_running_loop().call_soon(transport._deliver_end, "the port was closed")
        return data

    transport = Loopback(handler, answers=lambda m: b"" if is_answer(Opcode.UPLOAD_DATA)(m) else m, to_band=lose_the_link)
    reported: list[dict] = []

    async def job():
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        with pytest.raises(TransportClosed):
            await loop_upload(transport, upload_table(4096))
        gc.collect()
        await asyncio.sleep(0)

    run(job())
    assert data_frames >= 3
    assert [c["message"] for c in reported] == []


def test_a_lost_set_time_answer_gives_its_request_id_back_after_the_timeout():
    transport = Loopback(ProtocolHandler(band_with()), lambda m: b"" if is_answer(Opcode.SET_TIME)(m) else m)

    async def job() -> tuple[int, int]:
        async with BandClient(transport, timeout=0.2) as client:
            await client.status()
            waiting = len(client._pending)  # SET_TIME's answer never came: its id is still awaited
            await asyncio.sleep(0.3)
            return waiting, len(client._pending)

    assert run(job()) == (1, 0)


def test_hello_info_after_close_is_a_clear_transport_error_not_a_cancellation():
    from companion.transport import TransportClosed

    transport = Loopback(ProtocolHandler(band_with()), lambda m: b"" if is_answer(Opcode.INFO)(m) else m)

    async def job() -> str:
        client = BandClient(transport, timeout=5)
        await client.connect()
        await client.close()  # before INFO was answered: the hello is cancelled
        with pytest.raises(TransportClosed) as closed:
            await client.hello_info()
        return str(closed.value)

    assert "closed before the band answered INFO" in run(job())
