"""Addresses: random static BLE addresses and loopback TCP ports for served controllers."""

from __future__ import annotations

import hashlib
import socket

from bumble import hci

BUMBLE_DEFAULT_ADDRESS = "F0:F1:F2:F3:F4:F5"
"""bumble's default device address: a central and a peripheral both left on it talk to themselves."""


def band_address_from_id(band_id: str) -> str:
    """Derive a stable random static address (``Cx:..``) from a band identifier.

    The two most significant bits are set, as the spec requires for a random static
    address; the rest comes from a hash of ``band_id``.
    """
    digest = bytearray(hashlib.sha256(band_id.encode()).digest()[:6])
    digest[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in digest)


def random_static_address(address: str) -> hci.Address:
    """Parse ``address`` and check that it is a usable random static address."""
    parsed = hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS)
    if parsed.address_bytes[5] & 0xC0 != 0xC0:
        raise ValueError(f"{address} is not a random static address (first octet must be >= 0xC0)")
    if parsed == hci.Address(BUMBLE_DEFAULT_ADDRESS):
        raise ValueError(f"{BUMBLE_DEFAULT_ADDRESS} is bumble's default address; pick another")
    return parsed


def free_tcp_port() -> int:
    """A free TCP port on the loopback interface (for ``tcp-server:127.0.0.1:PORT``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
