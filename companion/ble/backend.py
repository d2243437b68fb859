"""Which bleak backend carries BLE, as an object handed down to transports and scans."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bleak loads only when BLE is used
    from bleak import BleakScanner
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

__all__ = ["PLATFORM", "BleBackend"]


@dataclasses.dataclass(frozen=True)
class BleBackend:
    """The bleak backend classes for scanning and connecting (None: bleak's platform backend)."""

    scanner: type[BaseBleakScanner] | None = None
    client: type[BaseBleakClient] | None = None
    description: str = ""
    """Where BLE goes, for error messages (e.g. ``"via HCI tcp-client:127.0.0.1:9901"``); empty for the platform."""

    def scanner_args(self) -> BleakScanner.ExtraArgs:
        """Keyword arguments that choose this scanner backend in ``BleakScanner``'s class methods."""
        return {"backend": self.scanner} if self.scanner is not None else {}

    def prefix(self) -> str:
        """``"via HCI ...: "`` to put before an error message, or nothing."""
        return f"{self.description}: " if self.description else ""


PLATFORM = BleBackend()
"""bleak's backend for this operating system."""
