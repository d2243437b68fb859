"""The band's pairing and bonding policy (LE Secure Connections, Just Works).

* The **pairing window**: the band accepts a new pairing only for
  :data:`PAIRING_WINDOW_S` seconds after a press of its button (in the simulator:
  SIGUSR1 or ``handcue-sim --pairing-window SECONDS``).  Outside it, a pairing
  request is answered with SMP "pairing not supported".
* The **bonds**: bumble's key store, kept in a JSON file beside the band's flash
  image (or in memory for a band without a flash file), so the band keeps them
  across restarts.  A long press (SIGUSR2) is a factory reset: bonds and routine erased.
* The **command gate**: once the band holds a bond, requests that change its state
  (upload, erase, start, pause, resume, skip, stop) are accepted only on an
  encrypted link from a bonded central; INFO and STATUS stay open to anyone.  A band
  without any bond accepts everything from everyone, as before pairing existed.
* The **robust caching records** (:mod:`firmware_sim.gatt_caching`), one per central that
  bonded, in a JSON file beside the bonds (``*.bonds.caching.json``): kept when the bond
  is erased or made anew, since that central may still hold handles it cached.

This module knows bumble's key store and connections but nothing of GATT; the BLE
peripheral (:mod:`firmware_sim.ble`) consults :meth:`BandSecurity.allows` and serves
:meth:`BandSecurity.state_for` on the pairing characteristic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from bumble.device import Connection
from bumble.keys import JsonKeyStore, KeyStore, MemoryKeyStore
from bumble.pairing import PairingConfig, PairingDelegate

from protocol.constants import Opcode, PairingState

from .gatt_caching import CachingStore, caching_path_for

logger = logging.getLogger(__name__)

PAIRING_WINDOW_S = 60.0
"""How long a button press keeps the band open to a new pairing."""

OPEN_OPCODES: frozenset[Opcode] = frozenset({Opcode.INFO, Opcode.STATUS})
"""Requests any central may send, bonded or not: they only read."""


def bonds_path_for(flash_path: Path) -> Path:
    """Where a band whose flash image is ``flash_path`` keeps its bonds: beside it."""
    return flash_path.with_name(flash_path.name + ".bonds.json")


class PairingWindow:
    """Open for a while after a button press; ``clock`` is monotonic seconds (injectable)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._closes_at = float("-inf")

    def open(self, seconds: float = PAIRING_WINDOW_S) -> None:
        self._closes_at = self._clock() + seconds
        logger.info("pairing window open for %g s", seconds)

    def close(self) -> None:
        self._closes_at = float("-inf")

    @property
    def is_open(self) -> bool:
        return self._clock() < self._closes_at

    @property
    def remaining(self) -> float:
        """Seconds until the window closes (0 when closed)."""
        return max(0.0, self._closes_at - self._clock())


class _WindowDelegate(PairingDelegate):
    """Just Works pairing, accepted only while the window is open."""

    def __init__(self, window: PairingWindow) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
        self.window = window

    async def accept(self) -> bool:
        if not self.window.is_open:
            logger.info("pairing refused: the pairing window is closed (press the button)")
        return self.window.is_open


class BandSecurity:
    """Bonds, pairing window and command gate of one band.

    Args:
        bonds_path: JSON key store file (created on the first bond); None keeps bonds in memory.
        window: the pairing window (a new, closed one by default).
    """

    def __init__(self, bonds_path: Path | None = None, window: PairingWindow | None = None) -> None:
        self.bonds_path = bonds_path
        self.window = window or PairingWindow()
        self.keystore: KeyStore = JsonKeyStore(namespace=None, filename=str(bonds_path)) if bonds_path else MemoryKeyStore()
        self._bonded: set[str] = set()
        """Peer identity addresses with a bond (a cache of the key store, read synchronously by the gate)."""
        self.caching = CachingStore(caching_path_for(bonds_path) if bonds_path else None, is_bonded=lambda peer: peer in self._bonded)
        """Robust caching records per central that bonded (:class:`~firmware_sim.gatt_caching.RobustCaching` reads and writes them)."""

    async def load(self) -> None:
        """Read the bonds from the key store, and their robust caching records (at boot)."""
        self._bonded = {name for name, _keys in await self.keystore.get_all()}
        self.caching.load(self._bonded)

    @property
    def has_bonds(self) -> bool:
        return bool(self._bonded)

    @property
    def bonded_peers(self) -> frozenset[str]:
        return frozenset(self._bonded)

    def pairing_config(self, _connection: Connection) -> PairingConfig:
        """bumble's ``Device.pairing_config_factory``: LE Secure Connections, bonding, Just Works."""
        return PairingConfig(sc=True, mitm=False, bonding=True, delegate=_WindowDelegate(self.window))

    def on_paired(self, connection: Connection) -> None:
        """A central just bonded (bumble stored its keys under its identity address)."""
        self._bonded.add(str(connection.peer_address))
        # Its robust caching record stays: until a trusted link proves it aware, the central may hold handles
        # cached under its old bond (for another database).
        logger.info("bonded with %s", connection.peer_address)

    def trusted(self, connection: Connection) -> bool:
        """Whether ``connection`` is encrypted and comes from a bonded central."""
        return connection.is_encrypted and str(connection.peer_address) in self._bonded

    def allows(self, connection: Connection, opcode: int) -> bool:
        """Whether a request with ``opcode`` may run on ``connection``."""
        return not self._bonded or opcode in OPEN_OPCODES or self.trusted(connection)

    def state_for(self, connection: Connection) -> PairingState:
        """What the pairing characteristic reads for ``connection``."""
        state = PairingState(0)
        if self._bonded:
            state |= PairingState.PROTECTED
        if self.window.is_open:
            state |= PairingState.WINDOW_OPEN
        if self.trusted(connection):
            state |= PairingState.TRUSTED
        return state

    async def forget(self, connection: Connection) -> None:
        """Delete the bond of the central on ``connection`` (it asked to be forgotten)."""
        name = str(connection.peer_address)
        self._bonded.discard(name)  # its robust caching record stays (SPEC §21.6): the central may keep its cache
        if await self.keystore.get(name) is not None:
            await self.keystore.delete(name)
        logger.info("forgot %s", name)

    async def forget_all(self) -> None:
        """Delete every bond (factory reset)."""
        self._bonded.clear()  # the robust caching records stay (SPEC §21.6)
        await self.keystore.delete_all()
