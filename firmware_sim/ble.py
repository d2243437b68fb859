"""The band's Bluetooth LE side: the protocol handler behind a bumble GATT peripheral.

Three ways to put the band on the air:

* ``link=`` a :class:`bumble.link.LocalLink` shared with a central in the same
  process (tests);
* ``hci_server=`` a bumble transport spec such as ``tcp-server:127.0.0.1:9901``:
  the band sits on a virtual link, and every host that attaches from another process
  gets a virtual controller of its own on that link (:mod:`ble_stack.served`);
* ``hci=`` a bumble HCI transport to a real controller (e.g. ``usb:0``).

Frames are the same COBS byte stream as on serial: writes to RX are fed to the
handler, and its output is notified on TX in pieces of at most ATT MTU - 3 bytes.

Every connection is a link of its own to the handler (``ble-<handle>``): its own
frame parser, its responses notified to it alone, the band's status notifications
to every subscriber.  Several centrals may be connected at once.

A central may send its first requests right behind its write of TX's CCCD, without
waiting for that write's answer (the companion does, to save a round trip), and they
may even arrive first.  So the band holds what it has to say to a link until the
central enables TX notifications (at most :data:`HELD_MAX_BYTES`), then sends it in order.

Pairing (:mod:`firmware_sim.pairing`): once the band holds a bond, a write to RX
from a link that is not trusted (encrypted, bonded central) is peeked at before the
handler sees it; a frame whose request changes state makes the whole write fail with
ATT error 0x05 (insufficient authentication), and the link's parsers start afresh.

GATT robust caching (:mod:`firmware_sim.gatt_caching`) keeps its records with the bonds
(:attr:`BandSecurity.caching`) and trusts the links :meth:`BandSecurity.trusted` trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bumble import att
from bumble.device import Connection, Device
from bumble.gatt import Service
from bumble.link import LocalLink

from ble_stack.addresses import band_address_from_id
from ble_stack.hosts import HostSite
from ble_stack.served import ControllerServer
from protocol.constants import BLE_NAME_PREFIX, MESSAGE_HEADER_SIZE, MessageKind, PairingControl
from protocol.errors import HandCueError
from protocol.framing import FrameParser
from protocol.messages import MessageHeader

from .band import Band
from .ble_peripheral import BandPeripheral, DeviceInfo, PairingHooks, start_band_peripheral
from .faults import PowerLoss
from .gatt_caching import RobustCaching
from .handler import FIRMWARE_VERSION, ProtocolHandler
from .link_faults import LinkFaults
from .pairing import BandSecurity

logger = logging.getLogger(__name__)

BATTERY_UPDATE_S = 5.0
HELD_MAX_BYTES = 4096
"""Output kept for a link whose central has not enabled TX notifications yet; more is dropped."""


class GateRefusal(att.ATT_Error):
    """The gate's refusal of a frame this link may not send (ATT error 0x05); it logs the refusal itself."""


class _RefusedCommandsFilter(logging.Filter):
    """Drops bumble's error report of a Write Command the gate refused (:class:`GateRefusal`), and only that.

    ATT has no answer to a command, so bumble logs the handler's refusal as an unexpected exception, with
    its traceback, on the band's console (it re-raises it with the attribute's handle, the gate's refusal
    as the cause); the gate has logged the refusal itself (e.g. SET_TIME from a paired computer's
    read-only session, whose link is not encrypted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        refused = isinstance(error, GateRefusal) or (isinstance(error, att.ATT_Error) and isinstance(error.__cause__, GateRefusal))
        return not (refused and record.getMessage() == "!!! ignoring exception")


logging.getLogger("bumble.gatt_server").addFilter(_RefusedCommandsFilter())


def link_name(connection: Connection) -> str:
    """The handler's name for the link of one BLE connection."""
    return f"ble-{connection.handle}"


