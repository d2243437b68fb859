"""A bleak backend running on the bumble user-space Bluetooth stack.

Unchanged bleak code works through it::

    configure(link=link)  # or configure(hci="tcp-client:127.0.0.1:9901")
    device = await BleakScanner.find_device_by_name("HandCue-1A2B",
                                                    backend=BumbleScanner)
    async with BleakClient(device, backend=BumbleClient) as client:
        ...

Where the host comes from is set once with :func:`configure`: either a bumble HCI
transport spec (opened with :func:`bumble.transport.open_transport`: a virtual
controller served by another process, a USB dongle, ...) or, for in-process tests, a
:class:`bumble.link.LocalLink` on which the backend creates its own controller.

One bumble :class:`~bumble.device.Device` (the "central stack") is shared by every
scanner and client of an event loop.  It is created on first use and closed by
:func:`shutdown` (call it before the loop ends) or when :func:`configure` is called
again with something else.

Behaviour worth knowing (and matching the BlueZ backend where it matters):

* ``disconnected_callback`` fires on every disconnection, remote or local (as with
  BlueZ), and services are dropped (as with every bleak backend).
* Connecting requests an ATT MTU of 247 and discovers all services, characteristics
  and descriptors.
* ``write_gatt_char(..., response=False)`` never drops data: bumble queues ACL packets
  without limit.  To give the caller back-pressure, such a write waits while more than
  :data:`WRITE_WITHOUT_RESPONSE_MAX_PENDING` ACL packets are still queued.
* ``pair``/``unpair`` raise :class:`NotImplementedError`; ``pair=True`` is logged and
  ignored, as bleak asks of backends that cannot pair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from bleak import BleakScanner
from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import (
    AdvertisementData,
    AdvertisementDataCallback,
    BaseBleakScanner,
)
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16, normalize_uuid_32
from bumble import att, core, hci, ll
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

__all__ = [
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
    "CentralController",
    "configure",
    "get_central_device",
    "shutdown",
]

logger = logging.getLogger(__name__)

REQUESTED_ATT_MTU = 247
"""ATT MTU requested right after connecting."""
DEFAULT_ATT_MTU = att.ATT_DEFAULT_MTU
WRITE_WITHOUT_RESPONSE_MAX_PENDING = 32
"""A write without response waits while more ACL packets than this are queued."""
CONNECT_CANCEL_GRACE = 2.0
"""Extra seconds for the controller to confirm the cancel of a timed-out connection."""
CLOSE_TIMEOUT = 2.0
"""Seconds allowed for the central stack's orderly shutdown."""
CENTRAL_NAME = "HandCue-companion"

_T = TypeVar("_T")

