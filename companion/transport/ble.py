"""BLE transport through bleak's public API (any bleak backend).

The band serves a Nordic-UART-style service: the companion writes frames to RX
(write without response; the protocol's upload window is the flow control) and
receives the band's frames as TX notifications.  :attr:`BleTransport.mtu` is
ATT MTU - 3; the client sizes data frames for the most table bytes per write
(one frame per write at large MTUs; at small ones a frame spans several writes).

A band that holds a bond accepts state-changing commands only from a paired,
encrypted link.  After connecting, the transport reads the band's pairing
characteristic (:attr:`BleTransport.pairing_state`); when the band is protected and
this link is not trusted, every write asks for a response, so that a refusal comes
back as an ATT error, raised as :class:`~companion.errors.NotPairedError`.

Which bleak backend carries BLE is an object given by the caller (a
:class:`~companion.ble.backend.BleBackend`): bleak's platform backend by default, or the
backend of a :class:`~companion.ble.bumble_backend.BumbleCentral`, whose host this
transport uses but does not own (closing the transport closes only its connection).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from protocol.constants import BleUuid, PairingState

from ..ble.backend import PLATFORM, BleBackend
from ..errors import NotPairedError
from .base import Transport, TransportClosed, TransportError

MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")

REFUSED_FOR_SECURITY = frozenset({0x05, 0x08, 0x0C, 0x0F})
"""ATT errors meaning "pair first": insufficient authentication, authorization, key size, encryption."""


def not_paired_message(band: str) -> str:
    """The one line a user sees when a paired-only band refuses a command."""
    return f"{band} accepts commands only from paired devices: press its button, then run handcue pair"


class BleTransport(Transport):
    """A band reached by advertised name (``ble:HandCue-1A2B``) or address."""

    def __init__(self, address: str, target: str, backend: BleBackend = PLATFORM) -> None:
        super().__init__(address)
        self.target = target
        self.backend = backend
        self._client: Any = None
        self._mtu = 20
        self.pairing_state: PairingState | None = None
        """What the band said about pairing when we connected (None: a band without pairing support)."""
        self._confirm_writes = False

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
            self.pairing_state = await self._read_pairing_state(client)
            state = self.pairing_state or PairingState(0)
            self._confirm_writes = PairingState.PROTECTED in state and PairingState.TRUSTED not in state
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

    @staticmethod
    async def _read_pairing_state(client: Any) -> PairingState | None:
        characteristic = client.services.get_characteristic(BleUuid.PAIRING)
        if characteristic is None:
            return None
        value = await client.read_gatt_char(characteristic)
        return PairingState(value[0]) if value else None

    @property
    def band_name(self) -> str:
        """The band's name as the user knows it (its advertised name, else the target)."""
        client = self._client
        return str(client.name) if client is not None and client.name else self.target

    def _on_notify(self, _characteristic: Any, data: bytearray) -> None:
        self._deliver(bytes(data))

    def _on_disconnect(self, _client: Any) -> None:
        self._deliver_end("the band disconnected")

    async def send(self, data: bytes) -> None:
        from bleak.exc import BleakError

        client = self._client
        if client is None or not client.is_connected:
            raise TransportClosed(f"{self.address}: not connected (the band disconnected)")
        from bleak.exc import BleakGATTProtocolError

        try:
            for offset in range(0, len(data), self._mtu):
                await client.write_gatt_char(BleUuid.RX, data[offset : offset + self._mtu], response=self._confirm_writes)
        except BleakGATTProtocolError as exc:
            if exc.code in REFUSED_FOR_SECURITY:
                raise NotPairedError(not_paired_message(self.band_name)) from exc
            raise TransportClosed(f"{self.address}: write failed: {exc}") from exc
        except BleakError as exc:
            raise TransportClosed(f"{self.address}: write failed: {exc}") from exc

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()
        self._deliver_end("closed")
