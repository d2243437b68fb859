"""STATUS while the band waits for the wearer's press (SPEC.md §12.10, §18.1): state WAITING, the cue, the time to give up.

The companion's real :class:`~companion.client.BandClient` talks to the band's
real :class:`~firmware_sim.handler.ProtocolHandler` through an in-process
loopback, the band on a virtual clock the test moves, so every time below is
exact.  The routine (``tests/band/test_ack.py``): step 1 ``warm_up``, 10 s,
waits for a press after its START cue; step 2 ``palm_spread``, 20 s; with
``finish_ack`` the finish waits too.  Nobody presses: the band gives up 60 s
after a wait's first cue.  A press is the band's own button (the simulator's
SIGUSR1 or console key): the protocol has no request for it.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import construct as c
import pytest
from rich.console import Console

from companion.cli_band import describe_status
from companion.client import BandClient
from companion.live import LiveLine, band_goes_on, live_parts
from companion.render import step_numbers
from firmware_sim.band import Band, Button
from firmware_sim.clock import VirtualClock
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with
from protocol.constants import Ack, BandState, CueKind, MessageKind, Opcode, TechniqueCode
from protocol.layout import Coded, Indexed, Marker, Saturating, wire
from protocol.messages import FINGERS_WIRE, HANDS_WIRE, Body, MessageError, StatusReport, code_text, decode_message, encode_notification
from protocol.table import decode_table

from ..band.test_ack import ROUTINE, table_bytes
from ..conftest import advance_to
from .test_link_robustness import Loopback
from .test_serial_e2e import Sim

TIMEOUT = 30
GIVE_UP = Ack.GIVE_UP_MS


class Bench:
    """A band on a virtual clock, its handler, and every message it sent to the companion's link."""

    def __init__(self, data: bytes) -> None:
        self.clock = VirtualClock()
        self.band = Band(storage_with(data), self.clock)
        self.sent: list[bytes] = []
        self.transport = Loopback(ProtocolHandler(self.band), answers=self._seen)
        self.data = data

    def _seen(self, message: bytes) -> bytes:
        self.sent.append(message)
        return message

    def at(self, t: int) -> None:
        """Play everything due up to band time ``t`` (routine time: nothing here pauses)."""
        advance_to(self.band, self.clock, t)

    def notified(self) -> list[StatusReport]:
        """The STATUS notifications sent since the last call."""
        bodies = [decode_message(m).body for m in self.sent if m[1] == MessageKind.NOTIFICATION]
        self.sent.clear()
        return [body for body in bodies if isinstance(body, StatusReport)]

    def status_requests(self) -> int:
        return sum(1 for frame in self.transport.sent for m in _messages(frame) if m[1] == MessageKind.REQUEST and m[2] == Opcode.STATUS)


def _messages(frame: bytes) -> list[bytes]:
    from protocol.framing import FrameParser

    return FrameParser(1024).feed(frame)


def session(data: bytes, job: Callable[[Bench, BandClient], Awaitable[Any]]) -> Any:
    bench = Bench(data)

    async def run() -> Any:
        async with BandClient(bench.transport, set_clock=False) as client:
            return await job(bench, client)

    return asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def waits(status: StatusReport) -> tuple[Any, ...]:
    """What a companion reads about a wait: state, step, the cue repeated, when the band gives up."""
    return status.state, status.step, status.ack_cue, status.gives_up_in_ms


# --------------------------------------------------------------------------
# The band reports the wait, exactly


def test_status_during_a_step_wait_says_waiting_which_cue_and_when_it_gives_up_then_running_after_the_press():
    async def job(bench: Bench, client: BandClient) -> None:
        started = await client.start()
        assert waits(started) == (BandState.WAITING, 0, CueKind.START, GIVE_UP)
        bench.at(18_000)
        status = await client.status()
        assert waits(status) == (BandState.WAITING, 0, CueKind.START, 42_000)
        assert (status.elapsed_ms, status.remaining_ms, status.step_remaining_ms) == (18_000, 30_000, 42_000)  # routine time left: all of it
        assert status.to_json()["state"] == "waiting"
        assert status.to_json()["ack_wait"] == {"cue": "start", "gives_up_in_ms": 42_000}
        bench.at(59_999)
        assert (await client.status()).gives_up_in_ms == 1
        bench.band.press(Button.PRESS)  # the wearer, 1 ms before the band would give up
        after = await client.status()
        assert waits(after) == (BandState.RUNNING, 0, None, None)
        assert (after.step_remaining_ms, after.remaining_ms, after.to_json()["ack_wait"]) == (10_000, 30_000, None)

    session(table_bytes(), job)


