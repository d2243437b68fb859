"""The bumble bleak backend against the band's GATT peripheral, below the HandCue protocol.

In process, a bare :func:`~firmware_sim.ble_peripheral.start_band_peripheral` whose
``on_write`` echoes every RX value back as a TX notification shares a bumble
LocalLink with the backend; unchanged bleak code drives it.  Across processes the band
serves a virtual controller on TCP (``python -m firmware_sim --hci-server``, or the same
BlePeripheral in this process when the test must watch the band while another process's
host comes and goes).  The protocol itself over BLE is covered by
test_ble_e2e.py; this file covers GATT details, flow control, disconnections and the
failure paths of the backend and the peripheral.

Plain ``asyncio.run`` with a bound on every wait; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_16
from bumble.core import UUID
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.link import LocalLink

from ble_stack.addresses import band_address_from_id, free_tcp_port
from ble_stack.served import HOST_WATCH_INTERVAL
from companion.ble import bumble_backend
from companion.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleDeviceDetails
from companion.client import BandClient
from firmware_sim.band import Band
from firmware_sim.ble import BlePeripheral
from firmware_sim.ble_peripheral import (
    UART_RX_CHAR_UUID,
    UART_SERVICE_UUID,
    UART_TX_CHAR_UUID,
    BandPeripheral,
    DeviceInfo,
    start_band_peripheral,
)
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.storage import FLASH_SIZE, Storage
from protocol.constants import BleUuid

ROOT = Path(__file__).resolve().parents[2]
BAND_NAME = "HandCue-1A2B"
BAND_ADDRESS = band_address_from_id("1A2B")
TEST_TIMEOUT = 10.0
"""Bound on one test's coroutine."""
STEP_TIMEOUT = 2.0
"""Bound on one awaited step (a notification, a scan, a callback...)."""
PROCESS_TIMEOUT = 5.0
"""Bound on a subprocess starting up or exiting."""

MANUFACTURER_NAME = normalize_uuid_16(0x2A29)
MODEL_NUMBER = normalize_uuid_16(0x2A24)
FIRMWARE_REVISION = normalize_uuid_16(0x2A26)
SERIAL_NUMBER = normalize_uuid_16(0x2A25)
CCCD = normalize_uuid_16(0x2902)
INFO = DeviceInfo(manufacturer_name="HandCue Labs", model_number="HC-1", firmware_revision="0.1.0-test", serial_number="TEST-1A2B")


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run one test coroutine in a fresh event loop, bounded by TEST_TIMEOUT."""
    asyncio.run(asyncio.wait_for(coroutine, TEST_TIMEOUT))


class EchoBand:
    """A bare band peripheral whose on_write echoes every value back on TX."""

    def __init__(self) -> None:
        self.band: BandPeripheral | None = None
        self.received: list[bytes] = []
        self.received_bytes = 0
        self._received_more = asyncio.Event()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def on_write(self, _connection: Connection, data: bytes) -> None:
        self.received.append(data)
        self.received_bytes += len(data)
        self._received_more.set()
        self._queue.put_nowait(data)

    async def wait_for_bytes(self, total: int) -> None:
        """Wait until ``total`` bytes were written to RX since start."""
        while self.received_bytes < total:
            self._received_more.clear()
            await self._received_more.wait()

    async def start(self, link: LocalLink) -> BandPeripheral:
        self.band = await start_band_peripheral(link, name=BAND_NAME, address=BAND_ADDRESS, on_write=self.on_write, device_info=INFO)
        self._task = asyncio.create_task(self._echo())
        return self.band

    async def _echo(self) -> None:
        while True:
            data = await self._queue.get()
            assert self.band is not None
            await self.band.notify(data)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.band is not None:
            await self.band.close()


async def with_band(body: Callable[[EchoBand, BumbleCentral], Awaitable[None]]) -> None:
    """LocalLink + echo band + a central on the link; run ``body``; tear down."""
    link = LocalLink()
    echo = EchoBand()
    await echo.start(link)
    try:
        async with BumbleCentral(link=link) as central:
            await body(echo, central)
    finally:
        await echo.close()


async def scan_for_band(central: BumbleCentral, service_uuids: list[str] | None = None) -> tuple[BLEDevice, AdvertisementData]:
    """Scan with a plain BleakScanner until the band's complete advertisement shows."""
    found: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = asyncio.get_running_loop().create_future()

    def on_detection(device: BLEDevice, adv: AdvertisementData) -> None:
        if adv.local_name == BAND_NAME and not found.done():
            found.set_result((device, adv))

    async with BleakScanner(on_detection, service_uuids=service_uuids, backend=central.scanner_backend) as scanner:
        device, _ = await asyncio.wait_for(found, STEP_TIMEOUT)
        seen = scanner.discovered_devices_and_advertisement_data
    assert device.address in seen
    return seen[device.address]


