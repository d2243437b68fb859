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
import logging
import random
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from protocol.constants import MAX_FRAME_PAYLOAD, BandState, BootOutcome, MessageKind, Opcode, SkipScope, Status
from protocol.errors import BadRequestError, HandCueError, UploadError, band_error
from protocol.framing import FrameParser, encode_frame, max_wire_size
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
    code_text,
    decode_message,
    encode_request,
)
from protocol.strength import check_strength
from protocol.table import check_table_header

from .ble.backend import BleBackend
from .errors import BandAnswerError, BandTimeout
from .rtt import INITIAL_RTO_S, KNOWN_SPEED_INITIAL_RTO_S, RoundTripTimer
from .transport import Transport, TransportClosed, open_transport

__all__ = ["BandAnswerError", "BandClient", "BandInfo", "BandStatus", "BandTimeout", "UploadResult"]

DEFAULT_TIMEOUT = 3.0
"""Longest wait for one answer, unless the caller gives ``timeout`` (the CLI's ``--timeout``)."""
COMMIT_TIMEOUT = 15.0
"""Longest wait for UPLOAD_BEGIN, UPLOAD_COMMIT and ERASE (flash work) when no ``timeout`` is given."""
MAX_RETRIES = 8
"""Upload: retransmission rounds in a row without progress before giving up."""
ABANDONED_ID_HOLD_S = 30.0
"""How long the id of a request whose answer never came stays out of use (its answer may be late)."""
STALE_PENDING_LIMIT = 128
"""Upload: answers of frames sent before a go-back still awaited at most this many ids; older ones are held instead."""
ANSWER_ALLOWANCE = 64
"""Bytes of an answer's frame whose wire time a request's retransmission timer allows besides the RTO."""
MIN_CHUNK = 16
"""Upload: the smallest data chunk a noisy link shrinks frames to."""
GROW_AFTER = 4
"""Upload: clean acknowledgements in a row after which the chunk grows again."""
WINDOW_SHARE_OF_TIMEOUT = 0.5
"""Upload: the bytes in flight take at most this share of the timeout on the wire, so an ack wait fits in it."""
FOLLOW_POLL_S = 1.0
"""While following, ask for the status after this long without a notification."""
MIN_BAND_FRAME = MAX_FRAME_PAYLOAD
"""Every band accepts messages of this size (SPEC §15.4); one offering less is broken."""
PIPELINED_BEGIN_FIRMWARE = (0, 2)
"""Bands from this firmware (INFO) accept UPLOAD_DATA and UPLOAD_COMMIT only on a link whose last UPLOAD_BEGIN
they accepted (SPEC §19.2), so the first data frames may follow BEGIN before its answer."""

R = TypeVar("R", bound=Body)
LOG = logging.getLogger(__name__)
"""Protocol traffic at DEBUG (``handcue -v``): each request and answer, and every frame in hex."""


class _Hex:
    """Bytes shown as hex only when a log record is actually written (no cost while -v is off)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __str__(self) -> str:
        return self.data.hex(" ")
Arrival = int
"""Place of a received message in the stream from the band (it sends in order): tells older from newer."""


@dataclass(frozen=True)
class Answer:
    """A response as it arrived: the message, its place in the stream and the loop time it came."""

    message: Message
    arrival: Arrival
    at: float


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
    state_text: str = ""
    """The state for people: ``idle``, or ``unknown (N)`` for a state this companion does not know."""
    boot: BootOutcome | None = None
    """What the band found in its flash at boot; None: an outcome this companion does not know (a newer band)."""
    boot_text: str = ""
    """The boot outcome for people: ``intact``, ``recovered-previous``, or ``unknown (N)``."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["band_id"] = f"{self.band_id:04X}"
        data["state"] = data.pop("state_text")
        data["boot"] = data.pop("boot_text")
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
    commit_retried: bool = False
    """The first answer to UPLOAD_COMMIT was lost; the retry (or INFO) showed the band had switched."""


ProgressCallback = Callable[[int, int], None]