_AD = AdvertisingData.Type
_UUID_LIST_TYPES = {
    _AD.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _AD.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _AD.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _AD.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _AD.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _AD.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA_TYPES = {
    _AD.SERVICE_DATA_16_BIT_UUID: 2,
    _AD.SERVICE_DATA_32_BIT_UUID: 4,
    _AD.SERVICE_DATA_128_BIT_UUID: 16,
}


# ---------------------------------------------------------------------------
# Helpers


def _uuid_from_le_bytes(data: bytes) -> str:
    """Return bleak's normalized (lower-case, 128-bit) form of a little-endian UUID."""
    if len(data) == 2:
        return normalize_uuid_16(int.from_bytes(data, "little"))
    if len(data) == 4:
        return normalize_uuid_32(int.from_bytes(data, "little"))
    return str(uuid.UUID(bytes=bytes(reversed(data))))


def _uuid_str(value: core.UUID) -> str:
    """Return bleak's normalized form of a bumble UUID."""
    return _uuid_from_le_bytes(value.to_bytes(force_128=True))


def _properties(flags: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if flags & bit]


@dataclasses.dataclass(frozen=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` of devices found by :class:`BumbleScanner`."""

    address: hci.Address
    """Address with its type (public/random), needed to connect."""
    advertisement: Advertisement | None = None
    """The last bumble advertisement (merged with its scan response if any)."""


@dataclasses.dataclass(frozen=True)
class _Config:
    hci: str | None
    link: LocalLink | None
    address: str | None


# ---------------------------------------------------------------------------
# Virtual controller for the central


class CentralController(Controller):
    """bumble's virtual controller with two fixes a central needs.

    * LE Create Connection Cancel: bumble's controller acknowledges it but keeps the
      connection pending and never reports the cancellation, so
      ``Device.connect(timeout=...)`` hangs after its timeout and every later
      connection attempt is refused (and the stale one may complete later).  Here
      the pending connection is dropped and an LE Connection Complete event with
      status Unknown Connection Identifier follows, as the spec requires.
    * HCI Reset: bumble's controller ignores it.  Here it drops connections (the peer
      sees a supervision timeout), scanning, advertising and any pending
      connection, so a new host process attaching to a served controller (see
      ``handcue-sim --hci-server``) starts clean and a band connected to the previous host is freed.
    """

    def on_hci_le_create_connection_cancel_command(self, command: hci.HCI_LE_Create_Connection_Cancel_Command) -> hci.HCI_StatusReturnParameters:
        """Cancel the pending connection and report it as failed."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failure = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # Scheduled so that it reaches the host after the Command Complete event.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failure)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        """Reset: forget connections, scanning, advertising, pending connection."""
        self.drop_host_state()
        return super().on_hci_reset_command(command)

    def drop_host_state(self) -> None:
        """Drop what the (gone or resetting) host had set up, without HCI events."""
        for peer_address, connection in list(self.le_connections.items()):
            connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_CONNECTION_TIMEOUT_ERROR))
            del self.le_connections[peer_address]
        self.pending_le_connection = None
        self.le_scan_enable = False
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()


# ---------------------------------------------------------------------------
# The central stack shared per event loop


class _CentralStack:
    """The shared bumble Device of one event loop, plus scan bookkeeping."""

    def __init__(
        self,
        config: _Config,
        device: Device,
        controller: Controller | None,
        transport: Transport | None,
    ) -> None:
        self.config = config
        self.device = device
        self.controller = controller
        self.transport = transport
        self.connect_lock = asyncio.Lock()
        """bumble accepts only one pending LE connection at a time."""
        self._scan_lock = asyncio.Lock()
        self._scanners: set[BumbleScanner] = set()
        self._scanning_active: bool | None = None
        """None: not scanning; else whether the running scan is active."""
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    @classmethod
    async def create(cls, config: _Config) -> _CentralStack:
        address = hci.Address(config.address, hci.Address.RANDOM_DEVICE_ADDRESS) if config.address else hci.Address.generate_static_address()
        controller: Controller | None = None
        transport: Transport | None = None
        if config.link is not None:
            controller = CentralController("bleak-central", link=config.link)
            host = Host(controller, AsyncPipeSink(controller))
        else:
            assert config.hci is not None
            transport = await open_transport(config.hci)
            host = Host(controller_source=transport.source, controller_sink=transport.sink)
        device = Device(name=CENTRAL_NAME, address=address, host=host)
        stack = cls(config, device, controller, transport)
        try:
            await device.power_on()
        except BaseException:
            await stack.close()
            raise
        logger.debug("bumble central stack up as %s", address)
        return stack

    @property
    def transport_lost(self) -> bool:
        """Whether the HCI transport went away (bumble then flushes all connections)."""
        if self.transport is None:
            return False
        terminated: asyncio.Future[None] | None = getattr(self.transport.source, "terminated", None)
        return terminated is not None and terminated.done()

    async def add_scanner(self, scanner: BumbleScanner) -> None:
        async with self._scan_lock:
            self._scanners.add(scanner)
            await self._apply_scan_state()

    async def remove_scanner(self, scanner: BumbleScanner) -> None:
        async with self._scan_lock:
            self._scanners.discard(scanner)
            await self._apply_scan_state()

    async def _apply_scan_state(self) -> None:
        wanted = any(s.active for s in self._scanners) if self._scanners else None
        if wanted == self._scanning_active:
            return
        if self._scanning_active is not None:
            await self.device.stop_scanning()
            self._scanning_active = None
        if wanted is not None:
            await self.device.start_scanning(active=wanted, filter_duplicates=False)
            self._scanning_active = wanted

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for scanner in list(self._scanners):
            scanner.handle_advertisement(advertisement)

    async def close(self) -> None:
        """Drop connections, stop scanning, power off and detach."""
        self._scanners.clear()
        if not self.transport_lost:  # else every HCI command would wait for a timeout
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    if self._scanning_active is not None:
                        await self.device.stop_scanning()
                    for connection in list(self.device.connections.values()):
                        await connection.disconnect()
                    await self.device.power_off()
            except Exception:  # best effort
                logger.debug("error while closing the central stack", exc_info=True)
        self._scanning_active = None
        if self.controller is not None and self.config.link is not None:
            self.config.link.remove_controller(self.controller)
        if self.transport is not None:
            await self.transport.close()


class _Registry:
    """Module state: the configuration and the central stack of each event loop."""

    config: _Config | None = None
    stacks: dict[asyncio.AbstractEventLoop, _CentralStack] = {}  # noqa: RUF012
    locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}  # noqa: RUF012


def configure(
    hci: str | None = None,
    link: LocalLink | None = None,
    *,
    address: str | None = None,
) -> None:
    """Choose where the backend's bumble host gets its controller.

    Args:
        hci: a bumble transport spec for :func:`bumble.transport.open_transport`,
            e.g. ``"tcp-client:127.0.0.1:9901"``.
        link: a :class:`~bumble.link.LocalLink`; the backend attaches its own virtual
            controller to it (in-process use, tests).
        address: random static address of the central.  By default a random one is
            generated for each stack, so it never collides with a band's.

    Exactly one of ``hci`` and ``link`` must be given.  Stacks created under a previous
    configuration are closed the next time they are needed (or by :func:`shutdown`).
    """
    if (hci is None) == (link is None):
        raise ValueError("configure() needs exactly one of hci= or link=")
    _Registry.config = _Config(hci=hci, link=link, address=address)


async def get_central_device() -> Device:
    """Return the current event loop's central bumble Device (created on demand)."""
    return (await _get_stack()).device


async def _get_stack() -> _CentralStack:
    loop = asyncio.get_running_loop()
    lock = _Registry.locks.setdefault(loop, asyncio.Lock())
    async with lock:
        config = _Registry.config
        if config is None:
            raise BleakError("bumble backend not configured: call configure() first")
        stack = _Registry.stacks.get(loop)
        if stack is not None and (stack.config is not config or stack.transport_lost):
            del _Registry.stacks[loop]
            await stack.close()
            stack = None
        if stack is None:
            stack = await _CentralStack.create(config)
            _Registry.stacks[loop] = stack
        return stack


async def shutdown() -> None:
    """Close the current event loop's central stack, if any."""
    loop = asyncio.get_running_loop()
    stack = _Registry.stacks.pop(loop, None)
    _Registry.locks.pop(loop, None)
    if stack is not None:
        await stack.close()


# ---------------------------------------------------------------------------
# Scanner


@dataclasses.dataclass
class _SeenAdvertising:
    """Advertising data accumulated per device, like BlueZ does."""

    local_name: str | None = None
    service_uuids: list[str] = dataclasses.field(default_factory=list)
    manufacturer_data: dict[int, bytes] = dataclasses.field(default_factory=dict)
    service_data: dict[str, bytes] = dataclasses.field(default_factory=dict)
    tx_power: int | None = None

    def update(self, data: AdvertisingData) -> None:
        complete_name: str | None = None
        short_name: str | None = None
        for ad_type, value in data.ad_structures:
            if ad_type == _AD.COMPLETE_LOCAL_NAME:
                complete_name = value.decode(errors="replace")
            elif ad_type == _AD.SHORTENED_LOCAL_NAME:
                short_name = value.decode(errors="replace")
            elif (size := _UUID_LIST_TYPES.get(ad_type)) is not None:
                for offset in range(0, len(value) - size + 1, size):
                    service_uuid = _uuid_from_le_bytes(value[offset : offset + size])
                    if service_uuid not in self.service_uuids:
                        self.service_uuids.append(service_uuid)
            elif (size := _SERVICE_DATA_TYPES.get(ad_type)) is not None:
                if len(value) >= size:
                    self.service_data[_uuid_from_le_bytes(value[:size])] = value[size:]
            elif ad_type == _AD.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
                self.manufacturer_data[int.from_bytes(value[:2], "little")] = value[2:]
            elif ad_type == _AD.TX_POWER_LEVEL and len(value) == 1:
                self.tx_power = int.from_bytes(value, "little", signed=True)
        if complete_name is not None:
            self.local_name = complete_name
        elif short_name is not None and self.local_name is None:
            self.local_name = short_name


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend on the shared bumble central stack."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        # kwargs: bleak passes its platform-specific ``bluez=``/``cb=`` dicts here.
        super().__init__(detection_callback, service_uuids)
        self.active = scanning_mode != "passive"
        self._stack: _CentralStack | None = None
        self._accumulated: dict[str, _SeenAdvertising] = {}

    async def start(self) -> None:
        """Start scanning (clears the devices seen so far)."""
        if self._stack is not None:
            return
        self.seen_devices = {}
        self._accumulated = {}
        self._stack = await _get_stack()
        await self._stack.add_scanner(self)

    async def stop(self) -> None:
        """Stop scanning."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.remove_scanner(self)

    def handle_advertisement(self, advertisement: Advertisement) -> None:
        """Turn a bumble advertisement into a bleak detection callback."""
        address = advertisement.address.to_string(with_type_qualifier=False)
        seen = self._accumulated.setdefault(address, _SeenAdvertising())
        seen.update(advertisement.data)
        if not self.is_allowed_uuid(seen.service_uuids):
            return
        advertisement_data = AdvertisementData(
            local_name=seen.local_name,
            manufacturer_data=dict(seen.manufacturer_data),
            service_data=dict(seen.service_data),
            service_uuids=list(seen.service_uuids),
            tx_power=seen.tx_power,
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        device = self.create_or_update_device(
            address,
            address,
            seen.local_name,
            BumbleDeviceDetails(address=advertisement.address, advertisement=advertisement),
            advertisement_data,
        )
        self.call_detection_callbacks(device, advertisement_data)


# ---------------------------------------------------------------------------
# Client


class BumbleClient(BaseBleakClient):
    """bleak client backend on the shared bumble central stack."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # kwargs: bleak passes its platform-specific ``bluez=``/``winrt=`` dicts here.
        super().__init__(
            address_or_ble_device,
            disconnected_callback=disconnected_callback,
            timeout=timeout,
        )
        self._details: BumbleDeviceDetails | None = None
        self._name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            self._name = address_or_ble_device.name
            if isinstance(address_or_ble_device.details, BumbleDeviceDetails):
                self._details = address_or_ble_device.details
        self._requested_services = services
        self._stack: _CentralStack | None = None
        self._connection: Connection | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._flow_waiters: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """GAP device name if read at connection, else advertised name, else address."""
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        """Negotiated ATT MTU (23 when not connected)."""
        return self._connection.att_mtu if self._connection else DEFAULT_ATT_MTU

    @property
    def is_connected(self) -> bool:
        """Whether the LE connection is up."""
        return self._connection is not None

    # ------------------------------------------------------------ connection

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, exchange MTU (request 247) and discover the GATT database.

        ``timeout`` (keyword, default: the client's) bounds the whole operation.
        """
        if self._connection is not None:
            return
        if pair:
            logger.warning("bumble backend cannot pair; ignoring pair=True")
        timeout: float = kwargs.get("timeout", self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def remaining() -> float:
            return max(deadline - loop.time(), 0.001)

        self._stack = await asyncio.wait_for(_get_stack(), remaining())
        peer_address = await self._resolve_address(remaining())
        try:
            # bumble's own timeout cancels the pending connection in the controller;
            # cancelling the task instead would leave it pending there.  The outer
            # timeout is only a safety net, hence the grace period.
            async with asyncio.timeout(remaining() + CONNECT_CANCEL_GRACE):
                async with self._stack.connect_lock:
                    connection = await self._stack.device.connect(peer_address, timeout=remaining())
        except core.TimeoutError as error:
            raise TimeoutError(f"connecting to {self.address} timed out") from error
        except core.BaseBumbleError as error:
            raise BleakError(f"connecting to {self.address} failed: {error}") from error

        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            async with asyncio.timeout(remaining()):
                peer = Peer(connection)
                await self._guard("MTU exchange", peer.request_mtu(REQUESTED_ATT_MTU))
                self.services = await self._guard("service discovery", self._discover(peer))
                await self._read_gap_name(peer)
        except BaseException:
            await self.disconnect()
            raise
        logger.debug("connected to %s, MTU %d", self.address, connection.att_mtu)

    async def _resolve_address(self, scan_seconds: float) -> hci.Address:
        if self._details is not None:
            return self._details.address
        device = await BleakScanner.find_device_by_address(self.address, timeout=scan_seconds, backend=BumbleScanner)
        if device is None or not isinstance(device.details, BumbleDeviceDetails):
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
        self._name = self._name or device.name
        return device.details.address

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service_proxy in await peer.discover_services():
            service_uuid = _uuid_str(service_proxy.uuid)
            if self._requested_services and service_uuid not in self._requested_services:
                continue
            service = BleakGATTService(service_proxy, service_proxy.handle, service_uuid)
            collection.add_service(service)
            for char_proxy in await peer.discover_characteristics(service=service_proxy):
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    _uuid_str(char_proxy.uuid),
                    _properties(char_proxy.properties),
                    self._max_write_without_response_size,
                    service,
                )
                collection.add_characteristic(characteristic)
                for descriptor_proxy in await peer.discover_descriptors(char_proxy):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor_proxy,
                            descriptor_proxy.handle,
                            _uuid_str(descriptor_proxy.type),
                            characteristic,
                        )
                    )
        return collection

    async def _read_gap_name(self, peer: Peer) -> None:
        """Read the GAP Device Name (0x2A00), as BlueZ does, if it was discovered."""
        assert self.services is not None
        gap_name = self.services.get_characteristic(normalize_uuid_16(0x2A00))
        if gap_name is None:
            return
        try:
            value = await peer.read_value(gap_name.obj)
        except (att.ATT_Error, core.BaseBumbleError):
            logger.debug("could not read the GAP device name", exc_info=True)
            return
        self._name = bytes(value).decode(errors="replace") or self._name

    def _max_write_without_response_size(self) -> int:
        return self.mtu_size - 3

    def _on_disconnection(self, reason: int) -> None:
        logger.debug("disconnected from %s (reason 0x%02X)", self.address, reason)
        self._connection = None
        self._subscriptions.clear()
        self.services = None
        for waiter in self._flow_waiters:
            waiter.cancel()
        if self._disconnected_callback is not None:
            try:
                self._disconnected_callback()
            except Exception:
                logger.exception("disconnected_callback failed")

    async def disconnect(self) -> None:
        """Disconnect; returns once the link is down (no-op if not connected)."""
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(max(self._timeout, 1.0)):
                await connection.disconnect()
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            if self._connection is not None:
                raise BleakError(f"disconnecting from {self.address} failed") from error

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Not supported by this backend."""
        raise NotImplementedError("pairing is not supported by the bumble backend")

    async def unpair(self) -> None:
        """Not supported by this backend."""
        raise NotImplementedError("unpairing is not supported by the bumble backend")

    # ------------------------------------------------------------ GATT I/O

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"Not connected to {self.address}")
        return self._connection

    async def _guard(self, operation: str, awaitable: Awaitable[_T]) -> _T:
        """Await a bumble GATT operation, translating its failures to bleak's.

        bumble cancels the future of a request that is in flight when the link drops;
        that CancelledError is turned into a BleakError unless our task itself is being
        cancelled.
        """
        try:
            return await awaitable
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._connection is None and task is not None and not task.cancelling():
                raise BleakError(f"{operation}: disconnected from {self.address}") from None
            raise
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except core.BaseBumbleError as error:
            raise BleakError(f"{operation} failed: {error}") from error

    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        """Read a characteristic value (long values via Read Blob)."""
        self._require_connection()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        if use_cached and (cached := proxy.client.cached_values.get(proxy.handle)):
            return bytearray(cached[1])
        return bytearray(await self._guard("read", proxy.read_value()))

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        """Read a descriptor value."""
        self._require_connection()
        proxy: DescriptorProxy = descriptor.obj
        if use_cached and (cached := proxy.client.cached_values.get(proxy.handle)):
            return bytearray(cached[1])
        return bytearray(await self._guard("descriptor read", proxy.read_value()))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        """Write with response (long writes allowed) or without (at most MTU - 3 bytes).

        A write without response returns once the data is queued in the host; it waits
        first while more than :data:`WRITE_WITHOUT_RESPONSE_MAX_PENDING` ACL packets
        are queued, which paces a sender that floods.
        """
        connection = self._require_connection()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        value = bytes(data)
        if response:
            await self._guard("write", proxy.write_value(value, with_response=True))
            return
        limit = connection.att_mtu - 3
        if len(value) > limit:
            raise BleakError(f"write without response of {len(value)} bytes exceeds MTU-3={limit}")
        await self._wait_for_acl_room(connection)
        await self._guard("write without response", proxy.write_value(value))

    async def _wait_for_acl_room(self, connection: Connection) -> None:
        queue = connection.device.host.get_data_packet_queue(connection.handle)
        while queue is not None and queue.pending > WRITE_WITHOUT_RESPONSE_MAX_PENDING:
            flowed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_flow(future: asyncio.Future[None] = flowed) -> None:
                if not future.done():
                    future.set_result(None)

            queue.once("flow", on_flow)
            self._flow_waiters.add(flowed)
            try:
                await self._guard("write without response", flowed)
            finally:
                self._flow_waiters.discard(flowed)
                queue.remove_listener("flow", on_flow)
            self._require_connection()

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Write a descriptor value (with response)."""
        self._require_connection()
        proxy: DescriptorProxy = descriptor.obj
        await self._guard("descriptor write", proxy.write_value(bytes(data), with_response=True))

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        """Enable notifications (else indications); route values to ``callback``."""
        self._require_connection()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(f"{characteristic.uuid} supports neither notify nor indicate")
        if proxy.get_descriptor(GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR) is None:
            raise BleakError(f"{characteristic.uuid} has no CCCD")

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:
                logger.exception("notification callback failed")

        previous = self._subscriptions.pop(proxy.handle, None)
        if previous is not None:
            await self._guard("unsubscribe", proxy.unsubscribe(previous))
        await self._guard("subscribe", proxy.subscribe(on_value, prefer_notify=True))
        self._subscriptions[proxy.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Disable notifications/indications on ``characteristic``."""
        self._require_connection()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        subscriber = self._subscriptions.pop(proxy.handle, None)
        if subscriber is not None:
            await self._guard("unsubscribe", proxy.unsubscribe(subscriber))


def reset() -> None:
    """Forget the configuration: bleak's platform backend is used again (stacks close on next use)."""
    _Registry.config = None


def configured_hci() -> str | None:
    """The HCI transport spec bleak is routed through, if any."""
    return _Registry.config.hci if _Registry.config is not None else None


def is_configured() -> bool:
    """Whether :func:`configure` chose a bumble host (else bleak's platform backend is used)."""
    return _Registry.config is not None


def free_tcp_port() -> int:
    """A free TCP port on the loopback interface (for ``tcp-server:127.0.0.1:PORT``)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
