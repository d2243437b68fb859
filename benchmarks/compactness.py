"""Compactness: bytes of each shipped routine as a HandCue table, a Garmin FIT workout, JSON and CBOR."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from companion import compile_routine, load_routine, read_table, shipped_routines
from protocol.constants import (
    PATTERN_DESCRIPTOR_SIZE,
    SEGMENT_SIZE,
    SEGMENT_UNIT_MS,
    TABLE_HEADER_SIZE,
    TABLE_RECORD_SIZE,
    TIME_UNIT_MS,
    Hands,
    Iterate,
    TechniqueCode,
)
from protocol.table import CuePattern, LoopRecord, Node, PatternSegment, StepRecord, StepTable, TableRecord, build_tree

from . import Report, Row, md_table, ratio

NAME = "compactness"
TITLE = "1. Compactness"
TARGET_ROUTINE = "full-hand-massage"
TARGET_FIT = 4.0
TARGET_JSON = 10.0

# FIT local message numbers: one per layout, so a writer never has to redefine a layout it already defined.
LOCAL_FILE_ID, LOCAL_WORKOUT, LOCAL_TIMED_STEP, LOCAL_REPEAT_STEP, LOCAL_DEVELOPER_ID, LOCAL_FIELD_DESCRIPTION = range(6)
FIT_EXAMPLE_STRING_SIZE = 50
"""``min_string_size`` of fit-tool's own workout example (examples/write_workout_example.py)."""
FIT_SERIAL_NUMBER = 0x1A2B
FIT_TIME_CREATED = 1_700_000_000_000  # fixed, so the same routine always gives the same FIT bytes

METHOD = f"""\
For every shipped routine (`companion.shipped_routines()`):

* **HandCue**: `compile_routine(load_routine(id), names=False)` (the table a band stores) and
  `names=True` (plus the name section: routine name and pattern names).
* **FIT** (plain): a Garmin FIT workout file written with `fit-tool` from the decoded table
  (`protocol.table.build_tree` of `read_table(...)`): a `file_id` message (type workout,
  manufacturer development, product 0, and the serial number and creation time that fit-tool's
  validator requires), a `workout` message (sport training, `num_valid_steps`)
  and one `workout_step` per STEP record (`duration_type` time, `duration_value` = one
  iteration, `target_type` open). Repetition becomes a `workout_step` with `duration_type`
  `repeat_until_steps_cmplt` pointing back at the first repeated step, with `target_value` the
  count: one after every STEP record with `count > 1` (per finger, per hand, repeat), one after
  every LOOP body (blocks, whatever their count). Each layout gets its own local message number and is
  defined once, sized for its longest strings (shorter ones padded with zeros), so no definition
  message is written twice; the benchmark checks this on every file but *FIT local 0*, which writes
  everything as local message 0 (fit-tool's default) and so repeats a definition at every change of
  layout. *FIT* has no strings; *FIT named* adds `wkt_name` (routine name) and `wkt_step_name`
  (technique id) and is compared with HandCue `names=True`. A FIT workout has no fields for the
  technique code, the hand/finger iteration, the ticks, warnings, vibration patterns and
  acknowledgements a HandCue table carries, so the plain FIT files hold **less** information than the
  table and their ratios favour FIT.
* **FIT+dev** (same information, minimal): the plain workout plus FIT developer fields for everything
  else the table holds, each in the unit and width the table stores it in: on each timed step the
  technique code, the iteration, the tick interval and warning lead time (u16, 100 ms units), the
  start/next/tick/warn patterns (4 bytes, 0xFF = none) and `ack`; on each repeat step the LOOP record's
  iteration and round pattern (both 0xFF, FIT's "invalid", when the repeat step is a STEP record's
  count); on the workout the hands, the done pattern, `done_ack`, and the patterns (segment count per
  pattern, then every segment's amplitude in % and duration in 10 ms units). Its fixed part is a
  `developer_data_id` message (16-byte application id, data index 0) and one `field_description` per
  field used holding only what a reader needs to decode the field (developer data index, field
  definition number, base type): no `field_name`, no strings at all. *FIT+dev named* adds `wkt_name`
  and the pattern names (one string-array field) and is compared with HandCue `names=True`; the
  technique is its code, so it has no `wkt_step_name`. **FIT+dev described** is the self-describing
  variant: each `field_description` also holds the field's `field_name`, `units` and `scale` (so a
  generic FIT reader shows tick 22.5 s rather than 225).
* Every FIT file is decoded back with `fit_tool.fit_file.FitFile` and passes
  `fit_tool.validation.validate_fit_file` (wire, profile and file-type conformance). A FIT+dev file
  must decode to the very table it was written from: the benchmark rebuilds the `StepTable` (every
  STEP/LOOP record field, the patterns, hands, done pattern, `done_ack` and, named, the names) from the
  decoded messages and compares it with the table read from the HandCue bytes; a plain FIT file must
  decode to the STEP records' durations.
* **Fixed overhead and cost per step**: each file is split into the part paid before any content
  (HandCue: the 24-byte header; FIT: file header and CRC, definition messages, `file_id`,
  `developer_data_id`, `field_description`s), the patterns and names (HandCue: pattern descriptors,
  segments, name section; FIT: the `workout` message), and the steps (HandCue: {TABLE_RECORD_SIZE} bytes per STEP or
  LOOP record; FIT: the timed step messages, and the repeat step messages for LOOP records and STEP
  records with a count).
* **JSON**: `json.dumps(dataclasses.asdict(routine), separators=(",", ":"))` of the routine
  model (`companion.routine.Routine` with its `Step`/`Block` tree, `StepCues` and the
  `CuePattern`s it uses), leaving out `source` (a local file path), `warnings` (checker output)
  and each step's `path` (derived from its position). **CBOR**: `cbor2.dumps` of the same dict.

Targets ({TARGET_ROUTINE}): HandCue (`names=False`) at least {TARGET_FIT:g}x smaller than FIT and at
least {TARGET_JSON:g}x smaller than JSON. The FIT target was first judged on the plain FIT file; it is
now judged on **FIT+dev** (minimal), the only FIT file that holds the same information as the table:
the plain file leaves out what the band needs to play the routine, so its ratio compares the table with
less than a table. The minimal rather than the described variant, because the HandCue table is not
self-describing either: both need a specification outside the file to be understood (SPEC.md; the
developer's application id), and charging field names and units to FIT alone would favour HandCue. The
plain and described ratios and the `names=True` ratios are reported beside it, without a verdict."""


