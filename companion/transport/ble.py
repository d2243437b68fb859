"""BLE transport through bleak's public API (any bleak backend).

The band serves a Nordic-UART-style service: the companion writes frames to RX
(write without response; the protocol's upload window is the flow control) and
receives the band's frames as TX notifications.  :attr:`BleTransport.mtu` is
ATT MTU - 3; the client sizes data frames for the most table bytes per write
(one frame per write at large MTUs; at small ones a frame spans several writes).

Which bleak backend carries BLE is an object given by the caller (a
:class:`~companion.ble.backend.BleBackend`): bleak's platform backend by default, or the
backend of a :class:`~companion.ble.bumble_backend.BumbleCentral`, whose host this
transport uses but does not own (closing the transport closes only its connection).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from protocol.constants import BleUuid

from ..ble.backend import PLATFORM, BleBackend
from .base import Transport, TransportClosed, TransportError

MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class BleTransport(Transport):
    """A band reached by advertised name (``ble:HandCue-1A2B``) or address."""

    def __init__(self, address: str, target: str, backend: BleBackend = PLATFORM) -> None:
        super().__init__(address)
        self.target = target
        self.backend = backend
        self._client: Any = None
        self._mtu = 20

    @property
    def mtu(self) -> int:
        return self._mtu

    async def connect(self, timeout: float) -> None:
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError

        backend = self.backend
        scan_timeout = max(timeout, 5.0)
        find = BleakScanner.find_device_by_address if MAC.match(self.target) else BleakScanner.find_device_by_name
        try:
            device = await find(self.target, timeout=scan_timeout, **backend.scanner_args())
            if device is None:
                raise TransportError(f"{self.address}: no band advertising as {self.target} within {scan_timeout:g} s (is it on and in range?)")
            client = BleakClient(device, disconnected_callback=self._on_disconnect, timeout=scan_timeout, backend=backend.client)
            await client.connect()
            self._client = client
            await client.start_notify(BleUuid.TX, self._on_notify)
            self._mtu = max(20, client.mtu_size - 3)
            # A lone delimiter makes the band drop any partial frame it still holds.
            await client.write_gatt_char(BleUuid.RX, b"\x00", response=False)
        except BleakError as exc:
            await self.disconnect()
            raise TransportError(f"{self.address}: {exc}") from exc
        except TimeoutError as exc:
            await self.disconnect()
            raise TransportError(f"{self.address}: connecting timed out after {scan_timeout:g} s") from exc
        except TransportError:
            raise
        except Exception as exc:  # e.g. bumble cannot open the HCI transport
            await self.disconnect()
            raise TransportError(f"{self.address}: {backend.prefix()}{type(exc).__name__}: {exc}") from exc

    def _on_notify(self, _characteristic: Any, data: bytearray) -> None:
        self._deliver(bytes(data))

    def _on_disconnect(self, _client: Any) -> None:
        self._deliver_end("the band disconnected")

    async def send(self, data: bytes) -> None:
        from bleak.exc import BleakError

        client = self._client
        if client is None or not client.is_connected:
            raise TransportClosed(f"{self.address}: not connected (the band disconnected)")
        try:
            for offset in range(0, len(data), self._mtu):
                await client.write_gatt_char(BleUuid.RX, data[offset : offset + self._mtu], response=False)
        except BleakError as exc:
            raise TransportClosed(f"{self.address}: write failed: {exc}") from exc

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()
        self._deliver_end("closed")
