from __future__ import annotations

import pytest

from companion import compile_routine, load_routine, shipped_routines
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.local import storage_with

SHIPPED = sorted(shipped_routines())


@pytest.fixture
def make_band():
    def make(routine: str = "nausea-pc6") -> tuple[Band, VirtualClock, list[dict]]:
        clock = VirtualClock()
        band = Band(storage_with(compile_routine(load_routine(routine))), clock)
        events: list[dict] = []
        band.listeners.append(events.append)
        return band, clock, events

    return make


def run_to_end(band: Band, clock: VirtualClock) -> None:
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
