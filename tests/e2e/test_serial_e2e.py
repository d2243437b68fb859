"""End to end: the companion against a `handcue-sim` process through a real pty opened by pyserial."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from companion import compile_routine, load_routine, read_table, table_timeline
from companion.client import BandClient, BandTimeout
from protocol.constants import BandState
from protocol.errors import BandError, HandCueError, TableRefusedError
from protocol.framing import encode_frame
from protocol.messages import InfoRequest, InfoResponse, StatusReport, StatusRequest, UploadBeginRequest, UploadDataRequest, encode_request
from protocol.table import table_crc

from ..conftest import SHIPPED

TIMEOUT = 20


class Sim:
    """A `handcue-sim --serial pty` process."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.trace = tmp_path / "trace.jsonl"
        self.flash = tmp_path / "flash.bin"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim", "--serial", "pty", "--clock", "virtual", "--flash", str(self.flash),
             "--trace", str(self.trace), *args],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line.startswith("serial: "), line
        self.address = "serial:" + line.removeprefix("serial: ")
        self.port = line.removeprefix("serial: ")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(TIMEOUT)

    def motor_trace(self) -> list[dict]:
        events = [json.loads(line) for line in self.trace.read_text().splitlines()]
        return [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]


@pytest.fixture
def sim(tmp_path):
    band = Sim(tmp_path)
    yield band
    if band.process.poll() is None:
        band.stop()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


async def play(address: str, data: bytes) -> None:
    async with BandClient.open(address) as client:
        await client.upload(data)
        await client.start()
        async for status in client.notifications(timeout=5):
            if status.state == BandState.FINISHED:
                break
        await asyncio.sleep(0.1)  # the done pattern plays out (virtual time jumps)


@pytest.mark.parametrize("routine", SHIPPED)
def test_upload_start_and_trace_equals_inspect_timeline(tmp_path, routine):
    band = Sim(tmp_path)
    data = compile_routine(load_routine(routine))
    run(play(band.address, data))
    assert band.stop() == 0
    assert band.motor_trace() == [e.to_json() for e in table_timeline(read_table(data))]


def test_progress_reports_confirmed_offsets_and_info_shows_routine(sim):
    data = compile_routine(load_routine("full-hand-massage"))
    seen: list[tuple[int, int]] = []

    async def job():
        async with BandClient.open(sim.address) as client:
            await client.upload(data, lambda done, total: seen.append((done, total)))
            return await client.info()

    info = run(job())
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert info.routine_name == "Full hand massage" and info.routine_crc32 == zlib.crc32(data)


def test_resume_after_link_drop_mid_upload(sim):
    data = compile_routine(load_routine("full-hand-massage"))
    crc = zlib.crc32(data)

    async def partial():
        async with BandClient.open(sim.address) as client:
            begin = await client.request(UploadBeginRequest(length=len(data), crc32=crc))
            assert begin.offset == 0
            ack = await client.request(UploadDataRequest(offset=0, data=data[:100]))
            assert ack.offset == 100
        # the link drops here (port closed mid-upload)

    confirmed: list[int] = []

    async def finish():
        async with BandClient.open(sim.address) as client:
            result = await client.upload(data, lambda done, total: confirmed.append(done))
            return result, await client.info()

    run(partial())
    result, info = run(finish())
    assert result.resumed_from == 100
    # The 179 remaining bytes stored by one frame (frames sent from 0 behind BEGIN, before its answer, were dropped as duplicates).
    assert confirmed == [100, len(data)] and result.retransmissions == 0
    assert info.routine_crc32 == crc


def test_resume_after_band_restart(tmp_path):
    data = compile_routine(load_routine("full-hand-massage"))
    first = Sim(tmp_path)

    async def partial():
        async with BandClient.open(first.address) as client:
            await client.request(UploadBeginRequest(length=len(data), crc32=zlib.crc32(data)))
            await client.request(UploadDataRequest(offset=0, data=data[:200]))

    run(partial())
    first.stop()
    second = Sim(tmp_path)  # same flash file

    async def finish():
        async with BandClient.open(second.address) as client:
            return await client.upload(data)

    try:
        assert run(finish()).resumed_from == 200
    finally:
        second.stop()


