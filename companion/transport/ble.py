"""BLE transport through bleak's public API (any bleak backend).

The band serves a Nordic-UART-style service: the companion writes frames to RX
(write without response; the protocol's upload window is the flow control) and
receives the band's frames as TX notifications.  :attr:`BleTransport.mtu` is
ATT MTU - 3 as it is now (it grows when the MTU exchange is done); the client sizes
data frames for the most table bytes per write (one frame per write at large MTUs; at
small ones a frame spans several writes: frames are a byte stream).

Connecting waits for no round trip of its own once the link is up: the write of TX's
CCCD (subscribe) goes out and the first frames with it, as writes without response in
the same connection event (they may even reach the band first: a band holds its answers
until the subscription arrives, SPEC 21.2).  The CCCD write's answer is awaited in the
background; a refusal ends the link.

A band that holds a bond accepts state-changing commands only from a paired,
encrypted link.  The transport reads the band's pairing characteristic in the
background, behind the subscription (:meth:`BleTransport.read_pairing_state`); once
it shows a protected band and an untrusted link, every write asks for a response, so
that a refusal comes back as an ATT error, raised as
:class:`~companion.errors.NotPairedError`.  A command the band refused before that
(a write without response it dropped) goes unanswered; the client sends it again
after its retransmission timeout, now with a response: the user still gets the one
clear line, a few hundred ms later, instead of a timeout.

A paired band answers INFO and STATUS on any link, so a session that sends nothing else
(``handcue status``) is opened with ``needs_trust=False``: where the backend lets the
companion choose (``BleBackend.chooses_encryption``), a link to a band whose bond it holds
then stays unencrypted, and the first request does not wait for the encryption's round trips.

Which bleak backend carries BLE is an object given by the caller (a
:class:`~companion.ble.backend.BleBackend`): bleak's platform backend by default, or the
backend of a :class:`~companion.ble.bumble_backend.BumbleCentral`, whose host this
transport uses but does not own (closing the transport closes only its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, Protocol

from protocol.constants import BLE_NAME_PREFIX, BleUuid, PairingState

from ..ble.backend import PLATFORM, BleBackend
from ..config import KnownBleAddress
from ..errors import NotPairedError
from ..phases import imports
from .base import Transport, TransportClosed, TransportError

PAIRING_READ_TIMEOUT = 5.0
"""Longest wait for the band's pairing state when someone asks for it (``handcue info``)."""
DIRECT_CONNECT_TIMEOUT = 0.4
"""Seconds the link to a band's remembered address may take to come up before the transport scans
instead: a band advertises every 20-30 ms for its first 30 s after boot or a disconnect, and at
least every 100 ms after that (firmware_sim/ble_peripheral.py), so a band that is there connects
within a few of its advertising intervals.  Where the backend bounds the link's setup apart from
the GATT work (``BleBackend.bounds_link_setup``), the check of the cached handles or a discovery
after it has the command's whole timeout; elsewhere this bounds the whole connect."""

MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")

REFUSED_FOR_SECURITY = frozenset({0x05, 0x08, 0x0C, 0x0F})
"""ATT errors meaning "pair first": insufficient authentication, authorization, key size, encryption."""


def not_paired_message(band: str) -> str:
    """The one line a user sees when a paired-only band refuses a command."""
    return f"{band} accepts commands only from paired devices: press its button, then run handcue pair"


class AddressBook(Protocol):
    """Where the BLE address of each band reached by name is remembered (:class:`companion.config.BleAddressBook`)."""

    def get(self, name: str) -> KnownBleAddress | None: ...
    def put(self, name: str, known: KnownBleAddress) -> None: ...
    def forget(self, name: str) -> None: ...


