"""GATT robust caching from the companion's side (Core 5.1 Vol 3 Part G 2.5.2.1, SPEC 21.6; companion/ble/robust_caching.py).

A companion with a bond and a cache entry marked ``robust`` uses the cached handles without reading
the Database Hash: the CCCD write and the first frames go out in the first connection event after
encryption, answered in the next.  After a firmware update moved the handles, the band refuses the
first request with 0x12 and ignores the write commands; the companion discovers again and sends
everything again on the new handles, and nothing lands on a wrong attribute.  A companion without a
bond keeps proving its handles with the hash read.

In process, through bleak's public API on the bumble backend, on the paced link in virtual time (so
event numbers are exact); what crosses the link is observed at the ATT level on both controllers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bumble import att
from bumble.gatt import GATT_DATABASE_HASH_CHARACTERISTIC, Characteristic, Service
from bumble.keys import MemoryKeyStore

from ble_stack.paced_link import LinkTiming, PacedLink
from companion.ble.bumble_backend import BumbleCentral
from companion.ble.gatt_cache import CachedDatabase, GattCacheFile, MemoryGattCache
from companion.ble.pairing import pair_band
from companion.client import BandClient
from firmware_sim.local import LocalBleBand
from protocol.constants import BandState, BleUuid
from protocol.framing import FrameParser
from protocol.messages import decode_message

from .address_book import Book
from .test_ble_known_band import DFU_SERVICE
from .test_paced_link import run_virtual

ADDRESS = "ble:HandCue-1A2B"
CENTRAL_ADDRESS = "D1:C2:B3:A4:95:86"
HASH_UUID = GATT_DATABASE_HASH_CHARACTERISTIC.to_bytes()
CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"
CSF_UUID = "00002b29-0000-1000-8000-00805f9b34fb"


@pytest.fixture(autouse=True)
def cache_calls_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GATT cache's worker thread would let virtual time run away: run its calls inline."""

    async def inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", inline)


@dataclasses.dataclass(frozen=True)
class Pdu:
    """One ATT PDU as a controller received it."""

    at: float
    to_band: bool
    pdu: att.ATT_PDU


class AttObserver:
    """Every ATT PDU each controller on the link receives, with the loop time it arrived (= the trace's delivered_at)."""

    def __init__(self, link: PacedLink) -> None:
        self.link = link
        self.pdus: list[Pdu] = []
        self.trace_start = len(link.trace or [])
        for controller in link.controllers:
            to_band = controller.name != "bleak-central"
            original = controller.on_link_acl_data

            def on_link_acl_data(sender: Any, transport: Any, data: bytes, original: Any = original, to_band: bool = to_band) -> None:
                if len(data) > 4 and int.from_bytes(data[2:4], "little") == 0x0004:  # L2CAP header, ATT channel
                    self.pdus.append(Pdu(asyncio.get_running_loop().time(), to_band, att.ATT_PDU.from_bytes(data[4:])))
                original(sender, transport, data)

            controller.on_link_acl_data = on_link_acl_data  # type: ignore[method-assign]

    def event_of(self, pdu: Pdu) -> int:
        """The connection event (of the observed connection) that carried ``pdu``'s last packet."""
        [packet] = [p for p in (self.link.trace or [])[self.trace_start:] if p.delivered_at == pdu.at and p.last_fragment and not p.lost]
        return packet.event

    def hash_reads(self) -> list[Pdu]:
        return [p for p in self.pdus if p.to_band and isinstance(p.pdu, att.ATT_Read_By_Type_Request)
                and p.pdu.attribute_type.to_bytes() == HASH_UUID]

    def requests(self) -> list[Pdu]:
        return [p for p in self.pdus if p.to_band and p.pdu.op_code in att.ATT_REQUESTS and p.pdu.op_code != att.Opcode.ATT_EXCHANGE_MTU_REQUEST]


