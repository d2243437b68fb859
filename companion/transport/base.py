"""The transport interface: a small async byte pipe to one band."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from ..errors import TransportClosed, TransportError
from ..phases import Phases, Unrecorded

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
        self.phases: Phases = Unrecorded()
        """Where connecting and each request record their time (``-v`` prints it)."""

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

    @property
    def bytes_per_second(self) -> float | None:
        """How fast the link carries bytes, if known (a UART's baud rate / 10); None: fast or unknown."""
        return None

    @property
    def min_rto(self) -> float:
        """Shortest retransmission timeout worth using on this link: the jitter of its answers beyond
        the measured round trip (a BLE stack batches packets into connection events)."""
        return 0.25

    def wire_time(self, count: int) -> float:
        """Seconds the link needs to carry ``count`` bytes (0 when its speed is unknown)."""
        rate = self.bytes_per_second
        return count / rate if rate else 0.0

    def discard_output(self) -> None:
        """Drop bytes written but not yet carried (after a failed upload: the band need not chew through them)."""
        return None  # a packet link carries each write at once