class BandClient:
    """An open session with one band.  Use ``async with BandClient.open(address)``."""

    def __init__(self, transport: Transport, *, timeout: float | None = None, commit_timeout: float | None = None,
                 hello: bool = True) -> None:
        """``timeout`` bounds every wait (default: 3 s, and 15 s for the flash work of BEGIN, COMMIT and ERASE).

        With ``hello`` (the default) :meth:`connect` asks INFO first: that starts a
        session on the band (it forgets the answers it kept for an earlier session's
        retries) and tells the band's limits.
        """
        self.transport = transport
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if commit_timeout is None:
            commit_timeout = COMMIT_TIMEOUT if timeout is None else min(COMMIT_TIMEOUT, timeout)
        self.commit_timeout = commit_timeout
        self.hello = hello
        self.band_info: BandInfo | None = None
        """What INFO said at connect (with ``hello``)."""
        self.parser = FrameParser(1024)
        self.rtt = RoundTripTimer(floor=transport.min_rto, initial=self._initial_rto())
        self.dropped_responses = 0
        self.retries = 0
        """Requests sent again because their answer did not come within the retransmission timeout."""
        self._pending: dict[int, tuple[Opcode, asyncio.Future[Answer]]] = {}
        self._next_id = random.randrange(256)  # a new session does not start where the last one did
        self._abandoned: dict[int, float] = {}
        self._wire_free = 0.0
        self._sends = 0
        self._notifications: asyncio.Queue[tuple[BandStatus, Arrival]] = asyncio.Queue(maxsize=256)
        self._arrivals: Arrival = 0
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None

    def _initial_rto(self) -> float:
        """The retransmission timeout before the first answer: on a link of known speed (serial), a quarter
        second beyond the wire time of a largest frame each way (so a lost first INFO gets 4 tries within the
        default timeout); elsewhere 1 s (RFC 6298), as a BLE stack's connection setup may still hold answers back."""
        rate = getattr(self.transport, "bytes_per_second", None)  # a minimal stand-in transport may not say
        if not rate:
            return INITIAL_RTO_S
        return KNOWN_SPEED_INITIAL_RTO_S + 2 * max_wire_size(MAX_FRAME_PAYLOAD) / rate

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
        if self.hello:
            try:
                self.band_info = await self.info()
            except BaseException:
                await self.close()
                raise

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
                    LOG.debug("<- frame %s", _Hex(payload))
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
                future.exception()  # its waiter still gets it; frames a failed upload left in flight are not logged as never retrieved
        self._pending.clear()

    def _dispatch(self, payload: bytes) -> None:
        self._arrivals += 1
        try:
            message = decode_message(payload)
            LOG.debug("<- %s #%d %s: %s", message.kind.name.lower(), message.request_id, message.status.name, message.body)
        except MessageError as exc:
            # The frozen header still names the request: fail it with what was wrong instead of a timeout.
            waiting = self._pending.get(exc.request_id)
            header = MessageHeader.parse(payload) if len(payload) >= MessageHeader.sizeof() else None
            if header is not None and header.kind == MessageKind.RESPONSE and waiting is not None and waiting[0] == exc.opcode and not waiting[1].done():
                del self._pending[exc.request_id]
                name = Opcode(exc.opcode).name
                if exc.status == Status.UNSUPPORTED_VERSION:
                    error: HandCueError = band_error(Status.UNSUPPORTED_VERSION, f"{self.transport.address}: {exc}")
                else:
                    error = BandAnswerError(f"{self.transport.address} answered {name} (request id {exc.request_id}) with a message this companion cannot read: {exc}")
                waiting[1].set_exception(error)
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
            self.dropped_responses += 1  # late answer to a request that timed out, or a retry's second answer
            self._abandoned.pop(message.request_id, None)  # its id may be used again
            return
        del self._pending[message.request_id]
        if not waiting[1].done():
            waiting[1].set_result(Answer(message, self._arrivals, asyncio.get_running_loop().time()))

    def _allocate_id(self) -> int:
        """A request id not in use, and if possible not of a request abandoned recently (its answer may still come)."""
        now = asyncio.get_running_loop().time()
        self._abandoned = {rid: until for rid, until in self._abandoned.items() if until > now}
        for _ in range(256):
            self._next_id = (self._next_id + 1) % 256
            if self._next_id not in self._pending and self._next_id not in self._abandoned:
                return self._next_id
        # Every free id waits out a hold: take the one held longest (its late answer is the least likely).
        free = [rid for rid in self._abandoned if rid not in self._pending]
        if not free:
            raise HandCueError("256 requests in flight")
        self._next_id = min(free, key=self._abandoned.__getitem__)
        del self._abandoned[self._next_id]
        return self._next_id

    def _abandon(self, request_id: int, future: asyncio.Future[Answer] | None = None) -> None:
        """Stop waiting for ``request_id``; if its answer has not come, keep its id out of use for a while."""
        self._pending.pop(request_id, None)
        if future is None or not future.done():
            self._abandoned[request_id] = asyncio.get_running_loop().time() + ABANDONED_ID_HOLD_S
        if future is not None and not future.done():
            future.cancel()

    def _register(self, request: Request[Any]) -> tuple[int, asyncio.Future[Answer]]:
        if self._closed is not None:
            raise TransportClosed(f"{self.transport.address}: link lost ({self._closed})")
        request_id = self._allocate_id()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (request.opcode, future)
        return request_id, future

    async def _transmit(self, frame: bytes) -> float:
        """Send ``frame``; returns when (loop time) its last byte will have left the wire."""
        loop = asyncio.get_running_loop()
        self._wire_free = max(loop.time(), self._wire_free) + self.transport.wire_time(len(frame))
        done = self._wire_free
        await self.transport.send(frame)
        return done

    def _answer_allowance(self, request: Request[Any] | None = None) -> float:
        """How long after a request left the wire its answer may take before it is sent again.

        Requests that make the band work its flash (BEGIN, COMMIT, ERASE) may take longer than the
        round trips the timer learned from: they wait at least :data:`~companion.rtt.INITIAL_RTO_S`.
        """
        rto = self.rtt.rto
        if request is not None and not request.idempotent:
            rto = max(rto, INITIAL_RTO_S)
        return min(self.timeout, rto + self.transport.wire_time(ANSWER_ALLOWANCE))

    async def request(self, request: Request[R], *, timeout: float | None = None, what: str | None = None) -> R:
        """Send one request and wait for its typed response; raise the band's error if it refused.

        Within ``timeout`` the request is sent again, with the same id, whenever
        the retransmission timer expires: the band answers a repeated request that
        changes state with its first answer (SPEC §16.2), so a lost answer never
        becomes a second action.
        """
        with self.transport.phases.phase(request.opcode.name):
            return (await self._exchange(request, timeout, what))[0]

    async def _exchange(self, request: Request[R], timeout: float | None = None, what: str | None = None) -> tuple[R, Arrival]:
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        request_id, future = self._register(request)
        frame = encode_frame(encode_request(request, request_id))
        sends = 0
        try:
            while True:
                LOG.debug("-> request #%d %s%s: frame %s", request_id, request, " (again)" if sends else "", _Hex(frame))
                left_wire = await self._transmit(frame)
                sends += 1
                wait = min(deadline, left_wire + self._answer_allowance(request)) - loop.time()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(asyncio.shield(future), max(0.0, wait))
                    break
                if loop.time() >= deadline:
                    raise BandTimeout(
                        f"no answer from {self.transport.address} to {what or request.opcode.name} within {limit:g} s"
                        f"{f' ({sends} tries)' if sends > 1 else ''} (is it a HandCue band, powered and in range?)"
                    )
                self.rtt.expired()
                self.retries += 1
        except BaseException:
            self._abandon(request_id, future)
            raise
        if sends == 1:
            self.rtt.sample(answer.at - left_wire)  # Karn: a retried request's answer may be the first try's
        else:
            self._abandon(request_id, future)  # the other tries' answers may follow: keep the id out of use
        return self._checked(request, answer.message), answer.arrival

    def _checked(self, request: Request[R], message: Message) -> R:
        if message.status != Status.OK:
            if message.status_code not in Status._value2member_map_:  # a newer band's status
                raise band_error(message.status, f"the band refused {request.opcode.name} with status unknown ({message.status_code})"
                                 f"{': ' + message.reason if message.reason else ''}", message.detail)
            raise band_error(message.status, message.reason, message.detail)
        try:
            return request.response_from(message.body)
        except MessageError as exc:
            raise BandAnswerError(f"{self.transport.address} answered {request.opcode.name} wrongly: {exc}") from None

    # ------------------------------------------------------------ commands

    async def info(self) -> BandInfo:
        body = await self.request(InfoRequest(), what="INFO (device information)")
        return BandInfo(
            body.band_id, str(body.firmware), body.protocol_version, body.battery, body.state, body.max_table,
            body.max_frame, body.window, body.routine_name if body.has_routine else None,
            body.routine_crc32 if body.has_routine else None, body.routine_size, code_text(body, "state") or "none",
            body.boot_outcome, code_text(body, "boot_outcome") or "none",
        )

    async def status(self) -> BandStatus:
        return await self.request(StatusRequest())

    async def start(self) -> BandStatus:
        return await self.request(StartRequest())

    async def pause(self) -> BandStatus:
        return await self.request(PauseRequest())

    async def resume(self) -> BandStatus:
        return await self.request(ResumeRequest())

    async def skip(self, scope: SkipScope = SkipScope.ITERATION) -> BandStatus:
        """Skip to the next iteration (next finger, hand or round), or with ``SkipScope.STEP`` past the whole step."""
        try:
            return await self.request(SkipRequest(scope))
        except BadRequestError as exc:
            if scope == SkipScope.STEP:
                raise
            # A band from before skip scopes reads only a SKIP without a body (skip the whole step).
            raise BadRequestError(exc.code, f"{exc}; this band's firmware skips only whole steps (skip --step)", exc.detail) from exc

    async def stop(self) -> BandStatus:
        return await self.request(StopRequest())

    async def settings(self) -> SettingsResponse:
        """The band's stored settings (cue strength)."""
        return await self.request(SettingsRequest(), what="SETTINGS")

    async def set_strength(self, strength: int) -> SettingsResponse:
        """Store the band's cue strength, % (20 to 100); the band may erase a flash sector to store it."""
        check_strength(strength)
        return await self.request(SetSettingsRequest(strength=strength), timeout=self.commit_timeout, what="SET_SETTINGS (cue strength)")

    async def set_time(self, unix_ms: int | None = None) -> None:
        """Set the band's wall clock (default: this computer's), so its session history carries Unix times."""
        import time

        await self.request(SetTimeRequest(unix_ms=time.time_ns() // 1_000_000 if unix_ms is None else unix_ms), what="SET_TIME")

    async def erase(self) -> None:
        await self.request(EraseRequest(), timeout=self.commit_timeout, what="ERASE")

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

    async def upload(self, data: bytes, progress: ProgressCallback | None = None) -> UploadResult:
        """Upload and commit a table; resumes a partial upload of the same table.

        ``progress(confirmed, total)`` reports the offset the band confirmed as
        stored, never merely what was sent.  Raises
        :class:`~protocol.errors.TableRefusedError` with the band's reason if it
        refuses the table (its previous routine stays active), and
        :class:`BandAnswerError` if the band offers unusable limits or reports
        another CRC than the table's.

        With a band that ties upload data to its link's UPLOAD_BEGIN (:meth:`_pipelines`),
        the first data frames follow BEGIN without waiting for its answer; UPLOAD_COMMIT
        always follows the last data frame without waiting for the data's answers (SPEC §19.2).
        """
        check_table_header(data)  # refuse to send what is not a table
        crc = zlib.crc32(data)
        if self.band_info is not None and self.band_info.max_frame < MIN_BAND_FRAME:
            raise BandAnswerError(f"{self.transport.address} offers frames of {self.band_info.max_frame} bytes in INFO; "
                                  f"every band must accept {MIN_BAND_FRAME} (is its firmware broken?)")
        run = _UploadRun(self, data, crc, progress)
        try:
            return await run.go()
        except BaseException:
            self.transport.discard_output()  # the band need not chew through frames nobody waits for
            raise
        finally:
            run.forget()

    def _pipelines(self) -> bool:
        """Whether UPLOAD_DATA may follow UPLOAD_BEGIN before its answer: the band said (INFO) that it
        ties data to its link's accepted BEGIN (firmware :data:`PIPELINED_BEGIN_FIRMWARE` on)."""
        info = self.band_info
        if info is None or info.window < 1 or info.max_frame <= UPLOAD_DATA_OVERHEAD:
            return False
        try:
            version = tuple(int(part) for part in info.firmware.split(".")[:2])
        except ValueError:
            return False
        return version >= PIPELINED_BEGIN_FIRMWARE

    async def _send(self, *requests: Request[Any]) -> list[_Sent]:
        """Register ``requests`` and send their frames in one transport write (no waiting for answers).

        Frames are self-delimiting and the band reads any chunking (SPEC §15.5): a short request
        rides in the same link packet as the data frame beside it instead of taking one of its own.
        """
        registered = [(request, *self._register(request)) for request in requests]
        frames = [encode_frame(encode_request(request, request_id)) for request, request_id, _ in registered]
        for (request, request_id, _), frame in zip(registered, frames, strict=True):
            LOG.debug("-> request #%d %s: frame %s", request_id, request, _Hex(frame))
        try:
            left_wire = await self._transmit(b"".join(frames))
        except BaseException:
            for _, request_id, future in registered:
                self._abandon(request_id, future)
            raise
        sent = []
        for (request, request_id, future), frame in zip(registered, frames, strict=True):
            self._sends += 1
            sent.append(_Sent(request_id, request, future, frame, left_wire, left_wire, self._sends))
        return sent

    async def _resend(self, sent: _Sent) -> None:
        """Send ``sent`` again, same id and bytes (a lost answer gets the band's first answer, SPEC §16.2)."""
        LOG.debug("-> request #%d %s (again): frame %s", sent.request_id, sent.request, _Hex(sent.frame))
        self.rtt.expired()
        self.retries += 1
        sent.sends += 1
        sent.left_wire = await self._transmit(sent.frame)

    def _sample(self, sent: _Sent, answer: Answer) -> None:
        if sent.sends == 1 and sent.timed:
            self.rtt.sample(answer.at - sent.left_wire)  # Karn: a retried request's answer may be the first try's

    async def _commit_fallback(self, data: bytes, crc: int, exc: HandCueError) -> UploadCommitResponse:
        """UPLOAD_COMMIT got no answer, or NO_UPLOAD to a retry: INFO tells whether the band switched to this table.

        Never "failed" while the band switched; raises ``exc`` when it did not.
        """
        try:
            info = await self.info()
        except HandCueError:
            raise exc from None
        if info.routine_crc32 == crc and info.routine_size == len(data):
            return UploadCommitResponse(crc32=crc, total_ms=check_table_header(data).total_ms)
        raise exc

    def _pipe_bytes(self, budget: int, frame_bytes: int) -> int:
        """Bytes to keep in flight on a link of known speed: enough to keep the wire busy for a round trip
        and one more frame, no more (after a loss, every byte queued behind the lost frame is sent again)."""
        rate = self.transport.bytes_per_second or 0.0
        if self.rtt.srtt is None:
            return budget
        keep_busy = int(rate * (self.rtt.srtt + 4 * self.rtt.rttvar)) + 2 * frame_bytes
        return min(budget, keep_busy)

    def _room_after(self, lead_bytes: int, chunk: int) -> int:
        """The largest data chunk up to ``chunk`` whose frame, behind ``lead_bytes`` bytes in the same
        transport write, needs no more writes than the frame alone (0: none does)."""
        mtu = self.transport.mtu
        writes = -(-max_wire_size(UPLOAD_DATA_OVERHEAD + chunk) // mtu)
        while chunk > 0 and lead_bytes + max_wire_size(UPLOAD_DATA_OVERHEAD + chunk) > writes * mtu:
            chunk -= 1
        return chunk

    def _fit(self, chunk: int, best_chunk: int) -> int:
        """``chunk`` rounded down to a size that packs transport writes well (the best chunk itself when it fits)."""
        return best_chunk if chunk >= best_chunk else self._chunk_size(chunk)

    def _chunk_size(self, band_max_chunk: int) -> int:
        """The data chunk per frame that carries the most table bytes per transport write.

        A frame may span several writes (the band reassembles the stream), so
        small BLE MTUs still get large frames; on a large MTU one frame is one write.
        """
        mtu = self.transport.mtu

        def writes_for(chunk: int) -> int:
            return -(-max_wire_size(UPLOAD_DATA_OVERHEAD + chunk) // mtu)

        def largest_chunk(writes: int) -> int:
            chunk = band_max_chunk
            while chunk > 1 and writes_for(chunk) > writes:
                chunk -= 1
            return chunk

        candidates = {largest_chunk(w) for w in range(1, writes_for(band_max_chunk) + 1)}
        return max(candidates, key=lambda chunk: (chunk / writes_for(chunk), chunk))


@dataclass(eq=False)
class _Sent:
    """A request on the wire whose answer is awaited."""

    request_id: int
    request: Request[Any]
    future: asyncio.Future[Answer]
    frame: bytes
    left_wire: float
    """When (loop time) the last try's last byte left the wire: its retransmission timer counts from here."""
    first_sent: float
    seq: int = 0
    """Order of sending within the client: the band answers a link's requests in this order."""
    sends: int = 1
    timed: bool = True
    """Whether its round trip is a sample for the timer (not for data sent before BEGIN's answer: it waited behind BEGIN)."""
    early: bool = False
    """Sent before UPLOAD_BEGIN was answered: NO_UPLOAD means BEGIN had not reached the band yet."""

    @property
    def offset(self) -> int:
        assert isinstance(self.request, UploadDataRequest)
        return self.request.offset

    @property
    def end(self) -> int:
        assert isinstance(self.request, UploadDataRequest)
        return self.request.offset + len(self.request.data)


class _UploadRun:
    """One :meth:`BandClient.upload`: go-back-N over the band's cumulative acks, BEGIN and COMMIT pipelined.

    The data chunk adapts to the link: halved (down to :data:`MIN_CHUNK`) after
    every loss, grown by a quarter after a clean window, so a noisy link gets
    short frames that survive and a clean one long frames that carry more.
    The bytes in flight stay within :data:`WINDOW_SHARE_OF_TIMEOUT` of the
    timeout on the wire, so every ack wait fits in the timeout at any baud rate.

    UPLOAD_COMMIT goes out as soon as the last data frame has been sent; the band
    handles a link's requests in order, so it checks the upload after that frame.  A
    COMMIT that finds bytes missing (BAD_OFFSET: a frame was lost) keeps the upload:
    the missing frames go again, then a new COMMIT.  The band verifies the whole
    table's size and CRC-32 at every COMMIT, so it never activates a partial table.
    """

    def __init__(self, client: BandClient, data: bytes, crc: int, progress: ProgressCallback | None) -> None:
        self.client = client
        self.data, self.crc, self.size = data, crc, len(data)
        self.progress = progress
        self.address = client.transport.address
        self.confirmed = self.next_offset = 0
        self.progress_at = 0.0
        """When (loop time) the band last confirmed new bytes."""
        self.frames = self.retransmissions = self.stalls = self.clean = 0
        self.in_flight: list[_Sent] = []  # oldest first
        self.stale: list[_Sent] = []  # sent before a go-back; their answers still come
        self.commit: _Sent | None = None
        self.lead: Request[Any] | None = None
        """A request to send in the write of the next data frame (the pipelined BEGIN)."""
        self.lead_sent: _Sent | None = None
        self.commit_retried = False
        self.back_since_commit = False
        """Whether the data went back since COMMIT was sent (then a BAD_OFFSET answer to it needs no go-back of its own)."""
        self.best_chunk = self.chunk = 1
        self.window = 1
        self.frames_ahead = 1
        """Frames to keep unanswered: the band's window, halved after each loss and grown by one after clean
        acknowledgements (after the chunk), so that a noisy link does not send a whole window again each time."""
        self.budget = 0

    # ---------------------------------------------------------------- setup

    def _limits(self, max_chunk: int, window: int) -> None:
        client = self.client
        self.window = self.frames_ahead = window
        best = client._chunk_size(max_chunk)
        rate = client.transport.bytes_per_second
        if rate:
            self.budget = int(rate * client.timeout * WINDOW_SHARE_OF_TIMEOUT)
            room = self.budget - max_wire_size(UPLOAD_DATA_OVERHEAD)
            best = max(1, min(best, room if room >= MIN_CHUNK else MIN_CHUNK))
        else:
            self.budget = 0
        self.best_chunk = self.chunk = best

    def _begin_checked(self, begin: UploadBeginResponse) -> None:
        if begin.max_chunk < 1 or begin.window < 1:
            raise BandAnswerError(f"{self.address} answered UPLOAD_BEGIN with unusable limits: chunks of at most "
                                  f"{begin.max_chunk} bytes, a window of {begin.window} frames (each must be at least 1)")
        if begin.offset > self.size:
            raise BandAnswerError(f"{self.address} answered UPLOAD_BEGIN with offset {begin.offset}, past the table's {self.size} bytes")

    async def go(self) -> UploadResult:
        client = self.client
        phases = client.transport.phases
        begin_request = UploadBeginRequest(length=self.size, crc32=self.crc)
        if client._pipelines():
            assert client.band_info is not None
            with phases.phase("UPLOAD_BEGIN"):
                begin = await self._pipelined_begin(begin_request, client.band_info.max_frame - UPLOAD_DATA_OVERHEAD, client.band_info.window)
        else:
            # BEGIN may erase flash sectors on the band: it gets the long timeout too.
            begin = await client.request(begin_request, timeout=client.commit_timeout, what="UPLOAD_BEGIN")
            self._begin_checked(begin)
            self._limits(begin.max_chunk, begin.window)
            self.confirmed = self.next_offset = begin.offset
        resumed_from = begin.offset
        if self.progress:
            self.progress(self.confirmed, self.size)
        # Phases as the user sees them: COMMIT is sent inside "data"; "UPLOAD_COMMIT" is the wait for its answer after the data's.
        with phases.phase("data"):
            commit = await self._transfer()
        with phases.phase("UPLOAD_COMMIT"):
            if commit is None:
                commit = await self._finish_commit()
        if commit.crc32 != self.crc:
            raise BandAnswerError(f"{self.address} reports CRC-32 0x{commit.crc32:08X} at UPLOAD_COMMIT; "
                                  f"the table's is 0x{self.crc:08X} (upload it again)")
        return UploadResult(self.size, self.crc, resumed_from, self.frames, self.retransmissions, commit.total_ms, self.commit_retried)

    async def _pipelined_begin(self, begin_request: UploadBeginRequest, max_chunk: int, window: int) -> UploadBeginResponse:
        """Send BEGIN and, behind it, the first window of data from offset 0; wait for BEGIN's answer.

        The band refuses data on a link whose last BEGIN it did not accept (NO_UPLOAD), so
        frames behind a refused or lost BEGIN never touch storage; a refusal is BEGIN's error.
        """
        client = self.client
        loop = asyncio.get_running_loop()
        self._limits(max_chunk, window)
        self.lead = begin_request
        try:
            await self._fill(early=True)
            begin = self.lead_sent
            assert begin is not None
            while True:
                due = min(begin.first_sent + client.commit_timeout, begin.left_wire + client._answer_allowance(begin_request))
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(asyncio.shield(begin.future), max(0.0, due - loop.time()))
                    break
                if loop.time() >= begin.first_sent + client.commit_timeout:
                    raise BandTimeout(f"no answer from {self.address} to UPLOAD_BEGIN within {client.commit_timeout:g} s"
                                      f"{f' ({begin.sends} tries)' if begin.sends > 1 else ''} (is it a HandCue band, powered and in range?)")
                await client._resend(begin)
        finally:
            if self.lead_sent is not None:
                client._abandon(self.lead_sent.request_id, self.lead_sent.future)
        client._sample(begin, answer)
        response = client._checked(begin_request, answer.message)  # a refusal: the data behind it was answered NO_UPLOAD
        self._begin_checked(response)
        now = loop.time()
        if response.max_chunk < self.best_chunk or response.window < self.window:
            # Other limits than INFO's: what was sent may be too large (the band drops it unread); send again within them.
            self._limits(response.max_chunk, response.window)
            self._go_back_to(response.offset, loss=False)
        elif response.offset:
            # Resuming: frames from the band's offset on are stored in turn; the others are dropped as duplicates.
            expect, keep = response.offset, []
            for sent in self.in_flight:
                if sent.offset == expect:
                    keep.append(sent)
                    expect = sent.end
                else:
                    self.stale.append(sent)
            self.in_flight, self.next_offset = keep, max(expect, response.offset)
        self.confirmed = response.offset
        for sent in self.in_flight:
            sent.left_wire = max(sent.left_wire, now)  # they waited behind BEGIN: their timers start now
        return response

    # ---------------------------------------------------------------- data

    def _go_back_to(self, offset: int, *, loss: bool = True) -> None:
        self.back_since_commit = True
        if loss:
            self.retransmissions += sum(1 for sent in self.in_flight if sent.end > self.confirmed)
            self.chunk = max(min(MIN_CHUNK, self.best_chunk), self.chunk * 2 // 3)
            self.frames_ahead = max(1, self.frames_ahead // 2)
            self.clean = 0
        self.stale.extend(self.in_flight)
        self.in_flight.clear()
        self.next_offset = offset

    async def _fill(self, *, early: bool = False) -> None:
        """Send data frames while the window, the byte budget and the table allow.

        :attr:`lead` (BEGIN) goes in the same write as the first frame, which is cut to leave it
        room; COMMIT goes in the write of the last frame when it fits there without another write.
        """
        client = self.client
        in_flight_bytes = sum(max_wire_size(UPLOAD_DATA_OVERHEAD + s.end - s.offset) for s in self.in_flight)
        while self.next_offset < self.size and len(self.in_flight) < self.frames_ahead:
            size = client._fit(self.chunk, self.best_chunk)
            lead = [self.lead] if self.lead is not None else []
            if self.lead is not None:
                shared = client._room_after(max_wire_size(len(encode_request(self.lead, 0))), size)
                if shared >= min(MIN_CHUNK, size):
                    size = shared
                else:  # no room beside a data frame (a tiny MTU): the lead goes alone
                    [self.lead_sent], self.lead, lead = await client._send(self.lead), None, []
            piece = UploadDataRequest(offset=self.next_offset, data=self.data[self.next_offset : self.next_offset + size])
            frame_bytes = max_wire_size(UPLOAD_DATA_OVERHEAD + len(piece.data))
            if self.in_flight and self.budget and in_flight_bytes + frame_bytes > client._pipe_bytes(self.budget, frame_bytes):
                break
            while self.stale and len(client._pending) >= STALE_PENDING_LIMIT:
                old = self.stale.pop(0)  # the oldest answer still awaited: hold its id instead
                client._abandon(old.request_id, old.future)
            trail: list[Request[Any]] = []
            commit_bytes = max_wire_size(len(encode_request(UploadCommitRequest(), 0)))
            if self.commit is None and piece.offset + len(piece.data) == self.size and \
                    client._room_after(commit_bytes, len(piece.data)) == len(piece.data):
                trail = [UploadCommitRequest()]
            sent = await client._send(*lead, piece, *trail)
            if lead:
                self.lead, self.lead_sent = None, sent.pop(0)
            if trail:
                self.commit = sent.pop()
                self.commit.early = early
                self.back_since_commit = False
            [data_sent] = sent
            data_sent.early, data_sent.timed = early, not early
            self.in_flight.append(data_sent)
            in_flight_bytes += frame_bytes
            self.next_offset += len(piece.data)
            self.frames += 1

    def _stall(self, *, silent: bool) -> None:
        """No progress again (``silent``: nothing came back in time; else the band dropped a frame); give up after too many."""
        self.stalls += 1
        if self.stalls <= MAX_RETRIES:
            return
        if silent:
            raise BandTimeout(
                f"{self.address} did not acknowledge upload data at offset {self.confirmed} "
                f"({MAX_RETRIES + 1} waits of up to {self.client._answer_allowance():.2g} s in a row; "
                f"{self.confirmed} of {self.size} bytes stored; upload again to resume)")
        raise BandTimeout(
            f"{self.address} keeps losing upload data at offset {self.confirmed} "
            f"({MAX_RETRIES + 1} retransmissions in a row; {self.confirmed} of {self.size} bytes stored; upload again to resume)")

    async def _transfer(self) -> UploadCommitResponse | None:
        """Send the data, and COMMIT behind it; returns COMMIT's answer if it came while data was owed, else None."""
        client = self.client
        loop = asyncio.get_running_loop()
        while True:
            await self._fill()
            if self.commit is None and self.next_offset >= self.size:
                [self.commit] = await client._send(UploadCommitRequest())
                self.back_since_commit = False
            now = loop.time()
            for old in [s for s in self.stale if s.future.done() or now > s.left_wire + 2 * client._answer_allowance()]:
                self.stale.remove(old)  # its answer came, or never will
                client._abandon(old.request_id, old.future)
            if not self.in_flight:
                return None  # only COMMIT's answer is awaited: _finish_commit waits and retries
            waiting = [s.future for s in self.in_flight]
            if self.commit is not None:
                waiting.append(self.commit.future)
            if not any(f.done() for f in waiting):
                # RFC 6298 (5.3): the timer restarts with each acknowledgement of new data, so frames
                # queued behind others on a slow link (BLE at a small MTU) are not taken for lost.
                due = max(self.in_flight[0].left_wire, self.progress_at) + client._answer_allowance()
                await asyncio.wait(waiting, timeout=max(0.0, due - loop.time()), return_when=asyncio.FIRST_COMPLETED)
            acked = any(s.future.done() for s in self.in_flight)
            if acked:
                self._acks()  # the band answers in order: the data's answers before COMMIT's
            if self.commit is not None and self.commit.future.done():
                outcome = self._commit_answer()
                if outcome is not None:
                    return outcome
                continue
            if not acked:
                # Nothing came back in time: the oldest frame or its answer is lost.
                client.rtt.expired()
                self._stall(silent=True)
                self._go_back_to(self.confirmed)

    def _acks(self) -> None:
        """Handle the data answers that came, oldest first."""
        client = self.client
        for sent in list(self.in_flight):
            if not sent.future.done():
                continue
            self.in_flight.remove(sent)
            answer = sent.future.result()
            client._sample(sent, answer)
            try:
                acked = client._checked(sent.request, answer.message).offset
            except UploadError as exc:
                if exc.code != Status.NO_UPLOAD or not (sent.early or self.commit is not None):
                    raise
                if self.commit is not None and not sent.early:
                    # No upload after our COMMIT: it went through (its answer decides), nothing left to send.
                    self.stale.extend(self.in_flight)
                    self.in_flight.clear()
                    self.next_offset = self.confirmed = self.size
                    return
                # Sent behind a BEGIN that had not reached the band (it was sent again): send it again too.
                self._go_back_to(self.confirmed)
                return
            if acked > self.size:
                raise BandAnswerError(f"{self.address} acknowledged offset {acked} of a {self.size}-byte table")
            if self.commit is not None and sent.seq > self.commit.seq and not self.commit.future.done():
                # Data stored after our COMMIT, whose answer (due first) did not come: that COMMIT was lost,
                # or found bytes missing (had it committed, this data would be NO_UPLOAD). A new one follows the data.
                self.client._abandon(self.commit.request_id, self.commit.future)
                self.commit = None
            if acked > self.confirmed:
                self.stalls = 0
                self.confirmed = acked
                self.progress_at = answer.at
                if self.progress:
                    self.progress(self.confirmed, self.size)
            if acked < sent.end:
                # The band did not store this frame: an earlier one was lost. Go back.
                self._stall(silent=False)
                self._go_back_to(self.confirmed)
                return
            self.clean += 1
            if self.clean >= GROW_AFTER and self.chunk < self.best_chunk:
                self.chunk, self.clean = min(self.best_chunk, max(self.chunk + MIN_CHUNK, self.chunk * 5 // 4)), 0
            elif self.clean >= GROW_AFTER and self.frames_ahead < self.window:
                self.frames_ahead, self.clean = self.frames_ahead + 1, 0
        # Frames the band has stored although their own answers did not come (yet): nothing to wait for.
        for sent in [s for s in self.in_flight if s.end <= self.confirmed]:
            self.in_flight.remove(sent)
            self.stale.append(sent)

    # ---------------------------------------------------------------- commit

    def _commit_answer(self) -> UploadCommitResponse | None:
        """COMMIT's answer came: its response, or None when it found bytes missing (they go again, then a new COMMIT)."""
        commit = self.commit
        assert commit is not None and commit.future.done()
        answer = commit.future.result()
        try:
            response = self.client._checked(commit.request, answer.message)
        except UploadError as exc:
            # BAD_OFFSET: bytes were missing. NO_UPLOAD to a COMMIT sent before BEGIN's answer: BEGIN had not
            # reached the band (it was sent again), so neither had any of the data sent with it.
            if not (exc.code == Status.BAD_OFFSET or (exc.code == Status.NO_UPLOAD and commit.early)):
                raise
            self.client._abandon(commit.request_id, commit.future)
            self.commit = None
            if not self.back_since_commit:
                # The band had handled every frame sent before COMMIT, yet bytes were missing: the
                # unanswered ones (the last ones) were lost. Go back now rather than at their timeout.
                self._stall(silent=False)
                self._go_back_to(self.confirmed)
            return None
        assert isinstance(response, UploadCommitResponse)
        self.client._sample(commit, answer)
        self.commit_retried = commit.sends > 1
        return response

    async def _finish_commit(self) -> UploadCommitResponse:
        """Wait for COMMIT's answer, sending it again (same id) while none comes within the commit timeout.

        A commit whose answer was lost and that the band no longer remembers (NO_UPLOAD,
        or no answer at all) is recognised by INFO showing this table active.
        """
        client = self.client
        loop = asyncio.get_running_loop()
        while True:
            commit = self.commit
            assert commit is not None
            deadline = max(commit.first_sent, loop.time() - client._answer_allowance(commit.request)) + client.commit_timeout
            try:
                while not commit.future.done():
                    due = min(deadline, commit.left_wire + client._answer_allowance(commit.request))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(commit.future), max(0.0, due - loop.time()))
                        break
                    if loop.time() >= deadline:
                        raise BandTimeout(f"no answer from {self.address} to UPLOAD_COMMIT (verify and store) within "
                                          f"{client.commit_timeout:g} s ({commit.sends} tries) (is it a HandCue band, powered and in range?)")
                    await client._resend(commit)
                outcome = self._commit_answer()
            except (UploadError, BandTimeout) as exc:
                if isinstance(exc, UploadError) and exc.code != Status.NO_UPLOAD:
                    raise
                self.commit_retried = True
                return await client._commit_fallback(self.data, self.crc, exc)
            if outcome is not None:
                return outcome
            commit_answer = await self._transfer()  # BAD_OFFSET: the missing bytes again, then a new COMMIT
            if commit_answer is not None:
                return commit_answer

    def forget(self) -> None:
        """Stop waiting for every answer still owed (their ids are held while they may come)."""
        for sent in self.in_flight + self.stale + ([self.commit] if self.commit else []):
            self.client._abandon(sent.request_id, sent.future)
        self.in_flight, self.stale, self.commit = [], [], None
