"""Simulated HandCue band as a BLE peripheral, running on a bumble virtual controller.

The band is a bumble :class:`~bumble.device.Device` whose controller sits on a
:class:`bumble.link.LocalLink` (or behind any bumble HCI transport).  It advertises
connectably with legacy advertising PDUs and serves:

* a Nordic-UART-style service (``6E400001-...``): RX (``6E400002-...``, write and
  write-without-response, every value written is handed to ``on_write``) and TX
  (``6E400003-...``, notify, fed by :meth:`BandPeripheral.notify`);
* Device Information (0x180A): manufacturer name, model number, firmware revision
  and serial number strings;
* Battery (0x180F): battery level, read + notify (:meth:`BandPeripheral.set_battery`);
* with :class:`PairingHooks`, a pairing characteristic (``6E400010-...``) in the
  HandCue service: read the pairing state byte, write a control byte; and bumble's SMP
  answering pairing requests with the hooks' key store and pairing configuration.

On every connection the band asks for its preferred ATT MTU itself (an Exchange MTU
request from its GATT client, as Nordic's ``nrf_ble_gatt`` does), so the link carries
247-byte ATT packets from the second connection event on, whatever the central asks
later; a central answers with the MTU it accepts.  Every host has the GATT service with
Database Hash and Service Changed (bumble adds it), so a central that cached the band's
handles can check them with one read.  The band implements robust caching
(:mod:`firmware_sim.gatt_caching`, Core 5.1): Client Supported Features is per client, and
a bonded central that enabled it may skip that read; if the database changed since, its
commands are ignored and its first request answered with error 0x12 (Database Out Of Sync).

Advertising layout (the same one a real band must use, because a legacy advertising
PDU carries at most 31 bytes and flags + 128-bit UUID + name do not fit in one):

* advertising data: flags + complete list of 128-bit service UUIDs (21 bytes);
* scan response data: complete local name.

bumble's virtual controller does not model SCAN_REQ/SCAN_RSP: a scanner is sent a
copy of the advertising data as "scan response" and the real scan response data is
lost.  :class:`ble_stack.controllers.BandController` compensates by appending the scan response data to the
advertising PDU it puts on the virtual link, so any scanner on the link sees both.
The HCI-level configuration of the band stays within legacy limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Final

from bumble import att, core, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import (
    GATT_BATTERY_LEVEL_CHARACTERISTIC,
    GATT_BATTERY_SERVICE,
    GATT_DEVICE_INFORMATION_SERVICE,
    GATT_FIRMWARE_REVISION_STRING_CHARACTERISTIC,
    GATT_MANUFACTURER_NAME_STRING_CHARACTERISTIC,
    GATT_MODEL_NUMBER_STRING_CHARACTERISTIC,
    GATT_SERIAL_NUMBER_STRING_CHARACTERISTIC,
    Characteristic,
    CharacteristicValue,
    Service,
)
from bumble.keys import KeyStore
from bumble.pairing import PairingConfig

from ble_stack.addresses import random_static_address
from ble_stack.controllers import BandController
from ble_stack.hosts import AttachedHost, HostSite, attach_host
from protocol.constants import BleUuid

from .gatt_caching import RobustCaching
from .link_faults import LinkFaults, PacketFaults

logger = logging.getLogger(__name__)

UART_SERVICE_UUID: Final = BleUuid.SERVICE.upper()
UART_RX_CHAR_UUID: Final = BleUuid.RX.upper()
UART_TX_CHAR_UUID: Final = BleUuid.TX.upper()
PAIRING_CHAR_UUID: Final = BleUuid.PAIRING.upper()

PREFERRED_ATT_MTU: Final = 247
"""Largest ATT MTU the band accepts (one 251-byte LL payload minus the L2CAP header)."""
LEGACY_ADV_MAX: Final = 31
"""Maximum size of legacy advertising data and of legacy scan response data."""
DEFAULT_ADV_INTERVAL_MS: Final = 100.0
"""Advertising interval once the fast period is over (and with ``fast_advertising=False``)."""
FAST_ADV_INTERVAL_MS: Final = (20.0, 30.0)
"""Advertising interval range right after boot or a disconnect (Apple's accessory guidelines
ask for 20 ms at first): a central that comes back finds the band within an event or two."""
FAST_ADV_SECONDS: Final = 30.0
"""How long the band advertises fast after boot or a disconnect before it slows down to save power."""
DISCONNECT_TIMEOUT: Final = 2.0
"""Seconds the band waits for a central to confirm a disconnection before it forgets the link."""
MAX_CENTRALS: Final = 4
"""Centrals connected at once; the band advertises (stays connectable) until it has this many."""

WriteHandler = Callable[[Connection, bytes], None]
"""Called with the connection and every value written to RX (write request or write
command).  An :class:`bumble.att.ATT_Error` it raises is the answer to a write request."""


@dataclasses.dataclass(frozen=True)
class PairingHooks:
    """What the band's pairing policy gives the peripheral (see :mod:`firmware_sim.pairing`)."""

    keystore: KeyStore
    """Where bumble's SMP stores and finds bonds."""
    pairing_config_factory: Callable[[Connection], PairingConfig]
    """bumble's ``Device.pairing_config_factory``: decides whether and how to pair."""
    read_state: Callable[[Connection], bytes]
    """The value of the pairing characteristic for a connection."""
    on_control: Callable[[Connection, bytes], Awaitable[None]]
    """A value written to the pairing characteristic; may raise :class:`bumble.att.ATT_Error`."""


