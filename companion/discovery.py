"""Finding bands: a BLE scan for HandCue bands, returning typed results.

A band advertises the HandCue service UUID and its battery level (as Battery
service data) and answers a scan with its name ``HandCue-<id>``; see
``firmware_sim/ble_peripheral.py`` for the layout.  The scan runs on the bleak
backend it is given (bleak's platform backend by default).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from protocol.constants import BLE_NAME_PREFIX, BleUuid

from .ble.backend import PLATFORM, BleBackend
from .transport import TransportError

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

__all__ = ["FoundBand", "scan_bands"]


@dataclasses.dataclass(frozen=True)
class FoundBand:
    """A band seen advertising."""

    name: str
    """Advertised name, e.g. ``HandCue-1A2B``."""
    address: str
    """BLE address as bleak reports it (a UUID on macOS)."""
    rssi: int
    """Signal strength of the last advertisement, in dBm."""
    battery: int | None
    """Battery level in percent from the advertisement, if it carried one."""

    @property
    def band_address(self) -> str:
        """The address to give ``--to`` / :meth:`BandClient.open`: ``ble:<name>``."""
        return f"ble:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_advertisement(cls, device: BLEDevice, advertisement: AdvertisementData) -> FoundBand | None:
        """The band behind an advertisement, or None if it is not a HandCue band."""
        name = advertisement.local_name or device.name or ""
        if not (name.startswith(BLE_NAME_PREFIX) or BleUuid.SERVICE in advertisement.service_uuids):
            return None
        battery = advertisement.service_data.get(BleUuid.BATTERY)
        return cls(name, device.address, advertisement.rssi, battery[0] if battery else None)


async def scan_bands(timeout: float, ble: BleBackend = PLATFORM) -> list[FoundBand]:
    """Bands seen advertising within ``timeout`` seconds, sorted by name.

    Raises:
        TransportError: the scan could not run (no adapter, HCI transport unreachable...).
    """
    from bleak import BleakScanner
    from bleak.exc import BleakError

    try:
        found = await BleakScanner.discover(timeout=timeout, return_adv=True, **ble.scanner_args())
    except (BleakError, OSError) as exc:
        raise TransportError(f"cannot scan for BLE devices: {ble.prefix()}{exc}") from exc
    except Exception as exc:  # bumble's own errors for a bad HCI transport
        raise TransportError(f"cannot scan for BLE devices: {ble.prefix()}{type(exc).__name__}: {exc}") from exc
    bands = (FoundBand.from_advertisement(device, advertisement) for device, advertisement in found.values())
    return sorted((band for band in bands if band is not None), key=lambda band: band.name)
