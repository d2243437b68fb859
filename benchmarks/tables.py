"""Synthetic step tables shared by the benchmarks, built with :mod:`protocol.table`."""

from __future__ import annotations

from protocol.constants import TABLE_RECORD_SIZE, Hands, Iterate, TechniqueCode
from protocol.table import CuePattern, LoopRecord, PatternSegment, StepRecord, StepTable, TableRecord, encode_table

START = CuePattern((PatternSegment(100, 80),), "start")
TICK = CuePattern((PatternSegment(100, 50),), "tick")
WARN = CuePattern((PatternSegment(100, 60), PatternSegment(0, 100), PatternSegment(100, 60), PatternSegment(0, 100), PatternSegment(100, 60)), "warn")
ROUND = CuePattern((PatternSegment(100, 50), PatternSegment(0, 100), PatternSegment(100, 50), PatternSegment(0, 100), PatternSegment(100, 50)), "round")
DONE = CuePattern((PatternSegment(100, 400), PatternSegment(0, 200), PatternSegment(100, 400)), "done")
PATTERNS = [START, TICK, WARN, ROUND, DONE]
P_START, P_TICK, P_WARN, P_ROUND, P_DONE = range(len(PATTERNS))

TECHNIQUES = [t for t in TechniqueCode if t not in (TechniqueCode.ACUPRESSURE, TechniqueCode.ACUPRESSURE_PC6, TechniqueCode.ACUPRESSURE_LI4)]


def _table(records: list[TableRecord], name: str) -> StepTable:
    return StepTable(Hands.LEFT, records, list(PATTERNS), P_DONE, name)


def _upload_records(count: int) -> list[TableRecord]:
    records: list[TableRecord] = []
    for i in range(count):
        with_tick = i % 3 == 0
        records.append(StepRecord(
            TECHNIQUES[i % len(TECHNIQUES)], 10_000 + 1000 * (i % 11),
            tick_every_ms=5000 if with_tick else 0, warn_before_ms=2000 if i % 4 == 0 else 0,
            start_pattern=P_START, tick_pattern=P_TICK if with_tick else None, warn_pattern=P_WARN if i % 4 == 0 else None,
        ))
    return records


def upload_table(target_bytes: int = 8192) -> bytes:
    """A table of plain STEP records (no names) as close to ``target_bytes`` as fits, not above."""
    fixed = len(encode_table(_table(_upload_records(1), "upload"), names=False)) - TABLE_RECORD_SIZE
    count = max(1, (target_bytes - fixed) // TABLE_RECORD_SIZE)
    data = encode_table(_table(_upload_records(count), "upload"), names=False)
    assert len(data) <= max(target_bytes, fixed + TABLE_RECORD_SIZE)
    return data


def records_table(count: int = 1024) -> bytes:
    """``count`` plain STEP records (1024: the most a table holds), no names."""
    return encode_table(_table(_upload_records(count), "records"), names=False)


def day_table(hours: int = 24, *, ticks: bool = False) -> tuple[bytes, int]:
    """LOOP hours x (LOOP 60 x one 60 s step): ``hours`` hours of routine.  Returns (bytes, total_ms).

    ``ticks`` adds a tick every 15 s and a warning 5 s before the end of every step
    (5 cues a minute instead of 1).
    """
    step = StepRecord(
        TechniqueCode.COMBING, 60_000, start_pattern=P_START,
        tick_every_ms=15_000 if ticks else 0, tick_pattern=P_TICK if ticks else None,
        warn_before_ms=5000 if ticks else 0, warn_pattern=P_WARN if ticks else None,
    )
    records: list[TableRecord] = [LoopRecord(Iterate.NONE, hours, 2, P_ROUND), LoopRecord(Iterate.NONE, 60, 1, P_ROUND), step]
    table = _table(records, f"{hours} h")
    return encode_table(table, names=False), table.total_ms


def metronome_table(seconds: int = 60, every_s: int = 2) -> tuple[bytes, int]:
    """One step of ``seconds`` with a tick every ``every_s``: a cue every ``every_s`` s, then DONE."""
    step = StepRecord(TechniqueCode.COMBING, seconds * 1000, tick_every_ms=every_s * 1000, start_pattern=P_START, tick_pattern=P_TICK)
    table = _table([step], "metronome")
    return encode_table(table, names=False), table.total_ms


