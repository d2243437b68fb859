"""Messages of the transfer protocol: one typed class per body, its layout declared with its fields.

Every message starts with a 4-byte header ``version, kind, opcode,
request_id``.  Requests carry the body of their request class; responses add
``status, detail`` and then either the response body (status OK) or a reason
string (any other status); notifications carry a notification body.
``protocol/SPEC.md`` part 2 lists every layout with worked hex examples.

Each body is a frozen dataclass whose fields name their wire layout
(:func:`protocol.layout.wire`, the same declaration the step-table records
use, here in sequence), so the class *is* the declaration: :attr:`Body.layout` is the
construct ``Struct`` of the raw wire values, :attr:`Body.codec` the same bytes
read into and built from instances.  A request class names its opcode and, as
its type parameter, its response class (as smpclient's requests do), so
``BandClient.request(InfoRequest())`` is typed as returning an
:class:`InfoResponse`.  Defining a request class registers it for decoding.

Adding a message: its opcode in :class:`~protocol.constants.Opcode`; its
request class (and response class, if new) here; its handler in the one table
of ``firmware_sim/handler.py``; optionally a named wrapper on ``BandClient``;
its layout in SPEC.md part 2 with golden bytes in ``tests/protocol/test_messages.py``
(and its fields in the table of ``docs/gen_spec_examples.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast, dataclass_transform, get_args, get_origin

import construct as c

from .constants import FINGERS, NO_STEP, PROTOCOL_VERSION, BandState, BootOutcome, CueKind, MessageKind, Opcode, SkipScope, Status, TechniqueCode
from .errors import MessageError as MessageError  # re-exported: callers import it from here too
from .history import HISTORY_RECORD_SIZE, SESSION_RECORD, Session
from .layout import Coded, Coding, Indexed, Marker, Saturating, field_subcon, laid_out, layout_of, raw_layout_of, wire
from .table import SEGMENT, CuePattern, PatternSegment

MessageHeader = c.Struct(
    "version" / c.Int8ul,
    "kind" / c.Int8ul,
    "opcode" / c.Int8ul,
    "request_id" / c.Int8ul,
)
ResponseHead = c.Struct("status" / c.Int8ul, "detail" / c.Int8ul)
Text = c.PascalString(c.Int8ul, "utf8")


# --------------------------------------------------------------------------
# A body: a class whose fields carry their layout (protocol.layout), in order


B = TypeVar("B", bound="Body")


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
class Body:
    """A message body: a frozen dataclass whose fields are declared, in wire order, with :func:`~protocol.layout.wire`."""

    layout: ClassVar[Any]
    """The raw wire layout (``construct.Struct``), field by field, as SPEC.md part 2 tables it."""
    codec: ClassVar[Any]
    """The same bytes, parsed into and built from instances of the class."""
    _whole: ClassVar[Any]
    """:attr:`codec` that must also reach the end of its bytes (a whole message body)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        laid_out(cls)
        cls.layout = raw_layout_of(cls)
        cls.codec = layout_of(cls)
        cls._whole = layout_of(cls, whole=True)

    def build(self) -> bytes:
        return bytes(self.codec.build(self))

    @classmethod
    def parse(cls: type[B], data: bytes) -> B:
        """Read a body that must fill ``data`` exactly; it keeps its raw codes for :func:`code_text`."""
        body = cast(B, cls._whole.parse(data))
        object.__setattr__(body, "_raw", cls.layout.parse(data))
        return body

    def raw(self, name: str) -> Any:
        """The raw wire value of field ``name`` as received (None for a body built on this side)."""
        raw = getattr(self, "_raw", None)
        return None if raw is None else raw[name]

    def to_json(self) -> dict[str, Any]:
        return asdict(cast(Any, self))


R = TypeVar("R", bound=Body)

REQUEST_TYPES: dict[Opcode, type[Request[Any]]] = {}
"""Every request class by opcode; filled by defining the classes."""


