"""The band's side of GATT robust caching (Core 5.1, Vol 3, Part G, 2.5.2.1).

A bonded central that enabled robust caching may trust the GATT handles it cached
without checking them: it sends its first writes at once, on those handles.  That is
safe only because the band protects a central whose cache is out of date (a
*change-unaware* one, e.g. after a firmware update that moved the handles):

* per central that bonded, persisted beside the bonds (:class:`CachingStore`): whether
  that central enabled robust caching, and the Database Hash it was last change-aware of.
  A record outlives its bond (FORGET_ME, the long press, a new pairing): the central may
  still hold its side of the bond and its cached handles, and only the record protects it.
  A bonded central whose record was lost gets a placeholder (robust, aware of no database);
* at connection, a peer whose address has such a record with another hash than the
  band's current one starts change-unaware (known by its address, before encryption);
* while change-unaware, its ATT commands are ignored and its ATT requests answered with
  error 0x12 (Database Out Of Sync), except Exchange MTU and a Read By Type of the
  Database Hash; after that error (or that read) its next request makes it change-aware
  and is served;
* Client Supported Features (0x2B29) is per client: a read returns what this client set;
  clearing a bit it set is refused with error 0x13 (Value Not Allowed); unknown bits are
  stored as 0;
* awareness (and robust caching) is persisted only from a *trusted* link: encrypted with
  the bond's keys.  A device spoofing a bonded central's address cannot mark it change-aware.

:class:`RobustCaching` sits in front of bumble's GATT server (:meth:`RobustCaching.install`);
it knows nothing of the band's protocol.  :mod:`firmware_sim.pairing` owns the store;
:mod:`firmware_sim.ble` tells :meth:`RobustCaching.update` when a central has just bonded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from bumble import att, crypto
from bumble.device import Connection, Device
from bumble.gatt import GATT_DATABASE_HASH_CHARACTERISTIC, CharacteristicValue, ClientSupportedFeatures
from bumble.gatt_server import Server
from bumble.profiles.gatt_service import GenericAttributeProfileService

logger = logging.getLogger(__name__)

ROBUST_CACHING: Final = int(ClientSupportedFeatures.ROBUST_CACHING)
"""Client Supported Features, octet 0, bit 0: the client wants robust caching."""
KNOWN_FEATURES: Final = ROBUST_CACHING
"""The client features the band knows (no EATT, no Multiple Handle Value Notifications): others are stored as 0."""
HASH_SIZE: Final = 16
FILE_FORMAT: Final = 1
"""``"format"`` of the caching file; a file of another format is a damaged one."""
MAX_RECORDS: Final = 64
"""Records kept at most: beyond it the least recently used record of a central without a bond goes (records
outlive bonds; a current bond's record is never dropped, even above the cap)."""
UNKNOWN_HASH: Final = bytes(HASH_SIZE)
"""The ``aware_hash`` of a placeholder record (a bonded central whose record was lost): never a database's hash."""

_COMMANDS: Final = frozenset({att.Opcode.ATT_WRITE_COMMAND, att.Opcode.ATT_SIGNED_WRITE_COMMAND})
_REQUESTS: Final = frozenset(att.ATT_REQUESTS)


def caching_path_for(bonds_path: Path) -> Path:
    """Where the robust caching records of the bonds in ``bonds_path`` live: beside it
    (``band.flash.bonds.json`` -> ``band.flash.bonds.caching.json``)."""
    return bonds_path.with_suffix(".caching.json")


def database_hash(server: Server) -> bytes:
    """The Database Hash ``server`` serves, as read over the air (Core 5.1 Vol 3 Part G 7.3:
    AES-CMAC with a zero key over the database, least significant octet first)."""
    m = b"".join(GenericAttributeProfileService.get_attribute_data(attribute) for attribute in server.attributes)
    return crypto.aes_cmac(m=m, k=bytes(HASH_SIZE))[::-1]


@dataclasses.dataclass(frozen=True)
class CachingRecord:
    """What the band keeps for one central that bonded."""

    robust_caching: bool
    """The central set Client Supported Features bit 0 on a trusted link."""
    aware_hash: bytes
    """The Database Hash (16 bytes, as read over the air) the central was last change-aware of."""


class CachingStore:
    """Robust caching records per central that bonded (its address as the key store names it).

    File format (JSON, written whole and atomically on every change)::

        {"format": 1,
         "bonds": {"<peer address, e.g. F0:F1:F2:F3:F4:F5/P>":
                   {"robust_caching": true, "aware_hash": "<32 hex digits>"}}}

    Records are kept when a bond is erased, up to :data:`MAX_RECORDS`.  A bonded central whose
    record is missing or damaged (an unreadable file, a damaged entry, a file lost while the
    bonds were kept) gets a placeholder record at boot: robust caching, aware of no database
    (:data:`UNKNOWN_HASH`).  It may have cached handles of another database, so it starts
    change-unaware until a trusted link proves it aware; the placeholder is written at once, so
    it survives a reboot and the bond's erasure as any record does.

    Args:
        path: the JSON file; None keeps the records in memory.
        is_bonded: whether a central (by address) has a bond now: its record is never dropped.
    """

    def __init__(self, path: Path | None = None, is_bonded: Callable[[str], bool] = lambda _peer: False) -> None:
        self.path = path
        self._is_bonded = is_bonded
        self._records: dict[str, CachingRecord] = {}

    def load(self, bonded: Collection[str]) -> None:
        """Read the file (at boot); a bonded central in ``bonded`` without a readable record gets a placeholder."""
        self._records = self._read()
        lost = [peer for peer in bonded if peer not in self._records]
        if lost:
            logger.warning("no robust caching record for %d bonded central(s): they start change-unaware", len(lost))
            for peer in lost:
                self._records[peer] = CachingRecord(robust_caching=True, aware_hash=UNKNOWN_HASH)
            self._write()

    def get(self, peer: str) -> CachingRecord | None:
        """The record of ``peer``, if any."""
        return self._records.get(peer)

    def put(self, peer: str, record: CachingRecord) -> None:
        """Store ``record`` for ``peer`` (persisted at once)."""
        changed = self._records.get(peer) != record
        self._records.pop(peer, None)  # to the end: the most recently used
        self._records[peer] = record
        spare = [other for other in self._records if other != peer and not self._is_bonded(other)]
        for other in spare[: max(0, len(self._records) - MAX_RECORDS)]:  # least recently used first
            del self._records[other]
            changed = True
        if changed:
            self._write()

    def _read(self) -> dict[str, CachingRecord]:
        if self.path is None:
            return dict(self._records)
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning("ignoring damaged robust caching file %s: %s", self.path, error)
            return {}
        bonds = document.get("bonds") if isinstance(document, dict) and document.get("format") == FILE_FORMAT else None
        if not isinstance(bonds, dict):
            logger.warning("ignoring robust caching file %s: not format %d", self.path, FILE_FORMAT)
            return {}
        records: dict[str, CachingRecord] = {}
        for peer, entry in bonds.items():
            try:
                aware_hash = bytes.fromhex(entry["aware_hash"])
                robust = entry["robust_caching"]
                if len(aware_hash) != HASH_SIZE or not isinstance(robust, bool):
                    raise ValueError("bad field")
            except (KeyError, TypeError, ValueError):
                logger.warning("ignoring damaged robust caching record of %s", peer)
                continue
            records[str(peer)] = CachingRecord(robust, aware_hash)
        return records

    def _write(self) -> None:
        if self.path is None:
            return
        document = {"format": FILE_FORMAT, "bonds": {peer: {"robust_caching": record.robust_caching, "aware_hash": record.aware_hash.hex()}
                                                     for peer, record in self._records.items()}}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:  # a power cut mid-write leaves the old file or the new one, never half of one
            temporary.write_text(json.dumps(document, indent=1))
            os.replace(temporary, self.path)
        except OSError as error:  # the band works on; those centrals just lose robust caching at the next boot
            logger.warning("could not write robust caching file %s: %s", self.path, error)
            with contextlib.suppress(OSError):
                temporary.unlink()


@dataclasses.dataclass
class _Link:
    """Robust caching state of one connection."""

    aware: bool
    features: int
    """Client Supported Features octet 0 as this client set it (or as its bond had it)."""
    robust_trusted: bool = False
    """It set bit 0 while the link was trusted (only then is robust caching persisted)."""
    next_request_aware: bool = False
    """The band answered 0x12 or served the Database Hash read: the next request makes it change-aware."""


class RobustCaching:
    """The band's robust caching in front of bumble's GATT server.

    Args:
        store: the records per central that bonded (:attr:`firmware_sim.pairing.BandSecurity.caching`).
        trusted: whether a connection is encrypted with the keys of its peer's bond
            (:meth:`firmware_sim.pairing.BandSecurity.trusted`).
    """

    def __init__(self, store: CachingStore | None = None, trusted: Callable[[Connection], bool] = lambda _connection: False) -> None:
        self.store = store if store is not None else CachingStore()
        self._trusted = trusted
        self._links: dict[Connection, _Link] = {}
        self._serve: Callable[[att.Bearer, att.ATT_PDU], None] | None = None
        self._server: Server | None = None
        self.database_hash = bytes(HASH_SIZE)
        """The band's current Database Hash (set by :meth:`install`)."""
        self.ignored_commands = 0
        """ATT commands ignored from change-unaware clients since start."""

    def install(self, device: Device) -> None:
        """Serve Client Supported Features per client and filter the ATT PDUs of change-unaware clients.

        Call it once ``device`` has all its services (its Database Hash is taken now).
        """
        server = device.gatt_server
        features = device.gatt_service.client_supported_features_characteristic if device.gatt_service is not None else None
        if features is None:
            raise ValueError("the device has no GATT service with Client Supported Features")
        features.value = CharacteristicValue(read=self._read_features, write=self._write_features)
        self.database_hash = database_hash(server)
        self._server = server
        self._serve = server.on_gatt_pdu
        server.on_gatt_pdu = self._on_gatt_pdu  # type: ignore[method-assign]  # every ATT PDU from a client comes here
        device.on(Device.EVENT_CONNECTION, self.link)

    # ------------------------------------------------------------ per connection

    def link(self, connection: Connection) -> _Link:
        """The state of ``connection``, made at its first use from its peer's record."""
        link = self._links.get(connection)
        if link is not None:
            return link
        peer = str(connection.peer_address)
        record = self.store.get(peer)
        robust = record is not None and record.robust_caching
        aware = not (robust and record is not None and record.aware_hash != self.database_hash)
        link = self._links[connection] = _Link(aware=aware, features=ROBUST_CACHING if robust else 0)
        if not aware:
            logger.info("%s starts change-unaware: the database changed since it cached it", connection.peer_address)
        connection.on(Connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, lambda: self.update(connection))
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._links.pop(connection, None))
        return link

    def change_aware(self, connection: Connection) -> bool:
        """Whether the client on ``connection`` is change-aware."""
        return self.link(connection).aware

    def update(self, connection: Connection) -> None:
        """Persist what a trusted, change-aware connection proves: its bond is aware of the current
        database (and uses robust caching if it set bit 0 on a trusted link).  Call it when a
        central has just bonded; the band calls it itself on encryption, awareness and writes."""
        link = self.link(connection)
        if not link.aware or not self._trusted(connection):
            return
        peer = str(connection.peer_address)
        old = self.store.get(peer)
        robust = link.robust_trusted or (old is not None and old.robust_caching)
        self.store.put(peer, CachingRecord(robust_caching=robust, aware_hash=self.database_hash))

    # ------------------------------------------------------------ Client Supported Features

    def _read_features(self, connection: Connection) -> bytes:
        return bytes([self.link(connection).features])

    def _write_features(self, connection: Connection, value: bytes) -> None:
        link = self.link(connection)
        features = (value[0] if value else 0) & KNOWN_FEATURES
        if link.features & ~features:
            raise att.ATT_Error(att.ErrorCode.VALUE_NOT_ALLOWED)  # a client may not clear a feature it set
        link.features |= features
        if features & ROBUST_CACHING and self._trusted(connection):
            link.robust_trusted = True
            self.update(connection)

    # ------------------------------------------------------------ ATT filter

    def _on_gatt_pdu(self, bearer: att.Bearer, att_pdu: att.ATT_PDU) -> None:
        assert self._serve is not None and self._server is not None
        link = self.link(bearer) if isinstance(bearer, Connection) else None
        if link is None or link.aware:  # (an EATT bearer: the band offers none)
            self._serve(bearer, att_pdu)
            return
        assert isinstance(bearer, Connection)
        op_code = att_pdu.op_code
        if op_code in _COMMANDS:  # its handle may now be another attribute's: nothing lands on it
            self.ignored_commands += 1
            logger.debug("ignored %s from change-unaware %s", att_pdu.name, bearer.peer_address)
            return
        if op_code not in _REQUESTS or op_code == att.Opcode.ATT_EXCHANGE_MTU_REQUEST:
            self._serve(bearer, att_pdu)  # confirmations, and the MTU exchange, which names no handle
            return
        if link.next_request_aware:
            link.aware = True
            logger.info("%s is change-aware", bearer.peer_address)
            self._serve(bearer, att_pdu)
            self.update(bearer)
            return
        link.next_request_aware = True
        if isinstance(att_pdu, att.ATT_Read_By_Type_Request) and att_pdu.attribute_type == GATT_DATABASE_HASH_CHARACTERISTIC:
            self._serve(bearer, att_pdu)  # how a client learns that its cache is stale
            return
        self._server.send_response(bearer, att.ATT_Error_Response(
            request_opcode_in_error=op_code,
            attribute_handle_in_error=_handle_of(att_pdu),
            error_code=att.ErrorCode.DATABASE_OUT_OF_SYNC,
        ))


def _handle_of(pdu: att.ATT_PDU) -> int:
    """The attribute handle a request names (its first one), 0 if none."""
    for field in ("attribute_handle", "starting_handle"):
        handle = getattr(pdu, field, None)
        if isinstance(handle, int):
            return handle
    handles = getattr(pdu, "set_of_handles", None)
    return int(handles[0]) if handles else 0
