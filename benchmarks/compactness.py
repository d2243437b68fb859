"""Compactness: bytes of each shipped routine as a HandCue table, a Garmin FIT workout, JSON and CBOR."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from companion import compile_routine, load_routine, read_table, shipped_routines
from protocol.constants import PATTERN_DESCRIPTOR_SIZE, SEGMENT_SIZE, TABLE_HEADER_SIZE, TABLE_RECORD_SIZE
from protocol.table import LoopRecord, Node, StepTable, build_tree

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
* **FIT**: a Garmin FIT workout file written with `fit-tool` from the decoded table
  (`protocol.table.build_tree` of `read_table(...)`): a `file_id` message (type workout,
  manufacturer development, product 0, and the serial number and creation time that fit-tool's
  validator requires), a `workout` message (sport training, `num_valid_steps`)
  and one `workout_step` per STEP record (`duration_type` time, `duration_value` = one
  iteration, `target_type` open). Repetition becomes a `workout_step` with `duration_type`
  `repeat_until_steps_cmplt` pointing back at the first repeated step, with `target_value` the
  count: one after every STEP record with `count > 1` (per finger, per hand, repeat), one after
  every LOOP body (blocks). Each layout gets its own local message number, so no definition
  message is written twice (*FIT local 0* writes everything as local message 0, fit-tool's
  default, and so repeats a definition message at every change of layout). *FIT* (minimal)
  has no strings; *FIT named* adds `wkt_name` (routine name) and `wkt_step_name` (technique
  id) and is compared with HandCue `names=True`. FIT has no
  fields for the ticks, warnings and vibration patterns a HandCue table carries, so the FIT file
  holds **less** information than the HandCue table: the FIT ratios favour FIT. **FIT+dev** is the
  like-for-like figure: the same workout plus FIT developer fields (a `developer_data_id` message, one
  `field_description` per field, written by fit-tool) carrying what the table holds and a FIT workout
  has no field for: on each timed step the technique code, the hand/finger iteration, the tick interval,
  the warning lead time and the start/next/tick/warn cue patterns; on each repeat step the loop's
  iteration and round pattern; on the workout the hands, the done pattern and every cue pattern
  (segment counts, and each segment's amplitude and duration as the table stores them). Every FIT file
  is decoded back with `fit_tool.fit_file.FitFile`, checked to hold the expected steps and
  passes `fit_tool.validation.validate_fit_file` (wire, profile and file-type conformance).
* **JSON**: `json.dumps(dataclasses.asdict(routine), separators=(",", ":"))` of the routine
  model (`companion.routine.Routine` with its `Step`/`Block` tree, `StepCues` and the
  `CuePattern`s it uses), leaving out `source` (a local file path), `warnings` (checker output)
  and each step's `path` (derived from its position). **CBOR**: `cbor2.dumps` of the same dict.

Targets ({TARGET_ROUTINE}): HandCue (`names=False`) at least {TARGET_FIT:g}x smaller than FIT (minimal) and
at least {TARGET_JSON:g}x smaller than JSON. The `names=True` ratios are reported beside them."""


# --------------------------------------------------------------------------- FIT


# Developer fields that carry what a FIT workout has no field for: (name, base type name, array size).
DEV_STEP_FIELDS = (("technique", "UINT8", 1), ("iterate", "UINT8", 1), ("tick_every_ms", "UINT32", 1), ("warn_before_ms", "UINT32", 1),
                   ("cue_patterns", "UINT8", 4))
"""On each timed step: technique code, hand/finger iteration, tick and warning timing, start/next/tick/warn pattern (255 = none)."""
DEV_REPEAT_FIELDS = (("iterate", "UINT8", 1), ("round_pattern", "UINT8", 1))
DEV_WORKOUT_FIELDS = (("hands", "UINT8", 1), ("done_pattern", "UINT8", 1), ("pattern_lengths", "UINT8", 0), ("pattern_segments", "UINT8", 0))
"""On the workout: the hands, the done pattern, and every cue pattern (segment counts; amplitude and duration bytes as in the table)."""
NO_PATTERN = 255


