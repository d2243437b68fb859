"""The transport interface: a small async byte pipe to one band."""

from __future__ import annotations

from abc import ABC, abstractmethod

from protocol.errors import HandCueError


class TransportError(HandCueError):
    """The link could not be opened or failed."""


class TransportClosed(TransportError):
    """The link went away (port closed, BLE disconnect)."""


class Transport(ABC):
    """An async byte pipe; framing and messages live above it."""

    def __init__(self, address: str) -> None:
        self.address = address

    @abstractmethod
    async def connect(self, timeout: float) -> None:
        """Open the link; raise :class:`TransportError` naming the address on failure."""

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Write bytes (at most :attr:`mtu` per call for packet links)."""

    @abstractmethod
    async def receive(self) -> bytes:
        """The next chunk of bytes from the band; raise :class:`TransportClosed` when gone."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the link (idempotent)."""

    @property
    @abstractmethod
    def mtu(self) -> int:
        """Largest number of bytes one :meth:`send` should carry."""
