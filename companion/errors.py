"""The companion's errors: routine, address, transport and timeout.

Together with the wire and format errors of :mod:`protocol.errors` (imported
here, so this module names every exception the companion raises) they form
one tree under :class:`HandCueError`::

    HandCueError
    ├── RoutineError              a routine file is invalid
    ├── AddressError              a band address cannot be parsed
    ├── TransportError            the link could not be opened or failed
    │   ├── TransportClosed       the link went away
    │   └── NotPairedError        a paired-only band refused a command from this unpaired device
    ├── PairingError              pairing or unpairing with a band failed
    ├── BandTimeout               the band did not answer in time
    ├── BandAnswerError           the band's answer cannot be used (malformed, wrong CRC, unusable limits)
    ├── ExportError               session history cannot be written as asked (FIT without fit-tool or dates)
    ├── TableFormatError          (protocol.errors)
    ├── MessageError              (protocol.errors)
    └── BandError and its named subclasses, one per band status (protocol.errors)

Library errors are wrapped into these once, at the edge where they arise:
pyserial's and the OS's in :mod:`companion.transport.serial`, bleak's and
bumble's in :mod:`companion.transport.ble`, file and TOML errors in
:mod:`companion.routine`.
"""

from __future__ import annotations

from protocol.errors import (
    BadRequestError,
    BadStateError,
    BandError,
    BusyError,
    HandCueError,
    MessageError,
    NoRoutineError,
    TableFormatError,
    TableRefusedError,
    UnknownRequestError,
    UnsupportedVersionError,
    UploadError,
)

__all__ = [
    "AddressError",
    "BadRequestError",
    "BadStateError",
    "BandAnswerError",
    "BandError",
    "BandTimeout",
    "BusyError",
    "ExportError",
    "HandCueError",
    "MessageError",
    "NoRoutineError",
    "NotPairedError",
    "PairingError",
    "RoutineError",
    "TableFormatError",
    "TableRefusedError",
    "TransportClosed",
    "TransportError",
    "UnknownRequestError",
    "UnsupportedVersionError",
    "UploadError",
]


class RoutineError(HandCueError):
    """A routine file is invalid; the message names file, step and field."""


class AddressError(HandCueError):
    """A band address cannot be parsed (unknown scheme, bad option)."""


class TransportError(HandCueError):
    """The link could not be opened or failed."""


class TransportClosed(TransportError):
    """The link went away (port closed, BLE disconnect)."""


class BandTimeout(HandCueError):
    """The band did not answer in time; the message says what we waited for."""


class NotPairedError(TransportError):
    """The band holds a bond and refused a state-changing command from a link that is not
    paired and encrypted (ATT error: insufficient authentication or encryption)."""


class PairingError(HandCueError):
    """Pairing or unpairing with a band failed (window closed, refused, lost link)."""


class BandAnswerError(HandCueError):
    """The band answered, but not usably: a malformed answer, unusable limits (a window of 0 frames),
    or a commit CRC that differs from the table's; the message names the request and what was wrong."""


class ExportError(HandCueError):
    """Session history cannot be written in the form asked for (a FIT file without fit-tool, or of sessions without dates)."""
