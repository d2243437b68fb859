"""A power-safe ring of fixed-size records in their own flash sectors (settings, session history).

Each record carries a sequence number and ends with the CRC-32 of the bytes
before it.  Records are written one after another through the ring's sectors;
entering a sector erases it first, so the oldest sector's records are the ones
overwritten.  A mount reads every slot: a record whose CRC fails (torn by a
power cut, or garbage) is ignored, and the newest record is the valid one with
the highest sequence number.  A power cut at any byte of an append therefore
keeps every complete record but the ones of the sector being erased, which
were the oldest; the record being written is either complete or ignored.

The next write goes to the first free slot after the newest record in its
sector (a slot a torn write used is never written again); at a sector's start
the sector is erased unless it is all erased, which also finishes an erase a
power cut interrupted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .flash import ERASED, SECTOR_SIZE, Flash

SEQ_OFFSET = 2
"""Every record starts with a 2-byte magic and a u32 sequence number, and ends with a u32 CRC-32."""


@dataclass(frozen=True)
class Found:
    position: int
    """Slot index in the ring (0 = first slot of its first sector)."""
    seq: int
    data: bytes


class RecordRing:
    """Fixed-size records in ``sectors`` (consecutive sector numbers) of ``flash``."""

    def __init__(self, flash: Flash, sectors: range, record_size: int, magic: int) -> None:
        self.flash = flash
        self.sectors = sectors
        self.record_size = record_size
        self.magic = magic.to_bytes(2, "little")
        self.per_sector = SECTOR_SIZE // record_size
        self.slots = self.per_sector * len(sectors)
        self.torn = 0
        """Slots a mount found used but not valid (torn writes, damage)."""
        self.records = self._scan()
        newest = max(self.records, key=lambda found: found.seq, default=None)
        self.next_seq = newest.seq + 1 if newest is not None else 0
        self._next = self._free_after(newest.position) if newest is not None else 0

    def _offset(self, position: int) -> int:
        sector = self.sectors[position // self.per_sector]
        return sector * SECTOR_SIZE + (position % self.per_sector) * self.record_size

    def _is_free(self, position: int) -> bool:
        return self.flash.read(self._offset(position), self.record_size) == bytes([ERASED]) * self.record_size

    def valid(self, raw: bytes) -> bool:
        return raw[:2] == self.magic and int.from_bytes(raw[-4:], "little") == zlib.crc32(raw[:-4])

    def _scan(self) -> list[Found]:
        found = []
        for position in range(self.slots):
            raw = self.flash.read(self._offset(position), self.record_size)
            if raw == bytes([ERASED]) * self.record_size:
                continue
            if self.valid(raw):
                found.append(Found(position, int.from_bytes(raw[SEQ_OFFSET : SEQ_OFFSET + 4], "little"), raw))
            else:
                self.torn += 1
        return found

    def _free_after(self, position: int) -> int:
        """The slot the next record goes to: the first free one after ``position`` in its sector, else the next sector's first."""
        nxt = position + 1
        while nxt % self.per_sector and not self._is_free(nxt):
            nxt += 1
        return nxt % self.slots

    def newest(self) -> bytes | None:
        return max(self.records, key=lambda found: found.seq).data if self.records else None

    def in_order(self) -> list[bytes]:
        """Every valid record, oldest first."""
        return [found.data for found in sorted(self.records, key=lambda found: found.seq)]

    def append(self, body: bytes) -> int:
        """Write a record: ``body`` is everything after the magic and sequence number up to the CRC. Returns its sequence number."""
        if 2 + 4 + len(body) + 4 != self.record_size:
            raise ValueError(f"a record body of {len(body)} bytes; this ring's records hold {self.record_size - 10}")
        position, seq = self._next, self.next_seq
        if position % self.per_sector == 0:
            sector = position // self.per_sector
            first = position
            if any(not self._is_free(p) for p in range(first, first + self.per_sector)):
                self.records = [found for found in self.records if found.position // self.per_sector != sector]
                self.flash.erase_sector(self.sectors[sector])
        head = self.magic + seq.to_bytes(4, "little") + body
        record = head + zlib.crc32(head).to_bytes(4, "little")
        self._next = (position + 1) % self.slots  # even if the write is torn, its slot is used
        self.next_seq = seq + 1
        self.flash.program(self._offset(position), record)
        self.records.append(Found(position, seq, record))
        return seq

    def clear(self, marker: bytes | None = None) -> None:
        """Erase every record.  With ``marker`` (a record body the ring's reader skips), sequence numbers go on
        across a power cut at any point and across reboots, as the record with the highest one always survives:
        every sector but the newest record's is erased, the marker (next sequence number) is written in one of
        them, and the newest record's sector goes last.  Without one, they go on until the next boot."""
        newest = max(self.records, key=lambda found: found.seq, default=None)
        keep = None if newest is None else newest.position // self.per_sector
        for index, sector in enumerate(self.sectors):
            if index != keep:
                self.flash.erase_sector(sector)
        self.records = [found for found in self.records if found.position // self.per_sector == keep]
        self.torn = 0
        self._next = 0
        if keep is not None and marker is not None and len(self.sectors) > 1:
            self._next = (keep + 1) % len(self.sectors) * self.per_sector  # an erased sector's first slot
            self.append(marker)
        if keep is not None:
            self.flash.erase_sector(self.sectors[keep])
            self.records = [found for found in self.records if found.position // self.per_sector != keep]
        if not self.records:
            self._next = 0