# --------------------------------------------------------------------------- FIT


@dataclasses.dataclass(frozen=True)
class DevField:
    """A FIT developer field: its base type, and what the self-describing variant adds (name, units, scale)."""

    name: str
    base: str
    """A ``fit_tool.base_type.BaseType`` member name."""
    units: str = ""
    scale: int = 1
    """FIT's scale: the value a reader shows is the stored value / scale (so 10 with units "s": 100 ms units)."""


# Developer fields for everything a HandCue table holds that a FIT workout has no field for.  Each value is
# stored in the unit and width the table stores it in (times in 100 ms units in 2 bytes, segment durations in
# 10 ms units in 1 byte), so both files hold exactly the same information; 0xFF, FIT's "invalid" for one-byte
# types, is "no pattern" (the table's own marker) and "not set".  The field definition number is the index.
DEV_FIELDS = (
    # on each timed workout_step (one per STEP record)
    DevField("technique", "ENUM"), DevField("iterate", "ENUM"), DevField("tick_every", "UINT16", "s", 10),
    DevField("warn_before", "UINT16", "s", 10), DevField("cue_patterns", "UINT8"), DevField("ack", "ENUM"),
    # on each repeat workout_step: set for a LOOP record, invalid (0xFF) when it repeats one STEP record (its count)
    DevField("loop_iterate", "ENUM"), DevField("round_pattern", "UINT8"),
    # on the workout
    DevField("hands", "ENUM"), DevField("done_pattern", "UINT8"), DevField("done_ack", "ENUM"),
    DevField("pattern_segments", "UINT8"), DevField("segment_amplitude", "UINT8", "%"),
    DevField("segment_duration", "UINT8", "s", 100), DevField("pattern_names", "STRING"),
)
(F_TECHNIQUE, F_ITERATE, F_TICK, F_WARN, F_CUES, F_ACK, F_LOOP_ITERATE, F_ROUND, F_HANDS, F_DONE, F_DONE_ACK,
 F_PATTERN_SEGMENTS, F_AMPLITUDE, F_SEGMENT_DURATION, F_PATTERN_NAMES) = range(len(DEV_FIELDS))
INVALID_U8 = 0xFF
APPLICATION_ID = bytes(16)
"""The developer_data_id's 16-byte application UUID: what tells a reader what the developer fields mean."""

