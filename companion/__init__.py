"""HandCue companion: routines in, vibration cues on the wrist out.

The public API, used by the ``handcue`` CLI and by programs that script
HandCue::

    from companion import load_routine, compile_routine, read_table, table_timeline

    routine = load_routine("full-hand-massage")     # a file path or a shipped id
    data = compile_routine(routine, names=False)    # the bytes a band stores
    table = read_table(data)                        # bytes -> StepTable, checked
    for event in table_timeline(table):             # what the wrist will feel
        print(event.t_ms, event.cue)

Everything raises :class:`HandCueError` subclasses on bad input.
"""

from protocol.errors import HandCueError, RoutineError, TableFormatError
from protocol.table import StepTable
from protocol.table import decode_table as read_table
from protocol.timeline import MotorEvent, table_cues, table_timeline

from .compiler import build_table, compile_routine
from .routine import Diagnostic, Routine, check_routine, load_routine, parse_routine, resolve_routine, shipped_routines
from .techniques import CUE_VOCABULARY, TECHNIQUES

__all__ = [
    "CUE_VOCABULARY",
    "TECHNIQUES",
    "Diagnostic",
    "HandCueError",
    "MotorEvent",
    "Routine",
    "RoutineError",
    "StepTable",
    "TableFormatError",
    "build_table",
    "check_routine",
    "compile_routine",
    "load_routine",
    "parse_routine",
    "read_table",
    "resolve_routine",
    "shipped_routines",
    "table_cues",
    "table_timeline",
]
