"""A bumble host attached to a controller, on a virtual link or through an HCI transport.

Both sides build their BLE host the same way and differ only in the controller
they put on a virtual link (the band's :class:`~ble_stack.controllers.BandController`,
the central's :class:`~ble_stack.controllers.CentralController`).  Where the host
finds its controller is a parameter everywhere (a :data:`HostSite`), so the same code
runs on bumble's ``LocalLink``, on a paced link, on a controller served by another
process or on a USB dongle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

if TYPE_CHECKING:  # a host on an HCI transport needs neither (bumble.link and bumble.controller cost about 20 ms to import)
    from bumble.controller import Controller
    from bumble.link import LocalLink

logger = logging.getLogger(__name__)

HostSite: TypeAlias = "LocalLink | Transport | str"
"""Where a host finds its controller: a virtual link (a controller of its own is
created on it), an open bumble transport (the caller keeps it), or a transport spec
for :func:`bumble.transport.open_transport` such as ``tcp-client:127.0.0.1:9901`` or
``usb:0`` (opened here, closed by :meth:`AttachedHost.detach`)."""

ControllerFactory: TypeAlias = "Callable[..., Controller]"
"""Builds the virtual controller for a link: called as ``factory(name, link=link)``."""


@dataclasses.dataclass
class AttachedHost:
    """A bumble :class:`~bumble.host.Host` and what it is attached through."""

    host: Host
    controller: Controller | None = None
    """Our virtual controller on ``link`` (removed from it by :meth:`detach`)."""
    link: LocalLink | None = None
    transport: Transport | None = None
    """The HCI transport the host talks through (None on a link)."""
    owns_transport: bool = False
    """Whether :meth:`detach` closes ``transport`` (it was opened from a spec here)."""

    @property
    def transport_lost(self) -> bool:
        """Whether the HCI transport went away (bumble then flushes all connections)."""
        if self.transport is None:
            return False
        terminated: asyncio.Future[None] | None = getattr(self.transport.source, "terminated", None)
        return terminated is not None and terminated.done()

    async def detach(self) -> None:
        """Take our controller off the link and close the transport opened here (idempotent)."""
        if self.controller is not None and self.link is not None:
            self.link.remove_controller(self.controller)
            self.controller = None
        transport, self.transport = self.transport, None
        if transport is not None and self.owns_transport:
            await transport.close()


async def attach_host(site: HostSite, *, name: str, controller_factory: ControllerFactory | None = None) -> AttachedHost:
    """A host on ``site``; on a link, its controller is ``controller_factory(name, link=site)`` (bumble's
    plain :class:`~bumble.controller.Controller` by default)."""
    if isinstance(site, str):
        transport = await open_transport(site)
        return AttachedHost(Host(controller_source=transport.source, controller_sink=transport.sink), transport=transport, owns_transport=True)
    if isinstance(site, Transport):
        return AttachedHost(Host(controller_source=site.source, controller_sink=site.sink), transport=site)
    if controller_factory is None:
        from bumble.controller import Controller

        controller_factory = Controller
    controller = controller_factory(name, link=site)
    return AttachedHost(Host(controller, AsyncPipeSink(controller)), controller=controller, link=site)
