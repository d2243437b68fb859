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
from protocol.constants import BandState, Hands, TechniqueCode
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


def test_fleet_upload_prints_a_summary_and_fails_when_a_band_is_missing(capsys: Any) -> None:
    """The CLI side: plain progress lines per band, the summary table (or JSON), exit code 1 when one band fails."""
    import json

    from companion.cli_fleet import fleet_command, fleet_upload, is_fleet

    data = table(20)
    assert is_fleet(["ble:A", "ble:B"]) and is_fleet(["ble:HandCue-*"]) and not is_fleet(["ble:HandCue-1A2B"])

    async def main() -> tuple[int, int, int]:
        link = LocalLink()
        async with (
            LocalBleBand(link=link, band_id=0xC001) as first,
            LocalBleBand(link=link, band_id=0xC002) as second,
            BumbleCentral(link=link) as central,
        ):
            ok = await fleet_upload(["ble:HandCue-C00*"], data, central.backend, timeout=3.0, scan_timeout=1.5)
            assert first.band.storage.active_table() == second.band.storage.active_table() == data
            missing = await fleet_command([f"ble:{first.name}", "ble:HandCue-DEAD"], "start", central.backend, timeout=1.0, as_json=True)
            assert first.band.status().state in (BandState.RUNNING, BandState.FINISHED)  # a virtual clock plays it at once
            return ok, missing, 0

    ok, missing, _ = run(main())
    out, err = capsys.readouterr()
    assert ok == 0 and missing == 1
    table_text, json_text = out.split("\n[", 1)
    assert table_text.splitlines()[1].split()[:4] == ["ble:HandCue-C001", str(len(data)), table_text.splitlines()[1].split()[2], "s"]
    assert [line.split()[-1] for line in table_text.splitlines()[1:]] == ["ok", "ok"]
    results = json.loads("[" + json_text)
    assert [(r["band"], r["ok"], r["state"]) for r in results] == [("ble:HandCue-C001", True, "running"), ("ble:HandCue-DEAD", False, None)]
    assert "no band advertising as HandCue-DEAD" in results[1]["error"]
    assert f"upload to ble:HandCue-C002: {len(data)}/{len(data)} bytes confirmed (100%)" in err


def test_handcue_sim_bands_serves_several_bands_on_one_controller(tmp_path: Any) -> None:
    """``handcue-sim --bands 3``: three bands (distinct ids, names, addresses, flash files) behind
    one served controller; a fleet upload over a pattern reaches all three from another process."""
    import subprocess
    import sys
    from pathlib import Path

    from ble_stack.addresses import free_tcp_port
    from companion.discovery import scan_bands

    root = Path(__file__).resolve().parents[2]
    port = free_tcp_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--bands", "3", "--band-id", "0A01",
         "--flash", str(tmp_path / "band.bin")],
        stdout=subprocess.PIPE, cwd=root,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        lines = [sim.stdout.readline().decode().split() for _ in range(3)]
        assert [line[1] for line in lines] == ["HandCue-0A01", "HandCue-0A02", "HandCue-0A03"]
        assert len({line[2] for line in lines}) == 3
        data = table(20)

        async def main() -> None:
            async with BumbleCentral(hci=f"tcp-client:127.0.0.1:{port}") as central:
                assert [band.name for band in await scan_bands(1.5, central.backend)] == ["HandCue-0A01", "HandCue-0A02", "HandCue-0A03"]
                results = await upload_to_many(await expand_targets(["ble:HandCue-0A0?"], central.backend), data, ble=central.backend)
                assert [(result.ok, result.bytes) for result in results] == [(True, len(data))] * 3

        run(main())
        assert sorted(path.name for path in tmp_path.glob("*.bin")) == ["band-0A02.bin", "band-0A03.bin", "band.bin"]
    finally:
        sim.terminate()
        sim.wait(10)
