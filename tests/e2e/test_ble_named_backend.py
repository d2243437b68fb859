"""``--ble-backend module:attr``: any bleak backend, named, with no change to the companion.

The bumble backend is named that way end to end (a band serving a virtual controller, the
companion's host attaching to it through ``BumbleCentral.from_environment``), through the
library edge (``ble_backend_for``) and through the registered ``handcue pair`` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from bleak.backends.bluezdbus.client import BleakClientBlueZDBus
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus

from ble_stack.addresses import free_tcp_port
from companion.ble import BleBackend, ble_backend_for
from companion.ble.bumble_backend import BumbleClient
from companion.ble.named import named_backend
from companion.client import BandClient
from companion.errors import AddressError
from firmware_sim.band import Band
from firmware_sim.ble import BlePeripheral
from firmware_sim.clock import VirtualClock
from firmware_sim.handler import ProtocolHandler
from firmware_sim.local import storage_with

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0
FROM_ENVIRONMENT = "companion.ble.bumble_backend:BumbleCentral.from_environment"
A_BACKEND = BleBackend(description="a backend object")


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


async def opened(name: str) -> BleBackend:
    async with named_backend(name) as backend:
        return backend


def test_bleak_backend_classes_named_as_module_attr() -> None:
    """A client class alone keeps the platform scanner; a comma adds a scanner class."""
    client_only = run(opened("bleak.backends.bluezdbus.client:BleakClientBlueZDBus"))
    assert (client_only.client, client_only.scanner, client_only.scanner_args()) == (BleakClientBlueZDBus, None, {})
    both = run(opened("bleak.backends.bluezdbus.client:BleakClientBlueZDBus, bleak.backends.bluezdbus.scanner:BleakScannerBlueZDBus"))
    assert (both.client, both.scanner) == (BleakClientBlueZDBus, BleakScannerBlueZDBus)
    assert run(opened(f"{__name__}:A_BACKEND")) is A_BACKEND


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bleak_esphome_clinic", "expected module:attribute"),
        ("no_such_module_here:Client", "cannot import no_such_module_here"),
        ("companion.ble.bumble_backend:NoSuchClass", "companion.ble.bumble_backend has no attribute NoSuchClass"),
        ("companion.ble.bumble_backend:REQUESTED_ATT_MTU", "names a int: expected a bleak backend class"),
        ("companion.ble.bumble_backend:BumbleClient,companion.ble.bumble_backend:logger", "a comma joins only bleak client and scanner classes"),
    ],
)
def test_bad_names_fail_with_one_clear_line(name: str, message: str) -> None:
    with pytest.raises(AddressError, match=message) as caught:
        run(opened(name))
    assert "\n" not in str(caught.value)


def test_from_environment_needs_handcue_hci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDCUE_HCI", raising=False)
    with pytest.raises(AddressError, match="needs HANDCUE_HCI"):
        run(opened(FROM_ENVIRONMENT))


def test_bumble_backend_named_that_way_reaches_a_band(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The band serves a virtual controller; the named factory builds a bumble host on it
    (HANDCUE_HCI), BandClient talks to the band through bleak on it, and the host is closed after."""
    port = free_tcp_port()
    monkeypatch.setenv("HANDCUE_HCI", f"tcp-client:127.0.0.1:{port}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    async def main() -> None:
        band = Band(storage_with(), VirtualClock(), band_id=0x1A2B)
        ble = BlePeripheral(ProtocolHandler(band), band, hci_server=f"tcp-server:127.0.0.1:{port}")
        await ble.start()
        try:
            async with ble_backend_for("tcp-client:ignored:1", backend=FROM_ENVIRONMENT) as backend:
                assert backend.description == f"via HCI tcp-client:127.0.0.1:{port}"
                assert backend.client is not None and backend.client.__name__ == BumbleClient.__name__
                async with BandClient.open("ble:HandCue-1A2B", ble=backend) as client:
                    assert (await client.info()).band_id == 0x1A2B
                    assert ble.peripheral is not None and len(ble.peripheral.connections) == 1
            assert ble.peripheral.connections == []
        finally:
            await ble.close()

    run(main())


def test_pair_command_with_a_named_backend(tmp_path: Path) -> None:
    """``handcue pair --ble-backend ...`` (the command as the CLI registers it) pairs through the named backend."""
    port = free_tcp_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(ROOT), "HANDCUE_HCI": f"tcp-client:127.0.0.1:{port}"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--pairing-window", "60"],
        stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")
        script = "from companion.cli import cli; from companion.cli_pairing import pair; cli.add_command(pair); cli(prog_name='handcue')"
        done = subprocess.run([sys.executable, "-c", script, "pair", "--to", "ble:HandCue-1A2B", "--ble-backend", FROM_ENVIRONMENT],
                              env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)  # fmt: skip
        assert (done.returncode, done.stdout) == (0, "HandCue-1A2B: paired; it now accepts commands only from paired devices\n"), done.stderr
        assert (tmp_path / "config" / "handcue" / "ble" / "bonds.json").exists()
    finally:
        sim.terminate()
        sim.wait(TIMEOUT)


def test_info_with_a_named_backend_says_who_may_command_the_band(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``handcue info --ble-backend ...`` reaches the band through the named backend and says that an
    unpaired band is open to anyone in range; after ``handcue pair`` (same backend) it says paired-only."""
    from click.testing import CliRunner

    from companion.cli import cli

    port = free_tcp_port()
    monkeypatch.setenv("HANDCUE_HCI", f"tcp-client:127.0.0.1:{port}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("HANDCUE_ADDRESS", raising=False)
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--flash", str(tmp_path / "band.bin"),
         "--pairing-window", "60"],
        stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")

        def handcue(*args: str) -> Any:
            return CliRunner().invoke(cli, [*args, "--to", "ble:HandCue-1A2B", "--ble-backend", FROM_ENVIRONMENT])

        opened = handcue("info", "--json")
        assert opened.exit_code == 0, opened.output
        assert json.loads(opened.stdout)["security"] == (
            "HandCue-1A2B is not paired with any device: it is open to anyone in range (its pairing window is open: run handcue pair)")
        assert handcue("pair").exit_code == 0
        paired = handcue("info")
        assert paired.exit_code == 0, paired.output
        assert paired.stdout.splitlines()[0].startswith("band 1A2B: ")
        assert paired.stdout.splitlines()[-1] == "security: HandCue-1A2B accepts commands only from paired devices; this one is paired"
    finally:
        sim.terminate()
        sim.wait(TIMEOUT)


def test_info_over_serial_says_a_cable_is_open(tmp_path: Path) -> None:
    """The security line over serial: a cable is open to whoever holds it."""
    from click.testing import CliRunner

    from companion.cli import cli

    sim = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--serial", "pty", "--flash", str(tmp_path / "band.bin")],
                           stdout=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline().decode().strip()
        assert line.startswith("serial: ")
        done = CliRunner().invoke(cli, ["info", "--to", "serial:" + line.removeprefix("serial: "), "--json"],
                                  env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["security"].startswith("serial is a cable: the band takes commands from whoever holds it")
    finally:
        sim.terminate()
        sim.wait(TIMEOUT)


@pytest.mark.parametrize("command", [["info"], ["upload", "desk-break"], ["start"], ["follow"], ["erase"], ["scan"]])
def test_every_ble_command_takes_ble_backend_and_names_a_bad_one_in_one_line(command: list[str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from companion.cli import cli

    to = [] if command == ["scan"] else ["--to", "ble:HandCue-1A2B"]
    done = CliRunner().invoke(cli, [*command, *to, "--ble-backend", "no_such_module_here:Backend"], env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert done.exit_code == 1
    assert done.stderr.splitlines() == ["error: --ble-backend 'no_such_module_here:Backend': cannot import no_such_module_here: "
                                        "No module named 'no_such_module_here'"]
