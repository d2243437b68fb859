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
from .rtt import INITIAL_RTO_S, RoundTripTimer
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
        retries) and tells the band's limits; and it sets the band's clock (SET_TIME).
        Neither answer is waited for there: the first request follows at once (the band
        answers in order), and :meth:`hello_info` waits for INFO's where it is needed.
        """
        self.transport = transport
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if commit_timeout is None:
            commit_timeout = COMMIT_TIMEOUT if timeout is None else min(COMMIT_TIMEOUT, timeout)
        self.commit_timeout = commit_timeout
        self.hello = hello
        self.band_info: BandInfo | None = None
        """What INFO said at connect (with ``hello``), once its answer came (:meth:`hello_info`)."""
        self._hello: asyncio.Future[BandInfo] | None = None
        self.parser = FrameParser(1024)
        self.rtt = RoundTripTimer(floor=transport.min_rto)
        self.dropped_responses = 0
        self.retries = 0
        """Requests sent again because their answer did not come within the retransmission timeout."""
        self._pending: dict[int, tuple[Opcode, asyncio.Future[Answer]]] = {}
        self._next_id = random.randrange(256)  # a new session does not start where the last one did
        self._abandoned: dict[int, float] = {}
        self._wire_free = 0.0
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
        if self.hello:
            try:
                # INFO must reach the band before any other request (it starts the session), but
                # its answer is not awaited here: no round trip before the caller's first request.
                sent = asyncio.Event()
                self._hello = asyncio.ensure_future(self.info(sent))
                self._hello.add_done_callback(self._on_hello)
                went_out = asyncio.ensure_future(sent.wait())
                try:
                    await asyncio.wait([went_out, self._hello], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    went_out.cancel()
                if not sent.is_set():
                    await self._hello  # it failed before INFO went out: raise why
                await self._send_clock()
            except BaseException:
                await self.close()
                raise

    def _on_hello(self, hello: asyncio.Future[BandInfo]) -> None:
        if not hello.cancelled() and hello.exception() is None:
            self.band_info = hello.result()

    async def hello_info(self) -> BandInfo | None:
        """INFO's answer to the hello (None without ``hello``); raises what that request raised."""
        return None if self._hello is None else await asyncio.shield(self._hello)

    async def _send_clock(self) -> None:
        """Set the band's clock, best effort and without waiting: SET_TIME goes out once, right behind INFO.

        Its answer is not awaited (no round trip) and a lost one is not sent again: the next
        command sets the clock anew.  The band's clock is not in INFO or STATUS, so it is set every
        time (one frame of 17 bytes).  A band that refuses it (older firmware, or a protected band
        on an untrusted link) keeps the clock it has.
        """
        import time

        request = SetTimeRequest(unix_ms=time.time_ns() // 1_000_000)
        request_id, future = self._register(request)
        LOG.debug("-> request #%d %s (answer not awaited)", request_id, request)
        try:
            await self._transmit(encode_frame(encode_request(request, request_id)))
        except HandCueError as exc:  # a transport that asked for a response and got a refusal
            LOG.debug("setting the band's clock failed: %s", exc)
            self._abandon(request_id, future)

    async def close(self) -> None:
        if self._hello is not None and not self._hello.done():
            self._hello.cancel()  # nobody needed its answer
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

    async def request(self, request: Request[R], *, timeout: float | None = None, what: str | None = None,
                      sent: asyncio.Event | None = None) -> R:
        """Send one request and wait for its typed response; raise the band's error if it refused.

        Within ``timeout`` the request is sent again, with the same id, whenever
        the retransmission timer expires: the band answers a repeated request that
        changes state with its first answer (SPEC §16.2), so a lost answer never
        becomes a second action.  ``sent`` is set once the request first went out.
        """
        with self.transport.phases.phase(request.opcode.name):
            return (await self._exchange(request, timeout, what, sent))[0]

    async def _exchange(self, request: Request[R], timeout: float | None = None, what: str | None = None,
                        sent: asyncio.Event | None = None) -> tuple[R, Arrival]:
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
                if sent is not None:
                    sent.set()
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

    async def info(self, sent: asyncio.Event | None = None) -> BandInfo:
        body = await self.request(InfoRequest(), what="INFO (device information)", sent=sent)
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
        """
        check_table_header(data)  # refuse to send what is not a table
        size, crc = len(data), zlib.crc32(data)
        # BEGIN may erase flash sectors on the band: it gets the long timeout too.
        begin = await self.request(UploadBeginRequest(length=size, crc32=crc), timeout=self.commit_timeout, what="UPLOAD_BEGIN")
        # Checked once BEGIN is answered (the band answers in order: INFO's answer came first), so BEGIN
        # went out right behind the hello; a band that fails the check got no data frame.
        await self.hello_info()
        if self.band_info is not None and self.band_info.max_frame < MIN_BAND_FRAME:
            raise BandAnswerError(f"{self.transport.address} offers frames of {self.band_info.max_frame} bytes in INFO; "
                                  f"every band must accept {MIN_BAND_FRAME} (is its firmware broken?)")
        if begin.max_chunk < 1 or begin.window < 1:
            raise BandAnswerError(f"{self.transport.address} answered UPLOAD_BEGIN with unusable limits: chunks of at most "
                                  f"{begin.max_chunk} bytes, a window of {begin.window} frames (each must be at least 1)")
        if begin.offset > size:
            raise BandAnswerError(f"{self.transport.address} answered UPLOAD_BEGIN with offset {begin.offset}, past the table's {size} bytes")
        resumed_from = begin.offset
        if progress:
            progress(begin.offset, size)
        try:
            with self.transport.phases.phase("data"):
                frames, retransmissions = await self._send_data(data, begin.offset, begin.max_chunk, begin.window, progress)
        except BaseException:
            self.transport.discard_output()  # the band need not chew through frames nobody waits for
            raise
        commit, retried = await self._commit(data, crc)
        if commit.crc32 != crc:
            raise BandAnswerError(f"{self.transport.address} reports CRC-32 0x{commit.crc32:08X} at UPLOAD_COMMIT; "
                                  f"the table's is 0x{crc:08X} (upload it again)")
        return UploadResult(size, crc, resumed_from, frames, retransmissions, commit.total_ms, retried)

    async def _commit(self, data: bytes, crc: int) -> tuple[UploadCommitResponse, bool]:
        """UPLOAD_COMMIT, sent again while no answer comes (the band answers a repeat with its first answer).

        A commit whose answer was lost and that the band no longer remembers (NO_UPLOAD,
        or no answer at all) is recognised by INFO showing this table active: never
        "failed" while the band switched.  Returns the answer and whether it took more than one try.
        """
        retries = self.retries
        try:
            answer = await self.request(UploadCommitRequest(), timeout=self.commit_timeout, what="UPLOAD_COMMIT (verify and store)")
            return answer, self.retries > retries
        except (UploadError, BandTimeout) as exc:
            if isinstance(exc, UploadError) and exc.code != Status.NO_UPLOAD:
                raise
            try:
                info = await self.info()
            except HandCueError:
                raise exc from None
            if info.routine_crc32 == crc and info.routine_size == len(data):
                return UploadCommitResponse(crc32=crc, total_ms=check_table_header(data).total_ms), True
            raise

    async def _send_data(self, data: bytes, offset: int, band_max_chunk: int, band_window: int,
                         progress: ProgressCallback | None) -> tuple[int, int]:
        """Go-back-N over the band's cumulative acks, timed by the RTO; returns (frames, retransmitted frames).

        The data chunk adapts to the link: halved (down to :data:`MIN_CHUNK`) after
        every loss, grown by a quarter after a clean window, so a noisy link gets
        short frames that survive and a clean one long frames that carry more.
        The bytes in flight stay within :data:`WINDOW_SHARE_OF_TIMEOUT` of the
        timeout on the wire, so every ack wait fits in the timeout at any baud rate.
        """
        loop = asyncio.get_running_loop()
        size = len(data)
        best_chunk = self._chunk_size(band_max_chunk)
        rate = self.transport.bytes_per_second
        if rate:
            budget = int(rate * self.timeout * WINDOW_SHARE_OF_TIMEOUT)
            room = budget - max_wire_size(UPLOAD_DATA_OVERHEAD)
            best_chunk = max(1, min(best_chunk, room if room >= MIN_CHUNK else MIN_CHUNK))
        else:
            budget = 0
        chunk = best_chunk
        confirmed = next_offset = offset
        frames = retransmissions = stalls = clean = 0
        in_flight: list[tuple[int, UploadDataRequest, asyncio.Future[Answer], float]] = []  # oldest first
        stale: list[tuple[int, asyncio.Future[Answer], float]] = []  # sent before a go-back; their answers still come

        def go_back() -> None:
            nonlocal next_offset, chunk, clean, retransmissions
            retransmissions += sum(1 for _, piece, _, _ in in_flight if piece.offset + len(piece.data) > confirmed)
            stale.extend((rid, future, deadline) for rid, _, future, deadline in in_flight)
            in_flight.clear()
            next_offset = confirmed
            chunk = max(min(MIN_CHUNK, best_chunk), chunk * 2 // 3)
            clean = 0

        try:
            while confirmed < size:
                in_flight_bytes = sum(max_wire_size(UPLOAD_DATA_OVERHEAD + len(p.data)) for _, p, _, _ in in_flight)
                while next_offset < size and len(in_flight) < band_window:
                    piece = UploadDataRequest(offset=next_offset, data=data[next_offset : next_offset + self._fit(chunk, best_chunk)])
                    frame_bytes = max_wire_size(UPLOAD_DATA_OVERHEAD + len(piece.data))
                    if in_flight and budget and in_flight_bytes + frame_bytes > self._pipe_bytes(budget, frame_bytes):
                        break
                    while stale and len(self._pending) >= STALE_PENDING_LIMIT:
                        old_id, old_future, _ = stale.pop(0)  # the oldest answer still awaited: hold its id instead
                        self._abandon(old_id, old_future)
                    request_id, future = self._register(piece)
                    left_wire = await self._transmit(encode_frame(encode_request(piece, request_id)))
                    in_flight.append((request_id, piece, future, left_wire))
                    in_flight_bytes += frame_bytes
                    next_offset += len(piece.data)
                    frames += 1
                # Forget stale requests whose answers came, or never will.
                now = loop.time()
                for old in [e for e in stale if e[1].done() or now > e[2] + 2 * self._answer_allowance()]:
                    stale.remove(old)
                    self._abandon(old[0], old[1])
                if not in_flight:
                    continue
                head_due = in_flight[0][3] + self._answer_allowance()
                if not any(f.done() for _, _, f, _ in in_flight):
                    await asyncio.wait([f for _, _, f, _ in in_flight], timeout=max(0.0, head_due - loop.time()),
                                       return_when=asyncio.FIRST_COMPLETED)
                if not any(f.done() for _, _, f, _ in in_flight):
                    # Nothing came back in time: the oldest frame or its answer is lost.
                    self.rtt.expired()
                    stalls += 1
                    if stalls > MAX_RETRIES:
                        raise BandTimeout(
                            f"{self.transport.address} did not acknowledge upload data at offset {confirmed} "
                            f"({MAX_RETRIES + 1} waits of up to {self._answer_allowance():.2g} s in a row; "
                            f"{confirmed} of {size} bytes stored; upload again to resume)"
                        )
                    go_back()
                    continue
                for entry in list(in_flight):
                    request_id, piece, future, left_wire = entry
                    if not future.done():
                        continue
                    in_flight.remove(entry)
                    answer = future.result()
                    self.rtt.sample(answer.at - left_wire)
                    acked = self._checked(piece, answer.message).offset
                    if acked > size:
                        raise BandAnswerError(f"{self.transport.address} acknowledged offset {acked} of a {size}-byte table")
                    if acked > confirmed:
                        stalls = 0
                        confirmed = acked
                        if progress:
                            progress(confirmed, size)
                    if acked < piece.offset + len(piece.data):
                        # The band did not store this frame: an earlier one was lost. Go back.
                        stalls += 1
                        if stalls > MAX_RETRIES:
                            raise BandTimeout(
                                f"{self.transport.address} keeps losing upload data at offset {confirmed} "
                                f"({MAX_RETRIES + 1} retransmissions in a row; {confirmed} of {size} bytes stored; upload again to resume)"
                            )
                        go_back()
                        break
                    clean += 1
                    if clean >= GROW_AFTER and chunk < best_chunk:
                        chunk, clean = min(best_chunk, max(chunk + MIN_CHUNK, chunk * 5 // 4)), 0
                # Frames the band has stored although their own answers did not come (yet): nothing to wait for.
                for entry in [e for e in in_flight if e[1].offset + len(e[1].data) <= confirmed]:
                    in_flight.remove(entry)
                    stale.append((entry[0], entry[2], entry[3]))
        finally:
            for request_id, _, future, _ in in_flight:
                self._abandon(request_id, future)
            for request_id, future, _ in stale:
                self._abandon(request_id, future)
        return frames, retransmissions

    def _pipe_bytes(self, budget: int, frame_bytes: int) -> int:
        """Bytes to keep in flight on a link of known speed: enough to keep the wire busy for a round trip
        and one more frame, no more (after a loss, every byte queued behind the lost frame is sent again)."""
        rate = self.transport.bytes_per_second or 0.0
        if self.rtt.srtt is None:
            return budget
        keep_busy = int(rate * (self.rtt.srtt + 4 * self.rtt.rttvar)) + 2 * frame_bytes
        return min(budget, keep_busy)

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
