"""Virtual controllers on a link, served to BLE hosts in other processes.

``handcue-sim --hci-server tcp-server:127.0.0.1:9901`` puts the band on a virtual
link and serves controllers of that link on TCP; the companion (or
``bumble-scan tcp-client:127.0.0.1:9901``) attaches its own host to one.

* On ``tcp-server:`` every TCP client gets a controller of its own on the link, as
  every phone has its own radio: several companion processes reach the band at once
  (it serves several centrals).  When a client goes away, its controller drops its
  connections and leaves the link, so the band is freed at once.  (bumble's own
  tcp-server transport has one controller for all clients, and a departing client's
  late ``connection_lost`` detaches the host that attached just after it.)
* On any other bumble transport spec there is one served controller; bumble reports no
  loss of that host, so :class:`ControllerServer` polls for it and, when a host went
  away without resetting the controller, drops that host's connections.
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
"""Seconds between two looks at whether the served host is still attached (non-TCP specs)."""


class ServedController(CentralController):
    """A controller served to another process; remembers that a host talked to it."""

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


class _SocketSink:
    """Sends a controller's HCI packets to its host's socket."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def on_packet(self, packet: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(packet)


class _HostConnection(asyncio.Protocol):
    """One host's TCP connection, with a controller of its own on the link."""

    def __init__(self, server: ControllerServer) -> None:
        self.server = server
        self.source = StreamPacketSource()
        self.controller: ServedController | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        index = next(self.server.counter)
        self.controller = ServedController(f"served-{index}", host_source=self.source, host_sink=_SocketSink(transport), link=self.server.link)
        self.server.hosts.add(self)
        logger.debug("host %d attached", index)

    def data_received(self, data: bytes) -> None:
        self.source.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.detach()

    def detach(self) -> None:
        """The host went away: its connections drop (peers see a supervision timeout), its controller leaves."""
        controller, self.controller = self.controller, None
        self.server.hosts.discard(self)
        if controller is not None:
            controller.drop_host_state()
            self.server.link.remove_controller(controller)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ControllerServer:
    """Serves controllers of ``link`` on the bumble transport ``spec`` (one per host on ``tcp-server:``)."""

    def __init__(self, spec: str, link: LocalLink, *, watch_interval: float = HOST_WATCH_INTERVAL) -> None:
        import itertools

        self.spec = spec
        self.link = link
        self.watch_interval = watch_interval
        self.counter = itertools.count(1)
        self.hosts: set[_HostConnection] = set()
        self.controller: ServedController | None = None
        """The one served controller on a non-TCP spec."""
        self._tcp_server: asyncio.Server | None = None
        self._transport: Transport | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (``tcp-server:``) or open the transport and put the served controller on the link."""
        if self.spec.startswith("tcp-server:"):
            host, _, port = self.spec.removeprefix("tcp-server:").rpartition(":")
            self._tcp_server = await asyncio.get_running_loop().create_server(
                lambda: _HostConnection(self), None if host in ("", "_") else host, int(port)
            )
            return
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
        """Stop serving: the controllers leave the link, the sockets are closed."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for host in list(self.hosts):
            host.detach()
        if self._tcp_server is not None:
            self._tcp_server.close()
            with contextlib.suppress(Exception):
                await self._tcp_server.wait_closed()
            self._tcp_server = None
        if self.controller is not None:
            self.link.remove_controller(self.controller)
            self.controller = None
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()