def test_refused_table_keeps_old_routine_and_reports_reason(sim):
    good = compile_routine(load_routine("nausea-pc6"))
    bad = bytearray(compile_routine(load_routine("desk-break")))
    bad[24 + 16 + 1] = 99  # record 1 names technique 99, which does not exist ...
    bad[4:8] = table_crc(bad).to_bytes(4, "little")  # ... in a table whose CRC is right: only the band's checks catch it

    async def job():
        async with BandClient.open(sim.address) as client:
            await client.upload(good)
            with pytest.raises(TableRefusedError, match="record 1") as refused:
                await client.upload(bytes(bad))
            return refused.value, await client.info()

    error, info = run(job())
    assert error.detail == 7  # TableError.BAD_RECORD
    assert info.routine_crc32 == zlib.crc32(good)


def test_garbage_on_the_line_does_not_break_the_next_command(sim):
    async def job():
        async with BandClient.open(sim.address) as client:
            await client.transport.send(os.urandom(300).replace(b"\x00", b"\x01") + b"\x00" + b"\x00\x05garbage\x00")
            await client.transport.send(encode_frame(encode_request(StatusRequest(), 200))[:-5])  # a torn frame
            await client.transport.send(b"\x00")
            return await client.info()

    assert run(job()).protocol_version == 1


def test_typed_request_returns_its_response_class(sim):
    async def job():
        async with BandClient.open(sim.address) as client:
            return await client.request(InfoRequest()), await client.request(StatusRequest())

    info, status = run(job())
    assert isinstance(info, InfoResponse) and info.protocol_version == 1 and not info.has_routine
    assert isinstance(status, StatusReport) and status.state == BandState.IDLE


def test_follow_yields_the_session_until_it_finishes(sim):
    data = compile_routine(load_routine("nausea-pc6"))

    async def job():
        async with BandClient.open(sim.address) as client:
            with pytest.raises(HandCueError, match="idle: start a routine first"):
                [status async for status in client.follow()]
            await client.upload(data)
            await client.start()
            return [status async for status in client.follow(poll_s=0.2)]

    statuses = run(job())
    *playing, final = statuses
    assert final.state == BandState.FINISHED and final.elapsed_ms == final.total_ms == read_table(data).total_ms
    assert all(status.state == BandState.RUNNING for status in playing)
    assert [status.cues for status in statuses] == sorted(status.cues for status in statuses)


def test_late_response_is_not_taken_for_the_next_request(tmp_path):
    band = Sim(tmp_path, "--baud", "1200")  # a slow line: INFO's answer takes about 0.4 s on the wire

    async def job():
        async with BandClient.open(band.address + "?baud=1200") as client:
            with pytest.raises(BandTimeout, match="INFO"):
                await client.request(InfoRequest(), timeout=0.05)
            abandoned = client._next_id
            reused = any(client._allocate_id() == abandoned for _ in range(300))  # answer still on the wire
            status = await client.status()  # asked while INFO's answer is still on its way
            return status, client.dropped_responses, reused

    try:
        status, dropped, reused = run(job())
    finally:
        band.stop()
    assert status.state == BandState.IDLE and status.total_ms == 0  # the STATUS answer, not INFO's late one
    assert dropped == 1  # the late INFO answer was dropped
    assert not reused  # its id stayed out of use while that answer could still come


def test_commands_on_empty_band_give_named_error(sim):
    async def job():
        async with BandClient.open(sim.address) as client:
            await client.start()

    with pytest.raises(BandError, match="no routine"):
        run(job())


def test_cli_against_sim(sim, tmp_path):
    def handcue(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=TIMEOUT)

    uploaded = handcue("upload", "nausea-pc6", "--to", sim.address)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "uploaded 124 bytes" in uploaded.stdout
    assert "124/124 bytes confirmed" in uploaded.stderr
    info = handcue("info", "--to", sim.address, "--json")
    assert json.loads(info.stdout)["routine_name"] == "Nausea relief (PC6)"
    started = handcue("start", "--to", sim.address, "--json")
    assert json.loads(started.stdout)["state"] in ("running", "finished")
    follow = handcue("follow", "--to", sim.address)
    assert follow.returncode == 0 and "finished after 10 min" in follow.stdout
    missing = handcue("info", "--to", "serial:/dev/does-not-exist")
    assert missing.returncode == 1 and "cannot open serial:/dev/does-not-exist: no such device" in missing.stderr
    assert missing.stderr.count("does-not-exist") == 1  # said once, not repeated from pyserial and the OS
    assert "Traceback" not in missing.stderr


