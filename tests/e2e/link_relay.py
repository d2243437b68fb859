"""A faulty serial cable for tests and benchmarks: a pty the companion opens, relayed to the band's pty.

Bytes pass through a :class:`Faults` object in each direction, seeded so a
failure replays.  Until the simulator's own fault injection (``handcue-sim
--faults``) is there, this is how the tests put line noise, lost bytes, lost
answers and latency between a real companion and a real band process; a test
that wants it the other way needs only the band's ``serial:`` path.

    async with PtyRelay(band_path, to_band=ByteFaults(seed=1, corrupt=0.001)) as relay:
        async with BandClient.open(f"serial:{relay.path}") as client: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.framing import FrameParser

Faults = Callable[[bytes], bytes]
"""What a stretch of cable does to the bytes that pass it."""


def clean(data: bytes) -> bytes:
    return data


@dataclass
class ByteFaults:
    """Independent per-byte faults: ``corrupt`` flips bits of a byte, ``drop`` loses it (probabilities)."""

    seed: int = 0
    corrupt: float = 0.0
    drop: float = 0.0
    cut: bool = False
    """Lose everything (a cable pulled in this direction); switch on and off while running."""
    corrupted: int = 0
    dropped: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __call__(self, data: bytes) -> bytes:
        if self.cut:
            self.dropped += len(data)
            return b""
        if not (self.corrupt or self.drop):
            return data
        out = bytearray()
        for byte in data:
            roll = self.rng.random()
            if roll < self.drop:
                self.dropped += 1
                continue
            if roll < self.drop + self.corrupt:
                byte ^= self.rng.randrange(1, 256)
                self.corrupted += 1
            out.append(byte)
        return bytes(out)


class DropFrames:
    """Loses whole frames whose message ``lose(message)`` picks (e.g. the answer to UPLOAD_COMMIT), ``times`` at most.

    Frames are cut at delimiters, so it expects the band to write whole frames (it does).
    """

    def __init__(self, lose: Callable[[bytes], bool], times: int = 1) -> None:
        self.lose = lose
        self.left = times
        self.lost: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        for piece in data.split(b"\x00"):
            if piece and self.left:
                messages = FrameParser(1024).feed(piece + b"\x00")
                if messages and self.lose(messages[0]):
                    self.left -= 1
                    self.lost.append(messages[0])
                    out += b"\x00"
                    continue
            out += piece + b"\x00"
        return bytes(out[:-1])  # split() added one delimiter too many


class PtyRelay:
    """Relays a new pty (:attr:`path`, for the companion) to the band's pty at ``band_path``."""

    def __init__(self, band_path: str, *, to_band: Faults = clean, to_companion: Faults = clean, latency: float = 0.0) -> None:
        self.to_band, self.to_companion, self.latency = to_band, to_companion, latency
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.band = os.open(band_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.band)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> PtyRelay:
        self._tasks = [asyncio.create_task(self._pump(self.master, self.band, lambda d: self.to_band(d))),
                       asyncio.create_task(self._pump(self.band, self.master, lambda d: self.to_companion(d)))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fd in (self.master, self.slave, self.band):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _pump(self, source: int, sink: int, faults: Faults) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(source, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(source)
            try:
                data = os.read(source, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO: nobody holds the other end right now
                await asyncio.sleep(0.01)
                continue
            data = faults(data)
            if self.latency:
                loop.call_later(self.latency, _write, sink, data)
            else:
                _write(sink, data)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a full buffer loses bytes, as a UART nobody reads would
        os.write(fd, data)
