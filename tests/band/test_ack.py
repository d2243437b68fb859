"""Acknowledgement (table format 2, SPEC.md §12.10): the band repeats a cue until the wearer presses, with a cap.

Every test runs the simulated band on a virtual clock and asserts exact
routine times; the band is held to :func:`protocol.timeline.table_timeline`
with the matching assumption about when the wearer presses.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from companion import compile_routine, read_table, table_timeline
from companion.routine import checked, parse_routine
from firmware_sim.band import Band, Button
from firmware_sim.clock import VirtualClock
from firmware_sim.history import Outcome
from firmware_sim.local import storage_with
from protocol.constants import Ack, BandState, SkipScope
from protocol.table import StepRecord, encode_table
from protocol.timeline import ack_points, played_ms, table_cues

from ..conftest import advance_to, run_to_end
from ..protocol.test_table import step_tables

ROUTINE = """
name = "ack"
hands = "left"
{finish_ack}
[[steps]]
technique = "warm_up"     # 10 s, a tick at half time
duration = 10
{ack}
[[steps]]
technique = "palm_spread"
duration = 20
tick_every = 5
"""


def table_bytes(*, ack: bool = True, finish_ack: bool = False) -> bytes:
    text = ROUTINE.format(ack="ack = true" if ack else "", finish_ack="finish_ack = true" if finish_ack else "")
    return compile_routine(checked(*parse_routine(text, "ack.toml")))


def motor(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]


def acks(events: list[dict]) -> list[tuple[int, str, str]]:
    return [(e["t_ms"], e["cue"], e["outcome"]) for e in events if e["event"] == "ack"]


def starts(events: list[dict], cue: str = "start") -> list[int]:
    """When the band fired cues of kind ``cue`` (its cue events, one per cue whatever its pattern's segments)."""
    return [e["t_ms"] for e in events if e["event"] == "cue" and e["cue"] == cue]


def make(data: bytes) -> tuple[Band, VirtualClock, list[dict]]:
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    events: list[dict] = []
    band.listeners.append(events.append)
    return band, clock, events


def run_pressing(band: Band, clock: VirtualClock, events: list[dict], wait_ms: int | None) -> None:
    """Play to the end; the wearer presses ``wait_ms`` after the first cue of every acknowledgement point (None: never)."""
    presses: list[int] = []
    seen = 0
    while True:
        for event in events[seen:]:
            if event["event"] == "ack" and event["outcome"] == "waiting" and wait_ms is not None:
                presses.append(clock.now_ms() + wait_ms)  # nothing was paused: routine time = band time
        seen = len(events)
        deadline = band.next_deadline()
        if presses and (deadline is None or presses[0] <= deadline):
            advance_to(band, clock, presses.pop(0))
            band.press(Button.PRESS)
        elif deadline is None:
            return
        else:
            clock.set(deadline)
            band.process()


# --------------------------------------------------------------------------
# Format


def test_only_a_routine_with_ack_writes_format_2():
    assert table_bytes(ack=False)[8] == 1
    data = table_bytes()
    assert data[8] == 2 and data[9] & 0x02 == 0
    assert data[24 + 14] == 0x01 and data[24 + 16 + 14] == 0x00  # the first step's flags byte, the second's
    finish = table_bytes(ack=False, finish_ack=True)
    assert finish[8] == 2 and finish[9] == 0x03  # names + ACK_DONE
    table = read_table(finish)
    assert table.done_ack and not any(r.ack for r in table.records)
    assert encode_table(table) == finish


def test_format_1_reads_the_ack_bits_as_reserved():
    """A format 1 table with the ack bits set (reserved there) plays as if they were 0, everywhere."""
    plain = bytearray(table_bytes(ack=False))
    plain[24 + 14] = 0xFF
    plain[9] |= 0x02
    from tests.protocol.test_c_reference import seal

    data = seal(plain)
    table = read_table(data)
    assert not table.done_ack and not any(r.ack for r in table.records if isinstance(r, StepRecord))
    band, clock, events = make(data)
    band.start()
    run_to_end(band, clock)
    assert motor(events) == [e.to_json() for e in table_timeline(table)]
    assert acks(events) == []


# --------------------------------------------------------------------------
# The band


def test_never_pressed_repeats_every_5_s_then_goes_on_and_records_missed():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 59_999)
    assert starts(events) == list(range(0, 60_000, Ack.REPEAT_MS))  # 12 plays: the cue and 11 repeats
    status = band.status()  # the step's time has not begun: STATUS says the band waits, 1 ms before it gives up
    assert band.ack_pending and (status.state, status.step_remaining_ms, status.gives_up_in_ms) == (BandState.WAITING, 1, 1)
    advance_to(band, clock, 60_000)
    assert not band.ack_pending
    assert acks(events) == [(0, "start", "waiting"), (60_000, "start", "missed")]
    assert (band.acks_given, band.acks_missed) == (0, 1)
    run_to_end(band, clock)
    halfway = [e["t_ms"] for e in motor(events) if e["cue"] == "tick"]
    assert halfway[0] == 65_000  # warm_up's half-time cue: 5 s into its time, which began at the cap
    assert starts(events)[-1] == 70_000  # the next step begins after 60 s of waiting + 10 s
    assert band.status().elapsed_ms == 60_000 + 30_000


