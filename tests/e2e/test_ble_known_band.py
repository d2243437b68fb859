"""A band used before: its GATT handles come from the cache once its Database Hash proves them
current, a changed database is noticed and discovered again, the first requests do not wait for
the subscription, and every command sets the band's clock.  In process, through bleak's public
API on the bumble backend; the clock also over a real pty."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest
from bumble.gatt import Characteristic, Service

from companion import compile_routine, load_routine
from companion.ble.bumble_backend import BumbleCentral
from companion.ble.gatt_cache import CachedDatabase, GattCacheFile, MemoryGattCache
from companion.client import BandClient
from companion.phases import Phases
from firmware_sim.history import ClockKind, Outcome
from firmware_sim.local import LocalBleBand
from protocol.constants import BandState, BleUuid

from .test_serial_e2e import Sim

TIMEOUT = 30
ADDRESS = "ble:HandCue-1A2B"
DFU_SERVICE = "8E400001-F315-4F60-9FB8-838830DAEA50"
"""A service a newer firmware might add before the band's own (its handles then move)."""


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def names(phases: Phases) -> list[str]:
    return [phase.name for phase in phases.recorded]


async def status_over(central: BumbleCentral) -> tuple[list[str], BandState]:
    client = BandClient.open(ADDRESS, ble=central.backend)
    client.transport.phases = phases = Phases()
    async with client:
        state = (await client.status()).state
    return names(phases), state


def rx_handle(entry: CachedDatabase) -> int:
    rx = bytes(reversed(bytes.fromhex(BleUuid.RX.replace("-", "")))).hex()
    return next(c.handle for s in entry.services for c in s.characteristics if c.uuid == rx)


def test_cached_handles_replace_discovery_and_a_changed_database_is_discovered_again():
    cache = MemoryGattCache()

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=cache) as central:
            first = await status_over(central)
            stored = dict(cache.entries)
            second = await status_over(central)
        updated = LocalBleBand()  # the same band (same address) after a firmware update that added a service
        updated.ble.extra_services = [Service(DFU_SERVICE, [Characteristic(DFU_SERVICE.replace("0001", "0002", 1), Characteristic.Properties.WRITE,
                                                                            Characteristic.WRITEABLE, b"")])]
        async with updated, BumbleCentral(link=updated.link, gatt_cache=cache) as central:
            third = await status_over(central)
            fourth = await status_over(central)
        return first, stored, second, third, dict(cache.entries), fourth

    first, stored, second, third, restored, fourth = run(job())
    assert "service discovery" in first[0] and "read Database Hash for the GATT cache" in first[0]
    [(address, entry)] = stored.items()
    assert [s.uuid for s in entry.services] == [bytes(reversed(bytes.fromhex(BleUuid.SERVICE.replace("-", "")))).hex()]  # only what was asked for
    assert "check cached GATT handles (Database Hash)" in second[0] and "service discovery" not in second[0]
    assert second[1] == BandState.IDLE  # the band answered through the cached handles
    assert "check cached GATT handles (Database Hash)" in third[0] and "service discovery" in third[0]  # the hash differed
    assert third[1] == BandState.IDLE
    assert restored[address].database_hash != entry.database_hash
    assert rx_handle(restored[address]) > rx_handle(entry)  # the new handles replaced the stale ones
    assert "service discovery" not in fourth[0] and fourth[1] == BandState.IDLE


def test_gatt_cache_file_keeps_entries_and_shrugs_off_a_damaged_file(tmp_path):
    cache = MemoryGattCache()

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=cache) as central:
            await status_over(central)

    run(job())
    [(address, entry)] = cache.entries.items()
    on_disk = GattCacheFile(tmp_path / "gatt.json")
    on_disk.put(address, entry)
    assert GattCacheFile(tmp_path / "gatt.json").get(address) == entry
    on_disk.forget(address)
    assert on_disk.get(address) is None
    (tmp_path / "gatt.json").write_text("{not json")
    assert on_disk.get(address) is None  # a damaged cache is a cold one
    on_disk.put(address, entry)
    assert on_disk.get(address) == entry


def test_first_requests_go_out_before_the_subscription_is_answered():
    """INFO, SET_TIME and STATUS are written before the companion hears the CCCD write's answer;
    the band holds its answers until the subscription arrives, and every one of them comes."""

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            client = BandClient.open(ADDRESS, ble=central.backend)
            phases = client.transport.phases = Phases()
            async with client:
                status = await client.status()
                info = await client.hello_info()
            subscribed = next(p for p in phases.recorded if p.name == "subscribe to TX")
            status_phase = next(p for p in phases.recorded if p.name == "STATUS")
            return status, info, subscribed, status_phase

    status, info, subscribed, status_phase = run(job())
    assert status.state == BandState.IDLE and info is not None and info.band_id == 0x1A2B
    assert status_phase.start < subscribed.end  # STATUS was sent while the subscription was still unanswered


