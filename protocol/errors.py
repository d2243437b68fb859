"""Wire and format errors: what can be wrong with bytes, and what a band answers.

Everything HandCue raises on purpose derives from :class:`HandCueError`, so a
program (and the CLI) can catch one type.  This module holds the part of the
tree that both sides of the link share; the companion adds its own errors
(address, transport, timeout, routine) in :mod:`companion.errors`, and the
band simulator's own faults (power loss, flash misuse) live outside this tree
in :mod:`firmware_sim.faults`.

Library errors are wrapped once, where they arise: construct's and UTF-8
decoding errors in :mod:`protocol.table` and :mod:`protocol.messages`, cobs's
in :mod:`protocol.framing` (which reports a bad frame, it does not raise).

::

    HandCueError
    ├── TableFormatError          a step table is malformed (code: TableError)
    ├── MessageError              a message cannot be decoded (status: Status)
    └── BandError                 the band answered with a status other than OK
        ├── UnknownRequestError
        ├── BadRequestError
        ├── UnsupportedVersionError
        ├── BadStateError
        ├── NoRoutineError
        ├── BusyError
        ├── UploadError
        └── TableRefusedError
"""

from __future__ import annotations

from .constants import Status, TableError

__all__ = [
    "STATUS_TEXT",
    "BadRequestError",
    "BadStateError",
    "BandError",
    "BusyError",
    "HandCueError",
    "MessageError",
    "NoRoutineError",
    "TableFormatError",
    "TableRefusedError",
    "UnknownRequestError",
    "UnsupportedVersionError",
    "UploadError",
    "band_error",
]


class HandCueError(Exception):
    """Root of every error HandCue raises on purpose."""


class TableFormatError(HandCueError):
    """A step table is malformed or violates a limit.

    ``code`` is the :class:`~protocol.constants.TableError` a band would
    report for the same table.
    """

    def __init__(self, code: TableError, message: str) -> None:
        super().__init__(message)
        self.code = code


class MessageError(HandCueError):
    """A message could not be decoded; ``status`` is what a band answers."""

    def __init__(self, status: Status, message: str, opcode: int = 0, request_id: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.opcode = opcode
        self.request_id = request_id


class BandError(HandCueError):
    """The band answered a request with a status other than OK.

    ``code`` is the :class:`~protocol.constants.Status`; ``detail`` is the
    extra code some statuses carry (the :class:`TableError` of a refused table).
    Raise the named subclass for a status with :func:`band_error`.
    """

    def __init__(self, code: Status, message: str = "", detail: int = 0) -> None:
        self.code = Status(code)
        self.detail = detail
        super().__init__(message or STATUS_TEXT.get(self.code, self.code.name))


class UnknownRequestError(BandError):
    """The band does not know the request (older firmware?)."""


class BadRequestError(BandError):
    """The band could not parse the request."""


class UnsupportedVersionError(BandError):
    """The band speaks another protocol version."""


class BadStateError(BandError):
    """The command does not fit the band's state (e.g. pause while idle)."""


class NoRoutineError(BandError):
    """The band holds no routine."""


class BusyError(BandError):
    """The band is busy with another companion or an upload."""


class UploadError(BandError):
    """An upload step was out of order, too large, or hit a flash failure."""


class TableRefusedError(BandError):
    """The band verified an uploaded table and refused it; the old routine stays."""


# The one table from the band's status codes to exceptions and their default text.
_STATUS_ERRORS: dict[Status, tuple[type[BandError], str]] = {
    Status.UNKNOWN_REQUEST: (UnknownRequestError, "the band does not know this request (older firmware?)"),
    Status.BAD_REQUEST: (BadRequestError, "the band could not parse the request"),
    Status.UNSUPPORTED_VERSION: (UnsupportedVersionError, "the band speaks another protocol version"),
    Status.BAD_STATE: (BadStateError, "the command does not fit the band's state"),
    Status.NO_ROUTINE: (NoRoutineError, "the band holds no routine; upload one first"),
    Status.BUSY: (BusyError, "the band is busy"),
    Status.TOO_LARGE: (UploadError, "the table is larger than the band can store"),
    Status.NO_UPLOAD: (UploadError, "no upload in progress on the band"),
    Status.BAD_OFFSET: (UploadError, "upload data arrived out of order"),
    Status.TABLE_REFUSED: (TableRefusedError, "the band refused the table"),
    Status.FLASH_FAILURE: (UploadError, "the band could not write its flash"),
}

STATUS_TEXT: dict[Status, str] = {status: text for status, (_, text) in _STATUS_ERRORS.items()}
"""What each error status means, in words (the default message of its exception)."""


def band_error(code: int, message: str = "", detail: int = 0) -> BandError:
    """The named exception for a band status code (an unknown code reads as BAD_REQUEST)."""
    status = Status(code) if code in Status._value2member_map_ else Status.BAD_REQUEST
    error_type = _STATUS_ERRORS[status][0] if status in _STATUS_ERRORS else BandError
    return error_type(status, message, detail)
