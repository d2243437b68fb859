"""Many bands at once: eight simulated bands on one virtual link, one companion host, bleak on bumble.

One band dies mid-upload (its BLE side closes, as if its battery went flat); the seven
others still receive the whole table, and the dead band's result says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from bumble.link import LocalLink
from click.testing import CliRunner, Result

from companion.ble.bumble_backend import BumbleCentral
from companion.fleet import command_to_many, expand_targets, summary_table, upload_to_many
from firmware_sim.local import LocalBleBand
from protocol.constants import DEFAULT_UPLOAD_WINDOW, MAX_FRAME_PAYLOAD, BandState, Hands, TechniqueCode
from protocol.table import CuePattern, PatternSegment, StepRecord, StepTable, encode_table

ROOT = Path(__file__).resolve().parents[2]
ROUTINE = "nausea-pc6"
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
    data = table(1000)
    assert len(data) > 3 * DEFAULT_UPLOAD_WINDOW * MAX_FRAME_PAYLOAD  # several windows: the dying band is caught mid-way

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


def test_fleet_upload_with_start_starts_every_band_or_none(capsys: Any) -> None:
    """``upload --start`` to several bands: all play once all hold the routine; when one upload fails, none starts."""
    from companion.cli_fleet import fleet_upload

    data = table(20)

    async def main() -> tuple[int, int, list[BandState], list[BandState]]:
        link = LocalLink()
        async with (
            LocalBleBand(link=link, band_id=0xD001) as first,
            LocalBleBand(link=link, band_id=0xD002) as second,
            BumbleCentral(link=link) as central,
        ):
            both = await fleet_upload(["ble:HandCue-D00*"], data, central.backend, timeout=3.0, scan_timeout=1.5, silent=True, start=True,
                                      as_json=True)
            after_both = [first.band.status().state, second.band.status().state]
            for band in (first, second):
                band.band.stop()
            partial = await fleet_upload([f"ble:{first.name}", "ble:HandCue-DEAD"], data, central.backend, timeout=1.0, silent=True, start=True)
            after_partial = [first.band.status().state, second.band.status().state]
            held = await fleet_upload([f"ble:{first.name}", "ble:HandCue-DEAD"], data, central.backend, timeout=1.0, start=True, as_json=True)
            assert held == 1 and first.band.status().state == BandState.IDLE
            return both, partial, after_both, after_partial

    both, partial, after_both, after_partial = run(main())
    out, err = capsys.readouterr()
    import json

    first_array, second_array = out[: out.index("\n]") + 2], out[out.rindex("\n[\n") + 1 :]  # between them: the text summary
    answers = json.loads(first_array)  # --json: one array, each band's upload with the state START left it in
    assert [(answer["ok"], answer["bytes"], answer["started"] in ("running", "finished"), answer["start_error"]) for answer in answers] == [
        (True, len(data), True, None)] * 2
    held_back = json.loads(second_array)  # an upload failed: no band started, and each says why
    assert [(answer["ok"], answer["started"]) for answer in held_back] == [(True, None), (False, None)]
    assert all("none started: every band must hold the routine first" in answer["start_error"] for answer in held_back)
    assert both == 0 and all(state in (BandState.RUNNING, BandState.FINISHED) for state in after_both)
    assert partial == 1 and after_partial == [BandState.IDLE, BandState.IDLE]
    assert "none started: every band must hold the routine first" in err


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


# --------------------------------------------------------------------------
# Through the CLI: `handcue upload/start/stop --to A --to B` and `--to 'ble:HandCue-*'`


@pytest.fixture(scope="module")
def three_bands(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``handcue-sim --bands 3`` (HandCue-0D01..0D03) serving a virtual controller; yields the companion's --hci."""
    import subprocess
    import sys

    from ble_stack.addresses import free_tcp_port

    port = free_tcp_port()
    folder = tmp_path_factory.mktemp("fleet-cli")
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--bands", "3", "--band-id", "0D01",
         "--flash", str(folder / "band.bin")],
        stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        assert [sim.stdout.readline().split()[1] for _ in range(3)] == [b"HandCue-0D01", b"HandCue-0D02", b"HandCue-0D03"]
        yield f"tcp-client:127.0.0.1:{port}"
    finally:
        sim.terminate()
        sim.wait(10)