def _developer_fields(table: StepTable) -> tuple[list[tuple[str, str, int]], Any, Any, Any]:
    """The developer field layout, and functions giving a timed step's, a repeat step's and the workout's field values."""
    from protocol.layout import layout_of
    from protocol.table import PatternSegment

    lengths = [len(p.segments) for p in table.patterns]
    segment_layout = layout_of(PatternSegment)  # the bytes the table stores for a segment
    segments = b"".join(segment_layout.build(seg) for p in table.patterns for seg in p.segments)
    layout = [*DEV_STEP_FIELDS, *DEV_REPEAT_FIELDS, *DEV_WORKOUT_FIELDS]

    def pattern(index: int | None) -> int:
        return NO_PATTERN if index is None else index

    def step(record: Any) -> list[tuple[int, list[int]]]:
        cues = [pattern(record.start_pattern), pattern(record.next_pattern), pattern(record.tick_pattern), pattern(record.warn_pattern)]
        return [(0, [int(record.technique)]), (1, [int(record.iterate)]), (2, [record.tick_every_ms]), (3, [record.warn_before_ms]), (4, cues)]

    def repeat(record: Any) -> list[tuple[int, list[int]]]:
        if record is None:
            return [(5, [0]), (6, [NO_PATTERN])]
        return [(5, [int(record.iterate)]), (6, [pattern(getattr(record, "round_pattern", None))])]

    def workout() -> list[tuple[int, list[int]]]:
        return [(7, [int(table.hands)]), (8, [pattern(table.done_pattern)]), (9, lengths or [0]), (10, list(segments) or [0])]

    return layout, step, repeat, workout


def fit_workout(table: StepTable, *, names: bool, one_local_message: bool = False, min_string_size: int = 0,
                developer: bool = False) -> tuple[bytes, dict[str, int]]:
    """The table as a FIT workout file; returns (bytes, breakdown of bytes by part).

    ``one_local_message`` writes every message as local message 0 (fit-tool's default), so
    the builder writes a new definition message whenever the layout changes;
    ``min_string_size`` pads every string field to at least that many bytes;
    ``developer`` adds developer fields for everything else the table holds (cue
    patterns, ticks, warnings, iteration), so the file carries the same information.
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

    steps: list[WorkoutStepMessage] = []
    parts: tuple[Any, Any, Any, Any] = _developer_fields(table) if developer else ([], None, None, None)
    layout, step_values, repeat_values, workout_values = parts

    def dev(values: list[tuple[int, list[int]]] | None) -> list[Any]:
        fields = []
        for number, items in values or []:
            base = getattr(BaseType, layout[number][1])
            field = DeveloperField(developer_data_index=0, field_id=number, size=len(items) * base.size, base_type=base)
            for index, item in enumerate(items):
                field.set_value(index, item)
            fields.append(field)
        return fields

    def repeat(first: int, count: int, loop: Any = None) -> None:
        message = WorkoutStepMessage(local_id=LOCAL_REPEAT_STEP, developer_fields=dev(repeat_values(loop) if developer else None))
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
            else:
                message = WorkoutStepMessage(local_id=LOCAL_TIMED_STEP, developer_fields=dev(step_values(record) if developer else None))
                message.message_index = len(steps)
                if names:
                    message.workout_step_name = record.technique.text_id
                message.duration_type = WorkoutStepDuration.TIME
                message.duration_time = record.duration_ms / 1000
                message.target_type = WorkoutStepTarget.OPEN
                steps.append(message)
            if record.count > 1:
                repeat(first, record.count, record if isinstance(record, LoopRecord) else None)

    emit(build_tree(table.records))
    file_id = FileIdMessage(local_id=LOCAL_FILE_ID)
    file_id.type = FileType.WORKOUT
    file_id.manufacturer = Manufacturer.DEVELOPMENT.value
    file_id.product = 0
    file_id.serial_number = FIT_SERIAL_NUMBER
    file_id.time_created = FIT_TIME_CREATED
    workout = WorkoutMessage(local_id=LOCAL_WORKOUT, developer_fields=dev(workout_values() if developer else None))
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
        developer_id.application_id = bytes(16)  # a 16-byte application UUID
        developer_id.developer_data_index = 0
        builder.add(developer_id)
        for number, (name, base_name, _) in enumerate(layout):
            description = FieldDescriptionMessage(local_id=LOCAL_FIELD_DESCRIPTION)
            description.developer_data_index = 0
            description.field_definition_number = number
            description.fit_base_type_id = getattr(BaseType, base_name)
            description.field_name = name
            builder.add(description)
    builder.add(workout)
    builder.add_all(steps)
    data = builder.build_bytes()
    definitions = sum(len(r.to_bytes()) for r in builder.records if r.header.is_definition)
    messages = sum(len(r.to_bytes()) for r in builder.records if not r.header.is_definition)
    breakdown = {"file header + CRC": len(data) - definitions - messages, "definition messages": definitions, "data messages": messages,
                 "workout_step messages": len(steps)}
    _check_fit(data, len(steps))
    return data, breakdown


def _check_fit(data: bytes, step_count: int) -> None:
    """Decode the file again and run fit-tool's conformance checks (wire, profile, file type)."""
    from fit_tool.fit_file import FitFile
    from fit_tool.profile.messages.workout_step_message import WorkoutStepMessage
    from fit_tool.validation import validate_fit_file

    decoded = FitFile.from_bytes(data)
    found = sum(1 for r in decoded.records if isinstance(r.message, WorkoutStepMessage))
    if found != step_count:
        raise AssertionError(f"FIT file decodes to {found} workout steps, wrote {step_count}")
    report = validate_fit_file(decoded)
    if report.has_errors:
        raise AssertionError(f"FIT file fails fit-tool validation: {[f.message for f in report.errors]}")


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


