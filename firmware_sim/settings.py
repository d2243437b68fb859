"""The band's settings (cue strength), stored power-safe in their own two flash sectors.

A settings record is 16 bytes (SPEC.md §19.7)::

    magic u16 = 0x5453 ("ST")   seq u32   strength u8   reserved u8[5] = 0   crc u32 (CRC-32 of the first 12 bytes)

Every change appends a whole record (:class:`~firmware_sim.records.RecordRing`);
the newest valid record is the setting, so a power cut at any byte of a write
keeps the old value or the new one, never anything else.  A band that never
stored one plays at :data:`~protocol.strength.DEFAULT_STRENGTH`.
"""

from __future__ import annotations

import construct as c

from protocol.strength import DEFAULT_STRENGTH, MAX_STRENGTH, MIN_STRENGTH, check_strength

from .flash import Flash
from .records import RecordRing

SETTINGS_RECORD_SIZE = 16
SETTINGS_MAGIC = 0x5453

SettingsBody = c.Struct(
    "strength" / c.Int8ul,
    "reserved" / c.Const(bytes(5)),
)
"""The bytes between the sequence number and the CRC."""


class Settings:
    """The stored settings of a band, mounted from ``sectors`` of ``flash``."""

    def __init__(self, flash: Flash, sectors: range) -> None:
        self._ring = RecordRing(flash, sectors, SETTINGS_RECORD_SIZE, SETTINGS_MAGIC)
        self.strength = DEFAULT_STRENGTH
        for raw in reversed(self._ring.in_order()):  # the newest record that holds a setting this band plays
            strength = raw[6]
            if MIN_STRENGTH <= strength <= MAX_STRENGTH:
                self.strength = strength
                break

    def set_strength(self, strength: int) -> None:
        """Store ``strength`` (ValueError outside 20..100 %); storing the value held writes nothing."""
        check_strength(strength)
        if strength == self.strength and self._ring.records:
            return
        self._ring.append(SettingsBody.build(dict(strength=strength)))
        self.strength = strength
