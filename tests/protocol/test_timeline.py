"""What a band feels like: cues and motor events computed from a table.

Every expectation is written out as a literal, computed by hand from the
routine files and the rules in ``protocol/timeline.py``.
"""

from __future__ import annotations

import collections
import itertools
import subprocess
import sys
import tracemalloc
from collections import Counter

import pytest

from companion import compile_routine, load_routine, read_table
from protocol.constants import FINGERS, CueKind, Hands, Iterate, Limits, SkipScope, TechniqueCode
from protocol.iterations import iterations
from protocol.table import CuePattern, LoopRecord, PatternSegment, StepRecord, StepTable, build_tree, decode_table, encode_table
from protocol.timeline import Cue, MotorEvent, cues_with_skips, skip_target_ms, table_cues, table_timeline


def pat(*on_off: int, name: str = "", amplitude: int = 100) -> CuePattern:
    return CuePattern(tuple(PatternSegment(amplitude if i % 2 == 0 else 0, ms) for i, ms in enumerate(on_off)), name)


def on_off(table: StepTable, index: int) -> tuple[int, ...]:
    return tuple(s.duration_ms for s in table.patterns[index].segments)


def shipped(routine_id: str) -> StepTable:
    return read_table(compile_routine(load_routine(routine_id)))


def cue_rows(table: StepTable) -> list[tuple]:
    return [(c.t_ms, c.kind.name.lower(), c.hand, on_off(table, c.pattern)) for c in table_cues(table)]


# --------------------------------------------------------------------------
# nausea-pc6: 5 min per wrist, tick every 30 s, warn 10 s before the end

START, TICK, WARN, SWITCH, DONE = (80,), (50,), (60, 100, 60, 100, 60), (300, 150, 80), (400, 200, 400)

NAUSEA_CUES = [
    (0, "start", "left", START),
    (30_000, "tick", "left", TICK),
    (60_000, "tick", "left", TICK),
    (90_000, "tick", "left", TICK),
    (120_000, "tick", "left", TICK),
    (150_000, "tick", "left", TICK),
    (180_000, "tick", "left", TICK),
    (210_000, "tick", "left", TICK),
    (240_000, "tick", "left", TICK),
    (270_000, "tick", "left", TICK),
    (290_000, "warn", "left", WARN),
    (300_000, "switch", "right", SWITCH),
    (330_000, "tick", "right", TICK),
    (360_000, "tick", "right", TICK),
    (390_000, "tick", "right", TICK),
    (420_000, "tick", "right", TICK),
    (450_000, "tick", "right", TICK),
    (480_000, "tick", "right", TICK),
    (510_000, "tick", "right", TICK),
    (540_000, "tick", "right", TICK),
    (570_000, "tick", "right", TICK),
    (590_000, "warn", "right", WARN),
    (600_000, "done", None, DONE),
]

# (t_ms, amplitude, duration_ms, cue, hand): one row per motor-on segment
NAUSEA_EVENTS = [
    (0, 100, 80, "start", "left"),
    (30_000, 100, 50, "tick", "left"),
    (60_000, 100, 50, "tick", "left"),
    (90_000, 100, 50, "tick", "left"),
    (120_000, 100, 50, "tick", "left"),
    (150_000, 100, 50, "tick", "left"),
    (180_000, 100, 50, "tick", "left"),
    (210_000, 100, 50, "tick", "left"),
    (240_000, 100, 50, "tick", "left"),
    (270_000, 100, 50, "tick", "left"),
    (290_000, 100, 60, "warn", "left"),
    (290_160, 100, 60, "warn", "left"),
    (290_320, 100, 60, "warn", "left"),
    (300_000, 100, 300, "switch", "right"),
    (300_450, 100, 80, "switch", "right"),
    (330_000, 100, 50, "tick", "right"),
    (360_000, 100, 50, "tick", "right"),
    (390_000, 100, 50, "tick", "right"),
    (420_000, 100, 50, "tick", "right"),
    (450_000, 100, 50, "tick", "right"),
    (480_000, 100, 50, "tick", "right"),
    (510_000, 100, 50, "tick", "right"),
    (540_000, 100, 50, "tick", "right"),
    (570_000, 100, 50, "tick", "right"),
    (590_000, 100, 60, "warn", "right"),
    (590_160, 100, 60, "warn", "right"),
    (590_320, 100, 60, "warn", "right"),
    (600_000, 100, 400, "done", None),
    (600_600, 100, 400, "done", None),
]


