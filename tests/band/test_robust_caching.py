"""GATT robust caching on the band (Core 5.1 Vol 3 Part G 2.5.2.1, SPEC §21.6).

The band runs as in the field (:class:`~firmware_sim.local.LocalBleBand`); the central is a
plain bumble host on the same virtual link that speaks ATT PDU by PDU, so every assertion is
about what the band answers (or ignores), not about what a companion makes of it.  A firmware
update is the same band (address, bond storage) restarted with a service placed first: every
handle of the band's own services moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from bumble import att, hci
from bumble.device import Connection, Device
from bumble.gatt import GATT_DATABASE_HASH_CHARACTERISTIC, Characteristic, Service
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate

from ble_stack.controllers import CentralController
from ble_stack.hosts import attach_host
from firmware_sim.gatt_caching import CachingRecord, CachingStore, caching_path_for
from firmware_sim.local import LocalBleBand

TIMEOUT = 20.0
DFU_SERVICE = "8E400001-F315-4F60-9FB8-838830DAEA50"
"""A service a newer firmware adds before the band's own (their handles move)."""
OUT_OF_SYNC = att.ErrorCode.DATABASE_OUT_OF_SYNC
FRAME_BYTES = b"\x05\x01\x02\x03"
"""Bytes written to RX: not a whole frame (no delimiter), so the handler only buffers them."""


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def new_firmware() -> list[Service]:
    return [Service(DFU_SERVICE, [Characteristic(DFU_SERVICE.replace("0001", "0002", 1), Characteristic.Properties.WRITE,
                                                 Characteristic.WRITEABLE, b"")])]


class Central:
    """A bumble central on ``link`` with its own key store (kept across band restarts)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    @classmethod
    @contextlib.asynccontextmanager
    async def on(cls, link: LocalLink, address: str) -> AsyncIterator[Central]:
        attached = await attach_host(link, name=f"central-{address}", controller_factory=CentralController)
        device = Device(name="central", address=hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS), host=attached.host)
        device.keystore = MemoryKeyStore()
        device.pairing_config_factory = lambda _connection: PairingConfig(
            sc=True, mitm=False, bonding=True, delegate=PairingDelegate(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT))
        await device.power_on()
        try:
            yield cls(device)
        finally:
            for connection in list(device.connections.values()):
                with contextlib.suppress(Exception):
                    await connection.disconnect()
            await device.power_off()
            await attached.detach()

    async def connect(self, band: LocalBleBand) -> Connection:
        return await self.device.connect(hci.Address(band.ble.address, hci.Address.RANDOM_DEVICE_ADDRESS))


@contextlib.asynccontextmanager
async def band_on(link: LocalLink, bonds: Path | None, *, updated: bool = False) -> AsyncIterator[LocalBleBand]:
    """The band on ``link``, its bonds in ``bonds``; ``updated``: after a firmware update that moved its handles."""
    local = LocalBleBand(link=link, bonds_path=bonds, pairing_window=60)
    if updated:
        local.ble.extra_services = new_firmware()
    async with local:
        yield local


def handler_writes(local: LocalBleBand, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every value the band's protocol handler receives from RX, in order."""
    seen: list[bytes] = []
    receive = local.handler.receive

    def recording(name: str, data: bytes) -> None:
        seen.append(bytes(data))
        receive(name, data)

    monkeypatch.setattr(local.handler, "receive", recording)
    return seen


def rx(local: LocalBleBand) -> int:
    assert local.ble.peripheral is not None
    return local.ble.peripheral.rx_char.handle


def features_handle(local: LocalBleBand) -> int:
    assert local.ble.peripheral is not None
    service = local.ble.peripheral.device.gatt_service
    assert service is not None and service.client_supported_features_characteristic is not None
    return service.client_supported_features_characteristic.handle


def current_hash(local: LocalBleBand) -> bytes:
    assert local.ble.peripheral is not None
    return local.ble.peripheral.caching.database_hash


async def request(connection: Connection, pdu: att.ATT_PDU) -> att.ATT_PDU:
    response: att.ATT_PDU = await connection.gatt_client.send_request(pdu)
    return response


async def write_request(connection: Connection, handle: int, value: bytes) -> att.ATT_PDU:
    return await request(connection, att.ATT_Write_Request(attribute_handle=handle, attribute_value=value))


async def write_command(connection: Connection, handle: int, value: bytes) -> None:
    await connection.gatt_client.send_command(att.ATT_Write_Command(attribute_handle=handle, attribute_value=value))