def handcue(*args: str) -> Result:
    from companion.cli import cli

    return CliRunner().invoke(cli, list(args))


@pytest.fixture(autouse=True)
def own_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI remembers bands and tables under the user's config folder: a fresh one per test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("HANDCUE_ADDRESS", raising=False)
    monkeypatch.delenv("HANDCUE_BLE_BACKEND", raising=False)


def test_cli_upload_to_a_pattern_then_start_and_stop_several_bands(three_bands: str) -> None:
    """One upload over a pattern reaches the three bands (a progress line each, the summary table);
    start and stop with several --to answer one row per band, in JSON too."""
    from companion import compile_routine, load_routine

    size = len(compile_routine(load_routine(ROUTINE)))
    done = handcue("upload", ROUTINE, "--to", "ble:HandCue-0D0?", "--hci", three_bands)
    assert done.exit_code == 0, done.output + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["band", "bytes", "time", "result"]
    assert [(row[0], row[1], row[-1]) for row in rows[1:]] == [(f"ble:HandCue-0D0{i}", str(size), "ok") for i in (1, 2, 3)]
    for i in (1, 2, 3):
        assert f"upload to ble:HandCue-0D0{i}: {size}/{size} bytes confirmed (100%)" in done.stderr

    started = handcue("start", "--to", "ble:HandCue-0D01", "--to", "ble:HandCue-0D03", "--hci", three_bands, "--json")
    assert started.exit_code == 0, started.output
    assert [(r["band"], r["ok"], r["state"]) for r in json.loads(started.stdout)] == [
        ("ble:HandCue-0D01", True, "running"), ("ble:HandCue-0D03", True, "running")]
    stopped = handcue("stop", "--to", "ble:HandCue-0D0*", "--hci", three_bands)
    assert stopped.exit_code == 0, stopped.output
    assert [line.split()[0] for line in stopped.stdout.splitlines()[1:]] == [f"ble:HandCue-0D0{i}" for i in (1, 2, 3)]
    assert all("ok" in line for line in stopped.stdout.splitlines()[1:])


def test_cli_fleet_upload_exits_1_when_one_band_fails_and_the_others_still_get_it(three_bands: str) -> None:
    done = handcue("upload", ROUTINE, "--to", "ble:HandCue-0D02", "--to", "ble:HandCue-DEAD", "--hci", three_bands, "--timeout", "1", "--json")
    assert done.exit_code == 1
    results = json.loads(done.stdout)
    assert [(r["band"], r["ok"]) for r in results] == [("ble:HandCue-0D02", True), ("ble:HandCue-DEAD", False)]
    assert "no band advertising as HandCue-DEAD" in results[1]["error"]
    plain = handcue("upload", ROUTINE, "--to", "ble:HandCue-0D02", "--to", "ble:HandCue-DEAD", "--hci", three_bands, "--timeout", "1")
    assert plain.exit_code == 1
    assert plain.stderr.splitlines()[-1] == "error: 1 of 2 bands failed"
    nothing = handcue("upload", ROUTINE, "--to", "ble:Nobody-*", "--hci", three_bands)
    assert nothing.exit_code == 1 and nothing.stderr.startswith("error: ble:Nobody-*: no band seen within 3 s matches (seen: HandCue-0D01")


def test_cli_single_to_keeps_the_one_band_output(three_bands: str) -> None:
    """One --to: today's lines, no table."""
    done = handcue("upload", ROUTINE, "--to", "ble:HandCue-0D03", "--hci", three_bands)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("uploaded ") and "routine lasts" in done.stdout and "band" not in done.stdout.split()[0]
    assert len(done.stdout.splitlines()) == 1
    started = handcue("start", "--to", "ble:HandCue-0D03", "--hci", three_bands)
    assert started.exit_code == 0 and started.stdout.startswith("[") and "left" in started.stdout
    stopped = handcue("stop", "--to", "ble:HandCue-0D03", "--hci", three_bands, "--json")
    assert stopped.exit_code == 0 and json.loads(stopped.stdout)["state"] in ("idle", "stopped")
