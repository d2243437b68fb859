"""``handcue info`` says which routine a band booted with after a power cut or damaged flash.

The flash images come from the power-loss helpers; the band is ``handcue-sim`` on a real pty
booted from the image file, and the companion is the ``handcue`` CLI, so the boot outcome
travels the whole way: storage -> INFO byte -> BandInfo -> the printed line and the JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocol.constants import BootOutcome

from .test_power_loss import OLD, OTHER, boot, flip, image_with, slot_range

TIMEOUT = 60


def handcue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def sim_on(tmp_path: Path) -> Iterator[Callable[[bytes], str]]:
    """``sim_on(image)``: handcue-sim booted from a flash file holding ``image``; returns its serial address."""
    processes: list[subprocess.Popen[str]] = []

    def start(image: bytes) -> str:
        flash = tmp_path / f"band{len(processes)}.bin"
        flash.write_bytes(image)
        process = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--serial", "pty", "--clock", "virtual", "--flash", str(flash)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        return "serial:" + process.stdout.readline().strip().removeprefix("serial: ")

    yield start
    for process in processes:
        process.terminate()
        process.communicate(timeout=30)


def newest_slot_damaged() -> bytes:
    """OLD then OTHER committed, and one bit of OTHER's slot flipped: the band falls back to OLD."""
    image = image_with(OLD, OTHER)
    active = boot(image).active
    assert active is not None
    return flip(image, slot_range(active.slot, active.length)[100], 3)


def both_slots_damaged() -> bytes:
    image = image_with(OLD, OTHER)
    for table in (OLD, OTHER):
        slot = next(info for info in boot(image)._commits if info.crc == zlib.crc32(table))
        image = flip(image, slot_range(slot.slot, slot.length)[10])
    return image


def test_the_images_boot_as_named():
    """The images below really are what their names say (the storage's own verdict)."""
    assert boot(newest_slot_damaged()).boot_report.outcome is BootOutcome.RECOVERED_PREVIOUS
    assert boot(both_slots_damaged()).boot_report.outcome is BootOutcome.ACTIVE_SLOT_CORRUPT


def test_info_reports_the_recovered_previous_routine(sim_on):
    address = sim_on(newest_slot_damaged())
    result = handcue("info", "--json", "--to", address)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["boot"], doc["routine_crc32"]) == ("recovered-previous", f"0x{zlib.crc32(OLD):08X}")
    text = handcue("info", "--to", address)
    assert text.returncode == 0, text.stderr
    assert "storage: recovered-previous (the newest routine failed its check; the one before it is active)" in text.stdout.splitlines()


def test_info_reports_a_corrupt_active_slot_and_no_routine(sim_on):
    address = sim_on(both_slots_damaged())
    result = handcue("info", "--json", "--to", address)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["boot"], doc["routine_crc32"]) == ("active-slot-corrupt", None)
    text = handcue("info", "--to", address)
    assert "routine: none" in text.stdout and "storage: active-slot-corrupt (" in text.stdout and "upload it again" in text.stdout


def test_info_reports_an_intact_boot_plainly(sim_on):
    text = handcue("info", "--to", sim_on(image_with(OLD)))
    assert text.returncode == 0, text.stderr
    assert "storage: intact" in text.stdout.splitlines()