def test_press_ends_the_wait_and_the_step_time_runs_from_the_press():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 7_000)
    band.press(Button.PRESS)
    assert acks(events)[-1] == (7_000, "start", "given") and (band.acks_given, band.acks_missed) == (1, 0)
    status = band.status()
    assert status.state == BandState.RUNNING and status.step_remaining_ms == 10_000 and status.remaining_ms == 30_000
    run_to_end(band, clock)
    assert starts(events) == [0, 5_000, 17_000]
    assert motor(events) == [e.to_json() for e in table_timeline(read_table(table_bytes()), ack_wait_ms=7_000)]


def test_a_press_without_a_pending_acknowledgement_pauses_as_before():
    band, clock, _events = make(table_bytes(ack=False))
    band.start()
    assert not band.acknowledge()
    advance_to(band, clock, 1_000)
    band.press(Button.PRESS)
    assert band.status().state == BandState.PAUSED


@pytest.mark.parametrize("wait_ms", [0, 4_999, 5_000, 12_300, 59_999, None])
@pytest.mark.parametrize("finish_ack", [False, True])
def test_band_trace_equals_the_timeline_for_the_same_press(wait_ms, finish_ack):
    data = table_bytes(finish_ack=finish_ack)
    band, clock, events = make(data)
    band.start()
    run_pressing(band, clock, events, wait_ms)
    table = read_table(data)
    assert motor(events) == [e.to_json() for e in table_timeline(table, ack_wait_ms=wait_ms)]
    points = list(ack_points(table, wait_ms))
    ended = [a for a in acks(events) if a[2] != "waiting"]
    assert [(p.t_ms + p.wait_ms, p.kind.text_id, "given" if p.given else "missed") for p in points] == ended
    assert band.status().state == BandState.FINISHED
    assert band.interpreter is not None and band.interpreter.finished_at == played_ms(table, wait_ms)


def test_pressed_at_the_first_cue_plays_like_the_table_without_ack():
    assert list(table_cues(read_table(table_bytes(finish_ack=True)))) == list(table_cues(read_table(table_bytes(ack=False))))


def test_finish_ack_repeats_done_until_pressed_then_finishes_and_records_the_session():
    band, clock, events = make(table_bytes(ack=False, finish_ack=True))
    band.start()
    advance_to(band, clock, 40_000)
    assert starts(events, "done") == [30_000, 35_000, 40_000]
    status = band.status()
    assert status.state == BandState.WAITING and status.step is None and band.ack_pending
    band.press(Button.PRESS)
    assert band.status().state == BandState.FINISHED and band.status().elapsed_ms == 40_000
    [record] = band.storage.history.sessions()
    assert record.outcome == Outcome.FINISHED and record.played_ms == 40_000
    assert (band.acks_given, band.acks_missed) == (1, 0)
    assert (record.acks_given, record.acks_missed) == (1, 0)  # the session history counts it too


def test_finish_ack_never_pressed_finishes_at_the_cap():
    band, clock, events = make(table_bytes(ack=False, finish_ack=True))
    band.start()
    run_to_end(band, clock)
    assert starts(events, "done") == list(range(30_000, 90_000, 5_000))
    assert band.status().state == BandState.FINISHED and band.status().elapsed_ms == 90_000
    assert acks(events)[-1] == (90_000, "done", "missed")
    [record] = band.storage.history.sessions()
    assert (record.acks_given, record.acks_missed) == (0, 1)


def test_session_record_counts_acks_given_and_missed_but_not_cancelled():
    band, clock, _events = make(table_bytes(finish_ack=True))
    band.start()
    advance_to(band, clock, 60_000)  # the first step's wait reaches its cap: missed
    advance_to(band, clock, 90_000 + 2_000)  # the finish waits; pressed 2 s into it: given
    band.press(Button.PRESS)
    band.start()  # a second session: its wait is ended by a stop, which counts neither way
    band.stop()
    first, second = band.storage.history.sessions()
    assert (first.outcome, first.acks_given, first.acks_missed) == (Outcome.FINISHED, 1, 1)
    assert (second.outcome, second.acks_given, second.acks_missed) == (Outcome.STOPPED, 0, 0)


