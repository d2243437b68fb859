"""Pairing and bonding over BLE: bleak's public API on the bumble backend, the band on bumble.

Both sides run full bumble hosts with SMP (LE Secure Connections, Just Works) over a
virtual link; the band's controller encrypts for real.  In process the band is a
:class:`~firmware_sim.local.LocalBleBand`; across processes it is ``handcue-sim
--hci-server`` and the companion's host attaches to the controller it serves.

The pairing window runs on an injected clock in process (no sleeps); across
processes a short ``--pairing-window`` really closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from bumble.link import LocalLink

from ble_stack.addresses import free_tcp_port
from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.ble.keystore import CentralIdentity, user_config_dir
from companion.ble.pairing import describe_pairing_state, pair_band, security_line, unpair_band
from companion.client import BandClient
from companion.errors import HandCueError, NotPairedError, PairingError
from companion.transport.ble import BleTransport
from firmware_sim.local import LocalBleBand
from firmware_sim.pairing import PairingWindow, bonds_path_for
from protocol.constants import BandState, PairingState

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
PROCESS_TIMEOUT = 15.0
NAME = "HandCue-1A2B"
REFUSAL = f"{NAME} accepts commands only from paired devices: press its button, then run handcue pair"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


@pytest.fixture(scope="module")
def table() -> bytes:
    return compile_routine(load_routine("nausea-pc6"))


class FakeTime:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def transport_of(client: BandClient) -> BleTransport:
    assert isinstance(client.transport, BleTransport)
    return client.transport


@contextlib.asynccontextmanager
async def band_client(local: LocalBleBand, central: BumbleCentral) -> AsyncIterator[BandClient]:
    async with BandClient.open(f"ble:{local.name}", ble=central.backend, timeout=5.0) as client:
        yield client


# ---------------------------------------------------------------------------
# In one process


def test_unbonded_band_is_open_and_says_so(table: bytes) -> None:
    """A band without any bond takes commands from anyone, and the companion can say so."""

    async def main() -> None:
        async with LocalBleBand(table) as local, BumbleCentral(link=local.link) as central, band_client(local, central) as client:
            assert (await client.start()).state == BandState.RUNNING
            state = await transport_of(client).read_pairing_state()
            assert state == PairingState(0)
            assert await security_line(client.transport) == f"{NAME} is not paired with any device: it is open to anyone in range"

    run(main())


def test_bonded_central_accepted_and_any_other_refused_with_one_clear_line(table: bytes) -> None:
    """After one companion pairs, another gets info and status but its state-changing commands
    fail with NotPairedError (the band answered the write with an ATT error), and nothing changed."""

    async def main() -> None:
        async with LocalBleBand(table, pairing_window=60) as local, BumbleCentral(link=local.link) as owner, BumbleCentral(link=local.link) as stranger:
            outcome = await pair_band(NAME, owner.backend)
            assert not outcome.already and PairingState.TRUSTED in outcome.state
            assert len(await owner.keystore.get_all()) == 1 and len(local.security.bonded_peers) == 1

            async with band_client(local, stranger) as other:
                assert await transport_of(other).read_pairing_state() == PairingState.PROTECTED | PairingState.WINDOW_OPEN
                assert await security_line(other.transport) == describe_pairing_state(NAME, PairingState.PROTECTED) == (
                    f"{NAME} accepts commands only from paired devices; this one is not (press its button, then run handcue pair)"
                )
                assert (await other.info()).band_id == 0x1A2B
                assert (await other.status()).state == BandState.IDLE
                for command in (other.start, other.erase, lambda: other.upload(table)):
                    with pytest.raises(NotPairedError) as refused:
                        await command()
                    assert str(refused.value) == REFUSAL
                assert (await other.status()).state == BandState.IDLE  # the link survives a refusal
            assert local.band.storage.active_table() == table and local.band.storage.upload is None  # nothing erased, no upload begun

            async with band_client(local, owner) as client:
                assert await transport_of(client).read_pairing_state() == PairingState.PROTECTED | PairingState.WINDOW_OPEN | PairingState.TRUSTED
                assert (await client.start()).state == BandState.RUNNING
                assert (await client.stop()).state == BandState.IDLE
                await client.upload(table)

    run(main())


def test_pairing_outside_the_window_fails_and_the_window_closes(table: bytes) -> None:
    """Pairing needs a button press first; the window closes after its time; a press opens it again."""
    clock = FakeTime()

    async def main() -> None:
        async with LocalBleBand(table) as local, BumbleCentral(link=local.link) as central:
            local.security.window = PairingWindow(clock)
            with pytest.raises(PairingError, match=f"^{NAME} is not accepting new pairings: press its button"):
                await pair_band(NAME, central.backend)
            local.ble.open_pairing_window(0.5)
            clock.now += 0.6
            with pytest.raises(PairingError, match="not accepting new pairings"):
                await pair_band(NAME, central.backend)
            assert local.security.bonded_peers == frozenset()
            local.ble.open_pairing_window()  # the default: 60 s
            clock.now += 59
            assert not (await pair_band(NAME, central.backend)).already

    run(main())


def test_band_refuses_smp_pairing_while_its_window_is_closed() -> None:
    """Below the companion's own check: bleak's pair() itself fails when the band's window is closed."""
    from bleak import BleakClient, BleakScanner
    from bleak.exc import BleakError

    async def main() -> None:
        async with LocalBleBand() as local, BumbleCentral(link=local.link) as central:
            device = await BleakScanner.find_device_by_name(NAME, timeout=5.0, backend=central.scanner_backend)
            async with BleakClient(device, backend=central.client_backend) as client:
                with pytest.raises(BleakError, match="PAIRING_NOT_SUPPORTED"):
                    await client.pair()
            assert await central.keystore.get_all() == []

    run(main())


