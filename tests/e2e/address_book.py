"""An in-memory address book of one band, for tests: after the first session finds the band by a scan,
the next connects to the remembered address (``BleTransport.address_book``)."""

from __future__ import annotations

from companion.config import KnownBleAddress


class Book:
    """Remembers one band's address, whatever its name."""

    known: KnownBleAddress | None = None

    def get(self, name: str) -> KnownBleAddress | None:
        return self.known

    def put(self, name: str, known: KnownBleAddress) -> None:
        self.known = known

    def forget(self, name: str) -> None:
        self.known = None
