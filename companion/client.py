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
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from protocol.constants import MAX_FRAME_PAYLOAD, BandState, BootOutcome, CueKind, MessageKind, Opcode, SkipScope, Status, TableError
from protocol.errors import BadRequestError, HandCueError, TableRefusedError, band_error
from protocol.framing import FrameParser, encode_frame, max_wire_size
from protocol.history import Session
from protocol.messages import (
    UPLOAD_DATA_OVERHEAD,
    Body,
    ClearHistoryRequest,
    EraseRequest,
    HistoryRequest,
    InfoRequest,
    Message,
    MessageError,
    MessageHeader,
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
    UploadCommitResponse,
    code_text,
    decode_message,
    encode_request,
)
from protocol.strength import check_strength
from protocol.table import CuePattern, check_table_header, pattern_problem, unsupported_version_text

from .ble.backend import BleBackend
from .errors import BandAnswerError, BandTimeout
from .rtt import INITIAL_RTO_S, KNOWN_SPEED_INITIAL_RTO_S, RoundTripTimer
from .transport import Transport, TransportClosed, open_transport
from .upload import PIPELINED_BEGIN_FIRMWARE, ProgressCallback, Sent, UploadResult, UploadRun

__all__ = ["BandAnswerError", "BandClient", "BandInfo", "BandStatus", "BandTimeout", "UploadResult"]

DEFAULT_TIMEOUT = 3.0
"""Longest wait for one answer, unless the caller gives ``timeout`` (the CLI's ``--timeout``)."""
COMMIT_TIMEOUT = 15.0
"""Longest wait for UPLOAD_BEGIN, UPLOAD_COMMIT and ERASE (flash work) when no ``timeout`` is given."""
ABANDONED_ID_HOLD_S = 30.0
"""How long the id of a request whose answer never came stays out of use (its answer may be late)."""
ANSWER_ALLOWANCE = 64
"""Bytes of an answer's frame whose wire time a request's retransmission timer allows besides the RTO."""
FOLLOW_POLL_S = 1.0
"""While following, ask for the status after this long without a notification."""
MAX_HISTORY_PAGES = 1024
"""History: pages read at most (a band holds a few hundred records, a few per page), so a band that keeps saying "more" cannot keep the companion forever."""
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




