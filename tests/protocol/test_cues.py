"""protocol.cues: the facts of every cue kind, which the compiler and the views iterate over."""

from __future__ import annotations

import dataclasses

from companion.card import PRIORITY_NOTE
from companion.routine import StepCues
from protocol.constants import CueKind
from protocol.cues import CUES, STEP_CUE_SLOTS, Fires
from protocol.table import StepRecord


def test_every_cue_kind_has_facts_and_a_distinct_plot_marker():
    assert set(CUES) == set(CueKind)
    assert all(facts.kind == kind for kind, facts in CUES.items())
    assert len({facts.marker for facts in CUES.values()}) == len(CueKind)


def test_each_step_cue_slot_names_fields_the_routine_model_and_the_step_record_both_have():
    record_fields = {f.name for f in dataclasses.fields(StepRecord)}
    routine_fields = {f.name for f in dataclasses.fields(StepCues)}
    assert [facts.slot for facts in STEP_CUE_SLOTS] == ["start", "next", "tick", "warn"]
    for facts in STEP_CUE_SLOTS:
        assert facts.pattern_field in record_fields and facts.slot in routine_fields
        assert (facts.timing is not None) == (facts.fires in (Fires.EVERY, Fires.BEFORE_END))
        if facts.timing:
            assert facts.timing in record_fields and facts.timing in routine_fields


def test_the_cards_priority_note_lists_the_kinds_from_highest_to_lowest():
    assert PRIORITY_NOTE.endswith(": finish > switch hands > next round > next finger or repeat > step start > warning > tick.")
