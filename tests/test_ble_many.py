"""Many bands, many clients, one event loop: the BLE host is an object, not a process-wide registry.

Two simulated bands advertise on one bumble virtual link; the companion reaches them
through ``BandClient`` (bleak's public BleakScanner/BleakClient on the bumble backend),
with one central host shared by both clients (as with ``--hci``, where only one host
can attach to a served controller) or a host each.  Closing one client must close
only its own connection.
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
from protocol.constants import BandState, Hands, TechniqueCode
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
