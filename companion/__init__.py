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

from importlib import import_module
from typing import Any

# Public names -> the module that defines them.  Loaded on first use, so that
# `handcue --help` does not pay for construct, tomllib and friends.
_EXPORTS = {
    "HandCueError": "protocol.errors",
    "RoutineError": "protocol.errors",
    "TableFormatError": "protocol.errors",
    "StepTable": "protocol.table",
    "read_table": "protocol.table:decode_table",
    "MotorEvent": "protocol.timeline",
    "table_cues": "protocol.timeline",
    "table_timeline": "protocol.timeline",
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'companion' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")
    value = getattr(import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
