"""The live view of ``handcue follow``: a line that fits, updated in place, and keys on a terminal.

The line is rendered by rich on a ``Console(width=80, force_terminal=True)``
writing to a StringIO; the keys come through a real pseudo-terminal; the
whole command runs in a tmux pane of 80 columns when tmux is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from companion.cli_band import describe_status, follow_band
from companion.client import BandClient
from companion.live import KeyReader, LiveLine, fit, live_parts, short_time
from protocol.constants import BandState, SkipScope

TIMEOUT = 20
ROOT = Path(__file__).resolve().parents[2]
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_times_left_are_rounded_up_to_the_second():
    assert [short_time(ms) for ms in (45_000, 44_001, 1, 0, 59_500, 60_000, 245_000, 3_723_000)] == [
        "45 s", "45 s", "1 s", "0 s", "1:00", "1:00", "4:05", "1:02:03"]


def statuses_of(make_band, routine: str, times: list[int]) -> list:
    band, clock, _ = make_band(routine)
    band.start()
    found = []
    for t in times:
        while (deadline := band.next_deadline()) is not None and deadline <= t:
            clock.set(deadline)
            band.process()
        clock.set(t)
        band.process()
        found.append(band.status())
    return found


def test_live_line_starts_with_what_to_do_and_the_time_that_skip_skips(make_band):
    band, clock, _ = make_band("nausea-pc6")
    band.start()
    clock.set(60_000)
    band.process()
    before = band.status()
    assert live_parts(before)[:2] == ["Left hand: Pericardium 6 (Neiguan) · 4:00 left", "routine 9:00 left"]
    band.skip()
    after = band.status()
    assert before.remaining_ms - after.remaining_ms == before.step_remaining_ms == 240_000  # what the line said is what went
    assert live_parts(after)[0] == "Right hand: Pericardium 6 (Neiguan) · 5:00 left"
    band.pause()
    assert live_parts(band.status())[:2] == ["PAUSED", "Right hand: Pericardium 6 (Neiguan) · 5:00 left"]


@pytest.mark.parametrize("routine", ["full-hand-massage", "desk-break"])
def test_time_left_is_what_skip_skips_at_every_moment(make_band, routine):
    band, clock, _ = make_band(routine)
    band.start()
    for t in range(7_300, 600_000, 41_300):
        while (deadline := band.next_deadline()) is not None and deadline <= t:
            clock.set(deadline)
            band.process()
        clock.set(t)
        band.process()
        before = band.status()
        if before.state != BandState.RUNNING:
            break
        assert f"{short_time(before.step_remaining_ms)} left" in live_parts(before)[0]
        band.skip(SkipScope.ITERATION)
        assert before.remaining_ms - band.status().remaining_ms == before.step_remaining_ms


def test_fit_drops_whole_parts_from_the_end():
    parts = ["Left hand: Warming up · 45 s left", "routine 18:30 left", "step 1", "felt: start"]
    assert fit(parts, 80) == "Left hand: Warming up · 45 s left │ routine 18:30 left │ step 1 │ felt: start"
    assert fit(parts, 60) == "Left hand: Warming up · 45 s left │ routine 18:30 left"
    assert fit(parts, 20) == "Left hand: Warming up · 45 s left"  # rich crops this one with an ellipsis


def rows(output: str) -> list[str]:
    """What stays on the screen: each newline ends a row; within a row, each carriage return redraws it."""
    text = CSI.sub("", output)
    return [row.split("\r")[-1] for row in text.split("\n")]


@pytest.mark.parametrize("width", [80, 40, 24])
def test_live_line_fits_the_width_and_redraws_one_row(make_band, width):
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    statuses = statuses_of(make_band, "full-hand-massage", list(range(0, 1_200_000, 9_700)))
    with LiveLine(console=console) as view:
        for status in statuses:
            view.show(live_parts(status), describe_status(status), status)
    output = out.getvalue()
    drawn = CSI.sub("", output).replace("\n", "\r").split("\r")
    assert len([d for d in drawn if d]) >= len(statuses) // 2  # redrawn as it went
    assert max(cell_len(d) for d in drawn) <= width
    assert rows(output) == [rows(output)[0], ""]  # one row on the screen, and the cursor on the next line at the end
    assert rows(output)[0].startswith("finished after 18:30")


def test_notes_and_errors_start_on_a_line_of_their_own(make_band):
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    [status] = statuses_of(make_band, "nausea-pc6", [1_000])
    with pytest.raises(RuntimeError), LiveLine(console=console) as view:
        view.show(live_parts(status), describe_status(status), status)
        view.note("pause: the band is finished")
        view.show(live_parts(status), describe_status(status), status)
        raise RuntimeError("link lost")  # the CLI prints its one error line after this
    screen = rows(out.getvalue())
    assert screen == ["pause: the band is finished", "Left hand: Pericardium 6 (Neiguan) · 4:59 left │ routine 9:59 left │ felt: start", ""]


def test_the_live_line_numbers_steps_as_the_card_does_or_not_at_all(make_band):
    """The band reports a record index, which counts loop records; the line shows the card's step number
    when the routine's table is known, and no number rather than the index when it is not."""
    from companion import compile_routine, load_routine
    from companion.render import step_numbers
    from protocol.table import decode_table

    numbers = step_numbers(decode_table(compile_routine(load_routine("nausea-pc6"))))
    [status] = statuses_of(make_band, "nausea-pc6", [60_000])
    assert status.step is not None and status.step in numbers
    parts = live_parts(status, numbers)
    assert (status.step, numbers[status.step]) == (0, 1)  # record 0 is step 1: the index is not the number
    assert f"step {numbers[status.step]}" in parts and f"step {status.step}" not in parts
    assert not any(part.startswith("step ") for part in live_parts(status))


