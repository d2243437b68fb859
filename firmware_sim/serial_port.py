"""The band's serial port: a pseudo-terminal that pyserial opens like hardware.

The simulator keeps both ends of the pty open (so a companion may open, close
and reopen the port) and serves the master end with the protocol handler.
With ``baud`` set, both directions are paced to the wire time of that rate
(10 bits per byte: start, 8 data, stop), so uploads take as long as on a real
UART.

With ``faults`` (:class:`~firmware_sim.link_faults.LinkFaults`) every byte the
band receives (stream ``serial.rx``) and sends (``serial.tx``) may be
corrupted, dropped, doubled or stalled.  A ``disconnect`` fault is a cable
pulled and plugged back in, as on a three-wire UART: what is in flight in both
directions is lost (the rest of the chunk, the pty's queues, the band's
pending output), the line is dead for :data:`CABLE_PULL_S`, and nothing else
happens: the port keeps its path, the companion gets no signal (a UART has no
carrier) and the band's frame parser keeps whatever torn frame it holds, as a
real band's would; resynchronising is the protocol's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty

from .faults import PowerLoss
from .handler import ProtocolHandler
from .link_faults import Faulted, LinkFaults

BITS_PER_BYTE = 10
CABLE_PULL_S = 0.05
"""How long the line stays dead after a ``disconnect`` fault."""


class PtySerialPort:
    """Serves ``handler`` on a new pseudo-terminal; :attr:`path` is what to open."""

    def __init__(self, handler: ProtocolHandler, baud: int | None = None, link_name: str = "serial",
                 faults: LinkFaults | None = None) -> None:
        self.handler = handler
        self.baud = baud
        self.link_name = link_name
        self.faults = faults
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.cable_pulls = 0
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._dead_until = 0.0

    def _wire_time(self, count: int) -> float:
        return count * BITS_PER_BYTE / self.baud if self.baud else 0.0

    async def serve(self) -> None:
        """Run until cancelled."""
        self.handler.attach(self.link_name, self._outgoing.put_nowait)
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._write_loop())]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            self.handler.detach(self.link_name)

    def rebind(self, handler: ProtocolHandler) -> None:
        """Serve a new handler (the band rebooted): its output queued before is gone with its RAM."""
        self.handler.detach(self.link_name)
        while not self._outgoing.empty():
            self._outgoing.get_nowait()
        self.handler = handler
        handler.attach(self.link_name, self._outgoing.put_nowait)

    def _line_dead(self) -> bool:
        return asyncio.get_running_loop().time() < self._dead_until

    def _pull_cable(self) -> None:
        self.cable_pulls += 1
        self._dead_until = asyncio.get_running_loop().time() + CABLE_PULL_S
        while not self._outgoing.empty():
            self._outgoing.get_nowait()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                termios.tcflush(fd, termios.TCIOFLUSH)

    def _faulted(self, direction: str, data: bytes) -> Faulted:
        if self.faults is None:
            return Faulted.clean(data)
        return self.faults.stream(f"{self.link_name}.{direction}").apply_bytes(data)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.master, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self.master)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        wire_free = loop.time()
        # A UART delivers bytes as they arrive: read at most 10 ms of wire time at once.
        most = max(1, self.baud // (BITS_PER_BYTE * 100)) if self.baud else 4096
        backlog = False
        while True:
            await self._readable()
            try:
                chunk = os.read(self.master, most)
            except BlockingIOError:
                continue
            except OSError:  # EIO while no process has the port open
                await asyncio.sleep(0.01)
                continue
            if self.baud:
                # The last byte of this chunk cannot have arrived before the wire carried it; bytes
                # that were already waiting came right behind the previous ones (no idle line between).
                wire_free = (wire_free if backlog else max(wire_free, loop.time())) + self._wire_time(len(chunk))
                await asyncio.sleep(max(0.0, wire_free - loop.time()))
            backlog = len(chunk) == most
            if self._line_dead():
                continue
            faulted = self._faulted("rx", chunk)
            for piece in faulted.pieces:
                if piece.delay_s:
                    await asyncio.sleep(piece.delay_s)
                # A power cut mid-request: the board reboots (firmware_sim.cli); the request is never answered.
                with contextlib.suppress(PowerLoss):
                    self.handler.receive(self.link_name, piece.data)
            if faulted.disconnect:
                self._pull_cable()

    async def _write_loop(self) -> None:
        while True:
            data = await self._outgoing.get()
            if self.baud:
                await asyncio.sleep(self._wire_time(len(data)))
            if self._line_dead():
                continue
            faulted = self._faulted("tx", data)
            for piece in faulted.pieces:
                if piece.delay_s:
                    await asyncio.sleep(piece.delay_s)
                # Like a UART nobody listens to, bytes that do not fit the pty buffer are lost;
                # the companion's retransmission and request timeouts cover that.
                with contextlib.suppress(OSError):  # BlockingIOError (buffer full) or EIO (nobody has the port open)
                    os.write(self.master, piece.data)
            if faulted.disconnect:
                self._pull_cable()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
