"""A bonded link is encrypted at connect only when the session needs trust (issue #14).

A paired band answers INFO and STATUS on any link (SPEC §21.5), so ``handcue status`` (a session
opened with ``needs_trust=False``) leaves the link to a band this computer is paired with
unencrypted and its first request does not wait for the encryption's two connection events;
every state-changing command still encrypts first, and ``info`` still sees TRUSTED.

In process: bleak's public API on the bumble backend, the band a :class:`LocalBleBand` with real
SMP; the link traces come from a :class:`PacedLink` on a virtual clock (exact event counts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bumble import ll
from bumble.device import Connection
from bumble.link import LocalLink

from ble_stack.paced_link import LinkTiming, PacedLink, TracedPacket
from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.ble.keystore import CentralIdentity
from companion.ble.pairing import pair_band
from companion.client import BandClient
from companion.config import KnownBleAddress
from companion.errors import NotPairedError
from companion.transport.ble import BleTransport, not_paired_message
from firmware_sim.local import LocalBleBand
from firmware_sim.pairing import bonds_path_for
from protocol.constants import BandState, PairingState

from .test_paced_link import run_virtual

NAME = "HandCue-1A2B"
ADDRESS = f"ble:{NAME}"
INTERVAL_S = 0.015


@pytest.fixture(scope="module")
def table() -> bytes:
    return compile_routine(load_routine("nausea-pc6"))


class Book(dict[str, KnownBleAddress]):
    """An address book in memory: the band is known, so no scan before the connection."""

    def put(self, name: str, known: KnownBleAddress) -> None:
        self[name] = known

    def forget(self, name: str) -> None:
        self.pop(name, None)


class ConnectInds:
    """Loop times at which CONNECT_IND crossed the paced link (a session's packets come after its own)."""

    def __init__(self, link: PacedLink) -> None:
        self.times: list[float] = []
        original = link.send_advertising_pdu

        def send(sender: Any, packet: ll.AdvertisingPdu) -> None:
            if isinstance(packet, ll.ConnectInd):
                self.times.append(asyncio.get_running_loop().time())
            original(sender, packet)

        link.send_advertising_pdu = send  # type: ignore[method-assign]


class FirstRequests:
    """Band side: whether each link was encrypted when the band received its first RX bytes (the first request)."""

    def __init__(self, local: LocalBleBand) -> None:
        self.encrypted: list[bool] = []
        receive = local.handler.receive
        started: list[Connection] = []  # kept alive: link names and handles are used again

        def on_receive(link_name: str, data: bytes) -> None:
            connection = band_connection(local)
            if not any(connection is seen for seen in started):
                started.append(connection)
                self.encrypted.append(connection.is_encrypted)
            receive(link_name, data)

        local.handler.receive = on_receive  # type: ignore[method-assign]


def band_connection(local: LocalBleBand) -> Connection:
    """The band's side of the one connection it has."""
    assert local.ble.peripheral is not None
    [connection] = local.ble.peripheral.device.connections.values()
    return connection


async def session(local: LocalBleBand, central: BumbleCentral, book: Book, *, needs_trust: bool,
                  job: Any) -> tuple[Any, bool, PairingState, float]:
    """``job(client)`` on a session; what it returned, whether the band's side of the link was encrypted and the
    pairing state the band computes for it (both when the job ended), and the loop time it ended."""
    client = BandClient.open(ADDRESS, ble=central.backend, needs_trust=needs_trust, timeout=5.0)
    assert isinstance(client.transport, BleTransport)
    client.transport.address_book = book
    async with client:
        result = await job(client)
        ended = asyncio.get_running_loop().time()
        connection = band_connection(local)
        return result, connection.is_encrypted, local.security.state_for(connection), ended


def packets_of(link: PacedLink, connect_ind: float, until: float) -> list[TracedPacket]:
    """The link packets of the connection made at ``connect_ind`` that crossed until ``until``."""
    assert link.trace is not None
    return [packet for packet in link.trace if packet.anchor > connect_ind and packet.delivered_at <= until + 1e-9]


def test_status_leaves_a_paired_link_unencrypted_and_state_changes_still_encrypt(table: bytes) -> None:
    """On a band this central is paired with: a read-only session's STATUS is answered on an unencrypted
    link (band side: not encrypted, PairingState without TRUSTED; no LL control PDU crossed before the
    answer), two connection events sooner than a session that encrypts; after the pairing read (writes then
    ask for a response) INFO and STATUS still work, and a state-changing request says why it is refused.
    START and an upload on a default session encrypt first (the band's side of the link is encrypted when the
    first request arrives) and succeed."""
    link = PacedLink(LinkTiming(interval_ms=INTERVAL_S * 1000, packets_per_event=6), trace=True)
    connects = ConnectInds(link)
    book = Book()

    async def job() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with LocalBleBand(table, link=link, pairing_window=60) as local, BumbleCentral(link=link) as central:
            await pair_band(NAME, central.backend)
            await session(local, central, book, needs_trust=True, job=lambda c: c.status())  # learns the address
            first_requests = FirstRequests(local)

            async def read_only(client: BandClient) -> Any:
                status = await client.status()
                seen["read_only_status_at"] = asyncio.get_running_loop().time()
                transport = client.transport
                assert isinstance(transport, BleTransport)
                pairing = await transport.read_pairing_state()
                later = (await client.info()).band_id, (await client.status()).state
                with pytest.raises(NotPairedError) as refused:
                    await client.start()
                return status.state, pairing, later, str(refused.value), client.retries

            seen["read_only_connect"] = len(connects.times)
            seen["read_only"] = await session(local, central, book, needs_trust=False, job=read_only)

            async def trusted_status(client: BandClient) -> Any:
                await client.status()
                seen["trusted_status_at"] = asyncio.get_running_loop().time()

            seen["trusted_connect"] = len(connects.times)
            seen["trusted"] = await session(local, central, book, needs_trust=True, job=trusted_status)

            async def start_and_upload(client: BandClient) -> Any:
                started = (await client.start()).state
                await client.stop()
                await client.upload(table)
                return started

            seen["start_connect"] = len(connects.times)
            seen["start"] = await session(local, central, book, needs_trust=True, job=start_and_upload)
            seen["band_state"] = local.band.storage.active_table() == table
            seen["first_requests"] = first_requests.encrypted
        return seen

    seen = run_virtual(job)
    (state, pairing, later, refusal, retries), encrypted, band_says, _ = seen["read_only"]
    assert state == BandState.IDLE and later == (0x1A2B, BandState.IDLE)
    assert retries == 0  # nothing was dropped and sent again, before or after the writes asked for a response
    assert not encrypted  # the band's side of the link
    assert PairingState.PROTECTED in band_says and PairingState.TRUSTED not in band_says
    assert pairing is not None and PairingState.PROTECTED in pairing and PairingState.TRUSTED not in pairing
    assert refusal == not_paired_message(NAME) + " (this session was opened with needs_trust=False: its link was not encrypted)"

    read_only_ci = connects.times[seen["read_only_connect"]]
    read_only = packets_of(link, read_only_ci, seen["read_only_status_at"])
    assert [packet for packet in read_only if packet.kind == "control"] == []  # no LL encryption before the answer
    trusted_ci = connects.times[seen["trusted_connect"]]
    trusted = packets_of(link, trusted_ci, seen["trusted_status_at"])
    controls = [packet for packet in trusted if packet.kind == "control"]
    assert controls
    # The STATUS answer comes in the connection event after the one the request went in: encryption cost exactly 2 events.
    answered_read_only = max(p.event for p in read_only)
    answered_trusted = max(p.event for p in trusted)
    assert answered_trusted - answered_read_only == 2

    started, encrypted, band_says, _ = seen["start"]
    assert started == BandState.RUNNING and seen["band_state"]
    assert encrypted and PairingState.TRUSTED in band_says
    assert seen["first_requests"] == [False, True, True]  # read-only, trusted STATUS, START: encrypted before the first request?


def test_bleak_client_keyword_encrypt_bonded_chooses_whether_a_bonded_link_is_encrypted() -> None:
    """Through bleak's public API: ``BleakClient(..., encrypt_bonded=False)`` on the bumble backend leaves the
    link to a bonded band unencrypted (band side); the default encrypts it at connect.  The backend says it
    takes the keyword; bleak's platform backend does not (the operating system decides)."""
    from bleak import BleakClient, BleakScanner

    from companion.ble.backend import PLATFORM

    async def main() -> list[bool]:
        encrypted = []
        async with LocalBleBand(pairing_window=60) as local, BumbleCentral(link=local.link) as central:
            assert central.backend.chooses_encryption and not PLATFORM.chooses_encryption
            await pair_band(NAME, central.backend)
            for extra in ({"encrypt_bonded": False}, {}):
                device = await BleakScanner.find_device_by_name(NAME, timeout=5.0, backend=central.scanner_backend)
                async with BleakClient(device, backend=central.client_backend, **extra):
                    encrypted.append(band_connection(local).is_encrypted)
        return encrypted

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [False, True]


# ---------------------------------------------------------------------------
# The CLI: each command builds a band and a bumble host of its own through --ble-backend (named below)


WORLD: dict[str, Any] = {}
"""What the named backend builds each command's band from (set by the test), and what the band saw."""


@contextlib.asynccontextmanager
async def paired_band_backend() -> AsyncIterator[BumbleCentral]:
    """``--ble-backend tests.e2e.test_ble_trust_on_demand:paired_band_backend``: the band (bonds from
    ``WORLD``) on a new virtual link, and a bumble host with the paired identity; records, per band-side
    connection, whether it was ever encrypted."""
    link = LocalLink()
    async with (
        LocalBleBand(WORLD["table"], link=link, bonds_path=WORLD["bonds"]) as local,
        BumbleCentral(link=link, identity=WORLD["identity"]) as central,
    ):
        assert local.ble.peripheral is not None
        links: list[dict[str, bool]] = WORLD["links"]

        def on_connection(connection: Connection) -> None:
            seen = {"encrypted": False}
            links.append(seen)
            connection.on(Connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, lambda: seen.update(encrypted=connection.is_encrypted or seen["encrypted"]))

        local.ble.peripheral.device.on("connection", on_connection)
        if WORLD.get("playing"):
            local.band.start()
        yield central
        WORLD["band_running"] = local.band.status().state == BandState.RUNNING


def test_cli_status_stays_unencrypted_while_info_and_start_encrypt(table: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``handcue status`` on a paired band (the CLI's own with_band, over BLE) leaves the link unencrypted;
    ``handcue info`` encrypts and still says this computer is paired; ``handcue start`` encrypts and runs."""
    from click.testing import CliRunner

    from companion.cli import cli

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HANDCUE_ADDRESS", raising=False)
    identity = CentralIdentity(tmp_path / "companion")
    identity.ensure_address()
    bonds = bonds_path_for(tmp_path / "band.bin")

    async def pair() -> None:
        link = LocalLink()
        async with LocalBleBand(table, link=link, bonds_path=bonds, pairing_window=60), BumbleCentral(link=link, identity=identity) as central:
            await pair_band(NAME, central.backend)

    asyncio.run(asyncio.wait_for(pair(), 30))
    monkeypatch.setitem(WORLD, "table", table)
    monkeypatch.setitem(WORLD, "bonds", bonds)
    monkeypatch.setitem(WORLD, "identity", identity)

    def handcue(*args: str) -> tuple[Any, list[dict[str, bool]]]:
        WORLD["links"] = []
        done = CliRunner().invoke(cli, [*args, "--to", ADDRESS, "--ble-backend", f"{__name__}:paired_band_backend"])
        assert done.exit_code == 0, done.output
        return done, WORLD["links"]

    status, links = handcue("status")
    assert status.stdout == "idle\n"
    assert links == [{"encrypted": False}]
    info, links = handcue("info")
    assert info.stdout.splitlines()[-1] == f"security: {NAME} accepts commands only from paired devices; this one is paired"
    assert links == [{"encrypted": True}]
    start, links = handcue("start")
    assert links == [{"encrypted": True}] and WORLD["band_running"]
    assert start.stdout.startswith("[")
    monkeypatch.setitem(WORLD, "playing", True)
    for follow in (["follow", "--json"], ["follow"]):  # no keys: CliRunner's input is no terminal, so following only reads
        followed, links = handcue(*follow)
        assert links == [{"encrypted": False}], follow
        assert "finished" in followed.stdout.splitlines()[-1], followed.stdout


def test_a_read_only_sessions_refused_set_time_leaves_no_error_on_the_band(caplog: pytest.LogCaptureFixture) -> None:
    """A paired computer's read-only session sends SET_TIME on an unencrypted link: the band refuses it (its gate
    logs that), and bumble's report of the refused Write Command as an unexpected error, traceback and all, stays
    off the band's console."""
    import logging

    async def job() -> BandState:
        link = LocalLink()
        async with LocalBleBand(link=link, pairing_window=60) as local, BumbleCentral(link=link) as central:
            await pair_band(local.name, central.backend)
            async with BandClient.open(f"ble:{local.name}", ble=central.backend, needs_trust=False) as client:
                state = (await client.status()).state
            await asyncio.sleep(0.1)
            return state

    caplog.set_level(logging.INFO)
    assert asyncio.run(asyncio.wait_for(job(), 30)) == BandState.IDLE
    assert any(record.getMessage().startswith("refused opcode") for record in caplog.records)  # SET_TIME, refused
    assert not [record for record in caplog.records if record.name.startswith("bumble") and record.levelno >= logging.ERROR]
