"""The many-bands side of ``handcue upload``, ``start`` and ``stop``: several ``--to``, or a pattern.

Does not import :mod:`companion.cli`.  The band commands call these when given more than
one ``--to`` or a pattern (``--to 'ble:HandCue-*'``, matched against a scan):

* :func:`fleet_upload` - uploads to every band at once, one progress line per band on a
  terminal (plain lines otherwise), then a summary table (or ``--json``);
* :func:`fleet_command` - START/STOP/... to every band at once, then the same table.

Both return the exit code: 0 when every band succeeded, 1 if any failed (one failing band
never stops the others).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # `handcue --help` imports this module: the fleet library (and the protocol stack) only when a command runs
    from .ble.backend import BleBackend
    from .fleet import BandResult

__all__ = ["fleet_command", "fleet_upload", "is_fleet"]

SCAN_TIMEOUT = 3.0
"""Seconds a pattern's scan listens (``--timeout``, when given, instead)."""


def is_fleet(targets: tuple[str, ...] | list[str]) -> bool:
    """Whether ``--to`` values name more than one band (several values, or a pattern)."""
    from .transport import is_pattern  # not from .fleet: that imports the client and the protocol stack

    return len(targets) > 1 or any(is_pattern(target) for target in targets)


class FleetProgress:
    """One progress line per band: tqdm bars on a terminal, decile lines otherwise."""

    def __init__(self, addresses: list[str], stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.addresses = addresses
        self.bars: dict[str, Any] = {}
        self.deciles: dict[str, int] = {}

    def __call__(self, address: str, confirmed: int, total: int) -> None:
        if self.stream.isatty():
            bar = self.bars.get(address)
            if bar is None:
                from tqdm import tqdm

                bar = self.bars[address] = tqdm(total=total, initial=confirmed, unit="B", unit_scale=True, desc=address,
                                                file=self.stream, position=self.addresses.index(address), leave=True)
            bar.update(confirmed - bar.n)
            return
        decile = confirmed * 10 // total
        if self.deciles.get(address) != decile:
            self.deciles[address] = decile
            print(f"upload to {address}: {confirmed}/{total} bytes confirmed ({confirmed * 100 // total}%)", file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _report(results: list[BandResult], as_json: bool) -> int:
    from .fleet import summary_table

    if as_json:
        click.echo(json.dumps([result.to_json() for result in results], indent=2))
    else:
        click.echo(summary_table(results))
    failed = [result for result in results if not result.ok]
    if failed and not as_json:
        click.echo(f"error: {len(failed)} of {len(results)} bands failed", err=True)
    return 1 if failed else 0


async def fleet_upload(targets: list[str], data: bytes, ble: BleBackend, *, timeout: float | None = None, as_json: bool = False,
                       scan_timeout: float | None = None, silent: bool = False, start: bool = False) -> int:
    """Upload ``data`` to every band ``targets`` name; print progress (none with ``silent`` or ``as_json``) and the summary; the exit code.

    With ``start``, START goes to every band (each on a connection of its own) once all of them hold
    the routine, and to none when any upload failed; a band whose START fails is reported as failed
    (the others are playing). The text output gets a second summary; JSON stays one array, each
    band's object with ``"started"``: the band's state after START, or null.
    """
    from .fleet import command_to_many, expand_targets, upload_to_many

    addresses = await expand_targets(targets, ble, scan_timeout=scan_timeout or SCAN_TIMEOUT)
    progress = FleetProgress(addresses)
    try:
        results = await upload_to_many(addresses, data, ble=ble, timeout=timeout, progress=None if as_json or silent else progress)
    finally:
        progress.close()
    uploaded = all(result.ok for result in results)
    starts = await command_to_many(addresses, "start", ble=ble, timeout=timeout) if start and uploaded else []
    held_back = "none started: every band must hold the routine first (fix the failures above, then upload again with --start)"
    if as_json and start:
        states = {result.address: result for result in starts}
        click.echo(json.dumps([{**result.to_json(), "started": states[result.address].state if result.address in states else None,
                                "start_error": states[result.address].error if result.address in states else held_back}
                               for result in results], indent=2))
        return 0 if uploaded and all(result.ok for result in starts) else 1
    code = _report(results, as_json)
    if not start:
        return code
    if not uploaded:
        click.echo(f"error: {held_back}", err=True)
        return code
    return _report(starts, as_json)


async def fleet_command(targets: list[str], command: str, ble: BleBackend, *, timeout: float | None = None, as_json: bool = False,
                        scan_timeout: float | None = None) -> int:
    """Send ``command`` (start, stop, ...) to every band ``targets`` name; print the summary; the exit code."""
    from .fleet import command_to_many, expand_targets

    addresses = await expand_targets(targets, ble, scan_timeout=scan_timeout or SCAN_TIMEOUT)
    return _report(await command_to_many(addresses, command, ble=ble, timeout=timeout), as_json)
