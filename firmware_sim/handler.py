"""The band's protocol handler: frames in, responses and notifications out.

One handler serves every link (the serial pty and BLE at the same time); each
link has its own incremental frame parser.  Bytes that are not valid frames
are dropped and counted, and every valid request gets exactly one response, so
the band always stays responsive.

Requests that change state are safe to send again: each link keeps the answers
to its last few of them, and a request repeating one (same request id, same
bytes) gets that first answer again without being carried out twice, so a
companion whose answer was lost on the link simply retries (SPEC §16.2).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.constants import (
    DEFAULT_UPLOAD_WINDOW,
    MAX_FRAME_PAYLOAD,
    MESSAGE_HEADER_SIZE,
    PROTOCOL_VERSION,
    Limits,
    MessageKind,
    Opcode,
    Status,
)
from protocol.errors import BandError, TableFormatError
from protocol.framing import FrameParser, ParserStats, encode_frame
from protocol.messages import (
    REQUEST_TYPES,
    UPLOAD_DATA_OVERHEAD,
    Body,
    ClearHistoryRequest,
    Empty,
    EraseRequest,
    FirmwareVersion,
    HistoryRequest,
    HistoryResponse,
    InfoRequest,
    InfoResponse,
    MessageError,
    MessageHeader,
    PauseRequest,
    PreviewRequest,
    Request,
    ResponseHead,
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
    decode_message,
    encode_error,
    encode_notification,
    encode_response,
    history_records_per_frame,
)
from protocol.table import check_table_header, pattern_problem, table_name

from .band import Band
from .flash import FlashError
from .interpreter import RunState
from .storage import StorageError

FIRMWARE_VERSION = (0, 2, 0)
"""0.2: upload data and COMMIT only on a link whose last UPLOAD_BEGIN was accepted (companions pipeline BEGIN from here)."""
UPLOAD_OWNERSHIP_S = 10.0
"""Another link may not start an upload while the owner was active this recently."""

REPLY_CACHE_SIZE = 16
"""Answers to state-changing requests each link remembers, for retries of the same request."""
REPLY_CACHE_S = 60.0
"""How long such an answer is kept: far longer than any companion retries a request."""
INFO_RETRY_S = 15.0
"""An INFO repeating the link's last one (same id and bytes) within this long is a retry, not a new session."""

ACK_HOLD_S = 0.005
"""How long the answer to an UPLOAD_DATA of a stream may wait for the next ones, to leave in the same send."""
STREAM_GAP_S = 0.010
"""UPLOAD_DATA arriving within this long of the previous one's answer belong to a stream (a windowed upload);
a companion that waits for each answer sends its next one later, and its answers are never held."""
ACK_BATCH = 8
"""Held data answers sent at once when this many are waiting."""

Serve = Callable[[str, Any], Body]
"""A request handler: (link name, request) -> response body."""


