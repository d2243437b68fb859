"""In-process bands for scripts, tests and benchmarks.

* :func:`storage_with` - a RAM-flash store holding a table, stored through the upload path;
* :class:`LocalBleBand` - a band whose BLE peripheral sits on a bumble ``LocalLink``
  (its own, or one shared with other bands); a central whose host joins the same
  link (the companion's ``BumbleCentral(link=local.link)``) reaches it in the same
  process.  The band knows nothing of the central: it only offers its link.  Its
  bonds live in ``bonds_path`` (kept across restarts) or in memory.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

from .band import Band
from .clock import Clock, VirtualClock
from .flash import Flash
from .handler import ProtocolHandler
from .storage import FLASH_SIZE, Storage

if TYPE_CHECKING:  # bumble loads only when a BLE band is made
    from pathlib import Path

    from bumble.link import LocalLink


def storage_with(data: bytes | None = None) -> Storage:
    """A storage on fresh RAM flash, holding ``data`` (if given) as its active routine."""
    storage = Storage(Flash(FLASH_SIZE))
    if data is not None:
        storage.begin_upload(len(data), zlib.crc32(data))
        storage.write_chunk(0, data)
        storage.commit()
    return storage


class LocalBleBand:
    """``async with LocalBleBand() as local:`` a running band advertising on ``local.link``.

    Pass ``link=`` to put several bands on one virtual link (``band_id`` gives each
    its own name and address); by default the band gets a new ``LocalLink``.
    ``pairing_window`` opens the pairing window for that many seconds at start
    (as ``handcue-sim --pairing-window``).
    """

    def __init__(self, data: bytes | None = None, *, clock: Clock | None = None, battery_percent: float = 87.0,
                 link: LocalLink | None = None, band_id: int = 0x1A2B, bonds_path: Path | None = None,
                 pairing_window: float | None = None) -> None:
        from bumble.link import LocalLink

        from .ble import BlePeripheral
        from .pairing import BandSecurity

        self.link = link if link is not None else LocalLink()
        self.band = Band(storage_with(data), clock or VirtualClock(), band_id=band_id, battery_percent=battery_percent)
        self.handler = ProtocolHandler(self.band)
        self.events: list[dict[str, Any]] = []
        self.band.listeners.append(self.events.append)
        self.security = BandSecurity(bonds_path)
        self.ble = BlePeripheral(self.handler, self.band, link=self.link, security=self.security)
        self.pairing_window = pairing_window
        self._runner: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The advertised name, ``HandCue-<band id>``."""
        return self.ble.name

    async def __aenter__(self) -> LocalBleBand:
        self._runner = asyncio.create_task(self.band.run())
        await self.ble.start()
        if self.pairing_window is not None:
            self.ble.open_pairing_window(self.pairing_window)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ble.close()
        if self._runner is not None:
            self._runner.cancel()

    def motor_events(self) -> list[dict[str, Any]]:
        """Motor events so far, in the shape of ``handcue inspect --timeline --json``."""
        return [{k: v for k, v in e.items() if k != "event"} for e in self.events if e["event"] == "motor"]