async def read(connection: Connection, handle: int) -> att.ATT_PDU:
    return await request(connection, att.ATT_Read_Request(attribute_handle=handle))


def error_of(response: att.ATT_PDU) -> tuple[int, int, int] | None:
    """(error code, opcode in error, handle in error) of an error response, None for any other answer."""
    if isinstance(response, att.ATT_Error_Response):
        return response.error_code, response.request_opcode_in_error, response.attribute_handle_in_error
    return None


async def settle() -> None:
    """Let the band's host handle what the link carried (a command has no answer to wait for)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def bond_with_robust_caching(local: LocalBleBand, central: Central, *, robust: bool = True) -> None:
    """Pair (a new bond) and, with ``robust``, write Client Supported Features bit 0 on the encrypted link."""
    connection = await central.connect(local)
    await connection.pair()
    assert connection.is_encrypted
    if robust:
        assert error_of(await write_request(connection, features_handle(local), b"\x01")) is None
    await connection.disconnect()


# ---------------------------------------------------------------------------


def test_a_change_unaware_bonded_central_is_held_off_until_its_next_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a firmware update, the first write command of a robust-caching bonded central is ignored,
    its first request is answered 0x12 (with that request's opcode and handle), the next request is
    served, and from then on its commands reach RX."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as old:
                await bond_with_robust_caching(old, central)
                old_rx, old_hash = rx(old), current_hash(old)
            async with band_on(link, bonds, updated=True) as new:
                seen = handler_writes(new, monkeypatch)
                connection = await central.connect(new)  # no encryption yet: the first event carries the writes
                mtu = await request(connection, att.ATT_Exchange_MTU_Request(client_rx_mtu=247))
                await write_command(connection, rx(new), FRAME_BYTES)
                await settle()
                ignored = list(seen)
                refused = error_of(await write_request(connection, rx(new), FRAME_BYTES))
                after_refusal = list(seen)
                features = await read(connection, features_handle(new))
                await write_command(connection, rx(new), b"\x06")
                accepted = error_of(await write_request(connection, rx(new), b"\x07"))
                await settle()
                return old_rx, old_hash, rx(new), current_hash(new), mtu, ignored, refused, after_refusal, features, accepted, seen

    old_rx, old_hash, new_rx, new_hash, mtu, ignored, refused, after_refusal, features, accepted, seen = run(main())
    assert new_rx != old_rx and new_hash != old_hash  # the update moved the handles
    assert isinstance(mtu, att.ATT_Exchange_MTU_Response)  # served, and it does not end change-unawareness
    assert ignored == [] and after_refusal == []  # neither the command nor the refused request reached the handler
    assert refused == (OUT_OF_SYNC, att.Opcode.ATT_WRITE_REQUEST, new_rx)
    assert isinstance(features, att.ATT_Read_Response) and features.attribute_value == b"\x01"  # served: change-aware now
    assert accepted is None
    assert seen == [b"\x06", b"\x07"]


def test_the_database_hash_read_is_served_while_change_unaware_and_the_request_after_it_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change-unaware central (its write command ignored) may read the Database Hash by type:
    that is how a client finds out; the request after it is served."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as old:
                await bond_with_robust_caching(old, central)
            async with band_on(link, bonds, updated=True) as new:
                seen = handler_writes(new, monkeypatch)
                connection = await central.connect(new)
                await write_command(connection, rx(new), FRAME_BYTES)
                hash_read = await request(connection, att.ATT_Read_By_Type_Request(
                    starting_handle=0x0001, ending_handle=0xFFFF, attribute_type=GATT_DATABASE_HASH_CHARACTERISTIC))
                written = error_of(await write_request(connection, rx(new), b"\x06"))
                return hash_read, current_hash(new), written, seen

    hash_read, new_hash, written, seen = run(main())
    assert isinstance(hash_read, att.ATT_Read_By_Type_Response)
    assert hash_read.attribute_data_list[2:] == new_hash  # one (handle, value) pair: the current hash
    assert written is None
    assert seen == [b"\x06"]  # the command sent while change-unaware never reached RX


def test_unbonded_centrals_and_bonds_without_robust_caching_are_never_change_unaware(tmp_path: Path) -> None:
    """Client Supported Features is per client; only the bond that set bit 0 on a trusted link is held off."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with (Central.on(link, "C0:00:00:00:00:01") as robust, Central.on(link, "C0:00:00:00:00:02") as plain,
                    Central.on(link, "C0:00:00:00:00:03") as stranger):
            async with band_on(link, bonds) as old:
                await bond_with_robust_caching(old, robust)
                await bond_with_robust_caching(old, plain, robust=False)
                old_hash = current_hash(old)
                connection = await stranger.connect(old)  # sets bit 0 but never bonds
                assert error_of(await write_request(connection, features_handle(old), b"\x01")) is None
                await connection.disconnect()
            async with band_on(link, bonds, updated=True) as new:
                answers = {}
                for name, central in (("robust", robust), ("plain", plain), ("stranger", stranger)):
                    connection = await central.connect(new)
                    features = await read(connection, features_handle(new))
                    answers[name] = error_of(features) or features.attribute_value  # type: ignore[attr-defined]
                    await connection.disconnect()
                records = {name: new.security.caching.get(str(central.device.random_address))
                           for name, central in (("plain", plain), ("stranger", stranger))}
                return answers, records, old_hash

    answers, records, old_hash = run(main())
    assert answers["plain"] == b"\x00" and answers["stranger"] == b"\x00"  # served, and each reads its own value
    assert answers["robust"][0] == OUT_OF_SYNC
    assert records["stranger"] is None  # no bond, nothing kept
    assert records["plain"] == CachingRecord(robust_caching=False, aware_hash=old_hash)  # kept at pairing (its reconnection was not encrypted)


