"""BLE transport through bleak's public API (any bleak backend).

The band serves a Nordic-UART-style service: the companion writes frames to RX
(write without response; the protocol's upload window is the flow control) and
receives the band's frames as TX notifications.  :attr:`BleTransport.mtu` is
ATT MTU - 3; the client sizes data frames for the most table bytes per write
(one frame per write at large MTUs; at small ones a frame spans several writes).

With ``--hci`` / ``HANDCUE_HCI`` (or :func:`companion.ble.bumble_backend.configure`)
bleak runs on the bumble backend; otherwise on the operating system's stack.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from protocol.constants import BleUuid

from .base import Transport, TransportClosed, TransportError

MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def bleak_backends() -> dict[str, Any]:
    """Keyword arguments that select the bumble backend when it is configured."""
    from companion.ble import bumble_backend

    hci = os.environ.get("HANDCUE_HCI")
    if not bumble_backend.is_configured() and hci:
        bumble_backend.configure(hci=hci)
    if bumble_backend.is_configured():
        return {"scanner": bumble_backend.BumbleScanner, "client": bumble_backend.BumbleClient}
    return {}


def via_text() -> str:
    """``"via HCI tcp-client:...: "`` when bumble carries BLE, else nothing."""
    from companion.ble import bumble_backend

    hci = bumble_backend.configured_hci()
    return f"via HCI {hci}: " if hci else ""


async def release_backend() -> None:
    """Close the bumble stack of this event loop (if bumble is in use)."""
    from companion.ble import bumble_backend

    if bumble_backend.is_configured():
        await bumble_backend.shutdown()


class BleTransport(Transport):
    """A band reached by advertised name (``ble:HandCue-1A2B``) or address."""

    def __init__(self, address: str, target: str, hci: str | None = None) -> None:
        super().__init__(address)
        self.target = target
        self.hci = hci
        self._client: Any = None
        self._mtu = 20

    @property
    def mtu(self) -> int:
        return self._mtu

    async def connect(self, timeout: float) -> None:
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError

        if self.hci:
            from companion.ble import bumble_backend

            bumble_backend.configure(hci=self.hci)
        backends = bleak_backends()
        scan_timeout = max(timeout, 5.0)
        try:
            if MAC.match(self.target):
                device = await BleakScanner.find_device_by_address(self.target, timeout=scan_timeout, backend=backends.get("scanner"))
            else:
                device = await BleakScanner.find_device_by_name(self.target, timeout=scan_timeout, backend=backends.get("scanner"))
            if device is None:
                raise TransportError(f"{self.address}: no band advertising as {self.target} within {scan_timeout:g} s (is it on and in range?)")
            client = BleakClient(device, disconnected_callback=self._on_disconnect, timeout=scan_timeout, backend=backends.get("client"))
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
            raise TransportError(f"{self.address}: {via_text()}{type(exc).__name__}: {exc}") from exc

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
        await release_backend()
        self._deliver_end("closed")