def test_a_wait_the_band_gives_up_reports_running_at_the_cap_exactly():
    async def job(bench: Bench, client: BandClient) -> None:
        await client.start()
        bench.at(GIVE_UP - 1)
        assert waits(await client.status()) == (BandState.WAITING, 0, CueKind.START, 1)
        bench.at(GIVE_UP)
        status = await client.status()
        assert waits(status) == (BandState.RUNNING, 0, None, None)
        assert (status.elapsed_ms, status.step_remaining_ms, status.remaining_ms) == (GIVE_UP, 10_000, 30_000)

    session(table_bytes(), job)


def test_the_finish_wait_reports_done_with_no_step_and_finishes_on_the_press():
    async def job(bench: Bench, client: BandClient) -> None:
        await client.start()
        bench.band.press(Button.PRESS)  # step 1's wait, at once
        bench.at(30_000 + 7_000)  # the finish waits from 30 s on
        status = await client.status()
        assert waits(status) == (BandState.WAITING, None, CueKind.DONE, GIVE_UP - 7_000)
        assert (status.remaining_ms, status.last_cue) == (0, CueKind.DONE)
        assert status.to_json()["ack_wait"] == {"cue": "done", "gives_up_in_ms": 53_000}
        bench.band.press(Button.PRESS)
        done = await client.status()
        assert (done.state, done.elapsed_ms, done.ack_cue) == (BandState.FINISHED, 37_000, None)

    session(table_bytes(finish_ack=True), job)


# --------------------------------------------------------------------------
# Notifications: a wait's start and each way it ends


def test_a_wait_start_and_every_way_it_ends_send_a_status_notification():
    async def job(bench: Bench, client: BandClient) -> None:
        await client.start()
        # The START cue (the band waits from its first cue on), then the state: both say WAITING.
        assert [(n.state, n.cues) for n in bench.notified()] == [(BandState.WAITING, 1), (BandState.WAITING, 1)]
        bench.at(7_000)
        assert [(n.state, n.cues) for n in bench.notified()] == [(BandState.WAITING, 2)]  # the repeat at 5 s
        bench.band.press(Button.PRESS)  # given
        assert [waits(n) for n in bench.notified()] == [(BandState.RUNNING, 0, None, None)]
        await client.start()  # again, at band time 7 s: this time nobody presses
        bench.notified()
        bench.at(7_000 + GIVE_UP - 1)
        assert [(n.state, n.cues) for n in bench.notified()][-1] == (BandState.WAITING, 12)  # the last repeat, at 55 s
        bench.at(7_000 + GIVE_UP)
        assert [(n.state, n.elapsed_ms) for n in bench.notified()] == [(BandState.RUNNING, GIVE_UP)]  # given up: no cue, but a notification
        await client.start()
        bench.notified()
        await client.skip()  # cancelled by a skip: on to step 2
        assert [(n.state, n.step) for n in bench.notified()][-1] == (BandState.RUNNING, 1)
        await client.start()
        bench.notified()
        await client.stop()  # cancelled by a stop
        assert [n.state for n in bench.notified()] == [BandState.IDLE]

    session(table_bytes(), job)


def test_the_finish_wait_notifies_its_start_and_the_finish_when_given_up():
    async def job(bench: Bench, client: BandClient) -> None:
        await client.start()
        bench.band.press(Button.PRESS)
        bench.notified()
        bench.at(30_000 - 1)
        bench.notified()
        bench.at(30_000)
        assert [waits(n) for n in bench.notified()] == [(BandState.WAITING, None, CueKind.DONE, GIVE_UP)] * 2  # DONE cue, then state
        bench.at(30_000 + GIVE_UP - 1)
        bench.notified()
        bench.at(30_000 + GIVE_UP)
        assert [(n.state, n.elapsed_ms) for n in bench.notified()] == [(BandState.FINISHED, 30_000 + GIVE_UP)]

    session(table_bytes(finish_ack=True), job)


