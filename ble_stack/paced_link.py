"""A virtual BLE link that behaves like a radio: connection events, packets per event, air time, loss.

:class:`bumble.link.LocalLink` hands every packet to the other controller at once, so
on it a windowed upload and a stop-and-wait upload take the same time.  A
:class:`PacedLink` is a drop-in replacement (a subclass, accepted wherever a
``link=`` is) that delivers what the controllers send the way the LE link layer
would:

* **Connection events.**  Data and LL control PDUs of a connection cross only at
  connection events, every :attr:`LinkTiming.interval_ms` from the connection's
  anchor (set when CONNECT_IND crosses).  In each event the central and the
  peripheral alternate, one packet each per exchange (an empty packet from a side
  with nothing to send), for at most :attr:`LinkTiming.packets_per_event` exchanges,
  and only while the next exchange, at the real size of its two packets, still ends
  within the interval: an event never runs into the next one.  Something queued
  during an event waits for the next.  :meth:`LinkTiming.plan_event` is that rule;
  the link and :meth:`LinkTiming.limit_seconds` both use it, so the physical limit
  a benchmark prints is what this link can carry.
* **Data length.**  An L2CAP PDU of ``n`` bytes (4-byte L2CAP header included) takes
  ``ceil(n / data_length)`` link packets (27 or 251 bytes of payload each); it
  reaches the peer's host when its last fragment has crossed.
* **Air time.**  A packet of ``p`` payload bytes is on the air ``(10 + p) x 8 us`` on
  the 1M PHY and ``(11 + p) x 4 us`` on 2M (preamble, access address, 2-byte LL
  header and CRC around the payload), plus a 4-byte MIC for a non-empty packet once
  the connection is encrypted; packets of an exchange are separated by T_IFS =
  150 us.  Each packet is delivered when its last bit has been sent, so a later
  packet of an event arrives later.
* **Loss.**  With :attr:`LinkTiming.loss` > 0 each packet is lost with that
  probability (seeded, reproducible).  The connection event closes at the loss and
  the lost packet is sent again, first, at the next event: everything arrives once
  and in order, only later.  This is the pessimistic case (the receiver missed the
  packet's access address, so nobody answers and the event ends); a radio that
  merely gets a CRC error answers with a NACK and the packet goes again in the
  same event, which this link does not model.
* **Advertising and scanning.**  Advertising events come at the interval the
  advertiser's controller uses plus the random advDelay (0-10 ms per event, 5 ms on
  average) the specification adds, so they drift against a scanner's windows; an advertising PDU
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
from collections.abc import Callable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from bumble import core, hci, ll
from bumble.link import LocalLink

if TYPE_CHECKING:
    from bumble.controller import Controller

__all__ = ["LinkTiming", "PacedLink", "TracedPacket", "air_time_us", "att_write_fragments", "exchange_us", "ll_fragment_sizes",
           "parse_interval_ms"]

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
MIC_BYTES = 4
"""Message integrity check on every non-empty packet of an encrypted connection."""
L2CAP_HEADER_BYTES = 4
ATT_WRITE_HEADER_BYTES = 3
"""ATT opcode and attribute handle in front of a written value (which is at most ATT MTU - 3 bytes)."""

Phy = Literal["1M", "2M"]


def air_time_us(payload: int, phy: Phy, *, encrypted: bool = False) -> float:
    """Time on the air of one LE data packet with ``payload`` bytes (a MIC too if ``encrypted`` and not empty)."""
    if encrypted and payload:
        payload += MIC_BYTES
    if phy == "1M":  # preamble 1, access address 4, header 2, CRC 3
        return (10 + payload) * 8.0
    return (11 + payload) * 4.0  # 2M: preamble 2


def exchange_us(central: int, peripheral: int, phy: Phy, *, encrypted: bool = False) -> float:
    """One exchange of a connection event: the central's packet, T_IFS, the peripheral's, T_IFS (payload sizes; 0: empty)."""
    return air_time_us(central, phy, encrypted=encrypted) + T_IFS_US + air_time_us(peripheral, phy, encrypted=encrypted) + T_IFS_US


def ll_fragment_sizes(pdu_bytes: int, data_length: int) -> list[int]:
    """Payload sizes of the link packets that carry an L2CAP PDU of ``pdu_bytes`` (header included)."""
    count = max(1, math.ceil(pdu_bytes / data_length))
    return [data_length] * (count - 1) + [pdu_bytes - data_length * (count - 1)]


def att_write_fragments(size: int, mtu: int, data_length: int) -> list[int]:
    """Link packets (payload sizes, in order) that carry ``size`` bytes in ATT writes of at most ``mtu`` - 3 bytes each.

    A write of ``v`` value bytes is an L2CAP PDU of 4 + 3 + ``v`` bytes: a full one (``v`` =
    MTU - 3) takes ``ceil((mtu + 4) / data_length)`` packets, the last of them short.
    """
    if mtu < 23:
        raise ValueError(f"ATT MTU {mtu}: must be at least 23")
    value = mtu - ATT_WRITE_HEADER_BYTES
    sizes: list[int] = []
    for offset in range(0, size, value):
        sizes += ll_fragment_sizes(L2CAP_HEADER_BYTES + ATT_WRITE_HEADER_BYTES + min(value, size - offset), data_length)
    return sizes


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
    """Probability that a packet is lost; the event closes and the packet goes again first at the next event
    (the pessimistic case: see the module docstring)."""
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

    def plan_event(self, central: Sequence[int], peripheral: Sequence[int], *, encrypted: bool = False) -> list[float]:
        """Start offsets (us from the anchor) of the exchanges of one connection event, as many as go in it.

        ``central`` and ``peripheral`` are the payload sizes of the packets each side has
        queued, in order (exchange ``i`` carries the ``i``-th of each, or an empty packet).
        The event goes on while a side has a packet left, for at most
        :attr:`packets_per_event` exchanges, and only while the next exchange ends within
        the interval: the event has closed, T_IFS after its last packet, before the next
        anchor.  The first exchange always goes (the longest, two 251-byte packets on the
        1M PHY, takes 4.5 ms: less than the shortest interval).
        """
        interval_us = self.interval_ms * 1000.0
        starts: list[float] = []
        offset = 0.0
        while len(starts) < self.packets_per_event:
            index = len(starts)
            if index >= len(central) and index >= len(peripheral):
                break  # neither side has more: the event closes
            up = central[index] if index < len(central) else EMPTY_PDU
            down = peripheral[index] if index < len(peripheral) else EMPTY_PDU
            duration = exchange_us(up, down, self.phy, encrypted=encrypted)
            if starts and offset + duration > interval_us + 1e-9:
                break  # it would run into the next event
            starts.append(offset)
            offset += duration
        return starts

    def packets_that_fit(self, payload: int, *, encrypted: bool = False) -> int:
        """Packets of ``payload`` bytes one side can send in one event while the other sends empty ones."""
        return len(self.plan_event([payload] * self.packets_per_event, [], encrypted=encrypted))

    @property
    def effective_packets_per_event(self) -> int:
        """Full packets (:attr:`data_length` bytes) per event in one direction: the setting, or fewer if they do not fit."""
        return self.packets_that_fit(self.data_length)

    def events_needed(self, central: Sequence[int], peripheral: Sequence[int] = (), *, encrypted: bool = False) -> int:
        """Connection events that carry these packets (payload sizes, in order) with no loss, by :meth:`plan_event`."""
        up, down, events = list(central), list(peripheral), 0
        while up or down:
            carried = len(self.plan_event(up, down, encrypted=encrypted))
            del up[:carried], down[:carried]
            events += 1
        return events

    def limit_seconds(self, packets: int | Sequence[int], *, encrypted: bool = False) -> float:
        """The least time these link packets need from the central, in whole connection events.

        ``packets``: the payload size of each (see :func:`att_write_fragments`), or a count
        of full :attr:`data_length` packets.
        """
        sizes = [self.data_length] * packets if isinstance(packets, int) else packets
        return self.events_needed(sizes, encrypted=encrypted) * self.interval_ms / 1000.0

    def describe(self) -> str:
        """One line for a benchmark's title: interval, packets per event (of full packets, if fewer fit), data length, PHY, loss."""
        loss = f", loss {self.loss:.0%}" if self.loss else ""
        full = self.effective_packets_per_event
        fit = f" ({full} of {self.data_length} bytes fit)" if full < self.packets_per_event else ""
        return (f"{self.interval_ms:g} ms interval, up to {self.packets_per_event} packets/event{fit}, "
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
        self.encrypted = False
        """Set when LL_START_ENC_RSP has crossed: from then on non-empty packets carry a MIC."""

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
        queues = (self.queues[self.central], self.queues[self.peripheral])
        heads = [[fragment.size for fragment in islice(queue, timing.packets_per_event)] for queue in queues]
        carried = False
        for start_us in timing.plan_event(heads[0], heads[1], encrypted=self.encrypted):
            offset_us = start_us
            lost = False
            for sender, queue in zip((self.central, self.peripheral), queues, strict=True):
                fragment = queue[0] if queue else None
                size = fragment.size if fragment is not None else EMPTY_PDU
                offset_us += air_time_us(size, timing.phy, encrypted=self.encrypted)
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
        self._advertising_due: dict[Controller, float] = {}
        """Per advertiser: when its next advertising event comes, in seconds after its timer's next tick."""

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
        sizes = ll_fragment_sizes(size, self.timing.data_length)
        return [_Fragment(kind, part, deliver if i == len(sizes) - 1 else None) for i, part in enumerate(sizes)]

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
            elif isinstance(packet, ll.StartEncRsp):
                connection.encrypted = True  # both sides encrypt what follows

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
                self._advertising_due.pop(receiver, None)  # its advertising stops: the next starts afresh
            super().send_advertising_pdu(sender_controller, packet)
            return
        delay = 0.0
        if self.timing.advertising_delay:
            # Each advertising event comes advInterval + advDelay after the previous one.  The
            # controller's timer ticks at the bare interval, so the next event is kept as an
            # offset from the next tick: a tick whose event is still an interval or more away
            # sends nothing and draws nothing (the draw belongs to the event, not the tick).
            interval = self._advertising_interval(sender_controller)
            due = self._advertising_due.get(sender_controller, 0.0)
            if interval > 0 and due >= interval:
                self._advertising_due[sender_controller] = due - interval
                return
            delay = due
            self._advertising_due[sender_controller] = due + self._random.uniform(0.0, ADV_DELAY_MAX_MS / 1000.0)
        loop.call_later(delay, self._broadcast_advertising, sender_controller, packet)

    @staticmethod
    def _advertising_interval(controller: Controller) -> float:
        """Seconds between the controller's advertising timer ticks (0 if it does not advertise).

        Extended advertising sets tick at the interval the host set (0.625 ms units, at least
        10 ms in bumble).  bumble's legacy advertiser reads the host's interval, which HCI gives
        in 0.625 ms units, as milliseconds, so it ticks 1.6 times slower than asked: the link
        follows the timer it really has (the band advertises with an extended set).
        """
        for advertising_set in controller.advertising_sets.values():
            if advertising_set.enabled and advertising_set.parameters is not None:
                return max(float(advertising_set.parameters.primary_advertising_interval_min) * 0.625 / 1000.0, 0.01)
        legacy = controller.le_legacy_advertiser
        return legacy.advertising_interval_min / 1000.0 if legacy.enabled else 0.0

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
