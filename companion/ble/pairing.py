"""Pairing the companion with a band, and forgetting it, through bleak's public API.

* :func:`pair_band` bonds (LE Secure Connections, Just Works) with a band whose
  pairing window is open (its button was pressed less than 60 s ago); the keys go to
  the backend's store (the bumble backend: :class:`~companion.ble.keystore.CentralIdentity`;
  bleak's platform backends: the operating system).
* :func:`unpair_band` asks the band, over the paired link, to delete this
  companion's bond (a write of ``FORGET_ME`` to its pairing characteristic), then
  forgets the band's keys here.
* :func:`describe_pairing_state` words the state a band reports; :func:`security_line`
  says it for a connected transport (``handcue info``).

The band's rules are in :mod:`firmware_sim.pairing` and protocol/SPEC.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from protocol.constants import BleUuid, PairingControl, PairingState

from ..errors import PairingError, TransportError
from .backend import PLATFORM, BleBackend

__all__ = ["PairingOutcome", "describe_pairing_state", "pair_band", "security_line", "unpair_band"]

PAIR_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class PairingOutcome:
    """What pairing or unpairing did."""

    band: str
    """The band's name (or address)."""
    already: bool
    """Nothing to do: the band already trusted us (pair) or had no bond of ours (unpair)."""
    state: PairingState
    """The band's pairing state afterwards, as this link sees it."""


def describe_pairing_state(name: str, state: PairingState | None) -> str:
    """One line saying who may change the band's state (``handcue info``)."""
    if state is None:
        return f"{name} does not support pairing: it is open to anyone in range"
    if PairingState.PROTECTED not in state:
        window = " (its pairing window is open: run handcue pair)" if PairingState.WINDOW_OPEN in state else ""
        return f"{name} is not paired with any device: it is open to anyone in range{window}"
    if PairingState.TRUSTED in state:
        return f"{name} accepts commands only from paired devices; this one is paired"
    return f"{name} accepts commands only from paired devices; this one is not (press its button, then run handcue pair)"


async def security_line(transport: object) -> str:
    """What ``handcue info`` says about who may command the band on ``transport`` (waits for the
    pairing state the BLE transport reads in the background).

    Only a transport that asked for a trusted link (``needs_trust``, the default) can tell "this one is
    paired": TRUSTED needs the link encrypted with the bond's keys, and a read-only session leaves it unencrypted.
    """
    from ..transport.ble import BleTransport

    if isinstance(transport, BleTransport):
        state = await transport.read_pairing_state()
        if not transport.needs_trust and state is not None and PairingState.PROTECTED in state and PairingState.TRUSTED not in state:
            return (f"{transport.band_name} accepts commands only from paired devices; this link is not encrypted "
                    "(a read-only session), so it does not tell whether this one is paired")
        return describe_pairing_state(transport.band_name, state)
    return "serial is a cable: the band takes commands from whoever holds it (pairing is for BLE)"


def _strip(target: str) -> str:
    return target.removeprefix("ble:")


async def _find(target: str, backend: BleBackend, timeout: float) -> Any:
    from bleak import BleakScanner

    from ..transport.ble import MAC

    find = BleakScanner.find_device_by_address if MAC.match(target) else BleakScanner.find_device_by_name
    device = await find(target, timeout=timeout, **backend.scanner_args())
    if device is None:
        raise TransportError(f"ble:{target}: no band advertising as {target} within {timeout:g} s (is it on and in range?)")
    return device


async def _read_state(client: Any, name: str) -> PairingState:
    characteristic = client.services.get_characteristic(BleUuid.PAIRING)
    if characteristic is None:
        raise PairingError(f"{name} does not support pairing (no pairing characteristic); it is open to anyone in range")
    value = await client.read_gatt_char(characteristic)
    return PairingState(value[0])


@contextlib.asynccontextmanager
async def _band_link(target: str, backend: BleBackend, timeout: float, doing: str) -> AsyncIterator[tuple[str, Any]]:
    """``(name, BleakClient)`` connected to the band ``target``; bleak's errors and timeouts become :class:`TransportError`."""
    from bleak import BleakClient
    from bleak.exc import BleakError

    name = _strip(target)
    device = await _find(name, backend, timeout)
    try:
        async with BleakClient(device, timeout=timeout, backend=backend.client) as client:
            yield name, client
    except BleakError as exc:
        raise TransportError(f"ble:{name}: {backend.prefix()}{exc}") from exc
    except TimeoutError as exc:
        raise TransportError(f"ble:{name}: no answer within {timeout:g} s while {doing}") from exc


async def pair_band(target: str, backend: BleBackend = PLATFORM, *, timeout: float = PAIR_TIMEOUT) -> PairingOutcome:
    """Bond with the band ``target`` (``ble:NAME``, a name or an address).

    Raises:
        PairingError: the band's pairing window is closed, or pairing failed.
        TransportError: the band was not found or the link failed.
    """
    from bleak.exc import BleakError

    async with _band_link(target, backend, timeout, "pairing") as (name, client):
        before = await _read_state(client, name)
        if PairingState.TRUSTED in before:
            return PairingOutcome(name, True, before)
        if PairingState.WINDOW_OPEN not in before:
            raise PairingError(f"{name} is not accepting new pairings: press its button (it then accepts one for 60 s), then run handcue pair again")
        try:
            await client.pair()
        except BleakError as exc:
            raise PairingError(f"pairing with {name} failed: {exc}") from exc
        after = await _read_state(client, name)
        if PairingState.TRUSTED not in after:
            raise PairingError(f"pairing with {name} did not make this device trusted (state {after!r})")
        return PairingOutcome(name, False, after)


async def unpair_band(target: str, backend: BleBackend = PLATFORM, *, timeout: float = PAIR_TIMEOUT) -> PairingOutcome:
    """Make the band ``target`` and this companion forget each other.

    The band deletes our bond only on a link it trusts (our stored keys encrypt it);
    if it no longer holds our bond, only our side is forgotten.

    Raises:
        TransportError: the band was not found or the link failed.
    """
    async with _band_link(target, backend, timeout, "unpairing") as (name, client):
        state = await _read_state(client, name)
        trusted = PairingState.TRUSTED in state
        if trusted:
            await client.write_gatt_char(BleUuid.PAIRING, bytes([PairingControl.FORGET_ME]), response=True)
            state = await _read_state(client, name)
        await client.unpair()
        return PairingOutcome(name, not trusted, state)
