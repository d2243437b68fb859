"""Talking to a band: typed requests with timeouts, windowed resumable upload, live status.

:class:`BandClient` sits on any :class:`~companion.transport.Transport`.  A
reader task feeds received bytes through the production frame parser and
routes each response to the request waiting for its request id; a response
for an id nobody waits for (a late answer to a request that timed out) is
dropped and counted.  Every wait has a timeout and says what it waited for.

``await client.request(InfoRequest())`` returns the request's response class
(:class:`~protocol.messages.InfoResponse`); the named methods (``info()``,
``upload()``, ``start()`` ...) are thin wrappers on it, and ``follow()``
iterates over a session until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from protocol.constants import BandState, MessageKind, Opcode, Status
from protocol.errors import HandCueError, band_error
from protocol.framing import FrameParser, encode_frame, max_encoded_size
from protocol.messages import (
    UPLOAD_DATA_OVERHEAD,
    Body,
    EraseRequest,
    InfoRequest,
    Message,
    MessageError,
    MessageHeader,
    PauseRequest,
    Request,
    ResumeRequest,
    SkipRequest,
    StartRequest,
    StatusReport,
    StatusRequest,
    StopRequest,
    UploadBeginRequest,
    UploadCommitRequest,
    UploadDataRequest,
    decode_message,
    encode_request,
)
from protocol.table import check_table_header

from .ble.backend import BleBackend
from .errors import BandTimeout as BandTimeout  # re-exported: callers import it from here too
from .transport import Transport, TransportClosed, open_transport

DEFAULT_TIMEOUT = 3.0
COMMIT_TIMEOUT = 15.0
ACK_TIMEOUT = 1.0
MAX_RETRIES = 5
ABANDONED_ID_HOLD_S = 30.0
"""How long the id of a request we stopped waiting for stays out of use."""
FOLLOW_POLL_S = 1.0
"""While following, ask for the status after this long without a notification."""

R = TypeVar("R", bound=Body)
Arrival = int
"""Place of a received message in the stream from the band (it sends in order): tells older from newer."""


@dataclass(frozen=True)
class BandInfo:
    """What ``INFO`` reports."""

    band_id: int
    firmware: str
    protocol_version: int
    battery: int
    state: BandState | None
    """None: a state this companion does not know (a newer band)."""
    max_table: int
    max_frame: int
    window: int
    routine_name: str | None
    routine_crc32: int | None
    routine_size: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["band_id"] = f"{self.band_id:04X}"
        data["state"] = self.state.name.lower() if self.state is not None else None
        data["routine_crc32"] = None if self.routine_crc32 is None else f"0x{self.routine_crc32:08X}"
        return data


BandStatus = StatusReport
"""The session status a band reports (its one declaration is in :mod:`protocol.messages`)."""


@dataclass(frozen=True)
class UploadResult:
    size: int
    crc32: int
    resumed_from: int
    frames_sent: int
    retransmissions: int
    total_ms: int


ProgressCallback = Callable[[int, int], None]


class BandClient:
    """An open session with one band.  Use ``async with BandClient.open(address)``."""

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT, commit_timeout: float = COMMIT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout
        self.commit_timeout = commit_timeout
        self.parser = FrameParser(1024)
        self.dropped_responses = 0
        self._pending: dict[int, tuple[Opcode, asyncio.Future[tuple[Message, Arrival]]]] = {}
        self._next_id = 0
        self._abandoned: dict[int, float] = {}
        self._notifications: asyncio.Queue[tuple[BandStatus, Arrival]] = asyncio.Queue(maxsize=256)
        self._arrivals: Arrival = 0
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None

    @classmethod
    def open(cls, address: str, *, ble: BleBackend | None = None, **kwargs: Any) -> BandClient:
        """A client (not yet connected) for ``address``; a ``ble:`` one goes through the bleak backend ``ble``."""
        return cls(open_transport(address, ble=ble), **kwargs)

    async def __aenter__(self) -> BandClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        await self.transport.connect(self.timeout)
        self._reader = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.transport.disconnect()

    # ------------------------------------------------------------ plumbing

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self.transport.receive()
                for payload in self.parser.feed(chunk):
                    self._dispatch(payload)
        except TransportClosed as exc:
            self._fail_all(exc)
        except Exception as exc:  # never leave a waiter hanging
            self._fail_all(HandCueError(f"{self.transport.address}: receive failed: {exc}"))
            raise

    def _fail_all(self, exc: BaseException) -> None:
        self._closed = exc
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _dispatch(self, payload: bytes) -> None:
        self._arrivals += 1
        try:
            message = decode_message(payload)
        except MessageError as exc:
            # A response in another protocol version still names its request in the
            # frozen header: fail that request with a clear reason instead of a timeout.
            waiting = self._pending.get(exc.request_id)
            is_answer = exc.status == Status.UNSUPPORTED_VERSION and MessageHeader.parse(payload).kind == MessageKind.RESPONSE
            if is_answer and waiting is not None and waiting[0] == exc.opcode and not waiting[1].done():
                del self._pending[exc.request_id]
                waiting[1].set_exception(band_error(Status.UNSUPPORTED_VERSION, f"{self.transport.address}: {exc}"))
            else:
                self.dropped_responses += 1
            return
        if message.kind == MessageKind.NOTIFICATION:
            if self._notifications.full():
                self._notifications.get_nowait()
            if isinstance(message.body, StatusReport):
                self._notifications.put_nowait((message.body, self._arrivals))
            return
        if message.kind != MessageKind.RESPONSE:
            return
        waiting = self._pending.get(message.request_id)
        if waiting is None or waiting[0] != message.opcode:
            self.dropped_responses += 1  # late answer to a request that timed out
            self._abandoned.pop(message.request_id, None)  # its id may be used again
            return
        del self._pending[message.request_id]
        if not waiting[1].done():
            waiting[1].set_result((message, self._arrivals))

    def _allocate_id(self) -> int:
        """A request id not in use, and not of a recently abandoned request whose answer may still come."""
        now = asyncio.get_running_loop().time()
        self._abandoned = {rid: until for rid, until in self._abandoned.items() if until > now}
        for _ in range(256):
            self._next_id = (self._next_id + 1) % 256
            if self._next_id not in self._pending and self._next_id not in self._abandoned:
                return self._next_id
        raise HandCueError("256 requests in flight or abandoned")

    def _abandon(self, request_id: int) -> None:
        """Stop waiting for ``request_id``; keep its id out of use for a while (its answer may be late)."""
        self._pending.pop(request_id, None)
        self._abandoned[request_id] = asyncio.get_running_loop().time() + ABANDONED_ID_HOLD_S

    async def _send_request(self, request: Request[Any]) -> tuple[int, asyncio.Future[tuple[Message, Arrival]]]:
        if self._closed is not None:
            raise TransportClosed(f"{self.transport.address}: link lost ({self._closed})")
        request_id = self._allocate_id()
        future: asyncio.Future[tuple[Message, Arrival]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (request.opcode, future)
        try:
            await self.transport.send(encode_frame(encode_request(request, request_id)))
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        return request_id, future

    async def request(self, request: Request[R], *, timeout: float | None = None, what: str | None = None) -> R:
        """Send one request and wait for its typed response; raise the band's error if it refused."""
        return (await self._exchange(request, timeout, what))[0]

    async def _exchange(self, request: Request[R], timeout: float | None = None, what: str | None = None) -> tuple[R, Arrival]:
        request_id, future = await self._send_request(request)
        limit = self.timeout if timeout is None else timeout
        try:
            message, arrival = await asyncio.wait_for(future, limit)
        except TimeoutError:
            self._abandon(request_id)
            raise BandTimeout(
                f"no answer from {self.transport.address} to {what or request.opcode.name} within {limit:g} s (is it a HandCue band, powered and in range?)"
            ) from None
        return self._checked(request, message), arrival

    @staticmethod
    def _checked(request: Request[R], message: Message) -> R:
        if message.status != Status.OK:
            raise band_error(message.status, message.reason, message.detail)
        return request.response_from(message.body)

    # ------------------------------------------------------------ commands

    async def info(self) -> BandInfo:
        body = await self.request(InfoRequest(), what="INFO (device information)")
        return BandInfo(
            body.band_id, str(body.firmware), body.protocol_version, body.battery, body.state, body.max_table,
            body.max_frame, body.window, body.routine_name if body.has_routine else None,
            body.routine_crc32 if body.has_routine else None, body.routine_size,
        )

    async def status(self) -> BandStatus:
        return await self.request(StatusRequest())

    async def start(self) -> BandStatus:
        return await self.request(StartRequest())

    async def pause(self) -> BandStatus:
        return await self.request(PauseRequest())

    async def resume(self) -> BandStatus:
        return await self.request(ResumeRequest())

    async def skip(self) -> BandStatus:
        return await self.request(SkipRequest())

    async def stop(self) -> BandStatus:
        return await self.request(StopRequest())

    async def erase(self) -> None:
        await self.request(EraseRequest(), timeout=self.commit_timeout)

    async def _notification(self, timeout: float) -> tuple[BandStatus, Arrival]:
        if self._closed is not None and self._notifications.empty():
            raise TransportClosed(f"{self.transport.address}: link lost ({self._closed})")
        try:
            return await asyncio.wait_for(self._notifications.get(), timeout)
        except TimeoutError:
            raise BandTimeout(f"no status notification from {self.transport.address} within {timeout:g} s") from None

    async def notifications(self, timeout: float) -> AsyncIterator[BandStatus]:
        """Status notifications as they come; raises :class:`BandTimeout` after ``timeout`` s of silence."""
        while True:
            yield (await self._notification(timeout))[0]

    async def follow(self, poll_s: float = FOLLOW_POLL_S) -> AsyncIterator[BandStatus]:
        """The session as it goes: the current status, then each newer one, ending with the finished status.

        Notifications the band sent before a status answer are older than it and
        skipped; after ``poll_s`` seconds without a notification (a long step)
        it asks for the status.  Raises :class:`HandCueError` if the band is
        idle (nothing to follow), or after yielding the idle status if the
        routine is stopped, erased or replaced before it finishes.
        """
        status, since = await self._exchange(StatusRequest())
        if status.state == BandState.IDLE:
            raise HandCueError("the band is idle: start a routine first (handcue start)")
        yield status
        while status.state != BandState.FINISHED:
            try:
                update, arrival = await self._notification(poll_s)
            except BandTimeout:
                update, arrival = await self._exchange(StatusRequest())  # quiet stretch: ask, with a timeout
            if arrival < since:
                continue  # sent before the status already yielded
            status, since = update, arrival
            yield status
            if status.state == BandState.IDLE:
                raise HandCueError("the routine was stopped before it finished")

    # ------------------------------------------------------------ upload

    async def upload(self, data: bytes, progress: ProgressCallback | None = None, *, ack_timeout: float = ACK_TIMEOUT) -> UploadResult:
        """Upload and commit a table; resumes a partial upload of the same table.

        ``progress(confirmed, total)`` reports the offset the band confirmed as
        stored, never merely what was sent.  Raises
        :class:`~protocol.errors.TableRefusedError` with the band's reason if it
        refuses the table (its previous routine stays active).
        """
        check_table_header(data)  # refuse to send what is not a table
        size, crc = len(data), zlib.crc32(data)
        # BEGIN may erase flash sectors on the band: it gets the long timeout too.
        begin = await self.request(UploadBeginRequest(length=size, crc32=crc), timeout=self.commit_timeout, what="UPLOAD_BEGIN")
        chunk = self._chunk_size(begin.max_chunk)
        window = max(1, begin.window)
        resumed_from = confirmed = begin.offset
        if progress:
            progress(confirmed, size)
        frames = retransmissions = stalls = 0
        next_offset = confirmed
        in_flight: dict[int, tuple[UploadDataRequest, asyncio.Future[tuple[Message, Arrival]]]] = {}
        try:
            while confirmed < size:
                while next_offset < size and len(in_flight) < window:
                    piece = UploadDataRequest(offset=next_offset, data=data[next_offset : next_offset + chunk])
                    request_id, future = await self._send_request(piece)
                    in_flight[request_id] = (piece, future)
                    next_offset += len(piece.data)
                    frames += 1
                confirmed_before_round = confirmed
                done, _ = await asyncio.wait([f for _, f in in_flight.values()], timeout=ack_timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    stalls += 1
                    if stalls > MAX_RETRIES:
                        raise BandTimeout(
                            f"{self.transport.address} did not acknowledge upload data at offset {confirmed} "
                            f"after {MAX_RETRIES} retransmissions ({confirmed} of {size} bytes stored; upload again to resume)"
                        )
                    retransmissions += len(in_flight)
                    next_offset = confirmed
                    self._forget(in_flight)
                    continue
                for request_id, (piece, future) in list(in_flight.items()):
                    if not future.done():
                        continue
                    del in_flight[request_id]
                    acked = self._checked(piece, future.result()[0]).offset
                    if acked > confirmed:
                        stalls = 0
                        confirmed = acked
                        if progress:
                            progress(confirmed, size)
                    if acked < piece.offset + len(piece.data):
                        # The band did not store this frame: an earlier one was lost. Go back.
                        if acked <= confirmed_before_round:
                            stalls += 1
                            if stalls > MAX_RETRIES:
                                raise BandTimeout(
                                    f"{self.transport.address} keeps losing upload data at offset {confirmed} "
                                    f"({confirmed} of {size} bytes stored; upload again to resume)"
                                )
                        retransmissions += len(in_flight)
                        next_offset = confirmed
                        self._forget(in_flight)
                        break
        finally:
            self._forget(in_flight)
        commit = await self.request(UploadCommitRequest(), timeout=self.commit_timeout, what="UPLOAD_COMMIT (verify and store)")
        return UploadResult(size, crc, resumed_from, frames, retransmissions, commit.total_ms)

    def _forget(self, in_flight: dict[int, tuple[UploadDataRequest, asyncio.Future[tuple[Message, Arrival]]]]) -> None:
        for request_id, (_, future) in in_flight.items():
            self._abandon(request_id)
            future.cancel()
        in_flight.clear()

    def _chunk_size(self, band_max_chunk: int) -> int:
        """The data chunk per frame that carries the most table bytes per transport write.

        A frame may span several writes (the band reassembles the stream), so
        small BLE MTUs still get large frames; on a large MTU one frame is one write.
        """
        mtu = self.transport.mtu

        def writes_for(chunk: int) -> int:
            return -(-max_encoded_size(UPLOAD_DATA_OVERHEAD + chunk) // mtu)

        def largest_chunk(writes: int) -> int:
            chunk = band_max_chunk
            while chunk > 1 and writes_for(chunk) > writes:
                chunk -= 1
            return chunk

        candidates = {largest_chunk(w) for w in range(1, writes_for(band_max_chunk) + 1)}
        return max(candidates, key=lambda chunk: (chunk / writes_for(chunk), chunk))