def test_upload_with_start_leaves_the_band_playing_on_one_connection(sim):
    """``upload --start``: the band holds the routine and plays it, in one command (text and JSON)."""
    def handcue(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", *args],
                              capture_output=True, text=True, timeout=TIMEOUT)

    as_json = handcue("upload", "nausea-pc6", "--to", sim.address, "--start", "--json")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["crc32"] == f"0x{zlib.crc32(compile_routine(load_routine('nausea-pc6'))):08X}"
    assert answer["started"]["state"] in ("running", "finished") and answer["started"]["total_ms"] == answer["total_ms"]
    stopped = handcue("stop", "--to", sim.address)
    assert stopped.returncode == 0, stopped.stderr
    text = handcue("upload", "desk-break", "--to", sim.address, "--start")
    assert text.returncode == 0, text.stderr
    started_line = text.stdout.splitlines()[-1]
    assert started_line.startswith("started: ") and "step 1" in started_line  # numbered as on the card
    status = handcue("status", "--to", sim.address, "--json")
    assert json.loads(status.stdout)["state"] in ("running", "finished")


def test_verbose_prints_every_phase_from_the_cli_entry_to_the_disconnect(sim, tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HANDCUE_HCI": "tcp-client:127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "-v", "upload", "nausea-pc6", "--to", sim.address],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr
    listed = done.stderr.split("where the time went:\n", 1)[1].splitlines()
    names = [line.split(" ms  ", 1)[1].strip() for line in listed if " ms +" in line]
    assert listed[0].startswith("before 0.0 ms: the interpreter's start")
    assert names[:3] == ["imports (companion CLI)", "check the address (imports asyncio, the transports)", "imports (routine compiler)"]
    assert listed[1].split(" ms +")[0].strip() == "0.0"  # recorded from the CLI's entry
    for name in ("load and compile the routine", "imports (companion client, pyserial)", "open serial port", "INFO", "UPLOAD_BEGIN",
                 "disconnect", "close the event loop", "print the result"):
        assert name in names
    assert not any("bleak" in name or "bumble" in name for name in names)  # serial: no BLE library, even with HANDCUE_HCI set
    assert "of it in no phase above" in listed[-2] and listed[-1] == "after that: the interpreter's exit"


def test_not_a_band_times_out_with_clear_message(tmp_path):
    master, slave = os.openpty()  # a serial port with nothing behind it
    try:
        result = subprocess.run(
            [sys.executable, "-c", "from companion.cli import main; main()", "info", "--to", f"serial:{os.ttyname(slave)}", "--timeout", "0.5"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 1
    assert "no answer from serial:" in result.stderr and "INFO" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_by_another_companion_is_reported_busy(sim):
    async def job():
        async with BandClient.open(sim.address), BandClient.open(sim.address):
            pass

    with pytest.raises(Exception, match="busy: another program has the port open"):
        run(job())


def test_sim_process_plays_stored_routine_and_stops_cleanly(tmp_path):
    trace = tmp_path / "trace.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "--load", "headache-li4", "--start", "--clock", "virtual",
         "--trace", str(trace), "--exit-on-finish", "--flash", str(tmp_path / "flash.bin")],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    states = [e["state"] for e in events if e["event"] == "state"]
    assert states == ["running", "finished"]
    data = compile_routine(load_routine("headache-li4"))
    motor = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "motor"]
    assert motor == [e.to_json() for e in table_timeline(read_table(data))]
    # the flash file keeps the routine for the next boot
    again = Sim(tmp_path)
    try:
        info = run(_info(again.address))
        assert info.routine_crc32 == zlib.crc32(data)
    finally:
        again.stop()


async def _info(address: str):
    async with BandClient.open(address) as client:
        return await client.info()


def test_sigterm_while_serving_exits_zero(sim):
    assert sim.stop() == 0