def test_follow_sees_the_wait_begin_and_end_from_notifications_without_polling():
    """``follow`` asks STATUS once, then lives on notifications (its poll here would come after an hour)."""
    async def job(bench: Bench, client: BandClient) -> list[tuple[Any, ...]]:
        await client.start()
        seen: list[tuple[Any, ...]] = []

        async def follow() -> None:
            async for status in client.follow(poll_s=3600):
                seen.append(waits(status))

        following = asyncio.ensure_future(follow())

        async def settle() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        await settle()
        bench.at(12_000)  # two repeats
        await settle()
        assert seen[-1] == (BandState.WAITING, 0, CueKind.START, GIVE_UP - 10_000)  # the repeat at 10 s
        bench.band.press(Button.PRESS)
        await settle()
        assert seen[-1] == (BandState.RUNNING, 0, None, None)  # the press, before anything else happens
        bench.at(12_000 + 30_000)  # step 2 ends: the finish waits
        await settle()
        bench.at(12_000 + 30_000 + GIVE_UP)  # nobody presses: the band finishes
        await asyncio.wait_for(following, 5)
        assert bench.status_requests() == 1  # follow's first STATUS; everything else came as notifications
        return seen

    seen = session(table_bytes(finish_ack=True), job)
    assert seen[0] == (BandState.WAITING, 0, CueKind.START, GIVE_UP)
    assert (BandState.WAITING, 0, CueKind.START, GIVE_UP - 10_000) in seen  # the repeat at 10 s
    pressed = seen.index((BandState.RUNNING, 0, None, None))
    assert all(s[0] == BandState.WAITING for s in seen[:pressed])
    assert (BandState.WAITING, None, CueKind.DONE, GIVE_UP) in seen[pressed:]
    assert seen[-1][0] == BandState.FINISHED


# --------------------------------------------------------------------------
# Compatibility: the 27-byte body is unchanged; older peers


WAITING_BODY = "04" "0200" "01" "00" "01" "00" "50460000" "30750000" "10a40000" "30750000" "03" "0400" "64"
"""WAITING at step record 2 (warm_up, left hand), 18 s in, 30 s of routine left, the band gives up in 42 s, START felt, 4 cues."""
RUNNING_BODY = "01" "0200" "01" "00" "01" "00" "50460000" "30750000" "10270000" "30750000" "03" "0400" "64"
"""What a band from before WAITING reports at the same instant: running, the step's full 10 s left."""


def test_waiting_status_golden_bytes():
    report = StatusReport(BandState.WAITING, 2, TechniqueCode.WARM_UP, 0, "left", None, 18_000, 30_000, 42_000, 30_000, CueKind.START, 4, 100)
    assert report.build().hex() == WAITING_BODY
    assert decode_message(bytes.fromhex("01" "02" "0b" "00" + WAITING_BODY)).body == report
    assert (report.ack_cue, report.gives_up_in_ms) == (CueKind.START, 42_000)


def test_a_band_from_before_waiting_still_reads_as_running():
    status = decode_message(bytes.fromhex("01" "01" "0b" "05" "00" "00" + RUNNING_BODY)).body
    assert isinstance(status, StatusReport)
    assert waits(status) == (BandState.RUNNING, 2, None, None) and status.to_json()["ack_wait"] is None
    assert "10 s left in step" in describe_status(status)


def test_a_companion_from_before_waiting_reads_it_as_unknown_4_and_the_rest_as_before():
    """The decoder such a companion has: the same layout with the band states it knew (lenient, as every companion's)."""
    from enum import IntEnum

    class OldBandState(IntEnum):
        IDLE = 0
        RUNNING = 1
        PAUSED = 2
        FINISHED = 3

    class OldStatusReport(Body):
        state: OldBandState | None = wire(Coded(c.Int8ul, OldBandState, lenient=True))
        step: int | None = wire(Marker(c.Int16ul, 0xFFFF))
        technique: TechniqueCode | None = wire(Coded(c.Int8ul, TechniqueCode, none=0, lenient=True))
        iteration: int = wire(c.Int8ul)
        hand: str | None = wire(Indexed(c.Int8ul, HANDS_WIRE))
        finger: str | None = wire(Indexed(c.Int8ul, FINGERS_WIRE))
        elapsed_ms: int = wire(c.Int32ul)
        remaining_ms: int = wire(c.Int32ul)
        step_remaining_ms: int = wire(c.Int32ul)
        total_ms: int = wire(c.Int32ul)
        last_cue: CueKind | None = wire(Coded(c.Int8ul, CueKind, none=0, lenient=True))
        cues: int = wire(Saturating(c.Int16ul, 0xFFFF))
        battery: int = wire(c.Int8ul)

    assert OldStatusReport.layout.sizeof() == StatusReport.layout.sizeof() == 27
    old = OldStatusReport.parse(bytes.fromhex(WAITING_BODY))
    assert (old.state, code_text(old, "state"), old.step, old.step_remaining_ms, old.cues) == (None, "unknown (4)", 2, 42_000, 4)
    # A trailing field group instead would not reach such a companion at all: it refuses longer bodies (SPEC §16.5 check 5).
    with pytest.raises(MessageError, match="malformed STATUS notification"):
        decode_message(bytes.fromhex("01" "02" "0b" "00" + WAITING_BODY + "00"))


