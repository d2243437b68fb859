"""Which bleak backend carries BLE, as an object handed down to transports and scans."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bleak loads only when BLE is used
    from bleak import BleakScanner
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import BaseBleakScanner

__all__ = ["PLATFORM", "BleBackend"]


@dataclasses.dataclass(frozen=True)
class BleBackend:
    """The bleak backend classes for scanning and connecting (None: bleak's platform backend)."""

    scanner: type[BaseBleakScanner] | None = None
    client: type[BaseBleakClient] | None = None
    description: str = ""
    """Where BLE goes, for error messages (e.g. ``"via HCI tcp-client:127.0.0.1:9901"``); empty for the platform."""
    device_at: Callable[[str, str, str], BLEDevice] | None = None
    """``device_at(address, address_type, name)``: a device to connect to without a scan, where the
    backend can (bumble can; BlueZ and CoreBluetooth know only devices they have seen); None: it cannot."""
    address_type_of: Callable[[BLEDevice], str] | None = None
    """The type (``"public"``/``"random"``) of a scanned device's address, to remember it with ``device_at``."""
    records_phases: bool = False
    """Whether the client backend takes ``phases=`` (a :class:`~companion.phases.Phases`) to time connect, MTU and discovery."""
    bounds_link_setup: bool = False
    """Whether the client backend takes ``link_timeout=``: the seconds the link itself may take to come up, apart
    from the GATT work after it (so that a connection to a stale address gives up early, yet a slow discovery may finish)."""
    chooses_encryption: bool = False
    """Whether the client backend takes ``encrypt_bonded=``: False leaves a link to a peer whose bond this host
    holds unencrypted at connect (a command that only reads INFO and STATUS, which a paired band answers on any
    link, SPEC §21.5, then skips the encryption's round trips).  False here: the backend does not say (a platform
    backend: the operating system decides when to encrypt a bonded link, e.g. BlueZ at connect)."""

    def scanner_args(self) -> BleakScanner.ExtraArgs:
        """Keyword arguments that choose this scanner backend in ``BleakScanner``'s class methods."""
        return {"backend": self.scanner} if self.scanner is not None else {}

    def prefix(self) -> str:
        """``"via HCI ...: "`` to put before an error message, or nothing."""
        return f"{self.description}: " if self.description else ""


PLATFORM = BleBackend()
"""bleak's backend for this operating system."""