def measure(routine_id: str) -> dict[str, Any]:
    import cbor2

    routine = load_routine(routine_id)
    plain = compile_routine(routine, names=False)
    named = compile_routine(routine, names=True)
    table = read_table(named)
    fit_minimal, fit_breakdown = fit_workout(table, names=False)
    fit_named, _ = fit_workout(table, names=True)
    fit_local0, _ = fit_workout(table, names=False, one_local_message=True)
    fit_example, _ = fit_workout(table, names=True, one_local_message=True, min_string_size=FIT_EXAMPLE_STRING_SIZE)
    fit_developer, developer_breakdown = fit_workout(table, names=False, developer=True)
    fit_developer_named, _ = fit_workout(table, names=True, developer=True)
    model = routine_model(routine)
    json_bytes = json.dumps(model, separators=(",", ":"), ensure_ascii=False).encode()
    cbor_bytes = cbor2.dumps(model)
    records = len(table.records)
    segments = sum(len(p.segments) for p in table.patterns)
    handcue_breakdown = {
        "header": TABLE_HEADER_SIZE, "records": records * TABLE_RECORD_SIZE,
        "pattern descriptors": len(table.patterns) * PATTERN_DESCRIPTOR_SIZE, "segments": segments * SEGMENT_SIZE,
        "name section": len(named) - len(plain),
    }
    return {
        "routine": routine_id, "handcue": len(plain), "handcue_names": len(named), "fit": len(fit_minimal), "fit_names": len(fit_named),
        "fit_local0": len(fit_local0), "fit_example": len(fit_example), "fit_developer": len(fit_developer),
        "fit_developer_names": len(fit_developer_named), "fit_developer_breakdown": developer_breakdown,
        "json": len(json_bytes), "cbor": len(cbor_bytes), "records": records, "loops": sum(isinstance(r, LoopRecord) for r in table.records),
        "patterns": len(table.patterns), "segments": segments, "fit_steps": fit_breakdown.pop("workout_step messages"),
        "fit_breakdown": fit_breakdown, "handcue_breakdown": handcue_breakdown,
    }


