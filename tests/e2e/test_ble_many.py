"""Many bands, many clients, one event loop: the BLE host is an object, not a process-wide registry.

Two simulated bands advertise on one bumble virtual link; the companion reaches them
through ``BandClient`` (bleak's public BleakScanner/BleakClient on the bumble backend),
with one central host shared by both clients (as one ``--hci`` command does) or a host
each.  Closing one client must close only its own connection.  A band also serves
several centrals at once, in process and to several hosts attached to ``handcue-sim
--hci-server`` (each gets a controller of its own on the band's link).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Coroutine
from typing import Any

import pytest
from bumble.link import LocalLink

from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from companion.discovery import FoundBand, scan_bands
from firmware_sim.local import LocalBleBand
from protocol.constants import BandState, CueKind, Hands, TechniqueCode
from protocol.table import CuePattern, PatternSegment, StepRecord, StepTable, encode_table

TIMEOUT = 30.0
FIRST_ID, SECOND_ID = 0x1A2B, 0x3C4D


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def big_table(steps: int = 200) -> bytes:
    records = [StepRecord(TechniqueCode.COMBING, 2000 + 100 * (i % 7), start_pattern=0) for i in range(steps)]
    return encode_table(StepTable(hands=Hands.LEFT, records=records, patterns=[CuePattern((PatternSegment(100, 80),), "start")], done_pattern=0))


@pytest.mark.parametrize("shared", [True, False], ids=["one-shared-host", "a-host-each"])
def test_two_clients_to_two_bands_in_one_loop_are_independent(shared: bool) -> None:
    """Both clients connect and upload concurrently; closing the first mid-way through the
    second's upload leaves the second connected, its upload uninterrupted, its session going."""
    first_table = compile_routine(load_routine("nausea-pc6"))
    second_table = big_table()
    assert len(second_table) > 3000  # several windows, so the first client closes mid-upload

    async def main() -> None:
        link = LocalLink()
        async with (
            LocalBleBand(link=link, band_id=FIRST_ID) as first_band,
            LocalBleBand(link=link, band_id=SECOND_ID) as second_band,
            contextlib.AsyncExitStack() as hosts,
        ):
            first_host = await hosts.enter_async_context(BumbleCentral(link=link))
            second_host = first_host if shared else await hosts.enter_async_context(BumbleCentral(link=link))
            first = BandClient.open(f"ble:{first_band.name}", ble=first_host.backend)
            second = BandClient.open(f"ble:{second_band.name}", ble=second_host.backend)
            async with contextlib.AsyncExitStack() as clients:
                await asyncio.gather(clients.enter_async_context(first), clients.enter_async_context(second))
                assert len(first_band.ble.peripheral.connections) == len(second_band.ble.peripheral.connections) == 1
                first_info, second_info = await asyncio.gather(first.info(), second.info())
                assert (first_info.band_id, second_info.band_id) == (FIRST_ID, SECOND_ID)

                await first.upload(first_table)
                closing: list[asyncio.Task[None]] = []

                def close_first_mid_upload(confirmed: int, total: int) -> None:
                    if 0 < confirmed < total and not closing:
                        closing.append(asyncio.ensure_future(first.close()))

                result = await second.upload(second_table, close_first_mid_upload)
                assert closing, "the first client was never closed during the upload"
                await closing[0]

                assert first_band.ble.peripheral.connections == []
                assert len(second_band.ble.peripheral.connections) == 1
                assert (result.resumed_from, result.retransmissions) == (0, 0)
                assert second_band.band.storage.active_table() == second_table
                assert first_band.band.storage.active_table() == first_table
                assert (await second.start()).state == BandState.RUNNING
                assert (await second.info()).routine_crc32 == zlib.crc32(second_table)
                if shared:  # the host the closed client used is still up for the other
                    assert first_host is second_host and first_host._stack is not None

    run(main())


def test_scan_bands_finds_both_bands_as_typed_results() -> None:
    """companion.discovery.scan_bands: one FoundBand per band on the link, sorted by name, battery from the advertisement."""

    async def main() -> list[FoundBand]:
        link = LocalLink()
        async with (
            LocalBleBand(link=link, band_id=SECOND_ID, battery_percent=42),
            LocalBleBand(link=link, band_id=FIRST_ID),
            BumbleCentral(link=link) as central,
        ):
            return await scan_bands(1.0, central.backend)

    bands = run(main())
    assert [(band.name, band.battery, band.band_address) for band in bands] == [
        ("HandCue-1A2B", 87, "ble:HandCue-1A2B"),
        ("HandCue-3C4D", 42, "ble:HandCue-3C4D"),
    ]
    assert all(band.rssi < 0 and band.address.count(":") == 5 for band in bands)
    assert bands[0].to_json() == {"name": "HandCue-1A2B", "address": bands[0].address, "rssi": bands[0].rssi, "battery": 87}