def test_nausea_pc6_cues():
    assert cue_rows(shipped("nausea-pc6")) == NAUSEA_CUES


def test_nausea_pc6_cues_name_the_step_and_no_finger():
    cues = list(table_cues(shipped("nausea-pc6")))
    assert [c.step for c in cues] == [0] * 22 + [None]
    assert {c.finger for c in cues} == {None}


def test_nausea_pc6_motor_events():
    events = list(table_timeline(shipped("nausea-pc6")))
    assert [(e.t_ms, e.amplitude, e.duration_ms, e.cue.text_id, e.hand) for e in events] == NAUSEA_EVENTS


def test_nausea_pc6_without_names_has_the_same_timeline():
    named = list(table_timeline(shipped("nausea-pc6")))
    bare = list(table_timeline(read_table(compile_routine(load_routine("nausea-pc6"), names=False))))
    assert bare == named


def test_headache_li4_has_the_same_timing_as_nausea_pc6():
    rows = cue_rows(shipped("headache-li4"))
    assert rows == NAUSEA_CUES


# --------------------------------------------------------------------------
# full-hand-massage: 9 steps per hand, left then right, 555 s per hand

HAND_MS = 555_000
# (record index, start within the hand in ms, iteration length in ms) of the four per-finger steps
PER_FINGER_STEPS = [(3, 135_000, 10_000), (4, 185_000, 15_000), (5, 260_000, 15_000), (6, 335_000, 10_000)]
STEP_STARTS = [(1, 0), (2, 45_000), (3, 135_000), (4, 185_000), (5, 260_000), (6, 335_000), (7, 385_000), (8, 460_000), (9, 510_000)]


@pytest.fixture(scope="module")
def massage() -> StepTable:
    return shipped("full-hand-massage")


@pytest.fixture(scope="module")
def massage_cues(massage) -> list[Cue]:
    return list(table_cues(massage))


def test_full_hand_massage_cue_counts(massage_cues):
    counts = Counter(c.kind for c in massage_cues)
    assert counts == {
        CueKind.START: 2 * 9 - 1,  # the right hand's first start is replaced by the switch
        CueKind.SWITCH: 1,
        CueKind.NEXT: 2 * 4 * 4,  # 4 per-finger steps, 4 next-finger cues each, per hand
        CueKind.TICK: 2 * (1 + 1 + 5 + 3),  # warm_up halfway, joystick halfway, flex_extend per finger, palm_spread x3
        CueKind.WARN: 2 * 2,  # joystick, handshake
        CueKind.DONE: 1,
    }
    assert len(massage_cues) == 75


def test_full_hand_massage_total_duration(massage, massage_cues):
    assert massage.total_ms == 2 * HAND_MS == 1_110_000
    assert massage_cues[-1] == Cue(1_110_000, CueKind.DONE, massage.done_pattern, None, None, None)
    done_events = [e for e in table_timeline(massage) if e.cue == CueKind.DONE]
    assert [(e.t_ms, e.duration_ms) for e in done_events] == [(1_110_000, 400), (1_110_600, 400)]


def test_full_hand_massage_switch_replaces_the_second_hand_start(massage, massage_cues):
    at_switch = [c for c in massage_cues if c.t_ms == HAND_MS]
    assert len(at_switch) == 1
    cue = at_switch[0]
    assert cue.kind == CueKind.SWITCH
    assert massage.patterns[cue.pattern].name == "switch"
    assert on_off(massage, cue.pattern) == SWITCH
    assert (cue.step, cue.hand, cue.finger) == (1, "right", None)  # located at the warm_up step of the right hand
    assert [c.t_ms for c in massage_cues if c.kind == CueKind.SWITCH] == [HAND_MS]


