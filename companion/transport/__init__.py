"""Byte transports to a band, chosen by address like pyserial's ``serial_for_url``.

* ``serial:/dev/ttyUSB0`` or ``serial:/dev/ttyUSB0?baud=115200`` - pyserial
* ``ble:HandCue-1A2B`` (advertised name) or ``ble:AA:BB:CC:DD:EE:FF`` - bleak, on the
  backend given as ``ble=`` (bleak's platform backend by default)

Every transport implements :class:`~companion.transport.base.Transport`.
Heavy libraries load only when their scheme is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ..errors import AddressError
from .base import Transport, TransportClosed, TransportError

if TYPE_CHECKING:
    from ..ble.backend import BleBackend

__all__ = ["PATTERN_CHARACTERS", "AddressError", "Transport", "TransportClosed", "TransportError", "is_pattern", "open_transport"]

SCHEMES = ("serial", "ble")
PATTERN_CHARACTERS = "*?["
"""Characters that make a ``--to`` value a pattern over a scan (:mod:`fnmatch`'s)."""


def is_pattern(target: str) -> bool:
    """Whether a ``--to`` value is a pattern over a scan (``ble:HandCue-*``)."""
    return target.startswith("ble:") and any(character in target for character in PATTERN_CHARACTERS)


def open_transport(address: str, *, ble: BleBackend | None = None, needs_trust: bool = True) -> Transport:
    """A transport (not yet connected) for ``address``; a BLE one uses the bleak backend ``ble``.

    ``needs_trust=False`` says the session sends only INFO and STATUS, which a paired band answers on
    any link: a BLE link to a band this computer is paired with then stays unencrypted where the backend
    allows it (:attr:`~companion.transport.ble.BleTransport.needs_trust`).  A serial cable needs no trust.

    Raises :class:`AddressError` when ``address`` is not a band address.
    """
    scheme, _, rest = address.partition(":")
    path, _, query = rest.partition("?")
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    if scheme == "serial" and path:
        from .serial import SerialTransport

        try:
            baud = int(params.pop("baud", "115200"))
        except ValueError as exc:
            raise AddressError(f"{address}: baud must be a number") from exc
        if params:
            raise AddressError(f"{address}: unknown option {', '.join(params)} (serial takes baud=)")
        return SerialTransport(address, path, baud)
    if scheme == "ble" and path:
        from .ble import PLATFORM, BleTransport

        if params:
            raise AddressError(f"{address}: unknown option {', '.join(params)} (a ble: address takes none; choose the BLE host with --hci)")
        return BleTransport(address, path, ble or PLATFORM, needs_trust=needs_trust)
    raise AddressError(f"{address!r} is not a band address; use serial:PATH[?baud=N] or ble:NAME|ble:AA:BB:CC:DD:EE:FF")