# The parts of a FIT file, for the fixed-overhead / per-step breakdown.
FIXED_PARTS = ("file header + CRC", "definition messages", "file_id", "developer_data_id", "field_description")
FIT_PARTS = (*FIXED_PARTS, "workout", "timed steps", "repeat steps")


def _dev_values(table: StepTable, names: bool) -> tuple[Any, Any, dict[int, list[Any]]]:
    """Functions giving a timed step's and a repeat step's developer field values, and the workout's values."""

    def ref(index: int | None) -> int:
        return INVALID_U8 if index is None else index

    def units(ms: int, unit: int) -> int:
        if ms % unit:
            raise ValueError(f"{ms} ms is not a whole number of {unit} ms units (the table's unit)")
        return ms // unit

    def step(record: StepRecord) -> dict[int, list[Any]]:
        return {F_TECHNIQUE: [int(record.technique)], F_ITERATE: [int(record.iterate)],
                F_TICK: [units(record.tick_every_ms, TIME_UNIT_MS)], F_WARN: [units(record.warn_before_ms, TIME_UNIT_MS)],
                F_CUES: [ref(record.start_pattern), ref(record.next_pattern), ref(record.tick_pattern), ref(record.warn_pattern)],
                F_ACK: [int(record.ack)]}

    def repeat(loop: LoopRecord | None) -> dict[int, list[Any]]:
        if loop is None:  # a STEP record's count: the timed step before it carries the rest
            return {F_LOOP_ITERATE: [INVALID_U8], F_ROUND: [INVALID_U8]}
        return {F_LOOP_ITERATE: [int(loop.iterate)], F_ROUND: [ref(loop.round_pattern)]}

    workout: dict[int, list[Any]] = {F_HANDS: [int(table.hands)], F_DONE: [ref(table.done_pattern)], F_DONE_ACK: [int(table.done_ack)]}
    if table.patterns:  # an empty array would be a zero-size field: leave the fields out instead
        segments = [s for p in table.patterns for s in p.segments]
        workout[F_PATTERN_SEGMENTS] = [len(p.segments) for p in table.patterns]
        workout[F_AMPLITUDE] = [s.amplitude for s in segments]
        workout[F_SEGMENT_DURATION] = [units(s.duration_ms, SEGMENT_UNIT_MS) for s in segments]
        if names:
            if not all(p.name for p in table.patterns):
                # fit-tool's reader drops empty strings from a string array, so the names would not line up
                raise ValueError("a pattern without a name cannot be written as a FIT string array")
            workout[F_PATTERN_NAMES] = [p.name for p in table.patterns]
    return step, repeat, workout


