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

import asyncio
import json

import click

TIMEOUT_S = 15.0

to_option = click.option("--to", "address", required=True, metavar="ble:NAME", help="The band: ble:HandCue-1A2B or ble:AA:BB:CC:DD:EE:FF.")
hci_option = click.option("--hci", envvar="HANDCUE_HCI", metavar="TRANSPORT",
                          help="Route BLE through bumble on this HCI transport instead of the OS stack (env HANDCUE_HCI).")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=TIMEOUT_S, show_default=True,
                              help="Seconds to find the band and to pair.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
ble_backend_option = click.option("--ble-backend", envvar="HANDCUE_BLE_BACKEND", metavar="MODULE:ATTR",
                                  help="Any bleak backend, named as module:attribute (a bleak client class, a BleBackend or a "
                                       "factory of one), e.g. for ESPHome Bluetooth proxies; wins over --hci (env HANDCUE_BLE_BACKEND).")


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
@to_option
@hci_option
@ble_backend_option
@timeout_option
@json_option
def pair(address: str, hci: str | None, ble_backend: str | None, timeout: float, as_json: bool) -> None:
    """Bond with a band (press its button first); it then takes commands only from paired devices."""
    result = asyncio.run(_pair(address, hci, timeout, ble_backend))
    if as_json:
        click.echo(json.dumps(result))
    elif result["already"]:
        click.echo(f"{result['band']}: already paired with this device")
    else:
        click.echo(f"{result['band']}: paired; it now accepts commands only from paired devices")


@click.command()
@to_option
@hci_option
@ble_backend_option
@timeout_option
@json_option
def unpair(address: str, hci: str | None, ble_backend: str | None, timeout: float, as_json: bool) -> None:
    """Make a band and this device forget each other."""
    result = asyncio.run(_unpair(address, hci, timeout, ble_backend))
    if as_json:
        click.echo(json.dumps(result))
    elif result["band_forgot_us"]:
        click.echo(f"{result['band']}: unpaired on both sides")
    else:
        click.echo(f"{result['band']}: forgotten here (the band held no bond of this device)")
