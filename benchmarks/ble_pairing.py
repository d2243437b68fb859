"""BLE pairing: the time that pairing and bonded encryption add to opening a connection to a band."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bumble.link import LocalLink

from companion.ble.bumble_backend import BumbleCentral
from companion.ble.pairing import pair_band
from companion.client import BandClient
from firmware_sim.local import LocalBleBand

from . import Report, Row, md_table, median, ms

NAME = "ble_pairing"
TITLE = "BLE pairing and encryption"
BAND = "HandCue-1A2B"
RUN_TIMEOUT = 120.0

METHOD = f"""\
In one process: a simulated band (`firmware_sim.local.LocalBleBand`) and companion hosts
(`companion.ble.bumble_backend.BumbleCentral(link=...)`) on one `bumble.link.LocalLink`, bleak on
bumble on both sides; the band's controller encrypts for real (AES-CCM), SMP runs LE Secure
Connections (P-256 ECDH, Just Works). The LocalLink has **no connection-interval timing**: the
figures are host-stack CPU time, not air time; on a radio each SMP or encryption exchange also
costs round trips (about 5 connection events for pairing, 2 for encryption).

Measured, each `repeats` times, median reported:
- **open, unpaired**: `BandClient.open("ble:{BAND}")` + `info()` + close, to a band without bonds;
- **open, bonded**: the same from a bonded central to a paired band: the backend encrypts with
  the stored keys right after connecting, before discovery;
- **first pairing**: `companion.ble.pairing.pair_band` (connect, read the pairing state, SMP
  pairing and bonding, read the state again, disconnect), minus a plain connection's time.
"""


async def _timed_open(local: LocalBleBand, central: BumbleCentral) -> float:
    started = time.perf_counter()
    async with BandClient.open(f"ble:{local.name}", ble=central.backend, timeout=10.0) as client:
        await client.info()
    return time.perf_counter() - started


async def _measure(repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"open": [], "bonded": [], "pair": []}
    link = LocalLink()
    async with LocalBleBand(link=link, pairing_window=3600) as local:
        async with BumbleCentral(link=link) as warm:  # first use: imports, crypto tables
            await _timed_open(local, warm)
        for _ in range(repeats):
            async with BumbleCentral(link=link) as central:
                times["open"].append(await _timed_open(local, central))
                started = time.perf_counter()
                await pair_band(BAND, central.backend)
                times["pair"].append(time.perf_counter() - started)
                times["bonded"].append(await _timed_open(local, central))
            await local.security.forget_all()
    return times


def run(repeats: int = 20) -> Report:
    """Measure connection times to a band without and with pairing."""
    times = asyncio.run(asyncio.wait_for(_measure(repeats), RUN_TIMEOUT))
    open_s, bonded_s, pair_s = (median(times[key]) for key in ("open", "bonded", "pair"))
    rows = [
        Row("open + info, unpaired band (median)", ms(open_s)),
        Row("open + info, bonded and encrypted (median)", ms(bonded_s)),
        Row("extra time of encryption with stored keys", ms(bonded_s - open_s)),
        Row("first pairing (pair_band, median)", ms(pair_s)),
    ]
    details = md_table(
        ["connection", "median", "min", "max"],
        [[label, ms(median(values)), ms(min(values)), ms(max(values))] for label, values in (
            ("open + info, unpaired", times["open"]),
            ("open + info, bonded", times["bonded"]),
            ("pair_band", times["pair"]),
        )],
    )
    data: dict[str, Any] = {key: values for key, values in times.items()}
    return Report(NAME, TITLE, METHOD, rows, details, data=data)


if __name__ == "__main__":
    report = run()
    for row in report.rows:
        print(f"{row.metric}: {row.value}")