def fit_workout(table: StepTable, *, names: bool, one_local_message: bool = False, min_string_size: int = 0,
                developer: bool = False, described: bool = False) -> tuple[bytes, dict[str, Any]]:
    """The table as a FIT workout file; returns (bytes, breakdown: bytes per part, message counts and sizes).

    ``one_local_message`` writes every message as local message 0 (fit-tool's default), so
    the builder writes a new definition message whenever the layout changes;
    ``min_string_size`` pads every string field to at least that many bytes;
    ``developer`` adds developer fields for everything else the table holds (cue
    patterns, ticks, warnings, iteration, acknowledgements, and with ``names`` the pattern
    names), so the file carries the same information; their ``field_description``
    messages hold only what a reader needs to decode them (data index, field number, base
    type) unless ``described`` adds each field's name, units and scale.
    The file is decoded again and checked (:func:`check_fit`) before it is returned.
    """
    from fit_tool.base_type import BaseType
    from fit_tool.developer_field import DeveloperField
    from fit_tool.fit_file_builder import FitFileBuilder
    from fit_tool.profile.messages.developer_data_id_message import DeveloperDataIdMessage
    from fit_tool.profile.messages.field_description_message import FieldDescriptionMessage
    from fit_tool.profile.messages.file_id_message import FileIdMessage
    from fit_tool.profile.messages.workout_message import WorkoutMessage
    from fit_tool.profile.messages.workout_step_message import WorkoutStepMessage
    from fit_tool.profile.profile_type import FileType, Manufacturer, Sport, WorkoutStepDuration, WorkoutStepTarget

    step_values, repeat_values, workout_values = _dev_values(table, names)
    used: set[int] = set()

    def dev(values: dict[int, list[Any]]) -> list[Any]:
        if not developer:
            return []
        fields = []
        for number, items in values.items():
            base = getattr(BaseType, DEV_FIELDS[number].base)
            field = DeveloperField(developer_data_index=0, field_id=number, base_type=base, growable=True)
            for index, item in enumerate(items):
                field.set_value(index, item)
            fields.append(field)
            used.add(number)
        return fields

    steps: list[Any] = []

    def repeat(first: int, count: int, loop: LoopRecord | None) -> None:
        message = WorkoutStepMessage(local_id=LOCAL_REPEAT_STEP, developer_fields=dev(repeat_values(loop)))
        message.message_index = len(steps)
        message.duration_type = WorkoutStepDuration.REPEAT_UNTIL_STEPS_CMPLT
        message.duration_step = first
        message.target_type = WorkoutStepTarget.OPEN
        message.target_repeat_steps = count
        steps.append(message)

    def emit(nodes: list[Node]) -> None:
        for node in nodes:
            record = node.record
            first = len(steps)
            if isinstance(record, LoopRecord):
                emit(node.children)
                repeat(first, record.count, record)  # even at count 1: the loop's extent, iteration and round cue are information
            else:
                message = WorkoutStepMessage(local_id=LOCAL_TIMED_STEP, developer_fields=dev(step_values(record)))
                message.message_index = len(steps)
                if names and not developer:  # the plain named variant shows the technique; with developer fields its code is there
                    message.workout_step_name = record.technique.text_id
                message.duration_type = WorkoutStepDuration.TIME
                message.duration_time = record.duration_ms / 1000
                message.target_type = WorkoutStepTarget.OPEN
                steps.append(message)
                if record.count > 1:
                    repeat(first, record.count, None)

    emit(build_tree(table.records))
    file_id = FileIdMessage(local_id=LOCAL_FILE_ID)
    file_id.type = FileType.WORKOUT
    file_id.manufacturer = Manufacturer.DEVELOPMENT.value
    file_id.product = 0
    file_id.serial_number = FIT_SERIAL_NUMBER
    file_id.time_created = FIT_TIME_CREATED
    workout = WorkoutMessage(local_id=LOCAL_WORKOUT, developer_fields=dev(workout_values))
    workout.sport = Sport.TRAINING
    workout.num_valid_steps = sum(1 for s in steps if s.local_id == LOCAL_TIMED_STEP)
    if names and table.name:
        workout.workout_name = table.name
    if one_local_message:
        for message in (file_id, workout, *steps):
            message.local_id = 0
    builder = FitFileBuilder(auto_define=True, min_string_size=min_string_size)
    builder.add(file_id)
    if developer:
        developer_id = DeveloperDataIdMessage(local_id=LOCAL_DEVELOPER_ID)
        developer_id.application_id = APPLICATION_ID
        developer_id.developer_data_index = 0
        builder.add(developer_id)
        descriptions = []
        for number in sorted(used):
            description = FieldDescriptionMessage(local_id=LOCAL_FIELD_DESCRIPTION)
            description.developer_data_index = 0
            description.field_definition_number = number
            description.fit_base_type_id = getattr(BaseType, DEV_FIELDS[number].base)
            if described:
                description.field_name = DEV_FIELDS[number].name
                description.units = DEV_FIELDS[number].units
                description.scale = DEV_FIELDS[number].scale
            descriptions.append(description)
        _define_once(builder, descriptions)
        builder.add_all(descriptions)
    builder.add(workout)
    if not one_local_message:
        _define_once(builder, [s for s in steps if s.local_id == LOCAL_TIMED_STEP])
    builder.add_all(steps)
    data = builder.build_bytes()
    breakdown = _breakdown(builder.records, len(data))
    check_fit(data, table, names=names, developer=developer, one_local_message=one_local_message)
    return data, breakdown


def _define_once(builder: Any, messages: list[Any]) -> None:
    """Define the local message of ``messages`` once, each field sized for its longest value.

    Left to itself fit-tool writes a new definition message whenever a string field is longer
    than the one defined before (step names, field names); shorter strings are padded with zeros.
    """
    from fit_tool.definition_message import DefinitionMessage

    if len({m.local_id for m in messages}) != 1 or not any(f.size for m in messages for f in m.fields if f.base_type.name == "STRING"):
        return
    definition = DefinitionMessage.from_data_message(messages[0], min_string_size=builder.min_string_size)
    for field_definition in definition.field_definitions:
        field_definition.size = max(f.size for m in messages for f in m.fields if f.field_id == field_definition.field_id)
    definition.size = DefinitionMessage.calculate_size(definition.field_definitions, definition.developer_field_definitions)
    builder.add(definition)


