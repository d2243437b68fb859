"""The FIT files of the compactness benchmark: FIT+dev holds the very table, minimal means no strings and one definition each."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.compactness import FIXED_PARTS, check_fit, decode_fit_workout, fit_workout
from companion import compile_routine, load_routine, read_table
from protocol.constants import Hands, Iterate, TechniqueCode
from protocol.table import CuePattern, LoopRecord, PatternSegment, StepRecord, StepTable, encode_table


def shipped(routine_id: str = "full-hand-massage") -> StepTable:
    return read_table(compile_routine(load_routine(routine_id), names=True))


def unusual() -> StepTable:
    """What no shipped routine has: acknowledgements, nested loops, a loop of one round, a step count after a loop."""
    step = StepRecord(technique=TechniqueCode.JOYSTICK, duration_ms=12_300, tick_every_ms=2_500, warn_before_ms=1_000,
                      start_pattern=0, tick_pattern=1, warn_pattern=0)
    records = [
        LoopRecord(iterate=Iterate.HAND, count=2, body_count=4, round_pattern=1),
        LoopRecord(iterate=Iterate.NONE, count=1, body_count=2),
        dataclasses.replace(step, count=3, ack=True),
        dataclasses.replace(step, technique=TechniqueCode.COMBING, iterate=Iterate.FINGER, count=5, next_pattern=1),
        dataclasses.replace(step, warn_pattern=None, warn_before_ms=0),
        StepRecord(technique=TechniqueCode.WARM_UP, duration_ms=5_000, count=2),
    ]
    patterns = [CuePattern((PatternSegment(100, 80),), "start"), CuePattern((PatternSegment(70, 300), PatternSegment(0, 150), PatternSegment(40, 60)), "tick")]
    table = StepTable(hands=Hands.RIGHT_THEN_LEFT, records=records, patterns=patterns, done_pattern=1, name="Unusual", done_ack=True)
    return read_table(encode_table(table))  # a table a band would take, as the benchmark reads it


def without_names(table: StepTable) -> StepTable:
    return dataclasses.replace(table, name="", has_names=False, patterns=[dataclasses.replace(p, name="") for p in table.patterns])


@pytest.mark.parametrize("described", [False, True])
@pytest.mark.parametrize("table", [shipped(), shipped("headache-li4"), unusual()], ids=["full-hand-massage", "headache-li4", "unusual"])
def test_fit_with_developer_fields_decodes_to_the_same_table(table, described):
    named, _ = fit_workout(table, names=True, developer=True, described=described)
    assert decode_fit_workout(named) == table
    plain, _ = fit_workout(table, names=False, developer=True, described=described)
    assert decode_fit_workout(plain) == without_names(table)


@pytest.mark.parametrize("change", [
    lambda t: dataclasses.replace(t, done_ack=not t.done_ack),
    lambda t: dataclasses.replace(t, records=[dataclasses.replace(t.records[2], ack=False) if i == 2 else r for i, r in enumerate(t.records)]),
    lambda t: dataclasses.replace(t, records=[dataclasses.replace(t.records[1], round_pattern=0) if i == 1 else r for i, r in enumerate(t.records)]),
    lambda t: dataclasses.replace(t, patterns=[t.patterns[0], CuePattern((PatternSegment(70, 300), PatternSegment(0, 160), PatternSegment(40, 60)), "tick")]),
], ids=["done_ack", "ack", "round pattern", "segment"])
def test_the_check_sees_a_field_the_file_does_not_hold(change):
    data, _ = fit_workout(unusual(), names=True, developer=True)
    with pytest.raises(AssertionError, match="decodes to a different table"):
        check_fit(data, change(unusual()), names=True, developer=True)


def test_minimal_developer_fields_have_no_strings_and_each_definition_once():
    from fit_tool.base_type import BaseType
    from fit_tool.fit_file import FitFile
    from fit_tool.profile.messages.field_description_message import FieldDescriptionMessage

    data, _ = fit_workout(shipped(), names=False, developer=True)
    records = FitFile.from_bytes(data).records
    definitions = [r.message for r in records if r.header.is_definition]
    assert len({d.local_id for d in definitions}) == len(definitions)
    assert not [f for d in definitions for f in d.field_definitions if f.base_type == BaseType.STRING]
    descriptions = [r.message for r in records if isinstance(r.message, FieldDescriptionMessage)]
    assert descriptions and all(d.field_name is None and d.units is None for d in descriptions)

    described, _ = fit_workout(shipped(), names=False, developer=True, described=True)
    records = FitFile.from_bytes(described).records
    definitions = [r.message for r in records if r.header.is_definition]
    assert len({d.local_id for d in definitions}) == len(definitions)  # names of every length, one definition
    names = [r.message.field_name for r in records if isinstance(r.message, FieldDescriptionMessage)]
    assert "tick_every" in names and "ack" in names and len(names) == len(descriptions)


def test_a_repeated_definition_fails_the_check():
    table = shipped()
    data, _ = fit_workout(table, names=False, one_local_message=True)
    with pytest.raises(AssertionError, match="defines a local message more than once"):
        check_fit(data, table, names=False, developer=False)


def test_breakdown_separates_fixed_overhead_from_steps():
    table = shipped()
    data, breakdown = fit_workout(table, names=False, developer=True)
    parts, counts, sizes = breakdown["parts"], breakdown["counts"], breakdown["sizes"]
    assert sum(parts.values()) == len(data) and breakdown["fixed"] == sum(parts[p] for p in FIXED_PARTS)
    assert counts == {"timed steps": 9, "repeat steps": 5}  # 9 STEP records, 4 of them with a count, and 1 LOOP
    assert parts["timed steps"] == counts["timed steps"] * sizes["timed steps"]
    assert parts["repeat steps"] == counts["repeat steps"] * sizes["repeat steps"]
    assert breakdown["fixed"] + parts["workout"] + parts["timed steps"] + parts["repeat steps"] == len(data)
