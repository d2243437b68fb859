"""A bleak backend running on the bumble user-space Bluetooth stack.

Unchanged bleak code works through it; the BLE host is an object you hand to it::

    async with BumbleCentral(link=link) as central:  # or BumbleCentral(hci="tcp-client:127.0.0.1:9901")
        device = await BleakScanner.find_device_by_name("HandCue-1A2B", backend=central.scanner_backend)
        async with BleakClient(device, backend=central.client_backend) as client:
            ...

A :class:`BumbleCentral` is one BLE host (a bumble :class:`~bumble.device.Device`
acting as central) for one use: every scanner and client built from its
:attr:`~BumbleCentral.scanner_backend` / :attr:`~BumbleCentral.client_backend` shares
it, as bleak-esphome's clients share the client data bound into their backend class
with :func:`functools.partial`.  Where the host gets its controller is given when the
central is made: a bumble HCI transport spec (opened with
:func:`bumble.transport.open_transport`: a virtual controller served by another
process, a USB dongle, ...) or a virtual link (:class:`bumble.link.LocalLink` or a
paced link) on which the central puts its own virtual controller.  The host comes up
when a scanner or client first needs it (again if its HCI transport was lost) and goes
down with :meth:`BumbleCentral.close` (or the end of ``async with``); closing a client
only closes its connection.  Several centrals may share a link: each is its own host.

Behaviour worth knowing (and matching the BlueZ backend where it matters):

* ``disconnected_callback`` fires on every disconnection, remote or local (as with
  BlueZ), and services are dropped (as with every bleak backend).
* Connecting discovers all services, characteristics and descriptors; with
  ``services=`` only those services, and only the descriptors of characteristics that
  notify or indicate (and the GAP name is not read).  With a GATT cache
  (:mod:`companion.ble.gatt_cache`, as an operating system keeps one) a peer used before
  is not discovered again: one read of its Database Hash (Core 5.1 robust caching)
  proves the cached handles current, or a changed hash sends the client to discovery.
  A peer we are bonded with and whose entry is marked robust is not even asked for
  its hash: the cached handles are used at once, and the first answer on the link
  proves them (:mod:`companion.ble.robust_caching`: until then write commands are kept
  and further requests wait; an ATT error 0x12, Database Out Of Sync, makes the client
  discover again and send everything again on the new handles, the caller's calls
  succeeding).  An entry becomes robust once the central, on an encrypted link of its
  bond, has written Client Supported Features bit 0 (after pairing, or after a
  connection that proved or discovered the database; a disconnect waits up to
  :data:`AWARENESS_WAIT_S` for that write).  The peer's bond and cache entry are
  looked up while the link comes up, so the first request can leave in the
  connection's first event.
* The ATT MTU (:data:`REQUESTED_ATT_MTU` unless the central says otherwise, also the
  largest it accepts when the peer asks first) is not exchanged before ``connect()``
  returns: the exchange is queued behind the caller's first GATT request, so that
  request goes out in the first connection event (an OS stack also exchanges the MTU
  on its own schedule).  A peer that asks for an MTU itself (HandCue bands do at once)
  makes our exchange unnecessary.  :attr:`BumbleClient.mtu_size` grows when it is done.
* ``write_gatt_char(..., response=False)`` never drops data: bumble queues ACL packets
  without limit.  To give the caller back-pressure, such a write waits while more than
  :data:`WRITE_WITHOUT_RESPONSE_MAX_PENDING` ACL packets are still queued.
* Pairing: ``pair()`` (or ``BleakClient(..., pair=True)``) bonds with LE Secure
  Connections, Just Works, and stores the keys in the central's key store;
  ``unpair()`` deletes them there (the peer keeps its copy).  On connecting to a peer
  whose keys the store holds, the link is encrypted with them before anything else
  (as an operating system does for a bonded device); if the peer lost the bond, the
  link stays unencrypted.  The key store and the central's address come from a
  :class:`~companion.ble.keystore.CentralIdentity` (kept across runs) or, without
  one, live in memory for the central's lifetime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

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
from bumble import att, core, hci, smp
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR
from bumble.gatt import Characteristic as _GattCharacteristic
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy
from bumble.keys import KeyStore, MemoryKeyStore
from bumble.pairing import PairingConfig, PairingDelegate

from ble_stack.addresses import random_static_address
from ble_stack.hosts import AttachedHost, HostSite, attach_host

from ..errors import AddressError
from ..phases import Phases, Unrecorded
from .backend import BleBackend
from .gatt_cache import CachedCharacteristic, CachedDatabase, CachedService, GattCache
from .keystore import CentralIdentity
from .robust_caching import UnverifiedLink, set_robust_caching

if TYPE_CHECKING:  # only a host on a virtual link needs them: not imported for one on an HCI transport (about 20 ms)
    from bumble.keys import PairingKeys
    from bumble.link import LocalLink

__all__ = [
    "BumbleCentral",
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
]

logger = logging.getLogger(__name__)

REQUESTED_ATT_MTU = 247
"""ATT MTU a central requests right after connecting, unless made with another."""
DEFAULT_ATT_MTU = att.ATT_DEFAULT_MTU
WRITE_WITHOUT_RESPONSE_MAX_PENDING = 32
"""A write without response waits while more ACL packets than this are queued."""
CONNECT_CANCEL_GRACE = 2.0
"""Extra seconds for the controller to confirm the cancel of a timed-out connection."""
CLOSE_TIMEOUT = 2.0
"""Seconds allowed for the central stack's orderly shutdown."""
ENCRYPT_TIMEOUT = 5.0
"""Seconds allowed for encrypting a link with stored keys (a peer that lost them may not answer)."""
DEFERRED_START_S = 0.1
"""The MTU exchange starts at the latest this long after ``connect()`` returned, if the
caller sent no request by then."""
AWARENESS_WAIT_S = 2.0
"""Longest a disconnect waits for the write that makes a bonded band remember this central's robust caching."""
CENTRAL_NAME = "HandCue-companion"