def test_bonds_survive_restarts_of_both_sides(table: bytes, tmp_path: Path) -> None:
    """The band keeps its bonds beside its flash file, the companion in its config directory:
    after both restart, the companion is let in without pairing again (window closed)."""
    bonds = bonds_path_for(tmp_path / "band.bin")
    identity = CentralIdentity(tmp_path / "companion")

    async def pair_once() -> None:
        link = LocalLink()
        identity.ensure_address()
        async with LocalBleBand(table, link=link, bonds_path=bonds, pairing_window=60), BumbleCentral(link=link, identity=identity) as central:
            await pair_band(NAME, central.backend)

    async def after_restart() -> None:
        link = LocalLink()
        async with (
            LocalBleBand(table, link=link, bonds_path=bonds) as local,
            BumbleCentral(link=link, identity=identity) as central,
            BumbleCentral(link=link) as stranger,
        ):
            assert len(local.security.bonded_peers) == 1 and not local.security.window.is_open
            async with band_client(local, central) as client:
                assert PairingState.TRUSTED in ((await transport_of(client).read_pairing_state()) or PairingState(0))
                assert (await client.start()).state == BandState.RUNNING
            async with band_client(local, stranger) as other:
                with pytest.raises(NotPairedError):
                    await other.stop()

    run(pair_once())
    assert bonds.exists() and identity.bonds_path.exists() and identity.address() is not None
    run(after_restart())


def test_unpair_forgets_on_both_sides(table: bytes) -> None:
    """After unpair, the band holds no bond (open again) and the companion no keys for it."""

    async def main() -> None:
        async with LocalBleBand(table, pairing_window=60) as local, BumbleCentral(link=local.link) as central:
            await pair_band(NAME, central.backend)
            outcome = await unpair_band(NAME, central.backend)
            assert not outcome.already and PairingState.TRUSTED not in outcome.state
            assert local.security.bonded_peers == frozenset()
            assert await central.keystore.get_all() == []
            async with band_client(local, central) as client:
                assert (await transport_of(client).read_pairing_state()) == PairingState.WINDOW_OPEN
                assert (await client.start()).state == BandState.RUNNING

    run(main())


def test_factory_reset_erases_bonds_and_routine(table: bytes) -> None:
    """A long press: bonds and routine gone, centrals disconnected; the old companion's
    stored keys no longer encrypt, and the band is open again."""

    async def main() -> None:
        async with LocalBleBand(table, pairing_window=60) as local, BumbleCentral(link=local.link) as central:
            await pair_band(NAME, central.backend)
            async with band_client(local, central) as client:
                await local.ble.factory_reset()
                with pytest.raises(HandCueError, match=r"link lost|disconnected|not connected"):
                    await client.status()
            assert local.security.bonded_peers == frozenset() and local.band.storage.active_table() is None
            assert not local.security.window.is_open
            async with band_client(local, central) as client:
                assert (await transport_of(client).read_pairing_state()) == PairingState(0)
                assert (await client.info()).routine_size == 0
                await client.upload(table)

    run(main())


# ---------------------------------------------------------------------------
# Across processes: handcue-sim serving a virtual controller


async def start_sim(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_tcp_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", *args,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), PROCESS_TIMEOUT)
        assert line, "handcue-sim exited before serving BLE"
        if line.startswith(b"ble:"):
            return process, f"tcp-client:127.0.0.1:{port}"


async def stop_sim(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), PROCESS_TIMEOUT)


