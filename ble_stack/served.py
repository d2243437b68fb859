"""A virtual controller on a link, served to a BLE host in another process.

``handcue-sim --hci-server tcp-server:127.0.0.1:9901`` puts the band on a virtual
link and serves a second controller of that link on TCP; the companion (or
``bumble-scan tcp-client:127.0.0.1:9901``) attaches its own host to it.  bumble
reports no loss of the TCP client, so :class:`ControllerServer` polls for it and,
when a host went away without resetting the controller, drops that host's
connections: peripherals on the link advertise again instead of staying held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bumble import hci
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import Transport

from .controllers import CentralController

logger = logging.getLogger(__name__)

HOST_WATCH_INTERVAL = 0.2
"""Seconds between two looks at whether the served host is still attached."""


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
