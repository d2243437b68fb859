"""Connect, cancel at a random moment while the link comes up, reconnect: 50 times, in process.

A cancelled ``BandClient.connect()`` must leave no connection on the band (an orphan keeps
the band from advertising: every later connect would fail "no band advertising"), and no
exception may escape into the event loop's handler or the logs.  The cancel points are drawn
from a seeded generator, printed on failure so that a run can be replayed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib

import pytest

from companion.ble.bumble_backend import BumbleCentral
from companion.client import BandClient
from firmware_sim.local import LocalBleBand

from .test_ble_e2e import big_table

ADDRESS = "ble:HandCue-1A2B"
ROUNDS = 50
SEED = 1411
SETTLE = 2.0
"""Seconds the band may take to see a cancelled link go down."""


async def until(condition, what: str, timeout: float = SETTLE) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        await asyncio.sleep(0.005)


def test_connect_cancel_reconnect_leaves_no_orphan(caplog):
    rng = random.Random(SEED)
    loop_errors: list[dict] = []

    async def measure_connect(central: BumbleCentral) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with BandClient.open(ADDRESS, ble=central.backend, timeout=5) as client:
            await client.status()
        return loop.time() - started

    async def job() -> list[str]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        outcomes: list[str] = []
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            peripheral = band.ble.peripheral
            span = await measure_connect(central)
            for round_ in range(ROUNDS):
                delay = rng.uniform(0, span * 1.2)
                client = BandClient.open(ADDRESS, ble=central.backend, timeout=5)
                task = asyncio.ensure_future(client.connect())
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                    outcomes.append("connected")
                    await client.close()
                except asyncio.CancelledError:
                    outcomes.append("cancelled")
                context = f"round {round_} (seed {SEED}, cancel after {delay * 1000:.1f} ms)"
                await until(lambda: not peripheral.connections, f"{context}: the band still holds a connection")
                await until(lambda: peripheral.device.is_advertising, f"{context}: the band does not advertise again")
                async with BandClient.open(ADDRESS, ble=central.backend, timeout=5) as again:
                    await again.status()
        return outcomes

    with caplog.at_level(logging.WARNING):
        outcomes = asyncio.run(asyncio.wait_for(job(), 120))
    assert len(outcomes) == ROUNDS
    assert "cancelled" in outcomes  # the cancels did land while the link came up
    assert loop_errors == []
    assert [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()] == []


@pytest.mark.parametrize("cut_at", ["UPLOAD_BEGIN", "data", "UPLOAD_COMMIT"])
def test_a_disconnect_at_every_phase_of_an_upload_resumes_on_reconnect(cut_at):
    data = big_table()

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            peripheral = band.ble.peripheral
            client = BandClient.open(ADDRESS, ble=central.backend, timeout=5)
            cut: list[asyncio.Task] = []

            def cut_now() -> None:
                if not cut:
                    cut.append(asyncio.ensure_future(peripheral.disconnect_all()))

            original_request = client.request

            async def request(req, **kwargs):
                if req.opcode.name == cut_at:
                    cut_now()
                return await original_request(req, **kwargs)

            client.request = request  # type: ignore[method-assign]
            async with client:
                try:
                    await client.upload(data, (lambda confirmed, total: cut_now() if 0 < confirmed < total else None) if cut_at == "data" else None)
                except Exception as error:  # the link went down mid-upload: a clear error
                    assert "Traceback" not in str(error)
            await until(lambda: not peripheral.connections, "the band still holds a connection")
            async with BandClient.open(ADDRESS, ble=central.backend, timeout=5) as again:
                result = await again.upload(data)
            return result, band.band.storage.active_table()

    result, active = asyncio.run(asyncio.wait_for(job(), 60))
    assert active == data
    assert result.crc32 == zlib.crc32(data)
