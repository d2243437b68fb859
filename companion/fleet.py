"""Many bands at once: one job on every band, concurrently, a failure on one never stopping the others.

* :func:`expand_targets` - band addresses from ``--to`` values, where a ``ble:`` value with
  a shell pattern (``ble:HandCue-*``) stands for every band a scan finds matching it;
* :func:`upload_to_many` / :func:`command_to_many` - upload a table, or send START/STOP/...,
  to every band at once; each band gets its own :class:`BandResult`;
* :func:`summary_table` - band, bytes, time, result, one line per band.

All BLE bands share the one backend they are given (one host, one connection per band).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import time
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.errors import HandCueError

from .ble.backend import PLATFORM, BleBackend
from .client import BandClient
from .transport import PATTERN_CHARACTERS, is_pattern  # noqa: F401  (where they were; the CLI asks without importing this module)

__all__ = ["BandResult", "command_to_many", "expand_targets", "summary_table", "upload_to_many"]

FleetProgress = Callable[[str, int, int], None]
"""``progress(address, confirmed, total)`` for each band of an upload."""


@dataclasses.dataclass(frozen=True)
class BandResult:
    """What one band of a fleet job did."""

    address: str
    bytes: int
    """Bytes the band confirmed (the table size after a successful upload; 0 for a command)."""
    seconds: float
    error: str | None = None
    state: str | None = None
    """The band's state after a command."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"band": self.address, "bytes": self.bytes, "seconds": round(self.seconds, 3), "ok": self.ok, "error": self.error, "state": self.state}


async def expand_targets(targets: list[str], ble: BleBackend = PLATFORM, *, scan_timeout: float = 3.0) -> list[str]:
    """The band addresses ``targets`` stand for, in order, without duplicates.

    Raises:
        HandCueError: a pattern matched no band seen within ``scan_timeout`` seconds.
    """
    addresses: list[str] = []
    seen_names: list[str] | None = None
    for target in targets:
        if not is_pattern(target):
            matched = [target]
        else:
            if seen_names is None:
                from .discovery import scan_bands

                seen_names = [band.name for band in await scan_bands(scan_timeout, ble)]
            pattern = target.removeprefix("ble:")
            matched = [f"ble:{name}" for name in seen_names if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                raise HandCueError(f"{target}: no band seen within {scan_timeout:g} s matches (seen: {', '.join(seen_names) or 'none'})")
        addresses += [address for address in matched if address not in addresses]
    return addresses


async def _on_each(
    addresses: list[str], job: Callable[[str, BandClient, Callable[[int], None]], Awaitable[str | None]], ble: BleBackend, timeout: float | None
) -> list[BandResult]:
    async def one(address: str) -> BandResult:
        started = time.perf_counter()
        confirmed = 0

        def note(count: int) -> None:
            nonlocal confirmed
            confirmed = count

        try:
            async with BandClient.open(address, ble=ble, timeout=timeout) as client:
                state = await job(address, client, note)
        except HandCueError as exc:
            return BandResult(address, confirmed, time.perf_counter() - started, error=str(exc))
        return BandResult(address, confirmed, time.perf_counter() - started, state=state)

    return list(await asyncio.gather(*(one(address) for address in addresses)))


async def upload_to_many(
    addresses: list[str], data: bytes, *, ble: BleBackend = PLATFORM, timeout: float | None = None, progress: FleetProgress | None = None
) -> list[BandResult]:
    """Upload ``data`` to every band at once; one result per band, in the order given."""

    async def job(address: str, client: BandClient, note: Callable[[int], None]) -> str | None:
        def on_progress(confirmed: int, total: int) -> None:
            note(confirmed)
            if progress is not None:
                progress(address, confirmed, total)

        await client.upload(data, on_progress)
        note(len(data))
        return None

    return await _on_each(addresses, job, ble, timeout)


async def command_to_many(addresses: list[str], command: str, *, ble: BleBackend = PLATFORM, timeout: float | None = None) -> list[BandResult]:
    """Send ``command`` (``start``, ``stop``, ``pause``, ``resume``, ``skip``) to every band at once."""
    from protocol.messages import PauseRequest, ResumeRequest, SkipRequest, StartRequest, StopRequest

    requests = {"start": StartRequest, "stop": StopRequest, "pause": PauseRequest, "resume": ResumeRequest, "skip": SkipRequest}
    if command not in requests:
        raise ValueError(f"not a session command: {command}")
    request = requests[command]

    async def job(_address: str, client: BandClient, _note: Callable[[int], None]) -> str | None:
        status = await client.request(request())
        state: str | None = status.to_json()["state"]
        return state

    return await _on_each(addresses, job, ble, timeout)


def summary_table(results: list[BandResult]) -> str:
    """Band, bytes, time and result, one aligned line per band."""
    rows = [("band", "bytes", "time", "result")]
    rows += [(r.address, str(r.bytes), f"{r.seconds:.2f} s", "ok" + (f" ({r.state})" if r.state else "") if r.ok else f"FAILED: {r.error}") for r in results]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}" for row in rows)