_T = TypeVar("_T")
CharacteristicProperties = _GattCharacteristic.Properties

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


def device_at(address: str, address_type: str, name: str) -> BLEDevice:
    """A device to connect to at a known address, without a scan (bumble connects to any address)."""
    kind = hci.Address.PUBLIC_DEVICE_ADDRESS if address_type == "public" else hci.Address.RANDOM_DEVICE_ADDRESS
    return BLEDevice(address, name, BumbleDeviceDetails(address=hci.Address(address, kind)))


def address_type_of(device: BLEDevice) -> str:
    """``"public"`` or ``"random"``: the type of a scanned device's address."""
    details = device.details
    if isinstance(details, BumbleDeviceDetails) and details.address.is_public:
        return "public"
    return "random"


# ---------------------------------------------------------------------------
# The central: one BLE host, handed to the scanners and clients built from it


class _DirectResolver(smp.AddressResolver):
    """Resolves a peer's private addresses as bumble's does, but never sends ``connect`` looking for one.

    bumble's host, holding a bond's identity key for the address it is asked to connect to, scans first
    for that peer's current private address: one advertising interval lost before every connection to
    a bonded band, although a band advertises with its random static identity address and never with a
    private one (SPEC §21.4).  A peer that did use private addresses is not reached at its identity
    address; the transport then scans for it by name after ``DIRECT_CONNECT_TIMEOUT``, and connects to
    the address it advertises."""

    def can_resolve_to(self, address: hci.Address) -> bool:
        return False


class _CentralDevice(Device):
    """The central's bumble Device: connects to a bonded peer's identity address directly (:class:`_DirectResolver`)."""

    async def refresh_resolving_list(self) -> None:
        await super().refresh_resolving_list()
        if self.address_resolver is not None:
            self.address_resolver = _DirectResolver(self.address_resolver.resolving_keys)


class _CentralStack:
    """The central's running bumble Device, plus scan bookkeeping."""

    def __init__(self, device: Device, attached: AttachedHost) -> None:
        self.device = device
        self.attached = attached
        self.connect_lock = asyncio.Lock()
        """bumble accepts only one pending LE connection at a time."""
        self._scan_lock = asyncio.Lock()
        self._scanners: set[BumbleScanner] = set()
        self._scanning_active: bool | None = None
        """None: not scanning; else whether the running scan is active."""
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    @classmethod
    async def create(cls, site: HostSite, address: str | None, keystore: KeyStore, att_mtu: int = REQUESTED_ATT_MTU) -> _CentralStack:
        own_address = random_static_address(address) if address else hci.Address.generate_static_address()
        attached = await attach_host(site, name="bleak-central", controller_factory=_central_controller)
        device = _CentralDevice(name=CENTRAL_NAME, address=own_address, host=attached.host)
        device.gatt_server.max_mtu = att_mtu  # also what we accept when a peer asks for an MTU first
        device.keystore = keystore
        device.pairing_config_factory = _just_works
        stack = cls(device, attached)
        try:
            await stack.device.power_on()
        except BaseException:
            await stack.close()
            raise
        logger.debug("bumble central stack up as %s", own_address)
        return stack

    @property
    def transport_lost(self) -> bool:
        """Whether the HCI transport went away (bumble then flushes all connections)."""
        return self.attached.transport_lost

    async def add_scanner(self, scanner: BumbleScanner) -> None:
        await self._change_scanners(scanner, add=True)

    async def remove_scanner(self, scanner: BumbleScanner) -> None:
        await self._change_scanners(scanner, add=False)

    async def _change_scanners(self, scanner: BumbleScanner, *, add: bool) -> None:
        """Shielded: a cancel between the HCI command and the bookkeeping would leave the
        controller scanning when we think it is not (or the reverse), and no later scan
        would see anything."""

        async def change() -> None:
            async with self._scan_lock:
                if add:
                    self._scanners.add(scanner)
                else:
                    self._scanners.discard(scanner)
                await self._apply_scan_state()

        change_task = asyncio.ensure_future(change())
        try:
            await asyncio.shield(change_task)
        except asyncio.CancelledError:
            change_task.add_done_callback(_retrieve_exception)
            raise

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
        await self.attached.detach()


def _central_controller(name: str, **kwargs: Any) -> Any:
    """The central's virtual controller on a link (imported only then: a host on an HCI transport has none)."""
    from ble_stack.controllers import CentralController

    return CentralController(name, **kwargs)


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (it was handled), so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _just_works(_connection: Connection) -> PairingConfig:
    """LE Secure Connections with bonding and no input or output (what a HandCue band supports)."""
    return PairingConfig(sc=True, mitm=False, bonding=True, delegate=PairingDelegate(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT))


_B = TypeVar("_B", "BumbleScanner", "BumbleClient")


def _bind(backend_class: type[_B], central: BumbleCentral) -> type[_B]:
    """``backend_class`` with ``central=`` bound, still named like the class.

    bleak builds its backend from a class (``BleakClient(..., backend=cls)``) and
    forwards no state, so the host rides in with :func:`functools.partial`, as
    bleak-esphome binds its client data.  bleak reports ``backend.__name__`` as the
    ``backend_id``, hence the name.
    """
    bound = functools.partial(backend_class, central=central)
    bound.__name__ = backend_class.__name__  # type: ignore[attr-defined]
    return cast("type[_B]", bound)


