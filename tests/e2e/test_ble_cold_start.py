"""Cold start over BLE: only the HandCue service is discovered, a band used before is reached
without a scan (and by a scan when it moved), the band advertises fast after boot and disconnect,
and every phase is recorded.  In process, on bumble's LocalLink, through bleak's public API."""

from __future__ import annotations

import asyncio
import json

from bleak import BleakClient, BleakScanner

from companion import config
from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from companion.config import BleAddressBook, KnownBleAddress
from companion.phases import Phases
from firmware_sim import ble_peripheral
from firmware_sim.local import LocalBleBand
from protocol.constants import BleUuid

TIMEOUT = 30
ADDRESS = "ble:HandCue-1A2B"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


class MemoryBook:
    def __init__(self, known: KnownBleAddress | None = None) -> None:
        self.table: dict[str, KnownBleAddress] = {"handcue-1a2b": known} if known else {}

    def get(self, name: str) -> KnownBleAddress | None:
        return self.table.get(name.casefold())

    def put(self, name: str, known: KnownBleAddress) -> None:
        self.table[name.casefold()] = known

    def forget(self, name: str) -> None:
        self.table.pop(name.casefold(), None)


def test_requested_services_only_and_cccd_only_for_notify():
    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            device = await BleakScanner.find_device_by_name(band.name, timeout=5, backend=central.scanner_backend)
            assert device is not None
            async with BleakClient(device, services=[BleUuid.SERVICE], backend=central.client_backend) as client:
                return client.services, client.name

    services, name = run(job())
    assert [service.uuid for service in services] == [BleUuid.SERVICE]
    assert services.get_characteristic(BleUuid.RX).descriptors == []
    assert [d.uuid for d in services.get_characteristic(BleUuid.TX).descriptors] == ["00002902-0000-1000-8000-00805f9b34fb"]
    assert services.get_characteristic(BleUuid.PAIRING) is not None  # pairing reads it: it is in the HandCue service
    assert name == "HandCue-1A2B"  # the advertised name: the GAP name is not read


def phase_names(phases: Phases) -> list[str]:
    return [phase.name for phase in phases.recorded]


def test_a_known_band_is_reached_without_a_scan_and_a_moved_one_by_a_scan():
    async def session(central: BumbleCentral, book: MemoryBook) -> Phases:
        client = BandClient.open(ADDRESS, ble=central.backend)
        client.transport.phases = phases = Phases()
        client.transport.address_book = book
        async with client:
            await client.status()
        return phases

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            book = MemoryBook()
            first = await session(central, book)
            remembered = book.get("HandCue-1A2B")
            second = await session(central, book)
            moved = MemoryBook(KnownBleAddress("C0:00:00:00:00:01", "random"))
            third = await session(central, moved)
            return band.ble.address, first, remembered, second, moved.get("HandCue-1A2B"), third

    address, first, remembered, second, after_move, third = run(job())
    assert "scan until seen" in phase_names(first)
    assert remembered == KnownBleAddress(address, "random")
    assert "scan until seen" not in phase_names(second)
    assert "connect to the known address" in phase_names(second)
    for name in ("connect", "service discovery", "subscribe to TX", "INFO", "STATUS"):
        assert name in phase_names(second)
    assert "connect to the known address (failed)" in phase_names(third)
    assert "scan until seen" in phase_names(third)
    assert after_move == KnownBleAddress(address, "random")
    # A stale address costs a few advertising intervals (DIRECT_CONNECT_TIMEOUT bounds the link's setup), not a second.
    [stale] = [phase for phase in third.recorded if phase.name == "connect to the known address (failed)"]
    assert stale.seconds < 0.7
    for phases in (first, second, third):
        assert "imports (bleak)" not in phase_names(phases)  # imported by this module already: no "+0.0 ms" line
    # The link's connect is a part of "connect to the known address", printed under it, not beside it.
    by_name = {phase.name: phase for phase in second.recorded}
    assert by_name["connect"].parent == by_name["connect to the known address"].id
    assert by_name["service discovery"].parent == by_name["connect to the known address"].id
    assert any(line.startswith("  ") and line.lstrip().endswith("    connect") for line in second.lines())


def test_the_mtu_exchange_the_band_asks_for_is_a_phase_with_the_negotiated_mtu():
    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            client = BandClient.open(ADDRESS, ble=central.backend)
            client.transport.phases = phases = Phases()
            async with client:
                await client.status()
                mtu = client.transport.mtu + 3
            return phases, mtu

    phases, mtu = run(job())
    [exchange] = [phase for phase in phases.recorded if phase.name == "MTU exchange"]
    assert mtu == 247 and exchange.note == "ATT MTU 247, asked by the peer"  # a HandCue band asks at once: our request never goes out
    connect = next(phase for phase in phases.recorded if phase.name == "connect")
    assert exchange.parent is None and connect.end - 1e-3 <= exchange.start <= exchange.end  # from the connection to the update


def test_address_book_lives_with_the_recent_bands_in_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = config.bands_path()
    assert path.parent == tmp_path / "handcue"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(["ble:HandCue-0001"]))  # the first layout: the recent list alone
    assert config.recent_bands() == ["ble:HandCue-0001"]
    book = BleAddressBook()
    book.put("HandCue-1A2B", KnownBleAddress("C1:2B:1A:00:00:01", "random"))
    config.remember_bands(["ble:HandCue-1A2B"])
    assert book.get("handcue-1a2b") == KnownBleAddress("C1:2B:1A:00:00:01", "random")
    assert config.recent_bands() == ["ble:HandCue-1A2B", "ble:HandCue-0001"]
    book.forget("HandCue-1A2B")
    assert book.get("HandCue-1A2B") is None
    assert config.recent_bands() == ["ble:HandCue-1A2B", "ble:HandCue-0001"]


def test_band_advertises_fast_after_boot_and_disconnect_then_slows_down(monkeypatch):
    monkeypatch.setattr(ble_peripheral, "FAST_ADV_SECONDS", 0.2)
    intervals: list[float] = []

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            peripheral = band.ble.peripheral
            original = peripheral.device.start_advertising

            async def recording(**kwargs):
                intervals.append(kwargs["advertising_interval_min"])
                return await original(**kwargs)

            monkeypatch.setattr(peripheral.device, "start_advertising", recording)
            await asyncio.sleep(0.4)  # the fast period after boot ends
            async with BandClient.open(ADDRESS, ble=central.backend) as client:
                await client.status()
            await asyncio.sleep(0.05)
            assert peripheral.device.is_advertising
            await asyncio.sleep(0.4)

    run(job())
    fast, slow = ble_peripheral.FAST_ADV_INTERVAL_MS[0], ble_peripheral.DEFAULT_ADV_INTERVAL_MS
    # boot's fast period ends -> slow; a connection (room for more) -> slow; the disconnect -> fast, then slow.
    assert intervals == [slow, slow, fast, slow]


def test_closing_the_band_ends_within_its_timeout_when_a_central_never_answers(monkeypatch):
    monkeypatch.setattr(ble_peripheral, "DISCONNECT_TIMEOUT", 0.3)

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central, BandClient.open(ADDRESS, ble=central.backend) as client:
            await client.status()
            connection = band.ble.peripheral.connections[0]

            async def never(*_args, **_kwargs):
                await asyncio.Event().wait()

            monkeypatch.setattr(connection, "disconnect", never)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await band.ble.peripheral.disconnect_all(timeout=0.3)
            return loop.time() - started, band.ble.peripheral.connections

    elapsed, left = run(job())
    assert elapsed < 2.0
    assert left == []
