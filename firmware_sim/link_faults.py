"""Link fault injection: a noisy, lossy, flaky link between the band and a companion.

A :class:`FaultSpec` is parsed from the ``handcue-sim --faults`` string::

    corrupt=0.01,drop=0.005,dup=0.005,disconnect=0.0005,stall=200ms@0.001

Every number is a probability per *unit*: a byte on serial (each direction:
what the band receives and what it sends), a write or a notification on BLE.
At most one fault hits a unit:

``corrupt``
    the byte is XORed with a random non-zero value (on BLE: one random byte of
    the packet);
``drop``
    the unit is lost;
``dup``
    the unit arrives twice;
``disconnect``
    the link drops at this unit, which is lost with the rest of its chunk
    (what each transport then does: :mod:`firmware_sim.serial_port`,
    :mod:`firmware_sim.ble_peripheral`);
``stall=DURATION@P``
    the link pauses for DURATION (``200ms``, ``0.5s``) before this unit, with
    probability P per unit (:data:`DEFAULT_STALL_PROBABILITY` when ``@P`` is
    left out).  Later units wait behind it: order is kept.

Probabilities may be written as fractions (``0.01``) or percentages (``1%``).

Faults are drawn from a seeded :class:`random.Random`, one generator per
direction of each link (seeded with ``"<seed>/<stream name>"``), and on a byte
stream the distance to the next fault is drawn once per fault, not per chunk:
with the same seed the faults hit the same byte positions of each stream
whatever chunking the OS delivers, so a failure replays.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from enum import Enum

DEFAULT_STALL_PROBABILITY = 0.001
"""Probability per unit of a stall when ``stall=`` gives only a duration."""


class FaultKind(Enum):
    CORRUPT = "corrupt"
    DROP = "drop"
    DUP = "dup"
    DISCONNECT = "disconnect"
    STALL = "stall"


class FaultSpecError(ValueError):
    """A ``--faults`` string that does not parse; the message says which part."""


_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s)$")


def _probability(key: str, text: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise FaultSpecError(f"{key}={text!r}: not a probability (like 0.01 or 1%)") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise FaultSpecError(f"{key}={text!r}: a probability is between 0 and 1")
    return value


def _duration_s(key: str, text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise FaultSpecError(f"{key}={text!r}: not a duration (like 200ms or 0.5s)")
    value = float(match["value"])
    return value / 1000 if match["unit"] == "ms" else value


@dataclass(frozen=True)
class FaultSpec:
    """Fault probabilities per unit (byte on serial, packet on BLE), and the stall length."""

    corrupt: float = 0.0
    drop: float = 0.0
    dup: float = 0.0
    disconnect: float = 0.0
    stall: float = 0.0
    """Probability of a stall per unit."""
    stall_s: float = 0.0
    """Length of each stall, in seconds."""

    def __post_init__(self) -> None:
        if self.total > 1.0 + 1e-12:
            raise FaultSpecError(f"the fault probabilities add up to {self.total:g}; at most one fault hits a unit, so at most 1")

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``"corrupt=0.01,drop=0.5%,stall=200ms@0.001"``; an empty string means no faults."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep:
                raise FaultSpecError(f"{part!r}: expected KEY=VALUE")
            if key in values or (key == "stall" and "stall_s" in values):
                raise FaultSpecError(f"{key} given twice")
            if key == "stall":
                duration, at, probability = value.partition("@")
                values["stall_s"] = _duration_s(key, duration)
                values["stall"] = _probability(key, probability) if at else DEFAULT_STALL_PROBABILITY
            elif key in ("corrupt", "drop", "dup", "disconnect"):
                values[key] = _probability(key, value)
            else:
                raise FaultSpecError(f"unknown fault {key!r}; known: corrupt, drop, dup, disconnect, stall")
        return cls(**values)

    @property
    def total(self) -> float:
        """Probability that a unit suffers some fault."""
        return self.corrupt + self.drop + self.dup + self.disconnect + self.stall

    def __bool__(self) -> bool:
        return self.total > 0 and (self.stall_s > 0 or self.total > self.stall)

    def __str__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self)[:4] if getattr(self, f.name)]
        if self.stall:
            parts.append(f"stall={self.stall_s * 1000:g}ms@{self.stall:g}")
        return ",".join(parts) or "none"


@dataclass(frozen=True)
class Piece:
    """Bytes to deliver after a pause of ``delay_s``."""

    delay_s: float
    data: bytes


@dataclass
class Faulted:
    """What is left of a chunk or packet after the faults: pieces in order, and whether the link dropped after them."""

    pieces: list[Piece] = field(default_factory=list)
    disconnect: bool = False

    @classmethod
    def clean(cls, data: bytes) -> Faulted:
        """``data`` untouched."""
        return cls([Piece(0.0, data)] if data else [])

    @property
    def data(self) -> bytes:
        """All delivered bytes, ignoring the pauses."""
        return b"".join(piece.data for piece in self.pieces)


class FaultStream:
    """Faults for one direction of one link.  Create through :meth:`LinkFaults.stream`."""

    def __init__(self, spec: FaultSpec, rng: random.Random, counts: Counter[str], name: str) -> None:
        self.spec = spec
        self.name = name
        self._rng = rng
        self._counts = counts
        self._kinds = [k for k in FaultKind if getattr(spec, k.value) > 0]
        self._weights = [getattr(spec, k.value) for k in self._kinds]
        self._until_next = self._gap()

    def _gap(self) -> int:
        """Units before the next fault: geometric with the total probability."""
        total = self.spec.total
        if total <= 0:
            return sys.maxsize  # never
        if total >= 1:
            return 0
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - total))

    def _draw(self) -> FaultKind:
        kind = self._rng.choices(self._kinds, self._weights)[0]
        self._counts[f"{self.name}.{kind.value}"] += 1
        return kind

    def _garble(self, byte: int) -> int:
        return byte ^ self._rng.randrange(1, 256)

    def apply_bytes(self, chunk: bytes) -> Faulted:
        """Faults per byte (serial)."""
        result = Faulted()
        start, delay = 0, 0.0
        position = 0
        out = bytearray()
        while self._until_next < len(chunk) - position:
            position += self._until_next
            out += chunk[start:position]
            kind = self._draw()
            byte = chunk[position]
            if kind is FaultKind.CORRUPT:
                out.append(self._garble(byte))
            elif kind is FaultKind.DUP:
                out += bytes((byte, byte))
            elif kind is FaultKind.STALL:
                if out:
                    result.pieces.append(Piece(delay, bytes(out)))
                out, delay = bytearray([byte]), self.spec.stall_s
            elif kind is FaultKind.DISCONNECT:
                if out:
                    result.pieces.append(Piece(delay, bytes(out)))
                result.disconnect = True
                self._until_next = self._gap()
                return result
            # DROP: the byte is simply not copied
            position += 1
            start = position
            self._until_next = self._gap()
        self._until_next -= len(chunk) - position
        out += chunk[start:]
        if out or delay:
            result.pieces.append(Piece(delay, bytes(out)))
        return result

    def apply_packet(self, packet: bytes) -> Faulted:
        """Faults per packet (a BLE write or notification): the packet is one unit."""
        if self._until_next > 0:
            self._until_next -= 1
            return Faulted([Piece(0.0, packet)])
        self._until_next = self._gap()
        kind = self._draw()
        if kind is FaultKind.CORRUPT and packet:
            garbled = bytearray(packet)
            index = self._rng.randrange(len(garbled))
            garbled[index] = self._garble(garbled[index])
            return Faulted([Piece(0.0, bytes(garbled))])
        if kind is FaultKind.DUP:
            return Faulted([Piece(0.0, packet), Piece(0.0, packet)])
        if kind is FaultKind.STALL:
            return Faulted([Piece(self.spec.stall_s, packet)])
        if kind is FaultKind.DISCONNECT:
            return Faulted(disconnect=True)
        return Faulted()  # DROP (or corrupting an empty packet: nothing to garble, it is lost)


class LinkFaults:
    """A :class:`FaultSpec` with its seed; hands out one :class:`FaultStream` per direction of each link.

    ``seed=None`` draws a fresh seed; :attr:`seed` tells it so a failure can be replayed.
    :attr:`counts` counts the faults injected, by ``"<stream>.<kind>"``.
    """

    def __init__(self, spec: FaultSpec, seed: int | None = None) -> None:
        self.spec = spec
        self.seed = secrets.randbits(32) if seed is None else seed
        self.counts: Counter[str] = Counter()
        self._streams: dict[str, FaultStream] = {}

    @classmethod
    def parse(cls, text: str, seed: int | None = None) -> LinkFaults:
        return cls(FaultSpec.parse(text), seed)

    def stream(self, name: str) -> FaultStream:
        """The fault stream of ``name`` (e.g. ``"serial.rx"``), created on first use with its own generator."""
        if name not in self._streams:
            self._streams[name] = FaultStream(self.spec, random.Random(f"{self.seed}/{name}"), self.counts, name)
        return self._streams[name]

    def describe(self) -> str:
        return f"faults: {self.spec} (seed {self.seed})"


class PacketFaults:
    """Faults on one direction of a packet link (BLE writes in, notifications out).

    :meth:`receive` serves a synchronous write handler: stalled packets are held
    in a delay line and everything behind them waits, so order is kept.
    :meth:`send` serves an async sender and simply waits out a stall.
    ``on_disconnect`` is called when a disconnect fault hits (the transport drops the link).
    """

    def __init__(self, stream: FaultStream, on_disconnect: Callable[[], None]) -> None:
        self.stream = stream
        self.on_disconnect = on_disconnect
        self._held: deque[tuple[float, bytes, Callable[[bytes], None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def receive(self, packet: bytes, deliver: Callable[[bytes], None]) -> None:
        faulted = self.stream.apply_packet(packet)
        if faulted.disconnect:
            self.on_disconnect()
        loop = asyncio.get_running_loop()
        for piece in faulted.pieces:
            if not self._held and piece.delay_s == 0:
                deliver(piece.data)
                continue
            release = loop.time() + piece.delay_s
            if self._held:
                release = max(release, self._held[-1][0])
            self._held.append((release, piece.data, deliver))
            if self._timer is None:
                self._timer = loop.call_at(self._held[0][0], self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        while self._held and self._held[0][0] <= loop.time():
            _, data, deliver = self._held.popleft()
            deliver(data)
        if self._held:
            self._timer = loop.call_at(self._held[0][0], self._release)

    async def send(self, packet: bytes, send: Callable[[bytes], Awaitable[None]]) -> None:
        faulted = self.stream.apply_packet(packet)
        for piece in faulted.pieces:
            if piece.delay_s:
                await asyncio.sleep(piece.delay_s)
            await send(piece.data)
        if faulted.disconnect:
            self.on_disconnect()

    def close(self) -> None:
        """Forget held packets (the link is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()
