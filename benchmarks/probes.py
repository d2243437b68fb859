"""Instrumentation of one BandClient, by wrapping instance attributes (the source is not changed)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from companion.client import BandClient
from protocol.constants import Opcode


class Instrumented:
    """Counts the bytes (and link packets) a client sends and receives, and times its ``request`` calls.

    A send is split by the transport into writes of at most ``transport.mtu`` bytes (one
    packet each on BLE); each chunk the transport delivers is one received packet.
    """

    def __init__(self, client: BandClient) -> None:
        self.sent = self.received = self.packets_sent = self.packets_received = 0
        self.requests: list[tuple[Opcode, float, float]] = []
        transport = client.transport
        send, receive, request = transport.send, transport.receive, client.request

        async def counted_send(data: bytes) -> None:
            self.sent += len(data)
            self.packets_sent += math.ceil(len(data) / transport.mtu)
            await send(data)

        async def counted_receive() -> bytes:
            data = await receive()
            self.received += len(data)
            self.packets_received += 1
            return data

        async def timed_request(typed: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await request(typed, **kwargs)
            finally:
                self.requests.append((typed.opcode, start, time.perf_counter()))

        transport.send = counted_send  # type: ignore[method-assign]
        transport.receive = counted_receive  # type: ignore[method-assign]
        client.request = timed_request  # type: ignore[method-assign,assignment]

    def reset(self) -> None:
        self.sent = self.received = self.packets_sent = self.packets_received = 0
        self.requests.clear()

    def span(self, opcode: Opcode) -> tuple[float, float]:
        """(start, end) of the first request with ``opcode`` since the last reset."""
        return next((start, end) for op, start, end in self.requests if op == opcode)

    def count(self, opcode: Opcode) -> int:
        return sum(1 for op, _, _ in self.requests if op == opcode)


class AckWaits:
    """Stands in for the ``asyncio`` module inside :mod:`companion.upload` and counts ``asyncio.wait`` calls.

    ``BandClient.upload`` (its :class:`~companion.upload.UploadRun`) calls ``asyncio.wait(in_flight, FIRST_COMPLETED)`` once per
    acknowledgement wait and uses nothing else of ``asyncio.wait``; every other attribute
    is the real module's.  ``blocked`` counts the waits where no acknowledgement had
    arrived yet; ``max_in_flight`` is the most frames awaited at once.
    """

    def __init__(self) -> None:
        self.calls = self.blocked = self.max_in_flight = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def wait(self, fs: Any, **kwargs: Any) -> Any:
        futures = list(fs)
        self.calls += 1
        self.blocked += not any(f.done() for f in futures)
        self.max_in_flight = max(self.max_in_flight, len(futures))
        return await asyncio.wait(futures, **kwargs)

    def __enter__(self) -> AckWaits:
        import companion.upload

        self._module = companion.upload
        self._module.asyncio = self  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self._module.asyncio = asyncio
