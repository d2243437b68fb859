"""Link fault injection: the spec string, the seeded fault model, and the faults on the pty and on BLE."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time

import pytest
import serial

from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from firmware_sim.link_faults import DEFAULT_STALL_PROBABILITY, FaultSpec, FaultSpecError, LinkFaults
from firmware_sim.local import LocalBleBand
from firmware_sim.serial_port import PtySerialPort
from protocol.errors import HandCueError

TIMEOUT = 20
ADDRESS = "ble:HandCue-1A2B"


# ------------------------------------------------------------------ the spec


def test_the_issue_example_parses_to_typed_fields():
    spec = FaultSpec.parse("corrupt=0.01,drop=0.005,dup=0.005,disconnect=0.0005,stall=200ms")
    assert spec == FaultSpec(corrupt=0.01, drop=0.005, dup=0.005, disconnect=0.0005, stall=DEFAULT_STALL_PROBABILITY, stall_s=0.2)
    assert FaultSpec.parse(str(spec)) == spec


def test_percentages_seconds_and_explicit_stall_probability():
    spec = FaultSpec.parse(" corrupt = 1% , stall=0.5s@0.02 ")
    assert (spec.corrupt, spec.stall_s, spec.stall) == (0.01, 0.5, 0.02)
    assert not FaultSpec.parse("")
    assert str(FaultSpec()) == "none"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("corrupt=2", "between 0 and 1"),
        ("corrupt=x", "not a probability"),
        ("noise=0.1", "unknown fault 'noise'"),
        ("drop", "expected KEY=VALUE"),
        ("stall=200", "not a duration"),
        ("drop=0.1,drop=0.2", "drop given twice"),
        ("drop=0.6,dup=0.6", "add up to 1.2"),
    ],
)
def test_bad_specs_say_which_part_is_wrong(text, message):
    with pytest.raises(FaultSpecError, match=message):
        FaultSpec.parse(text)


def test_bad_spec_on_the_command_line_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "firmware_sim", "--faults", "corrupt=2"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "Invalid value for '--faults'" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ the model


def payload(size: int = 100_000) -> bytes:
    return random.Random(1).randbytes(size)


def test_same_seed_same_faults_whatever_the_chunking():
    data = payload()
    spec = FaultSpec.parse("corrupt=0.01,drop=0.005,dup=0.005,stall=10ms@0.001")
    whole = LinkFaults(spec, seed=42).stream("serial.rx").apply_bytes(data)
    stream = LinkFaults(spec, seed=42).stream("serial.rx")
    cuts = sorted(random.Random(2).sample(range(1, len(data)), 500))
    pieces = [stream.apply_bytes(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert b"".join(p.data for p in pieces) == whole.data
    assert sum(piece.delay_s for p in pieces for piece in p.pieces) == pytest.approx(sum(piece.delay_s for piece in whole.pieces))
    other_seed = LinkFaults(spec, seed=43).stream("serial.rx").apply_bytes(data)
    assert other_seed.data != whole.data
    other_direction = LinkFaults(spec, seed=42).stream("serial.tx").apply_bytes(data)
    assert other_direction.data != whole.data


def test_fault_rates_follow_the_spec():
    data = payload()
    faults = LinkFaults(FaultSpec.parse("corrupt=0.01,drop=0.005,dup=0.005,stall=1ms@0.002"), seed=7)
    result = faults.stream("s").apply_bytes(data)
    for kind, rate in (("corrupt", 0.01), ("drop", 0.005), ("dup", 0.005), ("stall", 0.002)):
        expected = rate * len(data)
        assert abs(faults.counts[f"s.{kind}"] - expected) < 5 * expected**0.5, kind  # five standard deviations
    assert len(result.data) == len(data) - faults.counts["s.drop"] + faults.counts["s.dup"]
    assert len([p for p in result.pieces if p.delay_s]) == faults.counts["s.stall"]


def test_each_kind_does_what_it_says():
    data = bytes(range(1, 201))
    assert LinkFaults(FaultSpec(drop=1.0), 1).stream("s").apply_bytes(data).data == b""
    assert LinkFaults(FaultSpec(dup=1.0), 1).stream("s").apply_bytes(data).data == bytes(b for b in data for _ in range(2))
    corrupted = LinkFaults(FaultSpec(corrupt=1.0), 1).stream("s").apply_bytes(data).data
    assert len(corrupted) == len(data) and all(a != b for a, b in zip(corrupted, data, strict=True))
    cut = LinkFaults(FaultSpec(disconnect=1.0), 1).stream("s").apply_bytes(data)
    assert cut.disconnect and cut.data == b""
    stalled = LinkFaults(FaultSpec(stall=1.0, stall_s=0.2), 1).stream("s").apply_bytes(b"ab")
    assert [(p.delay_s, p.data) for p in stalled.pieces] == [(0.2, b"a"), (0.2, b"b")]
    packet = LinkFaults(FaultSpec(corrupt=1.0), 1).stream("p").apply_packet(data).data
    assert len(packet) == len(data) and sum(a != b for a, b in zip(packet, data, strict=True)) == 1
    assert LinkFaults(FaultSpec(dup=1.0), 1).stream("p").apply_packet(b"xy").data == b"xyxy"
    assert LinkFaults(FaultSpec(disconnect=1.0), 1).stream("p").apply_packet(b"xy").disconnect


def test_a_fresh_seed_is_drawn_and_told():
    assert len({LinkFaults(FaultSpec()).seed for _ in range(5)}) > 1
    assert "(seed 99)" in LinkFaults(FaultSpec(drop=0.1), 99).describe()


def test_sim_prints_the_seed_it_drew():
    process = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--serial", "pty", "--faults", "corrupt=0.01"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("serial: ")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert "faults: corrupt=0.01 (seed " in stderr


# ------------------------------------------------------------------ on the pty


class RecordingHandler:
    """Stands in for the protocol handler at its byte-level entry: records what the band receives."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.send = None

    def attach(self, name, send):
        self.send = send

    def detach(self, name):
        self.send = None

    def receive(self, name, chunk):
        self.received += chunk


