"""The transport interface: a small async byte pipe to one band."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from ..errors import TransportClosed, TransportError

__all__ = ["Transport", "TransportClosed", "TransportError"]


class Transport(ABC):
    """An async byte pipe; framing and messages live above it.

    Implementations hand received bytes to :meth:`_deliver` (from callbacks)
    and report the end of the link with :meth:`_deliver_end`.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.end_reason = "closed"

    def _deliver(self, data: bytes) -> None:
        self._chunks.put_nowait(data)

    def _deliver_end(self, reason: str) -> None:
        self.end_reason = reason
        self._chunks.put_nowait(None)

    @abstractmethod
    async def connect(self, timeout: float) -> None:
        """Open the link; raise :class:`TransportError` naming the address on failure."""

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Write bytes (at most :attr:`mtu` per call for packet links)."""

    async def receive(self) -> bytes:
        """The next chunk of bytes from the band; raise :class:`TransportClosed` when gone."""
        data = await self._chunks.get()
        if data is None:
            self._chunks.put_nowait(None)  # every later receive fails the same way
            raise TransportClosed(f"{self.address}: {self.end_reason}")
        return data

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the link (idempotent)."""

    @property
    @abstractmethod
    def mtu(self) -> int:
        """Largest number of bytes one :meth:`send` should carry."""