def _breakdown(records: list[Any], total: int) -> dict[str, Any]:
    """Bytes per part of the file (:data:`FIT_PARTS`), and the count and size of the timed and repeat step messages."""
    from fit_tool.profile.messages.developer_data_id_message import DeveloperDataIdMessage
    from fit_tool.profile.messages.field_description_message import FieldDescriptionMessage
    from fit_tool.profile.messages.file_id_message import FileIdMessage
    from fit_tool.profile.messages.workout_message import WorkoutMessage
    from fit_tool.profile.messages.workout_step_message import WorkoutStepMessage
    from fit_tool.profile.profile_type import WorkoutStepDuration

    parts = dict.fromkeys(FIT_PARTS, 0)
    sizes: dict[str, set[int]] = {"timed steps": set(), "repeat steps": set()}
    counts = {"timed steps": 0, "repeat steps": 0}
    kinds = {FileIdMessage: "file_id", DeveloperDataIdMessage: "developer_data_id", FieldDescriptionMessage: "field_description",
             WorkoutMessage: "workout"}
    for record in records:
        size = len(record.to_bytes())
        if record.header.is_definition:
            part = "definition messages"
        elif isinstance(record.message, WorkoutStepMessage):
            repeat = record.message.duration_type == WorkoutStepDuration.REPEAT_UNTIL_STEPS_CMPLT.value
            part = "repeat steps" if repeat else "timed steps"
            sizes[part].add(size)
            counts[part] += 1
        else:
            part = kinds[type(record.message)]
        parts[part] += size
    parts["file header + CRC"] = total - sum(parts.values())
    return {"parts": parts, "fixed": sum(parts[p] for p in FIXED_PARTS), "counts": counts,
            "sizes": {k: (max(v) if v else 0) for k, v in sizes.items()}}


def decode_fit_workout(data: bytes) -> StepTable:
    """Rebuild the HandCue table from a FIT workout written with developer fields (decoded with fit-tool).

    The inverse of ``fit_workout(..., developer=True)``: timed steps become STEP records, a repeat step
    with ``loop_iterate`` set becomes a LOOP record around the records from its ``duration_step``, one
    without it is the count of the STEP record before it.
    """
    from fit_tool.fit_file import FitFile
    from fit_tool.profile.messages.workout_message import WorkoutMessage
    from fit_tool.profile.messages.workout_step_message import WorkoutStepMessage
    from fit_tool.profile.profile_type import WorkoutStepDuration

    def values(message: Any) -> dict[int, list[Any]]:
        return {f.field_id: list(f.encoded_values) for f in message.developer_fields if f.developer_data_index == 0}

    def ref(value: int) -> int | None:
        return None if value == INVALID_U8 else value

    decoded = FitFile.from_bytes(data)
    messages = [r.message for r in decoded.records if not r.header.is_definition]
    [workout] = [m for m in messages if isinstance(m, WorkoutMessage)]
    records: list[TableRecord] = []
    position: dict[int, int] = {}  # FIT step index -> index in records of what starts there
    for index, step in enumerate(m for m in messages if isinstance(m, WorkoutStepMessage)):
        dev = values(step)
        if step.duration_type != WorkoutStepDuration.REPEAT_UNTIL_STEPS_CMPLT.value:
            position[index] = len(records)
            cues = [ref(v) for v in dev[F_CUES]]
            records.append(StepRecord(
                technique=TechniqueCode(dev[F_TECHNIQUE][0]), duration_ms=round(step.duration_time * 1000),
                iterate=Iterate(dev[F_ITERATE][0]), tick_every_ms=dev[F_TICK][0] * TIME_UNIT_MS,
                warn_before_ms=dev[F_WARN][0] * TIME_UNIT_MS, start_pattern=cues[0], next_pattern=cues[1], tick_pattern=cues[2],
                warn_pattern=cues[3], ack=bool(dev[F_ACK][0])))
        elif dev[F_LOOP_ITERATE][0] == INVALID_U8:
            last = records[-1]
            if not isinstance(last, StepRecord) or position[step.duration_step] != len(records) - 1:
                raise AssertionError(f"FIT step {index}: a step count that does not follow its step")
            records[-1] = dataclasses.replace(last, count=step.target_repeat_steps)
        else:
            start = position[step.duration_step]
            loop = LoopRecord(iterate=Iterate(dev[F_LOOP_ITERATE][0]), count=step.target_repeat_steps,
                              body_count=len(records) - start, round_pattern=ref(dev[F_ROUND][0]))
            records.insert(start, loop)
            position = {k: v + 1 if v > start else v for k, v in position.items()}  # the loop now starts at `start`
    dev = values(workout)
    amplitudes, durations, names = iter(dev.get(F_AMPLITUDE, [])), iter(dev.get(F_SEGMENT_DURATION, [])), dev.get(F_PATTERN_NAMES)
    patterns = [CuePattern(tuple(PatternSegment(amplitude=next(amplitudes), duration_ms=next(durations) * SEGMENT_UNIT_MS)
                                 for _ in range(count)), name=names[i] if names else "")
                for i, count in enumerate(dev.get(F_PATTERN_SEGMENTS, []))]
    return StepTable(hands=Hands(dev[F_HANDS][0]), records=records, patterns=patterns, done_pattern=ref(dev[F_DONE][0]),
                     name=workout.workout_name or "", has_names=names is not None, done_ack=bool(dev[F_DONE_ACK][0]))