def test_state_learnt_on_an_unencrypted_link_is_not_persisted(tmp_path: Path) -> None:
    """A link that became change-aware without encryption (anyone may use a bonded central's
    address) does not mark the bond aware: the next connection is held off again.  Once the
    link is encrypted with the bond, the new hash is persisted and the next connection is served."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as old:
                await bond_with_robust_caching(old, central)
            answers = []
            async with band_on(link, bonds, updated=True) as new:
                for encrypt in (False, True, False):
                    connection = await central.connect(new)
                    first = error_of(await read(connection, features_handle(new)))
                    second = error_of(await read(connection, features_handle(new)))
                    if encrypt:
                        await connection.encrypt()
                        await settle()
                    answers.append((first, second))
                    await connection.disconnect()
                record = new.security.caching.get(str(central.device.random_address))
                return answers, record, current_hash(new), features_handle(new)

    answers, record, new_hash, handle = run(main())
    refused = (OUT_OF_SYNC, att.Opcode.ATT_READ_REQUEST, handle)
    assert answers[0] == (refused, None)
    assert answers[1] == (refused, None)  # the first link's awareness was not kept
    assert answers[2] == (None, None)  # the encrypted one's was
    assert record == CachingRecord(robust_caching=True, aware_hash=new_hash)


def test_clearing_robust_caching_is_refused_and_unknown_bits_are_stored_as_zero(tmp_path: Path) -> None:
    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with (Central.on(link, "C0:00:00:00:00:01") as one, Central.on(link, "C0:00:00:00:00:02") as other,
                    band_on(link, tmp_path / "band.bonds.json") as band):
            connection = await one.connect(band)
            set_all = error_of(await write_request(connection, features_handle(band), b"\xff"))
            after_set = await read(connection, features_handle(band))
            cleared = error_of(await write_request(connection, features_handle(band), b"\x00"))
            after_clear = await read(connection, features_handle(band))
            other_connection = await other.connect(band)
            others = await read(other_connection, features_handle(band))
            return set_all, after_set, cleared, after_clear, others, features_handle(band)

    set_all, after_set, cleared, after_clear, others, handle = run(main())
    assert set_all is None
    assert isinstance(after_set, att.ATT_Read_Response) and after_set.attribute_value == b"\x01"  # only the bit the band knows
    assert cleared == (att.ErrorCode.VALUE_NOT_ALLOWED, att.Opcode.ATT_WRITE_REQUEST, handle)
    assert isinstance(after_clear, att.ATT_Read_Response) and after_clear.attribute_value == b"\x01"
    assert isinstance(others, att.ATT_Read_Response) and others.attribute_value == b"\x00"  # per client


def test_robust_caching_survives_a_restart_without_a_database_change(tmp_path: Path) -> None:
    """The record is on disk beside the bonds; a restart with the same database serves the first request."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as first:
                await bond_with_robust_caching(first, central)
                first_hash = current_hash(first)
            async with band_on(link, bonds) as again:
                connection = await central.connect(again)
                written = error_of(await write_request(connection, rx(again), FRAME_BYTES))
                features = await read(connection, features_handle(again))
                return first_hash, current_hash(again), written, features, str(central.device.random_address)

    first_hash, again_hash, written, features, peer = run(main())
    assert again_hash == first_hash and written is None
    assert isinstance(features, att.ATT_Read_Response) and features.attribute_value == b"\x01"  # the bond's setting, read back
    document = json.loads(caching_path_for(bonds).read_text())
    assert document == {"format": 1, "bonds": {peer: {"robust_caching": True, "aware_hash": first_hash.hex()}}}