def test_full_hand_massage_every_step_starts_with_a_cue(massage, massage_cues):
    by_time = {c.t_ms: c for c in massage_cues}
    for hand_index, hand in enumerate(("left", "right")):
        for record, start in STEP_STARTS:
            cue = by_time[hand_index * HAND_MS + start]
            assert (cue.step, cue.hand) == (record, hand)
            expected = CueKind.SWITCH if (hand, record) == ("right", 1) else CueKind.START
            assert cue.kind == expected


@pytest.mark.parametrize("hand_index, hand", [(0, "left"), (1, "right")])
@pytest.mark.parametrize("record, start, length", PER_FINGER_STEPS)
def test_full_hand_massage_every_finger_is_cued(massage, massage_cues, hand_index, hand, record, start, length):
    by_time = {c.t_ms: c for c in massage_cues}
    begin = hand_index * HAND_MS + start
    first = by_time[begin]
    assert (first.kind, first.step, first.hand, first.finger) == (CueKind.START, record, hand, "thumb")
    for k, finger in enumerate(FINGERS[1:], start=1):
        cue = by_time[begin + k * length]
        assert (cue.kind, cue.step, cue.hand, cue.finger) == (CueKind.NEXT, record, hand, finger)
        assert massage.patterns[cue.pattern].name == "next"
        assert on_off(massage, cue.pattern) == (80, 120, 80)
    # nothing else marks a new finger: exactly 4 NEXT cues for this step and hand
    nexts = [c for c in massage_cues if c.step == record and c.hand == hand and c.kind == CueKind.NEXT]
    assert [c.finger for c in nexts] == ["index", "middle", "ring", "little"]


def test_full_hand_massage_flex_extend_ticks_once_per_finger(massage_cues):
    ticks = [(c.t_ms, c.finger) for c in massage_cues if c.step == 3 and c.kind == CueKind.TICK and c.hand == "left"]
    assert ticks == [(140_000, "thumb"), (150_000, "index"), (160_000, "middle"), (170_000, "ring"), (180_000, "little")]


def test_full_hand_massage_halfway_cues(massage, massage_cues):
    warm_up = [c for c in massage_cues if c.step == 1 and c.kind == CueKind.TICK]
    assert [(c.t_ms, c.hand) for c in warm_up] == [(22_500, "left"), (577_500, "right")]
    joystick = [c for c in massage_cues if c.step == 2 and c.kind == CueKind.TICK]
    assert [(c.t_ms, massage.patterns[c.pattern].name) for c in joystick] == [(90_000, "next"), (645_000, "next")]


def test_desk_break_merge_at_the_second_hand():
    # SPEC §13.6: the loop's SWITCH (6) and warm_up's START (3) meet at 155 s; only SWITCH fires.
    cues = list(table_cues(shipped("desk-break")))
    window = [(c.t_ms, c.kind, c.step, c.hand) for c in cues if 150_000 <= c.t_ms <= 170_000]
    assert window == [(155_000, CueKind.SWITCH, 1, "right"), (165_000, CueKind.TICK, 1, "right")]


# --------------------------------------------------------------------------
# Merging coincident cues: the highest kind wins, silent slots never mask


def small(records, patterns, *, hands=Hands.LEFT, done=None) -> StepTable:
    return StepTable(hands=hands, records=records, patterns=patterns, done_pattern=done, name="small")


P_START, P_TICK, P_WARN, P_NEXT, P_DONE = 0, 1, 2, 3, 4
VOCAB = [pat(80, name="start"), pat(50, name="tick"), pat(60, 100, 60, name="warn"), pat(80, 120, 80, name="next"), pat(400, 200, 400, name="done")]


def cues_of(table: StepTable) -> list[tuple]:
    return [(c.t_ms, c.kind, c.pattern, c.step, c.hand, c.finger) for c in table_cues(table)]


