"""A virtual BLE link that behaves like a radio: connection events, packets per event, air time, loss.

:class:`bumble.link.LocalLink` hands every packet to the other controller at once, so
on it a windowed upload and a stop-and-wait upload take the same time.  A
:class:`PacedLink` is a drop-in replacement (a subclass, accepted wherever a
``link=`` is) that delivers what the controllers send the way the LE link layer
would:

* **Connection events.**  Data and LL control PDUs of a connection cross only at
  connection events, every :attr:`LinkTiming.interval_ms` from the connection's
  anchor (set when CONNECT_IND crosses).  In each event the central and the
  peripheral alternate, one packet each per exchange, for at most
  :attr:`LinkTiming.packets_per_event` exchanges (fewer when they do not fit in the
  interval at the chosen PHY).  Something queued during an event waits for the next.
* **Data length.**  An L2CAP PDU of ``n`` bytes takes ``ceil(n / data_length)`` link
  packets (27 or 251 bytes of payload each); it reaches the peer's host when its last
  fragment has crossed.
* **Air time.**  A packet of ``p`` payload bytes is on the air ``(10 + p) x 8 us`` on
  the 1M PHY and ``(11 + p) x 4 us`` on 2M; packets of an exchange are separated by
  T_IFS = 150 us.  Each packet is delivered when its last bit has been sent, so a
  later packet of an event arrives later.
* **Loss.**  With :attr:`LinkTiming.loss` > 0 each packet is lost with that
  probability (seeded, reproducible).  As on a radio, the connection event closes at
  the loss (the sender hears no acknowledgement) and the lost packet is sent again,
  first, at the next event: everything arrives once and in order, only later.
* **Advertising and scanning.**  Advertising events come at the interval the
  advertiser's host asked for plus the random advDelay (0-10 ms per event) the
  specification adds, so they drift against a scanner's windows; an advertising PDU
  reaches a scanner only while its scan window is open (the scan interval/window its
  host set, or the ones given in :class:`LinkTiming`), so discovery takes the time a
  radio needs.

The hosts (bumble :class:`~bumble.device.Device` on both sides, bleak on top) are
unchanged: only the link between the two controllers is paced.  One simplification
stays: bumble's controller reports every ACL packet from its host as completed at
once, so the host's ACL flow control sees a controller with unlimited buffers; the
packets then queue here, in the link.

Counters (:attr:`PacedLink.stats`) and an optional trace of every link packet
(:attr:`PacedLink.trace`) let tests assert what crossed in which event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from bumble import core, hci, ll
from bumble.link import LocalLink

if TYPE_CHECKING:
    from bumble.controller import Controller

__all__ = ["LinkTiming", "PacedLink", "TracedPacket", "air_time_us", "parse_interval_ms"]

T_IFS_US = 150.0
"""Inter-frame space between two packets of a connection event."""
ADV_DELAY_MAX_MS = 10.0
"""advDelay: a random 0-10 ms added to each advertising interval (Core Vol 6 Part B 4.4.2.2.1)."""
TRANSMIT_WINDOW_DELAY_MS = 1.25
"""From CONNECT_IND to the earliest first connection event (transmitWindowDelay)."""
CONNECTION_INTERVALS_MS = (7.5, 15.0, 30.0, 50.0)
"""The intervals the issue asks for (any multiple of 1.25 ms from 7.5 ms to 4 s is accepted)."""
EMPTY_PDU = 0
CONTROL_PDU_BYTES = 9
"""Air payload counted for an LL control PDU (opcode and parameters; bumble keeps them as objects)."""

Phy = Literal["1M", "2M"]


def air_time_us(payload: int, phy: Phy) -> float:
    """Time on the air of one LE data packet with ``payload`` bytes (no MIC)."""
    if phy == "1M":  # preamble 1, access address 4, header 2, CRC 3
        return (10 + payload) * 8.0
    return (11 + payload) * 4.0  # 2M: preamble 2


def parse_interval_ms(text: str) -> float:
    """``"15ms"``, ``"7.5"``, ``"0.03s"`` -> milliseconds (a multiple of 1.25 from 7.5 to 4000)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a connection interval such as 15ms")
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if not 7.5 <= value <= 4000.0 or abs(value / 1.25 - round(value / 1.25)) > 1e-9:
        raise ValueError(f"connection interval {value:g} ms: must be a multiple of 1.25 ms from 7.5 ms to 4 s")
    return value


