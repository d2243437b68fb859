"""Bluetooth LE support of the companion: which bleak backend carries BLE, as an object.

A :class:`BleBackend` names the bleak scanner and client backend classes a BLE
transport uses.  :data:`PLATFORM` is bleak's own backend for the operating system
(BlueZ, CoreBluetooth, WinRT).  :class:`companion.ble.bumble_backend.BumbleCentral`
is a BLE host on the bumble user-space stack (on a virtual link or an HCI transport)
whose :attr:`~companion.ble.bumble_backend.BumbleCentral.backend` is a
:class:`BleBackend` bound to that host, as bleak-esphome binds its client data.

Only the CLI edge turns ``--hci`` / ``HANDCUE_HCI`` into a backend, with
:func:`ble_backend`; everything below takes the object it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bleak loads only when BLE is used
    from bleak import BleakScanner
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

__all__ = ["PLATFORM", "BleBackend", "ble_backend"]


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


@contextlib.asynccontextmanager
async def ble_backend(hci: str | None) -> AsyncIterator[BleBackend]:
    """The backend for one CLI command: bleak's platform backend, or with ``hci`` (a bumble
    transport spec such as ``tcp-client:127.0.0.1:9901``) a bumble host on it, closed at the end.

    The host is opened only when a scanner or a client first needs it, so a command
    that talks to a serial band never touches ``hci``.
    """
    if not hci:
        yield PLATFORM
        return
    from .bumble_backend import BumbleCentral

    async with BumbleCentral(hci=hci) as central:
        yield central.backend