def watch_band_writes(local: LocalBleBand) -> list[tuple[str, bytes]]:
    """Every value the band's GATT server accepted a write of (attribute type as bleak spells it, bytes): what the
    band's application saw, after anything the band ignored."""
    from companion.ble.bumble_backend import _uuid_str

    assert local.ble.peripheral is not None
    writes: list[tuple[str, bytes]] = []
    for attribute in local.ble.peripheral.device.gatt_server.attributes:
        original = attribute.write_value

        async def write_value(bearer: Any, value: bytes, original: Any = original, kind: str = _uuid_str(attribute.type)) -> None:
            writes.append((kind, bytes(value)))
            await original(bearer, value)

        attribute.write_value = write_value  # type: ignore[method-assign]
    return writes


async def status(central: BumbleCentral, book: Book, needs_trust: bool = True) -> tuple[BandState, bool]:
    """A status session through the central (``handcue status`` opens it with ``needs_trust=False``: a bonded link
    then stays unencrypted); the state and whether the GATT handles came from the cache."""
    client = BandClient.open(ADDRESS, ble=central.backend, needs_trust=needs_trust)
    client.transport.address_book = book  # type: ignore[attr-defined]
    async with client:
        state = (await client.status()).state
        used_cache = client.transport._client._backend.used_gatt_cache  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    return state, used_cache


def only_entry(cache: MemoryGattCache) -> CachedDatabase:
    [entry] = cache.entries.values()
    return entry


def timing() -> LinkTiming:
    return LinkTiming(interval_ms=15.0, packets_per_event=6, phy="2M")


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("needs_trust", [False, True], ids=["status-unencrypted", "trusted-session-encrypted"])
def test_a_paired_known_band_with_a_robust_entry_is_asked_no_database_hash(needs_trust: bool):
    """After pairing the cache entry is robust; `status` then sends no Database Hash read: the CCCD write
    and INFO, SET_TIME, STATUS go in the connection's first event (after encryption, for a session that
    needs trust), answered in the next."""
    link = PacedLink(timing(), trace=True)
    cache = MemoryGattCache()
    book = Book()

    async def job() -> tuple[AttObserver, CachedDatabase, BandState, bool]:
        async with LocalBleBand(link=link, pairing_window=60) as local, BumbleCentral(link=link, gatt_cache=cache) as central:
            await pair_band(local.name, central.backend)
            paired_entry = only_entry(cache)
            await status(central, book, needs_trust)  # finds the band by a scan and remembers its address
            observer = AttObserver(link)
            state, used_cache = await status(central, book, needs_trust)
            return observer, paired_entry, state, used_cache

    observer, paired_entry, state, used_cache = run_virtual(job)
    assert paired_entry.robust  # pairing told the band, on the encrypted link, that we do robust caching
    assert state == BandState.IDLE and used_cache
    assert observer.hash_reads() == []  # nothing proved the handles: the band's answers did
    first = observer.requests()[0]
    assert isinstance(first.pdu, att.ATT_Write_Request)  # the CCCD write is the first request
    frames = [p for p in observer.pdus if p.to_band and isinstance(p.pdu, att.ATT_Write_Command)]
    assert len(frames) >= 4  # the lone delimiter, INFO, SET_TIME, STATUS
    sent = observer.event_of(first)
    if not needs_trust:
        assert sent == 0  # no encryption first: the connection's first event
    assert {observer.event_of(p) for p in frames} == {sent}  # all in the CCCD write's event
    answers = [p for p in observer.pdus if not p.to_band and isinstance(p.pdu, (att.ATT_Write_Response, att.ATT_Handle_Value_Notification))]
    assert observer.event_of(answers[0]) == sent + 1  # the CCCD write's answer and the first notifications: the next event
    assert observer.event_of(next(p for p in answers if isinstance(p.pdu, att.ATT_Handle_Value_Notification))) == sent + 1


