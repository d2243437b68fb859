"""Power-loss-safe table storage: two slots and an append-only journal.

Flash layout (4 KiB sectors)::

    sector 0, 1        journal A / B (16-byte entries, ping-pong)
    sectors 2..9       slot 0 (32 KiB, one table)
    sectors 10..17     slot 1
    sectors 18, 19     settings (firmware_sim.settings)
    sectors 20..22     session history (firmware_sim.history)

State is the replay of the journal's valid entries, in order:

* ``COMMIT(slot, length, crc)`` makes a slot's table the active routine;
* ``BEGIN(slot, length, crc)`` starts an upload into the other slot;
* ``PROGRESS(offset)`` records how much of that upload is durable;
* ``ABORT`` forgets the upload, ``ERASE`` forgets the active routine;
* when a sector fills, the other one is erased and starts with a snapshot of
  the state, closed by a ``SNAPSHOT`` entry; the newest complete sector is
  the journal.

A new table only becomes active through one 16-byte ``COMMIT`` entry written
after its bytes were read back and verified (CRC and structure); a torn entry
fails its own CRC and is ignored, so a power cut at any byte leaves the last
good routine active.  An upload never writes into the active slot.

Every mount says what it found in :attr:`Storage.boot_report` (a
:class:`BootOutcome` and the routine the band now holds).  The active table is
checked again (CRC-32 and structure) at boot and its CRC-32 every time it is
handed out, so a damaged slot is never run: the band falls back to the routine
committed before it when that one is still intact in the other slot, or holds
none, and says which.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from enum import IntEnum

import construct as c

from protocol.constants import BootOutcome as BootOutcome  # re-exported: its one home is protocol.constants
from protocol.constants import Limits, TableError
from protocol.errors import TableFormatError
from protocol.layout import Compiled
from protocol.table import RecordCache, decode_table

from .faults import FlashError, StorageError
from .flash import ERASED, SECTOR_SIZE, Flash
from .history import History
from .settings import Settings

JOURNAL_SECTORS = (0, 1)
SLOT_SECTORS = Limits.MAX_TABLE_BYTES // SECTOR_SIZE
SLOT_FIRST_SECTOR = (2, 2 + SLOT_SECTORS)
SLOTS_END = SLOT_FIRST_SECTOR[1] + SLOT_SECTORS
SETTINGS_SECTORS = range(SLOTS_END, SLOTS_END + 2)
"""Settings records (firmware_sim.settings), ping-pong."""
HISTORY_SECTORS = range(SETTINGS_SECTORS.stop, SETTINGS_SECTORS.stop + 3)
"""The session history ring (firmware_sim.history)."""
FLASH_SIZE = HISTORY_SECTORS.stop * SECTOR_SIZE
ENTRY_SIZE = 16
COPY_FLAG = 0x80
"""Set on the slot byte of every entry of a compaction snapshot."""


class EntryKind(IntEnum):
    COMMIT = 1
    BEGIN = 2
    PROGRESS = 3
    ABORT = 4
    ERASE = 5
    SNAPSHOT = 6


JournalEntry = c.Struct(
    "kind" / c.Int8ul,
    "slot" / c.Int8ul,
    "length" / c.Int16ul,
    "seq" / c.Int32ul,
    "value" / c.Int32ul,  # CRC-32 of the table (COMMIT, BEGIN) or durable offset (PROGRESS)
    "entry_crc" / c.Int32ul,  # CRC-32 of the first 12 bytes
)
assert JournalEntry.sizeof() == ENTRY_SIZE
_ENTRY = Compiled(JournalEntry)  # the same layout, compiled once it pays: a boot reads up to 512 entries
_FREE_ENTRY = bytes([ERASED]) * ENTRY_SIZE


def _torn(chunk: bytes) -> bool:
    """A write cut short: a prefix programmed, the rest still erased."""
    return chunk.rstrip(bytes([ERASED])) != chunk


def _plausible(entry: c.Container) -> bool:
    """An entry whose fields a mount can act on (a CRC match on garbage must not index outside the flash)."""
    if entry.kind not in EntryKind._value2member_map_:
        return False
    if entry.kind in (EntryKind.COMMIT, EntryKind.BEGIN):
        return entry.slot & ~COPY_FLAG in (0, 1) and 0 < entry.length <= Limits.MAX_TABLE_BYTES
    return True


@dataclass(frozen=True)
class SlotInfo:
    slot: int
    length: int
    crc: int

    def __str__(self) -> str:
        return f"{self.length} bytes, CRC-32 0x{self.crc:08X}, slot {self.slot}"


@dataclass(frozen=True)
class BootReport:
    """The outcome of a mount and the routine the band holds after it."""

    outcome: BootOutcome
    routine: SlotInfo | None
    damaged_entries: int = 0
    """Journal entries that failed their CRC without being a torn write."""
    lost: SlotInfo | None = None
    """The routine that failed its check (RECOVERED_PREVIOUS, ACTIVE_SLOT_CORRUPT)."""
    file_size: int | None = None
    """Size of a flash file shorter than the flash (read as erased past its end); None otherwise."""

    def __str__(self) -> str:
        holds = f"holds the routine of {self.routine}" if self.routine else "holds no routine"
        parts = [f"boot: {self.outcome.label}: {holds}"]
        if self.lost is not None:
            parts.append(f"the routine of {self.lost} failed its check and is not run")
        if self.damaged_entries:
            parts.append(f"{self.damaged_entries} damaged journal entries skipped")
        if self.file_size is not None:
            parts.append(f"the flash file held only {self.file_size} bytes; the rest reads as erased")
        return "; ".join(parts)


@dataclass(frozen=True)
class UploadState:
    slot: int
    length: int
    crc: int
    offset: int


class Storage:
    """The band's table store, mounted from a :class:`Flash` at boot."""

    def __init__(self, flash: Flash) -> None:
        if flash.size < FLASH_SIZE:
            raise StorageError(f"flash of {flash.size} bytes; storage needs {FLASH_SIZE}")
        self.flash = flash
        self.active: SlotInfo | None = None
        self.upload: UploadState | None = None
        self.early = RecordCache()
        """The upload's records decoded as its bytes came (RAM only), so COMMIT's check is quick.
        After a reboot a resumed upload has none of them, and COMMIT decodes those records itself."""
        self.boot_report = BootReport(BootOutcome.BLANK, None)
        self._commits: list[SlotInfo] = []
        self._fresh_journal = False
        self._seq = 0
        self._journal = JOURNAL_SECTORS[0]
        self._next_entry = 0
        self._mount()
        self.settings = Settings(flash, SETTINGS_SECTORS)
        self.history = History(flash, HISTORY_SECTORS)

    # ------------------------------------------------------------------ boot

    def _read_entries(self, sector: int) -> tuple[list[c.Container], int, int]:
        """Valid entries of a journal sector, the index of its first free entry, and how many entries are damaged.

        An entry that fails its CRC is torn (a power cut: a written prefix, the
        rest still erased) or damaged (anything else: bit flips).
        """
        raw = self.flash.read(sector * SECTOR_SIZE, SECTOR_SIZE)
        entries, first_free, damaged = [], 0, 0
        for index in range(SECTOR_SIZE // ENTRY_SIZE):
            chunk = raw[index * ENTRY_SIZE : (index + 1) * ENTRY_SIZE]
            if chunk == _FREE_ENTRY:
                continue
            first_free = index + 1  # never write after a used (even torn) entry
            entry = _ENTRY.parse(chunk) if int.from_bytes(chunk[12:], "little") == zlib.crc32(chunk[:12]) else None
            if entry is not None and _plausible(entry):
                entries.append(entry)
            elif not _torn(chunk):
                damaged += 1
        return entries, first_free, damaged

    def _mount(self) -> None:
        """Replay the newest journal sector that holds a complete state.

        A sector filled by compaction starts with a snapshot (entries flagged
        :data:`COPY_FLAG`) and is trusted only once its ``SNAPSHOT`` marker is
        written; until then the other sector is the journal, so a power cut in
        the middle of a compaction loses nothing.
        """
        found = {sector: self._read_entries(sector) for sector in JOURNAL_SECTORS}

        def complete(entries: list[c.Container]) -> bool:
            if not entries:
                return False
            from_compaction = bool(entries[0].slot & COPY_FLAG)
            return not from_compaction or any(e.kind == EntryKind.SNAPSHOT for e in entries)

        trusted = [sector for sector, (entries, _, _) in found.items() if complete(entries)]
        newest_seq = max((e.seq for entries, _, _ in found.values() for e in entries), default=-1)
        self._seq = newest_seq + 1
        file_size = self.flash.file_size if self.flash.file_size is not None and self.flash.file_size < self.flash.size else None
        if not trusted:
            self._journal = JOURNAL_SECTORS[0]
            self._next_entry = found[self._journal][1]
            # Entries there (an unfinished compaction's snapshot) would keep the sector untrusted
            # after our own appends too: start the journal afresh at the first write instead.
            self._fresh_journal = bool(found[self._journal][0])
            # Blank unless something beyond torn entries is there: a first entry torn by a cut is still a blank band.
            anything = any(entries or damaged for entries, _, damaged in found.values())
            blank = not anything and not self.flash.data[SLOT_FIRST_SECTOR[0] * SECTOR_SIZE : SLOTS_END * SECTOR_SIZE].strip(bytes([ERASED]))
            self.boot_report = BootReport(BootOutcome.BLANK if blank else BootOutcome.JOURNAL_LOST, None, file_size=file_size)
            return
        self._journal = max(trusted, key=lambda sector: max(e.seq for e in found[sector][0]))
        entries, self._next_entry, damaged = found[self._journal]
        for entry in entries:  # in write order, which is sequence order within a sector
            self._apply(entry)
        outcome = BootOutcome.JOURNAL_DAMAGED if damaged else BootOutcome.INTACT
        lost = None
        if self.active is not None and self._verified(self.active) is None:
            lost, self.active = self.active, self._previous_intact(self.active)
            outcome = BootOutcome.RECOVERED_PREVIOUS if self.active is not None else BootOutcome.ACTIVE_SLOT_CORRUPT
            if self.upload is not None and self.active is not None and self.upload.slot == self.active.slot:
                self.upload = None  # it would write over the routine just recovered
        self.boot_report = BootReport(outcome, self.active, damaged, lost, file_size)

    def _previous_intact(self, lost: SlotInfo) -> SlotInfo | None:
        """The routine committed before ``lost``, if it is in the other slot and still verifies."""
        earlier = [info for info in self._commits if info.slot != lost.slot]
        if not earlier:
            return None
        return earlier[-1] if self._verified(earlier[-1]) is not None else None

    def _apply(self, entry: c.Container) -> None:
        kind = entry.kind
        if kind == EntryKind.COMMIT:
            self.active = SlotInfo(entry.slot & ~COPY_FLAG, entry.length, entry.value)
            self._commits.append(self.active)
            self.upload = None
        elif kind == EntryKind.BEGIN:
            self.upload = UploadState(entry.slot & ~COPY_FLAG, entry.length, entry.value, 0)
        elif kind == EntryKind.PROGRESS and self.upload is not None and entry.value <= self.upload.length:
            self.upload = replace(self.upload, offset=entry.value)
        elif kind == EntryKind.ABORT:
            self.upload = None
        elif kind == EntryKind.ERASE:
            self.active = None
            self.upload = None
            self._commits.clear()  # a routine the user erased is never recovered

    # --------------------------------------------------------------- journal

    def _append(self, kind: EntryKind, slot: int = 0, length: int = 0, value: int = 0) -> None:
        if self._next_entry >= SECTOR_SIZE // ENTRY_SIZE or self._fresh_journal:
            self._compact()
            self._fresh_journal = False
        self._write_entry(kind, slot, length, value)

    def _write_entry(self, kind: EntryKind, slot: int, length: int, value: int) -> None:
        body = JournalEntry.build(dict(kind=kind, slot=slot, length=length, seq=self._seq, value=value, entry_crc=0))[:12]
        entry = body + zlib.crc32(body).to_bytes(4, "little")
        self._seq += 1
        offset = self._journal * SECTOR_SIZE + self._next_entry * ENTRY_SIZE
        self._next_entry += 1  # even if the write is torn, that entry is used
        self.flash.program(offset, entry)

    def _compact(self) -> None:
        """Start the other journal sector with a snapshot of the current state.

        The snapshot is trusted (at the next boot) only once its final
        ``SNAPSHOT`` entry is written; the old sector stays intact until the
        compaction after this one erases it.
        """
        self._journal = JOURNAL_SECTORS[1] if self._journal == JOURNAL_SECTORS[0] else JOURNAL_SECTORS[0]
        self._next_entry = 0
        self.flash.erase_sector(self._journal)
        if self.active is None:
            self._write_entry(EntryKind.ERASE, COPY_FLAG, 0, 0)
        else:
            self._write_entry(EntryKind.COMMIT, self.active.slot | COPY_FLAG, self.active.length, self.active.crc)
        if self.upload is not None:
            self._write_entry(EntryKind.BEGIN, self.upload.slot | COPY_FLAG, self.upload.length, self.upload.crc)
            self._write_entry(EntryKind.PROGRESS, COPY_FLAG, 0, self.upload.offset)
        self._write_entry(EntryKind.SNAPSHOT, COPY_FLAG, 0, 0)

    # ---------------------------------------------------------------- tables

    def _slot_offset(self, slot: int) -> int:
        return SLOT_FIRST_SECTOR[slot] * SECTOR_SIZE

    def _verified(self, info: SlotInfo) -> bytes | None:
        data = self.flash.read(self._slot_offset(info.slot), info.length)
        if zlib.crc32(data) != info.crc:
            return None
        try:
            decode_table(data)
        except TableFormatError:
            return None
        return data

    def active_table(self) -> bytes | None:
        """The active routine's table bytes, or None when the band holds none.

        Verified in full at commit and at boot; its CRC-32 is checked again on
        every call, so bytes damaged since boot are never run.
        """
        if self.active is None:
            return None
        data = self.flash.read(self._slot_offset(self.active.slot), self.active.length)
        return data if zlib.crc32(data) == self.active.crc else None

    def begin_upload(self, length: int, crc: int) -> int:
        """Prepare to receive a table; returns the offset to continue from (resume)."""
        if not 0 < length <= Limits.MAX_TABLE_BYTES:
            raise StorageError(f"table of {length} bytes; a slot holds 1 to {Limits.MAX_TABLE_BYTES}")
        if self.upload is not None and (self.upload.length, self.upload.crc) == (length, crc):
            return self.upload.offset
        slot = 1 - self.active.slot if self.active is not None else 0
        if self.upload is not None:
            # Forget the old upload before its bytes are erased, so a cut mid-erase
            # cannot resume onto half-erased flash.
            self._append(EntryKind.ABORT)
            self.upload = None
        first = SLOT_FIRST_SECTOR[slot]
        for sector in range(first, first + (length + SECTOR_SIZE - 1) // SECTOR_SIZE):
            self.flash.erase_sector(sector)
        self._append(EntryKind.BEGIN, slot, length, crc)
        self.upload = UploadState(slot, length, crc, 0)
        self.early = RecordCache()
        return 0

    def write_chunk(self, offset: int, data: bytes) -> int:
        """Store upload bytes at ``offset`` (the current durable offset); returns the new one."""
        upload = self.upload
        if upload is None:
            raise StorageError("no upload in progress")
        if offset != upload.offset:
            raise StorageError(f"data at offset {offset}, expected {upload.offset}")
        if offset + len(data) > upload.length:
            raise StorageError(f"data runs past the announced {upload.length} bytes")
        try:
            self.flash.program(self._slot_offset(upload.slot) + offset, data)
        except FlashError:
            # Bytes past the durable offset that are not erased (damaged flash): forget the
            # upload, so the next UPLOAD_BEGIN erases the slot instead of resuming onto them.
            self._append(EntryKind.ABORT)
            self.upload = None
            raise
        new_offset = offset + len(data)
        self._append(EntryKind.PROGRESS, 0, 0, new_offset)
        self.upload = replace(upload, offset=new_offset)
        self.early.feed(offset, data)
        return new_offset

    def commit(self) -> bytes:
        """Verify the uploaded table and make it active; returns its bytes.

        Raises :class:`~protocol.errors.TableFormatError` (old routine kept,
        upload forgotten) when the bytes do not verify.
        """
        upload = self.upload
        if upload is None or upload.offset != upload.length:
            have = "no upload" if upload is None else f"{upload.offset} of {upload.length} bytes"
            raise StorageError(f"commit with {have}")
        data = self.flash.read(self._slot_offset(upload.slot), upload.length)
        try:
            if zlib.crc32(data) != upload.crc:
                raise TableFormatError(TableError.BAD_CRC, "the received bytes do not match the announced CRC-32")
            decode_table(data, decoded=self.early)  # every check runs; only records decoded from these very bytes are reused
        except TableFormatError:
            self._append(EntryKind.ABORT)
            self.upload, self.early = None, RecordCache()
            raise
        self._append(EntryKind.COMMIT, upload.slot, upload.length, upload.crc)
        self.active = SlotInfo(upload.slot, upload.length, upload.crc)
        self.upload, self.early = None, RecordCache()  # the upload's bytes are no longer needed in RAM
        return data

    def erase(self) -> None:
        """Forget the active routine and any upload."""
        self._append(EntryKind.ERASE)
        self.active = None
        self.upload = None