def test_piped_output_is_one_plain_line_per_change(make_band):
    out = io.StringIO()  # not a terminal
    statuses = statuses_of(make_band, "nausea-pc6", [0, 10_000, 20_000, 30_000, 40_000])
    with LiveLine(out) as view:
        for status in statuses:
            view.show(live_parts(status), describe_status(status), (status.step, status.iteration, status.last_cue, status.state, status.cues))
    assert out.getvalue().splitlines() == [describe_status(statuses[0]), describe_status(statuses[3])]  # the start, then the tick at 30 s
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


# --------------------------------------------------------------------------
# Keys


@contextlib.contextmanager
def terminal():
    """A pseudo-terminal: (the master fd a person types into, the slave as a text stream)."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    try:
        yield master, stream
    finally:
        stream.close()
        os.close(master)


def test_key_reader_reads_single_keys_and_restores_the_terminal():
    async def job(master: int, stream) -> tuple[list[str], list]:
        async with KeyReader(stream) as keys:
            assert keys.active
            mode = termios.tcgetattr(stream.fileno())
            os.write(master, b"n q")
            got = [await asyncio.wait_for(keys.__anext__(), TIMEOUT) for _ in range(3)]
        return got, mode

    with terminal() as (master, stream):
        before = termios.tcgetattr(stream.fileno())
        keys, during = asyncio.run(job(master, stream))
        assert keys == ["n", " ", "q"]
        assert not during[3] & (termios.ICANON | termios.ECHO)  # cbreak: no line buffering, no echo
        assert during[3] & termios.ISIG  # Ctrl-C still interrupts
        assert termios.tcgetattr(stream.fileno()) == before


def test_key_reader_restores_the_terminal_when_the_follow_fails():
    async def job(stream) -> None:
        async with KeyReader(stream):
            raise ConnectionError("link lost")

    with terminal() as (_, stream):
        before = termios.tcgetattr(stream.fileno())
        with pytest.raises(ConnectionError):
            asyncio.run(job(stream))
        assert termios.tcgetattr(stream.fileno()) == before


def test_no_keys_when_stdin_is_not_a_terminal(tmp_path):
    async def job() -> bool:
        with open(tmp_path / "keys.txt", "w+") as stream:
            async with KeyReader(stream) as keys:
                return keys.active

    assert asyncio.run(job()) is False


class RealTimeSim:
    """A ``handcue-sim`` on a real clock, playing a routine from boot."""

    def __init__(self, tmp_path: Path, routine: str = "nausea-pc6") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim", "--serial", "pty", "--clock", "real", "--flash", str(tmp_path / "flash.bin"),
             "--load", routine, "--start"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line.startswith("serial: "), line
        self.address = "serial:" + line.removeprefix("serial: ")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(TIMEOUT)


@pytest.fixture
def real_sim(tmp_path):
    sim = RealTimeSim(tmp_path)
    yield sim
    sim.stop()


@pytest.mark.parametrize(("typed", "said", "state"), [
    (b"n q", "stopped following; the band stays paused (handcue resume to go on)", BandState.PAUSED),
    (b"nq", "stopped following; the band goes on playing (5:00 left;", BandState.RUNNING),
    (b"ns", "stopped: the routine was ended here; the band is idle", BandState.IDLE),
])
def test_follow_keys_control_the_band_and_say_what_it_does_after(real_sim, typed, said, state):
    async def job(master: int, stream) -> tuple[str, object]:
        out = io.StringIO()
        async with BandClient.open(real_sim.address) as client, KeyReader(stream) as keys:
            asyncio.get_running_loop().call_later(0.3, os.write, master, typed)
            last = await asyncio.wait_for(follow_band(client, out, keys=keys), TIMEOUT)
            assert last.state == state
            return out.getvalue(), await client.status()

    with terminal() as (master, stream):
        output, status = asyncio.run(job(master, stream))
    lines = output.splitlines()
    assert lines[-1].startswith(said)
    assert status.state == state
    if state != BandState.IDLE:
        assert status.hand == "right"  # n skipped the left wrist, not the whole step
    assert any("left hand" in line for line in lines) and any("right hand" in line for line in lines)  # piped: plain lines


# --------------------------------------------------------------------------
# The real thing in a terminal of 80 columns


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout


def wait_for_pane(socket: str, text: str) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        screen = tmux(socket, "capture-pane", "-p", "-t", "follow").splitlines()
        if any(text in row for row in screen):
            return [row for row in screen if row.strip()]
        assert time.monotonic() < deadline, f"{text!r} never appeared in the pane:\n" + "\n".join(screen)
        time.sleep(0.1)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_follow_in_an_80_column_terminal(real_sim, tmp_path):
    socket = f"handcue-test-{os.getpid()}"
    command = f"{sys.executable} -c 'from companion.cli import main; main()' follow --to {real_sim.address}; echo EXIT=$?; sleep 60"
    tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "follow", "-x", "80", "-y", "12", "-e", f"PYTHONPATH={ROOT}", command)
    try:
        wait_for_pane(socket, "Left hand: Pericardium 6")
        time.sleep(1.2)  # a few redraws (the line counts down)
        screen = wait_for_pane(socket, "Left hand: Pericardium 6")
        assert len(screen) == 2 and all(len(row) <= 80 for row in screen)
        tmux(socket, "send-keys", "-t", "follow", "n")
        screen = wait_for_pane(socket, "Right hand: Pericardium 6")
        assert len(screen) == 2 and screen[0].startswith("keys: space pause/resume")  # the keys, the live line: no rows left behind
        assert all(len(row) <= 80 for row in screen)
        assert screen[1].startswith("Right hand: Pericardium 6 (Neiguan) · 5:00 left │ routine 5:00 left")
        tmux(socket, "send-keys", "-t", "follow", "q")
        screen = wait_for_pane(socket, "EXIT=")
        assert screen[-2].startswith("stopped following; the band goes on playing") and screen[-1] == "EXIT=0"
        assert len(screen) == 4 and all(len(row) <= 80 for row in screen)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=TIMEOUT, check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_a_killed_follow_restores_the_terminal(real_sim):
    socket = f"handcue-test-{os.getpid()}-k"
    follow = f'exec {sys.executable} -c "from companion.cli import main; main()" follow --to {real_sim.address}'
    modes = "stty -a | tr ' ;' '\\n\\n' | grep -x -e -echo -e echo -e -icanon -e icanon | sort | tr '\\n' ' '"
    command = f"sh -c 'echo PID=$$; {follow}'; echo EXIT=$?; echo MODES: $({modes}); sleep 60"
    tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "follow", "-x", "80", "-y", "12", "-e", f"PYTHONPATH={ROOT}", command)
    try:
        screen = wait_for_pane(socket, "Left hand: Pericardium 6")
        os.kill(int(screen[0].removeprefix("PID=")), signal.SIGTERM)
        screen = wait_for_pane(socket, "MODES:")
        assert screen[-2:] == ["EXIT=143", "MODES: echo icanon"]  # killed by SIGTERM, cbreak mode undone first
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=TIMEOUT, check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_ctrl_c_ends_the_live_line_says_the_band_goes_on_and_restores_the_terminal(real_sim):
    socket = f"handcue-test-{os.getpid()}-c"
    follow = f"{sys.executable} -c 'from companion.cli import main; main()' follow --to {real_sim.address}"
    modes = "stty -a | tr ' ;' '\\n\\n' | grep -x -e -echo -e echo -e -icanon -e icanon | sort | tr '\\n' ' '"
    command = f"{follow}; echo EXIT=$?; echo MODES: $({modes}); sleep 60"
    tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "follow", "-x", "80", "-y", "12", "-e", f"PYTHONPATH={ROOT}", command)
    try:
        wait_for_pane(socket, "Left hand: Pericardium 6")
        tmux(socket, "send-keys", "-t", "follow", "C-c")
        screen = wait_for_pane(socket, "MODES:")
        assert screen[1].startswith("Left hand: Pericardium 6") and len(screen) == 6
        assert screen[2].startswith("stopped following; the band goes on playing")
        assert screen[3:] == ["interrupted", "EXIT=130", "MODES: echo icanon"]  # cbreak mode undone
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=TIMEOUT, check=False)


# --------------------------------------------------------------------------
# The skip commands


def handcue(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_skip_goes_to_the_right_wrist_and_skip_step_past_the_step(real_sim):
    skipped = handcue("skip", "--to", real_sim.address, "--json")
    assert skipped.returncode == 0, skipped.stderr
    status = json.loads(skipped.stdout)
    assert (status["state"], status["hand"], status["iteration"], status["last_cue"]) == ("running", "right", 1, "switch")
    assert status["step_remaining_ms"] == status["remaining_ms"]  # the right wrist is all that is left: the left one's rest went
    assert 299_000 < status["remaining_ms"] <= 300_000  # (real clock: a millisecond may pass before the answer)
    whole = handcue("skip", "--step", "--to", real_sim.address)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.startswith("finished after")


def test_a_band_from_before_skip_scopes_gets_a_clear_word():
    """Such a band refuses the ITERATION byte (its SKIP has no body); the companion says what it can do."""
    from protocol.constants import Status
    from protocol.errors import BadRequestError
    from protocol.messages import SkipRequest, decode_message, encode_request

    class OldBandLink:
        address = "serial:/dev/old-band"
        mtu = 4096
        min_rto = 0.03
        bytes_per_second = None

    sent: list[bytes] = []

    async def old_band(request, **_: object):
        sent.append(encode_request(request, 1))
        if request.build():  # a body: this band reads SKIP as the header only
            raise BadRequestError(Status.BAD_REQUEST, "malformed SKIP request")
        return "skipped the step"

    client = BandClient(OldBandLink())  # type: ignore[arg-type]
    client.request = old_band  # type: ignore[method-assign]
    with pytest.raises(BadRequestError, match=r"malformed SKIP request; this band's firmware skips only whole steps \(skip --step\)"):
        asyncio.run(client.skip())
    assert asyncio.run(client.skip(SkipScope.STEP)) == "skipped the step"
    assert [decode_message(message).body for message in sent] == [SkipRequest(SkipScope.ITERATION), SkipRequest(SkipScope.STEP)]
