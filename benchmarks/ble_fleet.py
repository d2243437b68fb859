"""BLE fleet upload: the full routine to 1, 4 and 8 simulated bands at once, wall time and ratio to one band."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from bumble.link import LocalLink

from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.fleet import upload_to_many
from firmware_sim.local import LocalBleBand

from . import Report, Row, md_table, median, ratio

NAME = "ble_fleet"
TITLE = "BLE fleet upload"
ROUTINE = "full-hand-massage"
TARGET_RATIO = 2.0
RUN_TIMEOUT = 300.0

METHOD = f"""\
In one process: N simulated bands (`firmware_sim.local.LocalBleBand`, distinct ids) on one
`bumble.link.LocalLink` and one companion host (`BumbleCentral(link=...)`), bleak on bumble.
`companion.fleet.upload_to_many` uploads the compiled `{ROUTINE}` routine to all N at once
(each band: connect, UPLOAD_BEGIN/DATA/COMMIT, disconnect), and the wall time from the call to
the last band's result is measured, `repeats` times per N (median). The ratio is the median
for N bands over the median for one (target: 8 bands in at most {TARGET_RATIO:g}x the time of one).
The LocalLink has **no air time**: every band and the companion share one CPU core here, so
the figure is a CPU bound; on a radio the connections' air time overlaps and the bound is the
central's connection-event scheduling.
"""


async def _fleet_time(count: int, data: bytes) -> float:
    link = LocalLink()
    async with contextlib.AsyncExitStack() as stack:
        bands = [await stack.enter_async_context(LocalBleBand(link=link, band_id=0xF000 + i)) for i in range(count)]
        central = await stack.enter_async_context(BumbleCentral(link=link))
        addresses = [f"ble:{band.name}" for band in bands]
        started = time.perf_counter()
        results = await upload_to_many(addresses, data, ble=central.backend, timeout=10.0)
        elapsed = time.perf_counter() - started
        failed = [result for result in results if not result.ok]
        if failed:
            raise RuntimeError(f"fleet upload failed: {failed[0].address}: {failed[0].error}")
        return elapsed


def run(counts: Sequence[int] = (1, 4, 8), repeats: int = 3) -> Report:
    """Upload the full routine to each fleet size ``repeats`` times."""
    data = compile_routine(load_routine(ROUTINE))

    async def measure() -> dict[int, list[float]]:
        return {count: [await _fleet_time(count, data) for _ in range(repeats)] for count in counts}

    times = asyncio.run(asyncio.wait_for(measure(), RUN_TIMEOUT))
    one = median(times[counts[0]])
    rows = []
    for count in counts:
        factor = median(times[count]) / one
        target = f"<= {TARGET_RATIO:g}x" if count == 8 else ""
        rows.append(Row(f"{count} band(s), {len(data)} bytes each", f"{median(times[count]):.3f} s ({ratio(factor)})", target,
                        (factor <= TARGET_RATIO) if count == 8 else None))
    details = md_table(["bands", "median", "min", "max", "ratio to 1"],
                       [[count, f"{median(v):.3f} s", f"{min(v):.3f} s", f"{max(v):.3f} s", ratio(median(v) / one)] for count, v in times.items()])
    data_out: dict[str, Any] = {str(count): values for count, values in times.items()}
    return Report(NAME, TITLE, METHOD, rows, details, data=data_out)


if __name__ == "__main__":
    for row in run().rows:
        print(f"{row.metric}: {row.value} {row.target} {row.verdict}")
