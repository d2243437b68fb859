"""A virtual controller on a link, served to a BLE host in another process.

``handcue-sim --hci-server tcp-server:127.0.0.1:9901`` puts the band on a virtual
link and serves a second controller of that link on TCP; the companion (or
``bumble-scan tcp-client:127.0.0.1:9901``) attaches its own host to it.  bumble
reports no loss of the TCP client, so :class:`ControllerServer` polls for it and,
when a host went away without resetting the controller, drops that host's
connections: peripherals on the link advertise again instead of staying held.

``tcp-server:`` specs are served by :func:`open_tcp_server_transport`, not bumble's
own: bumble's lets a departing client's late ``connection_lost`` detach the host
that attached just after it (seen as a new host whose HCI Reset never gets an answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bumble import hci
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import StreamPacketSource, Transport

from .controllers import CentralController

logger = logging.getLogger(__name__)

HOST_WATCH_INTERVAL = 0.2
"""Seconds between two looks at whether the served host is still attached."""


class _TcpServerSink:
    """Sends the controller's packets to the attached host, if any (same shape as bumble's)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def on_packet(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.write(packet)


class _TcpServerProtocol(asyncio.Protocol):
    """One host's TCP connection; only the newest host is attached."""

    def __init__(self, source: StreamPacketSource, sink: _TcpServerSink) -> None:
        self.source = source
        self.sink = sink
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        previous = self.sink.transport
        if previous is not None:  # one host at a time: a newcomer replaces a lingering one
            previous.close()
        self.transport = transport
        self.sink.transport = transport
        self.source.parser.reset()  # no half packet of the previous host

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink.transport is self.transport:  # a newer host may already be attached
            self.sink.transport = None

    def data_received(self, data: bytes) -> None:
        if self.sink.transport is self.transport:
            self.source.data_received(data)


class _TcpServerTransport(Transport):
    def __init__(self, source: StreamPacketSource, sink: _TcpServerSink, server: asyncio.Server) -> None:
        super().__init__(source, sink)
        self.server = server


async def open_tcp_server_transport(spec: str) -> Transport:
    """A bumble HCI transport listening on ``tcp-server:HOST:PORT`` (``_`` for any host)."""
    host, _, port = spec.removeprefix("tcp-server:").rpartition(":")
    source, sink = StreamPacketSource(), _TcpServerSink()
    server = await asyncio.get_running_loop().create_server(lambda: _TcpServerProtocol(source, sink), None if host in ("", "_") else host, int(port))
    return _TcpServerTransport(source, sink, server)


class ServedController(CentralController):
    """The controller served to another process; remembers that a host talked to it."""

    host_seen = False

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        self.host_seen = True  # every host starts with HCI Reset
        super().on_hci_packet(packet)


def host_attached(transport: Transport) -> bool | None:
    """Whether a TCP client is attached to a tcp-server transport (None: unknown).

    bumble reports no loss of the TCP client; its sink just forgets the socket.
    """
    sink: Any = transport.sink
    if not hasattr(sink, "transport"):
        return None
    return sink.transport is not None


class ControllerServer:
    """Serves a :class:`ServedController` of ``link`` on the bumble transport ``spec``."""

    def __init__(self, spec: str, link: LocalLink, *, watch_interval: float = HOST_WATCH_INTERVAL) -> None:
        self.spec = spec
        self.link = link
        self.watch_interval = watch_interval
        self.controller: ServedController | None = None
        self._transport: Transport | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the transport (e.g. listen on TCP) and put the served controller on the link."""
        if self.spec.startswith("tcp-server:"):
            self._transport = await open_tcp_server_transport(self.spec)
        else:
            self._transport = await open_transport(self.spec)
        self.controller = ServedController("served", host_source=self._transport.source, host_sink=self._transport.sink, link=self.link)
        self._watcher = asyncio.create_task(self._watch_host())

    async def _watch_host(self) -> None:
        """When the other process's host goes away, drop its connections so the band advertises again.

        A host that came and went between two polls is caught too: the controller
        remembers that a host spoke to it.
        """
        assert self.controller is not None and self._transport is not None
        controller, transport = self.controller, self._transport
        while True:
            await asyncio.sleep(self.watch_interval)
            if controller.host_seen and host_attached(transport) is False:
                controller.host_seen = False
                controller.drop_host_state()

    async def close(self) -> None:
        """Stop serving: the controller leaves the link, the TCP socket is closed."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self.controller is not None:
            self.link.remove_controller(self.controller)
            self.controller = None
        transport, self._transport = self._transport, None
        if transport is None:
            return
        with contextlib.suppress(Exception):
            await transport.close()
        # bumble's tcp-server transport leaves its listening socket open: close it.
        server: Any = getattr(transport, "server", None)
        if server is not None:
            client = getattr(transport.sink, "transport", None)
            if client is not None:
                client.close()
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
