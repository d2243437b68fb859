"""The band's Bluetooth LE side: the protocol handler behind a bumble GATT peripheral.

Three ways to put the band on the air:

* ``link=`` a :class:`bumble.link.LocalLink` shared with a central in the same
  process (tests);
* ``hci_server=`` a bumble transport spec such as ``tcp-server:127.0.0.1:9901``:
  the band sits on a virtual link and a second virtual controller on that link is
  served to another process, which attaches its own BLE host to it;
* ``hci=`` a bumble HCI transport to a real controller (e.g. ``usb:0``).

Frames are the same COBS byte stream as on serial: writes to RX are fed to the
handler, and its output is notified on TX in pieces of at most ATT MTU - 3 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bumble.device import Device
from bumble.link import LocalLink

from ble_stack.addresses import band_address_from_id
from ble_stack.hosts import HostSite
from ble_stack.served import ControllerServer
from protocol.constants import BLE_NAME_PREFIX
from protocol.errors import HandCueError

from .band import Band
from .ble_peripheral import BandPeripheral, DeviceInfo, start_band_peripheral
from .handler import FIRMWARE_VERSION, ProtocolHandler

logger = logging.getLogger(__name__)

BATTERY_UPDATE_S = 5.0


class BlePeripheral:
    """Serves ``handler`` over BLE as ``HandCue-<band id>``."""

    def __init__(self, handler: ProtocolHandler, band: Band, *, hci_server: str | None = None, hci: str | None = None,
                 link: LocalLink | None = None, link_name: str = "ble", link_factory: Callable[[], LocalLink] = LocalLink) -> None:
        if sum(x is not None for x in (hci_server, hci, link)) != 1:
            raise HandCueError("BLE needs exactly one of --hci-server, --hci or a local link")
        self.handler = handler
        self.band = band
        self.hci_server = hci_server
        self.hci = hci
        self.link = link
        self.link_name = link_name
        self.link_factory = link_factory  # the link made for hci_server, e.g. a paced one
        self.name = f"{BLE_NAME_PREFIX}{band.band_id:04X}"
        self.peripheral: BandPeripheral | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: ControllerServer | None = None

    @property
    def address(self) -> str:
        assert self.peripheral is not None
        return self.peripheral.address

    async def start(self) -> None:
        try:
            if self.hci_server is not None:
                self.link = self.link_factory()
                self._server = ControllerServer(self.hci_server, self.link)
                await self._server.start()
            site: HostSite | None = self.link if self.link is not None else self.hci
            assert site is not None  # checked in __init__
            self.peripheral = await start_band_peripheral(
                site,
                name=self.name,
                address=band_address_from_id(self.name),
                on_write=self._on_write,
                battery_percent=round(self.band.battery_percent),
                device_info=DeviceInfo(firmware_revision=".".join(map(str, FIRMWARE_VERSION)), serial_number=f"{self.band.band_id:04X}"),
            )
        except Exception as exc:  # bumble raises its own types for bad transport specs
            raise HandCueError(f"cannot start BLE on {self.hci_server or self.hci or 'the local link'}: {exc}") from exc
        device: Device = self.peripheral.device
        # A fresh parser per connection: a frame torn by a disconnect must not spoil the next one.
        device.on(Device.EVENT_CONNECTION, lambda *_: self.handler.attach(self.link_name, self._outgoing.put_nowait))
        self.handler.attach(self.link_name, self._outgoing.put_nowait)
        self._tasks += [asyncio.create_task(self._tx_loop()), asyncio.create_task(self._battery_loop())]

    def _on_write(self, data: bytes) -> None:
        self.handler.receive(self.link_name, data)

    async def _tx_loop(self) -> None:
        while True:
            data = await self._outgoing.get()
            peripheral = self.peripheral
            if peripheral is None or not peripheral.connections:
                continue  # nobody listening: like a UART without a reader
            size = peripheral.max_notify_size()
            try:
                for offset in range(0, len(data), size):
                    await peripheral.notify(data[offset : offset + size])
            except Exception:  # a disconnect mid-notification; the companion retries
                logger.debug("notification failed", exc_info=True)

    async def _battery_loop(self) -> None:
        while True:
            await asyncio.sleep(BATTERY_UPDATE_S)
            level = round(self.band.battery_percent)
            if self.peripheral is not None and level != self.peripheral.battery_percent:
                self.peripheral.set_battery(level)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.handler.detach(self.link_name)
        if self.peripheral is not None:
            with contextlib.suppress(Exception):
                await self.peripheral.close()
        if self._server is not None:
            await self._server.close()