def check_fit(data: bytes, table: StepTable, *, names: bool, developer: bool, one_local_message: bool = False) -> None:
    """Decode the file again, run fit-tool's conformance checks (wire, profile, file type), and check what it holds.

    With developer fields the table rebuilt from the file (:func:`decode_fit_workout`) must equal ``table``
    (without its names unless ``names``); without them, the timed steps' durations must be the STEP records'.
    Unless every message is local 0, no local message may be defined twice.
    """
    from fit_tool.fit_file import FitFile
    from fit_tool.profile.messages.workout_step_message import WorkoutStepMessage
    from fit_tool.profile.profile_type import WorkoutStepDuration
    from fit_tool.validation import validate_fit_file

    decoded = FitFile.from_bytes(data)
    report = validate_fit_file(decoded)
    if report.has_errors:
        raise AssertionError(f"FIT file fails fit-tool validation: {[f.message for f in report.errors]}")
    defined = [r.header.local_id for r in decoded.records if r.header.is_definition]
    if not one_local_message and len(defined) != len(set(defined)):
        raise AssertionError(f"FIT file defines a local message more than once: {defined}")
    if developer:
        expected = table if names else dataclasses.replace(
            table, name="", has_names=False, patterns=[dataclasses.replace(p, name="") for p in table.patterns])
        rebuilt = decode_fit_workout(data)
        if rebuilt != expected:
            raise AssertionError(f"FIT file decodes to a different table:\n{rebuilt}\nwrote\n{expected}")
        return
    timed = [round(r.message.duration_time * 1000) for r in decoded.records
             if isinstance(r.message, WorkoutStepMessage) and r.message.duration_type == WorkoutStepDuration.TIME.value]
    if timed != [r.duration_ms for r in table.records if isinstance(r, StepRecord)]:
        raise AssertionError(f"FIT file decodes to step durations {timed}")


# --------------------------------------------------------------------------- JSON / CBOR

_LEFT_OUT = ("source", "warnings", "path")


def routine_model(routine: Any) -> Any:
    """The routine model as plain data (the dict that JSON and CBOR encode)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _LEFT_OUT}
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        return value

    return strip(dataclasses.asdict(routine))


# --------------------------------------------------------------------------- benchmark


FIT_VARIANTS: dict[str, dict[str, Any]] = {
    "fit": dict(names=False), "fit_names": dict(names=True),
    "fit_local0": dict(names=False, one_local_message=True),
    "fit_example": dict(names=True, one_local_message=True, min_string_size=FIT_EXAMPLE_STRING_SIZE),
    "fit_developer": dict(names=False, developer=True), "fit_developer_names": dict(names=True, developer=True),
    "fit_described": dict(names=False, developer=True, described=True),
    "fit_described_names": dict(names=True, developer=True, described=True),
}
"""Every FIT file measured, by key in :func:`measure`'s result (see METHOD)."""


