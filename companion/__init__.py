"""HandCue companion: routines in, vibration cues on the wrist out.

The public API, used by the ``handcue`` CLI and by programs that script
HandCue::

    from companion import load_routine, compile_routine, read_table, table_timeline

    routine = load_routine("full-hand-massage")     # a file path or a shipped id
    data = compile_routine(routine, names=False)    # the bytes a band stores
    table = read_table(data)                        # bytes -> StepTable, checked
    for event in table_timeline(table):             # what the wrist will feel
        print(event.t_ms, event.cue)

Everything raises :class:`HandCueError` subclasses on bad input; every one of
them is importable from here (see :mod:`companion.errors` for the tree).

The errors load with the package (they are light).  Everything else loads on
first use, so that ``handcue --help`` does not pay for construct, tomllib and
friends; a type checker reads the same names from the ``TYPE_CHECKING``
imports below, so each has its real type, never ``Any``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    AddressError,
    BadRequestError,
    BadStateError,
    BandAnswerError,
    BandError,
    BandTimeout,
    BusyError,
    ExportError,
    HandCueError,
    MessageError,
    NoRoutineError,
    NotPairedError,
    PairingError,
    RoutineError,
    TableFormatError,
    TableRefusedError,
    TransportClosed,
    TransportError,
    UnknownRequestError,
    UnsupportedVersionError,
    UploadError,
)

if TYPE_CHECKING:
    from protocol.table import StepTable
    from protocol.table import decode_table as read_table
    from protocol.timeline import MotorEvent, table_cues, table_timeline

    from .client import BandClient, BandInfo, UploadResult
    from .compiler import build_table, compile_routine
    from .routine import Diagnostic, Routine, check_routine, load_routine, parse_routine, resolve_routine, shipped_routines
    from .techniques import CUE_VOCABULARY, TECHNIQUES
    from .transport import Transport, open_transport

# Lazily loaded public names -> "module" or "module:attribute"; the same
# imports as the TYPE_CHECKING block above (tests/test_typing.py checks that).
_LAZY = {
    "StepTable": "protocol.table",
    "read_table": "protocol.table:decode_table",
    "MotorEvent": "protocol.timeline",
    "table_cues": "protocol.timeline",
    "table_timeline": "protocol.timeline",
    "BandClient": "companion.client",
    "BandInfo": "companion.client",
    "UploadResult": "companion.client",
    "build_table": "companion.compiler",
    "compile_routine": "companion.compiler",
    "Diagnostic": "companion.routine",
    "Routine": "companion.routine",
    "check_routine": "companion.routine",
    "load_routine": "companion.routine",
    "parse_routine": "companion.routine",
    "resolve_routine": "companion.routine",
    "shipped_routines": "companion.routine",
    "CUE_VOCABULARY": "companion.techniques",
    "TECHNIQUES": "companion.techniques",
    "Transport": "companion.transport",
    "open_transport": "companion.transport",
}

__all__ = [
    "CUE_VOCABULARY",
    "TECHNIQUES",
    "AddressError",
    "BadRequestError",
    "BadStateError",
    "BandAnswerError",
    "BandClient",
    "BandError",
    "BandInfo",
    "BandTimeout",
    "BusyError",
    "Diagnostic",
    "ExportError",
    "HandCueError",
    "MessageError",
    "MotorEvent",
    "NoRoutineError",
    "NotPairedError",
    "PairingError",
    "Routine",
    "RoutineError",
    "StepTable",
    "TableFormatError",
    "TableRefusedError",
    "Transport",
    "TransportClosed",
    "TransportError",
    "UnknownRequestError",
    "UnsupportedVersionError",
    "UploadError",
    "UploadResult",
    "build_table",
    "check_routine",
    "compile_routine",
    "load_routine",
    "open_transport",
    "parse_routine",
    "read_table",
    "resolve_routine",
    "shipped_routines",
    "table_cues",
    "table_timeline",
]

if not TYPE_CHECKING:  # hidden from type checkers, which would type every attribute through it as Any

    def __getattr__(name: str) -> object:
        if name not in _LAZY:
            raise AttributeError(f"module 'companion' has no attribute {name!r}")
        module, _, attribute = _LAZY[name].partition(":")
        value = getattr(import_module(module), attribute or name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return list(__all__)