class Request(Body, Generic[R]):
    """A request body; subclasses name their opcode and, as type parameter, their response class::

        class UploadBeginRequest(Request[UploadBeginResponse], opcode=Opcode.UPLOAD_BEGIN): ...
    """

    opcode: ClassVar[Opcode]
    response_type: ClassVar[type[Body]]
    idempotent: ClassVar[bool] = False
    """Carrying it out twice does what once does; the band remembers answers only to the others (SPEC §16.2)."""

    def __init_subclass__(cls, opcode: Opcode | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if opcode is None:
            return
        if opcode in REQUEST_TYPES:
            raise TypeError(f"{cls.__name__}: {opcode.name} already has its request class {REQUEST_TYPES[opcode].__name__}")
        [response] = [get_args(base)[0] for base in cls.__orig_bases__ if get_origin(base) is Request]  # type: ignore[attr-defined]
        cls.opcode, cls.response_type = opcode, response
        REQUEST_TYPES[opcode] = cls

    def response_from(self, body: Body | None) -> R:
        """``body`` as this request's response type (what :func:`decode_message` made of the answer)."""
        if not isinstance(body, self.response_type):
            raise MessageError(Status.BAD_REQUEST, f"{self.opcode.name} answered with {type(body).__name__}, not {self.response_type.__name__}")
        return cast(R, body)


def code_text(body: Body, name: str) -> str | None:
    """A coded field of ``body`` for people: its name (``running``, ``acupressure:PC6``), ``unknown (N)``
    for a code this side does not know (a newer band), None when the field holds none."""
    value = getattr(body, name)
    if value is not None:
        return value if isinstance(value, str) else getattr(value, "text_id", None) or value.name.lower()
    raw = body.raw(name)
    if raw is None or raw == getattr(field_subcon(type(body), name), "absent", None):
        return None
    return f"unknown ({raw})"


# --------------------------------------------------------------------------
# The bodies


class Empty(Body):
    """No fields: the OK answer to ERASE."""


class ErrorBody(Body):
    """What an error response carries instead of the response body (any status but OK)."""

    reason: str = wire(Text)


class FirmwareVersion(Body):
    major: int = wire(c.Int8ul)
    minor: int = wire(c.Int8ul)
    patch: int = wire(c.Int8ul)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


class InfoResponse(Body):
    band_id: int = wire(c.Int32ul)
    firmware: FirmwareVersion = wire(FirmwareVersion.codec)
    protocol_version: int = wire(c.Int8ul)
    battery: int = wire(c.Int8ul)
    state: BandState | None = wire(Coded(c.Int8ul, BandState, lenient=True))
    max_table: int = wire(c.Int32ul)
    max_frame: int = wire(c.Int16ul)
    window: int = wire(c.Int8ul)
    has_routine: bool = wire(c.Flag)
    routine_crc32: int = wire(c.Int32ul)
    routine_size: int = wire(c.Int16ul)
    routine_name: str = wire(Text)
    boot_outcome: BootOutcome | None = wire(Coded(c.Int8ul, BootOutcome, lenient=True))
    """What the band found in its flash at boot (after a power cut or damage): which routine it holds and why.
    None: an outcome this side does not know (a newer band)."""


class UploadBeginResponse(Body):
    offset: int = wire(c.Int32ul)
    """Durably stored bytes of this table: where to (re)start."""
    max_chunk: int = wire(c.Int16ul)
    window: int = wire(c.Int8ul)


class UploadDataResponse(Body):
    """Cumulative acknowledgement: the bytes stored so far."""

    offset: int = wire(c.Int32ul)


class UploadCommitResponse(Body):
    crc32: int = wire(c.Int32ul)
    total_ms: int = wire(c.Int32ul)


HANDS_WIRE = (None, "left", "right")
FINGERS_WIRE = (None, *FINGERS)


class StatusReport(Body):
    """What a band reports about its session: the answer to STATUS and to the session commands, and the STATUS notification.

    The band builds one from its state, the companion decodes one from every
    STATUS response and notification; codes a companion does not know (from a
    newer band) read as None.

    While the band waits for the wearer's press at an acknowledgement point
    (SPEC.md §12.10) ``state`` is :attr:`~protocol.constants.BandState.WAITING`
    and ``step_remaining_ms`` counts down to the band giving up
    (:attr:`ack_cue`, :attr:`gives_up_in_ms`): the 27 bytes keep their layout,
    so a companion from before the state reads it as unknown (4) and no error.
    """

    state: BandState | None = wire(Coded(c.Int8ul, BandState, lenient=True))
    step: int | None = wire(Marker(c.Int16ul, NO_STEP))
    """Record index of the step playing."""
    technique: TechniqueCode | None = wire(Coded(c.Int8ul, TechniqueCode, none=0, lenient=True))
    iteration: int = wire(c.Int8ul)
    hand: str | None = wire(Indexed(c.Int8ul, HANDS_WIRE))
    finger: str | None = wire(Indexed(c.Int8ul, FINGERS_WIRE))
    elapsed_ms: int = wire(c.Int32ul)
    remaining_ms: int = wire(c.Int32ul)
    step_remaining_ms: int = wire(c.Int32ul)
    """Time left in the current iteration; while WAITING, time until the band gives up waiting for the press."""
    total_ms: int = wire(c.Int32ul)
    last_cue: CueKind | None = wire(Coded(c.Int8ul, CueKind, none=0, lenient=True))
    cues: int = wire(Saturating(c.Int16ul, 0xFFFF))
    """Cues fired since start."""
    battery: int = wire(c.Int8ul)

    @property
    def ack_cue(self) -> CueKind | None:
        """The cue the band repeats while it waits for the wearer's press: START (of ``step``) or, at the finish, DONE; None when it does not wait."""
        if self.state != BandState.WAITING:
            return None
        return CueKind.START if self.step is not None else CueKind.DONE

    @property
    def gives_up_in_ms(self) -> int | None:
        """While the band waits for the wearer's press: how long until it gives up and goes on without it; else None."""
        return self.step_remaining_ms if self.state == BandState.WAITING else None

    def to_json(self) -> dict[str, Any]:
        ack_cue, gives_up = self.ack_cue, self.gives_up_in_ms
        return dict(
            super().to_json(),
            state=code_text(self, "state"),
            technique=code_text(self, "technique"),
            last_cue=code_text(self, "last_cue"),
            ack_wait=None if ack_cue is None else {"cue": ack_cue.text_id, "gives_up_in_ms": gives_up},
        )


class InfoRequest(Request[InfoResponse], opcode=Opcode.INFO):
    """The band's identity, firmware, battery, limits and active routine."""

    idempotent = True


class UploadBeginRequest(Request[UploadBeginResponse], opcode=Opcode.UPLOAD_BEGIN):
    """Start an upload of a table, or resume the interrupted upload of the same table (same length and CRC-32)."""

    length: int = wire(c.Int32ul)
    crc32: int = wire(c.Int32ul)


class UploadDataRequest(Request[UploadDataResponse], opcode=Opcode.UPLOAD_DATA):
    """Table bytes from ``offset``; the band stores them only if ``offset`` is where its stored bytes end."""

    offset: int = wire(c.Int32ul)
    data: bytes = wire(c.GreedyBytes)

    idempotent = True  # the band stores data only at the offset where its stored bytes end


class UploadCommitRequest(Request[UploadCommitResponse], opcode=Opcode.UPLOAD_COMMIT):
    """Verify the uploaded table and make it the active routine (the old one stays if it is refused)."""


class EraseRequest(Request[Empty], opcode=Opcode.ERASE):
    """Remove the active routine."""


class StartRequest(Request[StatusReport], opcode=Opcode.START):
    """Play the routine from the beginning."""


class PauseRequest(Request[StatusReport], opcode=Opcode.PAUSE):
    """Pause the routine; the remaining time is kept."""


class ResumeRequest(Request[StatusReport], opcode=Opcode.RESUME):
    """Resume a paused routine."""


class _SkipScopeByte(Coding):
    """The optional scope byte of SKIP: no byte is STEP (what SKIP meant before it had a scope)."""

    def _decode(self, obj: int | None, context: Any, path: Any) -> SkipScope:
        if obj is None:
            return SkipScope.STEP
        if obj not in SkipScope._value2member_map_:
            raise c.ValidationError(f"unknown skip scope {obj}", path=path)
        return SkipScope(obj)

    def _encode(self, obj: SkipScope, context: Any, path: Any) -> int | None:
        return None if obj == SkipScope.STEP else int(obj)


class SkipRequest(Request[StatusReport], opcode=Opcode.SKIP):
    """Skip to the next iteration (next finger, hand or round), or past the whole step.

    The ``scope`` byte is optional: STEP is sent as no byte at all, which every
    band reads as "skip the step" (bands older than scopes included), and a
    band older than scopes refuses the ITERATION byte rather than skip too far.
    """

    scope: SkipScope = wire(_SkipScopeByte(c.Optional(c.Int8ul)), default=SkipScope.ITERATION)


class StopRequest(Request[StatusReport], opcode=Opcode.STOP):
    """Stop the routine."""


class StatusRequest(Request[StatusReport], opcode=Opcode.STATUS):
    """What the band is doing now."""

    idempotent = True


class SettingsResponse(Body):
    """The band's stored settings (SPEC §19): the answer to SETTINGS and SET_SETTINGS."""

    strength: int = wire(c.Int8ul)
    """Cue strength, % (20 to 100): every motor segment's amplitude is scaled by it (protocol.strength)."""


class SettingsRequest(Request[SettingsResponse], opcode=Opcode.SETTINGS):
    """The band's stored settings."""

    idempotent = True


class SetSettingsRequest(Request[SettingsResponse], opcode=Opcode.SET_SETTINGS):
    """Store new settings power-safe on the band; they apply from the next cue. Needs a paired link on a paired band."""

    strength: int = wire(c.Int8ul)

    idempotent = True  # storing the same settings twice leaves what storing them once does


class _Segments(Coding):
    """A count byte, then that many pattern segments (the step table's 2-byte segment layout), as a tuple."""

    def _decode(self, obj: list[PatternSegment], context: Any, path: Any) -> tuple[PatternSegment, ...]:
        return tuple(obj)

    def _encode(self, obj: tuple[PatternSegment, ...], context: Any, path: Any) -> list[PatternSegment]:
        return list(obj)


class PreviewRequest(Request[Empty], opcode=Opcode.PREVIEW):
    """Play one cue pattern now, at ``strength`` %, for calibration: the stored routine and settings stay as they are.

    Refused (BAD_STATE) while a routine is running; a pattern outside the cue
    limits of the step table, or a strength outside 20..100 %, is BAD_REQUEST.
    """

    strength: int = wire(c.Int8ul)
    """Cue strength, % (20 to 100), applied to the segments as the stored setting is to routine cues (protocol.strength)."""
    kind: CueKind | None = wire(Coded(c.Int8ul, CueKind, none=0, lenient=True))
    """The cue kind the pattern stands for (the band's trace names it); None (0) for a pattern of no kind."""
    segments: tuple[PatternSegment, ...] = wire(_Segments(c.PrefixedArray(c.Int8ul, SEGMENT)))
    """The pattern, as the step table stores it: amplitude %, duration in 10 ms units; 1 to 8 segments."""

    @property
    def pattern(self) -> CuePattern:
        return CuePattern(self.segments)


class SetTimeRequest(Request[Empty], opcode=Opcode.SET_TIME):
    """Set the band's wall clock (as the Bluetooth Current Time Service does); its session history then carries Unix times."""

    unix_ms: int = wire(c.Int64ul)
    """Milliseconds since 1970-01-01 UTC, now."""


class HistoryResponse(Body):
    """A page of the band's session history (SPEC §17.10), oldest first."""

    next_seq: int = wire(c.Int32ul)
    """Where to ask from next: one past the last record sent, or (none sent) the sequence number the band's next record gets."""
    more: bool = wire(c.Flag)
    """The band holds records from ``next_seq`` on that did not fit in this answer."""
    records: list[Session] = wire(c.PrefixedArray(c.Int8ul, SESSION_RECORD))
    """Whole 64-byte session records (protocol.history), their magic and CRC included."""


class HistoryRequest(Request[HistoryResponse], opcode=Opcode.HISTORY):
    """Session records with ``seq`` >= ``from_seq``, oldest first, as many as ``max_count`` (0: as many as fit in a frame)."""

    from_seq: int = wire(c.Int32ul, default=0)
    max_count: int = wire(c.Int8ul, default=0)

    idempotent = True


class ClearHistoryRequest(Request[Empty], opcode=Opcode.CLEAR_HISTORY):
    """Erase the band's session history. Needs a paired link on a paired band."""


HISTORY_PAGE_OVERHEAD: int = MessageHeader.sizeof() + ResponseHead.sizeof() + c.Struct(*HistoryResponse.layout.subcons[:-1]).sizeof() + 1
"""Bytes of a HISTORY answer besides its records (header, status, ``next_seq``, ``more``, the record count)."""


def history_records_per_frame(max_frame: int) -> int:
    """How many session records a HISTORY answer holds in a message of ``max_frame`` bytes."""
    return max(0, (max_frame - HISTORY_PAGE_OVERHEAD) // HISTORY_RECORD_SIZE)


NOTIFICATION_TYPES: dict[Opcode, type[Body]] = {Opcode.STATUS: StatusReport}
"""The body of every notification by opcode."""

UPLOAD_DATA_OVERHEAD = MessageHeader.sizeof() + c.Struct(*UploadDataRequest.layout.subcons[:-1]).sizeof()
"""Bytes of an UPLOAD_DATA message besides its data (header and every field before the data)."""


# --------------------------------------------------------------------------
# Messages: header + body


@dataclass(frozen=True)
class Message:
    """A decoded message: its header, and its typed body (None in an error response)."""

    kind: MessageKind
    opcode: Opcode
    request_id: int
    body: Body | None
    status: Status = Status.OK
    detail: int = 0
    reason: str = ""
    status_code: int = 0
    """The status byte as received: differs from ``status`` for a code this side does not know (read as BAD_REQUEST)."""


def _header(kind: MessageKind, opcode: int, request_id: int) -> bytes:
    return bytes(MessageHeader.build(dict(version=PROTOCOL_VERSION, kind=kind, opcode=opcode, request_id=request_id)))


def encode_request(request: Request[Any], request_id: int) -> bytes:
    return _header(MessageKind.REQUEST, request.opcode, request_id) + request.build()


def encode_response(opcode: Opcode, request_id: int, body: Body) -> bytes:
    """An OK response; ``body`` must be of the response type of ``opcode``'s request."""
    expected = REQUEST_TYPES[opcode].response_type
    if not isinstance(body, expected):
        raise TypeError(f"{opcode.name} answers with {expected.__name__}, not {type(body).__name__}")
    return _header(MessageKind.RESPONSE, opcode, request_id) + bytes(ResponseHead.build(dict(status=Status.OK, detail=0))) + body.build()


def encode_error(opcode: int, request_id: int, status: Status, detail: int = 0, reason: str = "") -> bytes:
    """An error response: status, detail and a reason cut to 255 bytes on a character boundary."""
    head = _header(MessageKind.RESPONSE, opcode, request_id) + bytes(ResponseHead.build(dict(status=status, detail=detail)))
    return head + ErrorBody(reason=reason.encode()[:255].decode(errors="ignore")).build()


def encode_notification(body: Body) -> bytes:
    [opcode] = [opcode for opcode, kind in NOTIFICATION_TYPES.items() if isinstance(body, kind)]
    return _header(MessageKind.NOTIFICATION, opcode, 0) + body.build()


def decode_message(data: bytes) -> Message:
    """Decode a message; raises :class:`MessageError` naming the status a band answers."""
    if len(data) < MessageHeader.sizeof():
        raise MessageError(Status.BAD_REQUEST, f"message of {len(data)} bytes is shorter than its header")
    header = MessageHeader.parse(data)
    opcode_value, request_id = header.opcode, header.request_id
    if header.version != PROTOCOL_VERSION:
        raise MessageError(Status.UNSUPPORTED_VERSION, f"protocol version {header.version}; this side speaks {PROTOCOL_VERSION}", opcode_value, request_id)
    try:
        kind = MessageKind(header.kind)
        opcode = Opcode(opcode_value)
    except ValueError as exc:
        raise MessageError(Status.UNKNOWN_REQUEST, f"unknown message kind {header.kind} / opcode {opcode_value}", opcode_value, request_id) from exc
    rest = data[MessageHeader.sizeof() :]
    try:
        if kind == MessageKind.REQUEST:
            return Message(kind, opcode, request_id, REQUEST_TYPES[opcode].parse(rest))
        if kind == MessageKind.NOTIFICATION:
            if opcode not in NOTIFICATION_TYPES:
                raise MessageError(Status.UNKNOWN_REQUEST, f"no notification {opcode.name}", opcode_value, request_id)
            return Message(kind, opcode, request_id, NOTIFICATION_TYPES[opcode].parse(rest))
        head = ResponseHead.parse(rest)
        status = Status(head.status) if head.status in Status._value2member_map_ else Status.BAD_REQUEST
        body = rest[ResponseHead.sizeof() :]
        if status != Status.OK:
            return Message(kind, opcode, request_id, None, status, head.detail, ErrorBody.parse(body).reason, head.status)
        return Message(kind, opcode, request_id, REQUEST_TYPES[opcode].response_type.parse(body), status, head.detail)
    except (c.ConstructError, UnicodeDecodeError) as exc:
        raise MessageError(Status.BAD_REQUEST, f"malformed {opcode.name} {kind.name.lower()}: {exc}", opcode_value, request_id) from exc
