"""The simulated band driven layer by layer on a virtual clock."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from companion import compile_routine, load_routine, read_table, table_timeline
from firmware_sim.band import Band, Button
from firmware_sim.clock import VirtualClock
from firmware_sim.interpreter import Interpreter
from firmware_sim.local import storage_with
from protocol.constants import BandState, CueKind, SkipScope, TechniqueCode
from protocol.errors import BadStateError, TableFormatError
from protocol.table import encode_table
from protocol.timeline import cues_with_skips, timeline_with_skips

from ..conftest import SHIPPED, advance_to, run_to_end
from ..protocol.test_table import step_tables


def motor(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]


@pytest.mark.parametrize("routine", SHIPPED)
def test_simulator_timeline_equals_inspect_timeline(make_band, routine):
    band, clock, events = make_band(routine)
    band.start()
    run_to_end(band, clock)
    expected = [e.to_json() for e in table_timeline(read_table(compile_routine(load_routine(routine))))]
    assert motor(events) == expected
    assert band.status().state == BandState.FINISHED


def test_twenty_minute_routine_runs_fast_with_exact_cue_times(make_band):
    band, clock, events = make_band("full-hand-massage")
    started = time.perf_counter()
    band.start()
    run_to_end(band, clock)
    assert time.perf_counter() - started < 1.0
    starts = [e["t_ms"] for e in motor(events) if e["cue"] in ("switch", "done")]
    assert starts[0] == 555_000  # the second hand begins after 9 min 15 s
    assert starts[-1] == 1_110_600  # second pulse of the done cue 400/200/400
    assert band.status().elapsed_ms == 1_110_000


def test_pause_keeps_remaining_time_and_stops_motor(make_band):
    band, clock, events = make_band("nausea-pc6")
    band.start()
    clock.set(10_000)
    band.process()
    band.pause()
    before = band.status()
    clock.set(500_000)  # a long pause
    band.process()
    assert band.status().remaining_ms == before.remaining_ms == 590_000
    assert band.next_deadline() is None
    band.resume()
    clock.set(500_000 + 20_050)  # 30 s of routine time: the first tick, and its 50 ms pulse played
    band.process()
    ticks = [e for e in motor(events) if e["cue"] == "tick"]
    assert ticks and ticks[0]["t_ms"] == 30_000


def test_pause_cuts_the_playing_pattern(make_band):
    band, clock, events = make_band("nausea-pc6")
    band.start()
    clock.set(40)  # the 80 ms start pulse is half played
    band.process()
    band.pause()
    assert motor(events)[0]["duration_ms"] == 40


def test_skip_moves_to_the_next_step_with_its_cue(make_band):
    band, clock, events = make_band("full-hand-massage")
    band.start()
    clock.set(5_000)
    band.process()
    band.skip()
    clock.set(5_080)  # the start pulse of the next step has played
    band.process()
    status = band.status()
    assert status.step == 2 and status.technique == TechniqueCode.JOYSTICK
    assert status.remaining_ms == 1_110_000 - 45_000 - 80
    assert motor(events)[-1]["cue"] == "start" and motor(events)[-1]["t_ms"] == 5_000


def test_button_starts_pauses_resumes(make_band):
    band, _clock, _ = make_band()
    band.press(Button.PRESS)
    assert band.status().state == BandState.RUNNING
    band.press(Button.PRESS)
    assert band.status().state == BandState.PAUSED
    band.press(Button.PRESS)
    assert band.status().state == BandState.RUNNING


def test_commands_in_wrong_state_raise_named_errors(make_band):
    band, _, _ = make_band()
    with pytest.raises(BadStateError, match="idle"):
        band.pause()


def test_interpreter_rejects_corrupt_table_at_load():
    data = bytearray(compile_routine(load_routine("nausea-pc6")))
    data[-1] ^= 1
    with pytest.raises(TableFormatError):
        Interpreter(bytes(data), lambda cue: None)


def test_elapsed_stops_when_finished_after_a_skip(make_band):
    band, clock, _ = make_band("nausea-pc6")
    band.start()
    clock.set(60_000)
    band.process()
    band.skip(SkipScope.STEP)  # the only step record, both wrists: the routine ends now
    assert band.status().state == BandState.FINISHED
    clock.set(200_000)
    band.process()
    assert band.status().elapsed_ms == 60_000


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(table=step_tables())
def test_interpreter_matches_the_analytic_timeline_on_generated_tables(table):
    """Two independent implementations of SPEC's execution rules agree on any valid table."""
    assume(table.total_ms <= 2 * 3_600_000)  # keeps each example to a few thousand events
    data = encode_table(table)
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    events: list[dict] = []
    band.listeners.append(events.append)
    band.start()
    run_to_end(band, clock)
    assert motor(events) == [e.to_json() for e in table_timeline(read_table(data))]


