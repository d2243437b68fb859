"""Serial transport over pyserial, non-blocking on the asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios

import serial

from ..rtt import MIN_RTO_S
from .base import Transport, TransportClosed, TransportError

SERIAL_MTU = 4096
BITS_PER_BYTE = 10
"""Start bit, 8 data bits, stop bit (8N1)."""


class SerialTransport(Transport):
    """A UART (or pty) opened with :func:`serial.serial_for_url`."""

    def __init__(self, address: str, path: str, baud: int = 115200) -> None:
        super().__init__(address)
        self.path = path
        self.baud = baud
        self._port: serial.SerialBase | None = None

    @property
    def mtu(self) -> int:
        return SERIAL_MTU

    @property
    def bytes_per_second(self) -> float:
        return self.baud / BITS_PER_BYTE

    @property
    def min_rto(self) -> float:
        return MIN_RTO_S  # bytes come at the pace of the baud rate, which the timer accounts for

    def discard_output(self) -> None:
        port = self._port
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.reset_output_buffer()  # type: ignore[attr-defined]  # tcflush(TCOFLUSH): on a pty it also drops what the band has not read yet

    async def connect(self, timeout: float) -> None:
        # pyserial's and the OS's errors become TransportError here and in send/_on_readable, nowhere else.
        port: serial.SerialBase | None = None
        try:
            with self.phases.phase("open serial port"):
                port = serial.serial_for_url(self.path, baudrate=self.baud, timeout=0, exclusive=True)
                port.reset_input_buffer()  # forget what the band said to an earlier session
        except (serial.SerialException, OSError) as exc:
            if port is not None:
                port.close()
            text = str(exc)
            if "lock" in text.lower():
                raise TransportError(f"{self.address} is busy: another program has the port open") from exc
            errno = getattr(exc, "errno", None)
            if isinstance(errno, int) and errno > 0:
                # pyserial repeats the path and the errno in its text; the OS's reason alone reads better
                text = {2: "no such device (is the band plugged in? check the path)",
                        13: "permission denied (is your user in the dialout group?)"}.get(errno, os.strerror(errno))
            raise TransportError(f"cannot open {self.address}: {text}") from exc
        self._port = port
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and _still_there(port.fileno()):
            return  # readable, then emptied (a line flush, as a cable pull does): a raw tty reads 0 bytes, not EOF
        if not data:
            asyncio.get_running_loop().remove_reader(port.fileno())
            self._deliver_end("the port was closed")
            return
        self._deliver(data)

    async def send(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise TransportClosed(f"{self.address} is not open")
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(port.fileno(), view) :]
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(port.fileno(), _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_writer(port.fileno())
            except OSError as exc:
                raise TransportClosed(f"{self.address}: write failed: {exc}") from exc

    async def disconnect(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            port.close()
            self._deliver_end("closed")


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _still_there(fd: int) -> bool:
    """Whether the tty behind ``fd`` still answers: a port that is gone (unplugged, its pty closed) fails with EIO."""
    try:
        termios.tcgetattr(fd)
    except (OSError, termios.error):
        return False
    return True
