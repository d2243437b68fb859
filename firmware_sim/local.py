"""In-process bands for scripts, tests and benchmarks.

* :func:`storage_with` - a RAM-flash store holding a table, stored through the upload path;
* :class:`LocalBleBand` - a band whose BLE peripheral sits on a bumble ``LocalLink``,
  with the companion's bleak backend configured on the same link, so
  ``BandClient.open("ble:HandCue-1A2B")`` reaches it in the same process.
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

if TYPE_CHECKING:
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
    """``async with LocalBleBand() as local:`` a running band reachable over in-process BLE."""

    def __init__(self, data: bytes | None = None, *, clock: Clock | None = None, battery_percent: float = 87.0,
                 link: LocalLink | None = None) -> None:
        from bumble.link import LocalLink

        from .ble import BlePeripheral

        self.link = link if link is not None else LocalLink()  # e.g. a ble_stack.paced_link.PacedLink
        self.band = Band(storage_with(data), clock or VirtualClock(), battery_percent=battery_percent)
        self.handler = ProtocolHandler(self.band)
        self.events: list[dict[str, Any]] = []
        self.band.listeners.append(self.events.append)
        self.ble = BlePeripheral(self.handler, self.band, link=self.link)
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalBleBand:
        from companion.ble import bumble_backend

        self._runner = asyncio.create_task(self.band.run())
        await self.ble.start()
        bumble_backend.configure(link=self.link)
        return self

    async def __aexit__(self, *exc: object) -> None:
        from companion.ble import bumble_backend

        await bumble_backend.shutdown()
        bumble_backend.reset()
        await self.ble.close()
        if self._runner is not None:
            self._runner.cancel()

    def motor_events(self) -> list[dict[str, Any]]:
        """Motor events so far, in the shape of ``handcue inspect --timeline --json``."""
        return [{k: v for k, v in e.items() if k != "event"} for e in self.events if e["event"] == "motor"]