# --------------------------------------------------------------------------
# Skip: to the next iteration (finger, hand, round), or past the step


def test_skip_on_the_left_wrist_goes_to_the_right_wrist(make_band):
    band, clock, events = make_band("nausea-pc6")
    band.start()
    advance_to(band, clock, 60_000)
    band.skip()
    status = band.status()
    assert (status.state, status.iteration, status.hand) == (BandState.RUNNING, 1, "right")
    assert status.last_cue == CueKind.SWITCH
    assert status.step_remaining_ms == 300_000  # the right wrist's full 5 min
    assert status.remaining_ms == 300_000  # 4 min of the left wrist were skipped
    cues = [e for e in events if e["event"] == "cue"]
    assert (cues[-1]["t_ms"], cues[-1]["cue"], cues[-1]["hand"]) == (60_000, "switch", "right")
    band.skip()  # the right wrist was the last iteration: now the routine ends
    assert band.status().state == BandState.FINISHED


def test_skip_goes_to_the_next_finger_and_skip_step_past_all_of_them(make_band):
    band, clock, _ = make_band("full-hand-massage")
    band.start()
    advance_to(band, clock, 137_000)  # flex_extend (record 3), thumb: 10 s per finger from 135 s
    assert (band.status().step, band.status().finger) == (3, "thumb")
    band.skip()
    status = band.status()
    assert (status.step, status.finger, status.last_cue, status.step_remaining_ms) == (3, "index", CueKind.NEXT, 10_000)
    assert status.remaining_ms == 1_110_000 - 137_000 - 8_000
    band.skip(SkipScope.STEP)
    status = band.status()
    assert (status.step, status.finger, status.last_cue) == (4, "thumb", CueKind.START)  # the next per-finger step
    assert status.remaining_ms == 1_110_000 - 137_000 - 8_000 - 40_000


def test_long_press_skips_to_the_next_iteration(make_band):
    band, clock, _ = make_band("nausea-pc6")
    band.start()
    advance_to(band, clock, 1_000)
    band.press(Button.LONG_PRESS)
    assert (band.status().state, band.status().hand) == (BandState.RUNNING, "right")


def band_run_with_skips(data: bytes, skips: list[tuple[int, SkipScope]]) -> tuple[list[dict], list[dict]]:
    """The simulated band playing ``data``, skipping at each routine time; its cue and motor events."""
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    events: list[dict] = []
    band.listeners.append(events.append)
    band.start()
    for t, scope in skips:
        advance_to(band, clock, t)
        if band.status().state == BandState.RUNNING:
            band.skip(scope)
    run_to_end(band, clock)
    cues = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "cue"]
    return cues, motor(events)


def expected_with_skips(data: bytes, skips: list[tuple[int, SkipScope]]) -> tuple[list[dict], list[dict]]:
    table = read_table(data)
    cues = [{"t_ms": c.t_ms, "cue": c.kind.name.lower(), "pattern": c.pattern, "step": c.step, "hand": c.hand, "finger": c.finger}
            for c in cues_with_skips(table, skips)]
    return cues, [e.to_json() for e in timeline_with_skips(table, skips)]


SKIP_SCRIPTS = {
    "one skip": [(61_000, SkipScope.ITERATION)],
    "one step skip": [(61_000, SkipScope.STEP)],
    "two skips at one instant": [(140_000, SkipScope.ITERATION), (140_000, SkipScope.ITERATION)],
    "iteration then step": [(137_000, SkipScope.ITERATION), (150_000, SkipScope.STEP), (150_000, SkipScope.ITERATION)],
    "at a boundary": [(45_000, SkipScope.ITERATION), (300_000, SkipScope.STEP)],
    "many": [(t, SkipScope(t // 1_000 % 2)) for t in range(10_000, 400_000, 37_000)],
}


@pytest.mark.parametrize("routine", SHIPPED)
@pytest.mark.parametrize("script", sorted(SKIP_SCRIPTS))
def test_band_skips_as_the_timeline_says(routine, script):
    """The band's interpreter and protocol.timeline.cues_with_skips (SPEC §12.6) agree on every skip."""
    data = compile_routine(load_routine(routine))
    skips = SKIP_SCRIPTS[script]
    assert band_run_with_skips(data, skips) == expected_with_skips(data, skips)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(table=step_tables(), data=st.data())
def test_band_skips_as_the_timeline_says_on_generated_tables(table, data):
    assume(table.total_ms <= 2 * 3_600_000)
    times = sorted(data.draw(st.lists(st.integers(0, table.total_ms), max_size=6)))
    skips = [(t, data.draw(st.sampled_from(SkipScope))) for t in times]
    encoded = encode_table(table)
    assert band_run_with_skips(encoded, skips) == expected_with_skips(encoded, skips)
