"""``handcue pair`` and ``handcue unpair``: bond with a band over BLE, or forget it.

These commands do not import :mod:`companion.cli`; the CLI registers them with
``cli.add_command(pair)`` and ``cli.add_command(unpair)``, and its group turns any
:class:`~protocol.errors.HandCueError` into one line on stderr and exit code 1.

A band accepts a new pairing only for 60 s after a press of its button
(``handcue-sim``: SIGUSR1, or ``--pairing-window SECONDS``).  With ``--hci`` the keys
are kept under the user's config directory (``$XDG_CONFIG_HOME/handcue/ble``); with
the operating system's stack, the operating system keeps them.
"""

from __future__ import annotations

import click

from .cli_common import ble_options, emit_json, json_option, run, timeout_option, to_option

TIMEOUT_S = 15.0

ble_address_option = to_option(help="The band: ble:HandCue-1A2B or ble:AA:BB:CC:DD:EE:FF. "
                                    "Default: HANDCUE_ADDRESS, else `handcue config set address ADDR`.")
pairing_timeout_option = timeout_option(TIMEOUT_S, "Seconds to find the band and to pair.")


def _ble_target(address: str) -> str:
    from .errors import AddressError

    scheme, _, target = address.partition(":")
    if scheme != "ble" or not target:
        raise AddressError(f"{address!r}: pairing is for BLE bands (ble:NAME); a serial cable needs no pairing")
    return target


async def _pair(address: str, hci: str | None, timeout: float, ble_backend: str | None = None) -> dict[str, object]:
    from .ble import ble_backend_for
    from .ble.pairing import pair_band

    target = _ble_target(address)
    async with ble_backend_for(hci, backend=ble_backend, pairing=True) as backend:
        outcome = await pair_band(target, backend, timeout=timeout)
    return {"band": outcome.band, "paired": True, "already": outcome.already}


async def _unpair(address: str, hci: str | None, timeout: float, ble_backend: str | None = None) -> dict[str, object]:
    from .ble import ble_backend_for
    from .ble.pairing import unpair_band

    target = _ble_target(address)
    async with ble_backend_for(hci, backend=ble_backend) as backend:
        outcome = await unpair_band(target, backend, timeout=timeout)
    return {"band": outcome.band, "paired": False, "band_forgot_us": not outcome.already}


@click.command()
@ble_address_option
@ble_options
@pairing_timeout_option
@json_option
def pair(address: str, hci: str | None, ble_backend: str | None, timeout: float, as_json: bool) -> None:
    """Bond with a band over BLE (press its button first); it then takes commands only from paired devices."""
    result = run(_pair(address, hci, timeout, ble_backend))
    if as_json:
        emit_json(result)
    elif result["already"]:
        click.echo(f"{result['band']}: already paired with this device")
    else:
        click.echo(f"{result['band']}: paired; it now accepts commands only from paired devices")


@click.command()
@ble_address_option
@ble_options
@pairing_timeout_option
@json_option
def unpair(address: str, hci: str | None, ble_backend: str | None, timeout: float, as_json: bool) -> None:
    """Make a band and this device forget each other."""
    result = run(_unpair(address, hci, timeout, ble_backend))
    if as_json:
        emit_json(result)
    elif result["band_forgot_us"]:
        click.echo(f"{result['band']}: unpaired on both sides")
    else:
        click.echo(f"{result['band']}: forgotten here (the band held no bond of this device)")
