from __future__ import annotations

import zlib

import pytest

from companion import compile_routine, load_routine, shipped_routines
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.flash import Flash
from firmware_sim.storage import FLASH_SIZE, Storage

SHIPPED = sorted(shipped_routines())


def stored(data: bytes) -> Storage:
    storage = Storage(Flash(FLASH_SIZE))
    storage.begin_upload(len(data), zlib.crc32(data))
    storage.write_chunk(0, data)
    storage.commit()
    return storage


@pytest.fixture
def make_band():
    def make(routine: str = "nausea-pc6") -> tuple[Band, VirtualClock, list[dict]]:
        clock = VirtualClock()
        band = Band(stored(compile_routine(load_routine(routine))), clock)
        events: list[dict] = []
        band.listeners.append(events.append)
        return band, clock, events

    return make


def run_to_end(band: Band, clock: VirtualClock) -> None:
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