def test_merge_tick_and_warn_at_the_same_ms_keeps_warn():
    t = small([StepRecord(TechniqueCode.PALM_SPREAD, 2000, tick_every_ms=1000, warn_before_ms=1000,
                          start_pattern=P_START, tick_pattern=P_TICK, warn_pattern=P_WARN)], VOCAB, done=P_DONE)
    assert cues_of(t) == [
        (0, CueKind.START, P_START, 0, "left", None),
        (1000, CueKind.WARN, P_WARN, 0, "left", None),
        (2000, CueKind.DONE, P_DONE, None, None, None),
    ]


def test_merge_round_and_start_keeps_round_located_at_the_step():
    t = small([LoopRecord(Iterate.NONE, 2, 1, round_pattern=P_NEXT), StepRecord(TechniqueCode.COMBING, 1000, start_pattern=P_START)], VOCAB)
    assert cues_of(t) == [
        (0, CueKind.START, P_START, 1, "left", None),  # entering a loop (round 0) fires no round cue
        (1000, CueKind.ROUND, P_NEXT, 1, "left", None),
    ]


def test_merge_finger_loop_round_is_next_and_binds_the_finger():
    t = small([LoopRecord(Iterate.FINGER, 3, 1, round_pattern=P_NEXT), StepRecord(TechniqueCode.KEY_GRIP, 1000, start_pattern=P_START)], VOCAB)
    assert cues_of(t) == [
        (0, CueKind.START, P_START, 1, "left", "thumb"),
        (1000, CueKind.NEXT, P_NEXT, 1, "left", "index"),
        (2000, CueKind.NEXT, P_NEXT, 1, "left", "middle"),
    ]


def test_merge_hand_loop_round_is_switch_and_binds_the_hand():
    t = small([LoopRecord(Iterate.HAND, 2, 1, round_pattern=P_NEXT), StepRecord(TechniqueCode.HANDSHAKE, 1000, start_pattern=P_START)], VOCAB,
              hands=Hands.RIGHT_THEN_LEFT)
    assert cues_of(t) == [(0, CueKind.START, P_START, 1, "right", None), (1000, CueKind.SWITCH, P_NEXT, 1, "left", None)]


def test_merge_silent_round_does_not_mask_the_start():
    t = small([LoopRecord(Iterate.NONE, 2, 1, round_pattern=None), StepRecord(TechniqueCode.COMBING, 1000, start_pattern=P_START)], VOCAB)
    assert cues_of(t) == [(0, CueKind.START, P_START, 1, "left", None), (1000, CueKind.START, P_START, 1, "left", None)]


def test_merge_all_silent_fires_nothing():
    t = small([StepRecord(TechniqueCode.COMBING, 1000, count=2)], VOCAB)
    assert list(table_cues(t)) == []
    assert list(table_timeline(t)) == []


def test_step_repeat_without_iterate_fires_next_cues():
    t = small([StepRecord(TechniqueCode.COMBING, 1000, count=3, start_pattern=P_START, next_pattern=P_NEXT)], VOCAB)
    assert [(c.t_ms, c.kind) for c in table_cues(t)] == [(0, CueKind.START), (1000, CueKind.NEXT), (2000, CueKind.NEXT)]


def test_ticks_restart_each_iteration_and_never_fall_on_the_boundaries():
    t = small([StepRecord(TechniqueCode.FLEX_EXTEND, 3000, Iterate.FINGER, 2, tick_every_ms=1000, start_pattern=P_START,
                          next_pattern=P_NEXT, tick_pattern=P_TICK)], VOCAB)
    assert [(c.t_ms, c.kind, c.finger) for c in table_cues(t)] == [
        (0, CueKind.START, "thumb"), (1000, CueKind.TICK, "thumb"), (2000, CueKind.TICK, "thumb"),
        (3000, CueKind.NEXT, "index"), (4000, CueKind.TICK, "index"), (5000, CueKind.TICK, "index"),
    ]


