from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from companion import compile_routine, load_routine, shipped_routines
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.local import storage_with

SHIPPED = sorted(shipped_routines())

# `--hypothesis-profile=long` (hypothesis' own option): the long fuzzing run of the property tests.
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--exhaustive", action="store_true", default=os.environ.get("HANDCUE_EXHAUSTIVE", "") not in ("", "0"),
        help="Long runs: power cuts at every flash work unit, many more damaged flash images "
             "(also HANDCUE_EXHAUSTIVE=1). For long fuzzing add --hypothesis-profile=long.",
    )
    parser.addoption(
        "--soak", type=int, metavar="N", default=int(os.environ.get("HANDCUE_SOAK") or 0),
        help="Soak: N random uploads over a faulty serial link and N/5 over BLE (also HANDCUE_SOAK=N; "
             "HANDCUE_SOAK_SEED replays a run). Add -s to see the tally.",
    )


@pytest.fixture
def make_band():
    def make(routine: str = "nausea-pc6") -> tuple[Band, VirtualClock, list[dict]]:
        clock = VirtualClock()
        band = Band(storage_with(compile_routine(load_routine(routine))), clock)
        events: list[dict] = []
        band.listeners.append(events.append)
        return band, clock, events

    return make


def advance_to(band: Band, clock: VirtualClock, t: int) -> None:
    """Play everything due up to band time ``t`` (routine time too, while nothing was paused)."""
    while (deadline := band.next_deadline()) is not None and deadline <= t:
        clock.set(deadline)
        band.process()
    clock.set(t)
    band.process()


def run_to_end(band: Band, clock: VirtualClock) -> None:
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