class BumbleCentral:
    """One BLE host on bumble, acting as central, for the scanners and clients built from it.

    Args:
        link: a virtual link (:class:`~bumble.link.LocalLink` or a paced link); the
            central puts its own virtual controller on it (in-process use, tests).
        hci: a bumble transport spec for :func:`bumble.transport.open_transport`,
            e.g. ``"tcp-client:127.0.0.1:9901"``.
        address: random static address of the central.  By default the identity's, else
            a random one generated each time the host comes up.
        att_mtu: the ATT MTU requested right after connecting.
        identity: where the central's address and bonds persist (see
            :class:`~companion.ble.keystore.CentralIdentity`).
        keystore: bumble key store for bonds; by default the identity's, else one in memory.
        gatt_cache: where the GATT handles of peers are remembered (see
            :mod:`companion.ble.gatt_cache`); None: every connection discovers.

    Exactly one of ``link`` and ``hci`` must be given.  Use it as an async context
    manager, or call :meth:`close` when done; it belongs to the event loop that first
    uses it.
    """

    def __init__(
        self,
        *,
        link: LocalLink | None = None,
        hci: str | None = None,
        address: str | None = None,
        att_mtu: int = REQUESTED_ATT_MTU,
        identity: CentralIdentity | None = None,
        keystore: KeyStore | None = None,
        gatt_cache: GattCache | None = None,
    ) -> None:
        if (hci is None) == (link is None):
            raise ValueError("BumbleCentral needs exactly one of hci= or link=")
        self.link = link
        self.hci = hci
        self.address = address
        self.att_mtu = att_mtu
        self.identity = identity
        self.gatt_cache = gatt_cache
        self.keystore: KeyStore = keystore or (identity.keystore() if identity else MemoryKeyStore())
        self.scanner_backend: type[BumbleScanner] = _bind(BumbleScanner, self)
        """A bleak scanner backend class on this host: ``BleakScanner(backend=central.scanner_backend)``."""
        self.client_backend: type[BumbleClient] = _bind(BumbleClient, self)
        """A bleak client backend class on this host: ``BleakClient(device, backend=central.client_backend)``."""
        self._stack: _CentralStack | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_environment(cls) -> BumbleCentral:
        """A central on the HCI transport in ``HANDCUE_HCI``, with the user's bonds: what
        ``--ble-backend companion.ble.bumble_backend:BumbleCentral.from_environment`` builds."""
        import os

        hci = os.environ.get("HANDCUE_HCI")
        if not hci:
            raise AddressError("BumbleCentral.from_environment needs HANDCUE_HCI (a bumble transport, e.g. tcp-client:127.0.0.1:9901)")
        from .gatt_cache import GattCacheFile

        return cls(hci=hci, identity=CentralIdentity.for_user(), gatt_cache=GattCacheFile.for_user())

    @property
    def description(self) -> str:
        """Where this host's BLE goes, for messages: ``"via HCI tcp-client:..."`` or ``"via a virtual link"``."""
        return f"via HCI {self.hci}" if self.hci else "via a virtual link"

    @property
    def backend(self) -> BleBackend:
        """The scanner and client backends on this host, for a BLE transport."""
        return BleBackend(self.scanner_backend, self.client_backend, self.description,
                          device_at=device_at, address_type_of=address_type_of, records_phases=True, bounds_link_setup=True,
                          chooses_encryption=True)

    async def stack(self) -> _CentralStack:
        """The running host, brought up now if it is not (or if its HCI transport was lost)."""
        async with self._lock:
            stack = self._stack
            if stack is not None and stack.transport_lost:
                self._stack = None
                await stack.close()
                stack = None
            if stack is None:
                site: HostSite | None = self.link if self.link is not None else self.hci
                assert site is not None
                address = self.address or (self.identity.address() if self.identity else None)
                stack = self._stack = await _CentralStack.create(site, address, self.keystore, self.att_mtu)
            return stack

    async def device(self) -> Device:
        """The host's bumble Device (brought up if needed)."""
        return (await self.stack()).device

    async def close(self) -> None:
        """Disconnect every client of this host, stop its scanners and take it down (idempotent)."""
        async with self._lock:
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.close()

    async def __aenter__(self) -> BumbleCentral:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


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
    """bleak scanner backend on the host of a :class:`BumbleCentral` (use ``central.scanner_backend``)."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        central: BumbleCentral,
        **kwargs: Any,
    ) -> None:
        # kwargs: bleak passes its platform-specific ``bluez=``/``cb=`` dicts here.
        super().__init__(detection_callback, service_uuids)
        self.central = central
        self.active = scanning_mode != "passive"
        self._stack: _CentralStack | None = None
        self._accumulated: dict[str, _SeenAdvertising] = {}

    async def start(self) -> None:
        """Start scanning (clears the devices seen so far)."""
        if self._stack is not None:
            return
        self.seen_devices = {}
        self._accumulated = {}
        stack = await self.central.stack()
        self._stack = stack  # before adding: a cancelled start is still undone by stop()
        await stack.add_scanner(self)

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


class _Lookups:
    """A peer's bond (key store) and GATT cache entry, looked up concurrently with the link's setup."""

    def __init__(self, key: str, bond: asyncio.Future[PairingKeys | None], entry: asyncio.Future[CachedDatabase | None] | None) -> None:
        self.key = key
        self._bond = bond
        self._entry = entry

    @classmethod
    def start(cls, central: BumbleCentral, key: str) -> _Lookups:
        cache = central.gatt_cache
        bond = asyncio.ensure_future(central.keystore.get(key))
        entry = asyncio.ensure_future(asyncio.to_thread(cache.get, key)) if cache is not None else None  # a file: off the loop
        for future in (bond, entry):
            if future is not None:
                future.add_done_callback(_retrieve_exception)  # awaited later, or not at all if the link fails
        return cls(key, bond, entry)

    async def bond(self) -> PairingKeys | None:
        """The stored keys of the peer, or None."""
        return await asyncio.shield(self._bond)

    async def cache_entry(self) -> CachedDatabase | None:
        """The peer's cache entry, or None (raises what the cache raised)."""
        return None if self._entry is None else await asyncio.shield(self._entry)

    def discard(self) -> None:
        """Nobody will wait for them: a lookup still running is cancelled."""
        for future in (self._bond, self._entry):
            if future is not None and not future.done():
                future.cancel()