# --------------------------------------------------------------------------
# Preemption: a cue starting during a pattern cuts it short


def events_of(table: StepTable) -> list[tuple]:
    return [(e.t_ms, e.amplitude, e.duration_ms, e.cue.text_id) for e in table_timeline(table)]


def test_preemption_spec_example():
    # SPEC §13.7: warning 60/100/60/100/60 at 1800 ms, next step's start at 2000 ms.
    patterns = [pat(80, name="start"), pat(60, 100, 60, 100, 60, name="warn"), pat(50, name="tick"), pat(400, 200, 400, name="done")]
    t = small([StepRecord(TechniqueCode.HANDSHAKE, 2000, warn_before_ms=200, start_pattern=0, warn_pattern=1),
               StepRecord(TechniqueCode.COMBING, 1000, start_pattern=2)], patterns, done=3)
    assert events_of(t) == [
        (0, 100, 80, "start"),
        (1800, 100, 60, "warn"),
        (1960, 100, 40, "warn"),  # cut at 2000
        (2000, 100, 50, "start"),  # the third warn pulse never plays
        (3000, 100, 400, "done"),
        (3600, 100, 400, "done"),  # DONE plays out past the end of the routine
    ]


def test_preemption_during_a_gap_drops_the_rest():
    # start 300/200/300 at 0; the warning fires at 400 ms, inside the gap: the second pulse never plays
    patterns = [pat(300, 200, 300, name="long", amplitude=70), pat(50, name="tick")]
    t = small([StepRecord(TechniqueCode.COMBING, 1000, warn_before_ms=600, start_pattern=0, warn_pattern=1)], patterns)
    assert events_of(t) == [(0, 70, 300, "start"), (400, 100, 50, "warn")]


def test_preemption_truncates_the_first_segment():
    patterns = [pat(300, 200, 300, name="long"), pat(50, name="tick")]
    t = small([StepRecord(TechniqueCode.COMBING, 1000, warn_before_ms=900, start_pattern=0, warn_pattern=1)], patterns)
    assert events_of(t) == [(0, 100, 100, "start"), (100, 100, 50, "warn")]


def test_pattern_plays_to_its_end_past_a_silent_step_boundary():
    patterns = [pat(400, 200, 400, name="done")]
    t = small([StepRecord(TechniqueCode.COMBING, 1000, warn_before_ms=500, warn_pattern=0), StepRecord(TechniqueCode.COMBING, 1000)], patterns)
    # the warning starts at 500 ms, the next step (silent start) begins at 1000 ms: nothing cuts the pattern
    assert events_of(t) == [(500, 100, 400, "warn"), (1100, 100, 400, "warn")]


def test_motor_events_keep_segment_amplitudes():
    pattern = CuePattern((PatternSegment(40, 100), PatternSegment(90, 100), PatternSegment(0, 100), PatternSegment(100, 30)), "ramp")
    t = small([StepRecord(TechniqueCode.COMBING, 1000, start_pattern=0)], [pattern])
    assert events_of(t) == [(0, 40, 100, "start"), (100, 90, 100, "start"), (300, 100, 30, "start")]


def test_motor_event_json_shape():
    event = next(table_timeline(shipped("nausea-pc6")))
    assert event == MotorEvent(0, 100, 80, CueKind.START, 0, 0, "left", None)
    assert event.to_json() == {"t_ms": 0, "amplitude": 100, "duration_ms": 80, "cue": "start", "pattern": 0, "step": 0, "hand": "left", "finger": None}


# --------------------------------------------------------------------------
# The walk over iterations (protocol.iterations), shared by timeline, inspect, plot, card and safety check


