"""Flash and storage: erase-before-write, atomic commit, power loss at every byte."""

from __future__ import annotations

import contextlib
import zlib

import pytest

from companion import compile_routine, load_routine
from firmware_sim.faults import FlashError, PowerLoss, StorageError
from firmware_sim.flash import ERASE_PAGE, SECTOR_SIZE, Flash
from firmware_sim.storage import COPY_FLAG, ENTRY_SIZE, FLASH_SIZE, EntryKind, JournalEntry, Storage
from protocol.errors import TableFormatError

OLD = compile_routine(load_routine("nausea-pc6"))
NEW = compile_routine(load_routine("full-hand-massage"))


def upload(storage: Storage, data: bytes, chunk: int = 64) -> None:
    offset = storage.begin_upload(len(data), zlib.crc32(data))
    while offset < len(data):
        offset = storage.write_chunk(offset, data[offset : offset + chunk])
    storage.commit()


def test_flash_refuses_programming_over_data():
    flash = Flash(SECTOR_SIZE)
    flash.program(0, b"\x0f")
    flash.program(0, b"\x0f")  # same bits again is allowed
    with pytest.raises(FlashError, match="not erased"):
        flash.program(0, b"\xf0")
    flash.erase_sector(0)
    assert flash.read(0, 1) == b"\xff"


def test_flash_file_survives_restart(tmp_path):
    path = tmp_path / "flash.bin"
    storage = Storage(Flash(FLASH_SIZE, path))
    upload(storage, OLD)
    assert path.stat().st_size == FLASH_SIZE
    reopened = Storage(Flash(FLASH_SIZE, path))
    assert reopened.active_table() == OLD


def test_commit_replaces_routine_and_uses_the_other_slot():
    storage = Storage(Flash(FLASH_SIZE))
    upload(storage, OLD)
    first_slot = storage.active.slot
    upload(storage, NEW)
    assert storage.active_table() == NEW
    assert storage.active.slot != first_slot
    assert Storage(storage.flash).active_table() == NEW


def test_refused_table_keeps_old_routine():
    storage = Storage(Flash(FLASH_SIZE))
    upload(storage, OLD)
    bad = bytearray(NEW)
    bad[30] ^= 0xFF  # corrupt a record; the CRC-32 inside the table no longer matches
    with pytest.raises(TableFormatError):
        upload(storage, bytes(bad))
    assert storage.active_table() == OLD
    assert storage.upload is None
    assert Storage(storage.flash).active_table() == OLD


def test_out_of_order_data_is_rejected():
    storage = Storage(Flash(FLASH_SIZE))
    storage.begin_upload(len(NEW), zlib.crc32(NEW))
    with pytest.raises(StorageError, match="expected 0"):
        storage.write_chunk(64, NEW[64:128])
    with pytest.raises(StorageError, match="commit with"):
        storage.commit()


def test_resume_after_reboot_continues_at_durable_offset():
    storage = Storage(Flash(FLASH_SIZE))
    storage.begin_upload(len(NEW), zlib.crc32(NEW))
    storage.write_chunk(0, NEW[:100])
    rebooted = Storage(storage.flash)
    assert rebooted.begin_upload(len(NEW), zlib.crc32(NEW)) == 100
    rebooted.write_chunk(100, NEW[100:])
    rebooted.commit()
    assert Storage(storage.flash).active_table() == NEW


def test_journal_compaction_keeps_state():
    storage = Storage(Flash(FLASH_SIZE))
    upload(storage, NEW, chunk=1)  # one journal entry per byte: forces a compaction
    entries_per_sector = SECTOR_SIZE // ENTRY_SIZE
    assert len(NEW) > entries_per_sector
    storage.begin_upload(len(OLD), zlib.crc32(OLD))
    storage.write_chunk(0, OLD[:10])
    rebooted = Storage(storage.flash)
    assert rebooted.active_table() == NEW
    assert rebooted.upload is not None and rebooted.upload.offset == 10


ENTRIES_PER_SECTOR = SECTOR_SIZE // ENTRY_SIZE