def measure(routine_id: str) -> dict[str, Any]:
    """The sizes of one shipped routine in every format, with the FIT and HandCue breakdowns (fixed part, per step)."""
    import cbor2

    routine = load_routine(routine_id)
    plain = compile_routine(routine, names=False)
    named = compile_routine(routine, names=True)
    table = read_table(named)
    fit = {key: fit_workout(table, **options) for key, options in FIT_VARIANTS.items()}
    model = routine_model(routine)
    json_bytes = json.dumps(model, separators=(",", ":"), ensure_ascii=False).encode()
    cbor_bytes = cbor2.dumps(model)
    records = len(table.records)
    loops = sum(isinstance(r, LoopRecord) for r in table.records)
    segments = sum(len(p.segments) for p in table.patterns)
    handcue_breakdown = {
        "header": TABLE_HEADER_SIZE, "records": records * TABLE_RECORD_SIZE,
        "pattern descriptors": len(table.patterns) * PATTERN_DESCRIPTOR_SIZE, "segments": segments * SEGMENT_SIZE,
        "name section": len(named) - len(plain),
    }
    return {
        "routine": routine_id, "handcue": len(plain), "handcue_names": len(named),
        **{key: len(data) for key, (data, _) in fit.items()},
        "fit_breakdowns": {key: breakdown for key, (_, breakdown) in fit.items()},
        "json": len(json_bytes), "cbor": len(cbor_bytes), "records": records, "loops": loops,
        "patterns": len(table.patterns), "segments": segments,
        "fit_steps": sum(fit["fit"][1]["counts"].values()), "handcue_breakdown": handcue_breakdown,
    }


def _split(r: dict[str, Any], key: str) -> str:
    """A FIT file as fixed overhead + workout message + timed steps x size + repeat steps x size."""
    b = r["fit_breakdowns"][key]
    counts, sizes = b["counts"], b["sizes"]
    return (f"{b['fixed']} + {b['parts']['workout']} + {counts['timed steps']} x {sizes['timed steps']}"
            f" + {counts['repeat steps']} x {sizes['repeat steps']}")


def _handcue_split(r: dict[str, Any], names: bool) -> str:
    """A HandCue table as the same parts: header + patterns (and names) + records x 16."""
    b = r["handcue_breakdown"]
    patterns = b["pattern descriptors"] + b["segments"] + (b["name section"] if names else 0)
    steps = r["records"] - r["loops"]
    return f"{b['header']} + {patterns} + {steps} x {TABLE_RECORD_SIZE} + {r['loops']} x {TABLE_RECORD_SIZE}"