def test_iterations_walk_a_loop_pass_before_its_body_with_rounds_hands_and_fingers():
    records = [
        LoopRecord(Iterate.NONE, 2, 2),
        LoopRecord(Iterate.HAND, 2, 1),
        StepRecord(TechniqueCode.KEY_GRIP, 1000, Iterate.FINGER, 2, start_pattern=0),
    ]
    walked = [(it.item.index, it.index, it.t_ms, it.hand, it.finger, it.rounds, it.depth, it.is_step)
              for it in iterations(build_tree(records), Hands.LEFT_THEN_RIGHT)]
    assert walked == [
        (0, 0, 0, None, None, (1,), 0, False),
        (1, 0, 0, "left", None, (1,), 1, False),
        (2, 0, 0, "left", "thumb", (1,), 2, True),
        (2, 1, 1000, "left", "index", (1,), 2, True),
        (1, 1, 2000, "right", None, (1,), 1, False),
        (2, 0, 2000, "right", "thumb", (1,), 2, True),
        (2, 1, 3000, "right", "index", (1,), 2, True),
        (0, 1, 4000, None, None, (2,), 0, False),
        (1, 0, 4000, "left", None, (2,), 1, False),
        (2, 0, 4000, "left", "thumb", (2,), 2, True),
        (2, 1, 5000, "left", "index", (2,), 2, True),
        (1, 1, 6000, "right", None, (2,), 1, False),
        (2, 0, 6000, "right", "thumb", (2,), 2, True),
        (2, 1, 7000, "right", "index", (2,), 2, True),
    ]


def test_iterations_bind_the_one_hand_of_a_one_hand_routine():
    walked = [(it.t_ms, it.hand) for it in iterations(build_tree([StepRecord(TechniqueCode.COMBING, 1000, count=2)]), Hands.RIGHT)]
    assert walked == [(0, "right"), (1000, "right")]


@pytest.mark.parametrize("routine_id", ["desk-break", "full-hand-massage", "headache-li4", "nausea-pc6"])
def test_iterations_of_a_routine_and_of_its_table_are_the_same(routine_id):
    """The routine model (steps and blocks) and its compiled records walk alike: card and safety check see what the band plays."""
    routine = load_routine(routine_id)
    table = shipped(routine_id)

    def shape(walk):
        return [(it.index, it.t_ms, it.duration_ms if it.is_step else None, it.hand, it.finger, it.rounds, it.depth, it.is_step) for it in walk]

    from_table = shape(iterations(build_tree(table.records), table.hands))
    assert shape(iterations(routine.steps, routine.hands)) == from_table
    assert len(from_table) > len(table.records)


# --------------------------------------------------------------------------
# Skips (SPEC §12.6): the skipped stretch is cut out of the timeline


def test_skip_on_the_left_wrist_cuts_to_the_right_wrist():
    table = shipped("nausea-pc6")
    assert skip_target_ms(table, 60_000, SkipScope.ITERATION) == 300_000  # the end of the left wrist
    assert skip_target_ms(table, 60_000, SkipScope.STEP) == 600_000  # the end of both wrists
    assert skip_target_ms(table, 600_000, SkipScope.ITERATION) is None  # nothing plays at the end
    rows = [(c.t_ms, c.kind.name.lower(), c.hand) for c in cues_with_skips(table, [(60_000, SkipScope.ITERATION)])]
    assert rows == [
        (0, "start", "left"), (30_000, "tick", "left"), (60_000, "tick", "left"),  # the tick due at the skip fires first
        (60_000, "switch", "right"),
        *[(60_000 + k * 30_000, "tick", "right") for k in range(1, 10)],
        (350_000, "warn", "right"),
        (360_000, "done", None),
    ]
    assert [(c.t_ms, c.kind.name.lower()) for c in cues_with_skips(table, [(60_000, SkipScope.STEP)])][-2:] == [(60_000, "tick"), (60_000, "done")]


def test_two_skips_at_one_instant_skip_two_fingers():
    table = shipped("full-hand-massage")
    # flex_extend (record 3) gives each finger 10 s from 135 s; at 137 s the thumb plays
    cues = list(cues_with_skips(table, [(137_000, SkipScope.ITERATION), (137_000, SkipScope.ITERATION)]))
    at_skip = [(c.kind, c.step, c.finger) for c in cues if c.t_ms == 137_000]
    assert at_skip == [(CueKind.NEXT, 3, "index"), (CueKind.NEXT, 3, "middle")]
    assert cues[-1].t_ms == 1_110_000 - 8_000 - 10_000  # the rest of the thumb and all of the index finger


