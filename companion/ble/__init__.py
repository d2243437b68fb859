"""Bluetooth LE support of the companion: which bleak backend carries BLE, as an object.

A :class:`~companion.ble.backend.BleBackend` names the bleak scanner and client backend classes a BLE
transport uses.  :data:`PLATFORM` is bleak's own backend for the operating system
(BlueZ, CoreBluetooth, WinRT).  :class:`companion.ble.bumble_backend.BumbleCentral`
is a BLE host on the bumble user-space stack (on a virtual link or an HCI transport)
whose :attr:`~companion.ble.bumble_backend.BumbleCentral.backend` is a
:class:`BleBackend` bound to that host, as bleak-esphome binds its client data.

Only the CLI edge turns ``--hci`` / ``HANDCUE_HCI`` into a backend, with
:func:`ble_backend_for`; everything below takes the object it is given.  A bumble
host made there carries the user's :class:`~companion.ble.keystore.CentralIdentity`
(its address and bonds), so a paired companion is let in on every later command.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..phases import Phases, Unrecorded
from .backend import PLATFORM, BleBackend

__all__ = ["PLATFORM", "BleBackend", "ble_backend_for"]


@contextlib.asynccontextmanager
async def ble_backend_for(hci: str | None, *, backend: str | None = None, pairing: bool = False,
                          phases: Phases | None = None) -> AsyncIterator[BleBackend]:
    """The backend for one CLI command: bleak's platform backend, or with ``hci`` (a bumble
    transport spec such as ``tcp-client:127.0.0.1:9901``) a bumble host on it, closed at the end,
    or with ``backend`` (``--ble-backend module:attr``) the bleak backend it names
    (:mod:`companion.ble.named`).

    The host is opened only when a scanner or a client first needs it, so a command
    that talks to a serial band never touches ``hci``.  With ``pairing``, the user's
    central address is created first if it does not exist yet (a bond needs a stable one).
    ``phases`` records the time the bumble host takes to close (``close the BLE host``).
    """
    from .keystore import CentralIdentity

    identity = CentralIdentity.for_user()
    if pairing and (backend or hci):  # before a named backend too: a bumble host it builds (BumbleCentral.from_environment) takes this address
        identity.ensure_address()
    if backend:  # wins over hci, which may come from HANDCUE_HCI for the named backend's own use
        from .named import named_backend

        async with named_backend(backend) as named:
            yield named
        return
    if not hci:
        yield PLATFORM
        return
    from .bumble_backend import BumbleCentral
    from .gatt_cache import GattCacheFile

    # bumble is a user-space host: it keeps the GATT cache an operating system would keep for bleak.
    central = BumbleCentral(hci=hci, identity=identity, gatt_cache=GattCacheFile.for_user())
    try:
        yield central.backend
    finally:
        with (phases or Unrecorded()).phase("close the BLE host"):
            await central.close()