def run(routines: list[str] | None = None) -> Report:
    """Measure every shipped routine (or ``routines``); the targets are judged on :data:`TARGET_ROUTINE`."""
    ids = sorted(shipped_routines()) if routines is None else routines
    results = [measure(routine_id) for routine_id in ids]
    rows: list[Row] = []
    for r in results:
        dev_x, json_x = r["fit_developer"] / r["handcue"], r["json"] / r["handcue"]
        sizes = f"{r['handcue']} / {r['fit_developer']} / {r['fit_described']} / {r['fit']} / {r['json']} / {r['cbor']}"
        label = f"{r['routine']}: bytes HandCue / FIT+dev / FIT+dev described / FIT (less information) / JSON / CBOR"
        if r["routine"] != TARGET_ROUTINE:
            rows.append(Row(f"{label}; FIT+dev/HC, JSON/HC", f"{sizes}; {ratio(dev_x)}, {ratio(json_x)}"))
            continue
        rows.append(Row(label, sizes))
        named_x = r["fit_developer_names"] / r["handcue_names"]
        rows.append(Row(f"{r['routine']}: FIT+dev (same information, minimal)/HandCue", f"{ratio(dev_x)} (named: {ratio(named_x)})",
                        f">= {TARGET_FIT:g}x", dev_x >= TARGET_FIT))
        rows.append(Row(f"{r['routine']}: FIT+dev described (same information, plus field names, units, scales)/HandCue",
                        f"{ratio(r['fit_described'] / r['handcue'])} (named: {ratio(r['fit_described_names'] / r['handcue_names'])})"))
        rows.append(Row(f"{r['routine']}: FIT plain (less information: no technique code, iteration, cue patterns, ticks, warnings "
                        "or acknowledgements)/HandCue", f"{ratio(r['fit'] / r['handcue'])} (named: {ratio(r['fit_names'] / r['handcue_names'])})"))
        rows.append(Row(f"{r['routine']}: JSON/HandCue", ratio(json_x), f">= {TARGET_JSON:g}x", json_x >= TARGET_JSON))
        rows.append(Row(f"{r['routine']}: bytes = fixed + workout/patterns + timed steps + repeat steps",
                        f"FIT+dev {_split(r, 'fit_developer')}; FIT+dev described {_split(r, 'fit_described')}; "
                        f"HandCue {_handcue_split(r, False)}"))
    header = ["routine", "HandCue", "HandCue+names", "FIT+dev", "FIT+dev named", "FIT+dev described", "FIT+dev described named",
              "FIT", "FIT named", "FIT local 0", "JSON", "CBOR"]
    table_rows = [[r["routine"], *(r[k] for k in header_keys())] for r in results]
    details = ("Bytes (HC = HandCue `names=False`, HC+names = `names=True`; FIT+dev carries the same information as the "
               "table, FIT, FIT named and FIT local 0 carry less):\n\n" + md_table(header, table_rows))
    ratio_header = ["routine", "FIT+dev/HC", "FIT+dev named/HC+names", "FIT+dev described/HC", "FIT+dev described named/HC+names",
                    "FIT/HC", "FIT named/HC+names", "FIT local 0/HC", "JSON/HC", "CBOR/HC", "JSON/HC+names"]
    ratio_rows = [[r["routine"], ratio(r["fit_developer"] / r["handcue"]), ratio(r["fit_developer_names"] / r["handcue_names"]),
                   ratio(r["fit_described"] / r["handcue"]), ratio(r["fit_described_names"] / r["handcue_names"]),
                   ratio(r["fit"] / r["handcue"]), ratio(r["fit_names"] / r["handcue_names"]), ratio(r["fit_local0"] / r["handcue"]),
                   ratio(r["json"] / r["handcue"]), ratio(r["cbor"] / r["handcue"]), ratio(r["json"] / r["handcue_names"])]
                  for r in results]
    details += "\n\nRatios:\n\n" + md_table(ratio_header, ratio_rows)
    split_rows = []
    for r in results:
        split_rows.append([r["routine"], "HandCue", r["handcue"], TABLE_HEADER_SIZE, "-", _handcue_split(r, False)])
        split_rows.append([r["routine"], "HandCue+names", r["handcue_names"], TABLE_HEADER_SIZE, "-", _handcue_split(r, True)])
        for key, label in (("fit_developer", "FIT+dev"), ("fit_developer_names", "FIT+dev named"), ("fit_described", "FIT+dev described"),
                           ("fit", "FIT")):
            parts = r["fit_breakdowns"][key]["parts"]
            fixed = " + ".join(str(parts[p]) for p in FIXED_PARTS)
            split_rows.append([r["routine"], label, r[key], r["fit_breakdowns"][key]["fixed"], fixed, _split(r, key)])
    details += ("\n\nFixed overhead and cost per step: *fixed* is what a file costs before any content (HandCue: the header; "
                "FIT: " + ", ".join(FIXED_PARTS) + "); the split is fixed + the workout message (hands, done cue, patterns, names; "
                "HandCue: pattern descriptors and segments, name section) + timed steps x bytes each + repeat steps x bytes each "
                f"(HandCue: STEP records x {TABLE_RECORD_SIZE} + LOOP records x {TABLE_RECORD_SIZE}; a STEP record with a count "
                "is one timed and one repeat step in FIT):\n\n"
                + md_table(["routine", "format", "bytes", "fixed", "fixed: " + " + ".join(FIXED_PARTS), "split"], split_rows, "llrrll"))
    structure = [[r["routine"], r["records"], r["loops"], r["patterns"], r["segments"], r["fit_steps"]] for r in results]
    details += "\n\nWhat each encodes:\n\n" + md_table(["routine", "table records", "of which LOOP", "patterns", "segments", "FIT workout_steps"], structure)
    target = next((r for r in results if r["routine"] == TARGET_ROUTINE), None)
    if target is not None:
        hc = ", ".join(f"{k} {v}" for k, v in target["handcue_breakdown"].items())
        dev = target["fit_breakdowns"]["fit_developer"]
        details += (f"\n\nWhere the bytes of `{TARGET_ROUTINE}` go. HandCue: {hc} (= {target['handcue']} without names). "
                    "FIT+dev: " + ", ".join(f"{k} {v}" for k, v in dev["parts"].items()) + f" (= {target['fit_developer']}). "
                    f"For comparison, written the way fit-tool's workout example writes files (named, every message local 0, "
                    f"strings padded to {FIT_EXAMPLE_STRING_SIZE} bytes, no developer fields) the workout takes "
                    f"{target['fit_example']} bytes, {target['fit_example'] / target['handcue']:.2f}x the HandCue table without names.")
    return Report(NAME, TITLE, METHOD, rows, details, data={"routines": results})


def header_keys() -> tuple[str, ...]:
    """The result keys of the bytes table, in its column order."""
    return ("handcue", "handcue_names", "fit_developer", "fit_developer_names", "fit_described", "fit_described_names",
            "fit", "fit_names", "fit_local0", "json", "cbor")
