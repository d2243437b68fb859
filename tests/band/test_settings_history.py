"""Cue strength and session history on the band: scaling, storage, power cuts at every work unit, a soak, random images."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion import compile_routine, load_routine, read_table, table_timeline
from firmware_sim.band import Band
from firmware_sim.clock import VirtualClock
from firmware_sim.faults import PowerLoss
from firmware_sim.flash import ERASE_PAGE, ERASED, SECTOR_SIZE, Flash
from firmware_sim.handler import ProtocolHandler
from firmware_sim.history import HISTORY_RECORD_SIZE, ClockKind, History, Outcome, Session
from firmware_sim.local import storage_with
from firmware_sim.pairing import OPEN_OPCODES
from firmware_sim.settings import SETTINGS_RECORD_SIZE, Settings
from firmware_sim.storage import FLASH_SIZE, HISTORY_SECTORS, SETTINGS_SECTORS, BootOutcome, Storage
from protocol.constants import Opcode, SkipScope, Status
from protocol.iterations import iterations
from protocol.messages import SetSettingsRequest, SetTimeRequest, SettingsRequest, SettingsResponse, decode_message, encode_request
from protocol.strength import MIN_FELT_AMPLITUDE, scaled_amplitude
from protocol.table import build_tree

PAGES_PER_SECTOR = SECTOR_SIZE // ERASE_PAGE


def played(band: Band, clock: VirtualClock) -> list[dict]:
    events: list[dict] = []
    band.listeners.append(lambda e: events.append({k: v for k, v in e.items() if k != "event"}) if e["event"] == "motor" else None)
    band.start()
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
    return events


# --------------------------------------------------------------------------
# Strength: the mapping, the band's trace, the handler


def test_scaling_keeps_off_off_floors_at_the_felt_minimum_and_never_strengthens():
    assert [scaled_amplitude(a, 70) for a in (0, 10, 20, 21, 50, 100)] == [0, 10, 20, 20, 35, 70]
    assert scaled_amplitude(100, 20) == 20 and scaled_amplitude(100, 100) == 100 and scaled_amplitude(45, 50) == 23  # half up
    for amplitude in range(101):
        for strength in range(20, 101):
            scaled = scaled_amplitude(amplitude, strength)
            assert scaled <= amplitude and (scaled >= MIN_FELT_AMPLITUDE or scaled == amplitude)


@pytest.mark.parametrize("strength", [20, 45, 70, 100])
def test_band_trace_at_a_strength_equals_the_timeline_at_it(strength):
    data = compile_routine(load_routine("full-hand-massage"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    band.set_strength(strength)
    assert played(band, clock) == [e.to_json() for e in table_timeline(read_table(data), strength)]


def test_a_new_strength_applies_from_the_next_cue():
    data = compile_routine(load_routine("nausea-pc6"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    events: list[dict] = []
    band.listeners.append(lambda e: events.append(e) if e["event"] == "motor" else None)
    band.start()
    clock.set(30_000)
    band.process()
    band.set_strength(40)
    while (deadline := band.next_deadline()) is not None:
        clock.set(deadline)
        band.process()
    full, weak = table_timeline(read_table(data)), table_timeline(read_table(data), 40)
    # the tick at 30 s had started at full strength
    assert [e["amplitude"] for e in events] == [e.amplitude for e in full if e.t_ms <= 30_000] + [e.amplitude for e in weak if e.t_ms > 30_000]


def test_settings_requests_read_store_and_refuse_out_of_range():
    band = Band(storage_with(None), VirtualClock())
    handler = ProtocolHandler(band)

    def ask(request, request_id):
        return decode_message(handler.handle("link", encode_request(request, request_id)))

    assert ask(SettingsRequest(), 1).body == SettingsResponse(strength=100)
    assert ask(SetSettingsRequest(strength=55), 2).body == SettingsResponse(strength=55)
    refused = ask(SetSettingsRequest(strength=19), 3)
    assert refused.status == Status.BAD_REQUEST and "19" in refused.reason
    assert ask(SettingsRequest(), 4).body == SettingsResponse(strength=55)
    assert Storage(band.storage.flash).settings.strength == 55  # stored, not just held


def test_writing_settings_needs_a_paired_link_on_a_paired_band():
    # The BLE gate lets an unpaired central send only OPEN_OPCODES: an allow-list, so the new write is protected.
    assert Opcode.SET_SETTINGS not in OPEN_OPCODES and Opcode.SETTINGS not in OPEN_OPCODES


def test_settings_and_history_leave_a_band_without_routine_blank():
    storage = storage_with(None)
    storage.settings.set_strength(60)
    again = Storage(storage.flash)
    assert (again.boot_report.outcome, again.settings.strength) == (BootOutcome.BLANK, 60)


# --------------------------------------------------------------------------
# Power cuts through a settings write


def settings_cut_outcomes(flash: Flash, old: int, new: int) -> tuple[int, dict[int, int]]:
    """Cut the power after every number of work units of storing ``new``; returns the units the write takes and what each cut reads back."""
    image = flash.snapshot()
    seen: dict[int, int] = {}
    units = 0
    while True:
        trial = Flash.from_image(image)
        trial.cut_power_after(units)
        try:
            Settings(trial, SETTINGS_SECTORS).set_strength(new)
        except PowerLoss:
            rebooted = Flash.from_image(trial.snapshot())
            seen[units] = Settings(rebooted, SETTINGS_SECTORS).strength
            assert seen[units] in (old, new), f"cut after {units} units"
            again = Settings(rebooted, SETTINGS_SECTORS)  # the band goes on: a later write lands and reads back
            again.set_strength(77)
            assert Settings(Flash.from_image(rebooted.snapshot()), SETTINGS_SECTORS).strength == 77
            units += 1
            continue
        assert Settings(Flash.from_image(trial.snapshot()), SETTINGS_SECTORS).strength == new
        return units, seen


def test_power_cut_at_every_byte_of_a_settings_write_keeps_old_or_new():
    flash = Flash(FLASH_SIZE)
    Settings(flash, SETTINGS_SECTORS).set_strength(50)
    units, seen = settings_cut_outcomes(flash, 50, 90)
    assert units == SETTINGS_RECORD_SIZE  # one record, byte by byte
    assert set(seen.values()) == {50}  # a record is new only once its CRC is written
    print(f"settings write: {units} work units, every cut kept the old value")


def test_power_cut_at_every_unit_of_a_settings_write_that_erases_keeps_old_or_new():
    flash = Flash(FLASH_SIZE)
    stored = Settings(flash, SETTINGS_SECTORS)
    for i in range(len(SETTINGS_SECTORS) * SECTOR_SIZE // SETTINGS_RECORD_SIZE):  # fill both sectors: the next write erases the older
        stored.set_strength(20 + i % 80)
    old = stored.strength
    units, seen = settings_cut_outcomes(flash, old, 99)
    assert units == PAGES_PER_SECTOR + SETTINGS_RECORD_SIZE
    assert set(seen.values()) == {old}
    print(f"settings write with erase: {units} work units, every cut kept the old value")


# --------------------------------------------------------------------------
# History: what a session records


def test_sessions_are_recorded_with_outcome_pauses_skips_and_progress():
    data = compile_routine(load_routine("nausea-pc6"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    played(band, clock)
    clock.set(clock.now_ms() + 1_000)
    second_start = clock.now_ms()
    band.start()
    clock.advance(10_000)
    band.pause()
    clock.advance(5_000)
    band.resume()
    band.skip(SkipScope.ITERATION)
    clock.advance(2_000)
    band.stop()
    first, second = Storage(band.storage.flash).history.sessions()
    total = read_table(data).total_ms
    assert (first.outcome, first.clock, first.start, first.played_ms, first.paused_ms, first.pauses, first.skips) == (
        Outcome.FINISHED, ClockKind.UPTIME_MS, 0, total, 0, 0, 0)
    table = read_table(data)
    walked = [it for it in iterations(build_tree(table.records), table.hands) if it.is_step]
    assert (first.routine_name, first.routine_crc32) == (table.name.encode()[:22].decode(errors="ignore"), band.storage.active.crc)
    assert (first.iterations, first.steps) == (len(walked), sum(it.index == it.item.count - 1 for it in walked))
    assert (second.outcome, second.pauses, second.skips, second.paused_ms, second.iterations) == (Outcome.STOPPED, 1, 1, 5_000, 1)
    assert second.start == second_start and second.seq == first.seq + 1 and second.played_ms == 10_000 + 2_000 + 0


def test_starting_again_records_the_session_under_way_as_restarted():
    data = compile_routine(load_routine("desk-break"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    band.start()
    clock.advance(3_000)
    band.start()
    [session] = band.storage.history.sessions()
    assert (session.outcome, session.played_ms) == (Outcome.RESTARTED, 3_000)


def test_once_the_companion_set_the_clock_records_carry_unix_times():
    data = compile_routine(load_routine("desk-break"))
    clock = VirtualClock()
    band = Band(storage_with(data), clock)
    handler = ProtocolHandler(band)
    clock.set(5_000)
    answer = decode_message(handler.handle("link", encode_request(SetTimeRequest(unix_ms=1_764_655_200_000), 1)))
    assert answer.status == Status.OK
    clock.advance(2_000)
    band.start()
    clock.advance(1_000)
    band.stop()
    [session] = band.storage.history.sessions()
    assert (session.clock, session.start) == (ClockKind.UNIX_MS, 1_764_655_200_000 + 2_000)


def test_a_clock_set_again_mid_session_does_not_move_its_start_and_one_set_late_still_dates_it():
    clock = VirtualClock()
    band = Band(storage_with(compile_routine(load_routine("desk-break"))), clock)
    band.set_wall_clock(1_764_655_200_000)
    band.start()  # starts at Unix 1_764_655_200_000
    clock.advance(10_000)
    band.set_wall_clock(1_764_655_200_000 + 10_000 + 3_000)  # another companion's clock runs 3 s ahead
    band.stop()
    fresh = Band(storage_with(compile_routine(load_routine("desk-break"))), VirtualClock())
    fresh.clock.set(4_000)
    fresh.start()  # the clock is not set yet: band time 4 s
    fresh.clock.advance(1_000)
    fresh.set_wall_clock(1_764_655_200_000)  # set 1 s into the session
    fresh.stop()
    [kept] = band.storage.history.sessions()
    [late] = fresh.storage.history.sessions()
    assert (kept.clock, kept.start) == (ClockKind.UNIX_MS, 1_764_655_200_000)
    assert (late.clock, late.start) == (ClockKind.UNIX_MS, 1_764_655_200_000 - 1_000)


# --------------------------------------------------------------------------
# History: power cuts, soak, random images


def a_session(i: int) -> Session:
    return Session(ClockKind.UPTIME_MS, Outcome.FINISHED, 1_000 * i, 60_000 + i, i, 0xC0FFEE00 + i, i % 7, i % 5, i % 9, i % 11, f"routine ✓ {i}",
                   acks_given=i % 13, acks_missed=i % 3)


def history_cut(history_records: int) -> tuple[int, list[int]]:
    flash = Flash(FLASH_SIZE)
    history = History(flash, HISTORY_SECTORS)
    for i in range(history_records):
        history.record(a_session(i))
    image, before = flash.snapshot(), [s.seq for s in history.sessions()]
    units = 0
    while True:
        trial = Flash.from_image(image)
        trial.cut_power_after(units)
        try:
            History(trial, HISTORY_SECTORS).record(a_session(history_records))
        except PowerLoss:
            rebooted = History(Flash.from_image(trial.snapshot()), HISTORY_SECTORS)
            kept = [s.seq for s in rebooted.sessions()]
            assert before and kept[-1] == before[-1], f"cut after {units} units lost the newest record"
            assert set(kept) <= set(before) and len(kept) >= min(100, len(before))
            rebooted.record(a_session(999))  # and the log goes on
            assert History(rebooted._ring.flash, HISTORY_SECTORS).sessions()[-1].routine_name == "routine ✓ 999"
            units += 1
            continue
        after = History(Flash.from_image(trial.snapshot()), HISTORY_SECTORS).sessions()
        assert after[-1].routine_name == f"routine ✓ {history_records}"
        return units, kept if units else []


def test_power_cut_at_every_byte_of_a_history_record_keeps_the_newest_complete_one():
    units, _ = history_cut(5)
    assert units == HISTORY_RECORD_SIZE


def test_power_cut_at_every_unit_of_a_history_write_that_erases_the_oldest_sector():
    per_sector = SECTOR_SIZE // HISTORY_RECORD_SIZE
    units, _ = history_cut(per_sector * len(HISTORY_SECTORS))  # the ring is full: the next record erases the oldest sector
    assert units == PAGES_PER_SECTOR + HISTORY_RECORD_SIZE


def test_soak_past_capacity_keeps_the_newest_sessions_in_order():
    flash = Flash(FLASH_SIZE)
    history = History(flash, HISTORY_SECTORS)
    total = history.capacity * 3 + 17
    for i in range(total):
        history.record(a_session(i))
        if i % 97 == 0:
            history = History(flash, HISTORY_SECTORS)  # reboots along the way
    kept = History(flash, HISTORY_SECTORS).sessions()
    names = [s.routine_name for s in kept]
    assert len(kept) >= 100 and names == [f"routine ✓ {i}" for i in range(total - len(kept), total)]
    assert kept[-1] == a_session(total - 1).__class__(**{**a_session(total - 1).__dict__, "seq": total - 1})
    print(f"history: {total} sessions written, {len(kept)} kept (ring of {history.capacity})")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**32 - 1), fill=st.sampled_from(["random", "records", "erased"]))
def test_mount_of_random_images_never_crashes(seed, fill):
    rng = random.Random(seed)
    image = bytearray([ERASED]) * FLASH_SIZE
    region = slice(SETTINGS_SECTORS.start * SECTOR_SIZE, HISTORY_SECTORS.stop * SECTOR_SIZE)
    if fill == "random":
        image[region] = rng.randbytes(region.stop - region.start)
    else:
        flash = Flash(FLASH_SIZE)
        history, stored = History(flash, HISTORY_SECTORS), Settings(flash, SETTINGS_SECTORS)
        for i in range(rng.randrange(0, 300)):
            history.record(a_session(i))
            stored.set_strength(20 + i % 81)
        image = bytearray(flash.snapshot())
        for _ in range(rng.randrange(0, 40) if fill == "records" else 0):
            image[rng.randrange(region.start, region.stop)] ^= 1 << rng.randrange(8)
    flash = Flash.from_image(bytes(image))
    storage = Storage(flash)
    assert 20 <= storage.settings.strength <= 100
    sessions = storage.history.sessions()
    assert [s.seq for s in sessions] == sorted(s.seq for s in sessions)
    storage.settings.set_strength(42)  # and both logs can be written on
    storage.history.record(a_session(1))
    again = Storage(Flash.from_image(flash.snapshot()))
    assert again.settings.strength == 42 and again.history.sessions()[-1].routine_name == "routine ✓ 1"
