"""The band's protocol handler: frames in, responses and notifications out.

One handler serves every link (the serial pty and BLE at the same time); each
link has its own incremental frame parser.  Bytes that are not valid frames
are dropped and counted, and every valid request gets exactly one response, so
the band always stays responsive.
"""

from __future__ import annotations

import time
import zlib
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
    Status,
)
from protocol.errors import BandError, TableFormatError
from protocol.framing import FrameParser, ParserStats, encode_frame
from protocol.messages import (
    UPLOAD_DATA_OVERHEAD,
    Body,
    Empty,
    EraseRequest,
    FirmwareVersion,
    InfoRequest,
    InfoResponse,
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
    UploadBeginResponse,
    UploadCommitRequest,
    UploadCommitResponse,
    UploadDataRequest,
    UploadDataResponse,
    decode_message,
    encode_error,
    encode_notification,
    encode_response,
)
from protocol.table import check_table_header, decode_table

from .band import Band
from .flash import FlashError
from .interpreter import RunState
from .storage import StorageError

FIRMWARE_VERSION = (0, 1, 0)
UPLOAD_OWNERSHIP_S = 10.0
"""Another link may not start an upload while the owner was active this recently."""

Serve = Callable[[str, Any], Body]
"""A request handler: (link name, request) -> response body."""


@dataclass
class Link:
    name: str
    send: Callable[[bytes], None]
    parser: FrameParser = field(default_factory=FrameParser)


class ProtocolHandler:
    """Serves the transfer protocol for a :class:`Band`."""

    def __init__(self, band: Band, *, max_frame: int = MAX_FRAME_PAYLOAD, window: int = DEFAULT_UPLOAD_WINDOW) -> None:
        self.band = band
        self.max_frame = max_frame
        self.window = window
        self.links: dict[str, Link] = {}
        self._upload_owner: str | None = None
        self._upload_seen = 0.0
        self._name_cache: tuple[int | None, str] = (None, "")
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
            SkipRequest: lambda link, request: self._command(band.skip),
            StopRequest: lambda link, request: self._command(band.stop),
            StatusRequest: self._status,
        }
        band.listeners.append(self._band_event)

    # ------------------------------------------------------------ links

    def attach(self, name: str, send: Callable[[bytes], None]) -> None:
        self.links[name] = Link(name, send, FrameParser(self.max_frame))

    def detach(self, name: str) -> None:
        self.links.pop(name, None)

    @property
    def stats(self) -> ParserStats:
        total = ParserStats()
        for link in self.links.values():
            for key in vars(total):
                setattr(total, key, getattr(total, key) + getattr(link.parser.stats, key))
        return total

    def receive(self, name: str, chunk: bytes) -> None:
        """Bytes arrived on link ``name``; answer every complete request."""
        link = self.links[name]
        for message in link.parser.feed(chunk):
            reply = self.handle(name, message)
            if reply is not None:
                link.send(encode_frame(reply))

    def _band_event(self, event: dict[str, Any]) -> None:
        if event["event"] not in ("state", "cue"):
            return
        frame = encode_frame(encode_notification(self.band.status()))
        for link in list(self.links.values()):
            link.send(frame)

    # ------------------------------------------------------------ requests

    def handle(self, link: str, data: bytes) -> bytes | None:
        """The response to one message (None for messages that need no answer)."""
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
                self._name_cache = (active.crc, decode_table(table).name)
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
        )

    def _claim_upload(self, link: str) -> None:
        now = time.monotonic()
        owner = self._upload_owner
        if owner is not None and owner != link and owner in self.links and now - self._upload_seen < UPLOAD_OWNERSHIP_S:
            raise BandError(Status.BUSY, f"another companion ({owner}) is uploading; try again in {UPLOAD_OWNERSHIP_S:.0f} s")
        self._upload_owner = link
        self._upload_seen = now

    def _upload_begin(self, link: str, request: UploadBeginRequest) -> UploadBeginResponse:
        length, crc = request.length, request.crc32
        if length == 0:
            raise BandError(Status.BAD_REQUEST, "an upload of 0 bytes")
        if length > Limits.MAX_TABLE_BYTES:
            raise BandError(Status.TOO_LARGE, f"table of {length} bytes; this band stores at most {Limits.MAX_TABLE_BYTES}")
        self._claim_upload(link)
        offset = self.band.storage.begin_upload(length, crc)
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
        if self.band.interpreter is not None and self.band.interpreter.state in (RunState.RUNNING, RunState.PAUSED):
            raise BandError(Status.BUSY, "a routine is playing; stop it before replacing it")
        self._claim_upload(link)
        try:
            data = storage.commit()
        except TableFormatError:
            self._upload_owner = None  # refused: the upload is forgotten, nothing left to own
            raise
        self._upload_owner = None
        self.band.reload()
        self.band.announce_state()
        return UploadCommitResponse(crc32=zlib.crc32(data), total_ms=check_table_header(data).total_ms)

    def _erase(self, link: str, request: EraseRequest) -> Empty:
        if self.band.interpreter is not None and self.band.interpreter.state in (RunState.RUNNING, RunState.PAUSED):
            raise BandError(Status.BUSY, "a routine is playing; stop it before erasing")
        self.band.storage.erase()
        self._upload_owner = None
        self.band.reload()
        self.band.announce_state()
        return Empty()

    def _command(self, action: Callable[[], None]) -> StatusReport:
        action()
        return self.band.status()

    def _status(self, link: str, request: StatusRequest) -> StatusReport:
        self.band.process()
        return self.band.status()
