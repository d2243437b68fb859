"""Getting table bytes from whatever the user names: a .hcue file or a routine."""

from __future__ import annotations

from pathlib import Path

from protocol.constants import TABLE_MAGIC

from .compiler import compile_routine
from .routine import load_routine


def load_table_or_routine(reference: str | Path, *, names: bool = True) -> bytes:
    """Bytes of a table file, or of the routine (file or shipped id) compiled now."""
    path = Path(reference)
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(len(TABLE_MAGIC)) == TABLE_MAGIC:
                return path.read_bytes()
    return compile_routine(load_routine(reference), names=names)
