"""PREVIEW: the band plays one pattern now at the strength asked, leaves its routine alone, and refuses while a routine runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from companion.techniques import CUE_VOCABULARY
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.constants import BandState, CueKind, Status
from protocol.messages import PreviewRequest, StartRequest, decode_message, encode_request
from protocol.strength import scaled_amplitude
from protocol.table import PatternSegment

from ..conftest import run_to_end

# on 100 % 80 ms, off 120 ms, on 50 % 80 ms: a full and a soft pulse, to see both scaled
PATTERN = (PatternSegment(100, 80), PatternSegment(0, 120), PatternSegment(50, 80))


def previews(events: list[dict[str, Any]]) -> list[tuple[int, int, int, str | None, int]]:
    return [(e["t_ms"], e["amplitude"], e["duration_ms"], e["cue"], e["strength"]) for e in events if e["event"] == "motor" and e.get("preview")]


def ask(handler: ProtocolHandler, request: PreviewRequest | StartRequest, request_id: int = 1) -> tuple[Status, str]:
    answer = decode_message(handler.handle("serial", encode_request(request, request_id)))
    return answer.status, answer.reason


def play_out(band: Band, clock: VirtualClock) -> None:
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()


def test_preview_plays_now_scaled_on_a_band_without_routine_and_stores_nothing():
    clock = VirtualClock(5_000)
    storage = Storage(Flash(FLASH_SIZE))
    band = Band(storage, clock)
    events: list[dict[str, Any]] = []
    band.listeners.append(events.append)
    handler = ProtocolHandler(band)

    assert ask(handler, PreviewRequest(strength=40, kind=CueKind.NEXT, segments=PATTERN)) == (Status.OK, "")
    play_out(band, clock)
    # on band time from the moment it was asked; 50 % at 40 % is 20 (the felt floor)
    assert previews(events) == [(5_000, 40, 80, "next", 40), (5_200, scaled_amplitude(50, 40), 80, "next", 40)]
    assert scaled_amplitude(50, 40) == 20
    assert (band.strength, storage.active, band.status().state) == (100, None, BandState.IDLE)


def test_preview_leaves_the_routine_and_its_session_alone(make_band):
    band, clock, events = make_band("nausea-pc6")
    handler = ProtocolHandler(band)
    before = band.storage.active
    assert ask(handler, PreviewRequest(strength=70, kind=None, segments=PATTERN)) == (Status.OK, "")
    play_out(band, clock)
    assert [(a, c) for _, a, _, c, _ in previews(events)] == [(70, None), (35, None)]
    assert band.storage.active == before and band.status().state == BandState.IDLE and band.status().cues == 0
    # the routine then plays exactly as it would have
    fresh, fresh_clock, fresh_events = make_band("nausea-pc6")
    for b, c in ((band, clock), (fresh, fresh_clock)):
        b.start()
        run_to_end(b, c)
    routine = [e for e in events if e["event"] == "motor" and not e.get("preview")]
    assert routine == [e for e in fresh_events if e["event"] == "motor"] and routine


def test_preview_is_refused_while_a_routine_runs_and_allowed_while_paused(make_band):
    band, clock, events = make_band("nausea-pc6")
    handler = ProtocolHandler(band)
    assert ask(handler, StartRequest(), 1)[0] == Status.OK
    status, reason = ask(handler, PreviewRequest(strength=70, kind=CueKind.TICK, segments=PATTERN), 2)
    assert status == Status.BAD_STATE and "running" in reason
    band.pause()
    assert ask(handler, PreviewRequest(strength=70, kind=CueKind.TICK, segments=PATTERN), 3) == (Status.OK, "")
    clock.advance(100)  # resuming 100 ms in cuts the preview short: the routine owns the motor again
    band.resume()
    play_out(band, clock)
    assert previews(events) == [(0, 70, 80, "tick", 70)]  # its second pulse (from 200 ms) never played
    assert band.status().state == BandState.FINISHED


@pytest.mark.parametrize(
    ("strength", "segments", "why"),
    [
        (10, PATTERN, "10 %"),
        (101, PATTERN, "101 %"),
        (70, (PatternSegment(100, 80), PatternSegment(0, 50), PatternSegment(100, 80)), "gap of 50 ms"),
        (70, (PatternSegment(0, 100), PatternSegment(100, 80)), "start and end with the motor on"),
        (70, (PatternSegment(100, 600), PatternSegment(0, 200), PatternSegment(100, 600)), "1000 ms"),
        (70, (), "0 segments"),
    ],
)
def test_preview_outside_the_cue_limits_is_bad_request_and_plays_nothing(strength, segments, why):
    band = Band(Storage(Flash(FLASH_SIZE)), VirtualClock())
    events: list[dict[str, Any]] = []
    band.listeners.append(events.append)
    status, reason = ask(ProtocolHandler(band), PreviewRequest(strength=strength, kind=None, segments=segments))
    assert status == Status.BAD_REQUEST and why in reason
    assert band.next_deadline() is None and previews(events) == []


def test_a_retried_preview_plays_once():
    clock = VirtualClock()
    band = Band(Storage(Flash(FLASH_SIZE)), clock)
    events: list[dict[str, Any]] = []
    band.listeners.append(events.append)
    handler = ProtocolHandler(band)
    request = PreviewRequest(strength=100, kind=CueKind.DONE, segments=PATTERN)
    assert ask(handler, request, 9) == ask(handler, request, 9) == (Status.OK, "")
    play_out(band, clock)
    assert len(previews(events)) == 2  # the two on segments of one play


def test_spec_preview_examples_are_the_bytes_on_the_wire(make_band):
    spec = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()
    found = re.findall(r"^PREVIEW[^:\n]*:\s+([0-9A-F][0-9A-F ]+[0-9A-F])", spec, flags=re.M)
    next_cue = PreviewRequest(strength=70, kind=CueKind.NEXT, segments=CUE_VOCABULARY["next"].pattern.segments)
    band, _clock, _events = make_band("nausea-pc6")
    handler = ProtocolHandler(band)
    idle_answer = handler.handle("serial", encode_request(next_cue, 0x32))
    handler.handle("serial", encode_request(StartRequest(), 0x33))
    running_answer = handler.handle("serial", encode_request(next_cue, 0x34))
    assert [bytes.fromhex(line) for line in found] == [
        encode_request(next_cue, 0x32), idle_answer, running_answer[:3] + bytes([0x32]) + running_answer[4:6],
    ]


def test_preview_is_gated_on_a_paired_band():
    from firmware_sim.pairing import OPEN_OPCODES
    from protocol.constants import Opcode

    assert Opcode.PREVIEW not in OPEN_OPCODES  # a stranger in range must not buzz a paired wearer (SPEC §17.12, §21.5)


def test_a_skip_that_finishes_a_paused_routine_cuts_the_preview_for_the_done_cue(make_band):
    band, clock, events = make_band("nausea-pc6")
    band.start()
    band.skip()  # to the right wrist: the last iteration of the last step
    band.pause()
    band.preview(list((s.amplitude, s.duration_ms) for s in PATTERN), 70, CueKind.TICK)
    clock.advance(100)
    band.process()  # the preview's first pulse has played
    band.skip()  # past the end: the done cue plays now, on the one motor
    play_out(band, clock)
    done_at = [e["t_ms"] for e in events if e["event"] == "cue" and e["cue"] == "done"]
    assert len(done_at) == 1  # at routine time 0: the routine was paused at its start
    assert [p[:3] for p in previews(events)] == [(0, 70, 80)]  # the preview's second pulse (at 200 ms) was cut
