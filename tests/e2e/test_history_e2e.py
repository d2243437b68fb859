"""Session history end to end: ``handcue history`` against a `handcue-sim` process over a real pty, and
``BandClient.history`` over BLE (bleak on bumble, a virtual link), paired and not.

The serial band records sessions on dates the test sets (SET_TIME) and one before any clock was
set, more than one HISTORY answer holds, so every read pages.  The tests of the module share that
band and run in file order: the reads first, the clear last.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ble_stack.addresses import free_tcp_port
from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.ble.pairing import pair_band
from companion.cli import cli
from companion.client import BandClient
from companion.errors import NotPairedError
from companion.history_export import offset_text
from firmware_sim.clock import RealClock
from firmware_sim.local import LocalBleBand
from protocol.constants import ClockKind, SessionOutcome
from protocol.history import Session
from protocol.messages import history_records_per_frame

from .test_serial_e2e import Sim

TIMEOUT = 30
NAUSEA = compile_routine(load_routine("nausea-pc6"))
NAME = "HandCue-1A2B"
REFUSAL = f"{NAME} accepts commands only from paired devices: press its button, then run handcue pair"
DAY_1 = datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
DAY_3 = datetime(2025, 12, 3, 10, 0, tzinfo=UTC)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def unix_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def started_iso(session: Session) -> str:
    """The session's start as JSON and CSV should give it: UTC, milliseconds, Z."""
    ms = session.start % 1000
    return datetime.fromtimestamp(session.start // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


async def record_sessions(address: str) -> list[Session]:
    """One session before any clock is set, two on day 1 and three on day 3; returns what the band then holds."""
    async with BandClient.open(address, set_clock=False) as client:
        await client.upload(NAUSEA)
        await client.start()
        await client.stop()
        for day, count in ((DAY_1, 2), (DAY_3, 3)):
            await client.set_time(unix_ms(day))
            for _ in range(count):
                await client.start()
                await client.stop()
        return await client.history()


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, list[Session]]]:
    sim = Sim(tmp_path_factory.mktemp("history"), "--clock", "real")  # real time: every session is stopped before it could finish
    try:
        yield sim, run(record_sessions(sim.address))
    finally:
        if sim.process.poll() is None:
            sim.stop()


def handcue(address: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["history", "--to", address, *args], input=input)


def test_the_client_pages_through_more_records_than_one_answer_holds(band):
    sim, held = band
    assert len(held) == 6 > history_records_per_frame(256)
    assert [s.seq for s in held] == list(range(6)) and {s.outcome for s in held} == {SessionOutcome.STOPPED}
    assert [s.clock for s in held] == [ClockKind.UPTIME_MS] + [ClockKind.UNIX_MS] * 5
    assert [datetime.fromtimestamp(s.start / 1000, UTC).date() for s in held[1:]] == [DAY_1.date()] * 2 + [DAY_3.date()] * 3
    assert all(s.routine_name == "Nausea relief (PC6)" for s in held)
    assert run(_history_since(sim.address, 4)) == held[4:]


async def _history_since(address: str, seq: int) -> list[Session]:
    async with BandClient.open(address) as client:
        return await client.history(since=seq)


def test_table_for_people(band):
    sim, held = band
    result = handcue(sim.address)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    zone = offset_text(DAY_1.astimezone().utcoffset())  # this computer's zone (the test sessions are all in December)
    assert header.split("  ")[0] == f"started ({zone})" and "acks (given/asked)" in header
    assert header.split()[-6:-2] == ["steps", "plays", "pauses", "skips"]
    assert len(rows) == len(held) == 6
    assert rows[0].startswith("uptime +00:0")
    local_day_1 = DAY_1.astimezone().strftime("%Y-%m-%d %H:%M")
    assert rows[1].startswith(local_day_1) and "Nausea relief (PC6)" in rows[1] and "stopped" in rows[1]


def test_json_shape(band):
    sim, held = band
    result = handcue(sim.address, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"band_id", "sessions"} and data["band_id"] == "1A2B"
    sessions = data["sessions"]
    assert [s["seq"] for s in sessions] == list(range(6))
    assert set(sessions[0]) == {"seq", "started", "clock", "start", "outcome", "routine_name", "routine_crc32", "played_ms", "paused_ms",
                                "pauses", "skips", "steps", "iterations", "acks_given", "acks_missed"}
    assert sessions[0]["started"] is None and sessions[0]["clock"] == "uptime_ms"
    assert sessions[1]["started"] == started_iso(held[1])
    assert re.fullmatch(r"2025-12-01T10:00:\d\d\.\d{3}Z", sessions[1]["started"])  # to the millisecond, in UTC
    assert [s["start"] for s in sessions] == [s.start for s in held] and [s["played_ms"] for s in sessions] == [s.played_ms for s in held]
    assert sessions[5]["routine_crc32"] == f"0x{held[5].routine_crc32:08X}" and sessions[5]["outcome"] == "stopped"