def test_every_command_sets_the_band_clock_over_ble():
    table = compile_routine(load_routine("nausea-pc6"))

    async def job():
        async with LocalBleBand(table) as band, BumbleCentral(link=band.link) as central:
            before = time.time_ns() // 1_000_000
            async with BandClient.open(ADDRESS, ble=central.backend) as client:
                await client.start()
                await client.stop()
            return before, band.band.storage.history.sessions()

    before, sessions = run(job())
    [session] = sessions
    assert session.outcome == Outcome.STOPPED
    assert session.clock == ClockKind.UNIX_MS  # the companion set the clock when it connected
    assert before - 1000 <= session.start <= time.time_ns() // 1_000_000 + 1000


def test_every_command_sets_the_band_clock_over_serial(tmp_path):
    from firmware_sim.flash import Flash
    from firmware_sim.storage import FLASH_SIZE, Storage

    band = Sim(tmp_path)
    table = compile_routine(load_routine("nausea-pc6"))

    async def job():
        async with BandClient.open(band.address) as client:
            await client.upload(table)
        async with BandClient.open(band.address) as client:  # another command, another connection
            await client.start()
            await client.stop()

    before = time.time_ns() // 1_000_000
    try:
        run(job())
    finally:
        assert band.stop() == 0
    [session] = Storage(Flash(FLASH_SIZE, band.flash)).history.sessions()
    assert session.clock == ClockKind.UNIX_MS
    assert before - 1000 <= session.start <= time.time_ns() // 1_000_000 + 1000


def test_band_holds_its_answers_until_the_central_subscribes():
    """A request written before TX notifications are enabled is answered once they are (not dropped)."""
    from bleak import BleakClient, BleakScanner

    from protocol.framing import FrameParser, encode_frame
    from protocol.messages import InfoRequest, InfoResponse, decode_message, encode_request

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link) as central:
            device = await BleakScanner.find_device_by_name(band.name, timeout=5, backend=central.scanner_backend)
            received = asyncio.Queue()
            async with BleakClient(device, services=[BleUuid.SERVICE], backend=central.client_backend) as client:
                await client.write_gatt_char(BleUuid.RX, encode_frame(encode_request(InfoRequest(), 7)), response=False)
                await asyncio.sleep(0.2)  # the band has long answered; nobody listens yet
                assert received.empty()
                await client.start_notify(BleUuid.TX, lambda _c, data: received.put_nowait(bytes(data)))
                parser = FrameParser(1024)
                while True:
                    for payload in parser.feed(await asyncio.wait_for(received.get(), 5)):
                        return decode_message(payload)

    message = run(job())
    assert message.request_id == 7 and isinstance(message.body, InfoResponse)


def test_the_cli_keeps_the_gatt_cache_in_the_user_cache_folder(tmp_path):
    """`handcue status` twice against handcue-sim over HCI: the first run discovers and writes
    $XDG_CACHE_HOME/handcue/gatt.json, the second takes the handles from it (after the hash check)."""
    import json
    import os
    import subprocess
    import sys

    from ble_stack.addresses import free_tcp_port

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(root)}
    port = free_tcp_port()
    sim = subprocess.Popen([sys.executable, "-m", "firmware_sim", "--hci-server", f"tcp-server:127.0.0.1:{port}"], stdout=subprocess.PIPE, cwd=root)
    try:
        assert sim.stdout is not None and sim.stdout.readline().startswith(b"ble:")

        def status() -> str:
            done = subprocess.run([sys.executable, "-c", "from companion.cli import main; main()", "-v", "status", "--to", ADDRESS,
                                   "--hci", f"tcp-client:127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=root)
            assert done.returncode == 0 and done.stdout == "idle\n", done.stderr
            return done.stderr

        first = status()
        cache = json.loads((tmp_path / "cache" / "handcue" / "gatt.json").read_text())
        second = status()
    finally:
        sim.terminate()
        sim.wait(TIMEOUT)
    assert "service discovery" in first and "check cached GATT handles" not in first
    assert len(cache) == 1 and next(iter(cache.values()))["database_hash"]
    assert "check cached GATT handles (Database Hash)" in second and "service discovery" not in second


# ---------------------------------------------------------------- a cache only saves time

def _warm_entry() -> tuple[str, CachedDatabase]:
    """The cache entry a first connection to a LocalBleBand writes (its address is the same every time)."""
    cache = MemoryGattCache()

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=cache) as central:
            await status_over(central)

    run(job())
    [(address, entry)] = cache.entries.items()
    return address, entry


@pytest.mark.parametrize("damage", [
    pytest.param(lambda e: e["services"][0].update(uuid="not a uuid"), id="service-uuid-not-hex"),
    pytest.param(lambda e: e["services"][0].update(uuid="abcdef"), id="service-uuid-6-digits"),
    pytest.param(lambda e: e["services"][0]["characteristics"][0].update(uuid="zz"), id="characteristic-uuid-not-hex"),
    pytest.param(lambda e: e["services"][0]["characteristics"][0].update(handle=0x10000), id="handle-out-of-range"),
    pytest.param(lambda e: e["services"][0]["characteristics"][0].update(handle="12"), id="handle-a-string"),
    pytest.param(lambda e: next(c for c in e["services"][0]["characteristics"] if c["descriptors"]).update(descriptors=[["2902", -1]]),
                 id="descriptor-handle-negative"),
    pytest.param(lambda e: e.update(database_hash="not hex"), id="hash-not-hex"),
])
def test_a_hand_damaged_cache_file_entry_is_discovered_again_and_rewritten(tmp_path, damage):
    address, entry = _warm_entry()
    path = tmp_path / "gatt.json"
    GattCacheFile(path).put(address, entry)
    document = json.loads(path.read_text())
    damage(document[address])
    path.write_text(json.dumps(document))
    assert GattCacheFile(path).get(address) is None  # the damaged entry is not one this version wrote

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=GattCacheFile(path)) as central:
            return await status_over(central), await status_over(central)

    (first, first_state), (second, second_state) = run(job())
    assert first_state == BandState.IDLE and "service discovery" in first  # the connect still works
    assert GattCacheFile(path).get(address) == entry  # and the entry was rewritten
    assert second_state == BandState.IDLE and "service discovery" not in second and "check cached GATT handles (Database Hash)" in second


