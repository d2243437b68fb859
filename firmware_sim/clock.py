"""Injectable clocks: virtual time for tests, real time (optionally faster) for demos.

The band's run loop only ever asks a clock for the time and waits on it for a
deadline or a wake-up, so swapping the clock changes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Millisecond time source for the band."""

    def now_ms(self) -> int:
        """Band time in ms since boot."""
        ...

    async def wait(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        """Return at ``deadline_ms`` (never when None) or as soon as ``wake`` is set."""
        ...


class VirtualClock:
    """Time that moves only when told, or jumps straight to the next deadline.

    Tests call :meth:`advance`; in a running process, :meth:`wait` lets pending
    I/O run once and then jumps to the deadline, so a 20-minute routine plays in
    milliseconds with exact times.
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms

    def set(self, now_ms: int) -> None:
        self._now = max(self._now, now_ms)

    async def wait(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        await asyncio.sleep(0)
        if wake.is_set():
            return
        if deadline_ms is None:
            await wake.wait()
            return
        self.set(deadline_ms)


class RealClock:
    """Wall-clock time, ``speed`` times faster than real (1.0 = real time)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin = time.monotonic()

    def now_ms(self) -> int:
        return int((time.monotonic() - self._origin) * 1000 * self.speed)

    MAX_SLICE_S = 0.05
    """Long waits are cut into slices: the kernel lets a long timer run late by ~0.1 %."""

    async def wait(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        if deadline_ms is None:
            await wake.wait()
            return
        deadline_s = self._origin + deadline_ms / 1000 / self.speed
        while not wake.is_set():
            remaining = deadline_s - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, self.MAX_SLICE_S))
