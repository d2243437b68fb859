"""Routine model -> :class:`~protocol.table.StepTable` -> bytes.

Blocks become LOOP records followed by their body (loops stay loops, never
unrolled copies); patterns are numbered in order of first use and shared by
every step that uses them, so the same routine always gives the same bytes.
A routine that asks for an acknowledgement compiles to a format 2 table; every
other routine keeps the bytes of format 1, which every band reads.
"""

from __future__ import annotations

from typing import Any

from protocol.constants import TechniqueCode
from protocol.cues import STEP_CUE_SLOTS
from protocol.table import CuePattern, LoopRecord, StepRecord, StepTable, TableRecord, encode_table

from .errors import RoutineError, TableFormatError
from .routine import Block, Routine, Step, StepCues


class _PatternPool:
    """Assigns table indices to patterns, sharing identical ones."""

    def __init__(self, named: dict[str, CuePattern]) -> None:
        self.named = named
        self.patterns: list[CuePattern] = []
        self.by_segments: dict[tuple, int] = {}

    def index(self, name: str | None) -> int | None:
        if name is None:
            return None
        pattern = self.named[name]
        if pattern.segments not in self.by_segments:
            self.by_segments[pattern.segments] = len(self.patterns)
            self.patterns.append(CuePattern(pattern.segments, name))
        return self.by_segments[pattern.segments]


def _step_cue_fields(cues: StepCues, pool: _PatternPool) -> dict[str, Any]:
    """The step record's cue fields: each slot's pattern index and timing (protocol.cues names them)."""
    fields: dict[str, Any] = {}
    for facts in STEP_CUE_SLOTS:
        fields[facts.pattern_field] = pool.index(getattr(cues, facts.slot or ""))
        if facts.timing:
            fields[facts.timing] = getattr(cues, facts.timing)
    return fields


def build_table(routine: Routine) -> StepTable:
    """The step table of a checked routine."""
    pool = _PatternPool(routine.patterns)
    records: list[TableRecord] = []

    def emit(items: list[Step | Block]) -> None:
        for item in items:
            if isinstance(item, Block):
                position = len(records)
                records.append(LoopRecord(item.iterate, item.count, body_count=0))  # body size patched below
                round_pattern = pool.index(item.next)
                emit(item.steps)
                records[position] = LoopRecord(item.iterate, item.count, body_count=len(records) - position - 1, round_pattern=round_pattern)
                continue
            records.append(
                StepRecord(
                    technique=TechniqueCode.from_text_id(item.technique),
                    duration_ms=item.duration_ms,
                    iterate=item.iterate,
                    count=item.count,
                    **_step_cue_fields(item.cues, pool),
                    ack=item.ack,
                )
            )

    emit(routine.steps)
    done = pool.index(routine.finish)
    return StepTable(routine.hands, records, pool.patterns, done, routine.name, done_ack=routine.finish_ack)


def compile_routine(routine: Routine, *, names: bool = True) -> bytes:
    """The table bytes of ``routine``; ``names=False`` leaves out the name section.

    Raises :class:`RoutineError` naming the routine file when the routine as a
    whole breaks a table limit (too many steps or patterns, too long in total).
    """
    try:
        return encode_table(build_table(routine), names=names)
    except TableFormatError as exc:
        raise RoutineError(f"{routine.source}: {exc}") from exc
