"""The one exception hierarchy of HandCue.

Everything HandCue raises on purpose derives from :class:`HandCueError`, so a
program (and the CLI) can catch one type.  Errors from libraries (construct,
pyserial, bleak, bumble) are wrapped where they occur.
"""

from __future__ import annotations

from .constants import TableError


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
