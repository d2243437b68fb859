"""Power loss: cuts through a maximum-size upload, during a resume, twice in a row; damaged flash at boot.

A cut is replayed from a trace: one upload on a recording flash lists every
work unit (an erased page, a programmed byte) in order, and the image a cut
after ``u`` units leaves is the starting image with the first ``u`` units
applied (checked against real cuts below).  So each cut point costs one copy
and one mount, not a whole upload.  By default the sweep takes every erase
page, every byte of the BEGIN, COMMIT and first and last PROGRESS entries, the
edges of every data chunk and every 101st other unit; ``--exhaustive`` (or
``HANDCUE_EXHAUSTIVE=1``) takes every unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.companion_cli import routine_text
from companion import compile_routine, load_routine
from companion.routine import parse_routine
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.faults import PowerLoss
from firmware_sim.flash import ERASE_PAGE, ERASED, SECTOR_SIZE, Flash
from firmware_sim.storage import ENTRY_SIZE, FLASH_SIZE, JOURNAL_SECTORS, SLOT_FIRST_SECTOR, BootOutcome, Storage
from protocol.constants import TABLE_HEADER_SIZE, Limits
from protocol.table import decode_table, encode_table, table_crc

CHUNK = 248  # what a band offering 256-byte frames takes per UPLOAD_DATA
OLD = compile_routine(load_routine("nausea-pc6"))
OTHER = compile_routine(load_routine("full-hand-massage"))


def max_size_table() -> bytes:
    """A valid table of exactly ``Limits.MAX_TABLE_BYTES``: as many steps as fit, records and header stretched.

    The format lets a newer companion write longer records and a longer header
    (an older band skips the bytes it does not know), which is how a table
    fills a whole slot.
    """
    routine, _ = parse_routine(routine_text(Limits.MAX_RECORDS), "max-size")
    assert routine is not None
    table = decode_table(compile_routine(routine, names=True))
    for count in range(len(table.records), 0, -1):
        base = encode_table(dataclasses.replace(table, records=table.records[:count]))
        header_size, record_size = base[10], base[11]
        rest = len(base) - header_size - count * record_size
        stretched = (Limits.MAX_TABLE_BYTES - TABLE_HEADER_SIZE - rest) // count
        extra = Limits.MAX_TABLE_BYTES - TABLE_HEADER_SIZE - rest - count * stretched
        if stretched <= 0xFF and TABLE_HEADER_SIZE + extra <= 0xFF:
            break
    records = b"".join(base[header_size + i * record_size : header_size + (i + 1) * record_size].ljust(stretched, b"\0") for i in range(count))
    data = bytearray(base[:TABLE_HEADER_SIZE] + bytes(extra) + records + base[header_size + count * record_size :])
    data[10], data[11] = TABLE_HEADER_SIZE + extra, stretched
    data[12:14] = len(data).to_bytes(2, "little")
    data[4:8] = table_crc(data).to_bytes(4, "little")
    return bytes(data)


@pytest.fixture(scope="module")
def biggest() -> bytes:
    data = max_size_table()
    assert len(data) == Limits.MAX_TABLE_BYTES
    decode_table(data)
    return data


@pytest.fixture(scope="module")
def exhaustive(request) -> bool:
    return bool(request.config.getoption("--exhaustive"))


# ------------------------------------------------------------------ traces


@dataclasses.dataclass(frozen=True)
class Unit:
    offset: int
    data: bytes
    kind: str  # "erase", "data" or "entry"
    operation: int  # index of the flash operation it belongs to
    position: int  # index of the unit within that operation
    size: int  # units in that operation


class RecordingFlash(Flash):
    """A RAM flash that lists every work unit it performs."""

    def __init__(self, image: bytes) -> None:
        super().__init__(len(image))
        self.data[:] = image
        self.units: list[Unit] = []
        self._operations = 0

    def erase_sector(self, sector: int) -> None:
        pages = SECTOR_SIZE // ERASE_PAGE
        for page in range(pages):
            self.units.append(Unit(sector * SECTOR_SIZE + page * ERASE_PAGE, bytes([ERASED]) * ERASE_PAGE, "erase", self._operations, page, pages))
        self._operations += 1
        super().erase_sector(sector)

    def program(self, offset: int, payload: bytes) -> None:
        journal = offset < (max(JOURNAL_SECTORS) + 1) * SECTOR_SIZE
        kind = "entry" if journal and len(payload) == ENTRY_SIZE else "data"
        self.units += [Unit(offset + i, payload[i : i + 1], kind, self._operations, i, len(payload)) for i in range(len(payload))]
        self._operations += 1
        super().program(offset, payload)


def upload(storage: Storage, data: bytes, chunk: int = CHUNK) -> None:
    offset = storage.begin_upload(len(data), zlib.crc32(data))
    while offset < len(data):
        offset = storage.write_chunk(offset, data[offset : offset + chunk])
    storage.commit()


def trace(image: bytes, action: Callable[[Storage], None]) -> tuple[list[Unit], bytes]:
    """The work units of ``action`` on a band booted from ``image``, and the image it leaves."""
    flash = RecordingFlash(image)
    action(Storage(flash))
    return flash.units, flash.snapshot()


def cut_images(image: bytes, units: list[Unit], points: list[int]) -> Iterator[tuple[int, bytes]]:
    """``(u, image after a cut after u units)`` for each of the sorted ``points``."""
    running = bytearray(image)
    done = 0
    for point in points:
        for unit in units[done:point]:
            running[unit.offset : unit.offset + len(unit.data)] = unit.data
        done = point
        yield point, bytes(running)


def sampled(units: list[Unit], exhaustive: bool) -> list[int]:
    """Cut points: see the module docstring."""
    if exhaustive:
        return list(range(len(units) + 1))
    entries = sorted({u.operation for u in units if u.kind == "entry"})
    every_byte = {entries[0], entries[1] if len(entries) > 1 else entries[0], entries[-2] if len(entries) > 1 else entries[0], entries[-1]}
    points = []
    for index, unit in enumerate(units):
        if (
            unit.kind == "erase"
            or (unit.kind == "entry" and (unit.operation in every_byte or unit.position in (0, 1, unit.size - 1)))
            or (unit.kind == "data" and unit.position in (0, 1, unit.size - 1))
            or index % 101 == 0
        ):
            points.append(index)
    return [*points, len(units)]


def thin(points: list[int], step: int) -> list[int]:
    """Every ``step``-th point, and always the last (the whole operation done)."""
    return sorted({*points[::step], points[-1]})


def image_with(*tables: bytes) -> bytes:
    storage = Storage(Flash(FLASH_SIZE))
    for table in tables:
        upload(storage, table)
    return storage.flash.snapshot()


def boot(image: bytes) -> Storage:
    return Storage(Flash.from_image(image))


# ------------------------------------------------------------------ the model is the flash


def test_replayed_cuts_equal_real_cuts(biggest):
    image = image_with(OLD)
    units, _ = trace(image, lambda s: upload(s, biggest))
    for point in [0, 5, 16, 200, 1000, len(units) // 2, len(units) - 17, len(units) - 3, len(units)]:
        flash = Flash.from_image(image)
        storage = Storage(flash)
        flash.cut_power_after(point)
        with contextlib.suppress(PowerLoss):
            upload(storage, biggest)
        replayed = next(cut_images(image, units, [point]))[1]
        assert flash.snapshot() == replayed, point


# ------------------------------------------------------------------ the sweeps


def sweep(image: bytes, units: list[Unit], points: list[int], before: bytes | None, after: bytes,
          finish: Callable[[Storage], None] | None = None, finishes: int = 0) -> Counter[str]:
    """Boot from every cut image: the band holds ``before`` until the commit entry is whole, then ``after``; never else."""
    seen: Counter[str] = Counter()
    finish_every = max(1, len(points) // finishes) if finishes else 0
    for n, (point, cut) in enumerate(cut_images(image, units, points)):
        storage = boot(cut)
        held = storage.active_table()
        assert held in (before, after), f"cut after {point} of {len(units)} units: holds {held!r:.40}"
        assert storage.boot_report.outcome in (BootOutcome.INTACT, BootOutcome.BLANK), f"cut after {point}: {storage.boot_report}"
        assert storage.boot_report.routine == storage.active
        seen["new" if held == after and held != before else "old"] += 1
        if point == len(units):
            assert held == after
        if finish is not None and n % finish_every == 0:
            finish(storage)  # and the band can always finish, or resume, the upload afterwards
            assert boot(storage.flash.snapshot()).active_table() == after
    return seen


def test_max_size_table_cut_at_every_page_and_every_entry_byte(biggest, exhaustive):
    """Replacing a routine by a 32 KiB table: cuts in every erase page, the data, every PROGRESS and the COMMIT entry."""
    image = image_with(OLD)
    units, _ = trace(image, lambda s: upload(s, biggest))
    assert Counter(u.kind for u in units)["erase"] == Limits.MAX_TABLE_BYTES // ERASE_PAGE
    assert Counter(u.kind for u in units)["data"] == Limits.MAX_TABLE_BYTES
    commit = [u for u in units if u.kind == "entry"][-ENTRY_SIZE:]
    points = sampled(units, exhaustive)
    assert {units.index(u) for u in commit} <= set(points)
    seen = sweep(image, units, points, OLD, biggest, finish=lambda s: upload(s, biggest), finishes=200 if exhaustive else 6)
    assert seen == {"old": len(points) - 1, "new": 1}  # only the whole commit entry switches routines
    print(f"\nmax-size table: {len(units)} units, {len(points)} cut points")


def test_max_size_table_onto_an_empty_band(biggest, exhaustive):
    units, _ = trace(image_with(), lambda s: upload(s, biggest))
    points = thin(sampled(units, exhaustive), 1 if exhaustive else 3)
    seen = sweep(image_with(), units, points, None, biggest)
    assert seen == {"old": len(points) - 1, "new": 1}


def test_cut_during_a_resume(biggest, exhaustive):
    """Cut once, reboot, resume the same upload, and cut again anywhere in the resumed part."""
    image = image_with(OLD)
    units, _ = trace(image, lambda s: upload(s, biggest))
    first_data = next(index for index, unit in enumerate(units) if unit.kind == "data")
    span = len(units) - first_data
    # after some data is durable: an upload to resume (every 6th of the way with --exhaustive)
    firsts = [len(units) // 3, len(units) - 40] if not exhaustive else [first_data + span * k // 6 + 300 for k in range(6)]
    total = 0
    for _, first_cut in cut_images(image, units, firsts):
        rebooted = boot(first_cut)
        assert rebooted.upload is not None and rebooted.upload.offset > 0  # something to resume from
        resume_units, _ = trace(first_cut, lambda s: upload(s, biggest))
        assert not any(u.kind == "erase" for u in resume_units)  # a resume erases nothing
        points = thin(sampled(resume_units, exhaustive), 1 if exhaustive else 3)
        total += len(points)
        seen = sweep(first_cut, resume_units, points, OLD, biggest, finish=lambda s: upload(s, biggest), finishes=50 if exhaustive else 3)
        assert seen["new"] == 1
    print(f"\ncut during a resume: {total} second cut points")


def test_two_cuts_in_a_row(exhaustive):
    """A cut mid-upload, then another upload (of another table) cut too: the old routine, the new one or the other, never a mix."""
    image = image_with(OLD)
    units, _ = trace(image, lambda s: upload(s, OTHER, chunk=64))
    for _, first in cut_images(image, units, thin(sampled(units, exhaustive), 1 if exhaustive else 7)):
        second_units, _ = trace(first, lambda s: upload(s, compile_routine(load_routine("desk-break"))))
        held_first = boot(first).active_table()
        points = thin(sampled(second_units, exhaustive), 1 if exhaustive else 5)
        for point, second in cut_images(first, second_units, points):
            storage = boot(second)
            assert storage.active_table() in (held_first, compile_routine(load_routine("desk-break"))), point
            assert storage.boot_report.outcome is BootOutcome.INTACT


def test_cuts_right_after_reboot_again_and_again():
    """Cut after a handful of units, reboot, resume, cut again after a handful: the upload still ends, holding the new table."""
    flash = Flash.from_image(image_with(OLD))
    data = compile_routine(load_routine("full-hand-massage"))
    reboots = 0
    for budget in [3, 0, 17, 1, 40, 16, 100, 5, 300, 2] * 3:
        storage = Storage(flash)
        assert storage.active_table() in (OLD, data)
        if storage.active_table() == data:
            break
        flash.cut_power_after(budget)
        with contextlib.suppress(PowerLoss):
            upload(storage, data, chunk=32)
        flash.cut_power_after(None)
        reboots += 1
    assert Storage(flash).active_table() == data
    assert reboots > 5


# ------------------------------------------------------------------ damaged flash at boot


def slot_range(slot: int, length: int) -> range:
    start = SLOT_FIRST_SECTOR[slot] * SECTOR_SIZE
    return range(start, start + length)


def flip(image: bytes, offset: int, bit: int = 0) -> bytes:
    damaged = bytearray(image)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


def two_routines() -> tuple[bytes, Storage]:
    """OLD committed, then OTHER committed in the other slot: OLD is the previous routine."""
    image = image_with(OLD, OTHER)
    storage = boot(image)
    assert storage.active_table() == OTHER
    return image, storage


def test_blank_and_intact_boots_say_so():
    assert boot(image_with()).boot_report.outcome is BootOutcome.BLANK
    report = boot(image_with(OLD)).boot_report
    assert report.outcome is BootOutcome.INTACT and report.routine is not None and report.routine.crc == zlib.crc32(OLD)
    assert "intact: holds the routine of" in str(report)


def test_damaged_active_slot_recovers_the_previous_routine():
    image, storage = two_routines()
    active, previous = storage.active, next(info for info in storage._commits if info != storage.active)
    damaged = boot(flip(image, slot_range(active.slot, active.length)[100], 3))
    assert damaged.active_table() == OLD
    report = damaged.boot_report
    assert report.outcome is BootOutcome.RECOVERED_PREVIOUS and report.lost == active and report.routine == previous
    assert "recovered-previous" in str(report) and "failed its check" in str(report)
    # A new upload goes to the damaged slot, never over the recovered routine.
    upload(damaged, biggest_small := compile_routine(load_routine("desk-break")))
    assert boot(damaged.flash.snapshot()).active_table() == biggest_small


def test_an_erased_routine_is_never_recovered():
    storage = boot(image_with(OLD, OTHER))
    erased = storage.active
    storage.erase()
    upload(storage, compile_routine(load_routine("desk-break")))  # into the other slot: OTHER's bytes stay intact
    active = storage.active
    assert active.slot != erased.slot
    rebooted = boot(flip(storage.flash.snapshot(), slot_range(active.slot, active.length)[7]))
    assert rebooted.active_table() is None
    assert rebooted.boot_report.outcome is BootOutcome.ACTIVE_SLOT_CORRUPT


def test_both_slots_damaged_boots_with_no_routine_and_says_so():
    image, storage = two_routines()
    active = storage.active
    other = 1 - active.slot
    damaged = flip(flip(image, slot_range(active.slot, active.length)[0]), slot_range(other, len(OLD))[len(OLD) - 1], 7)
    rebooted = boot(damaged)
    assert rebooted.active_table() is None
    assert rebooted.boot_report.outcome is BootOutcome.ACTIVE_SLOT_CORRUPT
    band = Band(rebooted, VirtualClock())
    assert band.interpreter is None  # the band runs nothing rather than a corrupt table


def test_damaged_journal_entry_is_reported_and_skipped():
    image, _ = two_routines()
    journal = image[: SECTOR_SIZE]
    last_commit = max(i for i in range(0, SECTOR_SIZE, ENTRY_SIZE) if journal[i] == 1)  # EntryKind.COMMIT
    rebooted = boot(flip(image, last_commit + 5, 2))
    assert rebooted.boot_report.outcome is BootOutcome.JOURNAL_DAMAGED
    assert rebooted.boot_report.damaged_entries == 1
    assert rebooted.active_table() == OLD  # the older commit is what the journal still proves


def test_garbage_in_both_journal_sectors_is_journal_lost():
    image = bytearray(image_with(OLD))
    image[: 2 * SECTOR_SIZE] = random.Random(3).randbytes(2 * SECTOR_SIZE)
    rebooted = boot(bytes(image))
    assert rebooted.boot_report.outcome is BootOutcome.JOURNAL_LOST
    assert rebooted.active_table() is None


def test_table_damaged_after_boot_is_never_handed_out():
    storage = boot(image_with(OLD))
    storage.flash.data[slot_range(storage.active.slot, 1)[0] + 30] ^= 0x10
    assert storage.active_table() is None
    assert Band(storage, VirtualClock()).interpreter is None


def test_random_bit_flips_at_boot(exhaustive):
    """Flip 1 to 8 random bits anywhere in the used part of the flash: OLD, OTHER or nothing, verified, and the report agrees."""
    image, _ = two_routines()
    used = [*range(2 * SECTOR_SIZE), *slot_range(0, max(len(OLD), len(OTHER))), *slot_range(1, max(len(OLD), len(OTHER)))]
    rng = random.Random(11)
    outcomes: Counter[BootOutcome] = Counter()
    for _ in range(20_000 if exhaustive else 600):
        damaged = bytearray(image)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.choice(used)] ^= 1 << rng.randrange(8)
        rebooted = boot(bytes(damaged))
        held = rebooted.active_table()
        report = rebooted.boot_report
        outcomes[report.outcome] += 1
        assert held in (OLD, OTHER, None)
        assert report.routine == rebooted.active
        if held is not None:
            assert zlib.crc32(held) == rebooted.active.crc
            decode_table(held)
        if report.outcome in (BootOutcome.ACTIVE_SLOT_CORRUPT, BootOutcome.JOURNAL_LOST):
            assert held is None
        if report.outcome is BootOutcome.RECOVERED_PREVIOUS:
            assert held is not None and report.lost is not None and report.lost != rebooted.active
        if report.outcome is BootOutcome.INTACT:
            assert held == OTHER
    assert outcomes[BootOutcome.INTACT] and outcomes[BootOutcome.RECOVERED_PREVIOUS] and outcomes[BootOutcome.JOURNAL_DAMAGED]


@pytest.mark.parametrize("length", [0, 1, 100, SECTOR_SIZE, 2 * SECTOR_SIZE + 10, 2 * SECTOR_SIZE + len(OLD) - 1, FLASH_SIZE - 1])
def test_truncated_flash_file(tmp_path, length):
    path = tmp_path / "band.bin"
    path.write_bytes(image_with(OLD)[:length])
    storage = Storage(Flash(FLASH_SIZE, path))
    report = storage.boot_report
    assert report.file_size == length and f"held only {length} bytes" in str(report)
    held = storage.active_table()
    assert held in (OLD, None)
    if length >= 2 * SECTOR_SIZE + len(OLD):
        assert held == OLD and report.outcome is BootOutcome.INTACT
    elif length > 2 * SECTOR_SIZE:
        assert held is None and report.outcome is BootOutcome.ACTIVE_SLOT_CORRUPT
    # The band still works, and the file is whole again: no hole of zeros past its old end.
    upload(storage, OTHER)
    storage.flash.close()
    assert path.stat().st_size == FLASH_SIZE
    again = Storage(Flash(FLASH_SIZE, path))
    assert again.active_table() == OTHER and again.boot_report.outcome is BootOutcome.INTACT


def test_flash_file_longer_than_the_flash_is_refused(tmp_path):
    path = tmp_path / "band.bin"
    path.write_bytes(bytes(FLASH_SIZE + 1))
    result = subprocess.run([sys.executable, "-m", "firmware_sim", "--flash", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "expected" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ handcue-sim --power-cut-after


def test_sim_power_cut_reboots_from_the_flash_file_and_the_upload_completes(tmp_path: Path):
    import asyncio

    from companion.client import BandClient
    from protocol.errors import HandCueError

    flash = tmp_path / "band.bin"
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--serial", "pty", "--clock", "virtual", "--flash", str(flash),
         "--power-cut-after", "60", "--power-cut-after", "150"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    address = "serial:" + process.stdout.readline().strip().removeprefix("serial: ")

    async def job() -> tuple[int, int]:
        failures = 0
        for _ in range(4):
            try:
                async with BandClient.open(address) as client:
                    await client.upload(OTHER)
                    return failures, (await client.info()).routine_crc32
            except HandCueError:
                failures += 1
        raise AssertionError("the upload never completed")

    try:
        _, crc = asyncio.run(asyncio.wait_for(job(), 90))
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert crc == zlib.crc32(OTHER)
    assert "power cut (#1): rebooting from" in stderr and "power cut (#2)" in stderr
    assert "Traceback" not in stderr
    rebooted = Storage(Flash(FLASH_SIZE, flash))
    assert rebooted.active_table() == OTHER and rebooted.boot_report.outcome is BootOutcome.INTACT