def test_csv_shape(band):
    sim, held = band
    result = handcue(sim.address, "--csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("band_id,seq,started,clock,start,routine_name,routine_crc32,outcome,played_ms,paused_ms,pauses,skips,steps,"
                        "iterations,acks_given,acks_missed")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and rows[0]["started"] == "" and rows[3]["started"] == started_iso(held[3])
    assert {r["band_id"] for r in rows} == {"1A2B"}
    assert [int(r["played_ms"]) for r in rows] == [s.played_ms for s in held]


def test_since_keeps_later_dated_sessions_and_says_what_it_left_out(band):
    sim, _ = band
    result = handcue(sim.address, "--json", "--since", "2025-12-02T00:00Z")
    assert result.exit_code == 0, result.output
    assert [s["seq"] for s in json.loads(result.stdout)["sessions"]] == [3, 4, 5]
    assert "1 session(s) without a date left out by --since" in result.stderr
    everything_dated = handcue(sim.address, "--json", "--since", "2025-11-30")
    assert [s["seq"] for s in json.loads(everything_dated.stdout)["sessions"]] == [1, 2, 3, 4, 5]
    nothing = handcue(sim.address, "--since", "2026-01-01T00:00+01:00")
    assert (nothing.exit_code, nothing.stdout.strip()) == (0, "no sessions recorded since then")
    wrong = handcue(sim.address, "--since", "yesterday")
    assert wrong.exit_code == 2 and "'yesterday' is not an ISO date or time" in wrong.output


