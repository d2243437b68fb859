"""The conventions of the field (issue 12, point 6): --json, -v/-q, a default band, completion, addresses, BLE names.

Band commands run against a real `handcue-sim --serial pty` process (pyserial on a pty)
or an in-process band on bumble's virtual link, as in the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion import TransportError, compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.cli import cli
from companion.client import BandClient
from firmware_sim.local import LocalBleBand

from ..e2e.test_serial_e2e import Sim

PC6 = compile_routine(load_routine("nausea-pc6"))


@pytest.fixture(autouse=True)
def own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config and cache folder of the test's own (platformdirs honours XDG_*), and no default band from outside."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HANDCUE_ADDRESS", raising=False)
    return tmp_path


@pytest.fixture
def sim(tmp_path: Path):
    band = Sim(tmp_path)
    yield band
    if band.process.poll() is None:
        band.stop()


def handcue(*args: str, input: bytes | None = None, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="handcue")


# --------------------------------------------------------------------------
# --json, and errors as JSON


def test_check_json_lists_every_diagnostic_and_exits_1_on_errors(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\n[[steps]]\ntechnique = "combing"\nduration = "soon"\nnote = 3\n')
    result = handcue("check", "--json", str(bad))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert [d["where"] for d in doc["diagnostics"]] == ["steps[0] (step 1, combing).duration", "steps[0] (step 1, combing).note"]
    good = json.loads(handcue("check", "--json", "nausea-pc6").stdout)
    assert (good["ok"], good["duration_ms"], good["size_no_names"]) == (True, 600_000, 76)


def test_compile_json(tmp_path: Path):
    out = tmp_path / "pc6.hcue"
    doc = json.loads(handcue("compile", "nausea-pc6", "-o", str(out), "--json").stdout)
    assert doc == {"output": str(out), "size": 124, "crc32": "0xD5BF511B", "names": True, "warnings": []}
    assert out.read_bytes() == PC6


@pytest.mark.parametrize("args", [["check", "--json", "nope.toml"], ["inspect", "--json", "nope.toml"], ["info", "--json", "--to", "serial:/dev/does-not-exist"]])
def test_errors_are_json_under_json(args: list[str]):
    result = handcue(*args)
    assert result.exit_code == 1
    assert set(json.loads(result.stdout)) == {"error"}
    assert result.stderr == ""


def test_upload_and_erase_json_and_band_remembered_for_completion(sim: Sim):
    uploaded = handcue("upload", "nausea-pc6", "--to", sim.address, "--json")
    assert uploaded.exit_code == 0, uploaded.output
    doc = json.loads(uploaded.stdout)
    assert (doc["size"], doc["crc32"], doc["retransmissions"]) == (124, "0xD5BF511B", 0)
    assert uploaded.stderr == ""  # no progress lines under --json
    erased = handcue("erase", "--to", sim.address, "--json")
    assert json.loads(erased.stdout) == {"erased": True, "address": sim.address}
    completion = handcue(env={"_HANDCUE_COMPLETE": "bash_complete", "COMP_WORDS": "handcue info --to ser", "COMP_CWORD": "3"})
    assert f"plain,{sim.address}" in completion.output.splitlines()


# --------------------------------------------------------------------------
# -v and -q


def test_verbose_logs_requests_answers_and_frames_in_hex_to_stderr(sim: Sim):
    result = handcue("-v", "status", "--to", sim.address)
    assert result.exit_code == 0, result.output
    assert "idle" in result.stdout
    log = result.stderr
    assert "companion.client: -> request #" in log and "StatusRequest" in log
    assert "companion.client: <- frame " in log and "<- response #" in log
    frame = log.split("-> request #", 1)[1].split("frame ", 1)[1].splitlines()[0]
    assert all(len(byte) == 2 and int(byte, 16) >= 0 for byte in frame.split())
    assert "request #" not in handcue("status", "--to", sim.address).stderr  # quiet without -v


def test_quiet_prints_only_results(tmp_path: Path, sim: Sim):
    assert handcue("-q", "compile", "nausea-pc6", "-o", str(tmp_path / "x.hcue")).output == ""
    assert handcue("-q", "check", "nausea-pc6").output == ""
    uploaded = handcue("-q", "upload", "nausea-pc6", "--to", sim.address)
    assert uploaded.exit_code == 0 and uploaded.output == ""
    assert handcue("compile", "nausea-pc6", "-o", str(tmp_path / "y.hcue")).output.startswith("wrote ")


# --------------------------------------------------------------------------
# A default band, bare serial paths, usage errors


def test_default_band_from_the_environment_and_the_config_file(sim: Sim, own_folders: Path):
    missing = handcue("status")
    assert missing.exit_code == 2
    assert "HANDCUE_ADDRESS" in missing.stderr and "handcue config set address" in missing.stderr
    assert "[required" in handcue("status", "--help").stdout

    assert handcue("status", env={"HANDCUE_ADDRESS": sim.address}).stdout.strip() == "idle"

    stored = handcue("config", "set", "address", sim.port)  # a bare path is stored as serial:PATH
    assert stored.exit_code == 0, stored.output
    config_file = own_folders / "config" / "handcue" / "config.toml"
    assert f'address = "{sim.address}"' in config_file.read_text()
    assert handcue("config", "path").stdout.strip() == str(config_file)
    assert handcue("status").stdout.strip() == "idle"
    help_text = "".join(handcue("status", "--help").stdout.split())  # click wraps long paths, even at hyphens
    assert "[required" not in help_text and f"[default:{sim.address},from{config_file}]" in help_text
    assert handcue("config", "unset", "address").exit_code == 0
    assert handcue("status").exit_code == 2


def test_a_bare_serial_path_is_a_serial_address(sim: Sim):
    result = handcue("status", "--to", sim.port)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "idle"


@pytest.mark.parametrize("address", ["nope", "ble:", "serial:/dev/x?baud=fast", "usb:0"])
def test_a_malformed_address_is_a_usage_error(address: str):
    result = handcue("info", "--to", address)
    assert result.exit_code == 2
    assert "Invalid value for '--to'" in result.stderr


def test_config_set_refuses_a_malformed_address():
    assert handcue("config", "set", "address", "nope").exit_code == 2


# --------------------------------------------------------------------------
# Completion


def test_completion_offers_routine_ids_and_files():
    result = handcue(env={"_HANDCUE_COMPLETE": "bash_complete", "COMP_WORDS": "handcue check n", "COMP_CWORD": "2"})
    lines = result.output.splitlines()
    assert "plain,nausea-pc6" in lines and "file,n" in lines
    assert not any("desk-break" in line for line in lines)


def test_completion_of_to_without_a_cache_offers_nothing():
    result = handcue(env={"_HANDCUE_COMPLETE": "bash_complete", "COMP_WORDS": "handcue info --to ", "COMP_CWORD": "3"})
    assert result.output.strip() == ""


# --------------------------------------------------------------------------
# BLE names and bands not found


def test_a_ble_name_in_another_case_matches_and_a_missing_band_lists_the_bands_seen():
    async def job() -> str:
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            async with BandClient.open("ble:handcue-1a2b", ble=central.backend, timeout=5) as client:
                info = await client.info()
                assert info.band_id == 0x1A2B
            started = time.monotonic()
            with pytest.raises(TransportError) as error:
                async with BandClient.open("ble:HandCue-FFFF", ble=central.backend, timeout=1.5):
                    pass
            assert time.monotonic() - started < 5  # --timeout is honoured (it used to be at least 5 s)
            return str(error.value)

    message = asyncio.run(asyncio.wait_for(job(), 30))
    assert "no band advertising as HandCue-FFFF within 1.5 s" in message
    assert "bands seen: HandCue-1A2B" in message


def test_scan_without_a_bluetooth_stack_says_what_is_missing(monkeypatch: pytest.MonkeyPatch):
    async def no_stack(timeout: float, hci: str | None, ble_backend: str | None = None) -> list:
        raise TransportError("cannot scan for BLE devices: [Errno 2] No such file or directory: '/run/dbus/system_bus_socket'")

    monkeypatch.setattr("companion.cli_band.find_bands", no_stack)
    result = handcue("scan", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "BlueZ, reached over D-Bus" in result.stderr and "--hci" in result.stderr
    assert result.stderr.startswith("error: cannot scan for BLE devices")


# --------------------------------------------------------------------------
# handcue-sim


def test_handcue_sim_version_and_what_it_does_without_a_transport(tmp_path: Path):
    version = subprocess.run([sys.executable, "-m", "firmware_sim", "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("handcue-sim, version ")
    alone = subprocess.run([sys.executable, "-m", "firmware_sim", "--clock", "virtual", "--load", "desk-break", "--start", "--exit-on-finish"],
                           capture_output=True, text=True, timeout=30)
    assert alone.returncode == 0
    assert "no transport given (--serial pty, --hci-server or --hci)" in alone.stderr
    assert "it exits when the routine ends" in alone.stderr


def test_the_live_line_numbers_steps_as_the_card_once_this_computer_uploaded_the_table(sim: Sim):
    assert handcue("upload", "nausea-pc6", "--to", sim.address).exit_code == 0  # record 0 is step 1
    started = handcue("start", "--to", sim.address)
    assert started.exit_code == 0, started.output
    assert "| step 1 acupressure:PC6 |" in started.stdout


def test_follow_json_is_one_object_per_event(sim: Sim):
    import io

    from companion.cli_band import follow_json

    assert handcue("upload", "desk-break", "--to", sim.address).exit_code == 0

    async def job() -> str:
        out = io.StringIO()
        async with BandClient.open(sim.address, timeout=5) as client:
            await client.start()
            await follow_json(client, out)
        return out.getvalue()

    lines = asyncio.run(asyncio.wait_for(job(), 30)).splitlines()
    events = [json.loads(line) for line in lines]
    # The virtual-clock band races ahead, so how many events are seen varies; each is one whole status object.
    assert events and events[-1]["state"] == "finished"
    assert all(set(e) >= {"state", "step", "technique", "elapsed_ms", "remaining_ms", "cues"} for e in events)
    assert [e["elapsed_ms"] for e in events] == sorted(e["elapsed_ms"] for e in events)


def test_follow_json_from_the_command_line(sim: Sim):
    assert handcue("upload", "desk-break", "--to", sim.address).exit_code == 0
    assert handcue("start", "--to", sim.address).exit_code == 0
    result = handcue("follow", "--json", "--to", sim.address)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["state"] == "finished"


def test_a_usage_error_under_json_is_json_too():
    result = handcue("info", "--json", "--to", "nope")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["usage"] is True and "'nope' is not a band address" in doc["error"]