def ticking_table(steps: int = 50) -> bytes:
    """Steps of 4 s with a tick every second: a steady stream of cue notifications."""
    tick = CuePattern((PatternSegment(50, 60),), "tick")
    records = [StepRecord(TechniqueCode.COMBING, 4000, tick_every_ms=1000, tick_pattern=0) for _ in range(steps)]
    return encode_table(StepTable(hands=Hands.LEFT, records=records, patterns=[tick], done_pattern=0))


def test_a_second_central_runs_status_pause_resume_while_the_first_follows() -> None:
    """Two centrals on one band: the first follows the session's notifications (as
    ``handcue follow`` does) while the second asks status, pauses and resumes.  The
    first sees the second's pause and resume, its stream keeps going afterwards, and
    its own requests still get their own answers; the second never sees the first's."""
    from firmware_sim.clock import RealClock

    async def main() -> None:
        link = LocalLink()
        async with (
            LocalBleBand(ticking_table(), link=link, clock=RealClock(speed=20)) as local,
            BumbleCentral(link=link) as first_host,
            BumbleCentral(link=link) as second_host,
            BandClient.open(f"ble:{local.name}", ble=first_host.backend) as follower,
        ):
            await follower.start()
            seen: list[BandState | None] = []
            cues_after_resume = asyncio.Event()
            resumed = asyncio.Event()

            async def follow() -> None:
                async for status in follower.notifications(timeout=5.0):
                    seen.append(status.state)
                    if resumed.is_set() and status.state == BandState.RUNNING and status.last_cue == CueKind.TICK:
                        cues_after_resume.set()
                        return

            following = asyncio.create_task(follow())
            async with BandClient.open(f"ble:{local.name}", ble=second_host.backend) as second:
                assert len(local.ble.peripheral.connections) == 2
                assert (await second.status()).state == BandState.RUNNING
                assert (await second.pause()).state == BandState.PAUSED
                assert (await follower.status()).state == BandState.PAUSED  # the follower's own request, its own answer
                assert (await second.resume()).state == BandState.RUNNING
                resumed.set()
                await asyncio.wait_for(following, 10.0)
                assert second.dropped_responses == 0
            assert BandState.PAUSED in seen and seen.index(BandState.PAUSED) < len(seen) - 1
            assert follower.dropped_responses == 0
            assert (await follower.status()).state == BandState.RUNNING  # the second central left; the first goes on

    run(main())


def test_two_companion_hosts_on_a_served_band_across_processes(tmp_path: Any) -> None:
    """``handcue-sim --hci-server`` gives every companion host its own controller on the band's
    link: two hosts attach at once, one follows while the other pauses and resumes, and the
    follower's session survives the other host going away."""
    import subprocess
    import sys
    from pathlib import Path

    from ble_stack.addresses import free_tcp_port

    table_path = tmp_path / "ticking.hcue"
    table_path.write_bytes(ticking_table())
    port = free_tcp_port()
    hci = f"tcp-client:127.0.0.1:{port}"
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--load", str(table_path), "--speed", "20"],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip

    async def main() -> None:
        async with BumbleCentral(hci=hci) as first_host, BandClient.open("ble:HandCue-1A2B", ble=first_host.backend) as follower:
            await follower.start()
            async with BumbleCentral(hci=hci) as second_host, BandClient.open("ble:HandCue-1A2B", ble=second_host.backend) as second:
                assert (await second.pause()).state == BandState.PAUSED
                assert (await follower.status()).state == BandState.PAUSED
                assert (await second.resume()).state == BandState.RUNNING
            ticks_after = None
            async for status in follower.follow(poll_s=5.0):  # the stream goes on after the other host left
                ticks_after = status.cues if ticks_after is None else ticks_after  # follow starts from a fresh status
                if status.last_cue == CueKind.TICK and status.cues > ticks_after:
                    break
            assert (await follower.status()).state == BandState.RUNNING

    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")
        run(main())
    finally:
        sim.terminate()
        sim.wait(10)
