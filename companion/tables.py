"""Getting table bytes from whatever the user names: a .hcue file, a routine, or ``-`` (standard input).

What a file is comes from its content, not its name: bytes that start with the
table magic are a table wherever they are given; anything else must be UTF-8
TOML (a byte-order mark is accepted) and is compiled as a routine.
"""

from __future__ import annotations

from pathlib import Path

from protocol.constants import TABLE_MAGIC
from protocol.errors import TableFormatError
from protocol.table import decode_table

from .compiler import compile_routine
from .routine import checked, parse_routine, read_source, routine_text


def load_table_or_routine(reference: str | Path, *, names: bool = True) -> bytes:
    """Bytes of a table file, or of the routine (file, shipped id or ``-``) compiled now.

    A table is decoded once here, so a truncated or corrupt one is reported with its file name.
    """
    source, data = read_source(reference)
    if data.startswith(TABLE_MAGIC):
        try:
            decode_table(data)
        except TableFormatError as exc:
            raise TableFormatError(exc.code, f"{source}: {exc}") from exc
        return data
    return compile_routine(checked(*parse_routine(routine_text(data, source), source)), names=names)