# --------------------------------------------------------------------------
# Streaming: a table of a few dozen bytes can play for weeks


def weeks_long(count: int = Limits.MAX_COUNT) -> StepTable:
    """Loops at ``count`` around loops at ``count`` around a ticking minute: at 255 it plays 1,084 h (3.9 million cues)."""
    records = [LoopRecord(Iterate.NONE, count, 2, round_pattern=P_NEXT), LoopRecord(Iterate.NONE, count, 1),
               StepRecord(TechniqueCode.PALM_SPREAD, 60_000, tick_every_ms=1000, warn_before_ms=5000,
                          start_pattern=P_START, tick_pattern=P_TICK, warn_pattern=P_WARN)]
    return decode_table(encode_table(small(records, VOCAB, done=P_DONE)))


def test_a_weeks_long_table_streams_its_first_events():
    long, short = weeks_long(), weeks_long(2)
    assert long.total_ms > 1000 * 3600 * 1000
    head = list(itertools.islice(table_timeline(long), 100))
    assert head == list(itertools.islice(table_timeline(short), 100))  # the same start, whatever the loop counts
    assert [(c.t_ms, c.kind) for c in itertools.islice(table_cues(long), 3)] == [(0, CueKind.START), (1000, CueKind.TICK), (2000, CueKind.TICK)]


def test_the_timeline_holds_constant_memory():
    """Consuming a long prefix keeps the peak allocation to a few hundred KiB, not the 1.8 GiB a list of every event took."""
    events = table_timeline(weeks_long())
    tracemalloc.start()
    try:
        last = collections.deque(itertools.islice(events, 50_000), maxlen=1).pop()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last.t_ms > 10 * 60_000
    assert peak < 2 * 1024 * 1024


def test_streamed_cues_equal_a_sorted_expansion():
    """The stream needs no sort: it equals every candidate stably sorted by time (ticks and a warning interleaved)."""
    t = small([LoopRecord(Iterate.FINGER, 2, 2, round_pattern=P_NEXT), LoopRecord(Iterate.NONE, 2, 1),
               StepRecord(TechniqueCode.PALM_SPREAD, 5000, tick_every_ms=1000, warn_before_ms=2500, start_pattern=P_START,
                          tick_pattern=P_TICK, warn_pattern=P_WARN)], VOCAB, done=P_DONE)
    rows = [(c.t_ms, c.kind) for c in table_cues(t)]
    assert rows == sorted(rows, key=lambda row: row[0])
    assert rows[:6] == [(0, CueKind.START), (1000, CueKind.TICK), (2000, CueKind.TICK), (2500, CueKind.WARN), (3000, CueKind.TICK), (4000, CueKind.TICK)]
    assert rows[-1] == (t.total_ms, CueKind.DONE)


@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_timeline_into_head_exits_cleanly(tmp_path, as_json):
    """``handcue inspect --timeline | head`` on a weeks-long table: the first lines, exit 0, no traceback, no wait for the rest."""
    path = tmp_path / "weeks.hcue"
    path.write_bytes(encode_table(weeks_long()))
    command = [sys.executable, "-c", "from companion.cli import cli; cli()", "inspect", "--timeline", *(["--json"] if as_json else []), str(path)]
    handcue = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert handcue.stdout is not None
    first = [handcue.stdout.readline() for _ in range(5)]
    handcue.stdout.close()  # as head does once it has its lines
    _, err = handcue.communicate(timeout=60)  # a guard against a hang, not a timing claim
    assert handcue.returncode == 0, err
    assert err == b""
    assert (b'"t_ms": 0' in b"".join(first)) if as_json else first[1].split()[0] == b"0"
