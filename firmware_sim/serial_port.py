"""The band's serial port: a pseudo-terminal that pyserial opens like hardware.

The simulator keeps both ends of the pty open (so a companion may open, close
and reopen the port) and serves the master end with the protocol handler.
With ``baud`` set, both directions are paced to the wire time of that rate
(10 bits per byte: start, 8 data, stop), so uploads take as long as on a real
UART.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

from .handler import ProtocolHandler

BITS_PER_BYTE = 10


class PtySerialPort:
    """Serves ``handler`` on a new pseudo-terminal; :attr:`path` is what to open."""

    def __init__(self, handler: ProtocolHandler, baud: int | None = None, link_name: str = "serial") -> None:
        self.handler = handler
        self.baud = baud
        self.link_name = link_name
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

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
        while True:
            await self._readable()
            try:
                chunk = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO while no process has the port open
                await asyncio.sleep(0.01)
                continue
            if self.baud:
                # The last byte of this chunk cannot have arrived before the wire carried it.
                wire_free = max(wire_free, loop.time()) + self._wire_time(len(chunk))
                await asyncio.sleep(max(0.0, wire_free - loop.time()))
            self.handler.receive(self.link_name, chunk)

    async def _write_loop(self) -> None:
        while True:
            data = await self._outgoing.get()
            if self.baud:
                await asyncio.sleep(self._wire_time(len(data)))
            # Like a UART nobody listens to, bytes that do not fit the pty buffer are lost;
            # the companion's retransmission and request timeouts cover that.
            with contextlib.suppress(OSError):  # BlockingIOError (buffer full) or EIO (nobody has the port open)
                os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