@dataclasses.dataclass(frozen=True)
class LinkTiming:
    """How the link paces packets; the defaults are a good phone link (15 ms, 6 packets, 2M, 251 bytes)."""

    interval_ms: float = 15.0
    """Connection interval (7.5 ms at best on Android, 15 ms on iOS, 30-50 ms common)."""
    packets_per_event: int = 6
    """Most packets each direction may send in one connection event."""
    data_length: int = 251
    """LL data payload octets per packet: 27 (no data length extension) or 251."""
    phy: Phy = "2M"
    loss: float = 0.0
    """Probability that a packet is lost (and retransmitted at the next event)."""
    seed: int = 0
    """Seed of the loss and advDelay draws, so a run can be repeated."""
    scan_interval_ms: float | None = None
    """Scan interval of every scanner; None: the one its host set."""
    scan_window_ms: float | None = None
    """Scan window of every scanner; None: the one its host set."""
    advertising_delay: bool = True
    """Add the random advDelay of 0-10 ms to each advertising event."""

    def __post_init__(self) -> None:
        parse_interval_ms(f"{self.interval_ms}ms")
        if self.packets_per_event < 1:
            raise ValueError("packets_per_event must be at least 1")
        if self.data_length not in (27, 251):
            raise ValueError("data_length must be 27 or 251")
        if self.phy not in ("1M", "2M"):
            raise ValueError("phy must be '1M' or '2M'")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss must be in [0, 1)")

    @property
    def exchange_us(self) -> float:
        """One exchange with a full packet up and an empty packet back, T_IFS after each."""
        return air_time_us(self.data_length, self.phy) + T_IFS_US + air_time_us(EMPTY_PDU, self.phy) + T_IFS_US

    @property
    def effective_packets_per_event(self) -> int:
        """Packets per event per direction that fit: the setting, or fewer if full exchanges overrun the interval."""
        fit = max(1, int(self.interval_ms * 1000.0 // self.exchange_us))
        return min(self.packets_per_event, fit)

    def limit_seconds(self, packets: int) -> float:
        """The least time ``packets`` full link packets need in one direction: whole connection events."""
        return math.ceil(packets / self.effective_packets_per_event) * self.interval_ms / 1000.0

    def describe(self) -> str:
        loss = f", loss {self.loss:.0%}" if self.loss else ""
        return (f"{self.interval_ms:g} ms interval, {self.effective_packets_per_event} packets/event, "
                f"data length {self.data_length}, {self.phy} PHY{loss}")


@dataclasses.dataclass(frozen=True)
class TracedPacket:
    """One link packet as it crossed (or was lost)."""

    event: int
    """Index of the connection event (0 = the first after the connection)."""
    anchor: float
    """Loop time of that event's anchor."""
    delivered_at: float
    """Loop time at which the packet's last bit was sent."""
    sender: str
    """Name of the sending controller."""
    kind: Literal["data", "control"]
    size: int
    """Payload bytes of this link packet."""
    last_fragment: bool
    """Whether this packet completes its L2CAP PDU (or is a control PDU)."""
    lost: bool


@dataclasses.dataclass
class LinkStats:
    events: int = 0
    """Connection events that carried at least one packet."""
    packets: int = 0
    """Link packets delivered (retransmissions counted once, when they got through)."""
    lost: int = 0
    payload_bytes: int = 0
    advertisements_delivered: int = 0
    advertisements_missed: int = 0
    """Advertising PDUs a scanner missed because its scan window was closed."""


@dataclasses.dataclass
class _Fragment:
    kind: Literal["data", "control"]
    size: int
    deliver: Callable[[], None] | None
    """Set on the last fragment of a PDU: hands the whole PDU to the receiving controller."""


class _PacedConnection:
    """Connection events of one LE connection between two controllers."""

    def __init__(self, link: PacedLink, central: Controller, peripheral: Controller, anchor: float) -> None:
        self.link = link
        self.central = central
        self.peripheral = peripheral
        self.anchor = anchor
        self.queues: dict[Controller, deque[_Fragment]] = {central: deque(), peripheral: deque()}
        self.next_event: asyncio.TimerHandle | None = None
        self.next_anchor = 0.0
        self.closed = False

    def enqueue(self, sender: Controller, fragments: list[_Fragment]) -> None:
        self.queues[sender].extend(fragments)
        if self.next_event is None and not self.closed:
            self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.link.timing.interval_ms / 1000.0
        now = loop.time()
        # The first grid point strictly after now: data queued now cannot go in an event already under way.
        index = max(0, math.floor((now - self.anchor) / interval + 1e-9) + 1) if now >= self.anchor else 0
        self.next_anchor = self.anchor + index * interval
        self.next_event = loop.call_at(self.next_anchor, self._run_event, index)

    def _run_event(self, index: int) -> None:
        self.next_event = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        timing = self.link.timing
        anchor = self.next_anchor
        offset_us = 0.0
        carried = False
        for _ in range(timing.effective_packets_per_event):
            central_queue, peripheral_queue = self.queues[self.central], self.queues[self.peripheral]
            if not central_queue and not peripheral_queue:
                break  # neither side has more data: the event closes
            lost = False
            for sender, queue in ((self.central, central_queue), (self.peripheral, peripheral_queue)):
                fragment = queue[0] if queue else None
                size = fragment.size if fragment is not None else EMPTY_PDU
                offset_us += air_time_us(size, timing.phy)
                if self.link.draw_loss():
                    self.link.stats.lost += 1
                    if fragment is not None:
                        self.link.record(index, anchor, anchor + offset_us / 1e6, sender, fragment, lost=True)
                    lost = True
                    break  # no acknowledgement: the event closes, the packet goes again next time
                if fragment is not None:
                    queue.popleft()
                    carried = True
                    at = anchor + offset_us / 1e6
                    self.link.stats.packets += 1
                    self.link.stats.payload_bytes += fragment.size
                    self.link.record(index, anchor, at, sender, fragment, lost=False)
                    if fragment.deliver is not None:
                        loop.call_at(at, fragment.deliver)
                offset_us += T_IFS_US
            if lost:
                break
        if carried:
            self.link.stats.events += 1
        if any(self.queues.values()):
            self._schedule()

    def close(self, *, flush_control: bool = False) -> None:
        """Stop the events; with ``flush_control``, LL control PDUs still queued (a TERMINATE_IND) are delivered at once.

        A controller leaving the link (its host closed) must not strand the peer in a
        connection it was already told to end.
        """
        self.closed = True
        if self.next_event is not None:
            self.next_event.cancel()
            self.next_event = None
        if flush_control:
            loop = asyncio.get_running_loop()
            for queue in self.queues.values():
                for fragment in queue:
                    if fragment.kind == "control" and fragment.deliver is not None:
                        loop.call_soon(fragment.deliver)
                queue.clear()


class PacedLink(LocalLink):
    """A :class:`~bumble.link.LocalLink` that paces LE traffic like a radio (see the module docstring)."""

    def __init__(self, timing: LinkTiming | None = None, *, trace: bool = False) -> None:
        super().__init__()
        self.timing = timing or LinkTiming()
        self.stats = LinkStats()
        self.trace: list[TracedPacket] | None = [] if trace else None
        self._random = random.Random(self.timing.seed)
        self._connections: dict[frozenset[Controller], _PacedConnection] = {}
        self._advertising_drift: dict[Controller, float] = {}

    # ------------------------------------------------------------------ helpers

    def draw_loss(self) -> bool:
        return self.timing.loss > 0 and self._random.random() < self.timing.loss

    def record(self, event: int, anchor: float, at: float, sender: Controller, fragment: _Fragment, *, lost: bool) -> None:
        if self.trace is not None:
            self.trace.append(TracedPacket(event, anchor, at, sender.name, fragment.kind, fragment.size, fragment.deliver is not None, lost))

    def _connection(self, sender: Controller, receiver: Controller) -> _PacedConnection:
        pair = frozenset((sender, receiver))
        connection = self._connections.get(pair)
        if connection is None or connection.closed:
            # No CONNECT_IND seen (cannot happen with bumble's controllers): the sender acts as central.
            connection = _PacedConnection(self, sender, receiver, asyncio.get_running_loop().time())
            self._connections[pair] = connection
        return connection

    def _fragments(self, kind: Literal["data", "control"], size: int, deliver: Callable[[], None]) -> list[_Fragment]:
        count = max(1, math.ceil(size / self.timing.data_length))
        sizes = [self.timing.data_length] * (count - 1) + [size - self.timing.data_length * (count - 1)]
        return [_Fragment(kind, part, deliver if i == count - 1 else None) for i, part in enumerate(sizes)]

    def remove_controller(self, controller: Controller) -> None:
        for pair, connection in list(self._connections.items()):
            if controller in pair:
                connection.close(flush_control=True)
                del self._connections[pair]
        super().remove_controller(controller)

    # ------------------------------------------------------------------ LE data and control

    def send_acl_data(self, sender_controller: Controller, destination_address: hci.Address,
                      transport: core.PhysicalTransport, data: bytes) -> None:
        if transport != core.PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        destination = self.find_le_controller(destination_address)
        if destination is None:
            return  # as LocalLink: nobody there
        source_address = sender_controller.random_address

        def deliver() -> None:
            # A connection that ended while this packet waited for its event carries nothing more.
            if source_address in destination.le_connections:
                destination.on_link_acl_data(source_address, transport, data)

        self._connection(sender_controller, destination).enqueue(sender_controller, self._fragments("data", len(data), deliver))

    def send_ll_control_pdu(self, sender_address: hci.Address, receiver_address: hci.Address, packet: ll.ControlPdu) -> None:
        receiver = self.find_le_controller(receiver_address)
        if receiver is None:
            raise core.InvalidArgumentError(f"Unable to find controller for address {receiver_address}")
        sender = self.find_le_controller(sender_address)
        if sender is None:  # the sender already forgot the connection (e.g. HCI Reset): deliver at once
            super().send_ll_control_pdu(sender_address, receiver_address, packet)
            return
        connection = self._connection(sender, receiver)

        def deliver() -> None:
            receiver.on_ll_control_pdu(sender_address, packet)
            if isinstance(packet, ll.TerminateInd):
                connection.close()

        connection.enqueue(sender, self._fragments("control", CONTROL_PDU_BYTES, deliver))

    # ------------------------------------------------------------------ advertising

    def send_advertising_pdu(self, sender_controller: Controller, packet: ll.AdvertisingPdu) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(packet, ll.ConnectInd):
            # The advertiser listens right after its advertising PDU: CONNECT_IND arrives at once,
            # and the connection's first event follows transmitWindowDelay later.
            receiver = self.find_le_controller(packet.advertiser_address)
            if receiver is not None:
                pair = frozenset((sender_controller, receiver))
                if (old := self._connections.get(pair)) is not None:
                    old.close()
                anchor = loop.time() + TRANSMIT_WINDOW_DELAY_MS / 1000.0
                self._connections[pair] = _PacedConnection(self, sender_controller, receiver, anchor)
            super().send_advertising_pdu(sender_controller, packet)
            return
        delay = 0.0
        if self.timing.advertising_delay:
            # advDelay accumulates: event k is k intervals plus k draws after the first.  The
            # controller's timer keeps the bare interval, so the drift is added here, and when
            # it has grown by a whole interval one timer tick has no advertising event.
            interval = self._advertising_interval(sender_controller)
            drift = self._advertising_drift.get(sender_controller, 0.0) + self._random.uniform(0.0, ADV_DELAY_MAX_MS / 1000.0)
            skip = interval > 0 and drift >= interval
            self._advertising_drift[sender_controller] = drift - interval if skip else drift
            if skip:
                return
            delay = drift
        loop.call_later(delay, self._broadcast_advertising, sender_controller, packet)

    @staticmethod
    def _advertising_interval(controller: Controller) -> float:
        """The advertising interval (seconds) the controller's host set; 0 if unknown."""
        for advertising_set in controller.advertising_sets.values():
            if advertising_set.enabled and advertising_set.parameters is not None:
                return float(advertising_set.parameters.primary_advertising_interval_min) * 0.625 / 1000.0
        legacy = controller.le_legacy_advertiser
        return legacy.advertising_interval_min * 0.625 / 1000.0 if legacy.enabled else 0.0

    def _broadcast_advertising(self, sender_controller: Controller, packet: ll.AdvertisingPdu) -> None:
        now = asyncio.get_running_loop().time()
        for controller in list(self.controllers):
            if controller is sender_controller:
                continue
            if self._listening(controller, now):
                self.stats.advertisements_delivered += 1
                controller.on_ll_advertising_pdu(packet)
            else:
                self.stats.advertisements_missed += 1

    def _listening(self, controller: Controller, now: float) -> bool:
        """Whether ``controller``'s scan window is open at ``now`` (scan windows on a grid from time 0)."""
        interval_ms, window_ms = self.timing.scan_interval_ms, self.timing.scan_window_ms
        pending: Any = getattr(controller, "pending_le_connection", None)
        if interval_ms is None or window_ms is None:
            if pending is not None and hasattr(pending, "le_scan_interval"):
                interval_ms, window_ms = pending.le_scan_interval * 0.625, pending.le_scan_window * 0.625
            elif pending is not None and hasattr(pending, "scan_intervals"):
                interval_ms, window_ms = pending.scan_intervals[0] * 0.625, pending.scan_windows[0] * 0.625
            else:
                interval_ms = getattr(controller, "le_scan_interval", 0) * 0.625
                window_ms = getattr(controller, "le_scan_window", 0) * 0.625
        if not interval_ms or window_ms >= interval_ms:
            return True  # continuous scanning (or not scanning: the controller ignores the PDU itself)
        return (now * 1000.0) % interval_ms < window_ms