# --------------------------------------------------------------------------
# Controls during a wait


def test_pause_during_a_wait_freezes_its_repeats_and_cap():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 6_000)
    band.pause()
    advance_to(band, clock, 100_000)  # a long pause: no repeat, no cap
    assert starts(events) == [0, 5_000]
    band.press(Button.PRESS)  # resumes (a paused band resumes first)
    assert band.status().state == BandState.WAITING and band.ack_pending
    advance_to(band, clock, 100_000 + 4_000)  # routine time 10 s: the next repeat
    assert starts(events) == [0, 5_000, 10_000]
    band.acknowledge()
    run_to_end(band, clock)
    assert starts(events)[-1] == 20_000  # pressed at routine time 10 s, then the 10 s step


def test_skip_during_a_wait_cancels_it_and_goes_to_the_next_step():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 3_000)
    band.skip()
    assert acks(events)[-1] == (3_000, "start", "cancelled") and not band.ack_pending
    assert (band.acks_given, band.acks_missed) == (0, 0)
    status = band.status()
    assert status.step == 1 and status.remaining_ms == 20_000
    run_to_end(band, clock)
    assert starts(events) == [0, 3_000] and band.status().elapsed_ms == 23_000


def test_skip_step_and_stop_during_a_wait():
    band, clock, events = make(table_bytes(finish_ack=True))
    band.start()
    band.acknowledge()
    advance_to(band, clock, 12_000)
    band.skip(SkipScope.STEP)  # the last step: DONE fires and its wait begins
    assert band.ack_pending and starts(events, "done") == [12_000]
    advance_to(band, clock, 13_000)
    band.stop()
    assert band.status().state == BandState.IDLE and not band.ack_pending
    assert band.interpreter is not None and band.interpreter.ack is None
    band.start()  # a restart waits again at the first step
    assert band.ack_pending


def test_skip_during_the_finish_wait_finishes():
    band, clock, events = make(table_bytes(ack=False, finish_ack=True))
    band.start()
    advance_to(band, clock, 31_000)
    band.skip()
    assert band.status().state == BandState.FINISHED and acks(events)[-1] == (31_000, "done", "cancelled")


# --------------------------------------------------------------------------
# Generated tables


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(table=step_tables(), flags=st.lists(st.booleans(), min_size=64, max_size=64), done=st.booleans(),
       wait_ms=st.sampled_from([0, 2_500, 5_000, 31_000, None]))
def test_band_equals_timeline_on_generated_ack_tables(table, flags, done, wait_ms):
    assume(table.total_ms <= 3_600_000)
    records = [replace(r, ack=flags[i % 64]) if isinstance(r, StepRecord) and r.start_pattern is not None else r for i, r in enumerate(table.records)]
    table = replace(table, records=records, done_ack=done and table.done_pattern is not None)
    assume(table.format_version == 2)
    data = encode_table(table)
    band, clock, events = make(data)
    band.start()
    run_pressing(band, clock, events, wait_ms)
    assume(len(events) < 20_000)
    assert motor(events) == [e.to_json() for e in table_timeline(read_table(data), ack_wait_ms=wait_ms)]


def test_stop_during_a_wait_closes_it_as_cancelled_and_the_record_counts_the_time_waited():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 65_000)  # the wait was missed at 60 s; the step then ran 5 s
    band.stop()
    [record] = band.storage.history.sessions()
    assert record.played_ms == 65_000  # as STATUS counted it: waits add to the routine's 30 s
    band.start()
    advance_to(band, clock, 65_000 + 7_000)  # a second session, stopped while its first wait goes on
    band.stop()
    assert acks(events)[-2:] == [(0, "start", "waiting"), (7_000, "start", "cancelled")]
    assert band.storage.history.sessions()[-1].played_ms == 7_000


def test_a_press_when_the_cap_is_due_is_not_lost():
    band, clock, events = make(table_bytes())
    band.start()
    advance_to(band, clock, 59_000)
    clock.set(61_000)  # the cap fell due at 60 s; nothing has looked at the band since
    band.press(Button.PRESS)
    assert acks(events)[-1] == (60_000, "start", "missed")
    assert band.status().state == BandState.PAUSED  # the wait was over: the press pauses, as a press does