def collector() -> tuple[asyncio.Queue[bytes], Callable[[BleakGATTCharacteristic, bytearray], None]]:
    """A queue and a bleak notification callback that fills it."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def callback(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        queue.put_nowait(bytes(data))

    return queue, callback


async def next_item(queue: asyncio.Queue[bytes]) -> bytes:
    return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)


# ---------------------------------------------------------------------------
# In one process: the bare peripheral with an echo on_write


def test_scan_connect_echo_notify_and_read() -> None:
    """Both write kinds echo; MTU-3 limit; CCCD follows start/stop_notify; battery notify; DIS strings."""

    async def body(echo: EchoBand, central: BumbleCentral) -> None:
        assert echo.band is not None
        device, adv = await scan_for_band(central, service_uuids=[UART_SERVICE_UUID])
        assert device.address == BAND_ADDRESS
        assert isinstance(device.details, BumbleDeviceDetails)
        assert adv.rssi < 0

        disconnected = asyncio.Event()
        client = BleakClient(device, lambda _c: disconnected.set(), backend=central.client_backend, timeout=5)
        await client.connect()
        try:
            assert client.is_connected
            assert client.backend_id == "BumbleClient"
            assert client.name == BAND_NAME  # the GAP device name, read at connection
            rx = client.services.get_characteristic(UART_RX_CHAR_UUID)
            tx = client.services.get_characteristic(UART_TX_CHAR_UUID)
            assert rx is not None and tx is not None
            assert {"write", "write-without-response"} <= set(rx.properties)
            assert "notify" in tx.properties
            assert rx.max_write_without_response_size == client.mtu_size - 3

            notifications, on_tx = collector()
            await client.start_notify(UART_TX_CHAR_UUID, on_tx)
            cccd = tx.get_descriptor(CCCD)
            assert cccd is not None
            assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"

            await client.write_gatt_char(UART_RX_CHAR_UUID, b"no-response", response=False)
            assert await next_item(notifications) == b"no-response"
            await client.write_gatt_char(UART_RX_CHAR_UUID, b"with-response", response=True)
            assert await next_item(notifications) == b"with-response"
            biggest = bytes(range(rx.max_write_without_response_size))
            await client.write_gatt_char(UART_RX_CHAR_UUID, biggest, response=False)
            assert await next_item(notifications) == biggest
            with pytest.raises(BleakError, match="MTU"):
                await client.write_gatt_char(UART_RX_CHAR_UUID, biggest + b"!", response=False)
            assert echo.received == [b"no-response", b"with-response", biggest]  # the oversized write never left

            battery, on_battery = collector()
            await client.start_notify(BleUuid.BATTERY_LEVEL, on_battery)
            echo.band.set_battery(42)
            assert await next_item(battery) == bytes([42])
            assert await client.read_gatt_char(BleUuid.BATTERY_LEVEL) == bytes([42])

            strings = {uuid: (await client.read_gatt_char(uuid)).decode() for uuid in (MANUFACTURER_NAME, MODEL_NUMBER, FIRMWARE_REVISION, SERIAL_NUMBER)}
            assert strings == {
                MANUFACTURER_NAME: INFO.manufacturer_name,
                MODEL_NUMBER: INFO.model_number,
                FIRMWARE_REVISION: INFO.firmware_revision,
                SERIAL_NUMBER: INFO.serial_number,
            }

            await client.stop_notify(UART_TX_CHAR_UUID)
            assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"
            await client.write_gatt_char(UART_RX_CHAR_UUID, b"silent", response=True)
            assert echo.received[-1] == b"silent"  # acknowledged, so on_write has run
            await asyncio.sleep(0.1)  # let the echo task try to notify
            assert notifications.empty()
        finally:
            await client.disconnect()
        assert not client.is_connected
        # As with BlueZ, the callback also fires on a disconnection we asked for.
        await asyncio.wait_for(disconnected.wait(), STEP_TIMEOUT)

    run(with_band(body))


def test_descriptor_write() -> None:
    """write_gatt_descriptor (bleak refuses CCCD writes itself, so call the backend)."""

    async def body(_echo: EchoBand, central: BumbleCentral) -> None:
        device, _ = await scan_for_band(central)
        async with BleakClient(device, backend=central.client_backend, timeout=5) as client:
            tx = client.services.get_characteristic(UART_TX_CHAR_UUID)
            assert tx is not None
            cccd = tx.get_descriptor(CCCD)
            assert cccd is not None
            backend = client._backend
            assert isinstance(backend, BumbleClient)
            await backend.write_gatt_descriptor(cccd, b"\x01\x00")
            assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"
            await backend.write_gatt_descriptor(cccd, b"\x00\x00")
            assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"

    run(with_band(body))


def test_write_without_response_flood_is_lossless_and_bounded() -> None:
    """64 KiB of MTU-3 writes without response: every byte arrives in order; the host's ACL queue stays bounded."""

    async def body(echo: EchoBand, central: BumbleCentral) -> None:
        assert echo.band is not None
        band = echo.band
        device, _ = await scan_for_band(central)
        async with BleakClient(device, backend=central.client_backend, timeout=5) as client:
            rx = client.services.get_characteristic(UART_RX_CHAR_UUID)
            assert rx is not None
            chunk = rx.max_write_without_response_size
            backend = client._backend
            assert isinstance(backend, BumbleClient) and backend._connection is not None
            connection = backend._connection
            queue = connection.device.host.get_data_packet_queue(connection.handle)
            assert queue is not None
            # One write is one ATT PDU (3-byte header) in one L2CAP PDU (4-byte header),
            # cut into ACL packets of at most max_packet_size bytes.
            packets_per_write = -(-(chunk + 3 + 4) // queue.max_packet_size)
            bound = bumble_backend.WRITE_WITHOUT_RESPONSE_MAX_PENDING + packets_per_write

            total = 64 * 1024
            payload = bytes(i % 251 for i in range(total))
            echo.received.clear()
            start_writes = band.rx_writes
            max_pending = 0
            throttled = 0
            for offset in range(0, total, chunk):
                throttled += queue.pending > bumble_backend.WRITE_WITHOUT_RESPONSE_MAX_PENDING
                await client.write_gatt_char(rx, payload[offset : offset + chunk], response=False)
                max_pending = max(max_pending, queue.pending)
            await asyncio.wait_for(echo.wait_for_bytes(total), PROCESS_TIMEOUT)
            assert b"".join(echo.received) == payload
            assert band.rx_writes - start_writes == -(-total // chunk)
            assert max_pending <= bound, (max_pending, bound)
            assert throttled > 0, "the flood never reached the pending limit: the bound was not exercised"

    run(with_band(body))


def test_peripheral_disconnects() -> None:
    """The band drops the link: the callback fires, GATT calls fail clearly, the same client reconnects."""

    async def body(echo: EchoBand, central: BumbleCentral) -> None:
        assert echo.band is not None
        device, _ = await scan_for_band(central)
        disconnected = asyncio.Event()
        client = BleakClient(device, lambda _c: disconnected.set(), backend=central.client_backend, timeout=5)
        await client.connect()
        rx = client.services.get_characteristic(UART_RX_CHAR_UUID)
        assert rx is not None

        await echo.band.disconnect_all()
        await asyncio.wait_for(disconnected.wait(), STEP_TIMEOUT)
        assert not client.is_connected
        # Services are dropped on disconnection (as with BlueZ), so BleakClient itself
        # refuses GATT calls by UUID before they reach the backend.
        for response in (False, True):
            with pytest.raises(BleakError, match="Service Discovery has not been performed"):
                await client.write_gatt_char(UART_RX_CHAR_UUID, b"late", response=response)
        with pytest.raises(BleakError, match="Not connected"):
            await client.start_notify(UART_TX_CHAR_UUID, lambda _c, _d: None)
        # bleak refuses even a characteristic object kept from before; the backend's
        # own check answers a caller that reaches it anyway.
        for response in (False, True):
            with pytest.raises(BleakError, match="Service Discovery has not been performed"):
                await client.write_gatt_char(rx, b"late", response=response)
            with pytest.raises(BleakError, match="Not connected"):
                await client._backend.write_gatt_char(rx, b"late", response)
        assert echo.received == []

        # The band advertises again (auto-restart) and the same client reconnects.
        disconnected.clear()
        await client.connect()
        assert client.is_connected
        await client.write_gatt_char(UART_RX_CHAR_UUID, b"back", response=True)
        assert echo.received == [b"back"]
        await client.disconnect()
        await asyncio.wait_for(disconnected.wait(), STEP_TIMEOUT)

    run(with_band(body))


def test_disconnect_during_request_raises_bleak_error() -> None:
    """A write request in flight when the band drops the link fails with BleakError (not CancelledError)."""
    stall_uuid = "6E40FFFF-B5A3-F393-E0A9-E50E24DCCA9E"

    async def body(echo: EchoBand, central: BumbleCentral) -> None:
        band = echo.band
        assert band is not None
        drops: list[asyncio.Task[None]] = []

        async def stall_then_drop(_connection: Connection, _value: bytes) -> None:
            drops.append(asyncio.create_task(band.disconnect_all()))
            await asyncio.sleep(STEP_TIMEOUT * 2)  # never answers in time

        band.device.add_service(
            Service(UUID(stall_uuid), [Characteristic(stall_uuid, Characteristic.Properties.WRITE, Characteristic.WRITEABLE, CharacteristicValue(write=stall_then_drop))])
        )
        device, _ = await scan_for_band(central)
        async with BleakClient(device, backend=central.client_backend, timeout=5) as client:
            with pytest.raises(BleakError, match="disconnected"):
                await asyncio.wait_for(client.write_gatt_char(stall_uuid, b"x", response=True), STEP_TIMEOUT)
            assert not client.is_connected
        assert len(drops) == 1
        await asyncio.wait_for(drops[0], STEP_TIMEOUT)

    run(with_band(body))


def test_connect_failures_then_success() -> None:
    """An absent device: not found by address, timeout by BLEDevice; a real connection still works after."""

    async def body(_echo: EchoBand, central: BumbleCentral) -> None:
        absent = "C9:22:33:44:55:66"
        with pytest.raises(BleakDeviceNotFoundError):
            await asyncio.wait_for(BleakClient(absent, backend=central.client_backend, timeout=0.5).connect(), PROCESS_TIMEOUT)
        ghost = BLEDevice(absent, None, BumbleDeviceDetails(Address(absent)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(BleakClient(ghost, backend=central.client_backend, timeout=0.5).connect(), PROCESS_TIMEOUT)
        # Address string: the backend scans for it first, as bleak's backends do.
        async with BleakClient(BAND_ADDRESS, backend=central.client_backend, timeout=5) as client:
            assert client.is_connected
            assert client.name == BAND_NAME

    run(with_band(body))


# ---------------------------------------------------------------------------
# Across processes: the band is `python -m firmware_sim --hci-server tcp-server:...`


async def start_sim(port: int) -> tuple[asyncio.subprocess.Process, str]:
    """Launch the band simulator serving a virtual controller on ``port``; return it and the band's address."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}", "--clock", "virtual",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), PROCESS_TIMEOUT)).decode()
        assert line.startswith(f"ble: {BAND_NAME} "), line
    except BaseException:
        await stop(process, kill=True)
        raise
    return process, line.split()[2]


async def stop(process: asyncio.subprocess.Process, *, kill: bool = False) -> int:
    """Terminate (or kill) a subprocess and reap it; return its exit code."""
    if process.returncode is None:
        process.kill() if kill else process.terminate()
    try:
        return await asyncio.wait_for(process.wait(), PROCESS_TIMEOUT)
    except TimeoutError:
        process.kill()
        return await process.wait()


async def info_band_id(central: BumbleCentral) -> int:
    """INFO through the real protocol on ``central``'s host."""
    async with BandClient.open(f"ble:{BAND_NAME}", ble=central.backend) as client:
        return (await client.info()).band_id


# A host process that connects to the band and, once told to (a line on stdin), dies without disconnecting.
GHOST_HOST = """
import asyncio, os, sys
from bleak import BleakClient, BleakScanner
from companion.ble.bumble_backend import BumbleCentral

async def main():
    central = BumbleCentral(hci=sys.argv[1])
    device = await BleakScanner.find_device_by_name(sys.argv[2], timeout=2, backend=central.scanner_backend)
    client = BleakClient(device, backend=central.client_backend, timeout=2)
    await client.connect()
    print("CONNECTED", flush=True)
    sys.stdin.readline()
    os._exit(0)

asyncio.run(main())
"""


def test_host_process_dies_without_disconnecting() -> None:
    """A host killed while connected does not leave the band held: it advertises again and answers INFO.

    The band runs in this process exactly as ``firmware_sim --hci-server`` runs it
    (a BlePeripheral serving a virtual controller), so the test can see it freed
    before any new host attaches (whose HCI Reset would also free it).
    """

    async def body() -> None:
        port = free_tcp_port()
        hci = f"tcp-client:127.0.0.1:{port}"
        band = Band(Storage(Flash(FLASH_SIZE)), VirtualClock())
        ble = BlePeripheral(ProtocolHandler(band), band, hci_server=f"tcp-server:127.0.0.1:{port}")
        runner = asyncio.create_task(band.run())
        await ble.start()
        try:
            assert ble.peripheral is not None
            peripheral = ble.peripheral
            ghost = await asyncio.create_subprocess_exec(
                sys.executable, "-c", GHOST_HOST, hci, BAND_NAME, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT
            )  # fmt: skip
            assert ghost.stdin is not None and ghost.stdout is not None
            try:
                line = await asyncio.wait_for(ghost.stdout.readline(), PROCESS_TIMEOUT)
                assert line.startswith(b"CONNECTED"), line
                assert len(peripheral.connections) == 1
                assert peripheral.device.is_advertising  # connectable still: room for more centrals
                # The band notices a host leaving by polling the TCP server; a host whose whole life
                # falls between two polls goes unnoticed, so this one lives across a poll.
                await asyncio.sleep(2 * HOST_WATCH_INTERVAL)
                ghost.stdin.write(b"die\n")
                assert await asyncio.wait_for(ghost.wait(), PROCESS_TIMEOUT) == 0  # gone without disconnecting
            finally:
                await stop(ghost, kill=True)

            async def freed() -> None:
                while peripheral.connections or not peripheral.device.is_advertising:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(freed(), STEP_TIMEOUT)

            async with BumbleCentral(hci=hci) as central:
                assert await info_band_id(central) == 0x1A2B
        finally:
            await ble.close()
            runner.cancel()

    run(body())


def test_served_controller_dies_then_backend_rebuilds_its_stack() -> None:
    """Losing the HCI transport disconnects the client; with the band back on the same port a new stack is made."""

    async def body() -> None:
        port = free_tcp_port()
        sim, address = await start_sim(port)
        central = BumbleCentral(hci=f"tcp-client:127.0.0.1:{port}")
        try:
            first_stack = await central.device()
            device = await BleakScanner.find_device_by_name(BAND_NAME, timeout=STEP_TIMEOUT, backend=central.scanner_backend)
            assert device is not None and device.address == address
            disconnected = asyncio.Event()
            client = BleakClient(device, lambda _c: disconnected.set(), backend=central.client_backend, timeout=5)
            await client.connect()

            await stop(sim, kill=True)
            await asyncio.wait_for(disconnected.wait(), STEP_TIMEOUT)
            assert not client.is_connected
            with pytest.raises(BleakError):
                await client.write_gatt_char(UART_RX_CHAR_UUID, b"late", response=False)

            # Same central, band back on the same port: the central notices its
            # transport is gone and brings up a new host.
            sim, _ = await start_sim(port)
            assert await central.device() is not first_stack
            assert await info_band_id(central) == 0x1A2B
        finally:
            await central.close()
            await stop(sim)

    run(body())
