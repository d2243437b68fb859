"""Remembered GATT databases: the handles of a band used before, so that connecting to it again needs no discovery.

Operating-system stacks keep such a cache themselves (BlueZ under
``/var/lib/bluetooth/<adapter>/cache``, CoreBluetooth and WinRT internally), so with
bleak's platform backends the companion gets it for free.  The bumble backend is a
user-space host and keeps its own, per band address, in the user's cache folder
(:func:`companion.config.gatt_cache_path`).

A cached database is used only after it is proven current, the way Core 5.1 robust
caching lets a client without a bond do it: one Read By Type of the band's Database
Hash (0x2B2A, an AES-CMAC over every declaration) replaces the whole discovery; a
different hash (a firmware update moved the handles) throws the entry away and
discovers again.  A band without a Database Hash is never cached.

A bonded central may skip even that read: an entry marked ``robust`` (the band was told, on a
trusted link, that this central does robust caching) is used at once, and the band refuses
the first request with Database Out Of Sync if its database changed
(:mod:`companion.ble.robust_caching`).

Entries are plain JSON (UUIDs as their little-endian bytes in hex, as on the air; ``robust``
added later, so an entry without it is simply not robust);
a cache that cannot be read or written, or an entry that does not parse, is skipped: it
only saves time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CachedCharacteristic", "CachedDatabase", "CachedService", "GattCache", "GattCacheFile", "MemoryGattCache"]

MAX_ENTRIES = 20
"""Bands remembered per computer; the oldest entry goes first."""


@dataclasses.dataclass(frozen=True)
class CachedCharacteristic:
    uuid: str
    """The UUID's little-endian bytes in hex (2 or 16 bytes)."""
    handle: int
    """The value handle."""
    end_handle: int
    properties: int
    descriptors: tuple[tuple[str, int], ...] | None
    """(UUID, handle) of each descriptor; None: they were not discovered (a characteristic that does not notify)."""


@dataclasses.dataclass(frozen=True)
class CachedService:
    uuid: str
    handle: int
    end_handle: int
    characteristics: tuple[CachedCharacteristic, ...]


@dataclasses.dataclass(frozen=True)
class CachedDatabase:
    """The part of a peer's GATT database a client discovered, and the Database Hash it had."""

    database_hash: bytes
    services: tuple[CachedService, ...]
    complete: bool
    """Every service was discovered (else only those asked for)."""
    robust: bool = False
    """This central, on an encrypted link of its bond with the peer, wrote Client Supported Features bit 0
    (Robust Caching) after this database was discovered or proven by its hash: the peer then tracks whether
    this central is change-aware, so a bonded connection may use the handles without reading the hash
    first (:mod:`companion.ble.robust_caching`).  Entries written before the field existed read as False."""

    def covers(self, wanted: set[str] | None, uuid_of: Any) -> bool:
        """Whether it holds every service in ``wanted`` (bleak's UUID strings; None: all of them).
        ``uuid_of`` turns a cached UUID into bleak's string form."""
        if wanted is None:
            return self.complete
        return self.complete or wanted <= {uuid_of(service.uuid) for service in self.services}

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["database_hash"] = self.database_hash.hex()
        return data

    @classmethod
    def from_json(cls, data: Any) -> CachedDatabase | None:
        """The entry, or None when it is not one this version wrote (a damaged or hand-edited
        entry is then a cold one, never an error on every connect)."""
        try:
            services = tuple(
                CachedService(_uuid(service["uuid"]), _handle(service["handle"]), _handle(service["end_handle"]), tuple(
                    CachedCharacteristic(_uuid(c["uuid"]), _handle(c["handle"]), _handle(c["end_handle"]), _properties(c["properties"]),
                                         None if c["descriptors"] is None else tuple((_uuid(u), _handle(h)) for u, h in c["descriptors"]))
                    for c in service["characteristics"]))
                for service in data["services"])
            database_hash = data["database_hash"]
            robust = data.get("robust", False)  # absent in entries written before robust caching
            if not isinstance(database_hash, str) or not isinstance(data["complete"], bool) or not isinstance(robust, bool):
                raise ValueError("bad entry")
            return cls(bytes.fromhex(database_hash), services, data["complete"], robust)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


_UUID_HEX = re.compile(r"[0-9a-fA-F]{4}|[0-9a-fA-F]{32}")
"""A 16-bit or 128-bit UUID's bytes, as :meth:`bumble.core.UUID.to_bytes` gives them, in bare hex."""


def _uuid(value: Any) -> str:
    if not isinstance(value, str) or not _UUID_HEX.fullmatch(value):
        raise ValueError(f"not a UUID's bytes in hex: {value!r}")
    return value.lower()


def _handle(value: Any) -> int:
    if type(value) is not int or not 0x0001 <= value <= 0xFFFF:  # not bool, not float
        raise ValueError(f"not an attribute handle: {value!r}")
    return value


def _properties(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 0xFF:
        raise ValueError(f"not characteristic properties: {value!r}")
    return value


class GattCache(Protocol):
    """Where a central keeps the databases of its peers, by peer address (``AA:BB:CC:DD:EE:FF/P``).

    The methods may block (a file): the bumble backend calls them in a worker thread."""

    def get(self, address: str) -> CachedDatabase | None: ...
    def put(self, address: str, database: CachedDatabase) -> None: ...
    def forget(self, address: str) -> None: ...


class MemoryGattCache:
    """A cache for one process (tests, and hosts made in code)."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedDatabase] = {}

    def get(self, address: str) -> CachedDatabase | None:
        return self.entries.get(address)

    def put(self, address: str, database: CachedDatabase) -> None:
        self.entries[address] = database

    def forget(self, address: str) -> None:
        self.entries.pop(address, None)


class GattCacheFile:
    """A cache kept in one JSON file (read on every lookup: a few hundred bytes per band)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_user(cls) -> GattCacheFile:
        from ..config import gatt_cache_path

        return cls(gatt_cache_path())

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def _write(self, document: dict[str, Any]) -> None:
        # A temporary file of this writer's own in the same folder, then an atomic rename: a reader
        # never sees half a file, and two companions writing at once do not write into one
        # temporary file (the last rename wins; the other's entry is only rediscovered).
        temporary: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.path.parent, prefix=f".{self.path.name}.",
                                             suffix=".tmp", delete=False) as file:
                temporary = file.name
                json.dump(document, file)
            os.replace(temporary, self.path)
            temporary = None
        except OSError:
            pass  # a cache only saves time
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    def get(self, address: str) -> CachedDatabase | None:
        return CachedDatabase.from_json(self._read().get(address))

    def put(self, address: str, database: CachedDatabase) -> None:
        document = self._read()
        document.pop(address, None)
        document[address] = database.to_json()  # newest last
        while len(document) > MAX_ENTRIES:
            document.pop(next(iter(document)))
        self._write(document)

    def forget(self, address: str) -> None:
        document = self._read()
        if document.pop(address, None) is not None:
            self._write(document)