class BandClient:
    """An open session with one band.  Use ``async with BandClient.open(address)``."""

    def __init__(self, transport: Transport, *, timeout: float | None = None, commit_timeout: float | None = None,
                 hello: bool = True, set_clock: bool = True) -> None:
        """``timeout`` bounds every wait (default: 3 s, and 15 s for the flash work of BEGIN, COMMIT and ERASE).

        With ``hello`` (the default) :meth:`connect` asks INFO first: that starts a
        session on the band (it forgets the answers it kept for an earlier session's
        retries) and tells the band's limits; and it sets the band's clock (SET_TIME), as the Bluetooth
        Current Time Service does, so the sessions the band records carry dates (unless ``set_clock`` is False).
        Neither answer is waited for there: the first request follows at once (the band
        answers in order), and :meth:`hello_info` waits for INFO's where it is needed.
        """
        self.transport = transport
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if commit_timeout is None:
            commit_timeout = COMMIT_TIMEOUT if timeout is None else min(COMMIT_TIMEOUT, timeout)
        self.commit_timeout = commit_timeout
        self.hello = hello
        self.set_clock = set_clock
        self.band_info: BandInfo | None = None
        """What INFO said at connect (with ``hello``), once its answer came (:meth:`hello_info`)."""
        self._hello: asyncio.Future[BandInfo] | None = None
        self.parser = FrameParser(1024)
        self.rtt = RoundTripTimer(floor=transport.min_rto, initial=self._initial_rto())
        self.dropped_responses = 0
        self.retries = 0
        """Requests sent again because their answer did not come within the retransmission timeout."""
        self._pending: dict[int, tuple[Opcode, asyncio.Future[Answer]]] = {}
        self._send_lock = asyncio.Lock()
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
    def open(cls, address: str, *, ble: BleBackend | None = None, needs_trust: bool = True, **kwargs: Any) -> BandClient:
        """A client (not yet connected) for ``address``; a ``ble:`` one goes through the bleak backend ``ble``.

        ``needs_trust=False``: this session only reads the band (:meth:`info`, :meth:`status`, :meth:`follow`),
        which a paired band answers on any link, so a BLE link to a band this computer is paired with is not
        encrypted at connect and the first request goes out sooner (SPEC §21.5).  A paired band refuses a
        state-changing request on such a session (:class:`~companion.errors.NotPairedError`), and the hello's
        SET_TIME too (it keeps its clock).  Serial ignores it.
        """
        return cls(open_transport(address, ble=ble, needs_trust=needs_trust), **kwargs)

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
                if self.set_clock:
                    await self._send_clock()
            except BaseException:
                await self.close()
                raise

    def _on_hello(self, hello: asyncio.Future[BandInfo]) -> None:
        if not hello.cancelled() and hello.exception() is None:
            self.band_info = hello.result()

    async def hello_info(self) -> BandInfo | None:
        """INFO's answer to the hello (None without ``hello``); raises what that request raised."""
        if self._hello is None:
            return None
        try:
            return await asyncio.shield(self._hello)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or not self._hello.cancelled():
                raise  # the caller is being cancelled, not the hello
            raise TransportClosed(f"{self.transport.address}: the connection was closed before the band answered INFO") from None

    async def _send_clock(self) -> None:
        """Set the band's clock, best effort and without waiting: SET_TIME goes out once, right behind INFO.

        Its answer is not awaited (no round trip) and a lost one is not sent again: the next
        command sets the clock anew.  The band's clock is not in INFO or STATUS, so it is set every
        time (one frame of 17 bytes).  A band that refuses it (older firmware, or a protected band
        on an untrusted link, e.g. a session opened with ``needs_trust=False``) keeps the clock it has.
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
            return
        # Nobody awaits the answer: give its id back once it came or can no longer come.
        asyncio.get_running_loop().call_later(self.timeout, self._abandon_if_pending, request_id, future)

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

    def _abandon_if_pending(self, request_id: int, future: asyncio.Future[Answer]) -> None:
        """:meth:`_abandon` unless the answer came (its id may already serve another request)."""
        entry = self._pending.get(request_id)
        if entry is not None and entry[1] is future:
            self._abandon(request_id, future)

    def _register(self, request: Request[Any]) -> tuple[int, asyncio.Future[Answer]]:
        if self._closed is not None:
            raise TransportClosed(f"{self.transport.address}: link lost ({self._closed})")
        request_id = self._allocate_id()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (request.opcode, future)
        return request_id, future

    async def _transmit(self, frame: bytes) -> float:
        """Send ``frame``; returns when (loop time) its last byte will have left the wire.

        One frame at a time: a transport may send a frame in pieces with waits between them (BLE
        writes of one MTU each), and the hello's retries run in their own task beside the caller's."""
        async with self._send_lock:
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

        With a band that ties upload data to its link's UPLOAD_BEGIN (:meth:`_pipelines`),
        the first data frames follow BEGIN without waiting for its answer; UPLOAD_COMMIT
        always follows the last data frame without waiting for the data's answers (SPEC §19.2).
        """
        check_table_header(data)  # refuse to send what is not a table
        crc = zlib.crc32(data)
        # INFO went out at connect (the hello) and is answered by now or soon: its limits and firmware
        # decide how far the upload may pipeline.
        await self.hello_info()
        if self.band_info is not None and self.band_info.max_frame < MIN_BAND_FRAME:
            raise BandAnswerError(f"{self.transport.address} offers frames of {self.band_info.max_frame} bytes in INFO; "
                                  f"every band must accept {MIN_BAND_FRAME} (is its firmware broken?)")
        run = UploadRun(self, data, crc, progress)
        try:
            return await run.go()
        except TableRefusedError as exc:
            self.transport.discard_output()
            newer = unsupported_version_text(data[8]) if exc.detail == TableError.BAD_VERSION else None
            if newer is None:
                raise
            raise TableRefusedError(exc.code, f"{self.transport.address}: {newer}", exc.detail) from exc
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

    async def _send(self, *requests: Request[Any]) -> list[Sent]:
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
            sent.append(Sent(request_id, request, future, frame, left_wire, left_wire, self._sends))
        return sent

    async def _resend(self, sent: Sent) -> None:
        """Send ``sent`` again, same id and bytes (a lost answer gets the band's first answer, SPEC §16.2)."""
        LOG.debug("-> request #%d %s (again): frame %s", sent.request_id, sent.request, _Hex(sent.frame))
        self.rtt.expired()
        self.retries += 1
        sent.sends += 1
        sent.left_wire = await self._transmit(sent.frame)

    def _sample(self, sent: Sent, answer: Answer) -> None:
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

    async def preview(self, pattern: CuePattern, strength: int, kind: CueKind | None = None) -> None:
        """Play ``pattern`` on the band now at ``strength`` % (PREVIEW, SPEC §17.12); its routine and stored strength stay.

        Answered as soon as the band starts playing (the pattern lasts ``pattern.duration_ms``);
        refused with BAD_STATE while a routine runs.  ValueError for a pattern or strength no band plays.
        """
        check_strength(strength)
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(f"cue pattern {pattern.name or pattern.describe()}: {problem}")
        await self.request(PreviewRequest(strength=strength, kind=kind, segments=pattern.segments), what="PREVIEW (play a cue)")

    # ------------------------------------------------------------ session history

    async def history(self, since: int | None = None) -> list[Session]:
        """Every session record the band holds (with ``since``, those from that sequence number on), oldest first.

        Reads page after page (HISTORY, SPEC §17.10), each within the client's timeout, until the band says
        no more remain; a record written meanwhile comes in a later page.
        """
        from_seq = since or 0
        sessions: list[Session] = []
        for _page in range(MAX_HISTORY_PAGES):
            page = await self.request(HistoryRequest(from_seq=from_seq, max_count=0), what=f"HISTORY (records from #{from_seq})")
            sessions.extend(page.records)
            if not page.more:
                return sessions
            if not page.records or page.next_seq <= from_seq:
                raise BandAnswerError(f"{self.transport.address} says more history remains from #{from_seq} but sent none")
            from_seq = page.next_seq
        raise BandAnswerError(f"{self.transport.address} still had more history after {MAX_HISTORY_PAGES} pages")

    async def clear_history(self) -> None:
        """Erase the band's session history (flash work: the commit timeout). Needs a paired link on a paired band."""
        await self.request(ClearHistoryRequest(), timeout=self.commit_timeout, what="CLEAR_HISTORY")