def test_a_bonded_central_whose_record_is_damaged_starts_change_unaware_and_gets_a_new_record(tmp_path: Path) -> None:
    """A damaged caching file loses what the band knew of its bonded centrals: any of them may hold handles of
    another database, so each starts change-unaware (0x12 first), and a trusted link writes its record anew."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as old:
                await bond_with_robust_caching(old, central)
            caching_path_for(bonds).write_text("{not json")
            async with band_on(link, bonds, updated=True) as new:
                connection = await central.connect(new)
                first = error_of(await write_request(connection, rx(new), FRAME_BYTES))
                second = error_of(await write_request(connection, rx(new), FRAME_BYTES))
                await connection.encrypt()  # proven aware on a trusted link, without writing Client Supported Features again
                return first, second, new.security.caching.get(str(central.device.random_address)), current_hash(new)

    first, second, record, new_hash = run(main())
    assert first is not None and first[0] == att.ErrorCode.DATABASE_OUT_OF_SYNC  # unknown: held off
    assert second is None
    assert record == CachingRecord(robust_caching=True, aware_hash=new_hash)  # robust kept: the next update holds it off again
    assert json.loads(caching_path_for(bonds).read_text())["bonds"]  # written again, whole


def test_the_record_outlives_the_bond_and_still_holds_off_a_stale_central(tmp_path: Path) -> None:
    """A long press erases the bonds, not the records: a central that still holds its old bond and handles
    meets a later firmware (another database) change-unaware, its commands ignored."""
    bonds = tmp_path / "band.bonds.json"

    async def main() -> tuple[Any, ...]:
        link = LocalLink()
        async with Central.on(link, "C0:00:00:00:00:01") as central:
            async with band_on(link, bonds) as band:
                await bond_with_robust_caching(band, central)
                peer = str(central.device.random_address)
                await band.security.forget_all()
                kept = band.security.caching.get(peer)
            async with band_on(link, bonds, updated=True) as new:
                connection = await central.connect(new)
                ignored_before = new.ble.peripheral.caching.ignored_commands
                await write_command(connection, rx(new), FRAME_BYTES)
                first = error_of(await write_request(connection, rx(new), FRAME_BYTES))
                return kept, new.security.bonded_peers, new.ble.peripheral.caching.ignored_commands - ignored_before, first

    kept, bonded, ignored, first = run(main())
    assert kept is not None and kept.robust_caching
    assert not bonded
    assert ignored == 1
    assert first is not None and first[0] == att.ErrorCode.DATABASE_OUT_OF_SYNC
    assert json.loads(caching_path_for(bonds).read_text())["bonds"]


def test_the_cap_on_records_drops_those_of_centrals_without_a_bond_least_recently_used_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records outlive bonds, so they are capped; a current bond's record is never dropped (its central would then
    be trusted with stale handles after the next firmware update), even above the cap."""
    import firmware_sim.gatt_caching as gatt_caching

    monkeypatch.setattr(gatt_caching, "MAX_RECORDS", 2)
    bonded = {"A", "B", "C"}
    store = CachingStore(tmp_path / "caching.json", is_bonded=lambda peer: peer in bonded)
    record = CachingRecord(robust_caching=True, aware_hash=bytes(range(16)))
    for peer in ("A", "B", "C", "X", "Y"):
        store.put(peer, record)
    assert [peer for peer in ("A", "B", "C", "X", "Y") if store.get(peer)] == ["A", "B", "C", "Y"]  # X: no bond, least recent
    bonded.discard("A")
    store.put("B", record)  # used again: most recent
    store.put("Z", record)
    assert [peer for peer in ("A", "B", "C", "Y", "Z") if store.get(peer)] == ["B", "C", "Z"]
    assert set(json.loads((tmp_path / "caching.json").read_text())["bonds"]) == {"B", "C", "Z"}