async def _pty_exchange(spec: FaultSpec, sent: bytes, answer: bytes, expect: tuple[int, int] = (0, 0)) -> tuple[bytes, bytes, PtySerialPort]:
    """Send ``sent`` to the band and ``answer`` from it; wait (up to a deadline) for ``expect`` bytes each way."""
    handler = RecordingHandler()
    port = PtySerialPort(handler, faults=LinkFaults(spec, seed=5))  # type: ignore[arg-type]
    server = asyncio.create_task(port.serve())
    companion = serial.Serial(port.path, timeout=0.2)
    loop = asyncio.get_running_loop()
    try:
        for offset in range(0, len(sent), 97):  # a companion writing in small pieces
            companion.write(sent[offset : offset + 97])
            await asyncio.sleep(0.002)
        deadline = loop.time() + 0.3 + (5 if expect[0] else 0)
        while len(handler.received) < max(expect[0], 1) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        handler.send(answer)
        got = b""
        deadline = loop.time() + 0.3 + (5 if expect[1] else 0)
        while len(got) < max(expect[1], 1) and loop.time() < deadline:
            got += await asyncio.to_thread(companion.read, 4096)
    finally:
        companion.close()
        server.cancel()
        port.close()
    return bytes(handler.received), got, port


def test_pty_applies_the_seeded_faults_in_both_directions():
    spec = FaultSpec.parse("corrupt=0.01,drop=0.01,dup=0.01")
    sent, answer = payload(3000), payload(2000)[::-1]
    # The faults hit the very bytes the model predicts for that seed: a failure replays.
    expected_in = LinkFaults(spec, seed=5).stream("serial.rx").apply_bytes(sent).data
    expected_out = LinkFaults(spec, seed=5).stream("serial.tx").apply_bytes(answer).data
    received, got, _ = asyncio.run(_pty_exchange(spec, sent, answer, (len(expected_in), len(expected_out))))
    assert received != sent and got != answer
    assert received == expected_in
    assert got == expected_out


def test_pty_disconnect_is_a_cable_pull_that_keeps_the_port():
    received, got, port = asyncio.run(_pty_exchange(FaultSpec(disconnect=1.0), b"hello", b"answer"))
    assert (received, got) == (b"", b"")
    assert port.cable_pulls >= 1


def test_pty_stall_pauses_the_band_input():
    async def job() -> float:
        handler = RecordingHandler()
        port = PtySerialPort(handler, faults=LinkFaults(FaultSpec(stall=1.0, stall_s=0.05), seed=1))  # type: ignore[arg-type]
        server = asyncio.create_task(port.serve())
        companion = serial.Serial(port.path)
        try:
            start = time.monotonic()
            companion.write(b"abcd")
            while len(handler.received) < 4:
                await asyncio.sleep(0.005)
            return time.monotonic() - start
        finally:
            companion.close()
            server.cancel()
            port.close()

    assert asyncio.run(asyncio.wait_for(job(), TIMEOUT)) >= 4 * 0.05


# ------------------------------------------------------------------ on BLE


async def _ble_info(spec: FaultSpec) -> tuple[LocalBleBand, BaseException | None]:
    band = LocalBleBand(compile_routine(load_routine("nausea-pc6")))
    band.ble.faults = LinkFaults(spec, seed=3)
    error = None
    async with band, BumbleCentral(link=band.link) as central:
        try:
            async with BandClient.open(ADDRESS, ble=central.backend, timeout=1.5) as client:
                await client.info()
        except HandCueError as exc:
            error = exc
        band.frames = band.handler.stats.frames  # type: ignore[attr-defined]
        band.dropped = band.handler.stats.dropped  # type: ignore[attr-defined]
    return band, error


def test_ble_drop_loses_every_write():
    band, error = asyncio.run(asyncio.wait_for(_ble_info(FaultSpec(drop=1.0)), TIMEOUT))
    assert error is not None and "INFO" in str(error).upper()
    assert band.ble.peripheral.rx_writes >= 1 and band.frames == 0


def test_ble_corrupt_garbles_every_write():
    band, error = asyncio.run(asyncio.wait_for(_ble_info(FaultSpec(corrupt=1.0)), TIMEOUT))
    assert error is not None
    assert band.frames == 0 and band.dropped >= 1


def test_ble_dup_delivers_every_write_twice():
    band, error = asyncio.run(asyncio.wait_for(_ble_info(FaultSpec(dup=1.0)), TIMEOUT))
    assert error is None  # the companion takes the first answer of the two
    assert band.frames == 6  # INFO and SET_TIME at connect, then info(): each parsed twice


def test_ble_disconnect_drops_the_connection():
    band, error = asyncio.run(asyncio.wait_for(_ble_info(FaultSpec(disconnect=1.0)), TIMEOUT))
    assert error is not None
    assert band.frames == 0 and not band.ble.peripheral.connections
