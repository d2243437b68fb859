"""Messages of the transfer protocol: one construct layout per opcode and direction.

Every message starts with a 4-byte header ``version, kind, opcode,
request_id``.  Requests carry the request body of their opcode; responses add
``status, detail`` and then either the response body (status OK) or a reason
string (any other status); notifications carry a notification body.
``protocol/SPEC.md`` part 2 lists every layout with worked hex examples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import construct as c

from .constants import FINGERS, NO_STEP, PROTOCOL_VERSION, BandState, CueKind, MessageKind, Opcode, Status, TechniqueCode
from .errors import MessageError as MessageError  # re-exported: callers import it from here too

MessageHeader = c.Struct(
    "version" / c.Int8ul,
    "kind" / c.Int8ul,
    "opcode" / c.Int8ul,
    "request_id" / c.Int8ul,
)
ResponseHead = c.Struct("status" / c.Int8ul, "detail" / c.Int8ul)
Text = c.PascalString(c.Int8ul, "utf8")

Empty = c.Struct()
UploadBeginRequest = c.Struct("length" / c.Int32ul, "crc32" / c.Int32ul)
UploadDataRequest = c.Struct("offset" / c.Int32ul, "data" / c.GreedyBytes)
UPLOAD_DATA_OVERHEAD = MessageHeader.sizeof() + c.Int32ul.sizeof()
"""Bytes of an UPLOAD_DATA message besides its data (header and offset)."""

FirmwareVersion = c.Struct("major" / c.Int8ul, "minor" / c.Int8ul, "patch" / c.Int8ul)
InfoResponse = c.Struct(
    "band_id" / c.Int32ul,
    "firmware" / FirmwareVersion,
    "protocol_version" / c.Int8ul,
    "battery" / c.Int8ul,
    "state" / c.Int8ul,
    "max_table" / c.Int32ul,
    "max_frame" / c.Int16ul,
    "window" / c.Int8ul,
    "has_routine" / c.Int8ul,
    "routine_crc32" / c.Int32ul,
    "routine_size" / c.Int16ul,
    "routine_name" / Text,
)
UploadBeginResponse = c.Struct("offset" / c.Int32ul, "max_chunk" / c.Int16ul, "window" / c.Int8ul)
UploadAck = c.Struct("offset" / c.Int32ul)
CommitResponse = c.Struct("crc32" / c.Int32ul, "total_ms" / c.Int32ul)
StatusBody = c.Struct(
    "state" / c.Int8ul,
    "step" / c.Int16ul,  # record index, 0xFFFF none
    "technique" / c.Int8ul,  # TechniqueCode, 0 none
    "iteration" / c.Int8ul,
    "hand" / c.Int8ul,  # 0 none, 1 left, 2 right
    "finger" / c.Int8ul,  # 0 none, 1 thumb .. 5 little
    "elapsed_ms" / c.Int32ul,
    "remaining_ms" / c.Int32ul,
    "step_remaining_ms" / c.Int32ul,
    "total_ms" / c.Int32ul,
    "last_cue" / c.Int8ul,  # CueKind, 0 none
    "cues" / c.Int16ul,  # cues fired since start
    "battery" / c.Int8ul,
)
ErrorBody = c.Struct("reason" / Text)

REQUEST_BODIES: dict[Opcode, c.Construct] = {op: Empty for op in Opcode}
REQUEST_BODIES[Opcode.UPLOAD_BEGIN] = UploadBeginRequest
REQUEST_BODIES[Opcode.UPLOAD_DATA] = UploadDataRequest

RESPONSE_BODIES: dict[Opcode, c.Construct] = {
    Opcode.INFO: InfoResponse,
    Opcode.UPLOAD_BEGIN: UploadBeginResponse,
    Opcode.UPLOAD_DATA: UploadAck,
    Opcode.UPLOAD_COMMIT: CommitResponse,
    Opcode.ERASE: Empty,
    Opcode.START: StatusBody,
    Opcode.PAUSE: StatusBody,
    Opcode.RESUME: StatusBody,
    Opcode.SKIP: StatusBody,
    Opcode.STOP: StatusBody,
    Opcode.STATUS: StatusBody,
}
NOTIFICATION_BODIES: dict[Opcode, c.Construct] = {Opcode.STATUS: StatusBody}

HANDS_WIRE = (None, "left", "right")
FINGERS_WIRE = (None, *FINGERS)


@dataclass
class Message:
    """A decoded message."""

    kind: MessageKind
    opcode: Opcode
    request_id: int
    body: c.Container
    status: Status = Status.OK
    detail: int = 0
    reason: str = ""


def _header(kind: MessageKind, opcode: Opcode, request_id: int) -> bytes:
    return MessageHeader.build(dict(version=PROTOCOL_VERSION, kind=kind, opcode=opcode, request_id=request_id))


def encode_request(opcode: Opcode, request_id: int, **fields: Any) -> bytes:
    return _header(MessageKind.REQUEST, opcode, request_id) + REQUEST_BODIES[opcode].build(fields)


def encode_response(opcode: int, request_id: int, status: Status = Status.OK, detail: int = 0, reason: str = "", **fields: Any) -> bytes:
    head = _header(MessageKind.RESPONSE, opcode, request_id) + ResponseHead.build(dict(status=status, detail=detail))  # type: ignore[arg-type]
    if status != Status.OK:
        return head + ErrorBody.build(dict(reason=reason.encode()[:255].decode(errors="ignore")))
    return head + RESPONSE_BODIES[Opcode(opcode)].build(fields)


def encode_notification(opcode: Opcode, **fields: Any) -> bytes:
    return _header(MessageKind.NOTIFICATION, opcode, 0) + NOTIFICATION_BODIES[opcode].build(fields)


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
            return Message(kind, opcode, request_id, _parse_all(REQUEST_BODIES[opcode], rest))
        if kind == MessageKind.NOTIFICATION:
            if opcode not in NOTIFICATION_BODIES:
                raise MessageError(Status.UNKNOWN_REQUEST, f"no notification {opcode.name}", opcode_value, request_id)
            return Message(kind, opcode, request_id, _parse_all(NOTIFICATION_BODIES[opcode], rest))
        head = ResponseHead.parse(rest)
        status = Status(head.status) if head.status in Status._value2member_map_ else Status.BAD_REQUEST
        body = rest[ResponseHead.sizeof() :]
        if status != Status.OK:
            return Message(kind, opcode, request_id, c.Container(), status, head.detail, _parse_all(ErrorBody, body).reason)
        return Message(kind, opcode, request_id, _parse_all(RESPONSE_BODIES[opcode], body), status, head.detail)
    except (c.ConstructError, UnicodeDecodeError) as exc:
        raise MessageError(Status.BAD_REQUEST, f"malformed {opcode.name} {kind.name.lower()}: {exc}", opcode_value, request_id) from exc


def _parse_all(layout: c.Construct, data: bytes) -> c.Container:
    return (layout + c.Terminated).parse(data) if layout is not UploadDataRequest else layout.parse(data)


@dataclass(frozen=True)
class StatusReport:
    """What a band reports about its session: the readable form of :data:`StatusBody`.

    The band builds one from its state, the companion decodes one from every
    STATUS response and notification; both use this one definition.
    """

    state: str
    """``idle``, ``running``, ``paused`` or ``finished`` (:class:`BandState` names)."""
    step: int | None
    technique: str | None
    iteration: int
    hand: str | None
    finger: str | None
    elapsed_ms: int
    remaining_ms: int
    step_remaining_ms: int
    total_ms: int
    last_cue: str | None
    cues: int
    battery: int

    def to_fields(self) -> dict[str, Any]:
        """Keyword fields to build a :data:`StatusBody`."""
        return dict(
            state=BandState[self.state.upper()], step=NO_STEP if self.step is None else self.step,
            technique=0 if self.technique is None else TechniqueCode.from_text_id(self.technique),
            iteration=self.iteration, hand=HANDS_WIRE.index(self.hand), finger=FINGERS_WIRE.index(self.finger),
            elapsed_ms=self.elapsed_ms, remaining_ms=self.remaining_ms, step_remaining_ms=self.step_remaining_ms,
            total_ms=self.total_ms, last_cue=0 if self.last_cue is None else CueKind[self.last_cue.upper()],
            cues=min(self.cues, 0xFFFF), battery=self.battery,
        )

    @classmethod
    def from_body(cls, body: c.Container) -> StatusReport:
        """Decode a parsed :data:`StatusBody`; unknown codes from newer bands read as None."""

        def known(enum: Any, value: int) -> Any:
            return enum(value) if value in enum._value2member_map_ else None

        state = known(BandState, body.state)
        technique = known(TechniqueCode, body.technique)
        cue = known(CueKind, body.last_cue)
        return cls(
            state=state.name.lower() if state is not None else f"state {body.state}",
            step=None if body.step == NO_STEP else body.step,
            technique=technique.text_id if technique is not None else None,
            iteration=body.iteration,
            hand=HANDS_WIRE[body.hand] if body.hand < len(HANDS_WIRE) else None,
            finger=FINGERS_WIRE[body.finger] if body.finger < len(FINGERS_WIRE) else None,
            elapsed_ms=body.elapsed_ms,
            remaining_ms=body.remaining_ms,
            step_remaining_ms=body.step_remaining_ms,
            total_ms=body.total_ms,
            last_cue=cue.name.lower() if cue is not None else None,
            cues=body.cues,
            battery=body.battery,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