class BlePeripheral:
    """Serves ``handler`` over BLE as ``HandCue-<band id>``, to any number of centrals.

    ``security`` holds the band's bonds and pairing window (by default: bonds in
    memory, window closed).
    """

    def __init__(self, handler: ProtocolHandler, band: Band, *, hci_server: str | None = None, hci: str | None = None,
                 link: LocalLink | None = None, security: BandSecurity | None = None, faults: LinkFaults | None = None,
                 link_factory: Callable[[], LocalLink] = LocalLink) -> None:
        if sum(x is not None for x in (hci_server, hci, link)) != 1:
            raise HandCueError("BLE needs exactly one of --hci-server, --hci or a local link")
        self.handler = handler
        self.band = band
        self.hci_server = hci_server
        self.hci = hci
        self.link = link
        self.security = security or BandSecurity()
        self.faults = faults
        self.link_factory = link_factory  # the link made for hci_server, e.g. a paced one
        self.extra_services: list[Service] = []
        """Services served before the band's own, as a newer firmware might add (they move its handles)."""
        self.name = f"{BLE_NAME_PREFIX}{band.band_id:04X}"
        self.peripheral: BandPeripheral | None = None
        self._outgoing: asyncio.Queue[tuple[Connection, bytes | None]] = asyncio.Queue()
        """Output per connection, in order; ``None`` releases what was held for it (it subscribed)."""
        self._held: dict[int, list[bytes]] = {}
        """Per connection handle: output waiting for the central to enable TX notifications."""
        self._peek_parsers: dict[int, FrameParser] = {}
        """Per connection handle: a parser that peeks at the frames of a link that is not trusted."""
        self._tasks: list[asyncio.Task[None]] = []
        self._server: ControllerServer | None = None

    @property
    def address(self) -> str:
        assert self.peripheral is not None
        return self.peripheral.address

    async def start(self) -> None:
        await self.security.load()
        hooks = PairingHooks(
            keystore=self.security.keystore,
            pairing_config_factory=self.security.pairing_config,
            read_state=lambda connection: bytes([self.security.state_for(connection)]),
            on_control=self._on_pairing_control,
        )
        try:
            if self.hci_server is not None:
                self.link = self.link_factory()
                self._server = ControllerServer(self.hci_server, self.link)
                await self._server.start()
            site: HostSite | None = self.link if self.link is not None else self.hci
            assert site is not None  # checked in __init__
            self.peripheral = await start_band_peripheral(
                site,
                name=self.name,
                address=band_address_from_id(self.name),
                on_write=self._on_write,
                battery_percent=round(self.band.battery_percent),
                device_info=DeviceInfo(firmware_revision=".".join(map(str, FIRMWARE_VERSION)), serial_number=f"{self.band.band_id:04X}"),
                pairing=hooks,
                extra_services=self.extra_services,
                caching=RobustCaching(self.security.caching, self.security.trusted),
            )
        except Exception as exc:  # bumble raises its own types for bad transport specs
            raise HandCueError(f"cannot start BLE on {self.hci_server or self.hci or 'the local link'}: {exc}") from exc
        self.peripheral.inject_faults(self.faults)
        self.peripheral.device.on(Device.EVENT_CONNECTION, self._on_connection)
        self.peripheral.on_tx_subscription(lambda connection: self._outgoing.put_nowait((connection, None)))
        self._tasks += [asyncio.create_task(self._tx_loop()), asyncio.create_task(self._battery_loop())]

    # ------------------------------------------------------------ connections

    def _on_connection(self, connection: Connection) -> None:
        """A central connected: a link of its own, with a fresh parser."""
        name = link_name(connection)
        self.handler.attach(name, lambda data: self._outgoing.put_nowait((connection, data)))
        connection.on(Connection.EVENT_PAIRING, lambda _keys: self._on_paired(connection))

        def on_disconnection(_reason: int) -> None:
            self.handler.detach(name)
            self._peek_parsers.pop(connection.handle, None)
            self._held.pop(connection.handle, None)

        connection.on(Connection.EVENT_DISCONNECTION, on_disconnection)

    def _on_paired(self, connection: Connection) -> None:
        """A central bonded: the gate trusts it from now on, and its bond learns it is change-aware."""
        self.security.on_paired(connection)
        if self.peripheral is not None:
            self.peripheral.caching.update(connection)

    def _on_write(self, connection: Connection, data: bytes) -> None:
        name = link_name(connection)
        if name not in self.handler.links:  # a write racing the connection event
            self._on_connection(connection)
        if not self.security.trusted(connection):  # peeked at even before the first bond: no frame slips through half-seen
            self._gate(connection, data)
        # A power cut mid-request: the board reboots (firmware_sim.cli); the request is never answered.
        with contextlib.suppress(PowerLoss):
            self.handler.receive(name, data)

    async def rebind(self, handler: ProtocolHandler, band: Band) -> None:
        """Serve a rebooted band: connections drop, output queued before the reboot is gone."""
        for name in [name for name in self.handler.links if name.startswith("ble-")]:
            self.handler.detach(name)
        self.handler, self.band = handler, band
        while not self._outgoing.empty():
            self._outgoing.get_nowait()
        self._peek_parsers.clear()
        self._held.clear()
        if self.peripheral is not None:
            await self.peripheral.disconnect_all()

    def _gate(self, connection: Connection, data: bytes) -> None:
        """Refuse the write if a frame it completes is a request this link may not send."""
        parser = self._peek_parsers.setdefault(connection.handle, FrameParser(self.handler.max_frame))
        for payload in parser.feed(data):
            if len(payload) < MESSAGE_HEADER_SIZE:
                continue  # the handler answers malformed frames
            header = MessageHeader.parse(payload)
            if header.kind == MessageKind.REQUEST and not self.security.allows(connection, header.opcode):
                # Both parsers start afresh: the refused write is dropped whole.
                self._peek_parsers.pop(connection.handle, None)
                self.handler.attach(link_name(connection), lambda out: self._outgoing.put_nowait((connection, out)))
                logger.info("refused opcode %d from %s: not a paired, encrypted link", header.opcode, connection.peer_address)
                raise GateRefusal(att.ATT_INSUFFICIENT_AUTHENTICATION_ERROR)

    async def _on_pairing_control(self, connection: Connection, value: bytes) -> None:
        if bytes(value) != bytes([PairingControl.FORGET_ME]):
            raise att.ATT_Error(att.ErrorCode.VALUE_NOT_ALLOWED)
        if not self.security.trusted(connection):
            raise att.ATT_Error(att.ATT_INSUFFICIENT_AUTHENTICATION_ERROR)
        await self.security.forget(connection)

    # ------------------------------------------------------------ buttons

    def open_pairing_window(self, seconds: float | None = None) -> None:
        """The button was pressed: accept new pairings for a while."""
        if seconds is None:
            self.security.window.open()
        else:
            self.security.window.open(seconds)

    async def factory_reset(self) -> None:
        """The button was held: bonds and routine erased, every central disconnected."""
        band = self.band
        if band.interpreter is not None:
            band.stop()
        band.storage.erase()
        band.reload()
        band.announce_state()
        await self.security.forget_all()
        self.security.window.close()
        if self.peripheral is not None:
            await self.peripheral.disconnect_all()
        logger.info("factory reset: bonds and routine erased")

    # ------------------------------------------------------------ output

    async def _tx_loop(self) -> None:
        while True:
            connection, data = await self._outgoing.get()
            peripheral = self.peripheral
            if peripheral is None or connection.handle not in peripheral.device.connections:
                continue  # that central is gone: like a UART without a reader
            held = self._held.get(connection.handle)
            if data is None:  # it subscribed: what was held goes first
                pending = self._held.pop(connection.handle, [])
            elif held is not None or not peripheral.subscribed(connection):
                held = self._held.setdefault(connection.handle, [])
                if sum(map(len, held)) + len(data) <= HELD_MAX_BYTES:
                    held.append(data)
                else:
                    logger.debug("dropped %d bytes for %s: it has not enabled TX notifications", len(data), connection.peer_address)
                continue
            else:
                pending = [data]
            try:
                for item in pending:
                    size = connection.att_mtu - 3
                    for offset in range(0, len(item), size):
                        await peripheral.notify_connection(connection, item[offset : offset + size])
            except Exception:  # a disconnect mid-notification; the companion retries
                logger.debug("notification failed", exc_info=True)

    async def _battery_loop(self) -> None:
        while True:
            await asyncio.sleep(BATTERY_UPDATE_S)
            level = round(self.band.battery_percent)
            if self.peripheral is not None and level != self.peripheral.battery_percent:
                self.peripheral.set_battery(level)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for name in [name for name in self.handler.links if name.startswith("ble-")]:
            self.handler.detach(name)
        if self.peripheral is not None:
            with contextlib.suppress(Exception):
                await self.peripheral.close()
        if self._server is not None:
            await self._server.close()