def test_an_unbonded_known_band_still_reads_the_database_hash():
    """Without a bond the band cannot protect us: even an entry marked robust is proven by the hash first."""
    link = PacedLink(timing(), trace=True)
    cache = MemoryGattCache()
    book = Book()

    async def job() -> tuple[AttObserver, BandState]:
        async with LocalBleBand(link=link), BumbleCentral(link=link, gatt_cache=cache) as central:
            await status(central, book)
            [(address, entry)] = cache.entries.items()
            assert not entry.robust  # no bond, no encrypted link: never marked
            cache.entries[address] = dataclasses.replace(entry, robust=True)  # as if a bond had been lost on our side
            observer = AttObserver(link)
            state, _ = await status(central, book)
            return observer, state

    observer, state = run_virtual(job)
    assert state == BandState.IDLE
    [hash_read] = observer.hash_reads()
    assert observer.requests()[0] == hash_read


def test_a_band_that_lost_our_bond_is_proven_by_its_hash():
    """Our key store still has the bond, the band forgot it (encryption fails): it cannot protect us, so the
    robust entry is proven by the hash read."""
    link = PacedLink(timing(), trace=True)
    cache = MemoryGattCache()
    book = Book()

    async def job() -> tuple[AttObserver, BandState]:
        async with LocalBleBand(link=link, pairing_window=60) as local, BumbleCentral(link=link, gatt_cache=cache) as central:
            await pair_band(local.name, central.backend)
            assert only_entry(cache).robust
            await status(central, book)
            for name in list(local.security.bonded_peers):
                await local.security.keystore.delete(name)
            observer = AttObserver(link)
            state, _ = await status(central, book)
            return observer, state

    observer, state = run_virtual(job)
    assert state == BandState.IDLE
    assert len(observer.hash_reads()) == 1


class Scene:
    """A paced link, the companion's GATT cache, key store and address book, and the band's bond storage: what
    survives from one band session (and one central) to the next, as across a firmware update."""

    def __init__(self, tmp_path: Path) -> None:
        self.link = PacedLink(timing(), trace=True)
        self.cache = MemoryGattCache()
        self.keystore = MemoryKeyStore()
        self.book = Book()
        self.bonds = tmp_path / "bonds.json"

    def central(self) -> BumbleCentral:
        """A new companion host with the same address, key store and cache."""
        return BumbleCentral(link=self.link, gatt_cache=self.cache, keystore=self.keystore, address=CENTRAL_ADDRESS)


def updated_band(link: PacedLink, bonds: Path) -> LocalBleBand:
    """The band after a firmware update: a DFU service (writable with and without response) before its own,
    so every handle moves, and the same bond storage."""
    updated = LocalBleBand(link=link, bonds_path=bonds)
    updated.ble.extra_services = [Service(DFU_SERVICE, [Characteristic(DFU_SERVICE.replace("0001", "0002", 1), Characteristic.Properties.WRITE
                                                                       | Characteristic.Properties.WRITE_WITHOUT_RESPONSE, Characteristic.WRITEABLE, b"")])]
    return updated


