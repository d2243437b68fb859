"""Many bands at once: eight simulated bands on one virtual link, one companion host, bleak on bumble.

One band dies mid-upload (its BLE side closes, as if its battery went flat); the seven
others still receive the whole table, and the dead band's result says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from bumble.link import LocalLink

from companion.ble.bumble_backend import BumbleCentral
from companion.fleet import command_to_many, expand_targets, summary_table, upload_to_many
from firmware_sim.local import LocalBleBand
from protocol.constants import Hands, TechniqueCode
from protocol.table import CuePattern, PatternSegment, StepRecord, StepTable, encode_table

TIMEOUT = 60.0
BANDS = 8
DYING = 3
"""Index of the band that dies mid-upload."""


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def table(steps: int = 150) -> bytes:
    records = [StepRecord(TechniqueCode.COMBING, 2000 + 100 * (i % 7), start_pattern=0) for i in range(steps)]
    return encode_table(StepTable(hands=Hands.LEFT, records=records, patterns=[CuePattern((PatternSegment(100, 80),), "start")], done_pattern=0))


def test_eight_band_upload_with_one_band_dying_mid_upload() -> None:
    data = table()
    assert len(data) > 2000  # several windows: the dying band is caught mid-way

    async def main() -> None:
        link = LocalLink()
        async with contextlib.AsyncExitStack() as stack:
            bands = [await stack.enter_async_context(LocalBleBand(link=link, band_id=0xB000 + i)) for i in range(BANDS)]
            central = await stack.enter_async_context(BumbleCentral(link=link))
            addresses = await expand_targets(["ble:HandCue-B00*"], central.backend, scan_timeout=1.5)
            assert addresses == [f"ble:{band.name}" for band in bands]
            dying = bands[DYING]
            killed: list[asyncio.Task[None]] = []
            seen: dict[str, int] = {}

            def progress(address: str, confirmed: int, total: int) -> None:
                seen[address] = confirmed
                if address == f"ble:{dying.name}" and 0 < confirmed < total and not killed:
                    killed.append(asyncio.ensure_future(dying.ble.close()))

            results = await upload_to_many(addresses, data, ble=central.backend, timeout=3.0, progress=progress)
            assert killed, "the dying band was never caught mid-upload"
            assert [result.address for result in results] == addresses
            for index, (band, result) in enumerate(zip(bands, results, strict=True)):
                if index == DYING:
                    assert not result.ok and result.error and 0 < result.bytes < len(data)
                    assert band.band.storage.active_table() is None
                else:
                    assert (result.ok, result.bytes) == (True, len(data)), result.error
                    assert band.band.storage.active_table() == data
            assert all(seen[address] == len(data) for index, address in enumerate(addresses) if index != DYING)

            lines = summary_table(results).splitlines()
            assert lines[0].split() == ["band", "bytes", "time", "result"] and len(lines) == BANDS + 1
            assert f"ble:{dying.name}" in lines[DYING + 1] and "FAILED" in lines[DYING + 1]
            assert all(line.endswith("ok") for index, line in enumerate(lines[1:]) if index != DYING)

            alive = [address for index, address in enumerate(addresses) if index != DYING]
            started = await command_to_many(alive, "start", ble=central.backend)
            assert [(result.ok, result.state) for result in started] == [(True, "running")] * (BANDS - 1)

    run(main())