def run(routines: list[str] | None = None) -> Report:
    ids = sorted(shipped_routines()) if routines is None else routines
    results = [measure(routine_id) for routine_id in ids]
    rows: list[Row] = []
    for r in results:
        fit_x, json_x = r["fit"] / r["handcue"], r["json"] / r["handcue"]
        sizes = f"{r['handcue']} / {r['fit']} / {r['json']} / {r['cbor']}"
        if r["routine"] != TARGET_ROUTINE:
            rows.append(Row(f"{r['routine']}: bytes HandCue / FIT / JSON / CBOR; FIT/HC, JSON/HC", f"{sizes}; {ratio(fit_x)}, {ratio(json_x)}"))
            continue
        rows.append(Row(f"{r['routine']}: bytes HandCue / FIT / JSON / CBOR", sizes))
        rows.append(Row(f"{r['routine']}: FIT/HandCue", ratio(fit_x), f">= {TARGET_FIT:g}x", fit_x >= TARGET_FIT))
        rows.append(Row(f"{r['routine']}: JSON/HandCue", ratio(json_x), f">= {TARGET_JSON:g}x", json_x >= TARGET_JSON))
        rows.append(Row(f"{r['routine']}: FIT with developer fields (same information)/HandCue",
                        f"{r['fit_developer']} / {r['handcue']} bytes = {ratio(r['fit_developer'] / r['handcue'])} "
                        f"(named: {ratio(r['fit_developer_names'] / r['handcue_names'])})"))
    header = ["routine", "HandCue", "HandCue+names", "FIT", "FIT local 0", "FIT named", "FIT+dev", "FIT named+dev", "JSON", "CBOR", "FIT/HC",
              "FIT local 0/HC", "FIT+dev/HC", "JSON/HC", "CBOR/HC", "FIT named/HC+names", "FIT named+dev/HC+names", "JSON/HC+names"]
    table_rows = [
        [r["routine"], r["handcue"], r["handcue_names"], r["fit"], r["fit_local0"], r["fit_names"], r["fit_developer"], r["fit_developer_names"],
         r["json"], r["cbor"], ratio(r["fit"] / r["handcue"]), ratio(r["fit_local0"] / r["handcue"]), ratio(r["fit_developer"] / r["handcue"]),
         ratio(r["json"] / r["handcue"]), ratio(r["cbor"] / r["handcue"]), ratio(r["fit_names"] / r["handcue_names"]),
         ratio(r["fit_developer_names"] / r["handcue_names"]), ratio(r["json"] / r["handcue_names"])]
        for r in results
    ]
    details = "Bytes (HC = HandCue `names=False`, HC+names = `names=True`):\n\n" + md_table(header, table_rows)
    structure = [[r["routine"], r["records"], r["loops"], r["patterns"], r["segments"], r["fit_steps"]] for r in results]
    details += "\n\nWhat each encodes:\n\n" + md_table(["routine", "table records", "of which LOOP", "patterns", "segments", "FIT workout_steps"], structure)
    target = next((r for r in results if r["routine"] == TARGET_ROUTINE), None)
    if target is not None:
        hc = ", ".join(f"{k} {v}" for k, v in target["handcue_breakdown"].items())
        fit = ", ".join(f"{k} {v}" for k, v in target["fit_breakdown"].items())
        details += (f"\n\nWhere the bytes of `{TARGET_ROUTINE}` go. HandCue: {hc} (= {target['handcue']} without names). "
                    f"FIT minimal: {fit} (= {target['fit']}). For comparison, written the way fit-tool's workout example "
                    f"writes files (named, every message local 0, strings padded to {FIT_EXAMPLE_STRING_SIZE} bytes) the same workout "
                    f"takes {target['fit_example']} bytes, {target['fit_example'] / target['handcue']:.2f}x the HandCue table without names. "
                    f"FIT with developer fields (the same information as the table): "
                    + ", ".join(f"{k} {v}" for k, v in target["fit_developer_breakdown"].items() if k != "workout_step messages")
                    + f" (= {target['fit_developer']}).")
    return Report(NAME, TITLE, METHOD, rows, details, data={"routines": results})
