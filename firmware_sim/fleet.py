"""``handcue-sim --bands N``: more simulated bands beside the first, on its virtual link.

Band ``i`` (from 1) gets id ``first + i``, the name ``HandCue-<id>``, an address derived
from it, its own clock, storage (``band-<id>.bin`` beside ``--flash band.bin``, else RAM)
and bonds; all advertise on the link whose controller ``--hci-server`` serves, so one
companion host reaches every band.  The button (SIGUSR1/SIGUSR2) stays the first band's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from bumble.link import LocalLink

from .band import Band
from .ble import BlePeripheral
from .clock import Clock
from .flash import Flash
from .handler import ProtocolHandler
from .pairing import BandSecurity, bonds_path_for
from .storage import FLASH_SIZE, Storage


def flash_path_for(first: Path, band_id: int) -> Path:
    """The flash file of band ``band_id`` beside the first band's ``first``."""
    return first.with_name(f"{first.stem}-{band_id:04X}{first.suffix}")


class ExtraBands:
    """Bands 2..N, started on ``link`` and closed together."""

    def __init__(self, link: LocalLink, count: int, *, first_id: int, clock: Callable[[], Clock],
                 flash: Path | None = None, battery_percent: float = 87.0) -> None:
        self.link = link
        self.bands: list[Band] = []
        self.flashes: list[Flash] = []
        self.peripherals: list[BlePeripheral] = []
        for index in range(count):
            band_id = (first_id + index) & 0xFFFF
            path = flash_path_for(flash, band_id) if flash else None
            flash_chip = Flash(FLASH_SIZE, path)
            band = Band(Storage(flash_chip), clock(), band_id=band_id, battery_percent=battery_percent)
            security = BandSecurity(bonds_path_for(path) if path else None)
            self.flashes.append(flash_chip)
            self.bands.append(band)
            self.peripherals.append(BlePeripheral(ProtocolHandler(band), band, link=link, security=security))
        self._runners: list[asyncio.Task[None]] = []

    async def start(self) -> list[BlePeripheral]:
        for band, peripheral in zip(self.bands, self.peripherals, strict=True):
            self._runners.append(asyncio.create_task(band.run()))
            await peripheral.start()
        return self.peripherals

    async def close(self) -> None:
        for peripheral in self.peripherals:
            with contextlib.suppress(Exception):
                await peripheral.close()
        for runner in self._runners:
            runner.cancel()
        for flash in self.flashes:
            flash.close()
