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
    BandState,
    Limits,
    MessageKind,
    Opcode,
    Status,
)
from protocol.errors import BandError, TableFormatError
from protocol.framing import FrameParser, ParserStats, encode_frame
from protocol.messages import (
    UPLOAD_DATA_OVERHEAD,
    Message,
    MessageError,
    MessageHeader,
    decode_message,
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
        frame = encode_frame(encode_notification(Opcode.STATUS, **self._status_fields()))
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
            return encode_response(exc.opcode, exc.request_id, exc.status, reason=str(exc))
        if message.kind != MessageKind.REQUEST:
            return None  # the band ignores stray responses and notifications
        opcode, request_id = message.opcode, message.request_id
        try:
            fields = getattr(self, f"_on_{opcode.name.lower()}")(link, message)
        except BandError as exc:
            return encode_response(opcode, request_id, exc.code, exc.detail, str(exc))
        except TableFormatError as exc:
            return encode_response(opcode, request_id, Status.TABLE_REFUSED, int(exc.code), str(exc))
        except StorageError as exc:
            return encode_response(opcode, request_id, Status.BAD_OFFSET, reason=str(exc))
        except FlashError as exc:
            return encode_response(opcode, request_id, Status.FLASH_FAILURE, reason=str(exc))
        return encode_response(opcode, request_id, **fields)

    def _status_fields(self) -> dict[str, Any]:
        return self.band.status().to_fields()

    def _on_info(self, link: str, message: Message) -> dict[str, Any]:
        active = self.band.storage.active
        table = self.band.storage.active_table()
        name = ""
        if table is not None and active is not None:
            if self._name_cache[0] != active.crc:
                self._name_cache = (active.crc, decode_table(table).name)
            name = self._name_cache[1]
        return dict(
            band_id=self.band.band_id,
            firmware=dict(zip(("major", "minor", "patch"), FIRMWARE_VERSION, strict=True)),
            protocol_version=PROTOCOL_VERSION,
            battery=round(self.band.battery_percent),
            state=BandState[self.band.status().state.upper()],
            max_table=Limits.MAX_TABLE_BYTES,
            max_frame=self.max_frame,
            window=self.window,
            has_routine=int(active is not None),
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

    def _on_upload_begin(self, link: str, message: Message) -> dict[str, Any]:
        length, crc = message.body.length, message.body.crc32
        if length == 0:
            raise BandError(Status.BAD_REQUEST, "an upload of 0 bytes")
        if length > Limits.MAX_TABLE_BYTES:
            raise BandError(Status.TOO_LARGE, f"table of {length} bytes; this band stores at most {Limits.MAX_TABLE_BYTES}")
        self._claim_upload(link)
        offset = self.band.storage.begin_upload(length, crc)
        return dict(offset=offset, max_chunk=self.max_frame - UPLOAD_DATA_OVERHEAD, window=self.window)

    def _on_upload_data(self, link: str, message: Message) -> dict[str, Any]:
        storage = self.band.storage
        if storage.upload is None:
            raise BandError(Status.NO_UPLOAD, "no upload in progress; send UPLOAD_BEGIN first")
        self._claim_upload(link)
        if message.body.offset == storage.upload.offset and message.body.data:
            storage.write_chunk(message.body.offset, message.body.data)
        # Out-of-order data (an earlier frame was lost) is dropped; the cumulative
        # acknowledgement tells the companion where to go back to.
        return dict(offset=storage.upload.offset)

    def _on_upload_commit(self, link: str, message: Message) -> dict[str, Any]:
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
        return dict(crc32=zlib.crc32(data), total_ms=check_table_header(data).total_ms)

    def _on_erase(self, link: str, message: Message) -> dict[str, Any]:
        if self.band.interpreter is not None and self.band.interpreter.state in (RunState.RUNNING, RunState.PAUSED):
            raise BandError(Status.BUSY, "a routine is playing; stop it before erasing")
        self.band.storage.erase()
        self._upload_owner = None
        self.band.reload()
        self.band.announce_state()
        return {}

    def _command(self, action: Callable[[], None]) -> dict[str, Any]:
        action()
        return self._status_fields()

    def _on_start(self, link: str, message: Message) -> dict[str, Any]:
        return self._command(self.band.start)

    def _on_pause(self, link: str, message: Message) -> dict[str, Any]:
        return self._command(self.band.pause)

    def _on_resume(self, link: str, message: Message) -> dict[str, Any]:
        return self._command(self.band.resume)

    def _on_skip(self, link: str, message: Message) -> dict[str, Any]:
        return self._command(self.band.skip)

    def _on_stop(self, link: str, message: Message) -> dict[str, Any]:
        return self._command(self.band.stop)

    def _on_status(self, link: str, message: Message) -> dict[str, Any]:
        self.band.process()
        return self._status_fields()