@pytest.mark.parametrize("needs_trust", [False, True], ids=["status-unencrypted", "trusted-session-encrypted"])
def test_after_a_firmware_update_status_still_works_and_nothing_is_misdirected(tmp_path: Path, needs_trust: bool):
    """The band restarts with a service before its own (every handle moves), same bonds.  The companion's
    first request gets 0x12, its write commands are ignored; it discovers again, sends everything again on
    the new handles, stores the new hash and makes the entry robust again (on an unencrypted link it encrypts
    it first: the band persists awareness only from a trusted link): the next status reads no hash."""
    scene = Scene(tmp_path)
    link, cache, book, bonds, central = scene.link, scene.cache, scene.book, scene.bonds, scene.central

    async def job() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with LocalBleBand(link=link, pairing_window=60, bonds_path=bonds) as local, central() as companion:
            await pair_band(local.name, companion.backend)
            await status(companion, book, needs_trust)
            out["before"] = only_entry(cache)
        updated = updated_band(link, bonds)
        async with updated, central() as companion:
            await companion.stack()  # its controller is on the link before the observer looks
            writes = watch_band_writes(updated)
            observer = AttObserver(link)
            out["state"], out["used_cache"] = await status(companion, book, needs_trust)
            out["writes"], out["observer"] = list(writes), observer
            assert updated.ble.peripheral is not None
            out["ignored"] = updated.ble.peripheral.caching.ignored_commands
            out["after"] = only_entry(cache)
            device = updated.ble.peripheral.device if updated.ble.peripheral is not None else None
            assert device is not None and device.gatt_service is not None
            out["band_hash"] = device.gatt_service.get_database_hash(SimpleNamespace(device=device))  # type: ignore[arg-type]
            again = AttObserver(link)
            out["next_state"], _ = await status(companion, book, needs_trust)
            out["again"] = again
        return out

    out = run_virtual(job)
    before, after, observer = out["before"], out["after"], out["observer"]
    assert before.robust
    assert out["state"] == BandState.IDLE  # the caller saw its calls succeed
    refused = [p for p in observer.pdus if not p.to_band and isinstance(p.pdu, att.ATT_Error_Response)
               and p.pdu.error_code == att.ErrorCode.DATABASE_OUT_OF_SYNC]
    assert len(refused) == 1 and refused[0].pdu.request_opcode_in_error == att.Opcode.ATT_WRITE_REQUEST  # the CCCD write, once
    assert out["ignored"] >= 4  # the delimiter, INFO, SET_TIME and STATUS on the old handles: ignored, not misdirected
    assert observer.hash_reads()  # the new hash was read (after the 0x12: it made us change-aware) for the new entry
    # Nothing the band accepted went anywhere but RX, TX's CCCD and Client Supported Features ...
    assert {kind for kind, _ in out["writes"]} <= {BleUuid.RX.lower(), CCCD_UUID, CSF_UUID}
    assert all(kind != BleUuid.PAIRING.lower() for kind, _ in out["writes"])
    # ... and RX received only well-formed frames: every byte parses, every frame is a request
    parser = FrameParser()
    frames = [frame for kind, value in out["writes"] if kind == BleUuid.RX.lower() for frame in parser.feed(value)]
    assert parser.stats.dropped == 0 and len(frames) >= 3
    assert all(decode_message(frame) is not None for frame in frames)
    # The cache holds the new database and is robust again; the next status needs no hash read.
    assert after.database_hash != before.database_hash and after.robust
    assert after.database_hash == out["band_hash"]
    assert out["next_state"] == BandState.IDLE and out["again"].hash_reads() == []
    assert not [p for p in out["again"].pdus if isinstance(p.pdu, att.ATT_Error_Response)
                and p.pdu.error_code == att.ErrorCode.DATABASE_OUT_OF_SYNC]


def test_the_bond_and_the_cache_entry_are_looked_up_while_the_link_comes_up():
    """So the first PDU can leave in the connection's first event: both lookups start before the link is up."""
    link = PacedLink(timing(), trace=True)
    book = Book()
    seen: list[tuple[str, int]] = []
    holder: dict[str, BumbleCentral] = {}

    def connections() -> int:
        stack = holder["central"]._stack
        return len(stack.device.connections) if stack is not None else 0

    class Cache(MemoryGattCache):
        def get(self, address: str) -> CachedDatabase | None:
            seen.append(("cache", connections()))
            return super().get(address)

    class Keys(MemoryKeyStore):
        async def get(self, name: str) -> Any:
            seen.append(("keys", connections()))
            return await super().get(name)

    async def job() -> None:
        async with LocalBleBand(link=link), BumbleCentral(link=link, gatt_cache=Cache(), keystore=Keys()) as central:
            holder["central"] = central
            await status(central, book)
            seen.clear()
            await status(central, book)

    run_virtual(job)
    assert ("cache", 0) in seen and ("keys", 0) in seen  # looked up before the connection existed


def test_an_old_cache_file_without_robust_loads(tmp_path: Path):
    """Entries written before robust caching have no ``robust``: they load, as not robust; the field round-trips."""
    entry = CachedDatabase(bytes(range(16)), (), complete=True)
    document = entry.to_json()
    assert document.pop("robust") is False
    path = tmp_path / "gatt.json"
    path.write_text(json.dumps({"C3:00:00:00:1A:2B": document}))
    loaded = GattCacheFile(path).get("C3:00:00:00:1A:2B")
    assert loaded == entry and loaded is not None and loaded.robust is False
    GattCacheFile(path).put("C3:00:00:00:1A:2B", dataclasses.replace(entry, robust=True))
    assert GattCacheFile(path).get("C3:00:00:00:1A:2B") == dataclasses.replace(entry, robust=True)
    document["robust"] = "yes"
    assert CachedDatabase.from_json(document) is None  # not one this version wrote