class BleTransport(Transport):
    """A band reached by advertised name (``ble:HandCue-1A2B``) or address."""

    def __init__(self, address: str, target: str, backend: BleBackend = PLATFORM, *, needs_trust: bool = True) -> None:
        super().__init__(address)
        self.target = target
        self.backend = backend
        self.needs_trust = needs_trust
        """Whether this session may send a request that changes the band's state (every opcode but INFO and
        STATUS, SPEC §21.5), which a paired band runs only from a trusted link: then a link to a band whose
        bond the companion holds is encrypted at connect, before the first request (2 connection events).
        False (only INFO and STATUS, which a paired band answers on any link): where the backend lets the
        companion choose (``BleBackend.chooses_encryption``) the link stays unencrypted, so the pairing state
        read on it never shows TRUSTED, and a state-changing request on it is refused (:class:`NotPairedError`).
        Set it before :meth:`connect`."""
        self._client: Any = None
        self.pairing_state: PairingState | None = None
        """What the band says about pairing on this link (None: not read yet, or a band without pairing support)."""
        self._confirm_writes = False
        self._subscription: asyncio.Future[None] | None = None
        self._pairing_read: asyncio.Future[None] | None = None
        self.address_book: AddressBook | None = None
        """Remembers the band's address so that the next connect needs no scan; None: always scan."""

    @property
    def mtu(self) -> int:
        client = self._client
        return max(20, client.mtu_size - 3) if client is not None and client.is_connected else 20

    async def connect(self, timeout: float) -> None:
        """Connect: straight to the address the band had last time where the backend can
        (:attr:`address_book`), else after a scan that ends as soon as the band is seen."""
        with imports(self.phases, "imports (bleak)", "bleak"):  # the CLI imported it already: no line then
            from bleak import BleakClient
            from bleak.exc import BleakError

        backend = self.backend
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            client = None
            known = self.address_book.get(self.target) if self.address_book is not None and backend.device_at else None
            if known is not None:
                assert backend.device_at is not None
                device = backend.device_at(known.address, known.address_type, self.target)
                if backend.bounds_link_setup:
                    client = await self._connect_to(BleakClient, device, timeout, "connect to the known address", link_timeout=DIRECT_CONNECT_TIMEOUT)
                else:
                    client = await self._connect_to(BleakClient, device, min(DIRECT_CONNECT_TIMEOUT, timeout), "connect to the known address")
            if client is None:
                device = await self._scan(max(deadline - loop.time(), 0.1))
                client = await self._connect_to(BleakClient, device, max(deadline - loop.time(), 0.1), "connect to the band seen", failures_pass=False)
                assert client is not None
                if self.address_book is not None and backend.address_type_of is not None:
                    self.address_book.put(self.target, KnownBleAddress(str(device.address), backend.address_type_of(device)))
            self._client = client
            # Neither is awaited: the subscription (a write request) and then the pairing read go out in
            # this order, and the caller's first frames (writes without response) with them.
            self._subscription = asyncio.ensure_future(self._subscribe(client))
            self._pairing_read = asyncio.ensure_future(self._learn_pairing_state(client))
            # A lone delimiter makes the band drop any partial frame it still holds.
            await client.write_gatt_char(BleUuid.RX, b"\x00", response=False)
        except BleakError as exc:
            await self.disconnect()
            raise TransportError(f"{self.address}: {exc}") from exc
        except TimeoutError as exc:
            await self.disconnect()
            raise TransportError(f"{self.address}: connecting timed out after {timeout:g} s") from exc
        except TransportError:
            await self.disconnect()
            raise
        except BaseException as exc:  # cancelled: leave no connection behind
            await asyncio.shield(self.disconnect())
            if isinstance(exc, Exception):  # e.g. bumble cannot open the HCI transport
                raise TransportError(f"{self.address}: {backend.prefix()}{type(exc).__name__}: {exc}") from exc
            raise

    async def _scan(self, timeout: float) -> Any:
        """The band named :attr:`target`, found by a scan that stops as soon as it is seen."""
        from bleak import BleakScanner

        wanted = self.target.casefold()
        seen: dict[str, None] = {}  # names of the bands seen, for the error when ours is not among them

        def matches(device: Any, advertisement: Any) -> bool:
            name = advertisement.local_name or device.name or ""
            if name.startswith(BLE_NAME_PREFIX) or BleUuid.SERVICE in advertisement.service_uuids:
                seen[name or device.address] = None
            return wanted in (name.casefold(), str(device.address).casefold())  # a name in another case still matches

        with self.phases.phase("scan until seen"):
            device = await BleakScanner.find_device_by_filter(matches, timeout=timeout, **self.backend.scanner_args())
        if device is None:
            bands = f"bands seen: {', '.join(sorted(seen))}" if seen else "no band seen"
            raise TransportError(f"{self.address}: no band advertising as {self.target} within {timeout:g} s ({bands}; is it on and in range?)")
        return device

    async def _connect_to(self, client_class: Any, device: Any, timeout: float, what: str, failures_pass: bool = True,
                          link_timeout: float | None = None) -> Any:
        """A connected BleakClient for ``device`` (only the HandCue service discovered); with
        ``failures_pass``, None instead of an error (the caller scans instead).  ``link_timeout``
        bounds the link's setup alone (a backend with ``bounds_link_setup`` only)."""
        from bleak.exc import BleakError

        extra: dict[str, Any] = {"phases": self.phases} if self.backend.records_phases else {}
        if link_timeout is not None:
            extra["link_timeout"] = link_timeout
        if self.backend.chooses_encryption:
            extra["encrypt_bonded"] = self.needs_trust
        client = client_class(device, disconnected_callback=self._on_disconnect, timeout=timeout, backend=self.backend.client,
                              services=[BleUuid.SERVICE], **extra)
        self._client = client  # so that a cancel or a failure disconnects it
        try:
            with self.phases.phase(what):
                await client.connect()
        except (BleakError, TimeoutError) as exc:
            if not failures_pass:
                raise
            self._client = None
            with contextlib.suppress(Exception):
                await client.disconnect()
            if self.address_book is not None:
                self.address_book.forget(self.target)
            logging.getLogger(__name__).debug("%s: %s failed (%s); scanning instead", self.address, what, exc)
            return None
        return client

    async def _subscribe(self, client: Any) -> None:
        """Enable TX notifications; if the band refuses, the link is of no use: end it (pending requests fail at once)."""
        from bleak.exc import BleakError

        try:
            with self.phases.phase("subscribe to TX"):
                await client.start_notify(BleUuid.TX, self._on_notify)
        except (BleakError, TimeoutError) as exc:
            if self._client is client:
                self._deliver_end(f"subscribing to the band's notifications failed: {exc}")

    async def _learn_pairing_state(self, client: Any) -> None:
        """Read the pairing characteristic; from then on writes to a band that would refuse them ask for a response."""
        characteristic = client.services.get_characteristic(BleUuid.PAIRING)
        if characteristic is None:
            return
        with self.phases.phase("read pairing state"):
            value = await client.read_gatt_char(characteristic)
        self.pairing_state = state = PairingState(value[0]) if value else None
        state = state or PairingState(0)
        self._confirm_writes = PairingState.PROTECTED in state and PairingState.TRUSTED not in state

    async def read_pairing_state(self) -> PairingState | None:
        """The band's pairing state on this link, once its read (started when connecting) is done."""
        from bleak.exc import BleakError

        read = self._pairing_read
        if read is not None:
            try:
                async with asyncio.timeout(PAIRING_READ_TIMEOUT):
                    await asyncio.shield(read)
            except (BleakError, TimeoutError) as exc:
                raise TransportError(f"{self.address}: reading the band's pairing state failed: {exc or 'timed out'}") from exc
        return self.pairing_state

    @property
    def band_name(self) -> str:
        """The band's name as the user knows it (its advertised name, else the target)."""
        client = self._client
        return str(client.name) if client is not None and client.name else self.target

    def _on_notify(self, _characteristic: Any, data: bytearray) -> None:
        self._deliver(bytes(data))

    def _on_disconnect(self, _client: Any) -> None:
        self._deliver_end("the band disconnected")

    async def send(self, data: bytes) -> None:
        from bleak.exc import BleakError

        client = self._client
        if client is None or not client.is_connected:
            raise TransportClosed(f"{self.address}: not connected (the band disconnected)")
        from bleak.exc import BleakGATTProtocolError

        try:
            offset = 0
            while offset < len(data):
                size = self.mtu  # grows once the MTU exchange is done, maybe mid-frame
                await client.write_gatt_char(BleUuid.RX, data[offset : offset + size], response=self._confirm_writes)
                offset += size
        except BleakGATTProtocolError as exc:
            if exc.code in REFUSED_FOR_SECURITY:
                untrusted = "" if self.needs_trust else " (this session was opened with needs_trust=False: its link was not encrypted)"
                raise NotPairedError(not_paired_message(self.band_name) + untrusted) from exc
            raise TransportClosed(f"{self.address}: write failed: {exc}") from exc
        except BleakError as exc:
            raise TransportClosed(f"{self.address}: write failed: {exc}") from exc

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()
        for task in (self._subscription, self._pairing_read):  # they end with the link; nobody waits for them now
            if task is not None:
                if not task.done():
                    task.cancel()
                task.add_done_callback(_retrieve)
        self._subscription = self._pairing_read = None
        self._deliver_end("closed")


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a background task's failure as seen: the link it served is closed."""
    if not task.cancelled():
        task.exception()