def base_image(active: bytes | None, fill_journal: bool) -> bytes:
    """A flash image holding ``active`` (or nothing), its journal optionally a few entries short of full."""
    storage = Storage(Flash(FLASH_SIZE))
    if active is not None:
        upload(storage, active)
    if fill_journal:
        # An unfinished upload of another table, one byte per journal entry.
        other = compile_routine(load_routine("desk-break"))
        offset = storage.begin_upload(len(other), zlib.crc32(other))
        while storage._next_entry < ENTRIES_PER_SECTOR - 3:
            offset = storage.write_chunk(offset, other[offset : offset + 1])
    return storage.flash.snapshot()


@pytest.mark.parametrize(
    ("start", "fill_journal"),
    [("old routine", False), ("old routine", True), ("empty band", True)],
    ids=["plain", "through-compaction", "empty-band-through-compaction"],
)
def test_power_cut_at_every_unit_keeps_last_good_routine(start, fill_journal):
    """Cut power after every possible number of flash work units of a whole upload + commit.

    With a nearly full journal the upload also compacts it, so the cuts land in
    the journal sector erase and in the snapshot too.
    """
    old = OLD if start == "old routine" else None
    image = base_image(old, fill_journal)
    probe = Flash.from_image(image)
    probe.cut_power_after(10**9)
    upload(Storage(probe), NEW)
    total = 10**9 - probe._budget
    assert total > len(NEW) + SECTOR_SIZE // ERASE_PAGE  # writes every byte and erases at least a sector
    outcomes = {"old": 0, "new": 0}
    for budget in range(total + 1):
        flash = Flash.from_image(image)
        storage = Storage(flash)
        flash.cut_power_after(budget)
        with contextlib.suppress(PowerLoss):
            upload(storage, NEW)
        flash.cut_power_after(None)
        rebooted = Storage(flash)  # the band boots
        active = rebooted.active_table()
        assert active in (old, NEW), f"cut after {budget} units left {active!r:.40}"
        outcomes["old" if active == old else "new"] += 1
        upload(rebooted, NEW)  # and it can always finish (or resume) the upload afterwards
        assert Storage(flash).active_table() == NEW
    assert outcomes == {"old": total, "new": 1}  # only the complete commit switches routines


def test_power_cut_during_compaction_keeps_acknowledged_upload_offset():
    """An upload offset acknowledged before a compaction survives a cut anywhere in that compaction."""
    image = base_image(None, fill_journal=True)
    before = Storage(Flash.from_image(image))
    acknowledged = before.upload.offset
    other = compile_routine(load_routine("desk-break"))
    for budget in range(0, SECTOR_SIZE // ERASE_PAGE + 6 * ENTRY_SIZE):
        flash = Flash.from_image(image)
        storage = Storage(flash)
        flash.cut_power_after(budget)
        with contextlib.suppress(PowerLoss):
            for _ in range(8):  # enough one-byte writes to force the compaction
                storage.write_chunk(storage.upload.offset, other[storage.upload.offset : storage.upload.offset + 1])
        flash.cut_power_after(None)
        resumed = Storage(flash).begin_upload(len(other), zlib.crc32(other))
        assert resumed >= acknowledged, f"cut after {budget} units: resume at {resumed}, acknowledged {acknowledged}"


def test_upload_after_an_unfinished_compaction_alone_is_kept():
    """Found by fuzzing: a journal holding only a compaction snapshot without its SNAPSHOT marker is untrusted,
    and entries appended after it would be too; the first write starts the journal afresh instead."""
    flash = Flash(FLASH_SIZE)
    body = JournalEntry.build(dict(kind=EntryKind.COMMIT, slot=COPY_FLAG, length=1, seq=0, value=0, entry_crc=0))[:12]
    flash.program(0, body + zlib.crc32(body).to_bytes(4, "little"))
    storage = Storage(flash)
    assert storage.active_table() is None
    upload(storage, OLD)
    assert Storage(flash).active_table() == OLD