def test_a_paired_known_band_is_connected_without_a_scan_for_its_address():
    """A bonded peer's address is resolved by the controller (its resolving list), as an operating system's
    stack has it: the host does not scan for the band before connecting to its remembered static address
    (bumble's host-side resolution did, costing one advertising interval per connection)."""
    link = PacedLink(timing(), trace=True)
    cache = MemoryGattCache()
    book = Book()

    async def job() -> tuple[list[str], BandState]:
        async with LocalBleBand(link=link, pairing_window=60) as local, BumbleCentral(link=link, gatt_cache=cache) as central:
            await pair_band(local.name, central.backend)
            await status(central, book)  # finds the band by a scan and remembers its address
            assert book.known is not None
            device = central._stack.device  # type: ignore[union-attr]
            scans: list[str] = []
            original = device.start_scanning

            async def start_scanning(*args: Any, **kwargs: Any) -> None:
                scans.append("scan")
                await original(*args, **kwargs)

            device.start_scanning = start_scanning
            state, _ = await status(central, book, needs_trust=False)
            return scans, state

    scans, state = run_virtual(job)
    assert state == BandState.IDLE
    assert scans == []


@pytest.mark.parametrize("lost", ["bonds", "records"])
@pytest.mark.parametrize("needs_trust", [False, True], ids=["status-unencrypted", "trusted-session-encrypted"])
def test_a_band_that_lost_its_bonds_or_records_before_a_firmware_update_still_holds_the_stale_companion_off(
        tmp_path: Path, lost: str, needs_trust: bool):
    """The companion keeps its bond and robust entry; the band lost its bonds (a long press) or its robust caching
    records (a damaged file), then got a firmware update that moved every handle.  The band's records outlive
    its bonds, and a bonded central without a record starts change-unaware: the companion's first request gets
    0x12 and its write commands are ignored, so nothing lands on the DFU characteristic now at RX's old handle."""
    scene = Scene(tmp_path)
    link, cache, book, bonds, central = scene.link, scene.cache, scene.book, scene.bonds, scene.central

    async def job() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with LocalBleBand(link=link, pairing_window=60, bonds_path=bonds) as local, central() as companion:
            await pair_band(local.name, companion.backend)
            await status(companion, book, needs_trust)
            if lost == "bonds":
                await local.security.forget_all()
        if lost == "records":
            from firmware_sim.gatt_caching import caching_path_for

            caching_path_for(bonds).write_text("{damaged")
        out["robust"] = only_entry(cache).robust
        updated = updated_band(link, bonds)
        async with updated, central() as companion:
            await companion.stack()
            writes = watch_band_writes(updated)
            observer = AttObserver(link)
            out["state"], _ = await status(companion, book, needs_trust)
            out["writes"], out["observer"] = list(writes), observer
            assert updated.ble.peripheral is not None
            out["ignored"] = updated.ble.peripheral.caching.ignored_commands
        return out

    out = run_virtual(job)
    assert out["robust"] and out["state"] == BandState.IDLE
    assert {kind for kind, _ in out["writes"]} <= {BleUuid.RX.lower(), CCCD_UUID, CSF_UUID}  # never the DFU characteristic
    refused = [p for p in out["observer"].pdus if not p.to_band and isinstance(p.pdu, att.ATT_Error_Response)
               and p.pdu.error_code == att.ErrorCode.DATABASE_OUT_OF_SYNC]
    if lost == "bonds" and needs_trust:
        assert out["observer"].hash_reads()  # encryption failed: the entry is proven by the hash, never trusted
    else:
        assert len(refused) == 1 and out["ignored"] >= 1