def test_the_notification_bytes_a_waiting_band_sends():
    report = StatusReport(BandState.WAITING, None, None, 0, None, None, 37_000, 0, 53_000, 30_000, CueKind.DONE, 9, 100)
    assert encode_notification(report).hex() == "01" "02" "0b" "00" "04" "ffff" "00" "00" "00" "00" "88900000" "00000000" "08cf0000" "30750000" "07" "0900" "64"
    assert (report.ack_cue, report.gives_up_in_ms) == (CueKind.DONE, 53_000)


# --------------------------------------------------------------------------
# What people see


def waiting_statuses() -> tuple[StatusReport, StatusReport, dict[int, int]]:
    """The band 18 s into step 1's wait, and 7 s into the finish's (the 30 s table then ends at 0:48 and 0:55 so far)."""
    data = table_bytes(finish_ack=True)
    bench = Bench(data)
    bench.band.start()
    bench.at(18_000)
    step = bench.band.status()
    bench.band.press(Button.PRESS)
    bench.at(18_000 + 30_000 + 7_000)
    return step, bench.band.status(), step_numbers(decode_table(data))


def test_status_text_says_waiting_for_the_press_the_cue_and_the_give_up_never_0_s_left():
    step, finish, numbers = waiting_statuses()
    assert describe_status(step, numbers) == (
        "[0:18 / 0:48] | waiting for a press of the band's button | START of step 1 warm_up | left hand | gives up in 42 s | 30 s left | felt: start")
    assert describe_status(finish, numbers) == (
        "[0:55 / 0:55] | waiting for a press of the band's button | DONE: a press confirms the routine was done | gives up in 53 s | felt: done")
    assert "0 s left" not in describe_status(finish)
    assert band_goes_on(step) == "the band waits for the wearer's press (it gives up in 42 s), then goes on playing (handcue stop ends it)"


def test_live_line_while_waiting_on_an_80_column_terminal_and_piped():
    step, finish, _ = waiting_statuses()
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with LiveLine(console=console) as view:
        view.show(live_parts(step), describe_status(step), step)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split("\n")[0].split("\r")[-1]
    assert screen == "PRESS THE BAND'S BUTTON · gives up in 42 s │ to start: Left hand: Warming up"
    assert live_parts(finish) == ["PRESS THE BAND'S BUTTON · gives up in 53 s", "to confirm the routine is done", "felt: done"]
    piped = io.StringIO()
    with LiveLine(piped) as view:
        view.show(live_parts(finish), describe_status(finish), finish)
    assert piped.getvalue() == describe_status(finish) + "\n"


# --------------------------------------------------------------------------
# The CLI against a simulator process (real clock: the wait lasts a minute)


def test_cli_status_text_and_json_while_the_band_waits(tmp_path: Path):
    routine = tmp_path / "ack.toml"
    routine.write_text(ROUTINE.format(ack="ack = true", finish_ack=""))
    sim = Sim(tmp_path, "--clock", "real")

    def handcue(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", *args, "--to", sim.address],
                              capture_output=True, text=True, timeout=TIMEOUT)

    try:
        assert handcue("upload", str(routine)).returncode == 0
        started = handcue("start", "--json")
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["state"] == "waiting"
        status = json.loads(handcue("status", "--json").stdout)
        assert status["state"] == "waiting" and status["ack_wait"]["cue"] == "start"
        assert 30_000 < status["ack_wait"]["gives_up_in_ms"] == status["step_remaining_ms"] <= GIVE_UP
        text = handcue("status").stdout
        assert "| waiting for a press of the band's button | START of " in text and "warm_up | left hand | gives up in " in text, text
        assert handcue("stop").returncode == 0
    finally:
        sim.stop()


def test_spec_example_of_a_waiting_band_is_what_the_generator_prints():
    """SPEC §22.8.1 is the output of ``docs/gen_spec_examples.py`` (its acknowledgement part), byte for byte."""
    import contextlib
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec_module = importlib.util.spec_from_file_location("gen_spec_examples", root / "docs" / "gen_spec_examples.py")
    assert spec_module is not None and spec_module.loader is not None
    generator = importlib.util.module_from_spec(spec_module)
    spec_module.loader.exec_module(generator)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        generator.ack_wait_examples()
    spec = (root / "protocol" / "SPEC.md").read_text()
    section = spec.split("### 22.8.1 ", 1)[1].split("```\n", 2)[1]
    assert section == printed.getvalue().split("\n", 2)[2].rstrip("\n") + "\n"  # the generator's heading becomes the section's text