def build_advertising_data(service_uuid: str = UART_SERVICE_UUID, battery_percent: int | None = None) -> bytes:
    """Advertising data: flags (LE general discoverable, no BR/EDR) + 128-bit UUID
    (+ Battery service data with the level, so scanners show it without connecting)."""
    flags = AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG
    data = bytes(
        AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([flags])),
                (
                    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    UUID(service_uuid).to_bytes(force_128=True),
                ),
                *([(AdvertisingData.SERVICE_DATA_16_BIT_UUID, (0x180F).to_bytes(2, "little") + bytes([battery_percent]))] if battery_percent is not None else []),
            ]
        )
    )
    assert len(data) <= LEGACY_ADV_MAX
    return data


def build_scan_response_data(name: str) -> bytes:
    """Scan response data: the complete local name (at most 29 UTF-8 bytes)."""
    encoded = name.encode()
    if len(encoded) > LEGACY_ADV_MAX - 2:
        raise ValueError(f"name {name!r} is longer than {LEGACY_ADV_MAX - 2} bytes")
    return bytes(AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, encoded)]))


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """Strings served by the Device Information service."""

    manufacturer_name: str = "HandCue"
    model_number: str = "HC-1"
    firmware_revision: str = "0.1.0-sim"
    serial_number: str = "SIM-0000"


