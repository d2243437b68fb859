"""The one exception hierarchy of HandCue.

Everything HandCue raises on purpose derives from :class:`HandCueError`, so a
program (and the CLI) can catch one type.  Errors from libraries (construct,
pyserial, bleak, bumble) are wrapped where they occur.
"""

from __future__ import annotations

from .constants import Status, TableError


class HandCueError(Exception):
    """Root of every error HandCue raises on purpose."""


class RoutineError(HandCueError):
    """A routine file is invalid; the message names file, step and field."""


class TableFormatError(HandCueError):
    """A step table is malformed or violates a limit.

    ``code`` is the :class:`~protocol.constants.TableError` a band would
    report for the same table.
    """

    def __init__(self, code: TableError, message: str) -> None:
        super().__init__(message)
        self.code = code


class BandError(HandCueError):
    """The band answered a request with a status other than OK.

    ``code`` is the :class:`~protocol.constants.Status`; ``detail`` is the
    extra code some statuses carry (the :class:`TableError` of a refused table).
    """

    def __init__(self, code: Status, message: str = "", detail: int = 0) -> None:
        self.code = Status(code)
        self.detail = detail
        super().__init__(message or STATUS_TEXT.get(self.code, self.code.name))


class NoRoutineError(BandError):
    """The band holds no routine."""


class BadStateError(BandError):
    """The command does not fit the band's state (e.g. pause while idle)."""


class BusyError(BandError):
    """The band is busy with another companion or an upload."""


class TableRefusedError(BandError):
    """The band verified an uploaded table and refused it; the old routine stays."""


class UploadError(BandError):
    """An upload step was out of order, too large, or hit a flash failure."""


STATUS_TEXT = {
    Status.UNKNOWN_REQUEST: "the band does not know this request (older firmware?)",
    Status.BAD_REQUEST: "the band could not parse the request",
    Status.UNSUPPORTED_VERSION: "the band speaks another protocol version",
    Status.BAD_STATE: "the command does not fit the band's state",
    Status.NO_ROUTINE: "the band holds no routine; upload one first",
    Status.BUSY: "the band is busy",
    Status.TOO_LARGE: "the table is larger than the band can store",
    Status.NO_UPLOAD: "no upload in progress on the band",
    Status.BAD_OFFSET: "upload data arrived out of order",
    Status.TABLE_REFUSED: "the band refused the table",
    Status.FLASH_FAILURE: "the band could not write its flash",
}

_STATUS_ERRORS: dict[Status, type[BandError]] = {
    Status.NO_ROUTINE: NoRoutineError,
    Status.BAD_STATE: BadStateError,
    Status.BUSY: BusyError,
    Status.TABLE_REFUSED: TableRefusedError,
    Status.TOO_LARGE: UploadError,
    Status.NO_UPLOAD: UploadError,
    Status.BAD_OFFSET: UploadError,
    Status.FLASH_FAILURE: UploadError,
}


def band_error(code: int, message: str = "", detail: int = 0) -> BandError:
    """The named exception for a band status code."""
    status = Status(code) if code in Status._value2member_map_ else Status.BAD_REQUEST
    return _STATUS_ERRORS.get(status, BandError)(status, message, detail)
