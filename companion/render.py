"""Human and JSON views of a step table and its timeline (used by ``handcue inspect``)."""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from protocol.constants import Ack, Iterate, Limits, TechniqueCode
from protocol.cues import STEP_CUE_SLOTS, CueFacts, Fires
from protocol.table import LoopRecord, StepRecord, StepTable, TableRecord, build_tree, check_table_header, decode_table, record_kind

if TYPE_CHECKING:  # the walks over a table's iterations and its timeline are imported by what needs them:
    # status and start number the steps without them (4-6 ms less before their answer is printed)
    from protocol.timeline import MotorEvent

from .durations import format_ms  # not from .routine: status and start render without the routine parser

HANDS_TEXT = {"LEFT": "left only", "RIGHT": "right only", "LEFT_THEN_RIGHT": "left, then right", "RIGHT_THEN_LEFT": "right, then left"}


def step_numbers(table: StepTable) -> dict[int, int]:
    """Record index -> step number (1, 2, ... over the step records in table order, loops not counted).

    The one numbering of steps: the card, ``inspect``, the checker's messages, the
    live line and the demo summary all show these numbers.
    """
    numbers: dict[int, int] = {}
    for index, record in enumerate(table.records):
        if isinstance(record, StepRecord):
            numbers[index] = len(numbers) + 1
    return numbers


def step_plays(table: StepTable) -> int:
    """How many step iterations the routine plays (a step for each of 5 fingers plays 5 times)."""
    from protocol.iterations import iterations

    return sum(1 for it in iterations(build_tree(table.records), table.hands) if it.is_step)


def counts_text(steps: int, plays: int, cues: int | None = None) -> str:
    """``9 steps (49 plays), 160 cues``: the same words wherever a routine is summed up."""
    played = f" ({plays} plays)" if plays != steps else ""
    return f"{steps} step{'s' if steps != 1 else ''}{played}" + (f", {cues} cues" if cues is not None else "")