def test_across_processes_window_persistence_and_factory_reset(table: bytes, tmp_path: Path) -> None:
    """handcue-sim with a short --pairing-window: pairing works inside it, fails once it closed;
    the bond survives a restart of the simulator and of the companion's host; SIGUSR1 opens the
    window, SIGUSR2 erases bonds and routine."""
    flash = str(tmp_path / "band.bin")
    identity = CentralIdentity(tmp_path / "companion")
    identity.ensure_address()

    async def main() -> None:
        sim, hci = await start_sim("--flash", flash, "--pairing-window", "2", "--load", "nausea-pc6")
        try:
            async with BumbleCentral(hci=hci, identity=identity) as central:
                await pair_band(NAME, central.backend)
            await asyncio.sleep(2.2)  # the short window closes
            async with BumbleCentral(hci=hci) as stranger:
                with pytest.raises(PairingError, match="not accepting new pairings"):
                    await pair_band(NAME, stranger.backend)
        finally:
            await stop_sim(sim)

        sim, hci = await start_sim("--flash", flash)
        try:
            async with BumbleCentral(hci=hci, identity=identity) as central, BandClient.open(f"ble:{NAME}", ble=central.backend) as client:
                assert (await client.start()).state == BandState.RUNNING
            async with BumbleCentral(hci=hci) as stranger:
                async with BandClient.open(f"ble:{NAME}", ble=stranger.backend) as other:
                    with pytest.raises(NotPairedError):
                        await other.stop()
                assert sim.pid is not None
                os.kill(sim.pid, signal.SIGUSR1)  # a press: the stranger may pair now
                await asyncio.sleep(0.3)
                await pair_band(NAME, stranger.backend)
            os.kill(sim.pid, signal.SIGUSR2)  # a long press: factory reset
            await asyncio.sleep(0.3)
            async with BumbleCentral(hci=hci) as anyone, BandClient.open(f"ble:{NAME}", ble=anyone.backend) as client:
                assert (await transport_of(client).read_pairing_state()) == PairingState(0)
                assert (await client.info()).routine_size == 0
        finally:
            await stop_sim(sim)

    run(main())
    assert json.loads(bonds_path_for(Path(flash)).read_text()) == {"__DEFAULT__": {}}


REGISTERED_CLI = """
from companion.cli import cli
from companion.cli_pairing import pair, unpair
cli.add_command(pair)
cli.add_command(unpair)
cli(prog_name="handcue")
"""
"""The ``handcue`` group with the pairing commands registered as the coordinator registers them."""


def test_pair_and_unpair_commands_keep_keys_under_xdg_config_home(tmp_path: Path) -> None:
    """The click commands (run as the CLI registers them) bond, store the keys under
    $XDG_CONFIG_HOME/handcue/ble, and unpair on both sides; one clear line when the window is closed."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(ROOT)}
    port = free_tcp_port()
    hci = f"tcp-client:127.0.0.1:{port}"
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--flash", str(tmp_path / "band.bin"), "--pairing-window", "60"],
        stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")

        def handcue(command: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", REGISTERED_CLI, command, "--to", f"ble:{NAME}", "--hci", hci, *args],
                                  env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT, cwd=ROOT)  # fmt: skip

        paired = handcue("pair")
        assert paired.returncode == 0, paired.stderr
        assert paired.stdout == f"{NAME}: paired; it now accepts commands only from paired devices\n"
        stored = tmp_path / "config" / "handcue" / "ble"
        assert (stored / "address").exists() and NAME not in (stored / "bonds.json").read_text()
        assert len(json.loads((stored / "bonds.json").read_text())["__DEFAULT__"]) == 1
        again = handcue("pair", "--json")
        assert json.loads(again.stdout) == {"band": NAME, "paired": True, "already": True}
        unpaired = handcue("unpair")
        assert unpaired.stdout == f"{NAME}: unpaired on both sides\n", unpaired.stderr
        assert json.loads((stored / "bonds.json").read_text())["__DEFAULT__"] == {}
        sim.send_signal(signal.SIGUSR2)  # factory reset: the window closes too
        refused = handcue("pair")
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == f"error: {NAME} is not accepting new pairings: press its button (it then accepts one for 60 s), then run handcue pair again\n"
        wrong = handcue("pair", "--to", "serial:/dev/ttyUSB0")
        assert wrong.returncode == 1 and "a serial cable needs no pairing" in wrong.stderr
    finally:
        sim.terminate()
        sim.wait(PROCESS_TIMEOUT)


def test_user_config_dir_honours_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_config_dir() == tmp_path / "handcue"
    assert CentralIdentity.for_user().bonds_path == tmp_path / "handcue" / "ble" / "bonds.json"