class BumbleClient(BaseBleakClient):
    """bleak client backend on the host of a :class:`BumbleCentral` (use ``central.client_backend``).

    Clients of one central share its host but not their connections: disconnecting
    one leaves the others connected.
    """

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        central: BumbleCentral,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        services: set[str] | None = None,
        phases: Phases | None = None,
        link_timeout: float | None = None,
        encrypt_bonded: bool = True,
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
        self._phases = phases or Unrecorded()
        self._link_timeout = link_timeout
        """Seconds the link may take to come up (the rest of ``timeout`` is for the GATT work); None: all of ``timeout``."""
        self._encrypt_bonded = encrypt_bonded
        """Whether connect encrypts a link to a peer whose bond the key store holds (False: it stays unencrypted
        unless ``pair`` is asked; for a session that only reads what the peer serves on any link)."""
        self.central = central
        self._stack: _CentralStack | None = None
        self._connection: Connection | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._flow_waiters: set[asyncio.Future[None]] = set()
        self._mtu_exchange_due: Peer | None = None
        """The peer whose MTU exchange waits for the caller's first request (ATT takes one request at a time)."""
        self._mtu_exchange_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Future[Any]] = set()
        """GATT requests in flight or queued (ATT takes one at a time): cancelled when the link drops."""
        self.used_gatt_cache = False
        """Whether the last connect took the GATT database from the cache (bumble-specific)."""
        self._mtu_asked_at: float | None = None
        """When our own MTU request went out (on the phase recorder's clock); None: we did not ask."""
        self._lookups: _Lookups | None = None
        """The peer's bond and cache entry, looked up while the link comes up."""
        self._bond_refused = False
        """Encrypting with the stored keys failed on this link: the peer may have lost the bond."""
        self._peer: Peer | None = None
        self._cache_entry: CachedDatabase | None = None
        """The cache entry of this connection's database (validated, restored or just stored)."""
        self._unverified: UnverifiedLink | None = None
        """Set while the handles of a robust cache entry are used unproven (:mod:`.robust_caching`)."""
        self._awareness_due: Literal["no", "yes", "encrypt"] = "no"
        """Whether (and how) to tell the band, behind the caller's first request, that this central does robust caching."""
        self._awareness: asyncio.Task[None] | None = None

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
        """Connect and discover the GATT database (or prove the cached one current); the MTU
        exchange follows the caller's first request.  A link to a peer whose bond the key store holds is
        encrypted first, unless the client was made with ``encrypt_bonded=False``.

        ``timeout`` (keyword, default: the client's) bounds the whole operation.
        """
        if self._connection is not None:
            return
        timeout: float = kwargs.get("timeout", self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def remaining() -> float:
            return max(deadline - loop.time(), 0.001)

        with self._phases.phase("host power-on"):
            self._stack = await asyncio.wait_for(self.central.stack(), remaining())
        peer_address = await self._resolve_address(remaining())
        stack = self._stack
        # Looked up while the link comes up, so that the first PDU leaves as soon as it is up (the
        # connection's first event is 1.25 ms after CONNECT_IND; a lookup after it missed that event).
        lookups = self._lookups = _Lookups.start(self.central, str(peer_address))

        async def connect_link() -> Connection:
            async with stack.connect_lock:
                limit = remaining() if self._link_timeout is None else min(remaining(), self._link_timeout)
                return await stack.device.connect(peer_address, timeout=limit)

        # bumble's own timeout cancels the pending connection in the controller;
        # cancelling bumble's connect instead leaves the link pending there, or up with
        # nobody to close it (an orphan that keeps the peer from advertising).  So the
        # connect runs as a task of its own, shielded: a caller who gives up (cancels)
        # waits for it to end and closes what it brought.  The outer timeout is only a
        # safety net, hence the grace period.
        attempt = asyncio.ensure_future(connect_link())
        try:
            with self._phases.phase("connect"):
                async with asyncio.timeout(remaining() + CONNECT_CANCEL_GRACE):
                    connection = await asyncio.shield(attempt)
        except core.TimeoutError as error:
            raise TimeoutError(f"connecting to {self.address} timed out") from error
        except core.BaseBumbleError as error:
            raise BleakError(f"connecting to {self.address} failed: {error}") from error
        except BaseException:
            lookups.discard()
            await self._close_late_connection(attempt, remaining() + CONNECT_CANCEL_GRACE)
            raise

        self._connection = connection
        self._bond_refused = False
        self._cache_entry = None
        self._unverified = None
        self._awareness_due = "no"
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._watch_mtu(connection)
        try:
            async with asyncio.timeout(remaining()):
                if pair:
                    await self.pair()
                elif self._encrypt_bonded:
                    await self._encrypt_if_bonded(connection)
                peer = self._peer = Peer(connection)
                self.used_gatt_cache = False
                cached, database_hash = await self._validated_cache(connection)
                from_cache = None if cached is None else await self._services_from_cache(peer, cached)
                if from_cache is not None and cached is not None:
                    self.services = from_cache
                    self.used_gatt_cache = True
                    self._cache_entry = cached
                    if database_hash is None:  # a robust entry of a bonded peer, not proven: the first answer tells
                        self._unverified = UnverifiedLink(rediscover=self._rediscover, send_kept=self._send_kept,
                                                          on_resynced=lambda: self._schedule_awareness(encrypt=True, now=True))
                else:
                    if database_hash is None and self.central.gatt_cache is not None:
                        # Read before discovery: a change after it would then show as a different hash next time.
                        with self._phases.phase("read Database Hash for the GATT cache"):
                            database_hash = await self._guard("Database Hash read", self._read_database_hash(connection))
                    with self._phases.phase("service discovery"):
                        self.services = await self._guard("service discovery", self._discover(peer))
                    if not self._requested_services:  # the GAP service was not asked for
                        await self._read_gap_name(peer)
                    if database_hash is not None:
                        await self._remember_database(connection, database_hash)
                if connection.is_encrypted:
                    self._schedule_awareness(encrypt=False, now=False)
        except BaseException:
            await self.disconnect()
            raise
        finally:
            lookups.discard()
        self._mtu_exchange_due = peer
        self._mtu_exchange_timer = loop.call_later(DEFERRED_START_S, self._start_mtu_exchange)
        logger.debug("connected to %s%s", self.address, " (GATT handles from the cache)" if self.used_gatt_cache else "")

    # ------------------------------------------------------------ deferred MTU exchange

    def _start_mtu_exchange(self) -> None:
        """Start the MTU exchange, if still due, queued behind any request already sent (ATT takes one at a time)."""
        if self._mtu_exchange_timer is not None:
            self._mtu_exchange_timer.cancel()
            self._mtu_exchange_timer = None
        if self._awareness_due != "no":
            self._start_awareness(encrypt=self._awareness_due == "encrypt")
        peer, self._mtu_exchange_due = self._mtu_exchange_due, None
        if peer is None or self._connection is None:
            return

        async def run() -> None:
            try:
                await self._exchange_mtu(peer)
            except Exception:  # best effort: the link may have gone, the peer may refuse
                logger.debug("MTU exchange failed", exc_info=True)

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _exchange_mtu(self, peer: Peer) -> None:
        """Ask for the central's ATT MTU, unless the peer already asked (the MTU is then set)."""
        connection = self._require_connection()
        if connection.att_mtu != DEFAULT_ATT_MTU or self.central.att_mtu == DEFAULT_ATT_MTU:
            return
        self._mtu_asked_at = self._phases.now()
        await self._guard("MTU exchange", peer.request_mtu(self.central.att_mtu))

    def _watch_mtu(self, connection: Connection) -> None:
        """Record the MTU exchange as a phase when the connection's ATT MTU changes: from the connection
        to the change when the peer asked (a HandCue band asks at once, so our own exchange never goes
        out), else from our request to its answer; the negotiated MTU is its note, and ``-v`` logs it."""
        connected_at = self._phases.now()
        self._mtu_asked_at = None

        def on_update() -> None:
            ours = self._mtu_asked_at is not None
            start = self._mtu_asked_at if self._mtu_asked_at is not None else connected_at
            note = f"ATT MTU {connection.att_mtu}, asked by {'the companion' if ours else 'the peer'}"
            # Top-level: it overlaps the requests sent meanwhile; it is part of none of them.
            self._phases.add("MTU exchange", start, note=note)
            logger.debug("%s: %s", self.address, note)

        if connection.att_mtu != DEFAULT_ATT_MTU:  # the peer's request came in before the connection was handed to us
            on_update()
        else:
            connection.once(Connection.EVENT_CONNECTION_ATT_MTU_UPDATE, on_update)

    # ------------------------------------------------------------ GATT cache

    @staticmethod
    async def _read_database_hash(connection: Connection) -> bytes | None:
        """The peer's Database Hash (0x2B2A) by one Read By Type over every handle; None if it has none."""
        from bumble.gatt import GATT_DATABASE_HASH_CHARACTERISTIC

        response = await connection.gatt_client.send_request(
            att.ATT_Read_By_Type_Request(starting_handle=0x0001, ending_handle=0xFFFF, attribute_type=GATT_DATABASE_HASH_CHARACTERISTIC))
        if response is None or response.op_code != att.Opcode.ATT_READ_BY_TYPE_RESPONSE or not response.attributes:
            return None
        return bytes(response.attributes[0][1])

    async def _validated_cache(self, connection: Connection) -> tuple[CachedDatabase | None, bytes | None]:
        """The cached database of this peer if it covers the services asked for and its Database Hash is
        still the peer's (robust caching: one request instead of a discovery), and the hash read if any;
        a stale entry is forgotten.  A robust entry of a bonded peer comes back without a hash read
        (``(entry, None)``): the link is then unverified until its first answer."""
        cache = self.central.gatt_cache
        if cache is None:
            return None, None
        key = str(connection.peer_address)
        try:
            cached = await self._lookups_for(key).cache_entry()
            if cached is None or not cached.covers(self._requested_services, lambda value: _uuid_from_le_bytes(bytes.fromhex(value))):
                return None, None
        except Exception:  # a cache only saves time: an entry it cannot give is a cold one
            logger.warning("%s: the GATT cache entry could not be used; discovering instead", self.address, exc_info=True)
            await self._forget_database(key)
            return None, None
        if cached.robust and not self._bond_refused and await self._lookups_for(key).bond() is not None:
            # Robust caching with a bond: the band protects a change-unaware client itself (0x12), no proof needed.
            self._phases.add("GATT handles from the cache (robust caching, unproven)", self._phases.now())
            return cached, None
        with self._phases.phase("check cached GATT handles (Database Hash)"):
            current = await self._guard("Database Hash read", self._read_database_hash(connection))
        if current == cached.database_hash:
            return cached, current
        logger.info("%s: its GATT database changed (Database Hash); discovering it again", self.address)
        await self._forget_database(key)
        return None, current

    def _lookups_for(self, key: str) -> _Lookups:
        """The lookups started while the link came up, if they were for this peer address, else new ones."""
        lookups = self._lookups
        if lookups is None or lookups.key != key:
            lookups = self._lookups = _Lookups.start(self.central, key)
        return lookups

    async def _rediscover(self) -> None:
        """After ATT error 0x12 on a link that trusted a robust cache entry: forget the entry, read the
        new Database Hash (the band serves it to a change-unaware client; the request after its 0x12
        makes the client change-aware), discover, and store the new entry (not robust yet)."""
        connection, peer = self._require_connection(), self._peer
        assert peer is not None
        await self._forget_database(str(connection.peer_address))
        self._cache_entry = None
        client = peer.gatt_client
        # The old proxies (and bumble's subscriptions on their handles) must not catch the new database's notifications.
        client.services.clear()
        client.notification_subscribers.clear()
        client.indication_subscribers.clear()
        self._subscriptions.clear()
        self.used_gatt_cache = False
        with self._phases.phase("read Database Hash for the GATT cache"):
            database_hash = await self._read_database_hash(connection)
        with self._phases.phase("service discovery"):
            self.services = await self._discover(peer)
        if database_hash is not None:
            await self._remember_database(connection, database_hash)

    def _schedule_awareness(self, *, encrypt: bool, now: bool) -> None:
        """Make a bonded band remember that this central does robust caching, once the caller's requests
        of the moment are answered: at once (``now``) or behind the caller's first request."""
        entry = self._cache_entry
        if self.central.gatt_cache is None or entry is None or entry.robust:
            return
        if now:
            self._start_awareness(encrypt=encrypt)
        else:
            self._awareness_due = "encrypt" if encrypt else "yes"

    def _start_awareness(self, *, encrypt: bool) -> None:
        self._awareness_due = "no"
        if self._awareness is not None and not self._awareness.done():
            return
        self._awareness = task = asyncio.ensure_future(self._persist_awareness(encrypt=encrypt))
        task.add_done_callback(_retrieve_exception)

    async def _persist_awareness(self, *, encrypt: bool) -> None:
        """Write Client Supported Features bit 0 on an encrypted link of our bond (encrypting it first if
        ``encrypt``), then mark the cache entry robust.  Best effort: an entry left unmarked is proven by
        its hash next time, and marked then."""
        await asyncio.sleep(0)  # let the caller's requests of the moment be queued first; they go before us
        others = {request for request in self._requests if not request.done()}
        if others:
            _done, pending = await asyncio.wait(others, timeout=AWARENESS_WAIT_S)
            if pending:  # each has its own timeout; this one only keeps the write from waiting on them for ever
                logger.debug("%s: %d request(s) still unanswered after %g s; robust caching not set up on this link",
                             self.address, len(pending), AWARENESS_WAIT_S)
                return
        connection, entry, cache = self._connection, self._cache_entry, self.central.gatt_cache
        if connection is None or entry is None or entry.robust or cache is None:
            return
        key = str(connection.peer_address)
        try:
            if await self._lookups_for(key).bond() is None:
                return
            if not connection.is_encrypted and encrypt:
                await self._encrypt_if_bonded(connection)
            if not connection.is_encrypted:
                return
            with self._phases.phase("robust caching (Client Supported Features)"):
                if not await set_robust_caching(connection.gatt_client):
                    return
            if self._cache_entry is not entry:
                return  # the database changed meanwhile
            self._cache_entry = entry = dataclasses.replace(entry, robust=True)
            await asyncio.to_thread(cache.put, key, entry)
        except Exception:
            logger.debug("%s: could not set up robust caching with the band", self.address, exc_info=True)

    async def _forget_database(self, key: str) -> None:
        """Drop this peer's entry from the GATT cache (best effort: the next discovery overwrites it anyway)."""
        cache = self.central.gatt_cache
        if cache is None:
            return
        try:
            await asyncio.to_thread(cache.forget, key)
        except Exception:
            logger.debug("could not forget the GATT cache entry of %s", key, exc_info=True)

    async def _services_from_cache(self, peer: Peer, cached: CachedDatabase) -> BleakGATTServiceCollection | None:
        """bleak's services from a current cache entry, registered with bumble's GATT client as discovery
        would; None (the entry is forgotten, the caller discovers) if the entry cannot be used."""
        try:
            restored = self._restore(peer, cached)
            services = self._collect(peer, restored)
        except Exception:  # a cache only saves time: an entry that does not restore is a cold one
            logger.warning("%s: the GATT cache entry could not be used; discovering instead", self.address, exc_info=True)
            await self._forget_database(str(peer.connection.peer_address))
            return None
        peer.gatt_client.services.extend(service_proxy for service_proxy, _ in restored)
        return services

    async def _remember_database(self, connection: Connection, database_hash: bytes) -> None:
        """Store the discovered services with the peer's Database Hash (best effort: a cache only saves time)."""
        cache, services = self.central.gatt_cache, self.services
        if cache is None or services is None:
            return
        cached_services = []
        for service in services:
            service_proxy = service.obj
            characteristics = []
            for characteristic in service.characteristics:
                proxy = characteristic.obj
                descriptors = tuple((d.obj.type.to_bytes().hex(), d.handle) for d in characteristic.descriptors) if proxy.descriptors_discovered else None
                characteristics.append(CachedCharacteristic(proxy.uuid.to_bytes().hex(), proxy.handle, proxy.end_group_handle, int(proxy.properties), descriptors))
            cached_services.append(CachedService(service_proxy.uuid.to_bytes().hex(), service_proxy.handle, service_proxy.end_group_handle, tuple(characteristics)))
        entry = CachedDatabase(database_hash, tuple(cached_services), complete=not self._requested_services)
        self._cache_entry = entry
        try:
            await asyncio.to_thread(cache.put, str(connection.peer_address), entry)
        except Exception:
            logger.warning("%s: could not store its GATT handles in the cache", self.address, exc_info=True)

    def _restore(self, peer: Peer, cached: CachedDatabase) -> list[tuple[ServiceProxy, list[CharacteristicProxy[bytes]]]]:
        """bumble proxies for the cached services (not yet registered with the GATT client)."""
        client = peer.gatt_client
        restored = []
        for service in cached.services:
            service_proxy = ServiceProxy(client, service.handle, service.end_handle, core.UUID.from_bytes(bytes.fromhex(service.uuid)))
            characteristics: list[CharacteristicProxy[bytes]] = []
            for item in service.characteristics:
                uuid = core.UUID.from_bytes(bytes.fromhex(item.uuid))
                proxy: CharacteristicProxy[bytes] = CharacteristicProxy(client, item.handle, item.end_handle, uuid, item.properties)
                if item.descriptors is not None:
                    proxy.descriptors = [DescriptorProxy(client, handle, core.UUID.from_bytes(bytes.fromhex(kind))) for kind, handle in item.descriptors]
                    proxy.descriptors_discovered = True
                characteristics.append(proxy)
            service_proxy.characteristics = characteristics
            restored.append((service_proxy, characteristics))
        return restored

    async def _close_late_connection(self, attempt: asyncio.Future[Connection], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for a connect nobody waits for any more; disconnect what it brings."""
        try:
            async with asyncio.timeout(timeout):
                connection = await asyncio.shield(attempt)
        except BaseException:  # it failed, or we gave up on it: nothing to close
            if not attempt.done():
                attempt.cancel()
            attempt.add_done_callback(_retrieve_exception)
            return
        try:
            async with asyncio.timeout(max(self._timeout, 1.0)):
                await connection.disconnect()
        except (TimeoutError, core.BaseBumbleError, hci.HCI_Error):
            logger.debug("could not close the connection of a cancelled connect", exc_info=True)

    async def _encrypt_if_bonded(self, connection: Connection) -> None:
        """Encrypt with the stored keys of this peer, if any; stay unencrypted if the peer refuses."""
        if await self._lookups_for(str(connection.peer_address)).bond() is None:
            return
        try:
            with self._phases.phase("encrypt with the bond's keys"):
                async with asyncio.timeout(ENCRYPT_TIMEOUT):
                    await connection.encrypt()
        except (TimeoutError, hci.HCI_Error, core.BaseBumbleError) as error:
            logger.info("%s: encrypting with the stored keys failed (%s); the peer may have forgotten this bond", self.address, error)
            self._bond_refused = True  # then its robust caching of our handles cannot be relied on either

    async def _resolve_address(self, scan_seconds: float) -> hci.Address:
        if self._details is not None:
            return self._details.address
        device = await BleakScanner.find_device_by_address(self.address, timeout=scan_seconds, backend=self.central.scanner_backend)
        if device is None or not isinstance(device.details, BumbleDeviceDetails):
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
        self._name = self._name or device.name
        return device.details.address

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        """The GATT database, or only the requested services of it.

        With ``services=`` (as bleak's ``BleakClient(..., services=...)``) only those are
        asked for, and descriptors only of characteristics that notify or indicate (the
        CCCD is the one a client needs): on a slow link every discovery request costs a
        connection event or two.
        """
        if self._requested_services:
            # "Discover Primary Service by Service UUID" (Find By Type Value): bumble's
            # discover_services(uuids) would read every service's group and filter.
            found = [await peer.discover_service(core.UUID(value)) for value in sorted(self._requested_services)]
            service_proxies = [proxy for proxies in found for proxy in proxies]
        else:
            service_proxies = await peer.discover_services()
        discovered = []
        for service_proxy in service_proxies:
            if self._requested_services and _uuid_str(service_proxy.uuid) not in self._requested_services:
                continue
            characteristics = await peer.discover_characteristics(service=service_proxy)
            for char_proxy in characteristics:
                if self._requested_services and not char_proxy.properties & (CharacteristicProperties.NOTIFY | CharacteristicProperties.INDICATE):
                    continue
                char_proxy.descriptors = await peer.discover_descriptors(char_proxy)
                # bumble's discover_descriptors(characteristic) does not set this flag, so
                # subscribe() would discover them all over again (two more connection events).
                char_proxy.descriptors_discovered = True
            discovered.append((service_proxy, characteristics))
        return self._collect(peer, discovered)

    def _collect(self, peer: Peer, services: list[tuple[ServiceProxy, list[CharacteristicProxy[bytes]]]]) -> BleakGATTServiceCollection:
        """bleak's service collection for bumble's proxies (descriptors only where they were discovered)."""
        collection = BleakGATTServiceCollection()
        for service_proxy, characteristics in services:
            service = BleakGATTService(service_proxy, service_proxy.handle, _uuid_str(service_proxy.uuid))
            collection.add_service(service)
            for char_proxy in characteristics:
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    _uuid_str(char_proxy.uuid),
                    _properties(char_proxy.properties),
                    self._max_write_without_response_size,
                    service,
                )
                collection.add_characteristic(characteristic)
                for descriptor_proxy in char_proxy.descriptors if char_proxy.descriptors_discovered else []:
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
        for request in list(self._requests):  # else those queued behind the one in flight go out on the dead link
            request.cancel()
            request.add_done_callback(_retrieve_exception)
        self._mtu_exchange_due = None
        if self._mtu_exchange_timer is not None:
            self._mtu_exchange_timer.cancel()
            self._mtu_exchange_timer = None
        if self._unverified is not None:
            self._unverified.close()
            self._unverified = None
        self._awareness_due = "no"
        self._peer = None
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
        awareness = self._awareness
        if awareness is not None and not awareness.done():  # a bonded band is being told we do robust caching: let it finish
            await asyncio.wait({awareness}, timeout=AWARENESS_WAIT_S)
            if self._connection is not connection:
                return
        try:
            async with asyncio.timeout(max(self._timeout, 1.0)):
                await connection.disconnect()
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            if self._connection is not None:
                raise BleakError(f"disconnecting from {self.address} failed") from error

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Bond with the peer (LE Secure Connections, Just Works); keys go to the central's key store.

        Raises:
            BleakError: the peer refused or pairing failed.
        """
        connection = self._require_connection()
        try:
            await connection.pair()
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            raise BleakError(f"pairing with {self.address} failed: {error}") from error
        if not connection.is_encrypted:
            raise BleakError(f"pairing with {self.address} did not encrypt the link")
        self._lookups = None  # the key store changed: look the bond up again
        if self.services is not None:  # connected before: tell the band, on this trusted link, that we cache robustly
            self._schedule_awareness(encrypt=False, now=True)

    async def unpair(self) -> None:
        """Forget the peer's keys in the central's key store (the peer keeps its own)."""
        if self._connection is not None:
            address: hci.Address | None = self._connection.peer_address
        else:
            address = self._details.address if self._details is not None else None
        if address is None:
            raise BleakError(f"unpair: {self.address} was never seen; scan for it first")
        name = str(address)
        if await self.central.keystore.get(name) is not None:
            await self.central.keystore.delete(name)
        self._lookups = None

    @property
    def is_encrypted(self) -> bool:
        """Whether the link is encrypted (bumble-specific; bleak has no such property)."""
        return self._connection is not None and self._connection.is_encrypted

    # ------------------------------------------------------------ GATT I/O

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"Not connected to {self.address}")
        return self._connection

    def _unverified_link(self) -> UnverifiedLink | None:
        """The link's robust-caching gate while its cached handles are unproven, else None."""
        unverified = self._unverified
        return unverified if unverified is not None and not unverified.settled else None

    async def _request(self, operation: str, run: Callable[[], Awaitable[_T]]) -> _T:
        """An ATT request through :meth:`_guard`; on an unverified link through its gate (``run`` resolves
        its attribute when called: after a resync, in the new database)."""
        unverified = self._unverified_link()
        return await self._guard(operation, unverified.request(run) if unverified is not None else run())

    def _current(self, characteristic: BleakGATTCharacteristic) -> BleakGATTCharacteristic:
        """``characteristic`` in the current database: itself, or after a resync the one with the same
        UUID in a service with the same UUID."""
        services = self.services
        if services is None or services.characteristics.get(characteristic.handle) is characteristic:
            return characteristic
        for service in services:
            if service.uuid == characteristic.service_uuid:
                for candidate in service.characteristics:
                    if candidate.uuid == characteristic.uuid:
                        return candidate
        raise BleakError(f"characteristic {characteristic.uuid} is not in the database of {self.address} any more")

    def _current_descriptor(self, descriptor: BleakGATTDescriptor) -> BleakGATTDescriptor:
        """``descriptor`` in the current database (see :meth:`_current`)."""
        services = self.services
        if services is None or services.descriptors.get(descriptor.handle) is descriptor:
            return descriptor
        owner = services.get_characteristic(descriptor.characteristic_uuid)
        found = owner.get_descriptor(descriptor.uuid) if owner is not None else None
        if found is None:
            raise BleakError(f"descriptor {descriptor.uuid} is not in the database of {self.address} any more")
        return found

    async def _guard(self, operation: str, awaitable: Awaitable[_T], *, awaits_response: bool = True) -> _T:
        """Await a bumble GATT operation, translating its failures to bleak's.

        bumble cancels the future of a request that is in flight when the link drops;
        that CancelledError is turned into a BleakError unless our task itself is being
        cancelled.
        """
        # The request runs as a task of its own that a caller's cancel does not reach:
        # bumble's GATT client sets the result of its pending-response future without
        # checking it was cancelled, so a response arriving just after a cancel raised
        # InvalidStateError in its packet handler (bumble 0.0.236, gatt_client.on_gatt_pdu).
        # Left alone, the request ends with its response, its timeout or the link.
        # (A write without response waits for no response: it runs inline, without a task's cost.)
        request = asyncio.ensure_future(awaitable) if awaits_response else None
        if request is not None:
            self._requests.add(request)
            request.add_done_callback(self._requests.discard)
        if request is not None and self._mtu_exchange_due is not None:
            self._start_mtu_exchange()  # queued behind this request: it goes out first
        try:
            return await (asyncio.shield(request) if request is not None else awaitable)
        except asyncio.CancelledError:
            if request is not None and not request.done():
                request.add_done_callback(_retrieve_exception)
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
        return bytearray(await self._request("read", lambda: self._current(characteristic).obj.read_value()))

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
        return bytearray(await self._request("descriptor read", lambda: self._current_descriptor(descriptor).obj.read_value()))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        """Write with response (long writes allowed) or without (at most MTU - 3 bytes).

        A write without response returns once the data is queued in the host; it waits
        first while more than :data:`WRITE_WITHOUT_RESPONSE_MAX_PENDING` ACL packets
        are queued, which paces a sender that floods.
        """
        connection = self._require_connection()
        value = bytes(data)
        if response:
            await self._request("write", lambda: self._current(characteristic).obj.write_value(value, with_response=True))
            return
        limit = connection.att_mtu - 3
        if len(value) > limit:
            raise BleakError(f"write without response of {len(value)} bytes exceeds MTU-3={limit}")
        await self._wait_for_acl_room(connection)
        unverified = self._unverified_link()
        if unverified is not None:
            await unverified.command(characteristic, value, lambda: self._send_command(characteristic, value))
        else:
            await self._send_command(characteristic, value)

    async def _send_command(self, characteristic: BleakGATTCharacteristic, value: bytes) -> None:
        proxy: CharacteristicProxy[bytes] = self._current(characteristic).obj
        await self._guard("write without response", proxy.write_value(value), awaits_response=False)

    async def _send_kept(self, characteristic: BleakGATTCharacteristic, value: bytes) -> None:
        """A write command the band ignored while it was change-unaware, again on the new handles."""
        await self._wait_for_acl_room(self._require_connection())
        await self._send_command(characteristic, value)

    async def _wait_for_acl_room(self, connection: Connection) -> None:
        queue = connection.device.host.get_data_packet_queue(connection.handle)
        while queue is not None and queue.pending > WRITE_WITHOUT_RESPONSE_MAX_PENDING:
            flowed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_flow(future: asyncio.Future[None] = flowed) -> None:
                if not future.done():
                    future.set_result(None)

            # `on`, not `once`: the finally below removes it, and removing a `once` listener that already fired raises KeyError.
            queue.on("flow", on_flow)
            self._flow_waiters.add(flowed)
            try:
                await self._guard("write without response", flowed, awaits_response=False)
            finally:
                self._flow_waiters.discard(flowed)
                queue.remove_listener("flow", on_flow)
            self._require_connection()

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Write a descriptor value (with response)."""
        self._require_connection()
        value = bytes(data)
        await self._request("descriptor write", lambda: self._current_descriptor(descriptor).obj.write_value(value, with_response=True))

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
            await self._request("unsubscribe", lambda: self._current(characteristic).obj.unsubscribe(previous))

        async def subscribe() -> None:
            current: CharacteristicProxy[bytes] = self._current(characteristic).obj  # after a resync: the new handle
            await current.subscribe(on_value, prefer_notify=True)
            self._subscriptions[current.handle] = on_value

        await self._request("subscribe", subscribe)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Disable notifications/indications on ``characteristic``."""
        self._require_connection()
        current = self._current(characteristic)
        subscriber = self._subscriptions.pop(current.handle, None)
        if subscriber is not None:
            await self._request("unsubscribe", lambda: self._current(characteristic).obj.unsubscribe(subscriber))