class RecordingCache(MemoryGattCache):
    """A memory cache that notes the thread of every call, and can fail its lookups."""

    def __init__(self, failing_get: bool = False) -> None:
        super().__init__()
        self.failing_get = failing_get
        self.threads: set[int] = set()

    def get(self, address: str) -> CachedDatabase | None:
        self.threads.add(threading.get_ident())
        if self.failing_get:
            raise RuntimeError("the cache broke")
        return super().get(address)

    def put(self, address: str, database: CachedDatabase) -> None:
        self.threads.add(threading.get_ident())
        super().put(address, database)

    def forget(self, address: str) -> None:
        self.threads.add(threading.get_ident())
        super().forget(address)


def _with_bad_uuid(entry: CachedDatabase, where: str) -> CachedDatabase:
    """The entry with one UUID no parser accepts: in its service (seen before the hash check) or in a
    characteristic (seen only when the handles are restored)."""
    [service] = entry.services
    if where == "service":
        return dataclasses.replace(entry, services=(dataclasses.replace(service, uuid="zz"),))
    first, *rest = service.characteristics
    return dataclasses.replace(entry, services=(dataclasses.replace(service, characteristics=(dataclasses.replace(first, uuid="zz"), *rest)),))


@pytest.mark.parametrize("where", ["service", "characteristic"])
def test_an_entry_the_backend_cannot_use_is_forgotten_and_the_band_discovered(where):
    """Whatever a cache hands back (a GattCache need not be a file), using it never fails the connect."""
    address, entry = _warm_entry()
    cache = RecordingCache()
    cache.entries[address] = _with_bad_uuid(entry, where)

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=cache) as central:
            return threading.get_ident(), await status_over(central)

    loop_thread, (phases, state) = run(job())
    assert state == BandState.IDLE and "service discovery" in phases
    assert cache.entries[address] == entry  # rewritten by the discovery
    assert cache.threads and loop_thread not in cache.threads  # the cache is used off the event loop


def test_a_cache_that_fails_is_a_cold_one():
    cache = RecordingCache(failing_get=True)

    async def job():
        async with LocalBleBand() as band, BumbleCentral(link=band.link, gatt_cache=cache) as central:
            return await status_over(central)

    phases, state = run(job())
    assert state == BandState.IDLE and "service discovery" in phases
    assert len(cache.entries) == 1  # the discovered database was still stored


def test_two_writers_of_one_cache_file_do_not_share_a_temporary_file(tmp_path, monkeypatch):
    """Two companions writing at once (here two threads, both with their temporary file written before
    either renames it): each rename moves that writer's own file, the result is one writer's whole
    document, and no temporary file is left behind."""
    import os

    address, entry = _warm_entry()
    both_written = threading.Barrier(2, timeout=TIMEOUT)
    real_replace = os.replace
    renamed: list[str] = []
    failed: list[OSError] = []

    def replace_together(source, target):
        both_written.wait()
        try:
            real_replace(source, target)
        except OSError as error:
            failed.append(error)
            raise
        renamed.append(os.fspath(source))

    monkeypatch.setattr(os, "replace", replace_together)
    path = tmp_path / "gatt.json"
    writers = [threading.Thread(target=GattCacheFile(path).put, args=(name, entry)) for name in ("AA:AA:AA:AA:AA:AA/P", address)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(TIMEOUT)
    monkeypatch.undo()
    assert not both_written.broken and not failed
    assert len(set(renamed)) == 2 and all(Path(source).parent == tmp_path for source in renamed)
    assert list(tmp_path.iterdir()) == [path]
    [(written, _)] = json.loads(path.read_text()).items()  # a whole document: one writer's entry
    assert GattCacheFile(path).get(written) == entry
