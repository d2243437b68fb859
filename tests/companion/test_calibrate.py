"""Calibration driven through its prompts against a band on a real pty: the motor got the previews at the strengths
asked, and the band stores the strength chosen (or nothing); the CLI refuses without a terminal."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from companion import compile_routine, load_routine
from companion.calibrate import Calibration, CalibrationCue, ScriptedPrompts, Trial, calibrate, parse_strengths, routine_cues, vocabulary_cues
from companion.client import BandClient
from companion.routine import parse_routine
from companion.techniques import CUE_VOCABULARY
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from firmware_sim.serial_port import PtySerialPort
from protocol.constants import CueKind
from protocol.errors import BadStateError, HandCueError
from protocol.strength import scaled_amplitude

TIMEOUT = 30


@asynccontextmanager
async def pty_band(data: bytes | None = None, *, clock_runs: bool = True) -> AsyncIterator[tuple[Band, list[dict[str, Any]], str]]:
    """A band (virtual clock) serving a pty in this process; yields it, its events and its address.

    Without ``clock_runs`` its clock stays at 0 (a started routine stays running at its first cue):
    a virtual clock otherwise jumps through a whole routine as fast as the loop lets it."""
    band = Band(storage_with(data), VirtualClock())
    events: list[dict[str, Any]] = []
    band.listeners.append(events.append)
    port = PtySerialPort(ProtocolHandler(band))
    tasks = [asyncio.create_task(port.serve())]
    if clock_runs:
        tasks.append(asyncio.create_task(band.run()))
    try:
        yield band, events, f"serial:{port.path}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        port.close()


async def no_pause(seconds: float) -> None:
    await asyncio.sleep(0)


def played(events: list[dict[str, Any]]) -> list[tuple[str | None, int, int, int]]:
    """The preview motor events: (cue kind, amplitude, duration, strength)."""
    return [(e["cue"], e["amplitude"], e["duration_ms"], e["strength"]) for e in events if e["event"] == "motor" and e.get("preview")]


def expected_play(strength: int) -> list[tuple[str | None, int, int, int]]:
    """Every on segment of every vocabulary cue, in order, scaled to ``strength``."""
    return [(cue.kind.text_id if cue.kind else None, scaled_amplitude(s.amplitude, strength), s.duration_ms, strength)
            for cue in vocabulary_cues() for s in cue.pattern.segments if s.is_on]


def run_calibration(answers: list[bool], strengths: tuple[int, ...] = (40, 70, 100), data: bytes | None = None,
                    cues: list[CalibrationCue] | None = None) -> tuple[Calibration, ScriptedPrompts, list[dict[str, Any]], int]:
    prompts = ScriptedPrompts(list(answers))

    async def session() -> tuple[Calibration, list[dict[str, Any]], int]:
        async with pty_band(data) as (band, events, address), BandClient.open(address) as client:
            result = await calibrate(client, prompts, strengths, cues, sleep=no_pause)
            await asyncio.sleep(0.05)  # the last cue plays out (virtual time jumps)
            return result, events, band.strength

    result, events, stored = asyncio.run(asyncio.wait_for(session(), TIMEOUT))
    assert prompts.answers == [], "every scripted answer was asked for"
    return result, prompts, events, stored


def test_calibration_replays_on_request_stops_at_the_weakest_strength_told_apart_and_stores_it():
    answers = [
        False, True,          # 40 %: not all felt; play again
        True, False, False,   # 40 % again: felt, not told apart; no more
        True, True,           # 70 %: felt and told apart
        True,                 # store 70 %
    ]
    result, prompts, events, stored = run_calibration(answers)
    assert played(events) == expected_play(40) * 2 + expected_play(70)  # 100 % never played: 70 % was enough
    assert {amplitude for _, amplitude, _, strength in played(events) if strength == 40} == {40}
    assert result.trials == [Trial(40, True, False, 2), Trial(70, True, True, 1)]
    assert (result.before, result.chosen, result.stored, stored) == (100, 70, True, 70)
    assert prompts.asked == [
        "Felt all 8?", "Play them again at 40 %?",
        "Felt all 8?", "Could tell them apart?", "Play them again at 40 %?",
        "Felt all 8?", "Could tell them apart?",
        "Store 70 % as this band's cue strength (now 100 %)?",
    ]
    # each cue was named as it played, with what it means
    names = [line.split()[0] for line in prompts.said if line.startswith("  ")]
    assert names == list(CUE_VOCABULARY) * 3
    assert prompts.said[-1] == "cue strength: 70 % (stored)"


def test_declining_keeps_the_band_strength_and_its_routine():
    data = compile_routine(load_routine("nausea-pc6"))
    result, prompts, events, stored = run_calibration([True, True, False], strengths=(50,), data=data)
    assert played(events) == expected_play(50)
    assert (result.chosen, result.stored, stored) == (50, False, 100)
    assert re.search(r"handcue settings --to serial:\S+ --strength 50 stores it later", prompts.said[-1])


def test_no_strength_felt_stores_nothing():
    answers = [False, False, True, False, False, False, False]  # 40: not felt; 70: not told apart; 100: not felt; never again
    result, prompts, events, stored = run_calibration(answers)
    assert played(events) == expected_play(40) + expected_play(70) + expected_play(100)
    assert (result.chosen, result.stored, stored) == (None, False, 100)
    assert result.trials == [Trial(40, False, False, 1), Trial(70, True, False, 1), Trial(100, False, False, 1)]
    assert "stays at 100 %" in prompts.said[-1]


def test_calibration_refuses_while_a_routine_runs_before_asking_anything():
    data = compile_routine(load_routine("nausea-pc6"))
    prompts = ScriptedPrompts([])

    async def session() -> str:
        async with pty_band(data, clock_runs=False) as (_band, events, address), BandClient.open(address) as client:
            await client.start()
            try:
                await calibrate(client, prompts, sleep=no_pause)
            except HandCueError as exc:
                assert played(events) == []
                return str(exc)
            return ""

    assert "pause or stop it" in asyncio.run(asyncio.wait_for(session(), TIMEOUT))
    assert prompts.asked == [] and prompts.said == []


def test_client_preview_while_running_is_bad_state_and_paused_plays():
    data = compile_routine(load_routine("nausea-pc6"))
    tick = CUE_VOCABULARY["tick"].pattern

    async def session() -> tuple[str, list[tuple[str | None, int, int, int]]]:
        async with pty_band(data, clock_runs=False) as (band, events, address), BandClient.open(address) as client:
            await client.start()
            with pytest.raises(BadStateError) as refused:
                await client.preview(tick, 60, CueKind.TICK)
            await client.pause()
            await client.preview(tick, 60, CueKind.TICK)
            # The clock stood still so that the routine stayed running above; now it moves while the preview plays.
            band.clock.advance(200)
            band.process()
            return str(refused.value), played(events)

    reason, previews = asyncio.run(asyncio.wait_for(session(), TIMEOUT))
    assert "running" in reason
    assert previews == [("tick", 60, 50, 60)]


def test_strengths_are_parsed_sorted_and_checked():
    assert parse_strengths("100, 40,70,40") == (40, 70, 100)
    with pytest.raises(ValueError, match="10 %"):
        parse_strengths("10,70")
    with pytest.raises(ValueError, match="'x' is not a whole number"):
        parse_strengths("70,x")


@pytest.mark.parametrize(("extra", "why"), [((), "standard input is not one"), (("--json",), "--json has no one to ask")])
def test_cli_without_a_terminal_says_what_to_pass_instead(extra, why):
    # stdin is a pipe here: no terminal to ask on; the band is never contacted (the address does not exist)
    result = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "calibrate", "--to", "serial:/nonexistent", *extra],
                            input="", capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    said = json.loads(result.stdout)["error"] if extra else result.stderr.removeprefix("error: ").strip()
    assert why in said and "handcue settings --to serial:/nonexistent --strength PERCENT" in said
    assert "Traceback" not in result.stderr and len((result.stdout if extra else result.stderr).strip().splitlines()) == 1


ROUTINE_WITH_A_CUSTOM_CUE = """
name = "Soft squeeze"
[patterns]
squeeze = { on_off = "200/150/200", amplitude = 60, meaning = "squeeze now" }
[[steps]]
technique = "finger_squeeze"
duration = 30
for_each = "finger"
start = "squeeze"
"""


def test_calibration_with_a_routine_plays_the_patterns_it_uses_custom_ones_included():
    routine, diagnostics = parse_routine(ROUTINE_WITH_A_CUSTOM_CUE, "soft.toml")
    assert routine is not None, diagnostics
    cues = routine_cues(routine)
    assert [(c.name, c.meaning, c.kind) for c in cues] == [
        ("next", "next finger / next part", CueKind.NEXT), ("done", "routine finished", CueKind.DONE), ("squeeze", "squeeze now", None)]
    result, prompts, events, stored = run_calibration([True, True, True], strengths=(50,), cues=cues)
    # the custom pattern written at 60 % plays at 30 % at a strength of 50 %: scaled like every routine cue
    assert played(events) == [("next", 50, 80, 50), ("next", 50, 80, 50), ("done", 50, 400, 50), ("done", 50, 400, 50),
                              (None, 30, 200, 50), (None, 30, 200, 50)]
    assert prompts.asked[0] == "Felt all 3?" and (result.chosen, stored) == (50, 50)


def test_a_bad_strength_is_named_before_the_missing_terminal():
    result = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "calibrate", "--to", "serial:/nonexistent",
                             "--strengths", "40,abc"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "'abc'" in result.stderr and "terminal" not in result.stderr
