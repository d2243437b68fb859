"""End to end: the cue strength set from the companion over a real pty scales the band's motor trace, and survives a reboot."""

from __future__ import annotations

import json
import subprocess
import sys

from companion import compile_routine, load_routine, read_table, table_timeline
from companion.client import BandClient
from firmware_sim.flash import Flash
from firmware_sim.history import ClockKind, Outcome
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.errors import BadRequestError

from .test_serial_e2e import Sim, play, run


def test_strength_set_by_the_companion_scales_the_band_trace(tmp_path):
    band = Sim(tmp_path)
    data = compile_routine(load_routine("nausea-pc6"))

    async def session() -> tuple[int, int]:
        async with BandClient.open(band.address) as client:
            before = (await client.settings()).strength
            stored = (await client.set_strength(35)).strength
            await client.set_time(1_764_655_200_000)
        return before, stored

    assert run(session()) == (100, 35)
    run(play(band.address, data))
    assert band.stop() == 0
    expected = [e.to_json() for e in table_timeline(read_table(data), 35)]
    assert band.motor_trace() == expected
    assert expected != [e.to_json() for e in table_timeline(read_table(data))]
    [session] = Storage(Flash(FLASH_SIZE, band.flash)).history.sessions()  # the band logged the session, in wall-clock time
    assert (session.outcome, session.clock, session.played_ms) == (Outcome.FINISHED, ClockKind.UNIX_MS, read_table(data).total_ms)
    assert session.start >= 1_764_655_200_000 and session.routine_name == read_table(data).name

    again = Sim(tmp_path)  # the same flash file: the setting was stored on the band
    try:
        result = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "settings", "--to", again.address, "--json"],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"strength": 35}
    finally:
        again.stop()


def test_settings_cli_stores_and_refuses_out_of_range(tmp_path):
    band = Sim(tmp_path)
    try:
        cli = [sys.executable, "-c", "from companion.cli import main; main()", "settings", "--to", band.address]
        stored = subprocess.run([*cli, "--strength", "70"], capture_output=True, text=True, timeout=30, check=False)
        assert (stored.returncode, stored.stdout.strip()) == (0, "cue strength: 70 % (stored)")
        refused = subprocess.run([*cli, "--strength", "10"], capture_output=True, text=True, timeout=30, check=False)
        assert refused.returncode != 0 and "10" in refused.stderr and "Traceback" not in refused.stderr

        async def raw_out_of_range() -> str:
            from protocol.messages import SetSettingsRequest

            async with BandClient.open(band.address) as client:
                try:
                    await client.request(SetSettingsRequest(strength=101))
                except BadRequestError as exc:
                    return str(exc)
                return ""

        assert "101" in run(raw_out_of_range())  # the band checks too, and keeps what it had
        shown = subprocess.run(cli, capture_output=True, text=True, timeout=30, check=False)
        assert shown.stdout.strip() == "cue strength: 70 %"
    finally:
        band.stop()
