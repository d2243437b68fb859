"""``handcue settings``: read or change the settings a band stores (cue strength).

Defined without importing :mod:`companion.cli`, which registers :data:`COMMANDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from protocol.strength import MAX_STRENGTH, MIN_STRENGTH

from .cli_band import with_band
from .cli_common import address_option, ble_options, emit_json, json_option, run, say, timeout_option

if TYPE_CHECKING:
    from protocol.messages import SettingsResponse

    from .client import BandClient


@click.command()
@address_option
@click.option("--strength", type=click.IntRange(MIN_STRENGTH, MAX_STRENGTH), metavar="PERCENT",
              help=f"Store this cue strength ({MIN_STRENGTH} to {MAX_STRENGTH} %): every cue's vibration is scaled by it.")
@timeout_option()
@json_option
@ble_options
def settings(address: str, strength: int | None, timeout: float | None, as_json: bool, hci: str | None, ble_backend: str | None) -> None:
    """Show the band's settings; with --strength, store a new cue strength first."""

    async def job(client: BandClient) -> SettingsResponse:
        return await (client.set_strength(strength) if strength is not None else client.settings())

    result = run(with_band(address, timeout, job, hci, ble_backend))
    if as_json:
        emit_json(result.to_json())
    else:
        say(f"cue strength: {result.strength} %" + (" (stored)" if strength is not None else ""))


COMMANDS = (settings,)
