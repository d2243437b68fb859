"""A NOR flash device: fixed size, erase-before-write sectors, optional file backing.

Like real NOR flash, erasing sets a whole sector to 0xFF and programming can
only clear bits, so writing over data that is not erased is a firmware bug
and raises.  :meth:`Flash.cut_power_after` arms a power cut after a number of
work units (one programmed byte, or one erased page), so tests can interrupt
any write or erase at any byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from .faults import FlashError, PowerLoss

SECTOR_SIZE = 4096
ERASE_PAGE = 256
"""An interrupted erase leaves whole 256-byte pages erased, the rest untouched."""
ERASED = 0xFF


class Flash:
    """``size`` bytes of NOR flash, in RAM or mirrored to a file."""

    def __init__(self, size: int, path: Path | None = None) -> None:
        if size % SECTOR_SIZE:
            raise FlashError(f"flash size {size} is not a multiple of the {SECTOR_SIZE}-byte sector")
        self.size = size
        self.path = path
        self._budget: int | None = None
        self._fd: int | None = None
        if path is not None and path.exists():
            data = path.read_bytes()
            if len(data) != size:
                raise FlashError(f"{path}: flash image of {len(data)} bytes, expected {size}")
            self.data = bytearray(data)
            self._fd = os.open(path, os.O_RDWR)
        else:
            self.data = bytearray([ERASED]) * size
            if path is not None:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                self._persist(0, size)

    # power-cut injection

    def cut_power_after(self, units: int | None) -> None:
        """Raise :class:`PowerLoss` after ``units`` more bytes programmed or pages erased."""
        self._budget = units

    def _spend(self) -> None:
        if self._budget is not None:
            if self._budget <= 0:
                raise PowerLoss("power cut during a flash operation")
            self._budget -= 1

    # operations

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        return bytes(self.data[offset : offset + length])

    def erase_sector(self, sector: int) -> None:
        start = sector * SECTOR_SIZE
        self._check_range(start, SECTOR_SIZE)
        try:
            for page in range(start, start + SECTOR_SIZE, ERASE_PAGE):
                self._spend()
                self.data[page : page + ERASE_PAGE] = bytes([ERASED]) * ERASE_PAGE
        finally:
            self._persist(start, SECTOR_SIZE)

    def program(self, offset: int, payload: bytes) -> None:
        """Program ``payload`` at ``offset``; bits can only go from 1 to 0."""
        self._check_range(offset, len(payload))
        end = offset + len(payload)
        old = int.from_bytes(self.data[offset:end], "big")
        new = int.from_bytes(payload, "big")
        if old & new != new:
            position = next(i for i in range(offset, end) if self.data[i] & payload[i - offset] != payload[i - offset])
            raise FlashError(f"programming 0x{payload[position - offset]:02X} over 0x{self.data[position]:02X} at 0x{position:X}: not erased")
        if self._budget is None or self._budget >= len(payload):
            if self._budget is not None:
                self._budget -= len(payload)
            self.data[offset:end] = payload
            self._persist(offset, len(payload))
            return
        written = self._budget  # the supply fails part-way through this write
        self.data[offset : offset + written] = payload[:written]
        self._budget = 0
        self._persist(offset, written)
        raise PowerLoss("power cut during a flash operation")

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashError(f"access 0x{offset:X}+{length} outside {self.size}-byte flash")

    def _persist(self, offset: int, length: int) -> None:
        """Mirror changed bytes to the backing file at once, so a killed process keeps them.

        A synchronous ``pwrite`` of a few bytes: the band's flash is synchronous too.
        """
        if self._fd is None or length == 0:
            return
        os.pwrite(self._fd, bytes(self.data[offset : offset + length]), offset)

    def close(self) -> None:
        """Release the backing file (every write is already in it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def snapshot(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def from_image(cls, image: bytes) -> Flash:
        flash = cls(len(image))
        flash.data[:] = image
        return flash