def left_text(ms: int) -> str:
    """Time left, rounded up to whole seconds: a 45 s step starts at "45 s left" and shows "1 s left" until it ends."""
    return format_ms(-(-ms // 1000) * 1000)


def timeline(data: bytes, strength: int = 100, ack_wait_ms: int | None = 0) -> Iterator[MotorEvent]:
    """Motor events of the table bytes, as a stream (a table of a few bytes can play for weeks).

    ``ack_wait_ms``: when the wearer acknowledges after each acknowledgement point's first cue (None: never).
    """
    from protocol.timeline import table_timeline

    return table_timeline(decode_table(data), strength, ack_wait_ms)


ACK_WAIT_TEXT = f"the cue repeats every {format_ms(Ack.REPEAT_MS)} until the wearer presses the button, at most {format_ms(Ack.GIVE_UP_MS)}"
"""How a band waits for an acknowledgement, in the words inspect, the card and the plot use."""


def parse_ack_wait(text: str) -> int | None:
    """``--ack-wait``: seconds (a duration) after the first cue, or ``never``; a ValueError names the choices."""
    if text.strip().lower() == "never":
        return None
    try:
        from .routine import parse_duration

        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{exc}, or never") from None


def ack_assumption_text(ack_wait_ms: int | None) -> str:
    """What a timeline assumed of the wearer at acknowledgement points."""
    if ack_wait_ms is None or ack_wait_ms >= Ack.GIVE_UP_MS:
        return f"never presses (the band gives up after {format_ms(Ack.GIVE_UP_MS)}, a missed acknowledgement)"
    if ack_wait_ms == 0:
        return "presses at the first cue"
    return f"presses {format_ms(ack_wait_ms)} after the first cue"


def count_cues(table: StepTable) -> int:
    """How many cues the band fires, counted off the stream."""
    from protocol.timeline import table_cues

    return sum(1 for _ in table_cues(table))


def clock(ms: int) -> str:
    """``83500`` -> ``1:23.500``."""
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest / 1000:06.3f}"


def technique_of(table: StepTable, step: int | None) -> str:
    if step is None:
        return "-"
    record = table.records[step]
    return record.technique.text_id if isinstance(record, StepRecord) else "-"


def repetition_text(iterate: Iterate, count: int) -> str:
    if iterate == Iterate.FINGER:
        return f"for each of {count} fingers"
    if iterate == Iterate.HAND:
        return f"for each of {count} hands"
    return f"x{count}" if count > 1 else ""


def step_cue_text(table: StepTable, record: StepRecord, facts: CueFacts) -> str | None:
    """``tick: #2 every 10 s``: a step's cue in one slot, with its timing; None for an empty slot (the start cue shows ``-``)."""
    if getattr(record, facts.pattern_field) is None and facts.fires != Fires.AT_START:
        return None
    timing = format_ms(getattr(record, facts.timing)) if facts.timing else ""
    return f"{facts.slot}: {table.pattern_label(getattr(record, facts.pattern_field))}" + facts.shown.format(timing=timing)


def table_text(data: bytes) -> str:
    from protocol.iterations import iterations

    header = check_table_header(data)
    table = decode_table(data)
    numbers = step_numbers(table)
    lines = [
        f"{table.name or '(names stripped)'}: {len(data)} bytes, format {header.version}, "
        f"CRC-32 0x{zlib.crc32(data):08X} (header CRC 0x{header.crc32:08X})",
        f"hands: {HANDS_TEXT[table.hands.name]}; total {format_ms(table.total_ms)}; "
        f"{counts_text(len(numbers), step_plays(table), count_cues(table))}; {len(table.records)} records, {len(table.patterns)} cue patterns",
        "",
        "cue patterns (on/off ms):",
    ]
    for index, pattern in enumerate(table.patterns):
        amplitude = max(s.amplitude for s in pattern.segments)
        lines.append(f"  #{index:<2} {pattern.name or '-':<8} {pattern.describe():<24} {amplitude}%")
    lines += ["", "records:"]

    # Each record once, at its first play (a loop's body shows the times of its first round).
    shown: set[int] = set()
    for it in iterations(build_tree(table.records), table.hands):
        node, offset, indent = it.item, it.t_ms, "  " * it.depth
        if node.index in shown:
            if len(shown) == len(table.records):
                break  # every record shown: the rest of the walk only repeats them
            continue
        shown.add(node.index)
        record = node.record
        if isinstance(record, LoopRecord):
            cue = f", next: {table.pattern_label(record.round_pattern)}" if record.round_pattern is not None else ""
            lines.append(f"  [{node.index:>3}]         {clock(offset):>10} {indent}loop {repetition_text(record.iterate, record.count) or 'x1'}{cue}")
        else:
            parts = [format_ms(record.duration_ms)]
            rep = repetition_text(record.iterate, record.count)
            if rep:
                parts.append(rep)
            parts += [text for facts in STEP_CUE_SLOTS if (text := step_cue_text(table, record, facts))]
            if record.ack:
                repeats = record.count > 1 or record.iterate != Iterate.NONE
                parts.append("waits for acknowledgement after the cue that begins each play" if repeats
                             else "waits for acknowledgement after its start cue")
            lines.append(f"  [{node.index:>3}] {'step ' + str(numbers[node.index]):<7} {clock(offset):>10} {indent}{record.technique.text_id:<16} {'; '.join(parts)}")

    lines.append(f"  done: {table.pattern_label(table.done_pattern)} at {clock(table.total_ms)}"
                 + (", waits for acknowledgement" if table.done_ack else ""))
    if table.format_version > 1:
        lines.append(f"  acknowledgement: {ACK_WAIT_TEXT}; the times above assume a press at the first cue")
    return "\n".join(lines)


def table_json(data: bytes) -> dict[str, Any]:
    header = check_table_header(data)
    table = decode_table(data)
    numbers = step_numbers(table)
    records = [{**record_json(index, record), "step_number": numbers.get(index)} for index, record in enumerate(table.records)]
    return {
        "name": table.name,
        "size": len(data),
        "format_version": header.version,
        "crc32": f"0x{zlib.crc32(data):08X}",
        "header_crc32": f"0x{header.crc32:08X}",
        "steps": len(numbers),
        "step_plays": step_plays(table),
        "cues": count_cues(table),
        "has_names": table.has_names,
        "hands": list(table.hands.order),
        "total_ms": table.total_ms,
        "done_pattern": table.done_pattern,
        **({"done_ack": True} if table.done_ack else {}),
        "patterns": [
            {"index": i, "name": p.name, "segments": [{"amplitude": s.amplitude, "duration_ms": s.duration_ms} for s in p.segments]}
            for i, p in enumerate(table.patterns)
        ],
        "records": records,
    }


def record_json(index: int, record: TableRecord) -> dict[str, Any]:
    """A record as ``handcue inspect --json`` shows it: its model's fields in declaration order, enums as text."""
    fields = {f.name: _json_value(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if not fields.get("ack", True):
        del fields["ack"]  # format 2's flag appears only where it is set: a format 1 table reads as it always did
    return {"index": index, "kind": record_kind(record).name.lower(), **fields}


def _json_value(value: Any) -> Any:
    if isinstance(value, TechniqueCode):
        return value.text_id
    return value.name.lower() if isinstance(value, IntEnum) else value


def ack_marks(table: StepTable, ack_wait_ms: int | None) -> Callable[[MotorEvent], str]:
    """A function that marks, event by event in time order, the motor events of acknowledgement points' cues.

    Each cue there starts with an on segment (SPEC §6), so its first event starts
    at the cue's time; the events after it with the same cue and pattern, within
    a pattern's longest duration, belong to it too.
    """
    from protocol.timeline import ack_points, ack_repeats

    points = ack_points(table, ack_wait_ms) if table.format_version > 1 else iter(())
    plays: dict[int, str] = {}
    run: tuple[str, MotorEvent] | None = None

    def mark(event: MotorEvent) -> str:
        nonlocal run, plays
        while not plays or event.t_ms > max(plays) + Limits.MAX_PATTERN_MS:
            point = next(points, None)
            if point is None:
                break
            plays = {point.t_ms: "  ack: waits for a press"}
            plays.update({point.t_ms + after: "  ack: repeat" for after in ack_repeats(point.wait_ms, point.given)})
        if event.t_ms in plays:
            run = (plays[event.t_ms], event)
            return run[0]
        if run is not None and (event.cue, event.pattern) == (run[1].cue, run[1].pattern) and event.t_ms < run[1].t_ms + Limits.MAX_PATTERN_MS:
            return run[0]
        run = None
        return ""

    return mark


def timeline_lines(data: bytes, events: Iterable[MotorEvent], ack_wait_ms: int | None = 0) -> Iterator[str]:
    """The lines of ``handcue inspect --timeline``, one per event as it comes, then the count.

    ``ack_wait_ms``: what ``events`` assumed of the wearer at acknowledgement points (format 2):
    their events are marked, and the last lines say the assumption.
    """
    table = decode_table(data)
    numbers = step_numbers(table)
    marks = ack_marks(table, ack_wait_ms)
    yield f"{'t (ms)':>9}  {'time':>10}  {'cue':<7} {'pattern':<8} {'step':>4}  {'technique':<16} {'hand':<6} {'finger':<7} motor"
    count = 0
    for event in events:
        count += 1
        mark = marks(event)
        yield (
            f"{event.t_ms:>9}  {clock(event.t_ms):>10}  {event.cue.text_id:<7} {table.pattern_label(event.pattern):<8} "
            f"{numbers.get(event.step, '-') if event.step is not None else '-':>4}  {technique_of(table, event.step):<16} "
            f"{event.hand or '-':<6} {event.finger or '-':<7} {event.amplitude}% {event.duration_ms} ms{mark}"
        )
    if table.format_version == 1:
        yield f"{count} motor events; the routine ends at {clock(table.total_ms)}"
        return
    from protocol.timeline import ack_points, played_ms

    waits = list(ack_points(table, ack_wait_ms))
    yield f"{count} motor events; the routine ends at {clock(played_ms(table, ack_wait_ms))}"
    yield (f"{len(waits)} acknowledgement point{'s' if len(waits) != 1 else ''} ({ACK_WAIT_TEXT}); "
           f"this timeline assumes the wearer {ack_assumption_text(ack_wait_ms)}")


def timeline_text(data: bytes, events: Iterable[MotorEvent]) -> str:
    return "\n".join(timeline_lines(data, events))


def timeline_json_chunks(events: Iterable[MotorEvent]) -> Iterator[str]:
    """``json.dumps([e.to_json() for e in events], indent=2)`` piece by piece, without holding the list."""
    opening = "[\n  "
    for event in events:
        yield opening + json.dumps(event.to_json(), indent=2, ensure_ascii=False).replace("\n", "\n  ")
        opening = ",\n  "
    yield "[]" if opening == "[\n  " else "\n]"