def test_fit_file_decodes_back_with_fit_tool(band, tmp_path: Path):
    from fit_tool.fit_file import FitFile
    from fit_tool.profile.messages.activity_message import ActivityMessage
    from fit_tool.profile.messages.file_id_message import FileIdMessage
    from fit_tool.profile.messages.session_message import SessionMessage
    from fit_tool.profile.profile_type import FileType, Sport
    from fit_tool.validation import validate_fit_file

    sim, held = band
    path = tmp_path / "sessions.fit"
    result = handcue(sim.address, "--fit", str(path), "--csv")
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stderr and result.stdout.count("\n") == 7  # CSV on stdout untouched
    decoded = FitFile.from_bytes(path.read_bytes())
    assert validate_fit_file(decoded)
    messages = [record.message for record in decoded.records if not record.header.is_definition]
    [file_id] = [m for m in messages if isinstance(m, FileIdMessage)]
    assert file_id.type == FileType.ACTIVITY.value and file_id.serial_number == 0x1A2B
    sessions = [m for m in messages if isinstance(m, SessionMessage)]
    dated = held[1:]  # the session without a date cannot go into FIT
    assert [m.start_time for m in sessions] == [s.start // 1000 * 1000 for s in dated]  # FIT times are whole seconds
    assert [m.total_timer_time for m in sessions] == [s.played_ms / 1000 for s in dated]
    assert [m.total_elapsed_time for m in sessions] == [(s.played_ms + s.paused_ms) / 1000 for s in dated]
    assert {m.sport for m in sessions} == {Sport.TRAINING.value}
    fields = [{field.field_id: field.get_value(0) for field in m.developer_fields} for m in sessions]
    assert [(f[0], f[1], f[2], f[7], f[8]) for f in fields] == [
        (s.routine_name, s.routine_crc32, "stopped", s.acks_given, s.acks_missed) for s in dated]
    [activity] = [m for m in messages if isinstance(m, ActivityMessage)]
    assert activity.num_sessions == 5


def test_a_fit_file_that_cannot_be_written_leaves_only_the_error_on_stdout(band, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sim, held = band
    nowhere = handcue(sim.address, "--json", "--fit", str(tmp_path / "missing" / "sessions.fit"))
    assert nowhere.exit_code == 2 and nowhere.stdout.count("\n") == 1  # refused before the band is asked
    assert json.loads(nowhere.stdout)["error"].startswith(f"Invalid value for --fit: the folder {tmp_path / 'missing'} does not exist")
    path = tmp_path / "sessions.fit"
    too_late = handcue(sim.address, "--json", "--fit", str(path), "--since", "2026-01-01")
    assert too_late.exit_code == 1 and not path.exists()
    assert json.loads(too_late.stdout) == {"error": f"no session matches --since 2026-01-01 ({len(held)} recorded), so there is nothing to write to FIT"}
    monkeypatch.setitem(sys.modules, "fit_tool.fit_file_builder", None)  # as if fit-tool were not installed
    no_fit_tool = handcue(sim.address, "--csv", "--fit", str(path))
    assert (no_fit_tool.exit_code, no_fit_tool.stdout) == (1, "") and "pip install" in no_fit_tool.stderr and not path.exists()


def test_since_with_clear_is_refused_and_nothing_is_erased(band):
    sim, held = band
    refused = handcue(sim.address, "--since", "2025-12-02", "--clear", "--yes")
    assert refused.exit_code == 2 and "--since" in refused.stderr and "--clear" in refused.stderr
    assert run(_history_since(sim.address, 0)) == held


def test_clear_asks_first_and_keeps_everything_unless_confirmed(band, monkeypatch: pytest.MonkeyPatch):
    sim, held = band
    no_terminal = handcue(sim.address, "--clear")
    assert no_terminal.exit_code == 1 and "confirm with --yes when there is no terminal" in no_terminal.stderr
    monkeypatch.setattr("companion.cli_history.stdin_is_terminal", lambda: True)
    declined = handcue(sim.address, "--clear", input="n\n")
    assert declined.exit_code == 0 and "Erase all 6 session(s) from the band?" in declined.stderr
    assert "history kept" in declined.stderr
    assert run(_history_since(sim.address, 0)) == held
    confirmed = handcue(sim.address, "--clear", input="y\n")
    assert confirmed.exit_code == 0 and "history cleared" in confirmed.stderr
    assert run(_history_since(sim.address, 0)) == []
    assert handcue(sim.address).stdout.strip() == "no sessions recorded"


# --------------------------------------------------------------------------
# BLE


def test_history_over_ble_pages_and_the_client_sets_the_clock():
    async def main() -> tuple[list[Session], list[Session], list[Session], float, float]:
        async with LocalBleBand(NAUSEA, clock=RealClock()) as local, BumbleCentral(link=local.link) as central:
            for i in range(10):
                local.band.storage.history.record(Session(ClockKind.UPTIME_MS, SessionOutcome.FINISHED, 1_000 * i, 60_000, 0, 7, 0, 0, 1, 2,
                                                          f"old {i}", acks_given=i, acks_missed=1))
            before = time.time()
            async with BandClient.open(f"ble:{local.name}", ble=central.backend) as client:
                read = await client.history()
                await client.start()
                await client.stop()
                newest = await client.history(since=10)
            after = time.time()
            return read, local.band.storage.history.sessions()[:10], newest, before, after

    read, held, newest, before, after = run(main())
    assert len(read) == 10 and read == held
    [session] = newest
    assert session.clock == ClockKind.UNIX_MS and before * 1000 - 1 <= session.start <= after * 1000 + 1
    assert session.outcome == SessionOutcome.STOPPED and session.seq == 10


def test_history_and_clear_need_a_paired_link_on_a_paired_band():
    async def main() -> None:
        async with (LocalBleBand(NAUSEA, pairing_window=60) as local, BumbleCentral(link=local.link) as owner,
                    BumbleCentral(link=local.link) as stranger):
            for i in range(4):
                local.band.storage.history.record(Session(ClockKind.UPTIME_MS, SessionOutcome.STOPPED, i, 1, 0, 7, 0, 0, 0, 0, "x"))
            await pair_band(NAME, owner.backend)
            async with BandClient.open(f"ble:{local.name}", ble=stranger.backend, timeout=5.0) as other:
                for command in (other.history, other.clear_history):
                    with pytest.raises(NotPairedError) as refused:
                        await command()
                    assert str(refused.value) == REFUSAL
            assert len(local.band.storage.history.sessions()) == 4  # nothing erased
            async with BandClient.open(f"ble:{local.name}", ble=owner.backend, timeout=5.0) as client:
                assert [s.start for s in await client.history()] == [0, 1, 2, 3]
                await client.clear_history()
                assert await client.history() == []
            assert local.band.storage.history.sessions() == []

    run(main())


def test_cli_clear_over_ble_is_refused_unpaired_with_one_line_and_done_paired(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``handcue history --clear`` through the CLI's own BLE stack (bumble on the band's served controller):
    a second computer, not paired, gets the NotPairedError line; the paired one clears."""
    port = free_tcp_port()
    monkeypatch.setenv("HANDCUE_HCI", f"tcp-client:127.0.0.1:{port}")
    monkeypatch.delenv("HANDCUE_ADDRESS", raising=False)
    sim = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}",
                            "--flash", str(tmp_path / "band.bin"), "--pairing-window", "60"], stdout=subprocess.PIPE)
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")

        def as_computer(name: str, *args: str) -> Result:
            monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / name))  # each computer keeps its own BLE identity and bonds
            return CliRunner().invoke(cli, [*args, "--to", f"ble:{NAME}"])

        assert as_computer("owner", "pair").exit_code == 0
        refused = as_computer("stranger", "history", "--clear", "--yes")
        assert (refused.exit_code, refused.stderr) == (1, f"error: {REFUSAL}\n")
        cleared = as_computer("owner", "history", "--clear", "--yes")
        assert cleared.exit_code == 0, cleared.output
        assert (cleared.stdout, cleared.stderr) == ("no sessions recorded\n", "history cleared\n")
    finally:
        sim.terminate()
        sim.wait(TIMEOUT)