class BandPeripheral:
    """A running simulated band.  Create it with :func:`start_band_peripheral`."""

    def __init__(
        self,
        device: Device,
        *,
        name: str,
        on_write: WriteHandler,
        battery_percent: int,
        device_info: DeviceInfo,
        attached: AttachedHost,
        pairing: PairingHooks | None = None,
        advertising: dict[str, object] | None = None,
        max_centrals: int = MAX_CENTRALS,
        fast_advertising: bool = True,
        extra_services: Sequence[Service] = (),
        caching: RobustCaching | None = None,
    ) -> None:
        self.device = device
        self._advertising = advertising or {}
        """Keyword arguments of ``Device.start_advertising``, to advertise again."""
        self.max_centrals = max_centrals
        self.name = name
        self._on_write = on_write
        self._battery = self._check_percent(battery_percent)
        self._attached = attached
        self._tasks: set[asyncio.Task[None]] = set()
        self._link_tasks: set[asyncio.Task[None]] = set()
        """MTU requests to centrals: they end with their answer or their connection."""
        self._closed = False
        self.fast_advertising = fast_advertising
        self._slow_down: asyncio.TimerHandle | None = None
        self.rx_bytes = 0
        """Total bytes received on RX since start (all connections)."""
        self.rx_writes = 0
        """Number of RX writes (requests + commands) received since start."""
        self._rx_faults: PacketFaults | None = None
        self._tx_faults: PacketFaults | None = None

        self.rx_char: Characteristic[bytes] = Characteristic(
            UART_RX_CHAR_UUID,
            Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_rx_write),
        )
        self.tx_char: Characteristic[bytes] = Characteristic(
            UART_TX_CHAR_UUID,
            Characteristic.Properties.NOTIFY,
            Characteristic.READABLE,
            b"",
        )
        self.battery_char: Characteristic[bytes] = Characteristic(
            GATT_BATTERY_LEVEL_CHARACTERISTIC,
            Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
            Characteristic.READABLE,
            CharacteristicValue(read=lambda _connection: bytes([self._battery])),
        )
        info_chars: list[Characteristic[bytes]] = [
            Characteristic(
                uuid,
                Characteristic.Properties.READ,
                Characteristic.READABLE,
                text.encode(),
            )
            for uuid, text in (
                (
                    GATT_MANUFACTURER_NAME_STRING_CHARACTERISTIC,
                    device_info.manufacturer_name,
                ),
                (GATT_MODEL_NUMBER_STRING_CHARACTERISTIC, device_info.model_number),
                (
                    GATT_FIRMWARE_REVISION_STRING_CHARACTERISTIC,
                    device_info.firmware_revision,
                ),
                (GATT_SERIAL_NUMBER_STRING_CHARACTERISTIC, device_info.serial_number),
            )
        ]
        uart_chars: list[Characteristic[bytes]] = [self.rx_char, self.tx_char]
        if pairing is not None:
            device.keystore = pairing.keystore
            device.pairing_config_factory = pairing.pairing_config_factory
            uart_chars.append(
                Characteristic(
                    PAIRING_CHAR_UUID,
                    Characteristic.Properties.READ | Characteristic.Properties.WRITE,
                    Characteristic.READABLE | Characteristic.WRITEABLE,
                    CharacteristicValue(read=pairing.read_state, write=pairing.on_control),
                )
            )
        device.add_services(
            [
                *extra_services,  # a newer firmware's services (e.g. DFU) come first: every handle after them moves
                Service(UART_SERVICE_UUID, uart_chars),
                Service(GATT_DEVICE_INFORMATION_SERVICE, info_chars),
                Service(GATT_BATTERY_SERVICE, [self.battery_char]),
            ]
        )
        device.gatt_server.max_mtu = PREFERRED_ATT_MTU
        self.caching = caching if caching is not None else RobustCaching()
        """Robust caching: per-client Client Supported Features, change-unaware bonded clients held off."""
        self.caching.install(device)  # after every service: it takes the Database Hash

    # ------------------------------------------------------------------ state

    @property
    def address(self) -> str:
        """The band's random static address, e.g. ``"C3:1A:..."``."""
        return self.device.random_address.to_string(with_type_qualifier=False)

    @property
    def connections(self) -> list[Connection]:
        """Currently open LE connections."""
        return list(self.device.connections.values())

    @property
    def battery_percent(self) -> int:
        """Battery level currently served."""
        return self._battery

    def subscribed(self, connection: Connection) -> bool:
        """Whether the central on ``connection`` enabled TX notifications (wrote TX's CCCD)."""
        cccd = self.device.gatt_server.subscribers.get(connection, {}).get(self.tx_char.handle)
        return cccd is not None and len(cccd) == 2 and cccd[0] & 0x01 != 0

    def on_tx_subscription(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(connection)`` whenever a central enables TX notifications."""

        def on_subscription(bearer: object, characteristic: object, notify_enabled: bool, _indicate_enabled: bool) -> None:
            if characteristic is self.tx_char and notify_enabled and isinstance(bearer, Connection):
                callback(bearer)

        self.device.gatt_server.on(self.device.gatt_server.EVENT_CHARACTERISTIC_SUBSCRIPTION, on_subscription)

    def max_notify_size(self) -> int:
        """Largest notification every connected central can receive (ATT MTU - 3)."""
        mtus = [c.att_mtu for c in self.device.connections.values()]
        return (min(mtus) if mtus else att.ATT_DEFAULT_MTU) - 3

    # ------------------------------------------------------------------ I/O

    def _on_rx_write(self, connection: Connection, value: bytes) -> None:
        self.rx_bytes += len(value)
        self.rx_writes += 1
        if self._rx_faults is not None:  # the write may be garbled, lost, doubled, held back or drop the link
            self._rx_faults.receive(bytes(value), lambda data: self._on_write(connection, data))
            return
        try:
            self._on_write(connection, bytes(value))
        except att.ATT_Error:
            raise  # a refusal: the answer to a write request (a write command is dropped)
        except Exception as error:
            logger.exception("on_write handler failed")
            # Reported as an ATT error to a write request; dropped for a command.
            raise att.ATT_Error(att.ATT_UNLIKELY_ERROR_ERROR) from error

    async def notify(self, data: bytes) -> None:
        """Notify ``data`` on TX to every central that enabled TX notifications.

        Raises:
            ValueError: if ``data`` exceeds ATT MTU - 3 of a connected central (bumble
                would silently truncate it).
        """
        limit = self.max_notify_size()
        if len(data) > limit:
            raise ValueError(f"notification of {len(data)} bytes exceeds MTU-3={limit}")
        if self._tx_faults is not None:
            await self._tx_faults.send(bytes(data), lambda packet: self.device.notify_subscribers(self.tx_char, packet))
            return
        await self.device.notify_subscribers(self.tx_char, bytes(data))

    async def notify_connection(self, connection: Connection, data: bytes) -> None:
        """Notify ``data`` on TX to one central (if it enabled TX notifications).

        Raises:
            ValueError: if ``data`` exceeds that central's ATT MTU - 3.
        """
        limit = connection.att_mtu - 3
        if len(data) > limit:
            raise ValueError(f"notification of {len(data)} bytes exceeds MTU-3={limit}")
        if self._tx_faults is not None:  # the band's answers go this way: faulted like notify()'s
            await self._tx_faults.send(bytes(data), lambda packet: self.device.notify_subscriber(connection, self.tx_char, packet))
            return
        await self.device.notify_subscriber(connection, self.tx_char, bytes(data))

    def inject_faults(self, faults: LinkFaults | None) -> None:
        """Apply ``faults`` per RX write (stream ``ble.rx``) and per TX notification (``ble.tx``); None: a clean link.

        A ``disconnect`` fault drops every connection from the band's side.
        """
        if faults is None:
            self._rx_faults = self._tx_faults = None
            return
        self._rx_faults = PacketFaults(faults.stream("ble.rx"), self._fault_disconnect)
        self._tx_faults = PacketFaults(faults.stream("ble.tx"), self._fault_disconnect)

    def _fault_disconnect(self) -> None:
        task = asyncio.get_running_loop().create_task(self.disconnect_all())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_battery(self, percent: int) -> None:
        """Set the battery level (0-100) and notify subscribed centrals."""
        self._battery = self._check_percent(percent)
        task = asyncio.get_running_loop().create_task(self.device.notify_subscribers(self.battery_char, bytes([self._battery])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start_advertising(self) -> None:
        """Advertise (connectably), and again whenever there is room for one more central.

        bumble's controller stops advertising when a central connects; the band
        advertises again at once while fewer than :attr:`max_centrals` are connected,
        and when one leaves.  After boot and after a disconnect it advertises fast
        (:data:`FAST_ADV_INTERVAL_MS`) for :data:`FAST_ADV_SECONDS`, then at its normal interval.
        """
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)
        await self._advertise(fast=True)

    def _on_connection(self, connection: Connection) -> None:
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._spawn(self._advertise(fast=True)))
        self._spawn(self._advertise(fast=False))
        task = asyncio.get_running_loop().create_task(self._request_mtu(connection))
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)

    @staticmethod
    async def _request_mtu(connection: Connection) -> None:
        """Ask the central for :data:`PREFERRED_ATT_MTU` at once: the exchange overlaps the central's
        first requests instead of costing it two connection events of its own."""
        try:
            await connection.gatt_client.request_mtu(PREFERRED_ATT_MTU)
        except Exception:  # the central refused, or left: the default MTU stays
            logger.debug("MTU exchange with %s failed", connection.peer_address, exc_info=True)

    async def _advertise(self, fast: bool) -> None:
        if self._closed or len(self.device.connections) >= self.max_centrals:
            return
        fast = fast and self.fast_advertising
        if self.device.is_advertising:
            if not fast or self._slow_down is not None:
                return
            await self.device.stop_advertising()  # speed up: a central just left
        parameters = dict(self._advertising)
        if fast:
            parameters.update(advertising_interval_min=FAST_ADV_INTERVAL_MS[0], advertising_interval_max=FAST_ADV_INTERVAL_MS[1])
        try:
            await self.device.start_advertising(**parameters)  # type: ignore[arg-type]
        except Exception:  # closing, or the transport went away
            logger.debug("could not advertise again", exc_info=True)
            return
        if self._slow_down is not None:
            self._slow_down.cancel()
            self._slow_down = None
        if fast:
            self._slow_down = asyncio.get_running_loop().call_later(FAST_ADV_SECONDS, self._end_fast_advertising)

    def _end_fast_advertising(self) -> None:
        self._slow_down = None

        async def slow_down() -> None:
            if self._closed or not self.device.is_advertising:
                return
            try:
                await self.device.stop_advertising()
            except Exception:
                logger.debug("could not stop advertising", exc_info=True)
                return
            await self._advertise(fast=False)

        self._spawn(slow_down())

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def disconnect_all(self, reason: int = hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR,
                             timeout: float = DISCONNECT_TIMEOUT) -> None:
        """Close every connection from the band's side, each within ``timeout`` seconds.

        A central that does not answer (gone, or its host stuck) cannot keep the band
        from closing: after the timeout the connection is forgotten, as the link layer's
        supervision timeout would.
        """
        async def drop(connection: Connection) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await connection.disconnect(reason)
            except (TimeoutError, hci.HCI_Error, core.BaseBumbleError) as error:
                logger.debug("disconnecting %s: %s; forgetting it", connection.peer_address, error)
                self.device.connections.pop(connection.handle, None)

        await asyncio.gather(*(drop(connection) for connection in self.connections))

    async def close(self) -> None:
        """Stop advertising, drop connections and detach from the link/transport."""
        if self._closed:
            return
        self._closed = True
        # Let advertising restarts in flight finish (new ones see _closed and return): cancelling
        # one mid-command makes bumble 0.0.236 set the result of a cancelled future when the
        # controller's Command Complete arrives (InvalidStateError in Host.on_packet).
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=DISCONNECT_TIMEOUT)
        try:
            await self.device.stop_advertising()
            await self.disconnect_all()
        except Exception:  # best effort: the transport may already be gone
            logger.debug("error while closing band", exc_info=True)
        for task in list(self._link_tasks):  # their connections are gone: they end now
            task.cancel()
        if self._slow_down is not None:
            self._slow_down.cancel()
        for task in list(self._tasks):
            task.cancel()
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await self.device.power_off()
        except (TimeoutError, hci.HCI_Error, core.BaseBumbleError):
            logger.debug("powering off the band's host timed out", exc_info=True)
        await self._attached.detach()

    @staticmethod
    def _check_percent(percent: int) -> int:
        if not 0 <= percent <= 100:
            raise ValueError(f"battery percent out of range: {percent}")
        return percent


async def start_band_peripheral(
    site: HostSite,
    *,
    name: str,
    address: str,
    on_write: WriteHandler,
    battery_percent: int = 100,
    device_info: DeviceInfo | None = None,
    advertising_interval_ms: float = DEFAULT_ADV_INTERVAL_MS,
    pairing: PairingHooks | None = None,
    extra_services: Sequence[Service] = (),
    caching: RobustCaching | None = None,
) -> BandPeripheral:
    """Power on a simulated band and start advertising.

    Args:
        site: where the band's host finds its controller: a virtual link (a
            :class:`~ble_stack.controllers.BandController` is created on it), an open
            bumble transport, or a transport spec (closed by :meth:`BandPeripheral.close`).
        name: complete local name, e.g. ``"HandCue-1A2B"`` (advertised in the scan
            response and served as the GAP device name).
        address: random static address of the band, e.g. from
            :func:`ble_stack.addresses.band_address_from_id`.  Must differ from the central's.
        on_write: called with the connection and each value written to RX.  Runs in
            the event loop: keep it short, schedule any async work (e.g. ``notify``) as a task.
        battery_percent: initial battery level.
        device_info: Device Information strings.
        advertising_interval_ms: advertising interval.
        pairing: key store, pairing policy and pairing characteristic; without it the
            band cannot pair (bumble's defaults) and serves no pairing characteristic.
        extra_services: services served before the band's own (a newer firmware's), which
            move the handles of everything after them.
        caching: robust caching with the bonds' records and the band's idea of a trusted
            link; by default one that persists nothing (no bonded client is ever change-unaware).
    """
    own_address = random_static_address(address)
    adv_data = build_advertising_data(battery_percent=battery_percent)
    scan_response = build_scan_response_data(name)
    attached = await attach_host(site, name=f"band-{name}", controller_factory=BandController)
    device = Device(name=name, address=own_address, host=attached.host)
    band = BandPeripheral(
        device,
        name=name,
        on_write=on_write,
        battery_percent=battery_percent,
        device_info=device_info or DeviceInfo(),
        attached=attached,
        pairing=pairing,
        extra_services=extra_services,
        caching=caching,
        advertising=dict(
            advertising_data=adv_data,
            scan_response_data=scan_response,
            advertising_interval_min=advertising_interval_ms,
            advertising_interval_max=advertising_interval_ms,
        ),
    )
    try:
        await device.power_on()
        await band.start_advertising()
    except BaseException:
        await band.close()
        raise
    logger.info("band %s advertising as %s", name, band.address)
    return band