@dataclass
class Link:
    name: str
    send: Callable[[bytes], None]
    parser: FrameParser = field(default_factory=FrameParser)
    held: list[bytes] | None = None
    """While a received chunk is handled: the frames to send for it, sent together when it is done."""
    acks: list[bytes] = field(default_factory=list)
    """Answers to UPLOAD_DATA of a stream, held for up to :data:`ACK_HOLD_S` to leave together."""
    flush_timer: asyncio.TimerHandle | None = None
    last_ack_at: float = float("-inf")
    """Loop time of the last UPLOAD_DATA answered."""

    def put(self, frame: bytes) -> None:
        if self.held is not None:
            self.held.append(frame)
        else:
            self.emit([frame])

    def emit(self, frames: list[bytes]) -> None:
        """Send ``frames`` after any held answers (they came first), in one send."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        frames, self.acks = self.acks + frames, []
        if frames:
            self.send(b"".join(frames))

    def hold(self, frames: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.acks.extend(frames)
        if len(self.acks) >= ACK_BATCH:
            self.emit([])
        elif self.flush_timer is None:
            self.flush_timer = loop.call_later(ACK_HOLD_S, self.emit, [])


def _is_data_ack(reply: bytes) -> bool:
    """Whether ``reply`` (a response this handler built) is an OK answer to UPLOAD_DATA."""
    if len(reply) < MESSAGE_HEADER_SIZE + ResponseHead.sizeof():
        return False
    header, head = MessageHeader.parse(reply), ResponseHead.parse(reply[MESSAGE_HEADER_SIZE:])
    return header.kind == MessageKind.RESPONSE and header.opcode == Opcode.UPLOAD_DATA and head.status == Status.OK


def _sum_stats(first: ParserStats, second: ParserStats) -> ParserStats:
    return ParserStats(**{key: getattr(first, key) + getattr(second, key) for key in vars(first)})


class ProtocolHandler:
    """Serves the transfer protocol for a :class:`Band`."""

    def __init__(self, band: Band, *, max_frame: int = MAX_FRAME_PAYLOAD, window: int = DEFAULT_UPLOAD_WINDOW) -> None:
        self.band = band
        self.max_frame = max_frame
        self.window = window
        self.links: dict[str, Link] = {}
        self._past_stats = ParserStats()
        """Parser counts of links that have closed."""
        self._upload_owner: str | None = None
        self._upload_seen = 0.0
        self._name_cache: tuple[int | None, str] = (None, "")
        self._replies: dict[str, OrderedDict[int, tuple[bytes, bytes, float]]] = {}
        """Per link: request id -> (request, its answer, when), for the last state-changing requests."""
        self._last_info: dict[str, tuple[bytes, float]] = {}
        """Per link: the last INFO's bytes and when it came (a retry of it keeps the link's answers)."""
        self._begun: set[str] = set()
        """Links whose last UPLOAD_BEGIN was accepted (since their INFO): only they may send data and COMMIT (SPEC §19.5)."""
        # The one table from request type to handler; a request type missing here is a bug the tests catch.
        self._serve: dict[type[Request[Any]], Serve] = {
            InfoRequest: self._info,
            UploadBeginRequest: self._upload_begin,
            UploadDataRequest: self._upload_data,
            UploadCommitRequest: self._upload_commit,
            EraseRequest: self._erase,
            StartRequest: lambda link, request: self._command(band.start),
            PauseRequest: lambda link, request: self._command(band.pause),
            ResumeRequest: lambda link, request: self._command(band.resume),
            SkipRequest: lambda link, request: self._command(lambda: band.skip(request.scope)),
            StopRequest: lambda link, request: self._command(band.stop),
            StatusRequest: self._status,
            SettingsRequest: lambda link, request: SettingsResponse(strength=band.strength),
            SetSettingsRequest: self._set_settings,
            SetTimeRequest: self._set_time,
            PreviewRequest: self._preview,
            HistoryRequest: self._history,
            ClearHistoryRequest: self._clear_history,
        }
        band.listeners.append(self._band_event)

    # ------------------------------------------------------------ links

    def attach(self, name: str, send: Callable[[bytes], None]) -> None:
        """A link (a serial port, a BLE connection) starts, with a fresh frame parser."""
        self.detach(name)
        self.links[name] = Link(name, send, FrameParser(self.max_frame))

    def detach(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None and link.flush_timer is not None:
            link.flush_timer.cancel()  # the link is gone, and the answers it held with it
        self._replies.pop(name, None)
        self._last_info.pop(name, None)
        self._begun.discard(name)
        if link is not None:
            self._past_stats = _sum_stats(self._past_stats, link.parser.stats)

    @property
    def stats(self) -> ParserStats:
        """Frames received and dropped over every link since the band started, closed links included."""
        total = self._past_stats
        for link in self.links.values():
            total = _sum_stats(total, link.parser.stats)
        return total

    def receive(self, name: str, chunk: bytes) -> None:
        """Bytes arrived on link ``name``; answer every complete request.

        The answers to the requests of one chunk (and the notifications they cause, before
        their answers) go out in one send: on BLE, one notification instead of one each, so
        that a write carrying a short request beside a data frame costs one packet back too.
        """
        link = self.links[name]
        link.held = held = []
        data_acks = 0
        try:
            for message in link.parser.feed(chunk):
                reply = self.handle(name, message)
                if reply is not None:
                    held.append(encode_frame(reply))
                    data_acks += _is_data_ack(reply)
        finally:
            link.held = None
            if held:
                self._send_answers(link, held, only_data_acks=data_acks == len(held))

    def _send_answers(self, link: Link, frames: list[bytes], *, only_data_acks: bool) -> None:
        """Send the frames answering one chunk; answers to UPLOAD_DATA of a stream may wait a little for the next.

        A windowed companion's frames arrive back to back (on BLE, several per connection event):
        their answers leave together, one notification instead of one each, which saves air time.
        Anything else (an error, COMMIT, a notification) sends what is held first and goes at once, so
        answers keep their order and a companion that waits for each answer never waits longer.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # called outside an event loop (a test): nothing can wait
        if not only_data_acks or loop is None:
            link.emit(frames)
            return
        now = loop.time()
        streaming = bool(link.acks) or now - link.last_ack_at < STREAM_GAP_S
        link.last_ack_at = now
        if streaming:
            link.hold(frames, loop)
        else:
            link.emit(frames)

    def _band_event(self, event: dict[str, Any]) -> None:
        if event["event"] not in ("state", "cue"):
            return
        frame = encode_frame(encode_notification(self.band.status()))
        for link in list(self.links.values()):
            link.put(frame)

    # ------------------------------------------------------------ requests

    def handle(self, link: str, data: bytes) -> bytes | None:
        """The response to one message (None for messages that need no answer).

        A state-changing request that repeats a recent one of this link (same id
        and bytes) gets the first answer again and is not carried out twice.  INFO
        begins a companion's session: it forgets the link's remembered answers, so
        a new session's request ids never meet an old session's answers.
        """
        if len(data) < MESSAGE_HEADER_SIZE or data[1] != MessageKind.REQUEST or data[2] not in Opcode._value2member_map_:
            return self._handle(link, data)
        request_id, request_type = data[3], REQUEST_TYPES[Opcode(data[2])]
        replies = self._replies.setdefault(link, OrderedDict())
        now = time.monotonic()
        cached = replies.get(request_id)
        if cached is not None and cached[0] == data and now - cached[2] < REPLY_CACHE_S:
            return cached[1]  # a retry: its first answer, not a second action
        reply = self._handle(link, data)
        if request_type is InfoRequest:
            last = self._last_info.get(link)
            self._last_info[link] = (data, now)
            # A retried INFO (same id and bytes, soon after) is the same session: forgetting its answers
            # then would carry out a retried request sent behind it a second time.
            if last is None or last[0] != data or now - last[1] > INFO_RETRY_S:
                replies.clear()
                self._begun.discard(link)
        elif not request_type.idempotent and reply is not None:
            replies.pop(request_id, None)
            replies[request_id] = (data, reply, now)
            while len(replies) > REPLY_CACHE_SIZE:
                replies.popitem(last=False)
        return reply

    def _handle(self, link: str, data: bytes) -> bytes | None:
        try:
            message = decode_message(data)
        except MessageError as exc:
            if len(data) >= MESSAGE_HEADER_SIZE and MessageHeader.parse(data).kind != MessageKind.REQUEST:
                return None
            return encode_error(exc.opcode, exc.request_id, exc.status, reason=str(exc))
        if message.kind != MessageKind.REQUEST:
            return None  # the band ignores stray responses and notifications
        opcode, request_id = message.opcode, message.request_id
        try:
            request = message.body
            assert isinstance(request, Request)  # decode_message reads every request into its class
            body = self._serve[type(request)](link, request)
        except BandError as exc:
            return encode_error(opcode, request_id, exc.code, exc.detail, str(exc))
        except TableFormatError as exc:
            return encode_error(opcode, request_id, Status.TABLE_REFUSED, int(exc.code), str(exc))
        except StorageError as exc:
            return encode_error(opcode, request_id, Status.BAD_OFFSET, reason=str(exc))
        except FlashError as exc:
            return encode_error(opcode, request_id, Status.FLASH_FAILURE, reason=str(exc))
        return encode_response(opcode, request_id, body)

    def _info(self, link: str, request: InfoRequest) -> InfoResponse:
        active = self.band.storage.active
        table = self.band.storage.active_table()
        name = ""
        if table is not None and active is not None:
            if self._name_cache[0] != active.crc:
                self._name_cache = (active.crc, table_name(table))
            name = self._name_cache[1]
        return InfoResponse(
            band_id=self.band.band_id,
            firmware=FirmwareVersion(*FIRMWARE_VERSION),
            protocol_version=PROTOCOL_VERSION,
            battery=round(self.band.battery_percent),
            state=self.band.status().state,
            max_table=Limits.MAX_TABLE_BYTES,
            max_frame=self.max_frame,
            window=self.window,
            has_routine=active is not None,
            routine_crc32=active.crc if active else 0,
            routine_size=active.length if active else 0,
            routine_name=name,
            boot_outcome=self.band.storage.boot_report.outcome,
        )

    def _claim_upload(self, link: str, *, begun: bool = True) -> None:
        """Make ``link`` the upload's owner (BUSY while another link owns it); with ``begun``, only a link
        whose last UPLOAD_BEGIN was accepted: data and COMMIT sent behind a refused or lost BEGIN (a
        companion sends them before BEGIN's answer) must not reach an upload begun earlier (SPEC §19.5)."""
        now = time.monotonic()
        owner = self._upload_owner
        if owner is not None and owner != link and owner in self.links and now - self._upload_seen < UPLOAD_OWNERSHIP_S:
            raise BandError(Status.BUSY, f"another companion ({owner}) is uploading; try again in {UPLOAD_OWNERSHIP_S:.0f} s")
        if begun and link not in self._begun:
            raise BandError(Status.NO_UPLOAD, "no upload begun on this link; send UPLOAD_BEGIN first")
        self._upload_owner = link
        self._upload_seen = now

    def _upload_begin(self, link: str, request: UploadBeginRequest) -> UploadBeginResponse:
        length, crc = request.length, request.crc32
        self._begun.discard(link)  # if refused below, the data sent behind this BEGIN is answered NO_UPLOAD
        if length == 0:
            raise BandError(Status.BAD_REQUEST, "an upload of 0 bytes")
        if length > Limits.MAX_TABLE_BYTES:
            raise BandError(Status.TOO_LARGE, f"table of {length} bytes; this band stores at most {Limits.MAX_TABLE_BYTES}")
        if self._playing():
            # Known now, so refused now: before the companion's data is stored.
            raise BandError(Status.BUSY, "a routine is playing; stop it before replacing it")
        self._claim_upload(link, begun=False)
        offset = self.band.storage.begin_upload(length, crc)
        self._begun = {link}  # the upload is this BEGIN's: data another link began for an older one goes nowhere
        return UploadBeginResponse(offset=offset, max_chunk=self.max_frame - UPLOAD_DATA_OVERHEAD, window=self.window)

    def _upload_data(self, link: str, request: UploadDataRequest) -> UploadDataResponse:
        storage = self.band.storage
        if storage.upload is None:
            raise BandError(Status.NO_UPLOAD, "no upload in progress; send UPLOAD_BEGIN first")
        self._claim_upload(link)
        if request.offset == storage.upload.offset and request.data:
            storage.write_chunk(request.offset, request.data)
        # Out-of-order data (an earlier frame was lost) is dropped; the cumulative
        # acknowledgement tells the companion where to go back to.
        return UploadDataResponse(offset=storage.upload.offset)

    def _upload_commit(self, link: str, request: UploadCommitRequest) -> UploadCommitResponse:
        storage = self.band.storage
        if storage.upload is None:
            raise BandError(Status.NO_UPLOAD, "no upload in progress")
        if self._playing():
            raise BandError(Status.BUSY, "a routine is playing; stop it before replacing it")
        self._claim_upload(link)
        try:
            data = storage.commit()  # reads the whole table back: size and CRC-32 verified, or refused
        except TableFormatError:
            self._upload_owner = None  # refused: the upload is forgotten, nothing left to own
            self._begun.clear()
            raise
        self._upload_owner = None
        self._begun.clear()
        self.band.reload()
        self.band.announce_state()
        return UploadCommitResponse(crc32=zlib.crc32(data), total_ms=check_table_header(data).total_ms)

    def _erase(self, link: str, request: EraseRequest) -> Empty:
        if self._playing():
            raise BandError(Status.BUSY, "a routine is playing; stop it before erasing")
        self.band.storage.erase()
        self._upload_owner = None
        self._begun.clear()
        self.band.reload()
        self.band.announce_state()
        return Empty()

    def _playing(self) -> bool:
        return self.band.interpreter is not None and self.band.interpreter.state in (RunState.RUNNING, RunState.PAUSED)

    def _command(self, action: Callable[[], None]) -> StatusReport:
        action()
        return self.band.status()

    def _set_settings(self, link: str, request: SetSettingsRequest) -> SettingsResponse:
        try:
            self.band.set_strength(request.strength)
        except ValueError as exc:
            raise BandError(Status.BAD_REQUEST, str(exc)) from exc
        return SettingsResponse(strength=self.band.strength)

    def _preview(self, link: str, request: PreviewRequest) -> Empty:
        problem = pattern_problem(request.pattern)
        if problem:
            raise BandError(Status.BAD_REQUEST, f"preview pattern: {problem}")
        try:
            self.band.preview([(s.amplitude, s.duration_ms) for s in request.segments], request.strength, request.kind)
        except ValueError as exc:
            raise BandError(Status.BAD_REQUEST, str(exc)) from exc
        return Empty()

    def _set_time(self, link: str, request: SetTimeRequest) -> Empty:
        self.band.set_wall_clock(request.unix_ms)
        return Empty()

    def _status(self, link: str, request: StatusRequest) -> StatusReport:
        self.band.process()
        return self.band.status()

    def _history(self, link: str, request: HistoryRequest) -> HistoryResponse:
        history = self.band.storage.history
        held = history.sessions(request.from_seq)
        fit = history_records_per_frame(self.max_frame)
        page = held[: min(fit, request.max_count) if request.max_count else fit]
        next_seq = page[-1].seq + 1 if page else history.next_seq
        return HistoryResponse(next_seq=next_seq, more=len(held) > len(page), records=page)

    def _clear_history(self, link: str, request: ClearHistoryRequest) -> Empty:
        self.band.storage.history.clear()
        return Empty()
